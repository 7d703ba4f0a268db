"""A mirror that resumes by change id after its snapshot never goes back to an older row.

The replay window of a resume by id (rows at or below ``since`` of every transaction
with ``txid >=`` that row's ``tx_xmin``) reaches back as far as the oldest transaction
open anywhere in the cluster when row ``since`` was written. Here one stays open on
purpose, as other databases' writers do on a busy server, so the window covers a
change committed before the client's snapshot: the snapshot's rows stand for it, the
client never saw its id, and applying it would move the row back (and, the newer
change being dropped by id, leave the mirror stale).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import asyncpg

from pgcast.backoff import backoff
from pgcast.capture.installer import track
from pgcast.client import connect
from pgcast.identifiers import parse_table_name

from .gateway_helpers import TIMEOUT, running_gateway
from .tcp_proxy import TcpProxy


async def wait_until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(TIMEOUT):
        while not condition():  # noqa: ASYNC110 (frames are appended by the reader task)
            await asyncio.sleep(0.02)


async def test_resume_by_id_after_a_snapshot_skips_changes_the_snapshot_holds(
    database_url: str, conn: asyncpg.Connection
) -> None:
    await conn.execute("CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL)")
    await conn.execute("INSERT INTO items VALUES (1, 0), (2, 0)")
    await track(conn, parse_table_name("items"))
    # An open transaction with an xid, older than every change below: it holds the
    # tx_xmin of each later log row at its own xid.
    holder = await asyncpg.connect(database_url)
    old = holder.transaction()
    await old.start()
    await holder.execute("SELECT pg_current_xact_id()")
    try:
        await conn.execute("UPDATE items SET v = 1 WHERE id = 1")
        before = await conn.fetchval("SELECT max(id) FROM pgcast.changes")
        async with running_gateway(database_url, poll_interval=0.2) as gateway:
            proxy = TcpProxy("127.0.0.1", gateway.port)
            await proxy.start()
            frames: list[dict[str, Any]] = []
            mirror: dict[int, int] = {}

            def changed_to(row: int, v: int) -> bool:
                return any(
                    f["type"] == "change" and f["record"] == {"id": row, "v": v} for f in frames
                )

            async def consume(sub: Any) -> None:
                async for frame in sub:
                    frames.append(frame)
                    if frame["type"] == "snapshot":
                        mirror.update((r["id"], r["v"]) for r in frame["rows"])
                    elif frame["type"] == "change":
                        mirror[frame["record"]["id"]] = frame["record"]["v"]

            try:
                async with (
                    connect(
                        f"ws://127.0.0.1:{proxy.port}",
                        ping_interval=1.0,
                        ping_timeout=2.0,
                        open_timeout=3.0,
                        backoff_factory=lambda: backoff(0.05, 0.2),
                    ) as client,
                    client.subscribe("items", snapshot=True) as sub,
                ):
                    reader = asyncio.create_task(consume(sub))
                    await wait_until(lambda: any(f.get("done") for f in frames))
                    assert mirror == {1: 1, 2: 0}
                    await conn.execute("UPDATE items SET v = 2 WHERE id = 1")
                    await wait_until(lambda: changed_to(1, 2))
                    await conn.execute("UPDATE items SET v = 1 WHERE id = 2")  # `since`
                    await wait_until(lambda: changed_to(2, 1))
                    proxy.cut()  # resumes with since = that change's id
                    await conn.execute("UPDATE items SET v = 9 WHERE id = 2")
                    await wait_until(lambda: changed_to(2, 9))
                    reader.cancel()
            finally:
                await proxy.stop()
    finally:
        await old.rollback()
        await holder.close()
    ids = [int(f["id"]) for f in frames if f["type"] == "change"]
    assert before not in ids, f"change {before} predates the snapshot and was applied again"
    assert mirror == {1: 2, 2: 9}
    assert sub.duplicates >= 1  # the replay did re-send what the client holds
