"""The ``pgcast`` command line: serve, track, untrack, status, listen, prune.

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
import urllib.request
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from . import __version__, event_loop
from .capture import installer
from .capture.wal_status import explain_wal, wal_report
from .config import Settings, load_settings
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pgcast", description="Stream PostgreSQL row changes to browsers and services."
    )
    parser.add_argument("--version", action="version", version=f"pgcast {__version__}")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        help="text (default) or json: one JSON object per line (or PGCAST_LOG_FORMAT)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the gateway (WebSocket /ws, /health)")
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
    serve.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=argparse.SUPPRESS,
        help="text (default) or json: one JSON object per log line (or PGCAST_LOG_FORMAT)",
    )

    track = commands.add_parser("track", help="capture changes of tables")
    _add_database_options(track)
    track.add_argument("tables", nargs="+", type=_table, metavar="TABLE")
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

    untrack = commands.add_parser("untrack", help="stop capturing changes of tables")
    _add_database_options(untrack)
    untrack.add_argument("tables", nargs="+", type=_table, metavar="TABLE")

    status = commands.add_parser("status", help="tracked tables, log size, listener health")
    _add_database_options(status)
    status.add_argument("--json", action="store_true", help="print one JSON object")
    status.add_argument("--url", help="also ask a running gateway for /health (http://host:port)")

    prune = commands.add_parser("prune", help="delete old change log rows")
    _add_database_options(prune)
    prune.add_argument("--older-than", help="age such as 7d, 12h (default: the retention setting)")
    prune.add_argument("--keep-last", type=int, help="keep only the newest N rows")

    demo = commands.add_parser(
        "demo", help="a live orders app on an embedded PostgreSQL, in one command"
    )
    demo.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    demo.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    demo.add_argument("--open", action="store_true", help="open the page in a browser")
    demo.add_argument("--database-url", help="use this database instead of the embedded PostgreSQL")

    listen = commands.add_parser("listen", help="print changes of a table (or a raw channel)")
    listen.add_argument("target", metavar="TABLE|CHANNEL")
    listen.add_argument("--url", default="ws://127.0.0.1:8000", help="gateway URL")
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


async def cmd_status(args: argparse.Namespace) -> int:
    from .pgbouncer import check_listen

    settings = _settings(args)
    dsn = await asyncio.to_thread(resolve_database_url, settings)
    # No statement cache: status must also work through a transaction-mode pooler,
    # so that it can say why LISTEN does not.
    conn = await _connect(settings, dsn, statement_cache_size=0)
    try:
        tables = await installer.tracked_tables(conn)
        stats = await installer.log_stats(conn)
        listeners = await conn.fetch(
            "SELECT pid, client_addr::text AS addr, backend_start, state "
            "FROM pg_stat_activity WHERE application_name = 'pgcast-listener' "
            "AND datname = current_database()"
        )
        queue = await conn.fetchval("SELECT pg_notification_queue_usage()")
        wal = await wal_report(conn, [t for t in tables if t.capture == "wal"])
    finally:
        await conn.close()
    listen = await check_listen(dsn)
    report: dict[str, Any] = {
        "tables": [
            {
                "schema": t.schema,
                "table": t.name,
                "primary_key": list(t.primary_key),
                "columns": t.options.columns,
                "when_changed": t.options.when_changed,
                "skip_unchanged": t.options.skip_unchanged,
                "changes": t.changes,
                "capture": t.capture,
            }
            for t in tables
        ],
        "wal": wal,
        "log": {
            "rows": stats.rows,
            "first_id": stats.first_id,
            "last_id": stats.last_id,
            "bytes": stats.bytes,
            "pruned_through": stats.pruned_through,
        },
        "listeners": [
            {
                "pid": r["pid"],
                "client": r["addr"],
                "state": r["state"],
                "since": r["backend_start"].isoformat(),
            }
            for r in listeners
        ],
        "notification_queue_usage": queue,
        "listen_notify": listen.as_dict(),
    }
    if args.url:
        report["gateway"] = await asyncio.to_thread(_fetch_health, args.url)
    code = EXIT_ERROR if listen.broken else EXIT_OK
    if args.json:
        print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
        return code
    print(f"tracked tables: {len(tables)}")
    for t in report["tables"]:
        mode = "  capture: wal" if t["capture"] == "wal" else ""
        print(f"  {TableName(t['schema'], t['table'])}  changes in log: {t['changes']}{mode}")
    print(explain_wal(wal))
    log = report["log"]
    print(
        f"change log: {log['rows']} rows, {log['bytes']} bytes, "
        f"ids {log['first_id']}..{log['last_id']}"
        f" (pruned through {log['pruned_through']})"
    )
    print(
        f"gateway LISTEN connections: {len(listeners)}"
        + "".join(
            f"\n  pid {r['pid']} from {r['client']} since {r['since']}" for r in report["listeners"]
        )
    )
    print(f"notification queue usage: {queue:.1%}")
    print(listen.explain())
    if "gateway" in report:
        print(f"gateway health: {orjson.dumps(report['gateway']).decode()}")
    return code


def _fetch_health(url: str) -> Any:
    base = url.replace("ws://", "http://").replace("wss://", "https://").rstrip("/")
    if base.endswith("/ws"):
        base = base[:-3]
    if not base.startswith(("http://", "https://")):
        raise PgcastError(f"--url {url!r} must start with http:// or ws://")
    try:
        with urllib.request.urlopen(base + "/health", timeout=5) as response:  # noqa: S310
            return orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        return orjson.loads(exc.read())
    except OSError as exc:
        return {"status": "unreachable", "error": str(exc)}


async def cmd_prune(args: argparse.Namespace) -> int:
    flags: dict[str, Any] = {}
    if args.older_than is not None:
        flags["retention"] = args.older_than
    settings = _settings(args, **flags)
    if args.keep_last is not None and args.keep_last < 0:
        raise PgcastError("--keep-last must not be negative")
    conn = await _connect(settings)
    try:
        older = settings.retention if args.keep_last is None or args.older_than else None
        removed = await installer.prune(conn, older_than=older, keep_last=args.keep_last)
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
    from .embedded import ensure_embedded, psql_path

    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port} is not a valid port (0-65535)")
    # The demo never touches a configured database unless asked to explicitly.
    dsn = args.database_url or await asyncio.to_thread(ensure_embedded)
    psql = None if args.database_url else str(psql_path())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await run_demo(
            dsn, host=args.host, port=args.port, open_browser=args.open, psql=psql, stop=stop
        )
    except OSError as exc:
        raise PgcastError(f"cannot start the demo: {exc}", hint="try --port 8001") from None
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
    "status": cmd_status,
    "prune": cmd_prune,
    "listen": cmd_listen,
    "demo": cmd_demo,
}


def _log_format(args: argparse.Namespace) -> str:
    chosen: str | None = getattr(args, "log_format", None)
    return chosen or os.environ.get("PGCAST_LOG_FORMAT") or "text"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    log_format = _log_format(args)
    if log_format not in LOG_FORMATS:
        parser.error(f"PGCAST_LOG_FORMAT={log_format!r} is not one of {', '.join(LOG_FORMATS)}")
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


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
