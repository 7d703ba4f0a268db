"""A throwaway PostgreSQL cluster with ``wal_level = logical``, for WAL-mode tests.

The machine's server runs with ``wal_level = replica``, so WAL tests start their own
cluster: ``initdb`` + ``pg_ctl`` into a temporary directory, on a free port, as the
``postgres`` system user when running as root (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class WalCluster:
    port: int
    data_dir: Path
    bin_dir: Path
    run_as: list[str]

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def dsn(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def pg_ctl(self, *args: str) -> None:
        subprocess.run(
            [*self.run_as, str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), *args],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def restart(self) -> None:
        self.pg_ctl("restart", "-m", "fast", "-w", "-l", str(self.data_dir / "log"))


@contextlib.contextmanager
def wal_cluster(settings: str = "") -> Iterator[WalCluster]:
    """Start the cluster; ``settings`` (postgresql.conf lines) override the defaults
    (the benchmarks turn ``fsync`` back on)."""
    bin_dir = _bin_dir()
    if bin_dir is None or not (bin_dir / "initdb").exists():
        pytest.skip("WAL-mode tests need PostgreSQL's initdb and pg_ctl (not found)")
    run_as: list[str] = []
    if os.geteuid() == 0:
        run_as = ["runuser", "-u", "postgres", "--"]
    base = Path(tempfile.mkdtemp(prefix="pgcast-wal-"))
    data_dir = base / "data"
    if run_as:
        shutil.chown(base, "postgres")
    subprocess.run(
        [
            *run_as,
            str(bin_dir / "initdb"),
            "-D",
            str(data_dir),
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale",
            "C.UTF-8",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    port = _free_port()
    with open(data_dir / "postgresql.conf", "a") as conf:
        conf.write(
            f"port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n"
            "wal_level = logical\nmax_replication_slots = 20\nmax_wal_senders = 20\n"
            "fsync = off\nmax_connections = 100\nwal_sender_timeout = 10s\n" + settings
        )
    cluster = WalCluster(port, data_dir, bin_dir, run_as)
    cluster.pg_ctl("start", "-w", "-l", str(data_dir / "log"))
    try:
        yield cluster
    finally:
        with contextlib.suppress(Exception):
            cluster.pg_ctl("stop", "-m", "immediate", "-w")
        shutil.rmtree(base, ignore_errors=True)


@contextlib.asynccontextmanager
async def fresh_database(cluster: WalCluster) -> AsyncIterator[str]:
    """A new database in ``cluster``; its slots are dropped with it."""
    name = f"pgcast_wal_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(cluster.admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield cluster.dsn(name)
    finally:
        admin = await asyncpg.connect(cluster.admin_dsn)
        try:
            # A database with a replication slot cannot be dropped.
            for _ in range(100):
                await admin.execute(
                    "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                    "WHERE database = $1 AND active_pid IS NOT NULL",
                    name,
                )
                try:
                    await admin.execute(
                        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                        "WHERE database = $1",
                        name,
                    )
                    break
                except asyncpg.ObjectInUseError:
                    await asyncio.sleep(0.05)  # the walsender is still exiting
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
