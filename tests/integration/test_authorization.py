"""Authorization end to end: real PostgreSQL, a real gateway with tokens and rules.

* A seeded random schedule (invariant 4): many tenants, random writes (rows moving
  between tenants included), random subscriptions with random filters, live, from
  ``since`` and with ``snapshot``: no client ever receives a row image its claims do
  not allow, and each one's mirror ends equal to ``SELECT ... WHERE <rule> AND
  <filter>``. ``PGCAST_AUTH_SEED=N`` replays one schedule.
* Hostile input (invariant 5): bad tokens, limits, forbidden tables and channels,
  floods. Each is refused with the documented HTTP status, close code or error; a
  witness client keeps being served; nothing is written to the database.
* Publish end to end.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import random
import time
import warnings
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import jwt
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

import pgcast.client
import pgcast.connections
from pgcast.auth import AuthConfig, load_auth_config
from pgcast.capture.installer import track
from pgcast.identifiers import parse_table_name
from pgcast.server import Gateway

from .gateway_helpers import TIMEOUT, WsClient, running_gateway
from .test_sse import open_sse

SECRET = "integration-secret-" + "k" * 40
AUDIENCE = "pgcast"
RULES = """
[rules.tables.orders]
read = "merchant_id = claims.merchant_id"

[rules.tables.posts]
read = "merchant_id = claims.merchant_id or public = true"

[rules.channels]
read = ["query_results_*", "tenant_{claims.merchant_id}_*"]
publish = ["query_results_*", "tenant_{claims.merchant_id}_*"]
"""
CHANNELS = ("query_results_*", "tenant_*", "system_notifications")
TABLES = ("orders", "posts", "secrets")  # secrets is tracked but has no rule


def make_auth(tmp_path: Path, **flags: object) -> AuthConfig:
    """The gateway's auth configuration, loaded as `pgcast serve` loads it."""
    config = tmp_path / "pgcast.toml"
    config.write_text(RULES)
    chosen = {"jwt_secret": SECRET, "jwt_audience": AUDIENCE, **flags}
    return load_auth_config(chosen, env={}, config_file=config)


def token(
    merchant: int | None = 1,
    *,
    sub: str | None = None,
    ttl: float = 600,
    key: str = SECRET,
    **extra: Any,
) -> str:
    claims: dict[str, Any] = {"sub": sub or f"user-{merchant}", "aud": AUDIENCE}
    claims["exp"] = int(time.time() + ttl)
    if merchant is not None:
        claims["merchant_id"] = merchant
    claims.update(extra)
    return jwt.encode(claims, key, algorithm="HS256")


def ws_url(gateway: Gateway, jwt_token: str | None = None) -> str:
    url = f"ws://127.0.0.1:{gateway.port}/ws"
    return url if jwt_token is None else f"{url}?token={jwt_token}"


@contextlib.asynccontextmanager
async def client_for(
    gateway: Gateway, jwt_token: str | None, **kwargs: Any
) -> AsyncIterator[WsClient]:
    async with connect(ws_url(gateway, jwt_token), max_size=None, **kwargs) as ws:
        client = WsClient(ws)
        assert (await client.recv())["type"] == "welcome"
        yield client


