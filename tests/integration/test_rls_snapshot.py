"""Snapshots can defer to PostgreSQL row-level security (auth `rls_role`)."""

from __future__ import annotations

import time
from pathlib import Path

import asyncpg
import jwt

from pgcast.auth import load_auth_config
from pgcast.capture.installer import track
from pgcast.identifiers import parse_table_name

from .gateway_helpers import running_gateway
from .test_authorization import client_for

SECRET = "rls-secret-" + "r" * 40
ROLE = "pgcast_rls_reader"
RULES = '[rules.tables.docs]\nread = "true"\n'  # the rules allow all: RLS must do the work


async def test_snapshot_rows_follow_the_rls_policies_of_the_token(
    database_url: str, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await conn.execute(
        f"""
        DO $$ BEGIN CREATE ROLE {ROLE} NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
        CREATE TABLE docs (id int PRIMARY KEY, merchant_id int, body text);
        ALTER TABLE docs ENABLE ROW LEVEL SECURITY;
        CREATE POLICY by_merchant ON docs USING (
            merchant_id = (current_setting('request.jwt.claims', true)::json->>'merchant_id')::int
        );
        GRANT SELECT ON docs TO {ROLE};
        INSERT INTO docs VALUES (1, 1, 'mine'), (2, 2, 'theirs'), (3, 1, 'mine too');
        """
    )
    await track(conn, parse_table_name("docs"))
    config = tmp_path / "pgcast.toml"
    config.write_text(RULES)
    auth = load_auth_config({"jwt_secret": SECRET, "rls_role": ROLE}, env={}, config_file=config)
    token = jwt.encode(
        {"sub": "u1", "merchant_id": 1, "exp": int(time.time() + 600)}, SECRET, algorithm="HS256"
    )
    async with (
        running_gateway(database_url, auth=auth) as gateway,
        client_for(gateway, token) as client,
    ):
        await client.send({"type": "subscribe", "id": "d", "table": "docs", "snapshot": True})
        rows = []
        while (message := await client.recv())["type"] == "snapshot":
            rows += message["rows"]
        assert message["type"] == "subscribed", message
    assert sorted(row["id"] for row in rows) == [1, 3]
    # the gateway's own role was restored: the log and the table are intact
    assert await conn.fetchval("SELECT count(*) FROM docs") == 3
