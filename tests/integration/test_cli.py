"""The real ``pgcast`` command, run as subprocesses against a real PostgreSQL.

Covers the user story end to end (track -> serve -> listen -> status -> untrack ->
prune) and hostile command-line input. Every subprocess runs in a fresh temporary
directory (so no ``pgcast.toml`` is picked up) with every ``PGCAST_*`` /
``DATABASE_URL`` variable removed from its environment; the database always comes
from ``PGCAST_DATABASE_URL`` or ``--database-url``, so no embedded PostgreSQL is
ever started. Nothing waits with a fixed sleep: output lines, exit codes and
/health are awaited with deadlines.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from websockets.asyncio.client import connect as ws_connect

from ..conftest import ADMIN_DSN, dsn_for

TIMEOUT = 15.0

_SCRIPT = Path(sys.executable).with_name("pgcast")
PGCAST = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "pgcast.cli"]

CHANGE_FIELDS = {
    "type",
    "sub",
    "id",
    "schema",
    "table",
    "op",
    "record",
    "old_record",
    "changed",
    "txid",
    "committed_at",
}


# --- running the command -----------------------------------------------------------


def cli_env(database_url: str | None) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("PGCAST_") and key != "DATABASE_URL"
    }
    if database_url is not None:
        env["PGCAST_DATABASE_URL"] = database_url
    return env


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


@dataclass
class Cli:
    """Runs ``pgcast`` in ``cwd`` with the test database in its environment."""

    cwd: Path
    database_url: str

    async def run(self, *args: str, env: dict[str, str] | None = None) -> Result:
        proc = await asyncio.create_subprocess_exec(
            *PGCAST,
            *args,
            cwd=self.cwd,
            env=env if env is not None else cli_env(self.database_url),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise AssertionError(f"pgcast {' '.join(args)} did not finish in {TIMEOUT}s") from None
        assert proc.returncode is not None
        return Result(proc.returncode, out.decode(), err.decode())

    async def ok(self, *args: str) -> Result:
        result = await self.run(*args)
        assert result.code == 0, result
        assert_no_traceback(result.stderr)
        return result

    @contextlib.asynccontextmanager
    async def start(self, *args: str) -> AsyncIterator[Background]:
        proc = await asyncio.create_subprocess_exec(
            *PGCAST,
            *args,
            cwd=self.cwd,
            env=cli_env(self.database_url),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        background = Background(proc)
        try:
            yield background
        finally:
            if proc.returncode is None:
                proc.kill()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), TIMEOUT)
            await background.drained()


@dataclass
class Stream:
    """Lines of one pipe, collected by a background task as they arrive."""

    lines: list[str] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    closed: bool = False

    async def pump(self, reader: asyncio.StreamReader) -> None:
        while True:
            raw = await reader.readline()
            async with self.changed:
                if raw:
                    self.lines.append(raw.decode().rstrip("\n"))
                else:
                    self.closed = True
                self.changed.notify_all()
            if not raw:
                return

    async def expect(self, predicate: Callable[[str], bool], timeout: float = TIMEOUT) -> str:
        """The first line (already seen or yet to come) for which ``predicate`` holds."""
        async with asyncio.timeout(timeout), self.changed:
            seen = 0
            while True:
                for line in self.lines[seen:]:
                    if predicate(line):
                        return line
                seen = len(self.lines)
                if self.closed:
                    raise AssertionError(f"stream ended without the line; got {self.lines}")
                await self.changed.wait()

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


class Background:
    """A running ``pgcast`` process whose stdout and stderr are read line by line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None and proc.stderr is not None
        self.proc = proc
        self.stdout = Stream()
        self.stderr = Stream()
        self._pumps = [
            asyncio.ensure_future(self.stdout.pump(proc.stdout)),
            asyncio.ensure_future(self.stderr.pump(proc.stderr)),
        ]

    async def exit_code(self, timeout: float = TIMEOUT) -> int:
        try:
            code = await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"process still running after {timeout}s; stderr:\n{self.stderr.text}"
            ) from None
        await self.drained()
        return code

    async def drained(self) -> None:
        await asyncio.wait_for(asyncio.gather(*self._pumps), TIMEOUT)

    def json_lines(self) -> list[dict[str, Any]]:
        objects = [orjson.loads(line) for line in self.stdout.lines]
        assert all(isinstance(o, dict) for o in objects)
        return objects


