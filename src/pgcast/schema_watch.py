"""Schema changes while the gateway runs, and rules checked against the schema at start.

The catalog (pgcast.catalog) is reloaded every CATALOG_REFRESH_EVERY seconds: a
column added, dropped or renamed is then what subscribe checks and snapshots use,
and the subscribers of a table that was renamed or dropped get a ``table_gone``
error naming what happened (their subscription is ended: nothing more would come).

At start, every ``[rules.tables]`` rule is checked against the tracked tables: a rule
for a table that is not tracked, or naming a column the table lacks, would make its
readers receive nothing without a word, so each problem is logged as one warning.
Not fatal: a table may be tracked (or a column added) after the gateway started.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from . import catalog as catalog_module
from .changelog import DATABASE_ERRORS

if TYPE_CHECKING:
    from .auth import Rules
    from .catalog import Catalog
    from .connections import Connections

__all__ = ["rule_problems", "watch_catalog"]

logger = logging.getLogger("pgcast.server")


def rule_problems(rules: Rules, catalog: Catalog) -> list[str]:
    """One line per rule naming a table that is not tracked or a column it lacks."""
    problems: list[str] = []
    for key in rules.tables:
        shown = ".".join(key)
        info = catalog.tables.get(key)
        if info is None:
            problems.append(
                f"[rules.tables.{shown!r}] names table {shown} which is not tracked: its "
                f"readers receive nothing until it is (run: pgcast track {shown}, or fix the "
                "rule's table name)"
            )
            continue
        for column in sorted(rules.columns(key) - info.columns):
            problems.append(
                f"[rules.tables.{shown!r}] names column {column!r} which table {shown} does "
                f"not have (columns: {', '.join(sorted(info.columns))}): the rule matches no "
                "row until the column exists; fix the rule or add the column"
            )
    return problems


async def check_rules(rules: Rules, catalog: Catalog) -> list[str]:
    """Load the catalog and log each rule problem as a warning; return them."""
    if not rules.tables:
        return []
    try:
        await catalog.refresh()
    except DATABASE_ERRORS as exc:
        logger.warning("cannot check [rules] against the tracked tables: %s", exc)
        return []
    problems = rule_problems(rules, catalog)
    for problem in problems:
        logger.warning("%s", problem)
    return problems


async def watch_catalog(catalog: Catalog, connections: Connections) -> None:
    """Reload the catalog periodically; end the subscriptions of tables gone."""
    while True:
        await asyncio.sleep(catalog_module.CATALOG_REFRESH_EVERY)
        try:
            await catalog.refresh()
        except DATABASE_ERRORS as exc:
            logger.warning("catalog refresh failed: %s", exc)
        # Also what a subscribe's reload found: that one has no one to tell.
        for table in catalog.take_gone():
            ended = await connections.table_gone(table)
            logger.info("%s; %d subscription(s) ended", table.reason(), ended)
