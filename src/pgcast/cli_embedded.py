"""``pgcast embedded start|status|stop``: the lifecycle of the embedded PostgreSQL.

Commands run without a database URL start the embedded server on demand and leave it
running for the next ones (``pgcast demo`` stops it again if it started it); these
commands show and control it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from .embedded import default_data_dir, embedded_status, psql_path, start_embedded, stop_embedded

EXIT_OK, EXIT_NOT_RUNNING = 0, 3  # 3: as `pg_ctl status` says "not running"

DESCRIPTION = (
    "The embedded PostgreSQL that pgcast starts when no database URL is set "
    "(data in $PGCAST_HOME/postgres, else ~/.local/share/pgcast/postgres). "
    "start prints its URL (export DATABASE_URL=$(pgcast embedded start)); "
    "status says whether it runs; stop stops it."
)


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    embedded = commands.add_parser(
        "embedded",
        help="start, show or stop the embedded PostgreSQL",
        description=DESCRIPTION,
    )
    embedded.add_argument(
        "action", choices=["start", "status", "stop"], metavar="start|status|stop"
    )


async def cmd_embedded(args: argparse.Namespace) -> int:
    if args.action == "start":
        dsn, started = await asyncio.to_thread(start_embedded)
        note = "started" if started else "already running"
        print(
            f"pgcast: embedded PostgreSQL {note}; `pgcast embedded stop` stops it", file=sys.stderr
        )
        print(dsn)
        return EXIT_OK
    if args.action == "stop":
        stopped = await asyncio.to_thread(stop_embedded)
        print(
            "stopped the embedded PostgreSQL"
            if stopped
            else "the embedded PostgreSQL was not running"
        )
        return EXIT_OK
    status = await asyncio.to_thread(embedded_status)
    if status.running:
        print(f"embedded PostgreSQL: running on port {status.port}")
        print(f"  url:  {status.dsn}")
    elif status.initialised:
        print("embedded PostgreSQL: not running (`pgcast embedded start` starts it)")
    else:
        print("embedded PostgreSQL: not created yet (`pgcast embedded start` creates it)")
    print(f"  data: {status.data_dir if status.initialised else default_data_dir()}")
    print(f"  psql: {psql_path()}")
    return EXIT_OK if status.running else EXIT_NOT_RUNNING