def assert_no_traceback(stderr: str) -> None:
    assert "Traceback" not in stderr, stderr
    assert "Task was destroyed" not in stderr, stderr


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def http_get(port: int, path: str) -> tuple[int, Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        response = await asyncio.wait_for(reader.read(), TIMEOUT)
    finally:
        writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), orjson.loads(body)


async def wait_healthy(port: int, timeout: float = TIMEOUT) -> dict[str, Any]:
    """Poll /health until the gateway says ok (connection refusals are retried)."""
    last: object = None
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            while True:
                try:
                    status, body = await http_get(port, "/health")
                except OSError as exc:
                    last = exc
                else:
                    if status == 200 and body["status"] == "ok":
                        return dict(body)
                    last = body
                await asyncio.sleep(0.05)  # poll interval, not a wait for an outcome
    raise AssertionError(f"/health not ok within {timeout}s: {last}")


@dataclass
class Gateway:
    process: Background
    port: int

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


@contextlib.asynccontextmanager
async def serving(cli: Cli) -> AsyncIterator[Gateway]:
    port = free_port()
    async with cli.start("serve", "--host", "127.0.0.1", "--port", str(port)) as proc:
        ready = await proc.stderr.expect(lambda line: "serving ws://" in line)
        assert f"ws://127.0.0.1:{port}/ws" in ready
        assert f"http://127.0.0.1:{port}/health" in ready
        await wait_healthy(port)
        yield Gateway(proc, port)
        if proc.proc.returncode is None:
            proc.proc.send_signal(signal.SIGTERM)
            assert await proc.exit_code() == 0
        assert_no_traceback(proc.stderr.text)


@contextlib.asynccontextmanager
async def listening(cli: Cli, *args: str) -> AsyncIterator[Background]:
    """``pgcast listen ARGS``, yielded once it is subscribed."""
    async with cli.start("listen", *args) as proc:
        await proc.stderr.expect(lambda line: line.startswith("pgcast: listening to "))
        yield proc


# --- fixtures ----------------------------------------------------------------------


@pytest.fixture
def cli(tmp_path: Path, database_url: str) -> Cli:
    return Cli(tmp_path, database_url)


@pytest.fixture
async def schema(conn: asyncpg.Connection) -> asyncpg.Connection:
    await conn.execute(
        """
        CREATE TABLE orders (id serial PRIMARY KEY, status text, amount int, note text);
        CREATE TABLE "Booking" (id int PRIMARY KEY, "Status" text);
        CREATE SCHEMA audit;
        CREATE TABLE audit.events (kind text);
        CREATE TABLE x (id int);
        """
    )
    return conn


async def pgcast_triggers(conn: asyncpg.Connection) -> int:
    count: int = await conn.fetchval(
        "SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal AND tgname LIKE 'pgcast%'"
    )
    return count


async def all_user_triggers(conn: asyncpg.Connection) -> int:
    count: int = await conn.fetchval("SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal")
    return count


async def has_pgcast_schema(conn: asyncpg.Connection) -> bool:
    return bool(
        await conn.fetchval("SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = 'pgcast')")
    )


async def status_json(cli: Cli) -> dict[str, Any]:
    result = await cli.ok("status", "--json")
    report: dict[str, Any] = orjson.loads(result.stdout)
    return report


# --- track / untrack -----------------------------------------------------------------


