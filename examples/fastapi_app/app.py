"""A FastAPI app with pgcast mounted at /realtime and an audit hook.

Run: DATABASE_URL=postgresql://... uvicorn app:app  (from this directory)
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from fastapi import FastAPI
from pydantic import BaseModel

import pgcast
from pgcast.capture.installer import track
from pgcast.identifiers import parse_table_name

DATABASE_URL = os.environ["DATABASE_URL"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    id serial PRIMARY KEY, customer text NOT NULL, amount int NOT NULL,
    status text NOT NULL DEFAULT 'new');
CREATE TABLE IF NOT EXISTS audit_log (
    id serial PRIMARY KEY, change_id bigint UNIQUE, op text, order_id int, at timestamptz);
"""

realtime = pgcast.asgi_app(dsn=DATABASE_URL)
db: Any = None  # the app's own pool, opened in lifespan


@realtime.on_change("orders")
async def audit(change: dict[str, Any]) -> None:
    """Runs for every committed change of orders, whoever made it (this API, psql...)."""
    row = change["record"] or change["old_record"] or {}
    await db.execute(
        "INSERT INTO audit_log (change_id, op, order_id, at) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (change_id) DO NOTHING",  # several nodes run the hook: write once
        int(change["id"]),
        change["op"],
        row.get("id"),
        _timestamp(change["committed_at"]),
    )


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    global db
    db = await asyncpg.create_pool(DATABASE_URL, min_size=1, max_size=4)
    async with db.acquire() as conn:
        await conn.execute(SCHEMA)
        await track(conn, parse_table_name("orders"))  # idempotent; or `pgcast track orders`
    try:
        # Starlette does not pass lifespan events to mounted apps: run pgcast's here.
        async with realtime.lifespan(app):
            yield
    finally:
        await db.close()


app = FastAPI(lifespan=lifespan)
app.mount("/realtime", realtime)  # ws://host/realtime/ws, /realtime/health, /realtime/metrics


class NewOrder(BaseModel):
    customer: str
    amount: int


@app.post("/orders", status_code=201)
async def create_order(order: NewOrder) -> dict[str, Any]:
    row = await db.fetchrow(
        "INSERT INTO orders (customer, amount) VALUES ($1, $2) RETURNING *",
        order.customer,
        order.amount,
    )
    return dict(row)


@app.get("/audit")
async def audit_log() -> list[dict[str, Any]]:
    rows = await db.fetch("SELECT change_id, op, order_id FROM audit_log ORDER BY change_id")
    return [dict(r) for r in rows]


def _timestamp(text: str) -> Any:
    from datetime import datetime

    return datetime.fromisoformat(text)
