"""WAL capture against untracked and trigger capture: writer throughput and a bulk UPDATE.

Needs a server with ``wal_level = logical`` (the CI server has ``replica``; start
one, e.g. ``initdb`` + ``pg_ctl`` with ``-c wal_level=logical``, or the embedded
PostgreSQL). Runs pgbench, 16 clients, single-row INSERT, alternating modes:

* ``untracked``: no capture;
* ``wal``: tracked with ``--capture wal``, a gateway running in this process with a
  WebSocket subscriber receiving every change;
* ``trigger``: trigger capture, same gateway and subscriber;
* ``poll``: the client side not chosen: a task calling
  ``pg_logical_slot_get_binary_changes`` every 10 ms on its own slot (decode and
  discard), no gateway.

    python bench/wal_capture.py --dsn postgresql://postgres@127.0.0.1:PORT/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import glob
import json
import os
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator

import asyncpg
from websockets.asyncio.client import connect

from pgcast.capture.installer import track
from pgcast.config import Settings
from pgcast.identifiers import TableName
from pgcast.server import Gateway

PGBENCH = (sorted(glob.glob("/usr/lib/postgresql/*/bin/pgbench")) or ["pgbench"])[-1]
DDL = "CREATE TABLE {t} (id bigserial PRIMARY KEY, customer_id int, status text, amount numeric)"
INSERT = "INSERT INTO {t} (customer_id, status, amount) VALUES (:c, 'pending', 12.5);\n"


def dsn_for(dsn: str, database: str) -> str:
    return dsn.rsplit("/", 1)[0] + "/" + database


def pgbench_tps(dsn: str, table: str, seconds: int, clients: int) -> float:
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as script:
        script.write("\\set c random(1, 1000)\n" + INSERT.format(t=table))
    try:
        out = subprocess.run(
            [
                PGBENCH,
                "-n",
                "-c",
                str(clients),
                "-j",
                "2",
                "-T",
                str(seconds),
                "-f",
                script.name,
                dsn,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        os.unlink(script.name)
    line = next(x for x in out.splitlines() if x.startswith("tps"))
    return float(line.split("=")[1].split()[0])


@contextlib.asynccontextmanager
async def delivering_gateway(dsn: str, table: str) -> AsyncIterator[list[int]]:
    gateway = Gateway(Settings(port=0, poll_interval=0.5), dsn)
    await gateway.start()
    received = [0]
    async with connect(f"ws://127.0.0.1:{gateway.port}/ws", max_size=None) as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "subscribe", "id": "s", "table": table}))

        async def drain() -> None:
            async for _ in ws:
                received[0] += 1

        task = asyncio.create_task(drain())
        try:
            yield received
        finally:
            task.cancel()
    await gateway.stop()


@contextlib.asynccontextmanager
async def polling_consumer(dsn: str) -> AsyncIterator[None]:
    conn = await asyncpg.connect(dsn)
    await conn.execute("SELECT pg_create_logical_replication_slot('bench_poll', 'pgoutput')")
    stop = asyncio.Event()

    async def poll() -> None:
        while not stop.is_set():
            await conn.fetch(
                "SELECT data FROM pg_logical_slot_get_binary_changes('bench_poll', NULL, 10000,"
                " 'proto_version', '1', 'publication_names', 'pgcast')"
            )
            await asyncio.sleep(0.01)

    task = asyncio.create_task(poll())
    try:
        yield
    finally:
        stop.set()
        await task
        await conn.execute("SELECT pg_drop_replication_slot('bench_poll')")
        await conn.close()


async def bulk_update_ms(dsn: str, table: str) -> float:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"TRUNCATE {table}")
        await conn.execute(
            f"INSERT INTO {table} (customer_id, status, amount) "
            "SELECT g, 'pending', g FROM generate_series(1, 100000) g"
        )
        await conn.execute(f"VACUUM ANALYZE {table}")
        start = time.perf_counter()
        await conn.execute(f"UPDATE {table} SET amount = amount + 1")
        return (time.perf_counter() - start) * 1000
    finally:
        await conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dsn", required=True, help="admin DSN of a wal_level=logical server")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()
    name = f"pgcast_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(args.dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = dsn_for(args.dsn, name)
    conn = await asyncpg.connect(dsn)
    for table in ("plain", "by_wal", "by_trigger", "by_poll"):
        await conn.execute(DDL.format(t=table))
    await track(conn, TableName("public", "by_trigger"))
    await track(conn, TableName("public", "by_wal"), capture="wal")
    await conn.execute("ALTER TABLE by_poll REPLICA IDENTITY FULL")
    await conn.execute("ALTER PUBLICATION pgcast ADD TABLE by_poll")
    tps: dict[str, list[float]] = {m: [] for m in ("untracked", "wal", "trigger", "poll")}
    for _ in range(args.rounds):
        tps["untracked"].append(pgbench_tps(dsn, "plain", args.seconds, args.clients))
        async with delivering_gateway(dsn, "by_wal"):
            tps["wal"].append(
                await asyncio.to_thread(pgbench_tps, dsn, "by_wal", args.seconds, args.clients)
            )
        async with delivering_gateway(dsn, "by_trigger"):
            tps["trigger"].append(
                await asyncio.to_thread(pgbench_tps, dsn, "by_trigger", args.seconds, args.clients)
            )
        async with polling_consumer(dsn):
            tps["poll"].append(
                await asyncio.to_thread(pgbench_tps, dsn, "by_poll", args.seconds, args.clients)
            )
    base = statistics.median(tps["untracked"])
    update = {
        "untracked_ms": await bulk_update_ms(dsn, "plain"),
        "wal_ms": await bulk_update_ms(dsn, "by_wal"),
    }
    await conn.close()
    # the slot must go before the database can
    await admin.execute(
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1",
        name,
    )
    await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    await admin.close()
    print(
        json.dumps(
            {
                "clients": args.clients,
                "seconds": args.seconds,
                "tps": tps,
                "ratio_to_untracked": {
                    m: round(statistics.median(v) / base, 3) for m, v in tps.items()
                },
                "update_100k": {
                    **update,
                    "ratio": round(update["wal_ms"] / update["untracked_ms"], 2),
                },
                "loadavg": os.getloadavg(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