async def test_track_three_names_is_idempotent(cli: Cli, schema: asyncpg.Connection) -> None:
    first = await cli.ok("track", "orders", '"Booking"', "audit.events")
    assert first.stdout.splitlines() == [
        "tracking public.orders (primary key: id)",
        'tracking public."Booking" (primary key: id)',
        "tracking audit.events (primary key: none: events carry whole rows)",
    ]
    triggers = await pgcast_triggers(schema)
    assert triggers > 0
    second = await cli.ok("track", "orders", '"Booking"', "audit.events")
    assert second.stdout == first.stdout
    assert await pgcast_triggers(schema) == triggers  # replaced, not doubled

    report = await status_json(cli)
    assert [(t["schema"], t["table"]) for t in report["tables"]] == [
        ("audit", "events"),
        ("public", "Booking"),
        ("public", "orders"),
    ]
    await schema.execute("""INSERT INTO "Booking" VALUES (1, 'Confirmed')""")
    await schema.execute("INSERT INTO audit.events VALUES ('login')")
    await schema.execute("INSERT INTO orders (status) VALUES ('new')")
    rows = await schema.fetch("SELECT schema_name, table_name, op FROM pgcast.changes ORDER BY id")
    assert [tuple(r) for r in rows] == [
        ("public", "Booking", "INSERT"),
        ("audit", "events", "INSERT"),
        ("public", "orders", "INSERT"),
    ]


async def test_track_options_columns_when_changed_skip_unchanged(
    cli: Cli, schema: asyncpg.Connection
) -> None:
    await cli.ok("track", "orders", "--columns", "status", "--when-changed", "status")
    await cli.ok("track", "x", "--no-skip-unchanged")
    report = await status_json(cli)
    tables = {t["table"]: t for t in report["tables"]}
    assert tables["orders"]["columns"] == ["status", "id"]  # the key is always added
    assert tables["orders"]["when_changed"] == ["status"]
    assert tables["orders"]["skip_unchanged"] is True
    assert tables["x"]["columns"] is None and tables["x"]["skip_unchanged"] is False

    await schema.execute("INSERT INTO orders (status, amount, note) VALUES ('new', 1, 'n')")
    await schema.execute("UPDATE orders SET amount = 2")  # status unchanged: not logged
    await schema.execute("UPDATE orders SET status = 'paid'")
    await schema.execute("INSERT INTO x VALUES (1)")
    await schema.execute("UPDATE x SET id = id")  # a no-op UPDATE, kept by --no-skip-unchanged
    rows = await schema.fetch(
        "SELECT table_name, op, record::text AS record FROM pgcast.changes ORDER BY id"
    )
    assert [(r["table_name"], r["op"], orjson.loads(r["record"])) for r in rows] == [
        ("orders", "INSERT", {"id": 1, "status": "new"}),
        ("orders", "UPDATE", {"id": 1, "status": "paid"}),
        ("x", "INSERT", {"id": 1}),
        ("x", "UPDATE", {"id": 1}),
    ]

    # tracking again with the defaults replaces the options
    await cli.ok("track", "x")
    await schema.execute("UPDATE x SET id = id")
    assert await schema.fetchval("SELECT count(*) FROM pgcast.changes") == 4


async def test_untrack_stops_capture_and_is_idempotent(
    cli: Cli, schema: asyncpg.Connection
) -> None:
    await cli.ok("track", "orders", "audit.events")
    result = await cli.ok("untrack", "orders")
    assert result.stdout.strip() == "untracked orders"
    assert await pgcast_triggers(schema) > 0  # audit.events still tracked
    await schema.execute("INSERT INTO orders (status) VALUES ('new')")
    assert await schema.fetchval("SELECT count(*) FROM pgcast.changes") == 0
    again = await cli.ok("untrack", "orders")
    assert again.stdout.strip() == "was not tracked: orders"
    assert [t["table"] for t in (await status_json(cli))["tables"]] == ["events"]
    await cli.ok("untrack", "audit.events")
    assert await pgcast_triggers(schema) == 0


# --- serve / listen / status ---------------------------------------------------------


