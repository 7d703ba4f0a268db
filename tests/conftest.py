"""Shared fixtures: every integration test gets its own fresh PostgreSQL database.

The server is ``PGCAST_TEST_DSN`` if set, else the local server on 127.0.0.1:5432
(user postgres, trust auth).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

ADMIN_DSN = os.environ.get("PGCAST_TEST_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


def dsn_for(database: str) -> str:
    """The admin DSN with its database swapped for ``database``."""
    base, _, _ = ADMIN_DSN.rpartition("/")
    query = ""
    if "?" in ADMIN_DSN.rpartition("/")[2]:
        query = "?" + ADMIN_DSN.rpartition("?")[2]
    return f"{base}/{database}{query}"


@pytest.fixture
async def database_url() -> AsyncIterator[str]:
    """A DSN for a brand-new, empty database, dropped after the test."""
    name = f"pgcast_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
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
