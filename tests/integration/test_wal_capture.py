"""WAL capture on real PostgreSQL (a cluster of its own with wal_level = logical)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from pgcast.capture import wal_setup
from pgcast.capture.installer import track
from pgcast.exceptions import CaptureError
from pgcast.identifiers import parse_table_name

from ..conftest import ADMIN_DSN
from .gateway_helpers import TIMEOUT, running_gateway, ws_client
from .test_cli import Cli, assert_no_traceback
from .wal_cluster import WalCluster

ORDERS = (
    "CREATE TABLE orders (id serial PRIMARY KEY, customer_name text, status text, "
    "amount int, note text)"
)


async def wait_for(predicate: Any, timeout: float = TIMEOUT) -> None:
    """Poll ``predicate`` (async) until true: the log is written by another task."""
    async with asyncio.timeout(timeout):
        while not await predicate():  # noqa: ASYNC110 (no event to wait on: another process writes)
            await asyncio.sleep(0.02)


async def log_rows(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT id, op, table_name, record::text, old_record::text, changed "
        "FROM pgcast.changes ORDER BY id"
    )
    return [
        {
            "id": r["id"],
            "op": r["op"],
            "table": r["table_name"],
            "record": None if r["record"] is None else orjson.loads(r["record"]),
            "old_record": None if r["old_record"] is None else orjson.loads(r["old_record"]),
            "changed": r["changed"],
        }
        for r in rows
    ]


async def test_each_op_reaches_a_subscriber_through_the_gateway(
    wal_dsn: str, wconn: asyncpg.Connection
) -> None:
    await wconn.execute(ORDERS)
    tracked = await track(wconn, parse_table_name("orders"), capture="wal")
    assert tracked.capture == "wal"
    assert not await wconn.fetchval(
        "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'orders'::regclass AND NOT tgisinternal"
    )
    async with running_gateway(wal_dsn) as gateway, ws_client(gateway) as client:
        await client.subscribe("s1", table="orders")
        await wconn.execute(
            "INSERT INTO orders (customer_name, status, amount) VALUES ('ann', 'pending', 5)"
        )
        await wconn.execute("UPDATE orders SET status = 'shipped' WHERE id = 1")
        await wconn.execute("DELETE FROM orders WHERE id = 1")
        await wconn.execute("TRUNCATE orders")
        insert, update, delete, truncate = await client.changes(4)
        metrics = gateway.metrics()
    assert "pgcast_wal_consumer_leader 1" in metrics
    assert "pgcast_wal_slot_retained_bytes " in metrics
    assert insert["op"] == "INSERT" and insert["record"] == {
        "id": 1,
        "customer_name": "ann",
        "status": "pending",
        "amount": 5,
        "note": None,
    }
    assert insert["old_record"] is None
    assert update["op"] == "UPDATE" and update["changed"] == ["status"]
    assert update["record"]["status"] == "shipped" and update["old_record"]["status"] == "pending"
    assert delete["op"] == "DELETE" and delete["record"] is None
    assert delete["old_record"]["id"] == 1 and delete["old_record"]["amount"] == 5
    assert truncate["op"] == "TRUNCATE" and truncate["record"] is None
    ids = [int(m["id"]) for m in (insert, update, delete, truncate)]
    assert ids == sorted(ids) and len(set(ids)) == 4
    assert insert["committed_at"].endswith("Z")


async def test_wal_capture_refused_where_wal_level_is_replica_installs_nothing(
    database_url: str, conn: asyncpg.Connection
) -> None:
    if await conn.fetchval("SHOW wal_level") == "logical":
        pytest.skip("the main test server already has wal_level = logical")
    await conn.execute(ORDERS)
    with pytest.raises(CaptureError) as caught:
        await track(conn, parse_table_name("orders"), capture="wal")
    assert "wal_level = logical" in str(caught.value)
    assert "ALTER SYSTEM SET wal_level = logical" in str(caught.value)
    assert await conn.fetchval("SELECT to_regclass('pgcast.changes')") is None
    assert not await conn.fetchval("SELECT count(*) FROM pg_publication")
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        assert not await admin.fetchval(
            "SELECT count(*) FROM pg_replication_slots WHERE database = current_database()"
        )
    finally:
        await admin.close()


TYPED_COLUMNS = (
    "id int PRIMARY KEY, num numeric, big bigint, flag bool, at timestamptz, day date, "
    "u uuid, doc jsonb, js json, ints int[], words text[], raw bytea, words_u text, "
    "f8 float8, f4 real, span interval, tod time, ts timestamp, small smallint, "
    "vc varchar(20), nums numeric(12,3)[], big_text text"
)

TYPED_ROWS = """
INSERT INTO {t} VALUES
 (1, 12345678901234567890.123456789, 9007199254740993, true, '2026-11-21 12:00:00.123456+02',
  '2026-02-28', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{{"a": [1, 2.50, null], "b": "x"}}',
  '{{"k": 1,  "k": 2}}', '{{1,NULL,3}}', '{{"a b","c,d",NULL,"\\"q\\""}}', '\\x00ff10',
  'zoë 🚀 日本 \\n "quoted"', 0.1, 1.5, '1 day 02:03:04.5', '23:59:59.999', '2026-01-01 00:00',
  -32768, 'vc', '{{1.5,2.250}}', repeat('toast', 5000)),
 (2, 'NaN', NULL, NULL, NULL, NULL, NULL, 'null', NULL, '{{}}', NULL, '', '', 'Infinity',
  '-Infinity', NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (3, -0.000001, -1, false, 'infinity', '-infinity', NULL, '[]', '[]', '{{{{1,2}},{{3,4}}}}',
  '{{}}', NULL, NULL, -0.0, 3.4e38, '-3 months', '00:00', '-infinity', 0, '', NULL, NULL)
"""


async def test_every_common_type_is_typed_like_trigger_mode(
    wal_dsn: str, wconn: asyncpg.Connection
) -> None:
    for name in ("by_trigger", "by_wal"):
        await wconn.execute(f"CREATE TABLE {name} ({TYPED_COLUMNS})")
    await track(wconn, parse_table_name("by_trigger"))
    await track(wconn, parse_table_name("by_wal"), capture="wal")
    async with running_gateway(wal_dsn):
        for name in ("by_trigger", "by_wal"):
            await wconn.execute(TYPED_ROWS.format(t=name))
            # big_text is TOASTed and unchanged: pgoutput sends a marker, filled in from old
            await wconn.execute(f"UPDATE {name} SET flag = NOT flag, num = num + 1")
            await wconn.execute(f"DELETE FROM {name} WHERE id = 2")

        async def both_logged() -> bool:
            count = await wconn.fetchval(
                "SELECT count(*) FROM pgcast.changes WHERE table_name = 'by_wal'"
            )
            return bool(count == 3 + 2 + 1)

        await wait_for(both_logged)
    rows = await log_rows(wconn)
    by_trigger = [{**r, "id": None, "table": None} for r in rows if r["table"] == "by_trigger"]
    by_wal = [{**r, "id": None, "table": None} for r in rows if r["table"] == "by_wal"]
    assert len(by_trigger) == 6
    assert by_wal == by_trigger
    first = by_wal[0]["record"]
    assert first["big"] == 9007199254740993 and first["words_u"] == 'zoë 🚀 日本 \\n "quoted"'
    update = next(r for r in by_wal if r["op"] == "UPDATE" and r["record"]["id"] == 1)
    assert update["record"]["big_text"] == "toast" * 5000
    assert update["old_record"]["big_text"] == "toast" * 5000
    assert sorted(update["changed"]) == ["flag", "num"]


async def logged_ids(conn: asyncpg.Connection) -> list[int]:
    rows = await conn.fetch(
        "SELECT (record->>'id')::int AS id FROM pgcast.changes WHERE op = 'INSERT' ORDER BY id"
    )
    return [r["id"] for r in rows]


async def wait_logged(conn: asyncpg.Connection, count: int, timeout: float = 30.0) -> None:
    async def enough() -> bool:
        return bool(await conn.fetchval("SELECT count(*) FROM pgcast.changes") >= count)

    await wait_for(enough, timeout)


async def leader_pid(conn: asyncpg.Connection, application: str) -> int | None:
    pid: int | None = await conn.fetchval(
        "SELECT pid FROM pg_stat_activity WHERE application_name = $1 "
        "AND datname = current_database()",
        application,
    )
    return pid


async def test_terminated_consumer_backends_lose_and_double_nothing(
    wal_dsn: str, wconn: asyncpg.Connection
) -> None:
    await wconn.execute(ORDERS)
    await track(wconn, parse_table_name("orders"), capture="wal")
    total = 300
    async with running_gateway(wal_dsn):

        async def write() -> None:
            for i in range(total):
                await wconn.execute("INSERT INTO orders (amount) VALUES ($1)", i)

        writer = asyncio.create_task(write())
        killer = await asyncpg.connect(wal_dsn)
        try:
            # Kill the stream and the log writer in turn while rows keep coming.
            for application in ("pgcast-wal-stream", "pgcast-wal", "pgcast-wal-stream"):

                async def streaming(app: str = application) -> bool:
                    return await leader_pid(killer, app) is not None

                await wait_for(streaming, 20)
                await wait_logged(killer, 1)
                await killer.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = $1 AND datname = current_database()",
                    application,
                )
            await writer
            await wait_logged(killer, total)
        finally:
            await killer.close()
    assert await logged_ids(wconn) == list(range(1, total + 1))


async def test_a_replayed_stream_is_not_appended_twice(
    wal_dsn: str, wconn: asyncpg.Connection
) -> None:
    from pgcast.capture.wal import WalConsumer

    await wconn.execute(ORDERS)
    await track(wconn, parse_table_name("orders"), capture="wal")
    # A long status interval: the slot's position is not confirmed before the stream
    # is cut, so the server sends the same transactions again.
    consumer = WalConsumer(wal_dsn, status_interval=60.0, retry_interval=0.1)
    consumer.start()
    try:
        # executemany is one transaction
        await wconn.executemany(
            "INSERT INTO orders (amount) VALUES ($1)", [(i,) for i in range(50)]
        )
        await wait_logged(wconn, 50)
        await wconn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'pgcast-wal-stream' AND datname = current_database()"
        )

        async def replayed() -> bool:
            return consumer.transactions >= 2  # the one transaction, decoded twice

        await wait_for(replayed, 20)
        await wconn.execute("INSERT INTO orders (amount) VALUES (50)")
        await wait_logged(wconn, 51)
    finally:
        await consumer.stop()
    assert await logged_ids(wconn) == list(range(1, 52))


async def test_retry_delay_starts_over_after_a_session_that_streamed(
    wal_dsn: str, wconn: asyncpg.Connection
) -> None:
    """A consumer whose sessions end after streaming waits the shortest delay again,
    not an ever longer one (the backoff starts over: one new series per such end)."""
    from pgcast.capture.wal import WalConsumer

    await wconn.execute(ORDERS)
    await track(wconn, parse_table_name("orders"), capture="wal")
    series = 0

    def factory() -> Iterator[float]:
        nonlocal series
        series += 1
        return itertools.repeat(0.05)

    consumer = WalConsumer(wal_dsn, retry_interval=0.05, backoff_factory=factory)
    consumer.start()
    try:
        for n in range(1, 4):
            await wconn.execute("INSERT INTO orders (amount) VALUES ($1)", n)
            await wait_logged(wconn, n)  # this session streamed
            await wconn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'pgcast-wal-stream' AND datname = current_database()"
            )

            async def restarted(n: int = n) -> bool:
                return series == n

            await wait_for(restarted, 20)
    finally:
        await consumer.stop()
    assert await logged_ids(wconn) == [1, 2, 3]


async def test_a_position_moved_by_another_consumer_is_respected(
    wal_dsn: str, wconn: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    """The append moves the position by compare-and-set: if something else moved it
    (here by hand: a far-ahead position, as if another consumer had appended the
    stream), the consumer appends nothing, starts a new session and obeys the new
    position, instead of overwriting it and appending twice."""
    from pgcast.capture.wal import WalConsumer

    await wconn.execute(ORDERS)
    await track(wconn, parse_table_name("orders"), capture="wal")
    consumer = WalConsumer(wal_dsn, retry_interval=0.05)
    consumer.start()
    try:
        await wconn.execute("INSERT INTO orders (amount) VALUES (1)")
        await wait_logged(wconn, 1)
        sessions = consumer.transactions
        await wconn.execute(
            "UPDATE pgcast.state SET value = $1 WHERE key = 'wal_position'",
            f"{(1 << 62)}:-1",
        )
        await wconn.execute("INSERT INTO orders (amount) VALUES (2)")

        async def decoded_again() -> bool:
            # the new row read once by the old session, then again by the new one
            return consumer.transactions >= sessions + 2

        await wait_for(decoded_again, 20)
        assert "moved by another consumer" in caplog.text
        await wconn.execute("INSERT INTO orders (amount) VALUES (3)")

        async def caught_up() -> bool:
            return consumer.transactions >= sessions + 3

        await wait_for(caught_up, 20)
    finally:
        await consumer.stop()
    assert await logged_ids(wconn) == [1]  # rows 2 and 3 are "held" by the far position
    assert (
        await wconn.fetchval("SELECT value FROM pgcast.state WHERE key = 'wal_position'")
        == f"{(1 << 62)}:-1"
    )


async def test_second_gateway_waits_and_takes_over_when_the_first_stops(
    wal_dsn: str, wconn: asyncpg.Connection
) -> None:
    await wconn.execute(ORDERS)
    await track(wconn, parse_table_name("orders"), capture="wal")
    async with running_gateway(wal_dsn) as second, running_gateway(wal_dsn) as first:

        async def one_leader() -> bool:
            return first.wal.leader or second.wal.leader

        await wait_for(one_leader)
        leader, other = (first, second) if first.wal.leader else (second, first)
        await wconn.executemany(
            "INSERT INTO orders (amount) VALUES ($1)", [(i,) for i in range(20)]
        )
        await wait_logged(wconn, 20)
        assert not other.wal.leader
        await leader.stop()

        async def taken_over() -> bool:
            return other.wal.leader

        await wait_for(taken_over)
        await wconn.executemany(
            "INSERT INTO orders (amount) VALUES ($1)", [(i,) for i in range(20, 40)]
        )
        await wait_logged(wconn, 40)
    assert await logged_ids(wconn) == list(range(1, 41))


async def test_postgres_restart_resumes_from_the_slot(
    cluster: WalCluster, wal_dsn: str, wconn: asyncpg.Connection
) -> None:
    await wconn.execute(ORDERS)
    await track(wconn, parse_table_name("orders"), capture="wal")
    async with running_gateway(wal_dsn) as gateway, ws_client(gateway) as client:
        await client.subscribe("s", table="orders")
        await wconn.execute("INSERT INTO orders (amount) VALUES (1)")
        (first,) = await client.changes(1)
        await wconn.close()
        await asyncio.to_thread(cluster.restart)
        writer = await asyncpg.connect(wal_dsn)
        try:
            await writer.execute("INSERT INTO orders (amount) VALUES (2)")
            await wait_logged(writer, 2, timeout=30)
            assert await logged_ids(writer) == [1, 2]
        finally:
            await writer.close()
    assert first["record"]["amount"] == 1


async def test_table_altered_renamed_and_dropped_while_tracked(
    wal_dsn: str, wconn: asyncpg.Connection
) -> None:
    await wconn.execute(ORDERS)
    await wconn.execute("CREATE TABLE other (id int PRIMARY KEY)")
    await track(wconn, parse_table_name("orders"), capture="wal")
    await track(wconn, parse_table_name("other"), capture="wal")
    async with running_gateway(wal_dsn):
        await wconn.execute("INSERT INTO orders (amount) VALUES (1)")
        await wconn.execute("ALTER TABLE orders ADD COLUMN extra text DEFAULT 'x'")
        await wconn.execute("ALTER TABLE orders DROP COLUMN note")
        await wconn.execute("INSERT INTO orders (amount) VALUES (2)")
        await wconn.execute("ALTER TABLE orders RENAME TO purchases")
        await wconn.execute("INSERT INTO purchases (amount) VALUES (3)")
        await wconn.execute("DROP TABLE purchases")
        await wconn.execute("INSERT INTO other VALUES (4)")
        await wait_logged(wconn, 4)
    rows = await log_rows(wconn)
    assert [r["record"] for r in rows] == [
        {"id": 1, "customer_name": None, "status": None, "amount": 1, "note": None},
        {"id": 2, "customer_name": None, "status": None, "amount": 2, "extra": "x"},
        {"id": 3, "customer_name": None, "status": None, "amount": 3, "extra": "x"},
        {"id": 4},
    ]
    # pgoutput names a relation as its catalog entry is when decoded: a change made
    # just before a rename may carry the new name; every later change does.
    assert rows[2]["table"] == "purchases" and rows[3]["table"] == "other"


async def test_status_shows_modes_and_the_slot_and_untrack_drops_the_slot(
    wal_dsn: str, wconn: asyncpg.Connection, tmp_path: Path
) -> None:
    cli = Cli(tmp_path, wal_dsn)
    await wconn.execute(ORDERS)
    await wconn.execute("CREATE TABLE notes (id int PRIMARY KEY)")
    tracked = await cli.ok("track", "--capture", "wal", "orders")
    assert "capture: wal" in tracked.stdout
    await cli.ok("track", "notes")
    await wconn.execute("INSERT INTO orders (amount) SELECT g FROM generate_series(1, 500) g")
    report = orjson.loads((await cli.ok("status", "--json")).stdout)
    modes = {t["table"]: t["capture"] for t in report["tables"]}
    assert modes == {"orders": "wal", "notes": "trigger"}
    wal = report["wal"]
    assert wal["available"] and wal["tables"] == 1
    assert wal["slot"]["active"] is False and wal["slot"]["retained_bytes"] > 0
    assert any("inactive" in w for w in wal["warnings"])
    text = (await cli.ok("status")).stdout
    assert "capture: wal" in text and "INACTIVE" in text and "retains" in text
    assert (
        await wconn.fetchval("SELECT relreplident::text FROM pg_class WHERE relname = 'orders'")
        == "f"
    )

    untracked = await cli.ok("untrack", "orders")
    assert "untracked" in untracked.stdout
    assert await wal_setup.slot_status(wconn) is None
    assert not await wconn.fetchval("SELECT count(*) FROM pg_publication")
    assert (
        await wconn.fetchval("SELECT relreplident::text FROM pg_class WHERE relname = 'orders'")
        == "d"
    )
    report = orjson.loads((await cli.ok("status", "--json")).stdout)
    assert report["wal"]["slot"] is None and report["wal"]["warnings"] == []


async def test_cli_refuses_wal_capture_on_a_replica_level_server(
    database_url: str, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    if await conn.fetchval("SHOW wal_level") == "logical":
        pytest.skip("the main test server already has wal_level = logical")
    await conn.execute(ORDERS)
    result = await Cli(tmp_path, database_url).run("track", "--capture", "wal", "orders")
    assert result.code == 1
    assert "wal_level = logical" in result.stderr and "restart PostgreSQL" in result.stderr
    assert_no_traceback(result.stderr)
    assert await conn.fetchval("SELECT to_regclass('pgcast.changes')") is None
    status = orjson.loads((await Cli(tmp_path, database_url).ok("status", "--json")).stdout)
    assert status["wal"]["available"] is False
    assert "wal_level" in status["wal"]["problems"][0]["message"]


async def test_a_role_without_replication_gets_a_clear_error(
    wal_dsn: str, wconn: asyncpg.Connection
) -> None:
    role = f"app_{wal_dsn.rsplit('_', 1)[-1]}"
    await wconn.execute(f"CREATE ROLE {role} LOGIN")
    await wconn.execute(f"GRANT ALL ON SCHEMA public TO {role}")
    await wconn.execute(f"GRANT CREATE ON DATABASE {wal_dsn.rsplit('/', 1)[-1]} TO {role}")
    app = await asyncpg.connect(wal_dsn.replace("postgres@", f"{role}@"))
    try:
        await app.execute(ORDERS)
        with pytest.raises(CaptureError) as caught:
            await track(app, parse_table_name("orders"), capture="wal")
        assert "REPLICATION attribute" in str(caught.value)
        assert f'ALTER ROLE "{role}" REPLICATION' in str(caught.value)
        assert await app.fetchval("SELECT to_regclass('pgcast.changes')") is None
    finally:
        await app.close()
        await wconn.execute(f"DROP OWNED BY {role}")
        await wconn.execute(f"DROP ROLE {role}")


async def test_an_idle_gateway_that_is_not_the_consumer_is_woken_by_its_appends(
    wal_dsn: str, wconn: asyncpg.Connection
) -> None:
    """The consumer's log appends claim the armed wake-up like the trigger does, so a
    node that is not the consumer (its reader asleep for up to poll_interval = 30 s)
    delivers a WAL change within moments, not at its next poll."""
    await wconn.execute(ORDERS)
    await track(wconn, parse_table_name("orders"), capture="wal")
    async with (
        running_gateway(wal_dsn, poll_interval=30.0) as first,
        running_gateway(wal_dsn, poll_interval=30.0) as second,
    ):

        async def one_leader() -> bool:
            return first.wal.leader or second.wal.leader

        await wait_for(one_leader)
        other = second if first.wal.leader else first
        async with ws_client(other) as client:
            await client.subscribe("s", table="orders")

            async def asleep() -> bool:
                return other.listener.idle

            await wait_for(asleep)
            started = asyncio.get_running_loop().time()
            await wconn.execute("INSERT INTO orders (amount) VALUES (7)")
            (change,) = await client.changes(1, timeout=10)
            took = asyncio.get_running_loop().time() - started
    assert change["record"]["amount"] == 7
    assert took < 5, f"the idle node saw the WAL change after {took:.1f}s"


async def test_a_row_decoded_before_an_alter_keeps_its_own_columns(
    wal_dsn: str, wconn: asyncpg.Connection
) -> None:
    """One transaction inserts, alters the table, inserts again: pgoutput sends the
    second Relation while the first row still waits to be appended, and that row
    must keep the columns it was written with (not be relabelled by the new ones)."""
    await wconn.execute(ORDERS)
    await track(wconn, parse_table_name("orders"), capture="wal")
    async with running_gateway(wal_dsn):
        async with wconn.transaction():
            await wconn.execute("INSERT INTO orders (amount, note) VALUES (1, 'first')")
            await wconn.execute("ALTER TABLE orders DROP COLUMN status")
            await wconn.execute("ALTER TABLE orders ADD COLUMN extra text DEFAULT 'x'")
            await wconn.execute("INSERT INTO orders (amount, note) VALUES (2, 'second')")
        await wait_logged(wconn, 2)
    rows = await log_rows(wconn)
    assert [r["record"] for r in rows] == [
        {"id": 1, "customer_name": None, "status": None, "amount": 1, "note": "first"},
        {"id": 2, "customer_name": None, "amount": 2, "note": "second", "extra": "x"},
    ]