async def refused_status(url: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    """The HTTP status and JSON body of a refused WebSocket upgrade."""
    with pytest.raises(InvalidStatus) as caught:
        async with connect(url, **kwargs):
            pass
    response = caught.value.response
    return response.status_code, orjson.loads(response.body or b"{}")


async def close_code(ws: ClientConnection, timeout: float = TIMEOUT) -> int | None:
    """Read until the server closes ``ws``; its close code."""
    async with asyncio.timeout(timeout):
        with contextlib.suppress(ConnectionClosed):
            async for _ in ws:
                pass
    assert ws.close_code is not None
    return ws.close_code


async def settle(gateway: Gateway, clients: int) -> None:
    """Wait until the gateway has seen closed connections go (its limits count them)."""
    async with asyncio.timeout(TIMEOUT):
        while len(gateway.clients) != clients:  # noqa: ASYNC110 (no event to wait on)
            await asyncio.sleep(0.01)  # polling a condition, bounded by the timeout


async def create_tables(conn: asyncpg.Connection) -> None:
    for name in TABLES:
        await conn.execute(
            f"CREATE TABLE {name} (id int PRIMARY KEY, merchant_id int, "
            "public boolean NOT NULL DEFAULT false, status text, amount int)"
        )
        await track(conn, parse_table_name(name))


async def db_fingerprint(conn: asyncpg.Connection) -> tuple[Any, ...]:
    """What a hostile client must never change: the log and every table."""
    counts = [await conn.fetchval(f"SELECT count(*) FROM {name}") for name in TABLES]
    head = await conn.fetchval("SELECT coalesce(max(id), 0) FROM pgcast.changes")
    return (head, *counts)


# --- the property: nobody sees a row they should not, everybody sees theirs ------------------

TENANTS = (1, 2, 3, 4, 5)
STATUSES = ("open", "paid", "shipped", None)


@dataclass(frozen=True)
class FilterCase:
    text: str
    sql: str
    check: Callable[[dict[str, Any]], bool]


def filter_cases(own: int, other: int) -> list[FilterCase]:
    return [
        FilterCase("", "true", lambda r: True),
        FilterCase("status=eq.open", "status = 'open'", lambda r: r["status"] == "open"),
        FilterCase(
            "amount=gt.50", "amount > 50", lambda r: r["amount"] is not None and r["amount"] > 50
        ),
        FilterCase(
            "status=in.(open,paid)&amount=lt.80",
            "status IN ('open', 'paid') AND amount < 80",
            lambda r: r["status"] in ("open", "paid") and r["amount"] < 80,
        ),
        # Attempts to widen: a filter naming another tenant only narrows.
        FilterCase(
            f"merchant_id=eq.{other}", f"merchant_id = {other}", lambda r: r["merchant_id"] == other
        ),
        FilterCase(
            "merchant_id=in.(1,2,3,4,5)",
            "merchant_id IN (1, 2, 3, 4, 5)",
            lambda r: r["merchant_id"] in TENANTS,
        ),
        FilterCase("public=is.true", "public IS TRUE", lambda r: r["public"] is True),
    ]


def allowed(table: str, merchant: int, row: dict[str, Any] | None) -> bool:
    if row is None:
        return False
    if table == "orders":
        return row["merchant_id"] == merchant
    return row["merchant_id"] == merchant or row["public"] is True


@dataclass
class Mirror:
    """One subscription's local copy of its rows, and every violation it saw."""

    name: str
    table: str
    merchant: int
    case: FilterCase
    rows: dict[int, dict[str, Any]] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)

    def wanted(self, row: dict[str, Any]) -> bool:
        return allowed(self.table, self.merchant, row) and self.case.check(row)

    def check_image(self, row: dict[str, Any] | None, what: str) -> None:
        if row is not None and not allowed(self.table, self.merchant, row):
            self.violations.append(f"{self.name}: {what} of another tenant: {row}")

    def apply(self, frame: dict[str, Any]) -> None:
        if frame["type"] == "snapshot":
            for row in frame["rows"]:
                self.check_image(row, "snapshot row")
                self.rows[row["id"]] = row
        elif frame["type"] == "change":
            if frame["id"] in self.seen:
                return  # a replayed duplicate, dropped by id as the client library does
            self.seen.add(frame["id"])
            record, old = frame["record"], frame["old_record"]
            self.check_image(record, f"{frame['op']} record")
            self.check_image(old, f"{frame['op']} old_record")
            if record is not None and self.wanted(record):
                self.rows[record["id"]] = record
            else:
                key = (record or old or {}).get("id")
                self.rows.pop(key, None)
        elif frame["type"] in ("error", "resync"):
            self.violations.append(f"{self.name}: unexpected {frame}")


