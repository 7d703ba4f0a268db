"""The pure parts of schema tracking: typed filter checks, rule checks, table_gone."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

import pgcast.catalog
from pgcast.auth import parse_rules
from pgcast.catalog import Catalog, Gone, TableInfo
from pgcast.exceptions import FilterError, ProtocolError
from pgcast.filters import parse_filter
from pgcast.protocol import Subscribe
from pgcast.schema_watch import rule_problems
from pgcast.session import Session
from pgcast.session_actions import Forget, Send

TYPES = {"id": "N", "paid": "B", "status": "S"}


@pytest.mark.parametrize(
    "text", ["id=gt.abc", "id=in.(1,x)", "id=eq.1_0", "paid=eq.yes", "id=not.eq.abc"]
)
def test_literal_the_column_type_can_never_equal_is_refused(text: str) -> None:
    with pytest.raises(FilterError, match="cannot be compared"):
        parse_filter(text).check_columns(TYPES, "orders", TYPES)


@pytest.mark.parametrize(
    "text",
    ["id=gt.10", "id=eq.-1.5e3", "id=lt.NaN", "id=is.null", "paid=eq.true", "status=eq.12"],
)
def test_literal_the_column_type_can_equal_is_accepted(text: str) -> None:
    parse_filter(text).check_columns(TYPES, "orders", TYPES)


class FakeCatalog:
    def __init__(self, *infos: TableInfo) -> None:
        self.tables = {(info.schema, info.name): info for info in infos}


def test_rule_problems_name_the_rule_the_table_or_column_and_the_fix() -> None:
    rules = parse_rules(
        {
            "tables": {
                "orders": {"read": "merchant_id = claims.m or (public = true and x = 'y')"},
                "invoices": {"read": "true"},
                "posts": {"read": "id = claims.id"},
            }
        }
    )
    catalog = FakeCatalog(
        TableInfo("public", "orders", frozenset({"id", "public"})),
        TableInfo("public", "posts", frozenset({"id"})),
    )
    problems = rule_problems(rules, catalog)  # type: ignore[arg-type]
    assert len(problems) == 3, problems
    assert any("'merchant_id'" in p and "public.orders" in p for p in problems)
    assert any("'x'" in p and "public.orders" in p for p in problems)
    assert any("public.invoices" in p and "pgcast track public.invoices" in p for p in problems)


def test_table_gone_ends_its_subscriptions_only() -> None:
    session = Session(owner=None, max_subscriptions=10)
    session.open(Subscribe("a", table="orders"), schema="public", table="orders")
    session.open(Subscribe("b", table="posts"), schema="public", table="posts")
    gone = Gone("public", "orders", ("public", "purchases"))
    actions = session.table_gone("public", "orders", gone.reason())
    assert list(session.subscriptions) == ["b"]
    assert isinstance(actions[0], Forget) and actions[0].sub.id == "a"
    assert isinstance(actions[1], Send)
    message = orjson.loads(actions[1].payload)
    assert message["code"] == "table_gone" and message["id"] == "a"
    assert "renamed to 'public.purchases'" in message["message"]


class FakeConnection:
    def __init__(self, pool: FakePool) -> None:
        self.pool = pool

    async def fetchval(self, query: str) -> bool:
        return False

    async def fetch(self, query: str) -> list[dict[str, Any]]:
        self.pool.queries += 1
        return []


class FakePool:
    def __init__(self) -> None:
        self.queries = 0

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[FakeConnection]:
        yield FakeConnection(self)


async def test_a_flood_of_unknown_names_costs_one_reload_per_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pgcast.catalog, "CATALOG_REFRESH_MIN", 0.2)
    pool = FakePool()
    catalog = Catalog(pool)
    started = time.monotonic()
    for _ in range(3):  # three waves of 100 concurrent misses
        results = await asyncio.gather(
            *(catalog.resolve(None, f"t{i}") for i in range(100)), return_exceptions=True
        )
        assert all(isinstance(r, ProtocolError) for r in results)
    elapsed = time.monotonic() - started
    assert pool.queries <= 1 + elapsed / 0.2 + 1, (pool.queries, elapsed)
    assert pool.queries <= 4
