"""Ingest: changes per second from committed bulk statements to one subscriber.

    python bench/ingest.py --statements 10 --rows 10000 --runs 3 --target both

Three processes per run: the gateway (``pgcast serve`` with an outbox large enough
for the burst, or the hand-written baseline: per-row ``pg_notify`` trigger +
``add_listener`` + ``websockets.broadcast``), the load generator (bench/clients.py,
one raw WebSocket client; pgcast: subscribed to the table without a filter), and
this one, the writer: ``--statements`` statements ``INSERT ... SELECT
generate_series`` of ``--rows`` rows each, each committed on its own, back to back.

Figures: changes/s = rows received / (last received - first statement sent); the
writer's time alone (the ceiling the writer sets, capture or NOTIFY trigger
included); last commit -> last change received (the lag); the gateway's CPU per
change (``/proc/<pid>/stat``). The single 100,000-row UPDATE figure is
bench/bulk_update.py. Prints one JSON line per run and a summary per target.
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

TABLE = "bench_items"
DDL = "CREATE TABLE {t} (id bigserial PRIMARY KEY, kind text, amount int, note text)"
BULK = (
    f"INSERT INTO {TABLE} (kind, amount, note) "
    "SELECT 'bulk', g, 'item number ' || g FROM generate_series(1, $1) g"
)


async def one_run(args: argparse.Namespace, target: str) -> dict[str, object]:
    total = args.statements * args.rows
    env = {**LOAD_ENV, "PGCAST_OUTBOX_LIMIT": str(min(1_000_000, total * 2))}
    async with scratch_database(args.dsn) as dsn:
        await prepare_table(dsn, TABLE, DDL, target)
        port = free_port()
        with gateway_process(target, dsn, port, env=env) as gateway:
            clients = ClientProcess(
                [
                    "--port",
                    str(port),
                    "--clients",
                    "1",
                    "--target",
                    target,
                    "--table",
                    TABLE,
                    "--expect-total",
                    str(total),
                    "--timeout",
                    str(args.timeout),
                ]
            )
            try:
                await clients.start()
                writer = await asyncpg.connect(dsn)
                await asyncio.sleep(0.5)
                load_before = loadavg()
                cpu_before = proc_cpu_seconds(gateway.pid)
                started = time.time()
                for _ in range(args.statements):
                    await writer.execute(BULK, args.rows)
                committed = time.time()
                await writer.close()
                result = await clients.finish(args.timeout + 60)
                gateway_cpu = proc_cpu_seconds(gateway.pid) - cpu_before
            finally:
                clients.kill()
            load_after = loadavg()
    frames = int(result["frames"])  # type: ignore[call-overload]
    last = float(result["last_recv"])  # type: ignore[arg-type]
    return {
        "target": target,
        "changes": frames,
        "expected": total,
        "changes_per_s": round(frames / (last - started)) if frames else 0,
        "writer_s": round(committed - started, 3),
        "writer_rows_per_s": round(total / (committed - started)),
        "last_commit_to_last_received_s": round(last - committed, 3) if frames else None,
        "gateway_cpu_us_per_change": round(gateway_cpu / frames * 1e6, 2) if frames else None,
        "loadgen_cpu_s": result["loadgen_cpu_s"],
        "loadavg_before": load_before,
        "loadavg_after": load_after,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    parser.add_argument("--statements", type=int, default=10)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--target", choices=["pgcast", "baseline", "both"], default="both")
    args = parser.parse_args()
    targets = ["pgcast", "baseline"] if args.target == "both" else [args.target]
    runs: dict[str, list[dict[str, object]]] = {t: [] for t in targets}
    for _ in range(args.runs):
        for target in targets:  # alternate, so drift of the machine hits both alike
            run = await one_run(args, target)
            print(orjson.dumps(run).decode(), flush=True)
            runs[target].append(run)
    for target in targets:
        figures: dict[str, object] = {
            "benchmark": "ingest",
            "target": target,
            "statements": args.statements,
            "rows": args.rows,
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        }
        for key in (
            "changes_per_s",
            "writer_rows_per_s",
            "last_commit_to_last_received_s",
            "gateway_cpu_us_per_change",
        ):
            values = [float(r[key]) for r in runs[target] if r[key] is not None]  # type: ignore[arg-type]
            if values:
                figures[key] = summary(values)
        figures["complete_runs"] = sum(1 for r in runs[target] if r["changes"] == r["expected"])
        print(orjson.dumps(figures).decode(), flush=True)
    if len(targets) == 2:
        rates = {
            t: statistics.median(float(r["changes_per_s"]) for r in runs[t])  # type: ignore[arg-type]
            for t in targets
        }
        if rates["baseline"]:
            ratio = round(rates["pgcast"] / rates["baseline"], 2)
            print(orjson.dumps({"benchmark": "ingest", "pgcast_over_baseline": ratio}).decode())


if __name__ == "__main__":
    asyncio.run(main())