class RawSubscriber:
    """A raw WebSocket connection whose frames feed one Mirror per subscription."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.mirrors: dict[str, Mirror] = {}
        self.acks: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.changed = asyncio.Event()
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in self.ws:
                frame = orjson.loads(raw)
                kind = frame["type"]
                if kind in ("subscribed", "error") and frame.get("id") in self.acks:
                    self.acks.pop(frame["id"]).set_result(frame)
                    if kind == "subscribed":
                        continue
                mirror = self.mirrors.get(frame.get("sub") or frame.get("id") or "")
                if mirror is not None:
                    mirror.apply(frame)
                self.changed.set()

    async def subscribe(self, mirror: Mirror, **fields: Any) -> dict[str, Any]:
        sub_id = mirror.name
        self.mirrors[sub_id] = mirror
        self.acks[sub_id] = asyncio.get_running_loop().create_future()
        message = {"type": "subscribe", "id": sub_id, "table": mirror.table, **fields}
        if mirror.case.text:
            message["filter"] = mirror.case.text
        await self.ws.send(orjson.dumps(message).decode())
        return await asyncio.wait_for(self.acks[sub_id], TIMEOUT)


async def expected_rows(
    conn: asyncpg.Connection, mirror: Mirror, rows: list[dict[str, Any]] | None = None
) -> dict[int, dict[str, Any]]:
    """What ``mirror`` must hold: the SQL answer now, or ``rows`` (a past state) filtered."""
    if rows is None:
        rule = "merchant_id = $1" if mirror.table == "orders" else "(merchant_id = $1 OR public)"
        query = f"SELECT * FROM {mirror.table} WHERE {rule} AND ({mirror.case.sql})"
        rows = [dict(r) for r in await conn.fetch(query, mirror.merchant)]
        return {r["id"]: r for r in rows}
    return {r["id"]: r for r in rows if mirror.wanted(r)}


async def random_writes(conn: asyncpg.Connection, rng: random.Random, transactions: int) -> None:
    """Single-writer random INSERT / UPDATE (moving rows between tenants) / DELETE."""
    for _ in range(transactions):
        async with conn.transaction():
            for _ in range(rng.randint(1, 3)):
                table = rng.choice(("orders", "posts"))
                row_id = rng.randint(1, 24)
                exists = await conn.fetchval(f"SELECT 1 FROM {table} WHERE id = $1", row_id)
                merchant, public = rng.choice(TENANTS), rng.random() < 0.25
                status, amount = rng.choice(STATUSES), rng.randint(0, 100)
                if not exists:
                    await conn.execute(
                        f"INSERT INTO {table} VALUES ($1, $2, $3, $4, $5)",
                        row_id,
                        merchant,
                        public,
                        status,
                        amount,
                    )
                elif rng.random() < 0.2:
                    await conn.execute(f"DELETE FROM {table} WHERE id = $1", row_id)
                elif rng.random() < 0.5:  # move to another tenant (and maybe in/out of public)
                    await conn.execute(
                        f"UPDATE {table} SET merchant_id = $2, public = $3 WHERE id = $1",
                        row_id,
                        merchant,
                        public,
                    )
                else:
                    await conn.execute(
                        f"UPDATE {table} SET status = $2, amount = $3 WHERE id = $1",
                        row_id,
                        status,
                        amount,
                    )


async def wait_converged(
    conn: asyncpg.Connection, subscribers: list[RawSubscriber], deadline: float
) -> list[str]:
    """Wait (event-driven, bounded) until every mirror equals its SQL answer."""
    mirrors = [m for s in subscribers for m in s.mirrors.values()]
    wanted = {m.name: await expected_rows(conn, m) for m in mirrors}
    while True:
        diverged = [m for m in mirrors if m.rows != wanted[m.name]]
        if not diverged:
            return []
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return [
                f"{m.name} ({m.table}, merchant {m.merchant}, {m.case.text!r}): "
                f"missing {sorted(wanted[m.name].keys() - m.rows.keys())}, "
                f"extra {sorted(m.rows.keys() - wanted[m.name].keys())}, "
                f"stale {sorted(k for k, v in m.rows.items() if wanted[m.name].get(k, v) != v)}"
                for m in diverged
            ]
        for subscriber in subscribers:
            subscriber.changed.clear()
        waits = [asyncio.ensure_future(s.changed.wait()) for s in subscribers]
        await asyncio.wait(waits, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waits:
            waiter.cancel()


async def test_no_client_sees_a_row_its_claims_do_not_allow_and_each_sees_all_of_its_own(
    database_url: str, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    seed = int(os.environ.get("PGCAST_AUTH_SEED", random.randrange(1_000_000)))
    print(f"authorization schedule seed: {seed} (replay with PGCAST_AUTH_SEED={seed})")
    # Separate streams: the writer runs concurrently with the subscribing below.
    rng, writes = random.Random(seed), random.Random(seed + 1)
    await create_tables(conn)
    auth = make_auth(tmp_path)
    subscribers: list[RawSubscriber] = []
    counter = 0

    def new_mirror(merchant: int) -> Mirror:
        nonlocal counter
        counter += 1
        other = rng.choice([t for t in TENANTS if t != merchant])
        case = rng.choice(filter_cases(merchant, other))
        return Mirror(f"m{counter}", rng.choice(("orders", "posts")), merchant, case)

    async def open_subscriber(merchant: int) -> RawSubscriber:
        ws = await connect(ws_url(gateway, token(merchant, sub=f"u{merchant}-{counter}")))
        assert orjson.loads(await ws.recv())["type"] == "welcome"
        subscriber = RawSubscriber(ws)
        subscribers.append(subscriber)
        return subscriber

    async with running_gateway(database_url, auth=auth, channels=CHANNELS) as gateway:
        try:
            # Live from an empty table: 2 connections per tenant, 2 subscriptions each.
            for merchant in TENANTS:
                for _ in range(2):
                    subscriber = await open_subscriber(merchant)
                    for _ in range(2):
                        ack = await subscriber.subscribe(new_mirror(merchant))
                        assert ack["type"] == "subscribed", ack
            await random_writes(conn, writes, 60)
            # A quiescent point to replay from later (one writer: no transaction open).
            since = await conn.fetchval("SELECT max(id) FROM pgcast.changes")
            past = {t: [dict(r) for r in await conn.fetch(f"SELECT * FROM {t}")] for t in TABLES}
            await random_writes(conn, writes, 60)
            # Snapshot and `since` subscriptions while the writer keeps going.
            writer = asyncio.create_task(random_writes(conn, writes, 60))
            for merchant in TENANTS:
                subscriber = await open_subscriber(merchant)
                snap = new_mirror(merchant)
                ack = await subscriber.subscribe(snap, snapshot=True)
                assert ack["type"] == "subscribed", ack
                replayed = new_mirror(merchant)
                # ``past`` is what the table held at ``since``; the replay brings the rest.
                replayed.rows = await expected_rows(conn, replayed, past[replayed.table])
                ack = await subscriber.subscribe(replayed, since=str(since))
                assert ack["type"] == "subscribed", ack
            await writer
            # The Python client, with its token in the Authorization header.
            async with pgcast.client.connect(
                f"ws://127.0.0.1:{gateway.port}", token=token(3, sub="py")
            ) as client:
                py_mirror = Mirror("py", "orders", 3, filter_cases(3, 1)[0])
                async with client.subscribe("orders", snapshot=True) as sub:
                    await random_writes(conn, writes, 30)
                    want = await expected_rows(conn, py_mirror)
                    async with asyncio.timeout(TIMEOUT):
                        async for frame in sub:
                            py_mirror.apply(frame)
                            if frame["type"] == "snapshot" and not frame["done"]:
                                continue
                            if py_mirror.rows == want:
                                break
            problems = await wait_converged(conn, subscribers, time.monotonic() + TIMEOUT)
            mirrors = [m for s in subscribers for m in s.mirrors.values()] + [py_mirror]
            violations = [v for m in mirrors for v in m.violations]
            assert not violations, f"seed {seed}: " + "\n".join(violations[:20])
            assert not problems, f"seed {seed}: " + "\n".join(problems)
            deliveries = sum(len(m.seen) for m in mirrors)
            moved = await conn.fetchval(
                "SELECT count(*) FROM pgcast.changes WHERE op = 'UPDATE' "
                "AND old_record->>'merchant_id' IS DISTINCT FROM record->>'merchant_id'"
            )
            print(f"seed {seed}: {len(mirrors)} subscriptions, {deliveries} changes, {moved} moves")
            assert moved > 0 and deliveries > 0
        finally:
            for subscriber in subscribers:
                await subscriber.ws.close()
                subscriber.reader.cancel()


# --- hostile input ---------------------------------------------------------------------------


@pytest.fixture
async def tables(conn: asyncpg.Connection) -> asyncpg.Connection:
    await create_tables(conn)
    await conn.execute(
        "INSERT INTO orders VALUES (1, 1, false, 'open', 10), (2, 2, false, 'open', 20)"
    )
    await conn.execute("INSERT INTO secrets VALUES (1, 1, false, 'top', 1)")
    return conn


@contextlib.asynccontextmanager
async def witness(gateway: Gateway) -> AsyncIterator[WsClient]:
    """A well-behaved tenant-1 client subscribed to orders, to prove service goes on."""
    async with client_for(gateway, token(1, sub="witness")) as client:
        ack = await client.subscribe("w", table="orders")
        assert ack["type"] == "subscribed", ack
        yield client


async def still_served(client: WsClient, conn: asyncpg.Connection, row_id: int) -> None:
    await conn.execute("INSERT INTO orders VALUES ($1, 1, false, 'open', 1)", row_id)
    (change,) = await client.changes(1)
    assert change["record"]["id"] == row_id


def hs512(claims: dict[str, Any]) -> str:
    """A token signed with HS512 and a secret too short for it (the gateway refuses it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)
        return jwt.encode(claims, SECRET, algorithm="HS512")


