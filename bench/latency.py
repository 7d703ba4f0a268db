"""End-to-end latency: commit -> subscriber receive, p50 / p99 / max.

    python bench/latency.py --subscribers 100 --probes 10 --rate 1000 --seconds 5 \
        --runs 3 --synchronous-commit off --target both

Three processes: the gateway (``pgcast serve``; with ``--target baseline`` the
hand-written asyncpg + websockets gateway in bench/baseline, which has no filters
and broadcasts to everyone), the load generator (bench/clients.py: ``--subscribers``
raw WebSocket clients, each subscribed with a filter that matches every row,
``kind=eq.bench``), and this one, the writer: single-row INSERTs at ``--rate``
commits per second, each its own transaction, from ``--writers`` connections with
the given ``synchronous_commit`` (one writer cannot commit 1,000 times a second
with ``on`` on this disk). The first ``--probes`` clients decode every frame and
record its receive time; latency = receive - commit acknowledged to the writer,
every (probe, row) pair is a sample (``time.time()`` in both processes). Also
reports the gateway's and load generator's CPU per second and /proc/loadavg.
Prints JSON.

``--capture wal`` (or ``both``: trigger and WAL runs alternate) tracks the table in
WAL mode; every run then uses one ``wal_level = logical`` server, ``--wal-dsn`` or
a throwaway cluster with ``fsync = on`` (bench/common.py ``logical_server``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    DEFAULT_DSN,
    LOAD_ENV,
    ClientProcess,
    commit_rows,
    free_port,
    gateway_process,
    loadavg,
    logical_server,
    percentile,
    prepare_table,
    proc_cpu_seconds,
    scratch_database,
)

TABLE = "bench_events"
DDL = "CREATE TABLE {t} (id bigserial PRIMARY KEY, kind text, ts float8)"
INSERT = f"INSERT INTO {TABLE} (kind, ts) VALUES ('bench', $1) RETURNING id"


async def one_run(
    args: argparse.Namespace, admin_dsn: str, target: str, capture: str
) -> dict[str, object]:
    total = int(args.rate * args.seconds)
    async with scratch_database(admin_dsn) as dsn:
        await prepare_table(dsn, TABLE, DDL, target, capture)
        port = free_port()
        with gateway_process(target, dsn, port, env=LOAD_ENV) as gateway:
            clients = ClientProcess(
                [
                    "--port",
                    str(port),
                    "--clients",
                    str(args.subscribers),
                    "--target",
                    target,
                    "--table",
                    TABLE,
                    "--filter",
                    "kind=eq.bench",
                    "--probes",
                    str(args.probes),
                    "--expect-total",
                    str(total * args.subscribers),
                    "--timeout",
                    str(args.seconds + 120),
                ]
            )
            try:
                await clients.start()
                await asyncio.sleep(1)  # let connection setup settle before measuring
                load_before = loadavg()
                cpu_before = proc_cpu_seconds(gateway.pid)
                written = await commit_rows(
                    dsn,
                    INSERT,
                    total,
                    connections=args.writers,
                    synchronous_commit=args.synchronous_commit,
                    rate=args.rate,
                )
                result = await clients.finish(args.seconds + 180)
                gateway_cpu = proc_cpu_seconds(gateway.pid) - cpu_before
            finally:
                clients.kill()
            load_after = loadavg()
    committed: dict[int, float] = written["committed"]  # type: ignore[assignment]
    sent: dict[int, float] = written["sent"]  # type: ignore[assignment]
    from_commit: list[float] = []
    from_send: list[float] = []
    for probe in result["probes"]:  # type: ignore[attr-defined]
        for row_id, received in probe:
            from_commit.append((received - committed[row_id]) * 1000)
            from_send.append((received - sent[row_id]) * 1000)
    elapsed = float(written["elapsed"])  # type: ignore[arg-type]
    return {
        "target": target,
        "capture": capture if target == "pgcast" else None,
        "p50_ms": round(percentile(from_commit, 0.50), 3),
        "p99_ms": round(percentile(from_commit, 0.99), 3),
        "max_ms": round(max(from_commit), 3),
        "from_send_p50_ms": round(percentile(from_send, 0.50), 3),
        "from_send_p99_ms": round(percentile(from_send, 0.99), 3),
        "samples": len(from_commit),
        "achieved_rate": round(total / elapsed, 1),
        "deliveries": result["frames"],
        "expected": total * args.subscribers,
        "gateway_cpu_per_s": round(gateway_cpu / elapsed, 3),
        "loadgen_cpu_per_s": round(float(result["loadgen_cpu_s"]) / elapsed, 3),  # type: ignore[arg-type]
        "loadavg_before": load_before,
        "loadavg_after": load_after,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dsn", default=DEFAULT_DSN, help="admin DSN; a scratch database is created"
    )
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--probes", type=int, default=10)
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--writers", type=int, default=1, help="writer connections")
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--synchronous-commit",
        choices=["on", "off"],
        default="on",
        help="the writer's synchronous_commit; 'off' lets one writer reach 1,000 commits/s "
        "on a disk whose fsync takes milliseconds",
    )
    parser.add_argument("--target", choices=["pgcast", "baseline", "both"], default="pgcast")
    parser.add_argument(
        "--capture",
        choices=["trigger", "wal", "both"],
        default="trigger",
        help="pgcast's capture mode(s); wal runs every target on a wal_level = logical server",
    )
    parser.add_argument("--wal-dsn", default=os.environ.get("PGCAST_WAL_DSN"))
    args = parser.parse_args()
    targets = ["pgcast", "baseline"] if args.target == "both" else [args.target]
    captures = ["trigger", "wal"] if args.capture == "both" else [args.capture]
    kinds = [(t, c) for t in targets for c in (captures if t == "pgcast" else ["trigger"])]
    server = logical_server(args.wal_dsn) if "wal" in captures else nullcontext(args.dsn)
    runs_by: dict[tuple[str, str], list[dict[str, object]]] = {k: [] for k in kinds}
    with server as admin_dsn:
        for _ in range(args.runs):
            for target, capture in kinds:  # alternate: drift of the machine hits all alike
                run = await one_run(args, admin_dsn, target, capture)
                print(orjson.dumps(run).decode(), flush=True)
                runs_by[(target, capture)].append(run)
    for (target, capture), runs in runs_by.items():
        result = {
            "benchmark": "latency",
            "target": target,
            "capture": capture if target == "pgcast" else None,
            "subscribers": args.subscribers,
            "rate": args.rate,
            "seconds": args.seconds,
            "writers": args.writers,
            "synchronous_commit": args.synchronous_commit,
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        }
        for key in (
            "p50_ms",
            "p99_ms",
            "max_ms",
            "achieved_rate",
            "gateway_cpu_per_s",
            "loadgen_cpu_per_s",
        ):
            values = [float(r[key]) for r in runs]  # type: ignore[arg-type]
            result[key] = {
                "median": statistics.median(values),
                "min": min(values),
                "max": max(values),
            }
        print(orjson.dumps(result).decode(), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
