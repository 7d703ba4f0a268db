"""The React hooks (clients/js/react.js) against a LIVE gateway and a real PostgreSQL.

``node --test clients/js/test/live/*.test.js`` renders ``useTable``, ``useChanges`` and
``useChannel`` with react-test-renderer, over real WebSockets (the ``ws`` package) to a
gateway started here. The node side has no PostgreSQL driver: it asks this test to write
through a small HTTP control channel (``PGCAST_LIVE_CONTROL``): ``POST /<op>`` with a
JSON body runs one fixed, parameterised statement and answers with the rows it returned.
The writes are the real thing (triggers, change log, NOTIFY), so every frame the hooks see
is the gateway's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from pgcast.capture.installer import track
from pgcast.identifiers import parse_table_name

from .gateway_helpers import running_gateway

pytestmark = pytest.mark.timeout(120)

JS_DIR = Path(__file__).resolve().parents[2] / "clients" / "js"
LIVE_TESTS = sorted((JS_DIR / "test" / "live").glob("*.test.js"))
NODE_DEADLINE = 90.0
SEED = [(10, "pending"), (10, "shipped"), (20, "pending")]  # ids 1, 2, 3

Op = Callable[[asyncpg.Connection, dict[str, Any]], Awaitable[list[dict[str, Any]]]]


async def _rows(conn: asyncpg.Connection, sql: str, *args: Any) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch(sql, *args)]


async def _reset(conn: asyncpg.Connection, _: dict[str, Any]) -> list[dict[str, Any]]:
    async with conn.transaction():
        await conn.execute("TRUNCATE orders RESTART IDENTITY")
        await conn.executemany("INSERT INTO orders (merchant_id, status) VALUES ($1, $2)", SEED)
    return await _rows(conn, "SELECT * FROM orders ORDER BY id")


async def _insert(conn: asyncpg.Connection, body: dict[str, Any]) -> list[dict[str, Any]]:
    sql = "INSERT INTO orders (merchant_id, status) VALUES ($1, $2) RETURNING *"
    return await _rows(conn, sql, int(body["merchant_id"]), str(body["status"]))


async def _update(conn: asyncpg.Connection, body: dict[str, Any]) -> list[dict[str, Any]]:
    sql = (
        "UPDATE orders SET status = coalesce($2, status),"
        " merchant_id = coalesce($3, merchant_id) WHERE id = $1 RETURNING *"
    )
    merchant = body.get("merchant_id")
    return await _rows(
        conn,
        sql,
        int(body["id"]),
        body.get("status"),
        None if merchant is None else int(merchant),
    )


async def _delete(conn: asyncpg.Connection, body: dict[str, Any]) -> list[dict[str, Any]]:
    return await _rows(conn, "DELETE FROM orders WHERE id = $1 RETURNING *", int(body["id"]))


async def _notify(conn: asyncpg.Connection, body: dict[str, Any]) -> list[dict[str, Any]]:
    await conn.execute("SELECT pg_notify($1, $2)", str(body["channel"]), str(body["payload"]))
    return []


OPS: dict[str, Op] = {
    "reset": _reset,
    "insert": _insert,
    "update": _update,
    "delete": _delete,
    "notify": _notify,
}


def _http(status: str, body: object) -> bytes:
    payload = orjson.dumps(body)
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + payload


@contextlib.asynccontextmanager
async def control_server(
    conn: asyncpg.Connection, log: list[str], ops: dict[str, Op] = OPS
) -> AsyncIterator[str]:
    """``http://127.0.0.1:<port>``: ``POST /<op>`` runs ops[op] (one request per connection)."""
    lock = asyncio.Lock()  # one asyncpg connection: one statement at a time

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            method, path, _ = request_line.split(" ", 2)
            headers = dict(
                (k.strip().lower(), v.strip())
                for k, _, v in (line.partition(":") for line in header_lines if line)
            )
            length = int(headers.get("content-length", "0"))
            raw = await asyncio.wait_for(reader.readexactly(length), 10) if length else b"{}"
            op = ops.get(path.strip("/"))
            if method != "POST" or op is None:
                writer.write(_http("404 Not Found", {"error": f"no such op {method} {path}"}))
            else:
                body = orjson.loads(raw)
                async with lock:
                    rows = await op(conn, body)
                log.append(f"{path.strip('/')} {body} -> {rows}")
                writer.write(_http("200 OK", {"rows": rows}))
        except Exception as exc:  # reported to node, which fails the test with it
            log.append(f"control error: {exc!r}")
            writer.write(_http("500 Internal Server Error", {"error": repr(exc)}))
        finally:
            with contextlib.suppress(Exception):
                await writer.drain()
                writer.close()
                await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()


def node_binary() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node (>= 20) is not installed: these tests run the JS hooks under node")
    if not (JS_DIR / "node_modules" / "react-test-renderer").is_dir():
        pytest.fail(
            f"{JS_DIR / 'node_modules'} is missing: run `cd clients/js && npm ci` first "
            "(.ci/run does it before pytest)"
        )
    return node


async def test_react_hooks_against_a_live_gateway(
    database_url: str, conn: asyncpg.Connection
) -> None:
    node = node_binary()
    assert LIVE_TESTS, "no clients/js/test/live/*.test.js"
    await conn.execute("CREATE TABLE orders (id serial PRIMARY KEY, merchant_id int, status text)")
    await track(conn, parse_table_name("orders"))
    log: list[str] = []
    async with (
        running_gateway(database_url, channels="system_notifications") as gateway,
        control_server(conn, log) as control,
    ):
        env = {
            **os.environ,
            "PGCAST_LIVE_URL": f"ws://127.0.0.1:{gateway.port}/ws",
            "PGCAST_LIVE_CONTROL": control,
            "NO_COLOR": "1",
        }
        env.pop("NODE_OPTIONS", None)
        proc = await asyncio.create_subprocess_exec(
            node,
            "--test",
            "--test-concurrency=1",  # one table: the files take turns
            "--test-timeout=30000",
            "--test-reporter=spec",
            *(str(p.relative_to(JS_DIR)) for p in LIVE_TESTS),
            cwd=JS_DIR,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), NODE_DEADLINE)
        except TimeoutError:
            proc.kill()
            out, _ = await proc.communicate()
            pytest.fail(f"node --test ran over {NODE_DEADLINE}s:\n{out.decode()}")
    output = out.decode()
    report = output + "\n-- control channel --\n" + "\n".join(log)
    assert proc.returncode == 0, report
    # Every live test ran and passed (a missing env var would skip them, and skips exit 0).
    counts = {
        k: int(v)
        for k, v in re.findall(r"^\S+ (tests|pass|fail|skipped|todo) (\d+)$", output, re.M)
    }
    assert counts.get("pass", 0) == counts.get("tests", -1) > 0, report