def hand_made(header: dict[str, Any], payload: dict[str, Any]) -> str:
    def b64(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(data)).rstrip(b"=").decode()

    return f"{b64(header)}.{b64(payload)}."


async def test_bad_tokens_are_refused_at_the_upgrade_and_nothing_is_written(
    database_url: str, tables: asyncpg.Connection, tmp_path: Path
) -> None:
    auth = make_auth(tmp_path, jwt_leeway=0)
    async with running_gateway(database_url, auth=auth) as gateway, witness(gateway) as good:
        before = await db_fingerprint(tables)
        claims = {"sub": "user-1", "merchant_id": 1, "aud": AUDIENCE, "exp": time.time() + 600}
        cases = {
            "forged signature": token(1, key="another-secret-" + "z" * 40),
            "alg none": hand_made({"alg": "none", "typ": "JWT"}, claims),
            "alg none (capitalised)": hand_made({"alg": "None", "typ": "JWT"}, claims),
            "expired": token(1, ttl=-5),
            "wrong audience": token(1, aud="someone-else"),
            "no audience": jwt.encode({"sub": "x", "merchant_id": 1}, SECRET, algorithm="HS256"),
            "not a jwt": "hello.world",
            "HS512 with a 59-byte secret": hs512(claims),
        }
        for name, bad in cases.items():
            status, body = await refused_status(ws_url(gateway, bad))
            assert status == 401, name
            assert body["code"] == "unauthorized" and body["message"], name
            assert bad not in body["message"], name
            # The same token in the Authorization header is refused the same way.
            headers = {"Authorization": f"Bearer {bad}"}
            status, _ = await refused_status(ws_url(gateway), additional_headers=headers)
            assert status == 401, name
        _, body = await refused_status(ws_url(gateway, token(1, ttl=-5)))
        assert "expired" in body["message"]
        # The Python client reports a refused upgrade as ConnectionRejected (4501).
        async with pgcast.client.connect(ws_url(gateway), token=cases["forged signature"]) as py:
            with pytest.raises(pgcast.client.ConnectionRejected) as rejected:
                async with py.subscribe("orders"):
                    pass
            assert rejected.value.code == 4501
        await still_served(good, tables, 100)
        assert await db_fingerprint(tables) == (before[0] + 1, before[1] + 1, *before[2:])


