"""Filtered fan-out: gateway cost per change with 10 ... 10,000 distinct ``eq`` filters.

    python bench/filtered_fanout.py --subscriptions 10,100,1000,10000 --connections 10 \
        --changes 50000 --runs 3

Per run and subscription count N: a fresh gateway (``pgcast serve``), the load
generator (bench/clients.py, its own process) opens min(N, ``--connections``)
raw WebSocket clients holding N subscriptions to one table between them, each with
its own filter ``k=eq.<n>`` (n = 0 .. N-1); this process, the writer, commits
``--changes`` rows in ``INSERT ... SELECT`` statements of ``--batch`` rows, row g
with ``k = g % N``, so every change matches exactly one subscription whatever N is.

Figure: the gateway's CPU seconds (utime + stime from ``/proc/<pid>/stat``) from
the first statement until the last change is received, divided by the number of
changes: reading the log, matching, encoding and writing, per change. Flat across N
means the filters are indexed. The connection count is held at ``--connections``
(10) for every N: each connection touched costs one write per page read from the
log, which would otherwise be measured as a subscription cost. CPU time, not wall
clock, because the machine is shared. No baseline: the hand-written gateway has no
filters (it would send every change to every client). Prints one JSON line per
(run, N) and a summary.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import asyncpg
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    DEFAULT_DSN,
    LOAD_ENV,
    ClientProcess,
    free_port,
    gateway_process,
    loadavg,
    prepare_table,
    proc_cpu_seconds,
    scratch_database,
    summary,
)

TABLE = "bench_events"
DDL = "CREATE TABLE {t} (id bigserial PRIMARY KEY, k int, payload text)"
BULK = (
    f"INSERT INTO {TABLE} (k, payload) "
    "SELECT (g % $2)::int, 'row ' || g FROM generate_series($1::int, $1::int + $3 - 1) g"
)


async def one_run(args: argparse.Namespace, subscriptions: int) -> dict[str, object]:
    connections = min(subscriptions, args.connections)
    env = {**LOAD_ENV, "PGCAST_OUTBOX_LIMIT": "1000000"}
    async with scratch_database(args.dsn) as dsn:
        await prepare_table(dsn, TABLE, DDL, "pgcast")
        port = free_port()
        with gateway_process("pgcast", dsn, port, env=env) as gateway:
            clients = ClientProcess(
                [
                    "--port",
                    str(port),
                    "--clients",
                    str(connections),
                    "--table",
                    TABLE,
                    "--filter",
                    "k=eq.{n}",
                    "--subs-per-client",
                    str(subscriptions // connections),
                    "--expect-total",
                    str(args.changes),
                    "--timeout",
                    str(args.timeout),
                ]
            )
            try:
                subscribe_started = time.monotonic()
                await clients.start()
                subscribe_s = time.monotonic() - subscribe_started
                writer = await asyncpg.connect(dsn)
                await asyncio.sleep(1)  # let subscription setup settle before measuring
                load_before = loadavg()
                cpu_before = proc_cpu_seconds(gateway.pid)
                started = time.time()
                for first in range(0, args.changes, args.batch):
                    await writer.execute(
                        BULK, first, subscriptions, min(args.batch, args.changes - first)
                    )
                await writer.close()
                result = await clients.finish(args.timeout + 60)
                gateway_cpu = proc_cpu_seconds(gateway.pid) - cpu_before
            finally:
                clients.kill()
            load_after = loadavg()
    frames = int(result["frames"])  # type: ignore[call-overload]
    return {
        "subscriptions": subscriptions,
        "connections": connections,
        "changes": args.changes,
        "delivered": frames,
        "gateway_cpu_s": round(gateway_cpu, 3),
        "gateway_cpu_us_per_change": round(gateway_cpu / args.changes * 1e6, 2),
        "wall_s": round(float(result["last_recv"]) - started, 3),  # type: ignore[arg-type]
        "subscribe_s": round(subscribe_s, 3),
        "loadavg_before": load_before,
        "loadavg_after": load_after,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    parser.add_argument("--subscriptions", default="10,100,1000,10000")
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--changes", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=1000, help="rows per INSERT statement")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()
    counts = [int(x) for x in args.subscriptions.split(",")]
    runs: dict[int, list[dict[str, object]]] = {n: [] for n in counts}
    for i in range(args.runs):
        # Alternate the order, so drift of the machine does not pile up on one end.
        for n in counts if i % 2 == 0 else list(reversed(counts)):
            run = await one_run(args, n)
            print(orjson.dumps(run).decode(), flush=True)
            runs[n].append(run)
    medians = {}
    figures: dict[str, object] = {
        "benchmark": "filtered_fanout",
        "changes": args.changes,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    for n in counts:
        values = [float(r["gateway_cpu_us_per_change"]) for r in runs[n]]  # type: ignore[arg-type]
        figures[f"us_per_change_{n}"] = summary(values)
        medians[n] = statistics.median(values)
    low = medians[counts[0]]
    figures["ratio_to_first"] = {str(n): round(m / low, 2) for n, m in medians.items()}
    figures["flat_within_20pct"] = all(abs(m / low - 1) <= 0.2 for m in medians.values())
    print(orjson.dumps(figures).decode(), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
