"""Refusals that must be clean: an HTTP answer or an `error` frame, never a dropped socket.

Several tokens in one request get 401 on every transport (native WebSocket, SSE, the
ASGI app); a malformed `auth` message gets an `error` and the connection stays; a
`publish` PostgreSQL cannot carry is refused before it reaches PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import jwt
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from pgcast.auth import AuthConfig, load_auth_config
from pgcast.capture.installer import track
from pgcast.identifiers import parse_table_name

from .gateway_helpers import TIMEOUT, WsClient, running_gateway
from .test_asgi import make_app, serving

SECRET = "refusals-secret-" + "k" * 40


def make_auth() -> AuthConfig:
    return load_auth_config({"jwt_secret": SECRET}, env={})


def token(sub: str) -> str:
    return jwt.encode({"sub": sub, "exp": int(time.time()) + 600}, SECRET, algorithm="HS256")


@pytest.fixture
async def orders(conn: asyncpg.Connection) -> asyncpg.Connection:
    await conn.execute("CREATE TABLE orders (id serial PRIMARY KEY, status text)")
    await track(conn, parse_table_name("orders"))
    return conn


async def raw_http(port: int, target: str, headers: list[tuple[str, str]]) -> tuple[int, bytes]:
    """One request on a fresh connection; the status and the body up to the close."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [f"GET {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    try:
        async with asyncio.timeout(TIMEOUT):
            response = await reader.read()
    finally:
        writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 "), f"no HTTP answer: {response[:200]!r}"
    return int(head.split(b" ")[1]), body


async def refused(url: str, headers: list[tuple[str, str]]) -> tuple[int, dict[str, Any]]:
    with pytest.raises(InvalidStatus) as caught:
        async with connect(url, additional_headers=headers):
            pass
    response = caught.value.response
    return response.status_code, orjson.loads(response.body or b"{}")


def several_tokens(path: str) -> list[tuple[str, str, list[tuple[str, str]]]]:
    a, b = token("a"), token("b")
    return [
        ("two ?token=", f"{path}token={a}&token={b}", []),
        ("two Authorization headers", path, [("Authorization", f"Bearer {t}") for t in (a, b)]),
    ]


def assert_unauthorized(status: int, body: dict[str, Any], case: str) -> None:
    assert status == 401, case
    assert body["type"] == "error" and body["code"] == "unauthorized", case
    assert "several" in body["message"], case


async def test_several_tokens_in_one_request_get_401_on_websocket_and_sse(
    database_url: str, orders: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    async with running_gateway(database_url, auth=make_auth()) as gateway:
        url = f"ws://127.0.0.1:{gateway.port}"
        for case, target, headers in several_tokens("/ws?"):
            status, body = await refused(url + target, headers)
            assert_unauthorized(status, body, case)
        for case, target, headers in several_tokens("/sse?table=orders&"):
            status, raw = await raw_http(gateway.port, target, headers)
            assert_unauthorized(status, orjson.loads(raw), "SSE " + case)
        # One token, sent twice, is one token: admitted.
        same = token("same")
        async with connect(f"{url}/ws?token={same}&token={same}") as ws:
            assert orjson.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))["type"] == "welcome"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]


async def test_several_tokens_get_401_from_the_asgi_app(
    database_url: str, orders: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    app = make_app(database_url, auth=make_auth())
    async with serving(app) as server:
        for case, target, headers in several_tokens("/ws?"):
            status, body = await refused(server.url(target, "ws"), headers)
            assert_unauthorized(status, body, "ASGI " + case)
        assert app.gateway.health()["clients"] == 0
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]


@contextlib.asynccontextmanager
async def ws(url: str) -> AsyncIterator[WsClient]:
    async with connect(url, max_size=None) as socket:
        client = WsClient(socket)
        assert (await client.recv())["type"] == "welcome"
        yield client


MALFORMED_AUTH: list[dict[str, Any]] = [
    {"type": "auth", "token": 123},
    {"type": "auth", "token": None},
    {"type": "auth", "token": ["a.b.c"]},
    {"type": "auth", "token": {"jwt": "a.b.c"}},
    {"type": "auth", "token": ""},
    {"type": "auth"},
]


async def test_malformed_auth_message_gets_an_error_and_the_connection_stays(
    database_url: str, orders: asyncpg.Connection
) -> None:
    async with running_gateway(database_url, auth=make_auth()) as gateway:
        url = f"ws://127.0.0.1:{gateway.port}/ws"
        # Not yet authenticated: each malformed auth is answered, then a good one works.
        async with ws(url) as client:
            for message in MALFORMED_AUTH:
                await client.send(message)
                reply = await client.recv()
                assert (reply["type"], reply["code"]) == ("error", "unauthorized"), message
                await client.send({"type": "ping", "data": "still open"})
                assert await client.recv() == {"type": "pong", "data": "still open"}
            await client.send({"type": "auth", "token": token("late")})
            assert (await client.subscribe("o", table="orders"))["type"] == "subscribed"
        # Authenticated and subscribed: a malformed refresh leaves the stream running.
        async with ws(f"{url}?token={token('live')}") as client:
            assert (await client.subscribe("o", table="orders"))["type"] == "subscribed"
            await client.send({"type": "auth", "token": 42})
            reply = await client.recv()
            assert (reply["type"], reply["code"]) == ("error", "unauthorized")
            await orders.execute("INSERT INTO orders (status) VALUES ('after')")
            (change,) = await client.changes(1)
            assert change["record"]["status"] == "after"


async def test_publish_postgresql_cannot_carry_is_refused_up_front(
    database_url: str, orders: asyncpg.Connection
) -> None:
    async with (
        running_gateway(database_url, channels=("room_*",)) as gateway,
        ws(f"ws://127.0.0.1:{gateway.port}/ws") as publisher,
        ws(f"ws://127.0.0.1:{gateway.port}/ws") as listener,
    ):
        assert (await listener.subscribe("r", channel="room_1"))["type"] == "subscribed"
        for payload in ("a\x00b", "\x00", "x" * 100 + "\x00"):
            await publisher.send(
                {"type": "publish", "id": "p", "channel": "room_1", "payload": payload}
            )
            reply = await publisher.recv()
            assert (reply["type"], reply["code"], reply["id"]) == ("error", "bad_request", "p")
            assert "NUL" in reply["message"]
            assert "byte sequence" not in reply["message"]  # no PostgreSQL error text
        long_channel = "room_" + "x" * 59  # 64 characters: PostgreSQL's limit is 63
        await publisher.send(
            {"type": "publish", "id": "q", "channel": long_channel, "payload": "hi"}
        )
        reply = await publisher.recv()
        assert (reply["type"], reply["code"], reply["id"]) == ("error", "bad_request", "q")
        # Nothing was lost: the next publish goes through, and only it arrives.
        await publisher.send({"type": "publish", "id": "ok", "channel": "room_1", "payload": "hi"})
        message = await listener.recv()
        assert (message["type"], message["payload"]) == ("message", "hi")
