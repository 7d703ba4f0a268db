"""The broker tier: what 1, 4 and 8 gateway processes cost PostgreSQL, with and
without NATS JetStream, and deliveries per second across 4 nodes against 1.

    python bench/broker.py --nodes 1 4 8 --window 10 --rate 200 \
        --delivery-nodes 1 4 --clients 100 --changes 500

Starts its own nats-server (JetStream, free port, temporary store) and a scratch
database per configuration. Two parts, each run for both modes side by side:

* **PostgreSQL load.** N ``pgcast serve`` processes; a writer commits ``--rate``
  single-row INSERTs per second for ``--window`` seconds. Measured on the primary:
  scans of ``pgcast.changes`` (``pg_stat_user_tables`` seq_scan + idx_scan, i.e. every
  query that touched the log, whoever sent it), the nodes' own log-read counters
  (``pgcast_log_reads_total`` without a broker, ``pgcast_broker_reader_log_reads_total``
  with one), and connections to the database by ``application_name``
  (``pg_stat_activity``, sampled at the end of the window).
* **Deliveries.** N nodes (``--delivery-nodes``), one load-generator process
  (bench/clients.py) per node with ``--clients`` WebSocket clients each, every
  client subscribed to the table; the writer commits ``--changes`` rows as fast as
  it can. Deliveries/s = change frames received by all clients / (last frame -
  writer start). Each load generator's CPU seconds are reported: a generator near
  1 CPU-second per second of window would be the limit (``--split``: the same total
  of clients spread over the nodes, to ask what more nodes add for one audience);
  the server side's own
  ``pgcast_deliveries_total`` is compared with the frames the clients counted.

Prints one JSON line per configuration and a summary table (markdown) at the end.
The machine's load average is recorded before and after each configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import asyncpg
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
)

TABLE = "bench_events"
DDL = "CREATE TABLE {t} (id bigserial PRIMARY KEY, kind text, ts float8, payload text)"
INSERT = (
    f"INSERT INTO {TABLE} (kind, ts, payload) VALUES ('bench', $1, repeat('x', 150)) RETURNING id"
)
LOG_SCANS = """
SELECT coalesce(seq_scan, 0) + coalesce(idx_scan, 0) FROM pg_stat_user_tables
 WHERE schemaname = 'pgcast' AND relname = 'changes'
"""
CONNECTIONS = """
SELECT coalesce(nullif(application_name, ''), '(pool)') AS app, count(*) AS n
  FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()
 GROUP BY 1 ORDER BY 1
