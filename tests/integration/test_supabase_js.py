"""The unmodified ``@supabase/supabase-js`` from npm against a LIVE gateway on PostgreSQL.

``node --test tests/supabase_js/test/*.test.mjs`` runs supabase-js (pinned in
tests/supabase_js/package-lock.json, installed by .ci/run) over real WebSockets (the
``ws`` package, as Node 20 needs) to a gateway started here, once with each Phoenix
serializer. Writes go through the control channel of test_js_live (real triggers, real
change log), so every frame supabase-js sees is the gateway's own.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from pgcast.capture.installer import track
from pgcast.identifiers import parse_table_name

from .gateway_helpers import running_gateway
from .test_js_live import OPS, Op, control_server

pytestmark = pytest.mark.timeout(150)

JS_DIR = Path(__file__).resolve().parents[1] / "supabase_js"
NODE_DEADLINE = 120.0
TABLE = """
CREATE TABLE orders (
    id serial PRIMARY KEY,
    merchant_id int,
    status text,
    paid bool NOT NULL DEFAULT false,
    meta jsonb NOT NULL DEFAULT '{"tags": ["a"]}'
)
"""


def node_binary() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node (>= 20) is not installed: these tests run supabase-js under node")
    if not (JS_DIR / "node_modules" / "@supabase" / "supabase-js").is_dir():
        pytest.fail(
            f"{JS_DIR / 'node_modules'} is missing: run `cd tests/supabase_js && npm ci` "
            "first (.ci/run does it before pytest)"
        )
    return node


async def run_node(files: list[str], env: dict[str, str]) -> str:
    """``node --test files`` in tests/supabase_js; fails the test unless every test passed."""
    proc = await asyncio.create_subprocess_exec(
        node_binary(),
        "--test",
        "--test-concurrency=1",  # one table: the files take turns
        # supabase-js's disconnect() leaves a 10 s timer behind: do not wait for it.
        "--test-force-exit",
        "--test-timeout=40000",
        "--test-reporter=spec",
        *files,
        cwd=JS_DIR,
        env={**os.environ, "NO_COLOR": "1", **env},
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
    assert proc.returncode == 0, output
    counts = {
        k: int(v)
        for k, v in re.findall(r"^\S+ (tests|pass|fail|skipped|todo) (\d+)$", output, re.M)
    }
    assert counts.get("pass", 0) == counts.get("tests", -1) > 0, output
    return output


@pytest.mark.parametrize("vsn", ["1.0.0", "2.0.0"])
async def test_supabase_js_postgres_changes(
    database_url: str, conn: asyncpg.Connection, vsn: str
) -> None:
    await conn.execute(TABLE)
    await track(conn, parse_table_name("orders"))
    log: list[str] = []
    async with (
        running_gateway(database_url) as gateway,
        control_server(conn, log) as control,
    ):
        env = {
            "PGCAST_SUPABASE_URL": f"http://127.0.0.1:{gateway.port}",
            "PGCAST_LIVE_CONTROL": control,
            "PGCAST_SUPABASE_VSN": vsn,
        }
        await run_node(["test/postgres_changes.test.mjs", "test/presence_broadcast.test.mjs"], env)


def drop_and_write(gateway: Any) -> Op:
    """``drop_and_write``: abort every client connection, then insert ``rows`` rows."""

    async def op(conn: asyncpg.Connection, body: dict[str, Any]) -> list[dict[str, Any]]:
        for client in list(gateway.clients):
            client.abort()
        rows = []
        for index in range(int(body["rows"])):
            sql = "INSERT INTO orders (merchant_id, status) VALUES ($1, $2) RETURNING id"
            rows.append(dict(await conn.fetchrow(sql, 1, f"away {index}")))
        return rows

    return op


async def test_supabase_js_resumes_losslessly_with_pgcast_since(
    database_url: str, conn: asyncpg.Connection
) -> None:
    await conn.execute(TABLE)
    await track(conn, parse_table_name("orders"))
    log: list[str] = []
    async with running_gateway(database_url) as gateway:
        ops = {**OPS, "drop_and_write": drop_and_write(gateway)}
        async with control_server(conn, log, ops) as control:
            env = {
                "PGCAST_SUPABASE_URL": f"http://127.0.0.1:{gateway.port}",
                "PGCAST_LIVE_CONTROL": control,
            }
            await run_node(["test/resume.test.mjs"], env)


async def test_supabase_js_presence_and_broadcast_across_two_nodes(
    database_url: str, conn: asyncpg.Connection
) -> None:
    await conn.execute(TABLE)
    await track(conn, parse_table_name("orders"))
    log: list[str] = []
    async with (
        running_gateway(database_url) as first,
        running_gateway(database_url) as second,
        control_server(conn, log) as control,
    ):
        env = {
            "PGCAST_SUPABASE_URL": f"http://127.0.0.1:{first.port}",
            "PGCAST_SUPABASE_URL_2": f"http://127.0.0.1:{second.port}",
            "PGCAST_LIVE_CONTROL": control,
        }
        output = await run_node(["test/two_nodes.test.mjs"], env)
        assert "skipped 0" in output, output
