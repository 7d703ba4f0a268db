"""`pgcast status`: tracked tables, the change log, capture modes and the gateway's health."""

from __future__ import annotations

import argparse
import asyncio
import urllib.error
import urllib.request
from typing import Any

import orjson

from .capture import installer, retention
from .capture.wal_status import explain_wal, wal_report
from .embedded import resolve_database_url
from .exceptions import PgcastError
from .identifiers import TableName

EXIT_OK, EXIT_ERROR = 0, 1


async def cmd_status(args: argparse.Namespace) -> int:
    from .cli import _connect, _settings  # the CLI's own helpers (cli imports this module)
    from .pgbouncer import check_listen

    settings = _settings(args)
    dsn = await asyncio.to_thread(resolve_database_url, settings)
    # No statement cache: status must also work through a transaction-mode pooler,
    # so that it can say why LISTEN does not.
    conn = await _connect(settings, dsn, statement_cache_size=0)
    try:
        tables = await installer.tracked_tables(conn)
        stats = await retention.log_stats(conn)
        listeners = await conn.fetch(
            "SELECT pid, client_addr::text AS addr, backend_start, state, application_name "
            "FROM pg_stat_activity "
            # pgcast-reader: the broker tier's one elected reader (docs/scaling.md)
            "WHERE application_name IN ('pgcast-listener', 'pgcast-reader') "
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
                "role": "broker reader" if r["application_name"] == "pgcast-reader" else "node",
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
        print(
            f"  {TableName(t['schema'], t['table'])}  changes in log: {t['changes']}{_options(t)}"
        )
    print(explain_wal(wal))
    log = report["log"]
    ids = "empty" if log["first_id"] is None else f"ids {log['first_id']}..{log['last_id']}"
    pruned = f", pruned through id {log['pruned_through']}" if log["pruned_through"] else ""
    print(f"change log: {log['rows']} rows, {log['bytes']} bytes, {ids}{pruned}")
    print(
        f"gateway LISTEN connections: {len(listeners)}"
        + "".join(
            f"\n  pid {r['pid']} from {r['client']} since {r['since']} ({r['role']})"
            for r in report["listeners"]
        )
    )
    print(f"notification queue usage: {queue:.1%}")
    print(listen.explain())
    if "gateway" in report:
        print(f"gateway health: {orjson.dumps(report['gateway']).decode()}")
    return code


def _options(table: dict[str, Any]) -> str:
    """The non-default `pgcast track` options of a table, as status shows them."""
    shown = []
    if table["capture"] == "wal":
        shown.append("capture: wal")
    if table["columns"]:
        shown.append(f"columns: {','.join(table['columns'])}")
    if table["when_changed"]:
        shown.append(f"when changed: {','.join(table['when_changed'])}")
    if not table["skip_unchanged"]:
        shown.append("unchanged UPDATEs kept")
    return "".join(f"  {item}" for item in shown)


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
