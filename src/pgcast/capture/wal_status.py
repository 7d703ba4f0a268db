"""What ``pgcast status`` says about WAL capture: availability, the slot, warnings.

A slot nobody consumes keeps WAL without bound (until ``max_slot_wal_keep_size``
invalidates it), so status shows the retained bytes and warns when the slot is
inactive; where WAL mode cannot work it names the setting and the fix.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from pgcast.capture import wal_setup
from pgcast.capture.installer import TrackedTable

__all__ = ["explain_wal", "wal_report"]


async def wal_report(
    conn: asyncpg.Connection, wal_tables: Sequence[TrackedTable]
) -> dict[str, Any]:
    """A JSON-ready summary of WAL capture in the connected database."""
    problems = await wal_setup.wal_problems(conn)
    slot = await wal_setup.slot_status(conn)
    keep = await conn.fetchval("SELECT current_setting('max_slot_wal_keep_size')")
    warnings: list[str] = []
    if slot is not None and not slot.active:
        warnings.append(
            f"replication slot {slot.name} is inactive: no gateway is consuming it, and it "
            f"retains {slot.retained_bytes} bytes of WAL, growing with every write; run "
            "`pgcast serve`, or `pgcast untrack` the WAL tables to drop it"
        )
    if wal_tables and slot is None:
        warnings.append(
            "tables are tracked in WAL mode but the replication slot is missing: their "
            "changes are not captured; run `pgcast track --capture wal` on them again"
        )
    if slot is not None and keep in ("-1", "-1MB"):
        warnings.append(
            "max_slot_wal_keep_size is unlimited: a slot left unconsumed can fill the disk; "
            "set it (e.g. ALTER SYSTEM SET max_slot_wal_keep_size = '10GB')"
        )
    return {
        "available": not problems,
        "problems": [{"message": p.message, "hint": p.hint} for p in problems],
        "tables": len(wal_tables),
        "slot": None if slot is None else slot.as_dict(),
        "max_slot_wal_keep_size": keep,
        "warnings": warnings,
    }


def explain_wal(report: dict[str, Any]) -> str:
    """The human-readable lines of :func:`wal_report`."""
    lines = []
    if report["available"]:
        lines.append("WAL capture: available")
    else:
        lines.append("WAL capture: unavailable")
        lines += [f"  {p['message']} (fix: {p['hint']})" for p in report["problems"]]
    slot = report["slot"]
    if slot is not None:
        state = f"active (pid {slot['active_pid']})" if slot["active"] else "INACTIVE"
        lines.append(
            f"  slot {slot['name']}: {state}, retains {slot['retained_bytes']} bytes of WAL, "
            f"unconfirmed {slot['lag_bytes']} bytes"
            f" (max_slot_wal_keep_size = {report['max_slot_wal_keep_size']})"
        )
    lines += [f"  warning: {w}" for w in report["warnings"]]
    return "\n".join(lines)
