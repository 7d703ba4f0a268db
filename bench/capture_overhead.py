"""What capture costs a writer: tracked vs untracked statements, printed as JSON.

Creates its own database on the server (dropped afterwards), two identical tables
per shape, tracks one of them, and times alternating runs so that drift of the
machine hits both sides alike. Every timed statement is its own committed
transaction (the commit, with its WAL flush and NOTIFY, is part of the cost).

    python bench/capture_overhead.py --dsn postgresql://postgres@127.0.0.1:5432/postgres

Shapes: ``orders`` (a realistic 6-column table with a secondary index) and
``narrow`` (id, int, short text: the worst case, where the log row is wider than
the user's row).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import time
import uuid
from collections.abc import Awaitable

import asyncpg

from pgcast.capture.installer import track
from pgcast.identifiers import TableName, quote_ident

SHAPES = {
    "orders": {
        "ddl": """
            CREATE TABLE {t} (
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                customer_id int NOT NULL,
                status text NOT NULL,
                amount numeric(10, 2) NOT NULL,
                note text,
                created_at timestamptz NOT NULL DEFAULT now());
            CREATE INDEX ON {t} (customer_id);
        """,
        "one": "INSERT INTO {t} (customer_id, status, amount, note) "
        "VALUES ($1, 'pending', 12.5, 'one row')",
        "bulk": "INSERT INTO {t} (customer_id, status, amount, note) "
        "SELECT g % 1000, 'pending', g / 100.0, 'order number ' || g "
        "FROM generate_series(1, $1) g",
        "update": "UPDATE {t} SET amount = amount + 1",
    },
    "narrow": {
        "ddl": "CREATE TABLE {t} (id serial PRIMARY KEY, a int, b text)",
        "one": "INSERT INTO {t} (a, b) VALUES ($1, 'one row')",
        "bulk": "INSERT INTO {t} (a, b) SELECT g, 'row ' || g FROM generate_series(1, $1) g",
        "update": "UPDATE {t} SET a = a + 1",
    },
}


async def _timed(statement: Awaitable[object]) -> float:
    """Seconds spent awaiting ``statement`` (a not-yet-started coroutine)."""
    start = time.perf_counter()
    await statement
    return time.perf_counter() - start


async def bench_shape(
    conn: asyncpg.Connection, shape: str, rows: int, bulk_runs: int, single_runs: int
) -> dict[str, float]:
    spec = SHAPES[shape]
    plain, tracked = f"{shape}_plain", f"{shape}_tracked"
    for name in (plain, tracked):
        await conn.execute(spec["ddl"].format(t=quote_ident(name)))
    await track(conn, TableName("public", tracked))

    def sql(kind: str, table: str) -> str:
        return spec[kind].format(t=quote_ident(table))

    # Single-row INSERT, alternating, each an autocommitted statement.
    one = {t: await conn.prepare(sql("one", t)) for t in (plain, tracked)}
    single: dict[str, list[float]] = {plain: [], tracked: []}
    for i in range(single_runs):
        for table in (plain, tracked) if i % 2 == 0 else (tracked, plain):
            single[table].append(await _timed(one[table].fetch(i)))

    # Bulk INSERT of `rows` rows into emptied tables, alternating.
    bulk: dict[str, list[float]] = {plain: [], tracked: []}
    for i in range(bulk_runs):
        for table in (plain, tracked) if i % 2 == 0 else (tracked, plain):
            await conn.execute(f"TRUNCATE {quote_ident(table)}, pgcast.changes")
            await conn.execute("CHECKPOINT")
            bulk[table].append(await _timed(conn.execute(sql("bulk", table), rows)))

    # UPDATE of every row (the tables hold `rows` rows after the last bulk run).
    update: dict[str, list[float]] = {plain: [], tracked: []}
    for i in range(bulk_runs):
        for table in (plain, tracked) if i % 2 == 0 else (tracked, plain):
            await conn.execute("TRUNCATE pgcast.changes")
            await conn.execute(f"VACUUM {quote_ident(table)}")
            await conn.execute("CHECKPOINT")
            update[table].append(await _timed(conn.execute(sql("update", table))))
            logged = await conn.fetchval("SELECT count(*) FROM pgcast.changes")
            expected = rows if table == tracked else 0
            assert logged == expected, f"{table}: {logged} log rows, expected {expected}"

    def median_ms(samples: list[float]) -> float:
        return round(statistics.median(samples) * 1000, 3)

    result = {
        "single_insert_untracked_ms": median_ms(single[plain]),
        "single_insert_tracked_ms": median_ms(single[tracked]),
        "bulk_insert_untracked_ms": median_ms(bulk[plain]),
        "bulk_insert_tracked_ms": median_ms(bulk[tracked]),
        "bulk_update_untracked_ms": median_ms(update[plain]),
        "bulk_update_tracked_ms": median_ms(update[tracked]),
    }
    for kind in ("single_insert", "bulk_insert", "bulk_update"):
        ratio = result[f"{kind}_tracked_ms"] / result[f"{kind}_untracked_ms"]
        result[f"{kind}_ratio"] = round(ratio, 2)
    return result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--bulk-runs", type=int, default=5)
    parser.add_argument("--single-runs", type=int, default=2000)
    parser.add_argument("--shape", choices=sorted(SHAPES), action="append")
    args = parser.parse_args()

    database = f"pgcast_bench_{uuid.uuid4().hex[:8]}"
    base, _, _ = args.dsn.rpartition("/")
    admin = await asyncpg.connect(args.dsn)
    await admin.execute(f"CREATE DATABASE {quote_ident(database)}")
    try:
        conn = await asyncpg.connect(f"{base}/{database}")
        try:
            server = await conn.fetchval("SHOW server_version")
            results = {
                shape: await bench_shape(conn, shape, args.rows, args.bulk_runs, args.single_runs)
                for shape in args.shape or ("orders", "narrow")
            }
        finally:
            await conn.close()
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {quote_ident(database)} WITH (FORCE)")
        await admin.close()
    print(
        json.dumps(
            {
                "date": time.strftime("%Y-%m-%d"),
                "postgres": server,
                "python": platform.python_version(),
                "rows": args.rows,
                "bulk_runs": args.bulk_runs,
                "single_runs": args.single_runs,
                **results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
