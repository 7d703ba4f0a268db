"""Rules: what may this identity see?

``Rules`` are compiled once from ``[rules]``; ``Rules.bind(identity)`` gives ``Grants``;
a table's bound ``RowRule`` folds claims-only terms to constants and, when it is a
conjunction of equality terms, turns into ``pgcast.filters.Condition`` values the hub
indexes, so authorization costs a hash lookup, not a query per event per subscriber.
Pure.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, Final

from ..channels import CHANNEL_NAME, CHANNEL_PATTERN, MAX_CHANNEL_LENGTH, channel_matches
from ..exceptions import ConfigError, IdentifierError
from ..filters import Condition
from ..identifiers import parse_table_name
from ..topics import TOPIC_NAME, topic_matches, valid_pattern
from .rule_grammar import (
    ClaimPath,
    _And,
    _ClaimLiteral,
    _ColumnClaim,
    _ColumnLiteral,
    _Const,
    _Expr,
    _Or,
    compile_rule,
)
from .tokens import Identity

_MISSING: Final = object()
_TEMPLATE_VALUE = re.compile(r"[A-Za-z0-9_]{1,63}")


def _claim(claims: Mapping[str, Any], path: ClaimPath) -> Any:
    value: Any = claims
    for name in path:
        if not isinstance(value, Mapping):
            return _MISSING
        value = value.get(name, _MISSING)
        if value is _MISSING:
            return _MISSING
    return value


def _literal(value: Any) -> str | None:
    """A claim value as a filter literal, or None when it cannot equal a column value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | Decimal):
        return str(value)  # exact; a Decimal's str is a JSON number ("1E+400")
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else None
    if isinstance(value, str):
        return value
    return None


def _claim_equals(value: Any, literals: tuple[str, ...]) -> bool:
    # Same comparison as a filter (number with number, text with text): a claim is the row.
    items = value if isinstance(value, list) else [value]
    probe = Condition("claim", "in", literals)
    return any(probe.matches({"claim": item}) for item in items)