"""


@contextlib.contextmanager
def nats_server() -> Iterator[str]:
    binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
    store = tempfile.mkdtemp(prefix="pgcast-bench-nats-")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", store],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"nats://127.0.0.1:{port}"
        deadline = time.monotonic() + 15
        while not _http_ok(port) and time.monotonic() < deadline:
            time.sleep(0.05)  # polling a port that is coming up
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(store, ignore_errors=True)


def _http_ok(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
            return bool(orjson.loads(response.read())["status"] == "ok")
    except OSError:
        return False


async def wait_healthy(ports: list[int], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    for port in ports:
        while not await asyncio.to_thread(healthy, port):
            if time.monotonic() > deadline:
                raise TimeoutError(f"node on {port} not healthy")
            await asyncio.sleep(0.1)  # polling /health


@contextlib.contextmanager
def fleet(dsn: str, count: int, env: dict[str, str]) -> Iterator[list[tuple[int, int]]]:
    """``count`` gateway processes: (port, pid) each."""
    with contextlib.ExitStack() as stack:
        nodes = []
        for _ in range(count):
            port = free_port()
            proc = stack.enter_context(gateway_process("pgcast", dsn, port, env=env))
            nodes.append((port, proc.pid))
        yield nodes


_RUNS = iter(range(1, 1_000_000))


def mode_env(mode: str, nats_url: str) -> dict[str, str]:
    env = {**LOAD_ENV, "PGCAST_POLL_INTERVAL": "1"}
    if mode == "nats":
        env |= {"PGCAST_BROKER": nats_url, "PGCAST_BROKER_STREAM": f"B{os.getpid()}"}
    return env


async def load_run(
    args: argparse.Namespace, mode: str, count: int, nats_url: str
) -> dict[str, object]:
    env = mode_env(mode, nats_url)
    env["PGCAST_BROKER_STREAM"] = f"L{next(_RUNS)}x{os.getpid()}"  # one per database
    counter = (
        "pgcast_log_reads_total" if mode == "postgres" else "pgcast_broker_reader_log_reads_total"
    )
    async with scratch_database(args.dsn) as dsn:
        await prepare_table(dsn, TABLE, DDL, "pgcast")
        with fleet(dsn, count, env) as nodes:
            ports = [port for port, _ in nodes]
            await wait_healthy(ports)
            await asyncio.sleep(2)  # let elections and first reads settle before measuring
            conn = await asyncpg.connect(dsn)
            try:
                load_before = loadavg()
                scans_before = await conn.fetchval(LOG_SCANS) or 0
                reads_before = sum([await asyncio.to_thread(metric, p, counter) for p in ports])
                started = time.monotonic()
                await commit_rows(dsn, INSERT, int(args.rate * args.window), rate=args.rate)
                elapsed = time.monotonic() - started
                await asyncio.sleep(1.5)  # statistics are flushed about once a second
                scans_after = await conn.fetchval(LOG_SCANS) or 0
                reads_after = sum([await asyncio.to_thread(metric, p, counter) for p in ports])
                connections = {r["app"]: r["n"] for r in await conn.fetch(CONNECTIONS)}
            finally:
                await conn.close()
    window = elapsed + 1.5
    return {
        "part": "load",
        "mode": mode,
        "nodes": count,
        "log_scans_per_s": round((scans_after - scans_before) / window, 1),
        "log_reads_per_s": round((reads_after - reads_before) / window, 1),
        "connections": sum(connections.values()),
        "log_reader_connections": connections.get("pgcast-listener", 0)
        + connections.get("pgcast-reader", 0),
        "by_application": connections,
        "commits_per_s": round(args.rate * args.window / elapsed),
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
    }


async def delivery_run(
    args: argparse.Namespace, mode: str, count: int, nats_url: str
) -> dict[str, object]:
    env = mode_env(mode, nats_url)
    env["PGCAST_BROKER_STREAM"] = f"D{next(_RUNS)}x{os.getpid()}"  # one per database
    per_node = args.clients // count if args.split else args.clients
    async with scratch_database(args.dsn) as dsn:
        await prepare_table(dsn, TABLE, DDL, "pgcast")
        with fleet(dsn, count, env) as nodes:
            ports = [port for port, _ in nodes]
            await wait_healthy(ports)
            generators = [
                ClientProcess(
                    [
                        "--port",
                        str(port),
                        "--clients",
                        str(per_node),
                        "--table",
                        TABLE,
                        "--expect-total",
                        str(per_node * args.changes),
                        "--timeout",
                        str(args.timeout),
                    ]
                )
                for port in ports
            ]
            try:
                for generator in generators:
                    await generator.start()
                await asyncio.sleep(1)  # let connection setup settle before measuring
                load_before = loadavg()
                cpu_before = [proc_cpu_seconds(pid) for _, pid in nodes]
                served_before = sum(
                    [await asyncio.to_thread(metric, p, "pgcast_deliveries_total") for p in ports]
                )
                if args.bulk:
                    written = await bulk_insert(dsn, args.changes)
                else:
                    written = await commit_rows(
                        dsn, INSERT, args.changes, connections=2, synchronous_commit="off"
                    )
                results = [await g.finish(args.timeout + 60) for g in generators]
                cpu_after = [proc_cpu_seconds(pid) for _, pid in nodes]
                served_after = sum(
                    [await asyncio.to_thread(metric, p, "pgcast_deliveries_total") for p in ports]
                )
            finally:
                for generator in generators:
                    generator.kill()
    frames = sum(int(r["frames"]) for r in results)  # type: ignore[call-overload]
    last = max(float(r["last_recv"]) for r in results)  # type: ignore[arg-type]
    window = last - float(written["started"])  # type: ignore[arg-type]
    loadgen = [float(r["loadgen_cpu_s"]) for r in results]  # type: ignore[arg-type]
    return {
        "part": "deliveries",
        "mode": mode,
        "nodes": count,
        "deliveries": frames,
        "clients_per_node": per_node,
        "expected": count * per_node * args.changes,
        "server_counted": int(served_after - served_before),
        "deliveries_per_s": round(frames / window) if window > 0 else 0,
        "window_s": round(window, 2),
        "writer_s": round(float(written["elapsed"]), 2),  # type: ignore[arg-type]
        "gateway_cpu_s": round(sum(cpu_after) - sum(cpu_before), 2),
        "loadgen_cpu_s_each": [round(x, 2) for x in loadgen],
        "loadgen_cpu_share_max": round(max(loadgen) / window, 2) if window > 0 else None,
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
    }


async def bulk_insert(dsn: str, count: int) -> dict[str, object]:
    """All ``count`` rows in one statement: the fan-out, not the writer, sets the pace."""
    conn = await asyncpg.connect(dsn)
    try:
        started, start = time.time(), time.monotonic()
        await conn.execute(
            f"INSERT INTO {TABLE} (kind, ts, payload)"
            " SELECT 'bench', extract(epoch FROM now()), repeat('x', 150)"
            " FROM generate_series(1, $1)",
            count,
        )
        return {"started": started, "elapsed": time.monotonic() - start}
    finally:
        await conn.close()


def report(runs: list[dict[str, object]]) -> str:
    lines = [
        "| part | nodes | mode | log queries/s (pg_stat scans) | log reads/s (nodes' counters)"
        " | connections (log readers) | deliveries/s |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for run in runs:
        if run["part"] == "load":
            lines.append(
                f"| load | {run['nodes']} | {run['mode']} | {run['log_scans_per_s']} |"
                f" {run['log_reads_per_s']} | {run['connections']}"
                f" ({run['log_reader_connections']}) | |"
            )
        else:
            lines.append(
                f"| deliveries ({run['clients_per_node']} clients/node) | {run['nodes']} |"
                f" {run['mode']} | | | | {run['deliveries_per_s']} |"
            )
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    parser.add_argument("--nodes", type=int, nargs="*", default=[1, 4, 8])
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--delivery-nodes", type=int, nargs="*", default=[1, 4])
    parser.add_argument("--clients", type=int, default=100, help="per node (see --split)")
    parser.add_argument(
        "--split",
        action="store_true",
        help="--clients is the total, split across the nodes (same audience, more nodes)",
    )
    parser.add_argument("--changes", type=int, default=500)
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument(
        "--bulk",
        action="store_true",
        help="deliveries: commit the rows in one statement (measures fan-out, not the writer)",
    )
    args = parser.parse_args()
    runs: list[dict[str, object]] = []
    with nats_server() as url:
        for count in args.nodes:
            for mode in ("postgres", "nats"):  # side by side: drift hits both alike
                run = await load_run(args, mode, count, url)
                print(orjson.dumps(run).decode(), flush=True)
                runs.append(run)
        for count in args.delivery_nodes:
            for mode in ("postgres", "nats"):
                run = await delivery_run(args, mode, count, url)
                print(orjson.dumps(run).decode(), flush=True)
                runs.append(run)
    print(report(runs))


if __name__ == "__main__":
    asyncio.run(main())
