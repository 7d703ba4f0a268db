"""Writer concurrency: what capture costs the application's commits, with pgbench.

    python bench/writers.py --seconds 5 --rounds 3 --clients 1,16,64

One scratch database, one table per mode with the seeds' ``orders`` columns and
100,000 rows, and a pgcast gateway (``pgcast serve``, a separate process) running
the whole time with a WebSocket subscriber on every tracked table, so tracked runs
are measured while the gateway reads and delivers. Modes:

* ``untracked``: no trigger (the reference: ratios are mode TPS / untracked TPS);
* ``trigger``: pgcast's capture as installed by ``pgcast track``;
* ``notify_tx``: the same capture function, but sending ``pg_notify`` in every
  transaction as pgcast did before schema version 2 (installed by this benchmark
  only, so old and new are compared in one run);
* ``row_notify``: the hand-written trigger pgcast replaces, ``pg_notify`` of
  ``row_to_json(NEW)`` per row;
* ``wal``: WAL capture (``track --capture wal``), the gateway's slot consumer
  appending to the log and the subscriber receiving. WAL mode needs
  ``wal_level = logical``, which the machine's server lacks, so when ``wal`` is
  among the modes EVERY mode runs on one such server, for ratios from one server:
  ``--wal-dsn`` (an admin DSN), else a throwaway cluster started from
  tests/integration/wal_cluster.py with ``fsync = on`` (bench/common.py).

Each (clients, statement) cell runs every mode once per round, in a rotated order
(interleaved: drifting machine load hits every mode alike), ``pgbench -n -c N -j 2
-T seconds``; the printed TPS is the median over rounds. Statements: single-row
INSERT, single-row UPDATE of a random row (autocommit, default
``synchronous_commit``). Then one 100,000-row UPDATE per mode and round (median
time). Per tracked run it also reports the notifications sent (counted by a LISTEN
connection on the ``pgcast`` channel) and the gateway's log reads per second (from
``pgcast_log_reads_total``). Prints a table and, with ``--json``, the raw numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from websockets.asyncio.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    DEFAULT_DSN,
    free_port,
    gateway_process,
    loadavg,
    logical_server,
    proc_cpu_seconds,
    scratch_database,
)

from pgcast.capture.installer import track
from pgcast.capture.sql import (
    CHANNEL,
    SCHEMA,
    capture_function,
    create_triggers,
    drop_triggers,
)
from pgcast.identifiers import parse_table_name, quote_ident

MODES = ("untracked", "trigger", "notify_tx", "row_notify", "wal")
TRACKED = ("trigger", "notify_tx", "wal")  # modes whose changes the gateway delivers
ROWS = 100_000

_DDL = """
CREATE TABLE {t} (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id int NOT NULL,
    status text NOT NULL,
    amount numeric(10, 2) NOT NULL,
    note text,
    created_at timestamptz NOT NULL DEFAULT now());
CREATE INDEX ON {t} (customer_id);
INSERT INTO {t} (customer_id, status, amount, note)
SELECT g % 1000, 'pending', 12.5, 'seed' FROM generate_series(1, {rows}) g;
"""

SCRIPTS = {
    "insert": "INSERT INTO {t} (customer_id, status, amount, note) "
    "VALUES (:client_id, 'pending', 12.5, 'one row');\n",
    "update": "\\set id random(1, " + str(ROWS) + ")\n"
    "UPDATE {t} SET amount = amount + 1 WHERE id = :id;\n",
}

# The hand-written trigger pgcast replaces (the design brief's "before" picture).
_ROW_NOTIFY = """
CREATE FUNCTION bench_row_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('orders_changes', json_build_object(
        'op', TG_OP, 'row', row_to_json(coalesce(NEW, OLD)))::text);
    RETURN NULL;
END $$;
CREATE TRIGGER bench_row_notify AFTER INSERT OR UPDATE OR DELETE ON {t}
    FOR EACH ROW EXECUTE FUNCTION bench_row_notify();
