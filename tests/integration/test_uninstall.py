"""`pgcast uninstall` and the end of WAL capture, on real PostgreSQL.

Trigger mode runs on the machine's server; WAL mode on the wal_level = logical
cluster (tests/integration/conftest.py).
"""

from __future__ import annotations

from pathlib import Path

import asyncpg

from pgcast.capture import wal_setup
from pgcast.capture.installer import track, untrack
from pgcast.identifiers import parse_table_name

from .gateway_helpers import running_gateway
from .test_cli import Cli, has_pgcast_schema
from .test_wal_capture import wait_for

TABLES = """
CREATE TABLE orders (id serial PRIMARY KEY, status text, amount int);
CREATE SCHEMA audit;
CREATE TABLE audit.events (id int PRIMARY KEY, kind text);
CREATE TABLE own_log (n int);
CREATE FUNCTION own_audit() RETURNS trigger LANGUAGE plpgsql AS
  $$ BEGIN INSERT INTO own_log VALUES (1); RETURN NULL; END $$;
CREATE TRIGGER own_audit AFTER INSERT ON orders FOR EACH STATEMENT EXECUTE FUNCTION own_audit();
"""


async def user_triggers(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1")
    return [r["tgname"] for r in rows]


async def assert_writes_still_work(conn: asyncpg.Connection) -> None:
    await conn.execute("INSERT INTO orders (status, amount) VALUES ('new', 1)")
    await conn.execute("UPDATE orders SET status = 'paid'")
    await conn.execute("DELETE FROM orders WHERE amount = 1")
    await conn.execute("INSERT INTO audit.events VALUES (1, 'x')")
    await conn.execute("TRUNCATE audit.events")


async def test_uninstall_refuses_without_yes_then_drops_triggers_and_schema(
    tmp_path: Path, database_url: str, conn: asyncpg.Connection
) -> None:
    await conn.execute(TABLES)
    cli = Cli(tmp_path, database_url)
    await cli.ok("track", "orders", "audit.events")
    assert len(await user_triggers(conn)) == 9

    refused = await cli.run("uninstall")
    assert refused.code == 2, refused
    line = refused.stdout.strip()
    assert "\n" not in line and "refusing" in line and "--yes" in line
    assert "8 capture trigger(s) on 2 table(s) (audit.events, public.orders)" in line
    assert "pgcast schema" in line
    assert await has_pgcast_schema(conn) and len(await user_triggers(conn)) == 9

    done = await cli.ok("uninstall", "--yes")
    assert done.stdout.startswith("uninstalled pgcast: dropped 8 capture trigger(s)")
    assert not await has_pgcast_schema(conn)
    assert await user_triggers(conn) == ["own_audit"]  # the application's own stays
    await assert_writes_still_work(conn)
    assert await conn.fetchval("SELECT count(*) FROM own_log") == 1

    again = await cli.ok("uninstall", "--yes")
    assert "nothing to drop" in again.stdout
    assert "nothing to drop" in (await cli.ok("uninstall")).stdout


async def slot_active(conn: asyncpg.Connection) -> bool:
    status = await wal_setup.slot_status(conn)
    return status is not None and status.active


async def test_uninstall_in_wal_mode_drops_slot_and_publication_and_restores_identity(
    tmp_path: Path, wal_dsn: str, wconn: asyncpg.Connection
) -> None:
    await wconn.execute(TABLES)
    await wconn.execute(
        "CREATE UNIQUE INDEX events_kind ON audit.events (kind);"
        "ALTER TABLE audit.events ALTER kind SET NOT NULL;"
        "ALTER TABLE audit.events REPLICA IDENTITY USING INDEX events_kind"
    )
    cli = Cli(tmp_path, wal_dsn)
    await cli.ok("track", "--capture", "wal", "orders", "audit.events")
    async with running_gateway(wal_dsn):
        # The consumer streams the slot: uninstall must end it, not wait for it.
        await wait_for(lambda: slot_active(wconn))
        refused = await cli.run("uninstall")
        assert refused.code == 2, refused
        assert "the replication slot pgcast_" in refused.stdout
        assert "REPLICA IDENTITY FULL of 2 WAL table(s)" in refused.stdout
        done = await cli.ok("uninstall", "--yes")
    assert "the publication pgcast" in done.stdout
    assert not await wconn.fetchval("SELECT count(*) FROM pg_replication_slots")
    assert not await wconn.fetchval("SELECT count(*) FROM pg_publication")
    assert not await has_pgcast_schema(wconn)
    assert await user_triggers(wconn) == ["own_audit"]
    identities = await wconn.fetch(
        "SELECT relname, relreplident::text AS ident, "
        "(SELECT i.indexrelid::regclass::text FROM pg_index i "
        " WHERE i.indrelid = c.oid AND i.indisreplident) AS idx "
        "FROM pg_class c WHERE relname IN ('orders', 'events') ORDER BY relname"
    )
    assert [tuple(r) for r in identities] == [
        ("events", "i", "audit.events_kind"),
        ("orders", "d", None),
    ]
    await assert_writes_still_work(wconn)
    assert "nothing to drop" in (await cli.ok("uninstall", "--yes")).stdout


async def test_untracking_the_last_wal_table_first_lets_the_consumer_append_what_it_holds(
    wal_dsn: str, wconn: asyncpg.Connection
) -> None:
    await wconn.execute(TABLES)
    await track(wconn, parse_table_name("orders"), capture="wal")
    async with running_gateway(wal_dsn):
        await wait_for(lambda: slot_active(wconn))
        # Large enough that decoding and appending it takes the consumer a while:
        # dropping the slot at once would discard most of it.
        rows = 20_000
        await wconn.execute(
            "INSERT INTO orders (amount) SELECT g FROM generate_series(1, $1) g", rows
        )
        assert await untrack(wconn, parse_table_name("orders"))
        logged = await wconn.fetchval(
            "SELECT count(*) FROM pgcast.changes WHERE table_name = 'orders'"
        )
    assert logged == rows
    assert await wal_setup.slot_status(wconn) is None


async def test_untracking_without_a_consumer_drops_the_slot_at_once(
    wconn: asyncpg.Connection,
) -> None:
    await wconn.execute(TABLES)
    await track(wconn, parse_table_name("orders"), capture="wal")
    await wconn.execute("INSERT INTO orders (amount) VALUES (1)")
    assert not await wal_setup.wait_until_consumed(wconn, timeout=5.0)  # nobody to wait for
    assert await untrack(wconn, parse_table_name("orders"))
    assert await wal_setup.slot_status(wconn) is None
