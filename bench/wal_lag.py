"""Where WAL mode's commit -> log latency goes: an in-process WalConsumer, one writer.

    python bench/wal_lag.py --rate 200 --seconds 5 --synchronous-commit off

A throwaway ``wal_level = logical`` cluster (or ``--wal-dsn``), one WAL-tracked table,
the consumer running in this process (instrumented: per batch, its size and the time
its append took), and a writer committing single-row INSERTs at ``--rate``. For each
row: commit acknowledged -> the consumer decoded it (stream lag), and -> its batch
committed to the log (append lag). Prints percentiles and the batch sizes.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import loadavg, logical_server, percentile, scratch_database

from pgcast.capture import wal as wal_module
from pgcast.capture.installer import track
from pgcast.identifiers import parse_table_name


async def run(args: argparse.Namespace, admin_dsn: str) -> None:
    async with scratch_database(admin_dsn) as dsn:
        conn = await asyncpg.connect(dsn)
        await conn.execute("CREATE TABLE lag_t (id bigserial PRIMARY KEY, ts float8)")
        await track(conn, parse_table_name("lag_t"), capture="wal")
        decoded_at: dict[int, float] = {}
        appended_at: dict[int, float] = {}
        batches: list[tuple[int, float]] = []
        consumer = wal_module.WalConsumer(dsn, retry_interval=0.1)
        flush = consumer._flush

        async def timed_flush(c: Any, cursor: Any, pending: list[Any], confirm: int) -> int:
            started = time.time()
            ids = [int(str(p.row.new[0])) for p in pending if p.row.new]
            for i in ids:
                decoded_at.setdefault(i, started)
            result = await flush(c, cursor, pending, confirm)
            done = time.time()
            for i in ids:
                appended_at.setdefault(i, done)
            if pending:
                batches.append((len(pending), done - started))
            return result

        consumer._flush = timed_flush  # type: ignore[method-assign]
        consumer.start()
        await asyncio.sleep(2)  # the consumer connects and starts streaming
        await conn.execute(f"SET synchronous_commit = {args.synchronous_commit}")
        committed: dict[int, float] = {}
        interval = 1 / args.rate
        start = time.monotonic()
        n = 0
        while time.monotonic() - start < args.seconds:
            row_id = await conn.fetchval("INSERT INTO lag_t (ts) VALUES (0) RETURNING id")
            committed[row_id] = time.time()
            n += 1
            delay = start + n * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        deadline = time.monotonic() + 30
        while len(appended_at) < len(committed) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)  # the consumer task appends; no event to wait on
        await consumer.stop()
        await conn.close()
    stream = [(decoded_at[i] - t) * 1000 for i, t in committed.items() if i in decoded_at]
    append = [(appended_at[i] - t) * 1000 for i, t in committed.items() if i in appended_at]
    sizes = [b for b, _ in batches]
    took = [d * 1000 for _, d in batches]
    print(
        f"rows {len(committed)} at {args.rate}/s, synchronous_commit={args.synchronous_commit}, "
        f"load {loadavg()}"
    )
    for name, values in (("commit -> flush starts", stream), ("commit -> appended", append)):
        print(
            f"  {name:24s} p50 {percentile(values, 0.5):7.1f} ms"
            f"  p99 {percentile(values, 0.99):7.1f} ms  max {max(values):7.1f} ms"
        )
    print(
        f"  batches {len(batches)}: rows median {statistics.median(sizes)} max {max(sizes)}; "
        f"append time median {statistics.median(took):.1f} ms p99 {percentile(took, 0.99):.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--synchronous-commit", default="off", choices=["on", "off"])
    parser.add_argument("--wal-dsn", default=None)
    args = parser.parse_args()
    with logical_server(args.wal_dsn) as admin_dsn:
        asyncio.run(run(args, admin_dsn))


if __name__ == "__main__":
    main()