async def test_token_expiring_on_a_live_connection_closes_4503_unless_refreshed(
    database_url: str, tables: asyncpg.Connection, tmp_path: Path
) -> None:
    auth = make_auth(tmp_path, jwt_leeway=0)
    async with running_gateway(database_url, auth=auth) as gateway, witness(gateway) as good:
        # ``short`` expires first; ``later`` one second after it. ``refreshed`` starts
        # with a token like ``short`` and swaps in a fresh one: once ``later`` is
        # closed, ``refreshed`` has outlived its first token.
        now = int(time.time())
        short = jwt.encode({"sub": "r", "merchant_id": 1, "aud": AUDIENCE, "exp": now + 3}, SECRET)
        later = jwt.encode({"sub": "l", "merchant_id": 1, "aud": AUDIENCE, "exp": now + 4}, SECRET)
        async with (
            client_for(gateway, short) as refreshed,
            client_for(gateway, later) as expiring,
            client_for(gateway, token(1, sub="r")) as other_sub,
        ):
            ack = await refreshed.subscribe("o", table="orders")
            assert ack["type"] == "subscribed"
            await refreshed.send({"type": "auth", "token": token(1, sub="r")})
            # A refresh with another subject is refused: 4501.
            await other_sub.send({"type": "auth", "token": token(1, sub="somebody-else")})
            assert await close_code(other_sub.ws) == 4501
            assert await close_code(expiring.ws, timeout=10) == 4503
            await still_served(refreshed, tables, 101)
            await refreshed.send({"type": "ping"})
            assert (await refreshed.recv_type("pong"))["type"] == "pong"
        # An `auth` message carrying an expired token closes with 4503 as well.
        async with client_for(gateway, token(1, sub="e")) as client:
            await client.send({"type": "auth", "token": token(1, sub="e", ttl=-5)})
            reply = await client.recv()
            assert (reply["type"], reply["code"]) == ("error", "unauthorized")
            assert await close_code(client.ws) == 4503
        (change,) = await good.changes(1)
        assert change["record"]["id"] == 101


