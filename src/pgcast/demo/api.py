"""The demo's REST API for orders: ``GET/POST /api/orders``, ``GET/PUT/DELETE /api/orders/{id}``.

Handlers validate everything a client sends and answer clear 4xx errors as JSON
(``{"error": "..."}``); values reach SQL only as parameters.

Writes come only from the demo's own page: a browser lets any site POST a form or a
``text/plain`` body to this API without asking (cross-site request forgery), so a
write must carry ``Content-Type: application/json`` (which a foreign page can only
send after a CORS preflight this API never grants) and, when the browser names its
``Origin``, that origin must be the API's own host.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import orjson

from ..changelog import DATABASE_ERRORS

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS orders (
    id serial PRIMARY KEY,
    customer_name text NOT NULL,
    product_name text NOT NULL,
    status text NOT NULL DEFAULT 'pending',
    updated_at timestamptz NOT NULL DEFAULT now()
)
"""

STATUSES = ("pending", "processing", "shipped", "delivered", "cancelled")
FIELDS = ("customer_name", "product_name", "status")
MAX_TEXT = 200
_ITEM = re.compile(r"/api/orders/([0-9]{1,9})")
_COLUMNS = "id, customer_name, product_name, status, updated_at"
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

Reply = tuple[int, Any]


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _row(record: Any) -> dict[str, Any]:
    row = dict(record)
    row["updated_at"] = row["updated_at"].isoformat()
    return row


def _validate(body: bytes, *, partial: bool) -> dict[str, str]:
    try:
        data = orjson.loads(body or b"null")
    except orjson.JSONDecodeError:
        raise ApiError(400, "body must be a JSON object") from None
    if not isinstance(data, dict):
        raise ApiError(400, "body must be a JSON object")
    unknown = sorted(set(data) - set(FIELDS) - {"id", "updated_at"})
    if unknown:
        raise ApiError(400, f"unknown fields: {', '.join(unknown)}; allowed: {', '.join(FIELDS)}")
    values: dict[str, str] = {}
    for name in FIELDS:
        if name not in data:
            continue
        value = data[name]
        if not isinstance(value, str) or not value.strip():
            raise ApiError(400, f"{name} must be a non-empty string")
        if "\x00" in value:
            raise ApiError(400, f"{name} must not contain NUL (\\u0000)")
        if len(value) > MAX_TEXT:
            raise ApiError(400, f"{name} must be at most {MAX_TEXT} characters")
        values[name] = value.strip()
    if "status" in values and values["status"] not in STATUSES:
        raise ApiError(400, f"status must be one of {', '.join(STATUSES)}")
    if not partial:
        missing = [name for name in ("customer_name", "product_name") if name not in values]
        if missing:
            raise ApiError(400, f"missing fields: {', '.join(missing)}")
    elif not values:
        raise ApiError(400, f"nothing to update; send some of {', '.join(FIELDS)}")
    return values


def check_write(method: str, body: bytes, headers: Iterable[tuple[str, str]]) -> None:
    """Refuse a write a foreign page could have sent (see the module docstring)."""
    if method not in WRITE_METHODS:
        return
    found: dict[str, list[str]] = {}
    for name, value in headers:
        found.setdefault(name.lower(), []).append(value.strip())
    origins = found.get("origin", [])
    if origins:
        hosts = found.get("host", [])
        try:
            parts = urlsplit(origins[0])
            origin_host = parts.netloc.lower() if parts.scheme in ("http", "https") else None
        except ValueError:
            origin_host = None
        if len(origins) > 1 or len(hosts) != 1 or origin_host != hosts[0].lower():
            raise ApiError(403, "cross-origin writes are not allowed: Origin is not this host")
    if body or method != "DELETE":
        content_types = found.get("content-type", [])
        media_type = content_types[0].partition(";")[0].strip().lower() if content_types else ""
        if len(content_types) != 1 or media_type != "application/json":
            raise ApiError(415, "send the body as JSON with Content-Type: application/json")


async def handle(
    pool: Any, method: str, path: str, body: bytes, headers: Iterable[tuple[str, str]]
) -> Reply | None:
    """Answer an ``/api/orders`` request, or None if ``path`` is not the API's."""
    try:
        if path.startswith("/api/"):
            check_write(method, body, headers)
        if path in ("/api/orders", "/api/orders/"):
            return await _collection(pool, method, body)
        match = _ITEM.fullmatch(path)
        if match:
            return await _item(pool, method, int(match.group(1)), body)
        if path.startswith("/api/"):
            raise ApiError(404, f"no such resource: {path[:100]}")
        return None
    except ApiError as exc:
        return exc.status, {"error": exc.message}
    except DATABASE_ERRORS as exc:
        return 503, {"error": f"database unavailable: {exc}"}


async def _collection(pool: Any, method: str, body: bytes) -> Reply:
    if method == "GET":
        rows = await pool.fetch(f"SELECT {_COLUMNS} FROM orders ORDER BY id")
        return 200, [_row(r) for r in rows]
    if method == "POST":
        values = _validate(body, partial=False)
        row = await pool.fetchrow(
            f"INSERT INTO orders (customer_name, product_name, status) "
            f"VALUES ($1, $2, $3) RETURNING {_COLUMNS}",
            values["customer_name"],
            values["product_name"],
            values.get("status", "pending"),
        )
        return 201, _row(row)
    raise ApiError(405, f"{method} not allowed on /api/orders; use GET or POST")


async def _item(pool: Any, method: str, order_id: int, body: bytes) -> Reply:
    if method == "GET":
        row = await pool.fetchrow(f"SELECT {_COLUMNS} FROM orders WHERE id = $1", order_id)
    elif method in ("PUT", "PATCH"):
        values = _validate(body, partial=True)
        assignments = ", ".join(f"{name} = ${i}" for i, name in enumerate(values, start=2))
        row = await pool.fetchrow(
            f"UPDATE orders SET {assignments}, updated_at = now() "
            f"WHERE id = $1 RETURNING {_COLUMNS}",
            order_id,
            *values.values(),
        )
    elif method == "DELETE":
        deleted = await pool.fetchval("DELETE FROM orders WHERE id = $1 RETURNING id", order_id)
        if deleted is None:
            raise ApiError(404, f"order {order_id} not found")
        return 204, None
    else:
        raise ApiError(405, f"{method} not allowed on /api/orders/{{id}}; use GET, PUT or DELETE")
    if row is None:
        raise ApiError(404, f"order {order_id} not found")
    return 200, _row(row)
