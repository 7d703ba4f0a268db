"""Connections: gateway memory per idle WebSocket connection, and how many it holds.

    python bench/connections.py --connections 10000 --runs 3 --steps 15000,19000 \
        --target both

Per run: a fresh gateway process (``pgcast serve``, per-IP limits off; or the
hand-written baseline), one warm-up client (so the first connection's one-off
allocations are not counted), then VmRSS from ``/proc/<pid>/status``; the load
generator (bench/clients.py, its own process) opens ``--connections`` idle clients
(pgcast: each receives its ``welcome``, no subscription); after ``--settle``
seconds VmRSS again. Per connection = (after - before) / connections.

``--steps``: then, on pgcast only, one gateway per step count: open that many
connections, hold them ``--hold`` seconds, and check that none was lost and that
/health counts them all; the largest step that passes is reported. The gateway's
own open-file limit (``ulimit -n``; each connection is a socket) bounds it.
Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    DEFAULT_DSN,
    LOAD_ENV,
    ClientProcess,
    fetch_health,
    free_port,
    gateway_process,
    loadavg,
    prepare_table,
    proc_rss_kib,
    scratch_database,
    summary,
)

DDL = "CREATE TABLE {t} (id bigserial PRIMARY KEY, kind text)"


def client_args(port: int, count: int, target: str, timeout: float) -> list[str]:
    return [
        "--port",
        str(port),
        "--clients",
        str(count),
        "--target",
        target,
        "--no-subscribe",
        "--timeout",
        str(timeout),
    ]


async def memory_run(args: argparse.Namespace, target: str) -> dict[str, object]:
    async with scratch_database(args.dsn) as dsn:
        await prepare_table(dsn, "bench_events", DDL, target)
        port = free_port()
        with gateway_process(target, dsn, port, env=LOAD_ENV) as gateway:
            warm = ClientProcess(client_args(port, 1, target, 600))
            await warm.start()
            await asyncio.sleep(args.settle)
            before = proc_rss_kib(gateway.pid)
            clients = ClientProcess(client_args(port, args.connections, target, 600))
            try:
                ready = await clients.start()
                await asyncio.sleep(args.settle)
                after = proc_rss_kib(gateway.pid)
                load = loadavg()
                clients.stop()
                done = await clients.finish()
                warm.stop()
                await warm.finish()
            finally:
                clients.kill()
                warm.kill()
    return {
        "target": target,
        "connections": args.connections,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_connection": round((after - before) / args.connections, 2),
        "open_s": ready["open_s"],
        "lost": done["lost"],
        "loadavg": load,
    }


async def capacity_run(args: argparse.Namespace, count: int) -> dict[str, object]:
    async with scratch_database(args.dsn) as dsn:
        await prepare_table(dsn, "bench_events", DDL, "pgcast")
        port = free_port()
        with gateway_process("pgcast", dsn, port, env=LOAD_ENV) as gateway:
            clients = ClientProcess(client_args(port, count, "pgcast", 600))
            try:
                try:
                    ready = await clients.start(timeout=300)
                except (RuntimeError, TimeoutError) as exc:
                    return {"connections": count, "held": False, "error": repr(exc)}
                await asyncio.sleep(args.hold)
                health = await asyncio.to_thread(fetch_health, port)
                rss = proc_rss_kib(gateway.pid)
                alive = gateway.poll() is None
                clients.stop()
                done = await clients.finish()
            finally:
                clients.kill()
    held = alive and done["lost"] == 0 and not ready["lost_before_ready"]
    return {
        "connections": count,
        "held": held,
        "health_clients": health.get("clients"),
        "lost": done["lost"],
        "lost_before_ready": len(ready["lost_before_ready"]),  # type: ignore[arg-type]
        "rss_kib": rss,
        "hold_s": args.hold,
        "loadavg": loadavg(),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--settle", type=float, default=2.0)
    parser.add_argument("--steps", default="", help="comma-separated counts to hold (pgcast)")
    parser.add_argument("--hold", type=float, default=10.0)
    parser.add_argument("--target", choices=["pgcast", "baseline", "both"], default="both")
    args = parser.parse_args()
    targets = ["pgcast", "baseline"] if args.target == "both" else [args.target]
    runs: dict[str, list[dict[str, object]]] = {t: [] for t in targets}
    for _ in range(args.runs):
        for target in targets:
            run = await memory_run(args, target)
            print(orjson.dumps(run).decode(), flush=True)
            runs[target].append(run)
    for target in targets:
        values = [float(r["kib_per_connection"]) for r in runs[target]]  # type: ignore[arg-type]
        print(
            orjson.dumps(
                {
                    "benchmark": "connections",
                    "target": target,
                    "connections": args.connections,
                    "kib_per_connection": summary(values),
                    "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                }
            ).decode(),
            flush=True,
        )
    if args.steps:
        largest = 0
        for count in (int(x) for x in args.steps.split(",")):
            step = await capacity_run(args, count)
            print(orjson.dumps(step).decode(), flush=True)
            if not step["held"]:
                break
            largest = count
        print(
            orjson.dumps(
                {
                    "benchmark": "connections",
                    "largest_held": largest,
                    "nofile_limit": resource.getrlimit(resource.RLIMIT_NOFILE),
                }
            ).decode(),
            flush=True,
        )


if __name__ == "__main__":
    asyncio.run(main())