async def test_first_message_auth_flow(
    database_url: str, tables: asyncpg.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pgcast.connections, "AUTH_TIMEOUT", 1.0)
    auth = make_auth(tmp_path)
    async with running_gateway(database_url, auth=auth) as gateway, witness(gateway) as good:
        before = await db_fingerprint(tables)
        # Admitted without a token; ping is answered; `auth` first, then subscribe works.
        async with client_for(gateway, None) as client:
            await client.send({"type": "ping", "data": 1})
            assert await client.recv() == {"type": "pong", "data": 1}
            await client.send({"type": "auth", "token": token(2)})
            ack = await client.subscribe("o", table="orders", snapshot=True)
            snap = ack if ack["type"] == "snapshot" else await client.recv_type("snapshot")
            assert [row["merchant_id"] for row in snap["rows"]] == [2]
        # Anything else first: error unauthorized, close 4501, no subscription made.
        async with client_for(gateway, None) as client:
            await client.send({"type": "subscribe", "id": "o", "table": "orders"})
            reply = await client.recv()
            assert (reply["type"], reply["code"]) == ("error", "unauthorized")
            assert await close_code(client.ws) == 4501
        # A bad token in the first message: 4501.
        async with client_for(gateway, None) as client:
            await client.send({"type": "auth", "token": token(2, key="wrong-secret-" + "q" * 40)})
            assert (await client.recv())["code"] == "unauthorized"
            assert await close_code(client.ws) == 4501
        # Silence: closed 4501 after AUTH_TIMEOUT.
        async with client_for(gateway, None) as client:
            assert await close_code(client.ws) == 4501
        await still_served(good, tables, 102)
        assert await db_fingerprint(tables) == (before[0] + 1, before[1] + 1, *before[2:])


async def test_tenants_tables_and_channels_are_enforced(
    database_url: str, tables: asyncpg.Connection, tmp_path: Path
) -> None:
    auth = make_auth(tmp_path, max_publish_bytes=100)
    async with (
        running_gateway(database_url, auth=auth, channels=CHANNELS) as gateway,
        witness(gateway) as good,
        client_for(gateway, token(2)) as tenant2,
        client_for(gateway, token(None, sub="claimless")) as claimless,
    ):
        before = await db_fingerprint(tables)
        # Tenant 2 asks for tenant 1's rows by filter, by snapshot and by replay: nothing.
        for fields in ({"snapshot": True}, {"since": "0"}, {}):
            await tenant2.send(
                {"type": "subscribe", "id": "x", "table": "orders", "filter": "merchant_id=eq.1"}
                | fields
            )
            frames = []
            while (frame := await tenant2.recv())["type"] != "subscribed":
                frames.append(frame)
            rows = [r for f in frames for r in f.get("rows", [])]
            changes = [f for f in frames if f["type"] == "change"]
            assert rows == [] and changes == [], fields
            await tenant2.send({"type": "unsubscribe", "id": "x"})
            assert (await tenant2.recv())["type"] == "unsubscribed"
        await tenant2.subscribe("mine", table="orders")
        expected_errors = [
            ({"type": "subscribe", "id": "a", "table": "secrets"}, "forbidden"),
            ({"type": "subscribe", "id": "b", "channel": "x; DROP TABLE orders"}, "bad_request"),
            ({"type": "subscribe", "id": "c", "channel": "tenant_1_feed"}, "forbidden_channel"),
            ({"type": "subscribe", "id": "d", "channel": "pgcast"}, "forbidden_channel"),
            (
                {"type": "subscribe", "id": "e", "channel": "system_notifications"},
                "forbidden_channel",
            ),
            (
                {
                    "type": "publish",
                    "id": "f",
                    "channel": "a'); DROP TABLE orders; --",
                    "payload": "x",
                },
                "bad_request",
            ),
            (
                {"type": "publish", "id": "g", "channel": "pgcast", "payload": "x"},
                "forbidden_channel",
            ),
            (
                {"type": "publish", "id": "h", "channel": "tenant_1_feed", "payload": "x"},
                "forbidden_channel",
            ),
            (
                {"type": "publish", "id": "i", "channel": "query_results_1", "payload": "x" * 101},
                "payload_too_large",
            ),
            (
                {"type": "publish", "id": "j", "channel": "query_results_1", "payload": "é" * 51},
                "payload_too_large",
            ),
        ]
        for message, code in expected_errors:
            await tenant2.send(message)
            reply = await tenant2.recv_type("error")
            assert (reply["code"], reply["id"]) == (code, message["id"]), message
        # Without the tenant claim the rule binds to false: the table is forbidden.
        reply = await claimless.subscribe("o", table="orders")
        assert (reply["type"], reply["code"]) == ("error", "forbidden")
        assert (await claimless.subscribe("p", table="posts"))["type"] == "subscribed"
        # Tenant 1's next row reaches the witness, not tenant 2; tenant 2's own row does.
        await still_served(good, tables, 103)
        await tables.execute("INSERT INTO orders VALUES (104, 2, false, 'open', 1)")
        (change,) = await tenant2.changes(1)
        assert change["record"]["id"] == 104
        assert await db_fingerprint(tables) == (before[0] + 2, before[1] + 2, *before[2:])


