"""Slow-consumer isolation: do healthy subscribers notice a client that stopped reading?

    python bench/slow_consumer.py --subscribers 50 --rate 200 --seconds 20 --row-bytes 8192 --runs 3

Each run starts a fresh database and its own gateway process (``pgcast serve``,
default ``outbox_limit`` 1000). ``--subscribers`` healthy raw WebSocket clients
subscribe to one table; in the *stalled* runs one more client subscribes to the
same table, waits for ``subscribed`` and then stops reading
(``transport.pause_reading()``), so the gateway's socket buffers to it fill up and
its outbox grows until the gateway closes it with 4001. A writer commits
single-row INSERTs at ``--rate`` per second for ``--seconds``, each row carrying a
``--row-bytes`` text column. The first ``--probes`` healthy clients decode every
frame and record *commit acknowledged -> frame received* for every row (each probe
separately, not the first receive across probes). Runs alternate without / with
the stalled client, same process layout (a /health poller runs in both).

For the stalled client it reports when the gateway's /health ``clients`` count
dropped (the connection was torn down), and, after the writer finished, resumes
reading to see what reached it: frames, a close frame's code, or a reset. The
gateway sends the 4001 close frame behind the data already buffered for the
client and aborts the TCP connection if the close handshake does not finish within
5 s (``CLOSE_TIMEOUT``), so the 4001 decision is ~5 s before the /health drop, and
a client that never reads does not see the close frame. Prints JSON lines: one per
run, then a summary with medians.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import time
from pathlib import Path

import asyncpg
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    DEFAULT_DSN,
    RawClient,
    fetch_health,
    free_port,
    gateway_process,
    open_clients,
    percentile,
    scratch_database,
)

from pgcast.capture.installer import track
from pgcast.identifiers import parse_table_name

TABLE = "bench_events"
CLOSE_TIMEOUT = 5.0  # pgcast.transports.websocket.CLOSE_TIMEOUT


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def cpu_busy() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def process_cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def one_run(args: argparse.Namespace, stalled: bool) -> dict[str, object]:
    load_before = loadavg()
    busy0, total0 = cpu_busy()
    async with scratch_database(args.dsn) as dsn:
        conn = await asyncpg.connect(dsn)
        await conn.execute(
            f"CREATE TABLE {TABLE} (id bigserial PRIMARY KEY, kind text, ts float8, payload text)"
        )
        await track(conn, parse_table_name(TABLE))
        await conn.close()
        port = free_port()
        with gateway_process("pgcast", dsn, port) as proc:
            # One dict per probe: row id -> receive time.
            received: list[dict[int, float]] = [{} for _ in range(args.probes)]

            def make_probe(i: int) -> RawClient:
                if i >= args.probes:
                    return RawClient()
                mine = received[i]

                def probe(payload: bytes) -> None:
                    now = time.time()
                    if payload.startswith(b'{"type":"change"'):
                        mine[orjson.loads(payload)["record"]["id"]] = now

                return RawClient(probe)

            count = args.subscribers + (1 if stalled else 0)
            clients = await open_clients(port, count, make_probe)
            for client in clients:
                client.send({"type": "subscribe", "id": "s", "table": TABLE})
            base = 2  # welcome + subscribed
            await asyncio.gather(*(c.wait_frames(base, 30) for c in clients))
            healthy = clients[: args.subscribers]
            slow = clients[args.subscribers] if stalled else None
            if slow is not None:
                assert slow.transport is not None
                slow.transport.pause_reading()

            writer = await asyncpg.connect(
                dsn, server_settings={"synchronous_commit": args.synchronous_commit}
            )
            gateway_cpu0 = process_cpu_seconds(proc.pid)
            start = time.monotonic()
            health_log: list[tuple[float, int]] = []  # (seconds since start, clients)
            stop_polling = asyncio.Event()
            slow_gone = asyncio.Event()  # /health counts only the healthy clients

            async def poll_health() -> None:
                while not stop_polling.is_set():
                    health = await asyncio.to_thread(fetch_health, port)
                    clients_now = int(health["clients"])  # type: ignore[call-overload]
                    health_log.append((time.monotonic() - start, clients_now))
                    if clients_now <= args.subscribers:
                        slow_gone.set()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop_polling.wait(), args.health_interval)

            poller = asyncio.create_task(poll_health())
            payload = os.urandom(args.row_bytes // 2 + 1).hex()[: args.row_bytes]
            insert = (
                f"INSERT INTO {TABLE} (kind, ts, payload) VALUES ('bench', $1, $2) RETURNING id"
            )
            total = int(args.rate * args.seconds)
            committed: dict[int, float] = {}
            for i in range(total):
                delay = start + i / args.rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)  # pacing the writer to the target rate
                row_id = await writer.fetchval(insert, time.time(), payload)
                committed[row_id] = time.time()
            achieved = total / (time.monotonic() - start)
            await asyncio.gather(*(c.wait_frames(base + total, 60) for c in healthy))
            gateway_cpu = process_cpu_seconds(proc.pid) - gateway_cpu0
            await writer.close()

            stalled_report: dict[str, object] | None = None
            if slow is not None:
                # Keep polling a little past the abort deadline, then look at the socket.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(slow_gone.wait(), CLOSE_TIMEOUT + 2)
                assert slow.transport is not None
                slow.transport.resume_reading()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(slow.lost), 10)
                dropped = [t for t, n in health_log if n <= args.subscribers]
                stalled_report = {
                    "health_clients_dropped_at_s": round(dropped[0], 2) if dropped else None,
                    "close_decided_about_s": (
                        round(dropped[0] - CLOSE_TIMEOUT, 2) if dropped else None
                    ),
                    "change_frames_reached_client": slow.frames - base,
                    "close_code_seen": slow.close_code,
                    "connection_lost": slow.lost.done(),
                    "lost_error": repr(slow.lost_error) if slow.lost_error else None,
                }
            stop_polling.set()
            await poller
            for client in clients:
                assert client.transport is not None
                client.transport.close()
    busy1, total1 = cpu_busy()
    latencies = [
        (probe[i] - committed[i]) * 1000 for probe in received for i in probe if i in committed
    ]
    return {
        "stalled_client": stalled,
        "p50_ms": round(percentile(latencies, 0.50), 3),
        "p99_ms": round(percentile(latencies, 0.99), 3),
        "max_ms": round(max(latencies), 3),
        "samples": len(latencies),
        "achieved_rate": round(achieved, 1),
        "gateway_cpu_s": round(gateway_cpu, 2),
        "stalled": stalled_report,
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
        "machine_cpu_busy": round((busy1 - busy0) / max(1, total1 - total0), 3),
    }


def spread(runs: list[dict[str, object]], key: str) -> dict[str, float]:
    values = [float(r[key]) for r in runs]  # type: ignore[arg-type]
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dsn", default=DEFAULT_DSN, help="admin DSN; scratch databases")
    parser.add_argument("--subscribers", type=int, default=50, help="healthy subscribers")
    parser.add_argument("--probes", type=int, default=10)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--row-bytes", type=int, default=8192)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--health-interval", type=float, default=0.25)
    parser.add_argument("--synchronous-commit", choices=["on", "off"], default="on")
    parser.add_argument("--only", choices=["with", "without"], default=None)
    args = parser.parse_args()
    modes = [False, True] if args.only is None else [args.only == "with"]
    results: dict[bool, list[dict[str, object]]] = {False: [], True: []}
    for _ in range(args.runs):
        for stalled in modes:  # alternate, so background load hits both alike
            run = await one_run(args, stalled)
            results[stalled].append(run)
            print(orjson.dumps({"benchmark": "slow_consumer", "run": run}).decode(), flush=True)
    summary: dict[str, object] = {
        "benchmark": "slow_consumer",
        "subscribers": args.subscribers,
        "probes": args.probes,
        "rate": args.rate,
        "seconds": args.seconds,
        "row_bytes": args.row_bytes,
    }
    for stalled, runs in results.items():
        if not runs:
            continue
        name = "with_stalled" if stalled else "without_stalled"
        summary[name] = {key: spread(runs, key) for key in ("p50_ms", "p99_ms", "max_ms")}
    if results[False] and results[True]:
        with_p99 = summary["with_stalled"]["p99_ms"]["median"]  # type: ignore[index]
        without_p99 = summary["without_stalled"]["p99_ms"]["median"]  # type: ignore[index]
        summary["p99_ratio_with_over_without"] = round(with_p99 / without_p99, 2)
    print(orjson.dumps(summary).decode(), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
