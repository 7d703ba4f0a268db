"""Bulk delivery: how long until one subscriber has every row of a 100,000-row UPDATE.

    python bench/bulk_update.py --rows 100000 --runs 3

Times, per run: the UPDATE statement itself (tracked table: the capture trigger's
cost is included), and commit -> last change received by one raw WebSocket
subscriber (with a large enough outbox that the burst is not cut off; the default
outbox closes a client that falls that far behind with 4001 and it resumes from the
log instead). Also reports how many notifications the transaction issued (1).
Prints JSON.
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
    RawClient,
    free_port,
    gateway_process,
    open_clients,
    scratch_database,
)

from pgcast.capture.installer import track
from pgcast.identifiers import parse_table_name


async def one_run(args: argparse.Namespace) -> dict[str, float]:
    async with scratch_database(args.dsn) as dsn:
        conn = await asyncpg.connect(dsn)
        await conn.execute("CREATE TABLE items (id int PRIMARY KEY, status text, amount int)")
        await conn.execute(
            "INSERT INTO items SELECT g, 'new', g FROM generate_series(1, $1) g", args.rows
        )
        await track(conn, parse_table_name("items"))
        port = free_port()
        outbox = {"PGCAST_OUTBOX_LIMIT": str(args.rows * 2)}
        with gateway_process("pgcast", dsn, port, env=outbox):
            (client,) = await open_clients(port, 1, lambda _: RawClient())
            client.send({"type": "subscribe", "id": "s", "table": "items", "events": ["UPDATE"]})
            await client.wait_frames(2, 30)
            notifications = 0

            def count(*_: object) -> None:
                nonlocal notifications
                notifications += 1

            watcher = await asyncpg.connect(dsn)
            await watcher.add_listener("pgcast", count)
            started = time.perf_counter()
            await conn.execute("UPDATE items SET status = 'done', amount = amount + 1")
            committed = time.perf_counter()
            await client.wait_frames(2 + args.rows, 300)
            received = time.perf_counter()
            await watcher.close()
            await conn.close()
    return {
        "update_statement_s": round(committed - started, 3),
        "commit_to_last_received_s": round(received - committed, 3),
        "rows_per_second_delivered": round(args.rows / (received - committed)),
        "notifications": notifications,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    runs = [await one_run(args) for _ in range(args.runs)]
    result: dict[str, object] = {"benchmark": "bulk_update", "rows": args.rows, "runs": runs}
    for key in ("update_statement_s", "commit_to_last_received_s", "rows_per_second_delivered"):
        values = [r[key] for r in runs]
        result[key] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
    print(orjson.dumps(result).decode(), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