async def test_publish_reaches_the_subscribers_of_the_channel(
    database_url: str, tables: asyncpg.Connection, tmp_path: Path
) -> None:
    auth = make_auth(tmp_path)
    async with (
        running_gateway(database_url, auth=auth, channels=CHANNELS) as gateway,
        client_for(gateway, token(1, sub="pub")) as publisher,
        client_for(gateway, token(1, sub="sub")) as subscriber,
        client_for(gateway, token(2, sub="other")) as other_tenant,
    ):
        before = await db_fingerprint(tables)
        for client, channel in ((subscriber, "tenant_1_feed"), (other_tenant, "tenant_2_feed")):
            ack = await client.subscribe("c", channel=channel)
            assert ack["type"] == "subscribed", ack
        ack = await subscriber.subscribe("q", channel="query_results_7")
        assert ack["type"] == "subscribed"
        payload = '{"rows": [1, 2], "quote": "\'; DROP TABLE orders; --"}'
        await publisher.send(
            {"type": "publish", "id": "p1", "channel": "tenant_1_feed", "payload": payload}
        )
        await publisher.send(
            {"type": "publish", "id": "p2", "channel": "query_results_7", "payload": "done"}
        )
        first = await subscriber.recv_type("message")
        second = await subscriber.recv_type("message")
        assert (first["sub"], first["channel"], first["payload"]) == ("c", "tenant_1_feed", payload)
        assert (second["sub"], second["payload"]) == ("q", "done")
        # The Python client's channel subscription receives it too.
        py = pgcast.client.connect(ws_url(gateway), token=token(1, sub="py"))
        async with py, py.channel("tenant_1_feed") as channel:
            await publisher.send(
                {"type": "publish", "id": "p3", "channel": "tenant_1_feed", "payload": "hi"}
            )
            async with asyncio.timeout(TIMEOUT):
                message = await anext(aiter(channel))
            assert message["payload"] == "hi"
        # Tenant 2 saw none of it (its own channel, then a ping as an ordering fence).
        await other_tenant.send({"type": "ping", "data": "fence"})
        assert await other_tenant.recv() == {"type": "pong", "data": "fence"}
        assert await db_fingerprint(tables) == before


async def test_floods_and_connection_limits(
    database_url: str, tables: asyncpg.Connection, tmp_path: Path
) -> None:
    auth = make_auth(
        tmp_path,
        subscribe_rate=5,
        publish_rate=2,
        max_connections_per_subject=2,
        max_connections_per_ip=6,
        allowed_origins="https://app.example.com",
    )
    async with (
        running_gateway(database_url, auth=auth, channels=CHANNELS, max_subscriptions=3) as gateway,
        witness(gateway) as good,  # connection 1 of the IP
    ):
        before = await db_fingerprint(tables)
        url = ws_url(gateway, token(2, sub="flooder"))
        async with client_for(gateway, token(2, sub="flooder")) as flooder:  # connection 2
            for n in range(20):
                await flooder.send({"type": "subscribe", "id": f"s{n}", "table": "orders"})
            replies = [await flooder.recv() for _ in range(20)]
            codes = [r.get("code", r["type"]) for r in replies]
            assert codes.count("subscribed") == 3, codes
            assert "too_many_subscriptions" in codes and "rate_limited" in codes, codes
            for n in range(10):
                await flooder.send(
                    {"type": "publish", "id": f"p{n}", "channel": "query_results_1", "payload": "x"}
                )
            await flooder.send({"type": "ping", "data": "fence"})
            limited = []
            while (reply := await flooder.recv())["type"] != "pong":
                limited.append(reply["code"])
            assert limited and set(limited) == {"rate_limited"}, limited
            # Per subject: a third connection of "flooder" is refused with 429.
            async with client_for(gateway, token(2, sub="flooder")):  # connection 3
                status, body = await refused_status(url)
                assert (status, body["code"]) == (429, "rate_limited")
            # The third via a first `auth` message is closed with 4502 instead.
            await settle(gateway, 2)
            async with (
                client_for(gateway, token(2, sub="flooder")),  # 3
                client_for(gateway, None) as late,  # 4
            ):
                await late.send({"type": "auth", "token": token(2, sub="flooder")})
                assert await close_code(late.ws) == 4502
        await settle(gateway, 1)
        # Origin: a browser from another site is refused with 403; the listed one is not.
        status, body = await refused_status(
            ws_url(gateway, token(3)), origin="https://evil.example.com"
        )
        assert (status, body["code"]) == (403, "forbidden")
        async with client_for(gateway, token(3), origin="https://app.example.com"):
            pass
        # Per IP: 6 connections at most (the witness holds one).
        await settle(gateway, 1)
        async with contextlib.AsyncExitStack() as stack:
            for n in range(5):
                await stack.enter_async_context(client_for(gateway, token(3, sub=f"ip{n}")))
            status, body = await refused_status(ws_url(gateway, token(3, sub="ip-extra")))
            assert (status, body["code"]) == (429, "rate_limited")
        await still_served(good, tables, 105)
        assert await db_fingerprint(tables) == (before[0] + 1, before[1] + 1, *before[2:])