@dataclasses.dataclass(frozen=True, slots=True)
class _All:
    items: tuple[_Bound, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class _Any:
    items: tuple[_Bound, ...]


_Bound = bool | Condition | _All | _Any


def _bind(expr: _Expr, claims: Mapping[str, Any]) -> _Bound:
    if isinstance(expr, _Const):
        return expr.value
    if isinstance(expr, _ColumnLiteral):
        return Condition(expr.column, expr.op, expr.values)
    if isinstance(expr, _ClaimLiteral):
        value = _claim(claims, expr.path)
        return value is not _MISSING and _claim_equals(value, expr.values)
    if isinstance(expr, _ColumnClaim):
        return _bind_column_claim(expr, _claim(claims, expr.path))
    if isinstance(expr, _And):
        return _fold_all([_bind(item, claims) for item in expr.items])
    return _fold_any([_bind(item, claims) for item in expr.items])


def _bind_column_claim(expr: _ColumnClaim, value: Any) -> _Bound:
    if value is _MISSING or value is None:
        return False  # a missing claim matches nothing
    if expr.op == "eq":
        literal = _literal(value)  # a list or object never equals a column value
        return False if literal is None else Condition(expr.column, "eq", (literal,))
    items = value if isinstance(value, list) else [value]
    literals = tuple(dict.fromkeys(lit for lit in map(_literal, items) if lit is not None))
    if not literals:
        return False
    if len(literals) == 1:  # an eq condition is indexed by the hub; an in condition is not
        return Condition(expr.column, "eq", literals)
    return Condition(expr.column, "in", literals)


def _fold_all(items: list[_Bound]) -> _Bound:
    return _fold(items, _All)


def _fold_any(items: list[_Bound]) -> _Bound:
    return _fold(items, _Any)


def _fold(items: list[_Bound], kind: type[_All] | type[_Any]) -> _Bound:
    """AND (``_All``) or OR (``_Any``) of ``items`` with constants folded away."""
    absorbing = kind is _Any  # False decides an AND, True an OR; the other is neutral
    flat: list[_Bound] = []
    for item in items:
        if item is absorbing:
            return absorbing
        if item is (not absorbing):
            continue
        flat.extend(item.items if isinstance(item, kind) else (item,))
    if not flat:
        return not absorbing
    return flat[0] if len(flat) == 1 else kind(tuple(dict.fromkeys(flat)))


def _evaluate(expr: _Bound, row: Mapping[str, Any]) -> bool:
    if isinstance(expr, bool):
        return expr
    if isinstance(expr, Condition):
        return expr.matches(row)
    if isinstance(expr, _All):
        return all(_evaluate(item, row) for item in expr.items)
    return any(_evaluate(item, row) for item in expr.items)


def _render(expr: _Bound) -> str:
    if isinstance(expr, bool):
        return "true" if expr else "false"
    if isinstance(expr, Condition):
        return str(expr)
    joiner = " and " if isinstance(expr, _All) else " or "
    return "(" + joiner.join(_render(item) for item in expr.items) + ")"


@dataclasses.dataclass(frozen=True)
class RowRule:
    """A table's row rule bound to one identity's claims. Compare with ``==``."""

    expr: _Bound

    def matches(self, row: Mapping[str, Any] | None) -> bool:
        """Whether the identity may see ``row``; False for None or a non-mapping."""
        if not isinstance(row, Mapping):
            return False
        return _evaluate(self.expr, row)

    def conditions(self) -> tuple[Condition, ...] | None:
        """Filter conditions equivalent to ``matches`` (``()`` = every row), or None.

        None when the rule has an ``or`` that binding did not fold away; the hub then
        calls ``matches``. Put these first in the subscription's filter so that the
        hub indexes the subscription by the tenant column.
        """
        if self.expr is True:
            return ()
        if isinstance(self.expr, Condition):
            return (self.expr,)
        if isinstance(self.expr, _All) and all(isinstance(i, Condition) for i in self.expr.items):
            return tuple(item for item in self.expr.items if isinstance(item, Condition))
        return None

    @property
    def allows_all(self) -> bool:
        return self.expr is True

    def columns(self) -> frozenset[str]:
        """Columns the rule reads (check them against the table: a missing one is NULL)."""
        found: set[str] = set()
        stack: list[_Bound] = [self.expr]
        while stack:
            item = stack.pop()
            if isinstance(item, Condition):
                found.add(item.column)
            elif isinstance(item, _All | _Any):
                stack.extend(item.items)
        return frozenset(found)

    def __str__(self) -> str:
        return _render(self.expr)


ALLOW_ALL: Final = RowRule(True)


_TEMPLATE = re.compile(r"\{claims((?:\.[A-Za-z_][A-Za-z0-9_]*)+)\}")


def _bind_pattern(pattern: str, claims: Mapping[str, Any]) -> str | None:
    """``pattern`` with each ``{claims.x}`` replaced; None when a claim cannot fill it."""
    failed = False

    def fill(match: re.Match[str]) -> str:
        nonlocal failed
        literal = _literal(_claim(claims, tuple(match.group(1)[1:].split("."))))
        # Only [A-Za-z0-9_]: a claim can never smuggle a '*' (or anything else) in.
        if literal is None or not _TEMPLATE_VALUE.fullmatch(literal):
            failed = True
            return ""
        return literal

    bound = _TEMPLATE.sub(fill, pattern)
    return None if failed else bound


@dataclasses.dataclass(frozen=True, slots=True)
class TopicRights:
    """What one identity may do on one topic."""

    read: bool  # join: receive broadcasts and presence
    presence: bool  # track its own presence state
    broadcast: bool  # send broadcasts


class Grants:
    """What one identity may read and publish; bind once per connection (and per ``auth``)."""

    def __init__(self, rules: Rules, identity: Identity) -> None:
        self.rules = rules
        self.identity = identity
        self._tables: dict[tuple[str, str], RowRule | None] = {}
        claims = identity.claims
        self._read = [p for p in (_bind_pattern(p, claims) for p in rules.channel_read) if p]
        self._publish = [p for p in (_bind_pattern(p, claims) for p in rules.channel_publish) if p]
        self._topics: tuple[tuple[str, ...], ...] | None = None

    def table(self, schema: str, table: str) -> RowRule | None:
        """The row rule for ``schema.table``, or None when the table is forbidden."""
        if not self.rules.configured:
            return ALLOW_ALL
        key = (schema, table)
        if key not in self._tables:
            expr = self.rules.tables.get(key)
            bound = False if expr is None else _bind(expr, self.identity.claims)
            self._tables[key] = None if bound is False else RowRule(bound)
        return self._tables[key]

    def can_read_channel(self, name: str) -> bool:
        """Whether the identity may subscribe to raw channel ``name``.

        The gateway also checks ``Settings.channels`` (what is relayed at all): a
        channel must pass both.
        """
        if not isinstance(name, str) or not CHANNEL_NAME.fullmatch(name):
            return False
        if not self.rules.configured:
            return True
        return any(channel_matches(pattern, name) for pattern in self._read)

    def topic_rights(self, topic: str) -> TopicRights:
        """What the identity may do on ``topic`` (presence and broadcast).

        Without ``[rules]`` everything is allowed (like raw channels); with them, only
        what ``[rules.topics]`` grants. Tracking presence or broadcasting on a topic
        needs reading it too.
        """
        if not isinstance(topic, str) or not TOPIC_NAME.fullmatch(topic):
            return TopicRights(False, False, False)
        if not self.rules.configured:
            return TopicRights(True, True, True)
        if self._topics is None:
            claims = self.identity.claims
            self._topics = tuple(
                tuple(p for p in (_bind_pattern(p, claims) for p in patterns) if p)
                for patterns in (
                    self.rules.topic_read,
                    self.rules.topic_presence,
                    self.rules.topic_broadcast,
                )
            )
        read, presence, broadcast = (
            any(topic_matches(pattern, topic) for pattern in patterns) for patterns in self._topics
        )
        return TopicRights(read, read and presence, read and broadcast)

    def can_publish(self, name: str) -> bool:
        """Whether the identity may publish (NOTIFY) to raw channel ``name``."""
        if not isinstance(name, str) or not CHANNEL_NAME.fullmatch(name):
            return False
        if not self.rules.configured:
            return True
        return any(channel_matches(pattern, name) for pattern in self._publish)


@dataclasses.dataclass(frozen=True)
class Rules:
    """Compiled ``[rules]``; ``configured=False`` (no ``[rules]`` at all) allows everything."""

    configured: bool = False
    tables: Mapping[tuple[str, str], _Expr] = dataclasses.field(default_factory=dict)
    channel_read: tuple[str, ...] = ()
    channel_publish: tuple[str, ...] = ()
    topic_read: tuple[str, ...] = ()
    topic_presence: tuple[str, ...] = ()
    topic_broadcast: tuple[str, ...] = ()

    def bind(self, identity: Identity) -> Grants:
        return Grants(self, identity)

    def columns(self, key: tuple[str, str]) -> frozenset[str]:
        """The columns the read rule of table ``key`` names (to check against the table)."""
        found: set[str] = set()
        stack: list[_Expr] = [self.tables[key]] if key in self.tables else []
        while stack:
            item = stack.pop()
            if isinstance(item, _ColumnClaim | _ColumnLiteral):
                found.add(item.column)
            elif isinstance(item, _And | _Or):
                stack.extend(item.items)
        return frozenset(found)


_RULES_KEYS = ("tables", "channels", "topics")
_TOPIC_KEYS = ("read", "presence", "broadcast")
_TABLE_KEYS = ("read",)
_CHANNEL_KEYS = ("read", "publish")


def _lists_section(
    table: Mapping[str, Any], name: str, keys: Sequence[str], source: str
) -> Mapping[str, Any]:
    """``[rules.<name>]``: a table whose keys are among ``keys`` (pattern lists)."""
    section = table.get(name, {})
    if not isinstance(section, Mapping):
        raise ConfigError(f"{source}.{name} must be a table with {' / '.join(keys)} lists")
    for key in section:
        if key not in keys:
            raise _unknown(key, keys, f"{source}.{name}")
    return section


def _unknown(key: object, known: Sequence[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(str(key), known, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"
    return ConfigError(f"{where}: unknown key {key!r}", hint=hint)


def parse_rules(table: Mapping[str, Any] | None, *, source: str = "[rules]") -> Rules:
    """Compile a ``[rules]`` table (None or absent: no rules, everything allowed)."""
    if table is None:
        return Rules()
    if not isinstance(table, Mapping):
        raise ConfigError(f"{source} must be a table")
    for key in table:
        if key not in _RULES_KEYS:
            raise _unknown(key, _RULES_KEYS, source)
    tables_table = table.get("tables", {})
    if not isinstance(tables_table, Mapping):
        raise ConfigError(f"{source}.tables must be a table of [rules.tables.<name>] tables")
    tables: dict[tuple[str, str], _Expr] = {}
    for name, spec in tables_table.items():
        where = f"{source}.tables.{name}"
        try:
            parsed = parse_table_name(name)
        except IdentifierError as err:
            raise ConfigError(f"{where}: {err}") from None
        table_key = (parsed.schema or "public", parsed.name)
        if table_key in tables:
            raise ConfigError(f"{where}: a rule for {'.'.join(table_key)} is already given")
        if not isinstance(spec, Mapping):
            raise ConfigError(f"{where} must be a table with a read rule", hint='read = "true"')
        for spec_key in spec:
            if spec_key not in _TABLE_KEYS:
                raise _unknown(spec_key, _TABLE_KEYS, where)
        read = spec.get("read")
        if isinstance(read, bool):
            tables[table_key] = _Const(read)
        elif isinstance(read, str):
            tables[table_key] = compile_rule(read, where=f"{where}.read")
        else:
            raise ConfigError(f"{where} needs a read rule (a string)", hint='read = "true"')
    channels = _lists_section(table, "channels", _CHANNEL_KEYS, source)
    topics = _lists_section(table, "topics", _TOPIC_KEYS, source)
    return Rules(
        configured=True,
        tables=tables,
        channel_read=_patterns(channels.get("read", []), f"{source}.channels.read"),
        channel_publish=_patterns(channels.get("publish", []), f"{source}.channels.publish"),
        topic_read=_topic_patterns(topics.get("read", []), f"{source}.topics.read"),
        topic_presence=_topic_patterns(topics.get("presence", []), f"{source}.topics.presence"),
        topic_broadcast=_topic_patterns(topics.get("broadcast", []), f"{source}.topics.broadcast"),
    )


def _topic_patterns(value: object, where: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise ConfigError(f"{where} must be a list of topic patterns")
    for item in items:
        if not valid_pattern(_TEMPLATE.sub("x", item) if isinstance(item, str) else None):
            raise ConfigError(
                f"{where}: {item!r} is not a topic pattern",
                hint="printable characters without spaces, '*' for any run of characters, "
                "{claims.<name>} for a claim; e.g. 'room:*' or 'user:{claims.sub}'",
            )
    return tuple(dict.fromkeys(items))


def _patterns(value: object, where: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise ConfigError(f"{where} must be a list of channel patterns")
    patterns: list[str] = []
    for item in items:
        static = _TEMPLATE.sub("x", item) if isinstance(item, str) else ""
        too_long = len(static) > MAX_CHANNEL_LENGTH
        if not isinstance(item, str) or not CHANNEL_PATTERN.fullmatch(static) or too_long:
            raise ConfigError(
                f"{where}: {item!r} is not a channel pattern",
                hint="letters, digits, '_', '*' and {claims.<name>}, at most 63 characters",
            )
        patterns.append(item)
    return tuple(dict.fromkeys(patterns))


# --- limits ------------------------------------------------------------------------------
