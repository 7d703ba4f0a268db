"""End-to-end latency: commit -> subscriber receive, p50 / p99 / max.

    python bench/latency.py --subscribers 100 --rate 1000 --seconds 5 --runs 3

A writer commits single-row INSERTs at ``--rate`` per second, each row stamped with
the time just before its INSERT was sent; ``--subscribers`` WebSocket clients each
hold a subscription whose filter matches every row (``kind=eq.bench``). The first
``--probes`` clients decode every frame and record ``receive time - stamp``; the
others only count frames. The gateway runs as its own process (``pgcast serve``;
with ``--target baseline`` the hand-written asyncpg + websockets gateway in
bench/baseline, which has no filters and broadcasts to everyone). Prints JSON.
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
    ROOT,
    RawClient,
    free_port,
    gateway_process,
    open_clients,
    percentile,
    scratch_database,
)

from pgcast.capture.installer import track
from pgcast.identifiers import parse_table_name

TABLE = "bench_events"


async def prepare(dsn: str, target: str) -> None:
    conn = await asyncpg.connect(dsn)
    await conn.execute(f"CREATE TABLE {TABLE} (id bigserial PRIMARY KEY, kind text, ts float8)")
    if target == "pgcast":
        await track(conn, parse_table_name(TABLE))
    else:
        # trigger.sql is a psql script: drop its psql meta-commands, bind :"table".
        sql = (ROOT / "bench" / "baseline" / "trigger.sql").read_text()
        lines = [line for line in sql.splitlines() if not line.startswith("\\")]
        await conn.execute("\n".join(lines).replace(':"table"', f'"{TABLE}"'))
    await conn.close()


async def one_run(args: argparse.Namespace, target: str) -> dict[str, object]:
    async with scratch_database(args.dsn) as dsn:
        await prepare(dsn, target)
        port = free_port()
        with gateway_process(target, dsn, port):
            received: dict[int, float] = {}  # row id -> first receive time (probes)

            def probe(payload: bytes) -> None:
                now = time.time()
                message = orjson.loads(payload)
                if target == "pgcast":
                    if message.get("type") != "change":
                        return
                    record = message["record"]
                else:
                    record = message.get("record", message)
                if isinstance(record, dict) and "id" in record:
                    received.setdefault(record["id"], now)

            clients = await open_clients(
                port, args.subscribers, lambda i: RawClient(probe if i < args.probes else None)
            )
            base = 0
            if target == "pgcast":
                for client in clients:
                    client.send(
                        {"type": "subscribe", "id": "s", "table": TABLE, "filter": "kind=eq.bench"}
                    )
                base = 2  # welcome + subscribed
                await asyncio.gather(*(c.wait_frames(base, 30) for c in clients))
            writer = await asyncpg.connect(
                dsn, server_settings={"synchronous_commit": args.synchronous_commit}
            )
            insert = f"INSERT INTO {TABLE} (kind, ts) VALUES ('bench', $1) RETURNING id"
            total = int(args.rate * args.seconds)
            sent: dict[int, float] = {}  # row id -> time the INSERT was sent
            committed: dict[int, float] = {}  # row id -> time its commit was acknowledged
            start = time.monotonic()
            for i in range(total):
                delay = start + i / args.rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)  # pacing the writer to the target rate
                before = time.time()
                row_id = await writer.fetchval(insert, before)
                committed[row_id] = time.time()
                sent[row_id] = before
            achieved = total / (time.monotonic() - start)
            await asyncio.gather(*(c.wait_frames(base + total, 60) for c in clients))
            await writer.close()
            for client in clients:
                assert client.transport is not None
                client.transport.close()
    # Latency from the commit acknowledgement (what DESIGN calls commit -> receive),
    # and from the moment the INSERT was sent (adds the commit itself, an fsync here).
    from_commit = [(received[i] - committed[i]) * 1000 for i in received]
    from_send = [(received[i] - sent[i]) * 1000 for i in received]
    return {
        "p50_ms": round(percentile(from_commit, 0.50), 3),
        "p99_ms": round(percentile(from_commit, 0.99), 3),
        "max_ms": round(max(from_commit), 3),
        "from_send_p50_ms": round(percentile(from_send, 0.50), 3),
        "from_send_p99_ms": round(percentile(from_send, 0.99), 3),
        "samples": len(from_commit),
        "achieved_rate": round(achieved, 1),
        "deliveries": total * args.subscribers,
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
    args = parser.parse_args()
    targets = ["pgcast", "baseline"] if args.target == "both" else [args.target]
    for target in targets:
        runs = [await one_run(args, target) for _ in range(args.runs)]
        result = {
            "benchmark": "latency",
            "target": target,
            "subscribers": args.subscribers,
            "rate": args.rate,
            "seconds": args.seconds,
            "synchronous_commit": args.synchronous_commit,
            "runs": runs,
        }
        for key in ("p50_ms", "p99_ms", "max_ms"):
            values = [float(r[key]) for r in runs]  # type: ignore[arg-type]
            result[key] = {
                "median": statistics.median(values),
                "min": min(values),
                "max": max(values),
            }
        print(orjson.dumps(result).decode(), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