async def test_sse_takes_its_token_from_the_query(
    database_url: str, tables: asyncpg.Connection, tmp_path: Path
) -> None:
    auth = make_auth(tmp_path)
    async with running_gateway(database_url, auth=auth) as gateway, witness(gateway) as good:
        before = await db_fingerprint(tables)
        for bad in (None, token(1, key="wrong-secret-" + "w" * 40), token(1, ttl=-60)):
            params = {"table": "orders"} | ({"token": bad} if bad else {})
            refused = await open_sse(gateway.port, params)
            try:
                assert refused.status == 401
                assert (await refused.body())["code"] == "unauthorized"
            finally:
                refused.close()
        refused = await open_sse(gateway.port, {"table": "secrets", "token": token(1)})
        try:
            assert refused.status == 403
        finally:
            refused.close()
        stream = await open_sse(
            gateway.port, {"table": "orders", "snapshot": "true", "token": token(2)}
        )
        try:
            assert stream.status == 200
            snap = await stream.next_of("snapshot")
            assert [row["merchant_id"] for row in snap.data["rows"]] == [2]
            await still_served(good, tables, 106)  # tenant 1: not on tenant 2's stream
            await tables.execute("INSERT INTO orders VALUES (107, 2, false, 'open', 1)")
            (change,) = await stream.changes(1)
            assert change.data["record"]["id"] == 107
        finally:
            stream.close()
        assert await db_fingerprint(tables) == (before[0] + 2, before[1] + 2, *before[2:])


async def test_refresh_with_other_claims_rebinds_the_rule_and_keeps_the_clients_filter(
    database_url: str, tables: asyncpg.Connection, tmp_path: Path
) -> None:
    """Same subject, new tenant claim: the subscription follows the new claim, and the
    client's own filter still applies (it is kept apart from the rule's conditions)."""
    async with (
        running_gateway(database_url, channels=",".join(CHANNELS), auth=make_auth(tmp_path)) as gw,
        client_for(gw, token(1, sub="mover")) as client,
    ):
        ack = await client.subscribe("o", table="orders", filter="status=eq.open")
        assert ack["type"] == "subscribed", ack
        await client.send({"type": "auth", "token": token(2, sub="mover")})
        await client.send({"type": "ping"})
        assert (await client.recv_type("pong"))["type"] == "pong"  # the auth was handled
        await tables.execute("INSERT INTO orders VALUES (10, 1, false, 'open', 1)")
        await tables.execute("INSERT INTO orders VALUES (11, 2, false, 'paid', 1)")
        await tables.execute("INSERT INTO orders VALUES (12, 2, false, 'open', 1)")
        (change,) = await client.changes(1)
        # ids 10 and 11 were committed first: had either been sent, it would come first
        assert change["record"]["id"] == 12  # tenant 2 now, and still only 'open' rows


async def test_unknown_tables_and_columns_are_not_revealed_to_a_token_without_rights(
    database_url: str, tables: asyncpg.Connection, tmp_path: Path
) -> None:
    async with (
        running_gateway(database_url, channels=",".join(CHANNELS), auth=make_auth(tmp_path)) as gw,
        client_for(gw, token(1)) as client,
    ):
        for name, extra in [("secrets", {"filter": "nope=eq.1"}), ("no_such_table", {})]:
            refused = await client.subscribe(f"x-{name}", table=name, **extra)
            assert refused["code"] == "forbidden", refused
