"""Shared fixtures: every integration test gets its own fresh PostgreSQL database.

The server is ``PGCAST_TEST_DSN`` if set, else the local server on 127.0.0.1:5432
(user postgres, trust auth).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import uuid
from collections.abc import AsyncIterator

import asyncpg
import psycopg2
import pytest

ADMIN_DSN = os.environ.get("PGCAST_TEST_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


def dsn_for(database: str) -> str:
    """The admin DSN with its database swapped for ``database``."""
    base, _, _ = ADMIN_DSN.rpartition("/")
    query = ""
    if "?" in ADMIN_DSN.rpartition("/")[2]:
        query = "?" + ADMIN_DSN.rpartition("?")[2]
    return f"{base}/{database}{query}"


def _create_database() -> str:
    """A new empty database (CREATE DATABASE takes ~0.5 s: it runs ahead, see below)."""
    name = f"pgcast_test_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(ADMIN_DSN)
    try:
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
    finally:
        admin.close()
    return name


# The next test's database is created in a thread while the current test runs: most
# tests wait on sockets, so this hides the creation time of every database but one.
_creator = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="test-db")
_spare: concurrent.futures.Future[str] | None = None


def pytest_sessionfinish(session: pytest.Session) -> None:
    if _spare is not None and not _spare.cancel():
        try:
            name = _spare.result(timeout=60)
        except Exception:  # the spare was never created: nothing to drop
            return
        admin = psycopg2.connect(ADMIN_DSN)
        try:
            admin.autocommit = True
            with admin.cursor() as cursor:
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            admin.close()


@pytest.fixture
async def database_url() -> AsyncIterator[str]:
    """A DSN for a brand-new, empty database, dropped after the test."""
    global _spare
    ready, _spare = _spare, _creator.submit(_create_database)
    if ready is None:
        ready = _creator.submit(_create_database)
    name = await asyncio.wrap_future(ready)
    try:
        yield dsn_for(name)
    finally:
        admin = await asyncpg.connect(ADMIN_DSN)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection to the test database, for setting up tables and writing rows."""
    connection = await asyncpg.connect(database_url)
    try:
        yield connection
    finally:
        await connection.close()
