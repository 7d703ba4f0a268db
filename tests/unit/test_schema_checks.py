"""The pure parts of schema tracking: typed filter checks, rule checks, table_gone."""

from __future__ import annotations

import orjson
import pytest

from pgcast.auth import parse_rules
from pgcast.catalog import Gone, TableInfo
from pgcast.exceptions import FilterError
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
