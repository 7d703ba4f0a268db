"""A filtered table snapshot with and without its filter pushed down to PostgreSQL.

    python bench/snapshot_filter.py --rows 1000000 --rounds 5

One scratch database, one table ``(id int, n int, payload text)`` with ``--rows``
rows, an index on ``n`` and ``n`` taking ``--distinct`` values, tracked by pgcast.
Each round takes the snapshot a client with ``n=eq.7`` gets (``log_replay.snapshot``
then the gateway's own filter, ``unreadable.parse_row`` + ``Filter.matches``), once
reading every row and filtering in the gateway (before), once with the filter as a
``WHERE`` clause (``snapshot_filter.pushdown``, after), interleaved. Prints the median
time of each, their ratio, and the rows each read and kept.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DEFAULT_DSN, loadavg, scratch_database

from pgcast.capture.installer import track
from pgcast.filters import parse_filter
from pgcast.identifiers import parse_table_name
from pgcast.log_replay import TableRows, lend, snapshot
from pgcast.snapshot_filter import Pushdown, pushdown
from pgcast.unreadable import parse_row


async def one(
    conn: asyncpg.Connection, where: Pushdown | None, text: str
) -> tuple[float, int, int]:
    conditions = parse_filter(text).conditions
    started = time.perf_counter()
    read = kept = 0
    async for item in snapshot(
        lend(conn), schema="public", table="snap", events=["INSERT"], timeout=600, where=where
    ):
        if isinstance(item, TableRows):
            read += len(item.rows)
            kept += sum(
                1 for row in item.rows if all(c.matches(parse_row(row)) for c in conditions)
            )
    return time.perf_counter() - started, read, kept


async def main_async(args: argparse.Namespace) -> None:
    print(f"load average at start: {loadavg()}")
    async with scratch_database(args.dsn) as dsn:
        conn = await asyncpg.connect(dsn)
        await conn.execute("CREATE TABLE snap (id int PRIMARY KEY, n int NOT NULL, payload text)")
        await conn.execute(
            "INSERT INTO snap SELECT g, g % $1, repeat('x', 100) FROM generate_series(1, $2) g",
            args.distinct,
            args.rows,
        )
        await conn.execute("CREATE INDEX ON snap (n)")
        await conn.execute("VACUUM ANALYZE snap")
        await track(conn, parse_table_name("snap"))
        text = "n=eq.7"
        where = pushdown(parse_filter(text).conditions, {"n": "int4"})
        times: dict[str, list[float]] = {"every row": [], "pushed down": []}
        counts: dict[str, tuple[int, int]] = {}
        for r in range(args.rounds):
            order = [("every row", None), ("pushed down", where)]
            for name, clause in order if r % 2 == 0 else order[::-1]:
                seconds, read, kept = await one(conn, clause, text)
                times[name].append(seconds)
                counts[name] = (read, kept)
        await conn.close()
    before = statistics.median(times["every row"])
    after = statistics.median(times["pushed down"])
    print(f"{args.rows:,} rows, filter {text}, median of {args.rounds}:")
    for name, median in (("every row", before), ("pushed down", after)):
        read, kept = counts[name]
        print(f"  {name:12s} {median * 1000:9.1f} ms  read {read:,} rows, kept {kept:,}")
    print(f"  ratio {before / after:.0f}x; load average at end: {loadavg()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--distinct", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
