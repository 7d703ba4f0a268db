"""Fan-out throughput: deliveries per second received by 1,000 WebSocket clients.

    python bench/fanout.py --clients 1000 --changes 1000 --runs 3 --target both

Three processes per run: the gateway (``pgcast serve``, or the hand-written baseline
of bench/baseline: asyncpg ``add_listener`` + ``websockets.broadcast``, per-row
``pg_notify(row_to_json(NEW))`` trigger), the load generator (bench/clients.py,
``--clients`` raw WebSocket clients; pgcast clients subscribe to the table without
a filter, baseline clients get everything), and this one, the writer: ``--changes``
single-row INSERTs, each its own transaction, committed as fast as ``--writers``
connections with ``synchronous_commit=off`` can.

Figures per run: deliveries/s = change frames received by all clients / (last frame
received - writer start); the gateway's CPU seconds (``/proc/<pid>/stat``) per
delivery over the same window, which is the figure to trust on a shared machine;
the load generator's CPU (if it is near 1 s per second, it is the bottleneck);
/proc/loadavg before and after. Prints one JSON line per run and a summary per target.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
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
    prepare_table,
    proc_cpu_seconds,
    scratch_database,
    summary,
)

TABLE = "bench_events"
DDL = "CREATE TABLE {t} (id bigserial PRIMARY KEY, kind text, ts float8, payload text)"
# ~300-byte messages, like the stack comparison in RESULTS.md.
INSERT = (
    f"INSERT INTO {TABLE} (kind, ts, payload) VALUES ('bench', $1, repeat('x', 150)) RETURNING id"
)


async def one_run(args: argparse.Namespace, target: str) -> dict[str, object]:
    async with scratch_database(args.dsn) as dsn:
        await prepare_table(dsn, TABLE, DDL, target)
        port = free_port()
        with gateway_process(target, dsn, port, env=LOAD_ENV) as gateway:
            expect = args.clients * args.changes
            clients = ClientProcess(
                [
                    "--port",
                    str(port),
                    "--clients",
                    str(args.clients),
                    "--target",
                    target,
                    "--table",
                    TABLE,
                    "--expect-total",
                    str(expect),
                    "--timeout",
                    str(args.timeout),
                ]
            )
            try:
                await clients.start()
                await asyncio.sleep(1)  # let connection setup settle before measuring
                load_before = loadavg()
                cpu_before = proc_cpu_seconds(gateway.pid)
                written = await commit_rows(
                    dsn, INSERT, args.changes, connections=args.writers, synchronous_commit="off"
                )
                result = await clients.finish(args.timeout + 60)
                cpu_after = proc_cpu_seconds(gateway.pid)
            finally:
                clients.kill()
            load_after = loadavg()
    frames = int(result["frames"])  # type: ignore[call-overload]
    window = float(result["last_recv"]) - float(written["started"])  # type: ignore[arg-type]
    gateway_cpu = cpu_after - cpu_before
    return {
        "target": target,
        "deliveries": frames,
        "expected": expect,
        "deliveries_per_s": round(frames / window) if window > 0 else 0,
        "window_s": round(window, 3),
        "writer_s": round(float(written["elapsed"]), 3),  # type: ignore[arg-type]
        "commits_per_s": round(args.changes / float(written["elapsed"])),  # type: ignore[arg-type]
        "gateway_cpu_s": round(gateway_cpu, 3),
        "gateway_cpu_us_per_delivery": round(gateway_cpu / frames * 1e6, 3) if frames else None,
        "loadgen_cpu_s": result["loadgen_cpu_s"],
        "clients_lost": result["lost"],
        "loadavg_before": load_before,
        "loadavg_after": load_after,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--changes", type=int, default=1000)
    parser.add_argument("--writers", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=180)
    parser.add_argument("--target", choices=["pgcast", "baseline", "both"], default="both")
    args = parser.parse_args()
    targets = ["pgcast", "baseline"] if args.target == "both" else [args.target]
    runs: dict[str, list[dict[str, object]]] = {t: [] for t in targets}
    for _ in range(args.runs):
        for target in targets:  # alternate, so drift of the machine hits both alike
            run = await one_run(args, target)
            print(orjson.dumps(run).decode(), flush=True)
            runs[target].append(run)
    medians: dict[str, float] = {}
    for target in targets:
        figures: dict[str, object] = {
            "benchmark": "fanout",
            "target": target,
            "clients": args.clients,
            "changes": args.changes,
            "writers": args.writers,
            "synchronous_commit": "off",
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        }
        for key in ("deliveries_per_s", "gateway_cpu_us_per_delivery", "loadgen_cpu_s"):
            values = [float(r[key]) for r in runs[target] if r[key] is not None]  # type: ignore[arg-type]
            figures[key] = summary(values)
        medians[target] = statistics.median(
            float(r["deliveries_per_s"])  # type: ignore[arg-type]
            for r in runs[target]
        )
        print(orjson.dumps(figures).decode(), flush=True)
    if len(targets) == 2 and medians["baseline"]:
        cpu = {
            t: statistics.median(
                float(r["gateway_cpu_us_per_delivery"])  # type: ignore[arg-type]
                for r in runs[t]
            )
            for t in targets
        }
        ratio = {
            "benchmark": "fanout",
            "pgcast_over_baseline_deliveries_per_s": round(
                medians["pgcast"] / medians["baseline"], 2
            ),
            "baseline_over_pgcast_cpu_per_delivery": round(cpu["baseline"] / cpu["pgcast"], 2),
        }
        print(orjson.dumps(ratio).decode(), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