async def test_user_story_serve_listen_since_filter_status(
    cli: Cli, schema: asyncpg.Connection
) -> None:
    await cli.ok("track", "orders", '"Booking"', "audit.events")
    async with serving(cli) as gateway:
        async with (
            listening(cli, "orders", "--url", gateway.url, "--json", "--max-events", "3") as all_,
            listening(
                cli,
                *("orders", "--url", gateway.url, "--json", "--max-events", "2"),
                *("--filter", "status=eq.pending"),
            ) as pending,
            listening(
                cli, '"Booking"', "--url", gateway.url, "--json", "--max-events", "1"
            ) as booking,
        ):
            await schema.execute(
                "INSERT INTO orders (status, amount) VALUES ('pending', 5), ('new', 7)"
            )
            await schema.execute("UPDATE orders SET status = 'pending' WHERE amount = 7")
            await schema.execute("""INSERT INTO "Booking" VALUES (1, 'Confirmed')""")
            for proc in (all_, pending, booking):
                assert await proc.exit_code() == 0, proc.stderr.text
                assert_no_traceback(proc.stderr.text)

        changes = all_.json_lines()
        assert len(changes) == 3 == len(all_.stdout.lines)
        assert all(set(c) == CHANGE_FIELDS for c in changes)
        assert all(c["type"] == "change" and c["schema"] == "public" for c in changes)
        insert_a, insert_b, update = changes
        assert (insert_a["op"], insert_a["record"]["status"], insert_a["old_record"]) == (
            "INSERT",
            "pending",
            None,
        )
        assert insert_b["record"] == {"id": 2, "status": "new", "amount": 7, "note": None}
        assert update["op"] == "UPDATE" and update["changed"] == ["status"]
        assert update["old_record"]["status"] == "new"
        ids = [int(c["id"]) for c in changes]
        assert ids == sorted(ids) and len(set(ids)) == 3
        assert all(c["committed_at"].endswith("Z") and int(c["txid"]) > 0 for c in changes)

        filtered = pending.json_lines()
        assert [(c["op"], c["record"]["id"]) for c in filtered] == [("INSERT", 1), ("UPDATE", 2)]
        (booked,) = booking.json_lines()
        assert booked["table"] == "Booking" and booked["record"] == {"id": 1, "Status": "Confirmed"}

        # resume after the first change: the rest is replayed, then live changes follow
        async with listening(
            cli, "orders", "--since", str(ids[0]), "--url", gateway.url, "--json",
            "--max-events", "3",
        ) as resumed:  # fmt: skip
            await schema.execute("INSERT INTO orders (status) VALUES ('live')")
            assert await resumed.exit_code() == 0, resumed.stderr.text
        got = resumed.json_lines()
        assert [c["id"] for c in got[:2]] == [str(i) for i in ids[1:]]
        assert got[2]["record"]["status"] == "live"

        # status shows the tables, the log and the running gateway's listener
        report = await status_json(cli)
        assert {t["table"]: t["changes"] for t in report["tables"]} == {
            "Booking": 1,
            "events": 0,
            "orders": 4,
        }
        assert report["log"]["rows"] == 5 and report["log"]["last_id"] >= ids[-1]
        assert len(report["listeners"]) == 1
        health = await cli.ok("status", "--json", "--url", f"http://127.0.0.1:{gateway.port}")
        gateway_health = orjson.loads(health.stdout)["gateway"]
        assert gateway_health["status"] == "ok"
        assert report["listeners"][0]["pid"] == gateway_health["listener"]["backend_pid"]
        text = (await cli.ok("status")).stdout
        assert "tracked tables: 3" in text
        assert 'public."Booking"  changes in log: 1' in text
        assert "change log: 5 rows" in text
        assert "gateway LISTEN connections: 1" in text

    # once the gateway stopped, its listener is gone
    assert (await status_json(cli))["listeners"] == []