"""

# pgcast's capture before schema version 2: the same function, notifying in every
# transaction that logged a row (this replaces the wake-up block of today's).
_NOTIFY_EACH = (
    "    IF v_rows > 0 AND pg_notification_queue_usage() < 0.5 THEN\n"
    f"        PERFORM pg_notify('{CHANNEL}', '');\n"
    "    END IF;\n"
)


_BLOCK = re.compile(
    r"(?:    --[^\n]*\n)*    IF v_rows > 0\b.*?\n    END IF;\n(?=    RETURN NULL;)", re.S
)


async def use_notify_each(conn: asyncpg.Connection, table: str) -> None:
    """Replace the table's generated capture function by a copy that notifies in every
    transaction (pgcast before schema version 2), under its own name."""
    oid = await conn.fetchval("SELECT $1::regclass::oid", table)
    function = capture_function(oid)
    text = await conn.fetchval("SELECT pg_get_functiondef(to_regprocedure($1))", function)
    copy = f"{quote_ident(SCHEMA)}.capture_notify_each_{oid}()"
    text, count = _BLOCK.subn(
        lambda _: _NOTIFY_EACH,
        text.replace(text[text.index("FUNCTION ") + 9 : text.index("()") + 2], copy, 1),
    )
    if count != 1:
        raise SystemExit("cannot find the wake-up block of the capture function to replace")
    await conn.execute(text)
    name = parse_table_name(table)
    for statement in drop_triggers(name):
        await conn.execute(statement)
    for statement in create_triggers(name, copy):
        await conn.execute(statement)


async def prepare(dsn: str, modes: list[str]) -> dict[str, str]:
    """Create one table per mode; returns mode -> table name."""
    conn = await asyncpg.connect(dsn)
    tables = {}
    try:
        for mode in modes:
            table = f"w_{mode}"
            await conn.execute(_DDL.format(t=table, rows=ROWS))
            tables[mode] = table
            if mode in TRACKED:
                capture = "wal" if mode == "wal" else "trigger"
                await track(conn, parse_table_name(table), capture=capture)
            if mode == "notify_tx":
                await use_notify_each(conn, table)
            if mode == "row_notify":
                await conn.execute(_ROW_NOTIFY.format(t=table))
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()
    return tables


def pgbench_binary() -> str:
    found = shutil.which("pgbench")
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin/pgbench"), reverse=True):
        return str(candidate)
    raise SystemExit("pgbench not found: install the PostgreSQL client package")


async def pgbench(dsn: str, script: Path, clients: int, seconds: float) -> dict[str, float]:
    proc = await asyncio.create_subprocess_exec(
        pgbench_binary(),
        "-n",
        "-c",
        str(clients),
        "-j",
        str(min(2, clients)),
        "-T",
        str(int(seconds)),
        "-f",
        str(script),
        dsn,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    text = out.decode()
    tps = re.search(r"tps = ([\d.]+)", text)
    latency = re.search(r"latency average = ([\d.]+) ms", text)
    if proc.returncode != 0 or tps is None or latency is None:
        raise SystemExit(f"pgbench failed ({proc.returncode}): {err.decode()[-2000:]}")
    return {"tps": float(tps.group(1)), "latency_ms": float(latency.group(1))}


_CHANGE = '{"type":"change",'


class Subscriber:
    """A WebSocket client of the gateway subscribed to the tracked tables; counts changes."""

    def __init__(self, port: int, tables: list[str]) -> None:
        self.port = port
        self.tables = tables
        self.changes = 0
        self.task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    async def run(self) -> None:
        async with connect(f"ws://127.0.0.1:{self.port}/ws", max_size=None) as ws:
            await ws.recv()  # welcome
            for i, table in enumerate(self.tables):
                await ws.send(
                    orjson.dumps({"type": "subscribe", "id": f"s{i}", "table": table}).decode()
                )
            subscribed = 0
            async for raw in ws:
                # Change frames start with this (events.change_prefix): counting them
                # by their first bytes keeps this stand-in for remote clients from
                # parsing ~10,000 frames a second on the writers' two cores.
                if raw.startswith(_CHANGE):
                    self.changes += 1
                    continue
                kind = orjson.loads(raw)["type"]
                if kind == "subscribed":
                    subscribed += 1
                    if subscribed == len(self.tables):
                        self.ready.set()


def _machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat's first line."""
    with open("/proc/stat") as f:
        fields = [float(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _cpu_now(gateway_pid: int | None) -> dict[str, Any]:
    """CPU counters at one instant: the gateway process, this process (the
    subscriber runs here) and the whole machine."""
    return {
        "pid": gateway_pid,
        "gateway": proc_cpu_seconds(gateway_pid) if gateway_pid else 0.0,
        "subscriber": time.process_time(),
        "machine": _machine_busy(),
        "wall": time.monotonic(),
    }


def _cpu_used(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
    """Cores used between two :func:`_cpu_now` readings (1.0 = one core all along)."""
    wall = after["wall"] - before["wall"]
    busy = after["machine"][0] - before["machine"][0]
    total = after["machine"][1] - before["machine"][1]
    return {
        "gateway_cores": (after["gateway"] - before["gateway"]) / wall,
        "subscriber_cores": (after["subscriber"] - before["subscriber"]) / wall,
        "machine_busy": busy / total if total else 0.0,
    }


def log_reads(port: int, no_gateway: bool) -> float:
    if no_gateway:
        return 0.0
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("pgcast_log_reads_total "):
                return float(line.split()[1])
    return float("nan")  # a gateway without the counter (older pgcast)


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    modes = args.modes.split(",")
    if "wal" not in modes:
        return await measure_on(args, args.dsn, modes)
    with logical_server(args.wal_dsn) as admin_dsn:
        return await measure_on(args, admin_dsn, modes)


async def measure_on(args: argparse.Namespace, admin_dsn: str, modes: list[str]) -> dict[str, Any]:
    results: dict[str, Any] = {
        "modes": modes,
        "server": admin_dsn,
        "loadavg_start": loadavg(),
        "cells": [],
        "bulk_update": {},
    }
    async with scratch_database(admin_dsn) as dsn:
        tables = await prepare(dsn, modes)
        heard: list[float] = []
        spy = await asyncpg.connect(dsn)
        await spy.add_listener(CHANNEL, lambda *_: heard.append(time.monotonic()))
        port = free_port()
        env = {"PGCAST_FAST_POLL_INTERVAL": str(args.fast_poll_interval)}
        gateway = (
            contextlib.nullcontext()
            if args.no_gateway
            else gateway_process("pgcast", dsn, port, env)
        )
        with gateway as gateway_proc, tempfile.TemporaryDirectory() as tmp:
            gateway_pid = gateway_proc.pid if gateway_proc is not None else None
            subscriber = Subscriber(port, [tables[m] for m in modes if m in TRACKED])
            if not args.no_gateway:
                subscriber.task = asyncio.create_task(subscriber.run())
                await asyncio.wait_for(subscriber.ready.wait(), 30)
            for clients in args.clients:
                for op in args.ops:
                    cell: dict[str, Any] = {"clients": clients, "op": op, "runs": {}}
                    for r in range(args.rounds):
                        order = modes[r % len(modes) :] + modes[: r % len(modes)]
                        for mode in order:
                            script = Path(tmp) / f"{op}_{mode}.sql"
                            script.write_text(SCRIPTS[op].format(t=tables[mode]))
                            notifies, reads = len(heard), log_reads(port, args.no_gateway)
                            cpu = _cpu_now(None if args.no_gateway else gateway_pid)
                            run = await pgbench(dsn, script, clients, args.seconds)
                            run.update(_cpu_used(cpu, _cpu_now(cpu["pid"])))
                            run["notifies"] = len(heard) - notifies
                            reads = log_reads(port, args.no_gateway) - reads
                            run["log_reads_per_s"] = reads / args.seconds
                            cell["runs"].setdefault(mode, []).append(run)
                    results["cells"].append(cell)
                    print_cell(cell, modes, args.seconds)
            if args.bulk_rounds:
                for r in range(args.bulk_rounds):
                    for mode in modes[r % len(modes) :] + modes[: r % len(modes)]:
                        conn = await asyncpg.connect(dsn)
                        started = time.perf_counter()
                        await conn.execute(f"UPDATE {tables[mode]} SET amount = amount + 1")
                        elapsed = time.perf_counter() - started
                        await conn.close()
                        results["bulk_update"].setdefault(mode, []).append(elapsed)
                print_bulk(results["bulk_update"], modes)
            # Let the gateway catch up, then report what it delivered: done when the
            # subscriber holds as many changes as the log and the log did not grow
            # since the previous count (in WAL mode the consumer may still be
            # appending the last statements' changes when the writers are done).
            expected = 0
            if not args.no_gateway:
                deadline = time.monotonic() + 120
                previous, expected = -1, await _tracked_changes(dsn)
                while subscriber.changes != expected or previous != expected:
                    if time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.5)  # other processes' appends and deliveries
                    previous, expected = expected, await _tracked_changes(dsn)
            results["delivered"] = {"log_rows": expected, "received": subscriber.changes}
            if subscriber.task is not None:
                subscriber.task.cancel()
        await spy.close()
    results["loadavg_end"] = loadavg()
    return results


async def _tracked_changes(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        # Only changes logged after the subscriber was live count; the seed rows
        # were inserted before pgcast tracked the tables, so they are not in the log.
        return int(await conn.fetchval("SELECT count(*) FROM pgcast.changes"))
    finally:
        await conn.close()


def _median(values: list[float]) -> float:
    return statistics.median(values)


def print_cell(cell: dict[str, Any], modes: list[str], seconds: float) -> None:
    runs = cell["runs"]
    base = _median([r["tps"] for r in runs["untracked"]]) if "untracked" in runs else None
    print(f"\n{cell['clients']} clients, single-row {cell['op'].upper()}", flush=True)
    for mode in modes:
        tps = _median([r["tps"] for r in runs[mode]])
        lat = _median([r["latency_ms"] for r in runs[mode]])
        ratio = f"{tps / base:5.2f}x" if base else "   - "
        extra = ""
        if mode in TRACKED:
            notifies = _median([r["notifies"] for r in runs[mode]])
            per_tx = notifies / max(1.0, tps * seconds)
            reads = _median([r["log_reads_per_s"] for r in runs[mode]])
            gw = _median([r["gateway_cores"] for r in runs[mode]])
            sub = _median([r["subscriber_cores"] for r in runs[mode]])
            extra = (
                f"  notifies/run {notifies:6.0f} ({per_tx:6.1%} of tx)  reads/s {reads:4.0f}"
                f"  gateway {gw:4.2f} core  subscriber {sub:4.2f} core"
            )
        busy = _median([r["machine_busy"] for r in runs[mode]])
        extra = f"  machine {busy:4.0%} busy" + extra
        spread = _spread([r["tps"] for r in runs[mode]])
        print(
            f"  {mode:11s} {tps:8.0f} TPS {spread}  {lat:6.2f} ms  {ratio}{extra}",
            flush=True,
        )


def _spread(values: list[float]) -> str:
    return f"({min(values):6.0f}-{max(values):6.0f})"


def print_bulk(bulk: dict[str, list[float]], modes: list[str]) -> None:
    base = _median(bulk["untracked"]) if "untracked" in bulk else None
    print(f"\none {ROWS:,}-row UPDATE (median of {len(next(iter(bulk.values())))})", flush=True)
    for mode in modes:
        seconds = _median(bulk[mode])
        ratio = f"{seconds / base:5.2f}x" if base else "   - "
        print(f"  {mode:11s} {seconds * 1000:8.0f} ms  {ratio}", flush=True)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]  # "" : no pgbench cells (bulk only)


def _strs(text: str) -> list[str]:
    return text.split(",")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=DEFAULT_DSN, help="admin DSN (a scratch DB is made)")
    parser.add_argument(
        "--wal-dsn",
        default=os.environ.get("PGCAST_WAL_DSN"),
        help="admin DSN of a wal_level = logical server for all modes when wal is among "
        "them (default: start a throwaway cluster)",
    )
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--clients", type=_ints, default=[1, 16, 64])
    parser.add_argument("--ops", type=_strs, default=["insert", "update"])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bulk-rounds", type=int, default=3)
    parser.add_argument(
        "--fast-poll-interval", type=float, default=0.002, help="the gateway's (results: 2 ms)"
    )
    parser.add_argument(
        "--no-gateway",
        action="store_true",
        help="measure the writers alone (splits the trigger's cost from the gateway's CPU)",
    )
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args(argv)
    results = asyncio.run(measure(args))
    print(
        f"\ndelivered: {results['delivered']}; loadavg {results['loadavg_start']} -> "
        f"{results['loadavg_end']}"
    )
    if args.json:
        args.json.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
