"""The ``pgcast`` command line: serve, track, untrack, status, listen, prune, uninstall.

Database settings come from ``--database-url``, ``PGCAST_DATABASE_URL``,
``DATABASE_URL``, then ``pgcast.toml``; with none, an embedded PostgreSQL in a
per-user data directory is started on demand (see docs/configuration.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import asyncpg

from . import __version__, cli_embedded, cli_status, cli_uninstall, event_loop
from .capture import installer, retention
from .config import Settings, load_settings, parse_setting
from .embedded import resolve_database_url
from .exceptions import ConfigError, PgcastError
from .identifiers import TableName, parse_table_name, validate_column_name
from .logs import LOG_FORMATS, configure_logging

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


def _columns(text: str) -> tuple[str, ...]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected a comma-separated list of column names")
    try:
        return tuple(validate_column_name(name) for name in names)
    except PgcastError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _table(text: str) -> TableName:
    try:
        return parse_table_name(text)
    except PgcastError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _since(text: str) -> str:
    if not (text.isascii() and text.isdigit() and len(text) <= 19):
        raise argparse.ArgumentTypeError(f"{text!r} is not a change id (a non-negative integer)")
    return text


def _add_database_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        help="PostgreSQL URL (default: PGCAST_DATABASE_URL, "
        "DATABASE_URL, pgcast.toml, else an embedded PostgreSQL)",
    )
    parser.add_argument("--config", type=Path, help="path of a pgcast.toml file")


TABLE_HELP = (
    "a table name: orders, a schema-qualified audit.events, or '\"Booking\"' "
    "(double quotes keep upper case)"
)
LOG_LEVELS = ["debug", "info", "warning", "error"]


def _add_logging_options(parser: argparse.ArgumentParser, default: Any) -> None:
    # On the top-level parser and on every subcommand (`pgcast serve --log-level debug`);
    # SUPPRESS on the subcommands keeps a value given before the subcommand.
    parser.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default=default,
        help="debug also prints tracebacks (default: info)",
    )
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=default,
        help="text (default) or json: one JSON object per log line (or PGCAST_LOG_FORMAT)",
    )


class _Commands:
    """add_parser with a description (the help line) and the logging options."""

    def __init__(self, commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
        self.commands = commands

    def add(self, name: str, help: str, details: str = "") -> argparse.ArgumentParser:
        description = help[0].upper() + help[1:] + "." + (f" {details}" if details else "")
        parser = self.commands.add_parser(name, help=help, description=description)
        _add_logging_options(parser, argparse.SUPPRESS)
        return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pgcast",
        description="Stream PostgreSQL row changes to browsers and services.",
        epilog="Start with `pgcast demo`; `pgcast COMMAND --help` describes a command.",
    )
    parser.add_argument("--version", action="version", version=f"pgcast {__version__}")
    _add_logging_options(parser, None)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands = _Commands(subparsers)

    serve = commands.add(
        "serve",
        "run the gateway (WebSocket /ws, SSE /sse, /health, the JS client at /js/)",
        "Waits for the database if it is not reachable yet; Ctrl-C stops it.",
    )
    _add_database_options(serve)
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default 8000)")
    serve.add_argument("--channels", help="allowed raw NOTIFY channel patterns, comma-separated")
    serve.add_argument(
        "--trusted-proxies",
        help="proxy addresses or networks, comma-separated, whose X-Forwarded-For / "
        "Forwarded header names the client (or PGCAST_TRUSTED_PROXIES)",
    )
    serve.add_argument(
        "--jwt-secret", help="HS256 secret tokens are signed with (or PGCAST_JWT_SECRET)"
    )
    serve.add_argument(
        "--anonymous",
        action="store_true",
        help="let clients without a token in (their reads still follow the [rules])",
    )

    track = commands.add(
        "track",
        "capture changes of tables",
        "Installs pgcast's schema if needed and a capture trigger on each TABLE "
        "(idempotent: run it again to change the options).",
    )
    _add_database_options(track)
    track.add_argument("tables", nargs="+", type=_table, metavar="TABLE", help=TABLE_HELP)
    track.add_argument("--columns", type=_columns, help="log only these columns (plus the key)")
    track.add_argument(
        "--when-changed",
        type=_columns,
        metavar="COLUMNS",
        help="log an UPDATE only when one of these columns changed",
    )
    track.add_argument(
        "--capture",
        choices=["trigger", "wal"],
        help="trigger (default) or wal: decode changes from the WAL, no triggers "
        "(needs wal_level = logical; default: the capture setting)",
    )
    track.add_argument(
        "--skip-unchanged",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="drop UPDATEs that change nothing (default: on)",
    )

    untrack = commands.add(
        "untrack", "stop capturing changes of tables", "Removes the capture trigger of each TABLE."
    )
    _add_database_options(untrack)
    untrack.add_argument("tables", nargs="+", type=_table, metavar="TABLE", help=TABLE_HELP)

    status = commands.add("status", "show tracked tables, log size, listener health")
    _add_database_options(status)
    status.add_argument("--json", action="store_true", help="print one JSON object")
    status.add_argument("--url", help="also ask a running gateway for /health (http://host:port)")

    prune = commands.add(
        "prune",
        "delete old change log rows",
        "Clients that resume from a pruned position are told to refetch (resync).",
    )
    _add_database_options(prune)
    prune.add_argument(
        "--older-than",
        help="age such as 7d, 12h, 30m or 1d12h (default: the retention setting, 7d)",
    )
    prune.add_argument("--keep-last", type=int, help="keep only the newest N rows")

    uninstall = commands.add(
        "uninstall", "drop everything pgcast installed in the database", cli_uninstall.DETAILS
    )
    _add_database_options(uninstall)
    cli_uninstall.add_arguments(uninstall)

    demo = commands.add(
        "demo",
        "run a live orders app on an embedded PostgreSQL, in one command",
        "Ctrl-C stops it, and the embedded PostgreSQL too if the demo started it.",
    )
    demo.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    demo.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    demo.add_argument("--open", action="store_true", help="open the page in a browser")
    demo.add_argument("--database-url", help="use this database instead of the embedded PostgreSQL")

    listen = commands.add(
        "listen",
        "print changes of a table (or a raw channel) from a running gateway",
        "Needs `pgcast serve` running at --url; reconnects and resumes by itself.",
    )
    listen.add_argument(
        "target", metavar="TABLE|CHANNEL", help=TABLE_HELP + "; with --channel a NOTIFY channel"
    )
    listen.add_argument(
        "--url",
        default=os.environ.get("PGCAST_URL") or "ws://127.0.0.1:8000",
        help="gateway URL (default: PGCAST_URL, else ws://127.0.0.1:8000)",
    )
    listen.add_argument("--filter", help="e.g. 'status=eq.pending&amount=gt.100'")
    listen.add_argument("--since", type=_since, help="resume after this change id")
    listen.add_argument(
        "--events",
        type=lambda s: [e.strip().upper() for e in s.split(",")],
        help="comma-separated: INSERT,UPDATE,DELETE,TRUNCATE",
    )
    listen.add_argument("--channel", action="store_true", help="TARGET is a raw NOTIFY channel")
    listen.add_argument("--json", action="store_true", help="one JSON object per line")
    listen.add_argument("--token", help="access token")
    listen.add_argument("--max-events", type=int, help="exit after this many events")

    cli_embedded.add_parser(subparsers)
    return parser


def _settings(args: argparse.Namespace, **flags: Any) -> Settings:
    flags["database_url"] = getattr(args, "database_url", None)
    flags["log_level"] = args.log_level
    return load_settings(flags, config_file=getattr(args, "config", None))


async def _connect(settings: Settings, dsn: str | None = None, **kwargs: Any) -> Any:
    if dsn is None:
        dsn = await asyncio.to_thread(resolve_database_url, settings)
    try:
        return await asyncpg.connect(dsn, **kwargs)
    except (OSError, asyncpg.PostgresError) as exc:
        raise PgcastError(
            f"cannot connect to PostgreSQL: {exc}", hint="check --database-url / DATABASE_URL"
        ) from None


async def cmd_track(args: argparse.Namespace) -> int:
    settings = _settings(args, capture=args.capture)
    options = installer.TrackOptions(
        columns=args.columns, when_changed=args.when_changed, skip_unchanged=args.skip_unchanged
    )
    conn = await _connect(settings)
    try:
        for table in args.tables:
            tracked = await installer.track(conn, table, options, capture=settings.capture)
            key = ", ".join(tracked.primary_key) or "none: events carry whole rows"
            mode = ", capture: wal" if tracked.capture == "wal" else ""
            print(f"tracking {tracked.table} (primary key: {key}{mode})")
    finally:
        await conn.close()
    return EXIT_OK


async def cmd_untrack(args: argparse.Namespace) -> int:
    conn = await _connect(_settings(args))
    try:
        for table in args.tables:
            removed = await installer.untrack(conn, table)
            print(f"{'untracked' if removed else 'was not tracked:'} {table}")
    finally:
        await conn.close()
    return EXIT_OK


async def cmd_prune(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if args.older_than is not None:
        older_than = parse_setting("retention", args.older_than, "--older-than")
    if args.keep_last is not None and args.keep_last < 0:
        raise PgcastError("--keep-last must not be negative")
    conn = await _connect(settings)
    try:
        older = settings.retention if args.keep_last is None else None
        if args.older_than is not None:
            older = older_than
        removed = await retention.prune(conn, older_than=older, keep_last=args.keep_last)
    finally:
        await conn.close()
    print(f"pruned {removed} change log rows")
    return EXIT_OK


async def cmd_serve(args: argparse.Namespace) -> int:
    from .auth import load_auth_config
    from .pgbouncer import warn_if_broken
    from .server import serve

    settings = _settings(
        args,
        host=args.host,
        port=args.port,
        channels=args.channels,
        trusted_proxies=args.trusted_proxies,
    )
    auth = load_auth_config(
        {"jwt_secret": args.jwt_secret, "anonymous": True if args.anonymous else None},
        config_file=args.config,
    )
    if warning := auth.warning():
        logging.getLogger("pgcast.auth").warning(warning)
    dsn = await asyncio.to_thread(resolve_database_url, settings)
    # PgBouncer in transaction mode silently breaks LISTEN: say so before serving.
    await warn_if_broken(dsn)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def ready(gateway: Any) -> None:
        line = (
            f"pgcast {__version__} serving ws://{settings.host}:{gateway.port}/ws "
            f"(health: http://{settings.host}:{gateway.port}/health)"
        )
        if _log_format(args) == "json":
            logging.getLogger("pgcast.cli").info("%s", line)
        else:
            print(line, file=sys.stderr, flush=True)

    try:
        await serve(settings, dsn, stop=stop, on_ready=ready, auth=auth)
    except OSError as exc:  # binding --host/--port (database errors are PgcastErrors)
        raise PgcastError(
            f"cannot start the gateway: {exc}", hint="choose a free --port and a local --host"
        ) from None
    return EXIT_OK


async def cmd_demo(args: argparse.Namespace) -> int:
    from .demo.server import run_demo
    from .embedded import psql_path, start_embedded, stop_embedded

    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port} is not a valid port (0-65535)")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # The demo never touches a configured database unless asked to explicitly.
    started = False
    if args.database_url:
        dsn = args.database_url
    else:
        dsn, started = await asyncio.to_thread(start_embedded)
    psql = None if args.database_url else str(psql_path())
    try:
        await run_demo(
            dsn, host=args.host, port=args.port, open_browser=args.open, psql=psql, stop=stop
        )
    except OSError as exc:
        raise PgcastError(f"cannot start the demo: {exc}", hint="try --port 8001") from None
    finally:
        if started:  # the demo leaves no PostgreSQL behind that it started itself
            await asyncio.to_thread(stop_embedded)
            print("pgcast demo: stopped the embedded PostgreSQL", file=sys.stderr, flush=True)
    return EXIT_OK


async def cmd_listen(args: argparse.Namespace) -> int:
    from .client.listen import listen

    return await listen(
        args.url,
        args.target,
        filter=args.filter,
        since=args.since,
        events=args.events,
        json_lines=args.json,
        token=args.token,
        channel=args.channel,
        max_events=args.max_events,
    )


COMMANDS: dict[str, Callable[[argparse.Namespace], Coroutine[Any, Any, int]]] = {
    "serve": cmd_serve,
    "track": cmd_track,
    "untrack": cmd_untrack,
    "status": cli_status.cmd_status,
    "prune": cmd_prune,
    "listen": cmd_listen,
    "demo": cmd_demo,
    "embedded": cli_embedded.cmd_embedded,
    "uninstall": cli_uninstall.cmd_uninstall,
}


def _log_format(args: argparse.Namespace) -> str:
    chosen: str | None = getattr(args, "log_format", None)
    return chosen or os.environ.get("PGCAST_LOG_FORMAT") or "text"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # bare `pgcast`: the commands, not just a usage line
        parser.print_help(sys.stderr)
        print("pgcast: error: a command is required (see the list above)", file=sys.stderr)
        return EXIT_USAGE
    log_format = _log_format(args)
    if log_format not in LOG_FORMATS:
        parser.error(f"PGCAST_LOG_FORMAT={log_format!r} is not one of {', '.join(LOG_FORMATS)}")
    debug = args.log_level == "debug"
    configure_logging(args.log_level or "info", log_format)
    try:
        return event_loop.run(COMMANDS[args.command](args), serving=args.command == "serve")
    except PgcastError as exc:
        print(f"pgcast: error: {exc}", file=sys.stderr)
        return (
            EXIT_USAGE if type(exc).__name__ in ("ConfigError", "IdentifierError") else EXIT_ERROR
        )
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `pgcast status --json | head`: the reader left; what was left to print can go.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:
        if debug:
            raise
        print(
            f"pgcast: error: unexpected {type(exc).__name__}: {' '.join(str(exc).split())} "
            "(rerun with --log-level debug for the traceback, and please report it)",
            file=sys.stderr,
        )
        return EXIT_ERROR


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
