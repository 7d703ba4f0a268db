"""The hand-written LISTEN/NOTIFY -> WebSocket gateway that pgcast replaces.

A trigger (trigger.sql) calls pg_notify('table_changes', row_to_json(NEW)::text) for
every changed row; this process LISTENs on that channel and broadcasts each payload, as
is, to every connected WebSocket client. Kept deliberately idiomatic: it is the
comparison point for the benchmarks.

    python bench/baseline/gateway.py --dsn postgresql://user@localhost/app --port 8765
"""

from __future__ import annotations

import argparse
import asyncio

import asyncpg
from websockets.asyncio.server import ServerConnection, broadcast, serve

CLIENTS: set[ServerConnection] = set()


async def handler(websocket: ServerConnection) -> None:
    CLIENTS.add(websocket)
    try:
        await websocket.wait_closed()
    finally:
        CLIENTS.discard(websocket)


def on_notify(connection: object, pid: int, channel: str, payload: str) -> None:
    broadcast(CLIENTS, payload)


async def main(dsn: str, host: str, port: int, channel: str) -> None:
    conn = await asyncpg.connect(dsn)
    await conn.add_listener(channel, on_notify)
    try:
        async with serve(handler, host, port) as server:
            await server.serve_forever()
    finally:
        await conn.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="LISTEN/NOTIFY -> WebSocket broadcast")
    parser.add_argument("--dsn", required=True, help="PostgreSQL DSN (asyncpg format)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--channel", default="table_changes")
    args = parser.parse_args()
    asyncio.run(main(args.dsn, args.host, args.port, args.channel))
