"""``pgcast uninstall``: drop everything pgcast installed in the database.

Destructive (the change log goes with the schema), so it refuses without ``--yes``
and says, in one line, what it would drop.
"""

from __future__ import annotations

import argparse

from .capture.uninstall import footprint, uninstall

EXIT_OK, EXIT_USAGE = 0, 2

DETAILS = (
    "Drops the capture triggers of every tracked table, the WAL publication and "
    "replication slot, restores the REPLICA IDENTITY of WAL tables and drops the pgcast "
    "schema with its change log. Stop the gateways first. Needs --yes."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--yes", action="store_true", help="really drop (without it, only say what would go)"
    )


async def cmd_uninstall(args: argparse.Namespace) -> int:
    from .cli import _connect, _settings  # the CLI's own helpers (cli imports this module)

    conn = await _connect(_settings(args))
    try:
        if not args.yes:
            found = await footprint(conn)
            if found.empty:
                print("pgcast is not installed in this database: nothing to drop")
                return EXIT_OK
            print(f"pgcast: refusing to uninstall without --yes; it would drop: {found.describe()}")
            return EXIT_USAGE
        dropped = await uninstall(conn)
    finally:
        await conn.close()
    if dropped.empty:
        print("pgcast is not installed in this database: nothing to drop")
    else:
        print(f"uninstalled pgcast: dropped {dropped.describe()}")
    return EXIT_OK