async def test_listen_pretty_output_one_line_per_change(
    cli: Cli, schema: asyncpg.Connection
) -> None:
    await cli.ok("track", "audit.events")
    async with (
        serving(cli) as gateway,
        listening(cli, "audit.events", "--url", gateway.url, "--max-events", "2") as listener,
    ):
        await schema.execute("INSERT INTO audit.events VALUES ('a'), ('b')")
        assert await listener.exit_code() == 0
    lines = listener.stdout.lines
    assert len(lines) == 2
    assert re.fullmatch(r'INSERT audit\.events change=\d+ \{"kind":"a"\}', lines[0]), lines


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_serve_shuts_down_cleanly_and_closes_clients_with_4000(
    cli: Cli, schema: asyncpg.Connection, sig: signal.Signals
) -> None:
    async with serving(cli) as gateway:
        async with ws_connect(f"{gateway.url}/ws") as ws:
            welcome = orjson.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
            assert welcome["type"] == "welcome"
            health = await wait_healthy(gateway.port)
            assert health["clients"] == 1
            gateway.process.proc.send_signal(sig)
            await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
            assert ws.close_code == 4000
            assert ws.close_reason and "reconnect" in ws.close_reason
        assert await gateway.process.exit_code() == 0
    assert_no_traceback(gateway.process.stderr.text)
    with pytest.raises(OSError):
        await http_get(gateway.port, "/health")


async def test_status_lists_only_this_databases_listeners(
    cli: Cli, schema: asyncpg.Connection, tmp_path: Path
) -> None:
    """A gateway serving another database must not show up in this one's status."""
    other = f"pgcast_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{other}"')
        other_cli = Cli(tmp_path, dsn_for(other))
        async with serving(other_cli):
            assert len((await status_json(other_cli))["listeners"]) == 1
            assert (await status_json(cli))["listeners"] == []
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{other}" WITH (FORCE)')
        await admin.close()


# --- prune -----------------------------------------------------------------------------


async def test_prune_keep_last(cli: Cli, schema: asyncpg.Connection) -> None:
    await cli.ok("track", "orders")
    await schema.execute("INSERT INTO orders (amount) SELECT g FROM generate_series(1, 5) g")
    result = await cli.ok("prune", "--keep-last", "2")
    assert result.stdout.strip() == "pruned 3 change log rows"
    kept = await schema.fetch(
        "SELECT (record->>'amount')::int AS a FROM pgcast.changes ORDER BY id"
    )
    assert [r["a"] for r in kept] == [4, 5]
    log = (await status_json(cli))["log"]
    assert log["rows"] == 2 and log["pruned_through"] == log["first_id"] - 1
    again = await cli.ok("prune", "--keep-last", "2")
    assert again.stdout.strip() == "pruned 0 change log rows"


# --- hostile input ---------------------------------------------------------------------
#
# Each test runs its cases as concurrent subprocesses (one database at most), naming
# the case in every assertion message.

UNREACHABLE_URL = "postgresql://postgres@127.0.0.1:1/x"


async def run_cases(cli: Cli, cases: dict[str, list[str]]) -> dict[str, Result]:
    results = await asyncio.gather(*(cli.run(*args) for args in cases.values()))
    return dict(zip(cases, results, strict=True))


def assert_clean_error(name: str, result: Result, code: int, *needles: str) -> None:
    """Exit ``code``, nothing on stdout, and a one-line-ish message without a traceback."""
    assert result.code == code, (name, result)
    assert "Traceback" not in result.stderr, (name, result.stderr)
    assert "error" in result.stderr, (name, result.stderr)
    for needle in needles:
        assert needle in result.stderr, (name, needle, result.stderr)
    assert result.stdout == "", (name, result.stdout)


async def test_track_refuses_malformed_names_before_touching_the_database(
    cli: Cli, schema: asyncpg.Connection
) -> None:
    tables = {
        "sql-injection": ("orders; DROP TABLE x", "unexpected ';'"),
        "three-parts": ("a.b.c", "3 dot-separated parts"),
        "empty-quoted": ('""', "cannot be empty"),
        "empty": ("", "expected a name"),
        "64-chars": ("t" * 64, "at most 63 bytes"),
        "64-bytes-quoted": ('"' + "é" * 32 + '"', "64 bytes long"),
        "unbalanced": ('"orders', "unbalanced double quote"),
        "whitespace": ("orders\tx", "whitespace"),
    }
    columns = {
        "columns-unbalanced-quote": (["--columns", 'id,"x'], "unbalanced double quote"),
        "columns-empty": (["--columns", ","], "comma-separated list"),
        "when-changed-injection": (["--when-changed", "status;drop"], "unexpected ';'"),
        "columns-64-chars": (["--columns", "c" * 64], "at most 63 bytes"),
    }
    cases = {name: ["track", table] for name, (table, _) in tables.items()}
    cases |= {name: ["track", "orders", *args] for name, (args, _) in columns.items()}
    results = await run_cases(cli, cases)
    for name, result in results.items():
        needle = tables[name][1] if name in tables else columns[name][1]
        what = "table name" if name in tables else "argument --"
        assert_clean_error(name, result, 2, what, needle)
    assert not await has_pgcast_schema(schema)
    assert await all_user_triggers(schema) == 0
    assert await schema.fetchval("SELECT to_regclass('x') IS NOT NULL")


