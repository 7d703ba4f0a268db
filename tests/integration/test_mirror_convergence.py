"""Invariants 1-3 under chaos: mirrors converge, nothing lost or doubled, per-row order.

Several writers change ``items`` concurrently (multi-statement transactions, some
rolled back on purpose, deadlocks tolerated); several Python clients, each with its
own filter and ``snapshot=True`` and each behind its own TCP proxy to the gateway
port, apply what they receive to a local mirror. Meanwhile a seeded chaos schedule
kills the gateway's LISTEN backend, cuts client sockets and restarts the gateway on
the same port; in WAL mode (the table tracked with ``capture="wal"`` on the
wal_level = logical cluster) it also terminates the slot consumer's backends.
Once writes stop, every mirror must equal the table seen through its
filter; every client must have received each change id at most once (after the
client library's own duplicate dropping) and every matching change after its
snapshot; and per row, the ``version`` column (drawn from a sequence while holding
the row's advisory lock, so it grows in commit order per row) never goes backwards.

Rounds are seeds: ``PGCAST_CHAOS_ROUNDS=20`` runs seeds 1..20 (default 3);
``PGCAST_CHAOS_SEED=123`` runs just that seed. ``PGCAST_CHAOS_LOG=path`` appends a
JSON line of figures per round. Every assertion message starts with the seed.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import random
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from pgcast.backoff import backoff
from pgcast.capture.installer import track
from pgcast.client import Client, connect
from pgcast.config import Settings
from pgcast.filters import parse_filter
from pgcast.identifiers import parse_table_name
from pgcast.server import Gateway

from .tcp_proxy import TcpProxy

if os.environ.get("PGCAST_CHAOS_SEED"):
    SEEDS = [int(os.environ["PGCAST_CHAOS_SEED"])]
else:
    SEEDS = list(range(1, 1 + int(os.environ.get("PGCAST_CHAOS_ROUNDS", "3"))))

ROWS = 40  # writers touch ids 1..ROWS
SENTINEL = 10_000  # written last; matches every filter below
FILTERS: tuple[str | None, ...] = ("tenant=eq.1", "v=gt.50", None, "tenant=in.(1,2)&v=lt.80")
WRITERS = 4
CONVERGE_TIMEOUT = 30.0


LOCK = "SELECT pg_advisory_xact_lock($1)"
UPDATE = "UPDATE items SET tenant = $2, v = $3, version = nextval('item_version') WHERE id = $1"
UPDATE_V = "UPDATE items SET v = $2, version = nextval('item_version') WHERE id = $1"
UPDATE_MANY = (
    "UPDATE items SET v = (v + $2) % 100, version = nextval('item_version') WHERE id = ANY($1)"
)
UPSERT = (
    "INSERT INTO items VALUES ($1, $2, $3, nextval('item_version')) ON CONFLICT (id) DO UPDATE"
    " SET tenant = EXCLUDED.tenant, v = EXCLUDED.v, version = nextval('item_version')"
)
DELETE = "DELETE FROM items WHERE id = $1"


class Proxy(TcpProxy):
    """A TcpProxy that closes the client side when the target refuses (gateway down).

    The base proxy leaves the accepted socket open when the upstream connect fails,
    so a client would wait for its open timeout instead of retrying at once.
    """

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await super()._accept(reader, writer)
        except OSError:
            writer.transport.abort()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Stats:
    committed: int = 0
    rolled_back: int = 0
    deadlocks: int = 0
    truncates: int = 0
    listener_kills: int = 0
    cuts: int = 0
    restarts: int = 0
    wal_kills: int = 0


class Mirror:
    """One client: its filter, its local copy of the table, and what it received."""

    def __init__(
        self, index: int, filter_text: str | None, seed: int, dsn: str, *, wal: bool = False
    ) -> None:
        self.index = index
        # WAL mode: a table snapshot can already hold commits the slot consumer has
        # not appended yet, so they arrive after it (see docs/wal-capture.md, "Known
        # limits"). Such a change may take a row back once, to a version not newer
        # than the snapshot's; counted, not a violation. Any other step back is.
        self.wal = wal
        self.from_snapshot: set[int] = set()  # rows whose last version is the snapshot's
        self.snapshot_overlaps = 0
        self.filter_text = filter_text
        self.filter = parse_filter(filter_text)
        self.seed = seed
        self.dsn = dsn
        self.proxy: Proxy | None = None
        self.client: Client | None = None
        self.task: asyncio.Task[None] | None = None
        self.rows: dict[int, dict[str, Any]] = {}
        self.versions: dict[int, int] = {}  # row id -> last version seen in this stream
        self.ids: collections.Counter[int] = collections.Counter()
        self.position: int | None = None  # of the last completed snapshot
        self.snapshots = 0  # part-0 chunks received (a snapshot restarted if > 1)
        self.resyncs = 0
        self.duplicates_dropped = 0
        self.violations: list[str] = []
        self.snapshot_wire: str | None = None  # wire id the last snapshot came on
        self.error: BaseException | None = None
        self.cut_after_snapshot = False  # chaos: cut the socket as soon as the snapshot is done
        self.early_cuts = 0

    def __repr__(self) -> str:
        return f"client {self.index} (filter {self.filter_text!r})"

    def wants(self, op: str, record: Any, old: Any) -> bool:
        """The hub's rule: UPDATE on new OR old row, DELETE on old, TRUNCATE always."""
        if op == "TRUNCATE":
            return True
        if op == "INSERT":
            return self.filter.matches(record)
        if op == "DELETE":
            return self.filter.matches(old)
        return self.filter.matches(record) or self.filter.matches(old)

    async def run(self, url: str) -> None:
        rng = random.Random(f"{self.seed}-client-{self.index}")
        self.client = connect(
            url,
            ping_interval=1.0,
            ping_timeout=2.0,
            open_timeout=3.0,
            close_timeout=1.0,
            backoff_factory=lambda: backoff(0.05, 0.5, rng=rng),
        )
        try:
            async with (
                self.client as client,
                client.subscribe("items", filter=self.filter_text, snapshot=True) as sub,
            ):
                async for frame in sub:
                    await self.apply(frame)
                self.duplicates_dropped = sub.duplicates
        except Exception as exc:  # reported by the test, with the seed
            self.error = exc

    async def apply(self, frame: dict[str, Any]) -> None:
        kind = frame["type"]
        if kind == "snapshot":
            if frame["part"] == 0:
                self.rows.clear()
                self.versions.clear()
                self.from_snapshot.clear()
                self.snapshots += 1
            for row in frame["rows"]:
                self.rows[row["id"]] = row
                self.versions[row["id"]] = row["version"]
                self.from_snapshot.add(row["id"])
            if frame["done"]:
                # An exact position ("head:xmax:open,txids"); its head is a change id.
                self.position = int(str(frame["position"]).split(":")[0])
                self.snapshot_wire = frame["sub"]
                if self.cut_after_snapshot and self.proxy is not None:
                    # Resubscribes from the snapshot position before any change arrives.
                    self.cut_after_snapshot = False
                    self.early_cuts += 1
                    self.proxy.cut()
        elif kind == "change":
            self.apply_change(frame)
        elif kind == "resync":
            self.resyncs += 1
            await self.refetch()
        else:
            self.violations.append(f"unexpected frame {frame!r}")

    def apply_change(self, change: dict[str, Any]) -> None:
        change_id = int(change["id"])
        self.ids[change_id] += 1
        if self.position is None:
            self.violations.append(f"change {change_id} before the snapshot was complete")
        op, record, old = change["op"], change["record"], change["old_record"]
        if op == "TRUNCATE":
            self.rows.clear()
            return
        row_id = (record or old)["id"]
        last = self.versions.get(row_id)
        overlap = self.wal and row_id in self.from_snapshot
        self.from_snapshot.discard(row_id)
        if last is not None and (
            (old is not None and old["version"] < last)
            or (record is not None and record["version"] <= last)
        ):
            if overlap:
                self.snapshot_overlaps += 1
            else:
                self.violations.append(
                    f"row {row_id} went back: change {change_id} {op} (snapshot position "
                    f"{self.position}, snapshot on {self.snapshot_wire}, change on "
                    f"{change['sub']}) old version {old and old['version']} new version "
                    f"{record and record['version']} after version {last}"
                )
        self.versions[row_id] = (record or old)["version"]
        if op == "DELETE":
            self.rows.pop(old["id"], None)
        elif self.filter.matches(record):
            self.rows[row_id] = record
        else:
            self.rows.pop(row_id, None)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
        if self.task is not None:
            await self.task
        if self.proxy is not None:
            await self.proxy.stop()

    async def refetch(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            rows = [dict(r) for r in await conn.fetch("SELECT * FROM items")]
        finally:
            await conn.close()
        self.rows = {r["id"]: r for r in rows if self.filter.matches(r)}
        self.versions = {r["id"]: r["version"] for r in rows}


async def writer(dsn: str, rng: random.Random, stop: asyncio.Event, stats: Stats) -> None:
    conn = await asyncpg.connect(dsn, server_settings={"deadlock_timeout": "50ms"})
    try:
        while not stop.is_set():
            tx = conn.transaction()
            await tx.start()
            try:
                if rng.random() < 0.001:
                    await conn.execute("TRUNCATE items")
                    stats.truncates += 1
                else:
                    for _ in range(rng.randint(1, 4)):
                        await write_one(conn, rng)
                if rng.random() < 0.2:
                    await tx.rollback()
                    stats.rolled_back += 1
                else:
                    await tx.commit()
                    stats.committed += 1
            except asyncpg.DeadlockDetectedError:
                await tx.rollback()
                stats.deadlocks += 1
            # Pacing of the write schedule (not a wait for an event).
            await asyncio.sleep(rng.uniform(0, 0.01))
    finally:
        await conn.close()


async def write_one(conn: asyncpg.Connection, rng: random.Random) -> None:
    """One statement. Every row it writes is first advisory-locked until commit, so
    ``version`` (a sequence) grows in commit order per row, deletes and re-inserts
    included; row locks alone would not order an INSERT after a DELETE that way."""
    action = rng.random()
    if action < 0.1:
        ids = sorted(rng.sample(range(1, ROWS + 1), rng.randint(2, 5)))
        for row_id in ids:
            await conn.execute(LOCK, row_id)
        await conn.execute(UPDATE_MANY, ids, rng.randint(1, 60))
        return
    row_id = rng.randint(1, ROWS)
    await conn.execute(LOCK, row_id)
    if action < 0.4:
        await conn.execute(UPDATE, row_id, rng.randint(0, 2), rng.randint(0, 99))
    elif action < 0.6:
        await conn.execute(UPDATE_V, row_id, rng.randint(0, 99))
    elif action < 0.82:
        await conn.execute(UPSERT, row_id, rng.randint(0, 2), rng.randint(0, 99))
    else:
        await conn.execute(DELETE, row_id)


class Cluster:
    """The gateway (restartable on a fixed port) and its clients' proxies."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.settings = Settings(port=free_port(), poll_interval=0.2, probe_interval=1.0)
        self.gateway: Gateway | None = None

    async def start(self) -> None:
        gateway = Gateway(self.settings, self.dsn)
        await gateway.start()
        self.gateway = gateway

    async def stop(self) -> None:
        gateway, self.gateway = self.gateway, None
        if gateway is not None:
            await gateway.stop(timeout=2.0)

    async def restart(self) -> None:
        await self.stop()
        await self.start()


def chaos_schedule(
    rng: random.Random, clients: int, *, wal: bool = False
) -> Iterator[tuple[float, str]]:
    """(delay, action) pairs; the later clients join during the first half."""
    actions = (
        ["kill_listener"] * 4 + ["cut_one"] * 4 + ["cut_all"] * 2 + ["restart"] * 2 + ["rejoin"] * 3
    )
    if wal:
        actions += ["kill_wal"] * 4
    rng.shuffle(actions)
    for index in range(1, clients):
        actions.insert(rng.randint(0, len(actions) // 2), f"join_{index}")
    for action in actions:
        yield rng.uniform(0.1, 0.6), action


async def wait_until(condition: Any, timeout: float) -> bool:
    """Poll ``condition()`` until it is true or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


@pytest.fixture
async def items(conn: asyncpg.Connection) -> asyncpg.Connection:
    return await make_items(conn, "trigger")


@pytest.fixture
async def wal_items(wconn: asyncpg.Connection) -> asyncpg.Connection:
    return await make_items(wconn, "wal")


async def make_items(conn: asyncpg.Connection, capture: str) -> asyncpg.Connection:
    await conn.execute("CREATE SEQUENCE item_version")
    await conn.execute(
        "CREATE TABLE items (id int PRIMARY KEY, tenant int NOT NULL, v int NOT NULL,"
        " version bigint NOT NULL)"
    )
    await conn.execute(
        "INSERT INTO items SELECT g, g % 3, (g * 37) % 100, nextval('item_version')"
        " FROM generate_series(1, $1) g",
        ROWS * 3 // 4,
    )
    await track(conn, parse_table_name("items"), capture=capture)
    return conn


@pytest.mark.parametrize("seed", SEEDS)
async def test_mirrors_converge_under_chaos(
    database_url: str, items: asyncpg.Connection, seed: int
) -> None:
    await chaos_round(database_url, items, seed, cut_after_snapshot=False)


async def test_resume_right_after_snapshot_under_chaos(
    database_url: str, items: asyncpg.Connection
) -> None:
    """The same round, but clients' sockets are also cut right after their snapshot,
    so they resume from the snapshot position (``since`` = its log head)."""
    await chaos_round(database_url, items, 1000 + SEEDS[0], cut_after_snapshot=True)


async def test_mirrors_converge_under_chaos_in_wal_mode(
    wal_dsn: str, wal_items: asyncpg.Connection
) -> None:
    """WAL capture: the slot consumer's backends are also terminated, and each
    gateway restart hands the slot to the next consumer."""
    await chaos_round(wal_dsn, wal_items, 2000 + SEEDS[0], cut_after_snapshot=False, wal=True)


async def chaos_round(
    database_url: str,
    items: asyncpg.Connection,
    seed: int,
    *,
    cut_after_snapshot: bool,
    wal: bool = False,
) -> None:
    started = time.monotonic()
    rng = random.Random(seed)
    stats = Stats()
    cluster = Cluster(database_url)
    await cluster.start()
    mirrors = [Mirror(i, f, seed, database_url, wal=wal) for i, f in enumerate(FILTERS)]
    retired: list[Mirror] = []  # replaced by a fresh client (new snapshot) mid-round
    admin = await asyncpg.connect(database_url)
    stop_writes = asyncio.Event()
    writers: list[asyncio.Task[None]] = []

    async def join(mirror: Mirror) -> None:
        mirror.cut_after_snapshot = rng.random() < 0.5 and cut_after_snapshot
        mirror.proxy = Proxy("127.0.0.1", cluster.settings.port)
        await mirror.proxy.start()
        mirror.task = asyncio.create_task(mirror.run(f"ws://127.0.0.1:{mirror.proxy.port}"))

    try:
        writers = [
            asyncio.create_task(
                writer(database_url, random.Random(f"{seed}-writer-{i}"), stop_writes, stats)
            )
            for i in range(WRITERS)
        ]
        await join(mirrors[0])
        for delay, action in chaos_schedule(rng, len(mirrors), wal=wal):
            await asyncio.sleep(delay)  # the schedule's randomized spacing
            if action.startswith("join_"):
                await join(mirrors[int(action.removeprefix("join_"))])
            elif action == "kill_listener":
                pid = cluster.gateway.listener.backend_pid if cluster.gateway else None
                if pid is not None:
                    await admin.execute("SELECT pg_terminate_backend($1)", pid)
                    stats.listener_kills += 1
            elif action == "kill_wal":
                killed = await admin.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name IN ('pgcast-wal', 'pgcast-wal-stream') "
                    "AND datname = current_database()"
                )
                stats.wal_kills += killed
            elif action == "cut_one":
                proxy = rng.choice(mirrors).proxy
                if proxy is not None:
                    proxy.cut()
                    stats.cuts += 1
            elif action == "cut_all":
                for mirror in mirrors:
                    if mirror.proxy is not None:
                        mirror.proxy.cut()
                stats.cuts += 1
            elif action == "rejoin":
                slot = rng.choice([m.index for m in mirrors if m.task is not None])
                old = mirrors[slot]
                await old.close()
                retired.append(old)
                mirrors[slot] = Mirror(slot, old.filter_text, seed, database_url, wal=wal)
                await join(mirrors[slot])
            elif action == "restart":
                await cluster.restart()
                stats.restarts += 1
        stop_writes.set()
        await asyncio.gather(*writers)
        # The last write, matching every filter: once a client holds it, it has been
        # sent everything committed before it.
        await items.execute(
            "INSERT INTO items VALUES ($1, 1, 60, nextval('item_version'))", SENTINEL
        )
        table = [dict(r) for r in await items.fetch("SELECT * FROM items")]
        expected = [{r["id"]: r for r in table if mirror.filter.matches(r)} for mirror in mirrors]

        def converged() -> bool:
            return all(
                m.error is not None or m.rows == want
                for m, want in zip(mirrors, expected, strict=True)
            )

        ok = await wait_until(converged, CONVERGE_TIMEOUT)
        for mirror in mirrors:
            assert mirror.error is None, f"seed {seed}: {mirror} failed: {mirror.error!r}"
        if not ok:
            details = []
            for mirror, want in zip(mirrors, expected, strict=True):
                if mirror.rows != want:
                    missing = sorted(set(want) - set(mirror.rows))
                    extra = sorted(set(mirror.rows) - set(want))
                    stale = {
                        k: (mirror.rows[k]["version"], want[k]["version"])
                        for k in set(want) & set(mirror.rows)
                        if mirror.rows[k] != want[k]
                    }
                    client = mirror.client
                    details.append(
                        f"{mirror} [client {client and client.status}, "
                        f"{len(mirror.ids)} changes, last id {max(mirror.ids, default=None)}, "
                        f"position {mirror.position}]: missing {missing}, extra {extra}, "
                        f"stale (mirror version, table version) {stale}"
                    )
            health = cluster.gateway.health() if cluster.gateway else None
            raise AssertionError(
                f"seed {seed}: mirrors did not converge within {CONVERGE_TIMEOUT}s "
                f"(gateway {health}): " + "; ".join(details)
            )
    finally:
        stop_writes.set()
        await asyncio.gather(*writers, return_exceptions=True)
        for mirror in mirrors:
            await mirror.close()
        await cluster.stop()
        await admin.close()

    log = await items.fetch(
        "SELECT id, op, record::text AS record, old_record::text AS old_record"
        " FROM pgcast.changes WHERE table_name = 'items' ORDER BY id"
    )
    changes = [
        (row["id"], row["op"], _json(row["record"]), _json(row["old_record"])) for row in log
    ]
    for mirror in retired:
        assert mirror.error is None, f"seed {seed}: retired {mirror} failed: {mirror.error!r}"
    lost_total = 0
    for mirror in retired + mirrors:
        doubled = {cid: n for cid, n in mirror.ids.items() if n > 1}
        assert not doubled, f"seed {seed}: {mirror} received change ids twice: {doubled}"
        problems = "; ".join(mirror.violations[:10])
        assert not mirror.violations, f"seed {seed}: {mirror}: {problems}"
        assert mirror.resyncs == 0, (
            f"seed {seed}: {mirror} got {mirror.resyncs} resync(s) although the log "
            "retention (7 days) covers the whole test"
        )
        if mirror in retired:
            continue
        assert mirror.position is not None, f"seed {seed}: {mirror} never completed a snapshot"
        owed = {
            cid
            for cid, op, record, old in changes
            if cid > mirror.position and mirror.wants(op, record, old)
        }
        lost = sorted(owed - set(mirror.ids))
        lost_total += len(lost)
        assert not lost, (
            f"seed {seed}: {mirror} never received {len(lost)} matching change(s) committed "
            f"after its snapshot (position {mirror.position}): {lost[:20]}"
        )

    figures = {
        "seed": seed,
        "seconds": round(time.monotonic() - started, 1),
        "changes": len(changes),
        "deliveries": sum(sum(m.ids.values()) for m in retired + mirrors),
        "duplicates_dropped_by_client": sum(m.duplicates_dropped for m in retired + mirrors),
        "snapshots": sum(m.snapshots for m in retired + mirrors),
        "cuts_right_after_snapshot": sum(m.early_cuts for m in retired + mirrors),
        "lost": lost_total,
        "snapshot_overlaps": sum(m.snapshot_overlaps for m in retired + mirrors),
        **stats.__dict__,
    }
    print("chaos round", json.dumps(figures))
    if path := os.environ.get("PGCAST_CHAOS_LOG"):
        with Path(path).open("a") as out:  # noqa: ASYNC230 (one line, once per round)
            out.write(json.dumps(figures) + "\n")


def _json(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)
