"""Fixtures shared by the integration tests: the wal_level = logical cluster.

One cluster per test session, whichever modules need it (starting one takes
seconds); each test gets a database of its own in it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from .wal_cluster import WalCluster, fresh_database, wal_cluster


@pytest.fixture(scope="session")
def cluster() -> Iterator[WalCluster]:
    with wal_cluster() as c:
        yield c


@pytest.fixture
async def wal_dsn(cluster: WalCluster) -> AsyncIterator[str]:
    async with fresh_database(cluster) as dsn:
        yield dsn


@pytest.fixture
async def wconn(wal_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(wal_dsn)
    try:
        yield connection
    finally:
        await connection.close()