async def test_track_refuses_tables_and_columns_the_database_lacks(
    cli: Cli, schema: asyncpg.Connection
) -> None:
    cases = {
        "unknown": (["nosuch"], ["table nosuch does not exist", "hint:", "double-quoted"]),
        "quoted-injection": (
            ['"orders; DROP TABLE x"'],
            ['table "orders; DROP TABLE x" does not exist', "hint:"],
        ),
        "case-folded": (["booking"], ["table booking does not exist"]),
        "unknown-in-schema": (["audit.nosuch"], ["in schema 'audit'"]),
        "unknown-column": (["orders", "--columns", "nope"], ["has no column 'nope'", "hint:"]),
        "wrong-case": (["orders", "--when-changed", '"Status"'], ["has no column 'Status'"]),
        "own-log": (["pgcast.changes"], ["does not track"]),
        "catalog": (["pg_catalog.pg_class"], ["does not track"]),
        "view": (["v"], ["is a view, not a table"]),
        "one-bad-of-two": (["audit.events", "nosuch"], ["table nosuch does not exist"]),
    }
    await schema.execute("CREATE VIEW v AS SELECT 1 AS one")
    await cli.ok("track", "audit.events")  # installs the pgcast schema ...
    per_table = await pgcast_triggers(schema)
    await cli.ok("untrack", "audit.events")  # ... and leaves no trigger behind
    results = await run_cases(cli, {name: ["track", *args] for name, (args, _) in cases.items()})
    for name, result in results.items():
        if name == "one-bad-of-two":  # the first table is tracked, then the error
            assert result.stdout.startswith("tracking audit.events"), result
            result = Result(result.code, "", result.stderr)
        assert_clean_error(name, result, 1, "pgcast: error:", *cases[name][1])
    # only audit.events, from one-bad-of-two: a multi-table track is not atomic
    assert await schema.fetchval("SELECT count(*) FROM pgcast.tracked") == 1
    assert await pgcast_triggers(schema) == per_table
    assert await schema.fetchval("SELECT to_regclass('x') IS NOT NULL")


async def test_track_63_byte_name_is_accepted(cli: Cli, schema: asyncpg.Connection) -> None:
    name = "t" * 63
    await schema.execute(f"CREATE TABLE {name} (id int PRIMARY KEY)")
    result = await cli.ok("track", name)
    assert result.stdout.startswith(f"tracking public.{name} ")


async def test_unreachable_database_is_a_clear_error(tmp_path: Path) -> None:
    """No database fixture: every command must fail fast and cleanly."""
    admin_base = ADMIN_DSN.rpartition("/")[0]
    urls = {
        "unknown-host": "postgresql://nope:1/x",
        "refused": UNREACHABLE_URL,
        "missing-database": admin_base + "/pgcast_no_such_database",
    }
    commands = {
        "track": ["track", "orders"],
        "untrack": ["untrack", "orders"],
        "status": ["status"],
        "status-json": ["status", "--json"],
        "prune": ["prune", "--keep-last", "1"],
    }
    cli = Cli(tmp_path, UNREACHABLE_URL)
    cases = {
        f"{command}/{kind}": [*args, "--database-url", url]
        for command, args in commands.items()
        for kind, url in urls.items()
    }
    # without the flag, PGCAST_DATABASE_URL from the environment is used
    cases["env/refused"] = ["status"]
    # serve waits for an unreachable server (test_messages.py), but not for a refusal
    cases["serve/missing-database"] = [
        "serve",
        "--port",
        "0",
        "--database-url",
        urls["missing-database"],
    ]
    for name, result in (await run_cases(cli, cases)).items():
        assert_clean_error(name, result, 1, "pgcast: error:", "hint:")
        assert re.search(r"cannot (connect to PostgreSQL|start the gateway)", result.stderr), name
        assert "\n" not in result.stderr.strip() or name.startswith("serve"), result.stderr
    assert "127.0.0.1', 1" in (await cli.run("status")).stderr


