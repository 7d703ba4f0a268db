"""``POST /api/broadcast`` on the native server and under ASGI, and presence + broadcast
over an ASGI WebSocket: real sockets, real PostgreSQL."""

from __future__ import annotations

import time
from typing import Any

import httpx
import jwt
import pytest

import pgcast
from pgcast.auth import AuthConfig, Limits, VerificationKey, parse_rules
from pgcast.auth.tokens import TokenVerifier
from pgcast.config import Settings

from .gateway_helpers import running_gateway, ws_client
from .test_asgi import serving, ws
from .test_presence import join, next_of

pytestmark = pytest.mark.timeout(60)

SECRET = "broadcast-http-secret-that-is-long-enough"
JSON = {"Content-Type": "application/json"}


def token_auth(limits: Limits | None = None) -> AuthConfig:
    rules = parse_rules({"topics": {"read": ["*"], "broadcast": ["news:{claims.sub}"]}})
    return AuthConfig(
        required=True,
        verifier=TokenVerifier([VerificationKey.from_secret(SECRET)]),
        rules=rules,
        limits=limits or Limits(),
        mode="token",
    )


def bearer(sub: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + jwt.encode({"sub": sub}, SECRET, algorithm="HS256")}


async def test_http_broadcast_reaches_clients_on_both_nodes(database_url: str) -> None:
    async with (
        running_gateway(database_url, presence_heartbeat=0.3, presence_timeout=1.0) as g1,
        running_gateway(database_url, presence_heartbeat=0.3, presence_timeout=1.0) as g2,
        ws_client(g1) as a,
        ws_client(g2) as b,
        httpx.AsyncClient() as http,
    ):
        await join(a, "news", presence=False)
        await join(b, "news", presence=False)
        body = {"topic": "news", "event": "headline", "payload": {"title": "x", "n": [1, 2]}}
        response = await http.post(f"http://127.0.0.1:{g1.port}/api/broadcast", json=body)
        assert response.status_code == 202 and response.json() == {"ok": True}
        for client in (a, b):
            got = await next_of(client, "broadcast")
            assert got["event"] == "headline" and got["payload"] == body["payload"]


async def test_http_broadcast_refusals(database_url: str) -> None:
    limits = Limits(max_broadcast_bytes=100, broadcast_rate=3)
    async with (
        running_gateway(database_url, auth=token_auth(limits)) as gateway,
        httpx.AsyncClient() as http,
    ):
        url = f"http://127.0.0.1:{gateway.port}/api/broadcast"
        ok = {"topic": "news:svc", "event": "e", "payload": 1}
        cases: list[tuple[dict[str, Any], int, str]] = [
            ({"json": ok}, 401, "unauthorized"),
            ({"json": ok, "headers": {"Authorization": "Bearer not-a-jwt"}}, 401, "unauthorized"),
            ({"json": ok, "headers": bearer("other")}, 403, "forbidden"),
            ({"content": b"{not json", "headers": JSON | bearer("svc")}, 400, "bad_request"),
            ({"content": b"[]", "headers": JSON | bearer("svc")}, 400, "bad_request"),
            (
                {"json": {**ok, "extra": 1}, "headers": bearer("svc")},
                400,
                "bad_request",
            ),
            (
                {"json": {"topic": "news:svc", "event": "e"}, "headers": bearer("svc")},
                400,
                "bad_request",
            ),
            ({"json": {**ok, "topic": "bad topic"}, "headers": bearer("svc")}, 400, "bad_request"),
            ({"json": {**ok, "event": 7}, "headers": bearer("svc")}, 400, "bad_request"),
            (
                {"content": b'{"a":1}', "headers": {"Content-Type": "text/plain"} | bearer("svc")},
                415,
                "unsupported_media_type",
            ),
            (
                {"json": {**ok, "payload": "x" * 200}, "headers": bearer("svc")},
                413,
                "payload_too_large",
            ),
        ]
        for kwargs, status, code in cases:
            response = await http.post(url, **kwargs)
            assert (response.status_code, response.json()["error"]) == (status, code), kwargs
        response = await http.get(url)
        assert response.status_code == 405
        # The flood bound: at most a burst of 3 (+ refill) per subject.
        started = time.monotonic()
        statuses = [
            (await http.post(url, json=ok, headers=bearer("svc"))).status_code for _ in range(20)
        ]
        refill = 3 * (time.monotonic() - started)  # the bucket refills while we send
        assert statuses.count(202) + statuses.count(429) == 20
        assert statuses.count(202) <= 3 + refill + 1 and statuses.count(429) > 0
        # Another subject has its own budget.
        other = {"topic": "news:svc2", "event": "e", "payload": 1}
        assert (await http.post(url, json=other, headers=bearer("svc2"))).status_code == 202


async def test_presence_broadcast_and_http_broadcast_under_asgi(database_url: str) -> None:
    app = pgcast.asgi_app(
        Settings(poll_interval=0.5, probe_interval=2.0), dsn=database_url, auth=AuthConfig()
    )
    async with (
        serving(app) as server,
        ws(server.url("/ws", "ws")) as a,
        ws(server.url("/ws", "ws")) as b,
        httpx.AsyncClient() as http,
    ):
        await join(a)
        await join(b)
        await a.send({"type": "track", "topic": "room:1", "key": "a", "state": {"on": True}})
        assert list((await next_of(b, "presence_diff"))["joins"]) == ["a"]
        await a.send({"type": "broadcast", "topic": "room:1", "event": "hi", "payload": "yo"})
        assert (await next_of(b, "broadcast"))["payload"] == "yo"
        body = {"topic": "room:1", "event": "server", "payload": None}
        response = await http.post(server.url("/api/broadcast"), json=body)
        assert response.status_code == 202
        assert (await next_of(a, "broadcast"))["event"] == "server"
        await app.broadcast("room:1", "api", {"from": "python"})
        assert (await next_of(b, "broadcast", event="api"))["payload"] == {"from": "python"}
        big = {"topic": "room:1", "event": "e", "payload": "x" * (2 << 20)}
        assert (await http.post(server.url("/api/broadcast"), json=big)).status_code == 413
