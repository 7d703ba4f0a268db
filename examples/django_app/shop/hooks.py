"""Server-side pgcast hooks: app logic that runs for each committed change."""

from __future__ import annotations

from typing import Any

from django.db import close_old_connections

from pgcast.asgi import PgcastASGI

from .models import AuditEntry


def register(realtime: PgcastASGI) -> None:
    @realtime.on_change("orders")
    def audit(change: dict[str, Any]) -> None:
        # A plain `def` hook runs in a worker thread, so the (sync) ORM is allowed here.
        row = change["record"] or change["old_record"] or {}
        try:
            # Idempotent on the change id: every gateway process runs the hook.
            AuditEntry.objects.get_or_create(
                change_id=int(change["id"]),
                defaults={"op": change["op"], "order_id": row.get("id")},
            )
        finally:
            close_old_connections()  # hook threads are not requests: release the connection