async def test_bad_arguments_are_usage_errors(tmp_path: Path) -> None:
    cli = Cli(tmp_path, UNREACHABLE_URL)
    cases = {
        "since-abc": (["listen", "orders", "--since", "abc"], "'abc' is not a change id"),
        "since-negative": (["listen", "orders", "--since", "-1"], "'-1' is not a change id"),
        "since-huge": (["listen", "orders", "--since", "1" * 20], "is not a change id"),
        "since-unicode-digit": (["listen", "orders", "--since", "\u0661"], "is not a change id"),
        "port-abc": (["serve", "--port", "abc"], "invalid int value: 'abc'"),
        "port-range": (["serve", "--port", "99999"], "is not a valid port"),
        "keep-last-x": (["prune", "--keep-last", "x"], "invalid int value"),
        "max-events-x": (["listen", "orders", "--max-events", "x"], "invalid int value"),
        "unknown-flag": (["status", "--bogus"], "unrecognized arguments"),
        "no-command": ([], "required"),
        "untrack-injection": (["untrack", "orders; DROP TABLE x"], "not a valid table name"),
    }
    results = await run_cases(cli, {name: args for name, (args, _) in cases.items()})
    for name, result in results.items():
        assert_clean_error(name, result, 2, cases[name][1])
    negative = await cli.run("prune", "--keep-last", "-1")
    assert_clean_error("keep-last-negative", negative, 1, "--keep-last must not be negative")


async def serve_on_busy_port(cli: Cli) -> Result:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        return await cli.run("serve", "--host", "127.0.0.1", "--port", str(port))


async def test_serve_on_a_busy_port_is_a_clear_error(cli: Cli) -> None:
    result = await serve_on_busy_port(cli)
    assert result.code == 1, result
    assert "cannot start the gateway" in result.stderr
    assert "address already in use" in result.stderr
    bad_host = await cli.run("serve", "--host", "256.1.1.1", "--port", "0")
    assert bad_host.code == 1, bad_host
    assert "cannot start the gateway" in bad_host.stderr


async def test_serve_on_a_busy_port_leaves_no_pending_tasks(cli: Cli) -> None:
    for _ in range(3):
        result = await serve_on_busy_port(cli)
        assert result.code == 1
        assert_no_traceback(result.stderr)


async def test_listen_refusals(cli: Cli, schema: asyncpg.Connection) -> None:
    await cli.ok("track", "orders")
    async with serving(cli) as gateway:
        url = ["--url", gateway.url]
        cases = {
            "bad-operator": (["orders", "--filter", "status=like.x", *url], 1, "bad_filter"),
            "unknown-column": (["orders", "--filter", "nope=eq.x", *url], 1, "bad_filter"),
            "unknown-table": (["nosuch", *url], 1, "pgcast track nosuch"),
            "bad-events": (["orders", "--events", "UPSERT", *url], 1, "UPSERT"),
            "bad-target": (["a.b.c", *url], 2, "a.b.c"),
            "bad-url": (["orders", "--url", "ftp://x"], 2, "not a gateway URL"),
        }
        results = await run_cases(
            cli, {name: ["listen", *args] for name, (args, _, _) in cases.items()}
        )
        for name, result in results.items():
            _, code, needle = cases[name]
            assert result.code == code, (name, result)
            assert needle in result.stderr, (name, result.stderr)
            assert "Traceback" not in result.stderr, (name, result.stderr)
            assert result.stdout == "", (name, result.stdout)
        bad = results["bad-operator"].stderr
        assert "refused" in bad and "like" in bad
        assert "unknown_table" in results["unknown-table"].stderr
