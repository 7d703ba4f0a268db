"""The row rule language: text to an expression tree (see docs/security.md).

Compiled once, when the configuration is loaded; ``pgcast.auth.rules`` binds the
tree to a token's claims. Pure.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Final, Protocol

from ..exceptions import ConfigError, IdentifierError
from ..identifiers import parse_identifier

MAX_RULE_LENGTH: Final = 4096
MAX_RULE_TOKENS: Final = 512
MAX_RULE_DEPTH: Final = 16

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<claim>claims(?:\.(?:[A-Za-z_][A-Za-z0-9_]*|"(?:[^"]|"")+"))+)
    | (?P<ident>[A-Za-z_][A-Za-z0-9_$]*)
    | (?P<qident>"(?:[^"]|"")+")
    | (?P<number>-?[0-9]+(?:\.[0-9]+)?(?![A-Za-z0-9_.]))
    | (?P<string>'(?:[^']|'')*')
    | (?P<punct>[(),=])
    )""",
    re.VERBOSE,
)
_CLAIM_SEGMENT = re.compile(r'\.(?:([A-Za-z_][A-Za-z0-9_]*)|"((?:[^"]|"")+)")')
_KEYWORDS = frozenset({"and", "or", "in", "true", "false", "not", "null"})
_SQL_WORDS = frozenset(
    {"select", "from", "where", "union", "drop", "insert", "update", "delete", "exists", "like"}
)
_GRAMMAR_HINT = (
    "a rule is true, false, or terms like merchant_id = claims.merchant_id, "
    "id in claims.ids, status = 'open', claims.role in (admin, auditor), "
    "joined with and / or and grouped with parentheses"
)

ClaimPath = tuple[str, ...]


class _Fail(Protocol):
    def __call__(self, problem: str, column: int, hint: str | None = None) -> ConfigError: ...


@dataclasses.dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # claim ident qident number string punct end
    text: str
    at: int  # 1-based column in the rule text


@dataclasses.dataclass(frozen=True, slots=True)
class _Const:
    value: bool


@dataclasses.dataclass(frozen=True, slots=True)
class _ColumnClaim:
    """``column = claims.x`` (op eq) or ``column in claims.xs`` (op in)."""

    column: str
    op: str
    path: ClaimPath


@dataclasses.dataclass(frozen=True, slots=True)
class _ColumnLiteral:
    column: str
    op: str
    values: tuple[str, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class _ClaimLiteral:
    """``claims.x = lit`` / ``claims.x in (lit, ...)``: decided at bind time."""

    path: ClaimPath
    values: tuple[str, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class _And:
    items: tuple[_Expr, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class _Or:
    items: tuple[_Expr, ...]


_Expr = _Const | _ColumnClaim | _ColumnLiteral | _ClaimLiteral | _And | _Or


def _tokenize(text: str, fail: _Fail) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i == len(text):
            tokens.append(_Token("end", "", i + 1))
            return tokens
        match = _TOKEN.match(text, i)
        if match is None or match.lastgroup is None:
            raise _unexpected(text, i, tokens, fail)
        start = match.start(match.lastgroup)
        tokens.append(_Token(match.lastgroup, match.group(match.lastgroup), start + 1))
        if len(tokens) > MAX_RULE_TOKENS:
            raise fail(f"has more than {MAX_RULE_TOKENS} tokens", start + 1)
        i = match.end()


def _unexpected(text: str, i: int, tokens: list[_Token], fail: _Fail) -> ConfigError:
    char = text[i]
    previous = tokens[-1] if tokens else None
    if char == "." and previous is not None and previous.kind == "ident":
        if previous.text == "claims":
            return fail("expects a claim name after 'claims.'", i + 1)
        return fail(
            f"has {previous.text + '.'!r}: claims are written claims.<name>, and columns "
            "are written without a table or schema",
            i + 1,
        )
    if char == "'":
        return fail("has an unterminated 'string'", i + 1)
    if char in "<>!~":
        return fail(f"has {char!r}: rules compare only with = and in", i + 1)
    if char == ";" or text.startswith("--", i):
        return fail(f"has {char!r}: rules are not SQL", i + 1)
    return fail(f"has unexpected {char!r}", i + 1)


class _Parser:
    def __init__(self, text: str, fail: _Fail) -> None:
        self.fail = fail
        self.tokens = _tokenize(text, fail)
        self.pos = 0
        self.depth = 0

    def parse(self) -> _Expr:
        expr = self.parse_or()
        token = self.peek()
        if token.kind != "end":
            raise self.fail(f"has unexpected {token.text!r} after a complete term", token.at)
        return expr

    def peek(self) -> _Token:
        return self.tokens[self.pos]

    def take(self) -> _Token:
        token = self.tokens[self.pos]
        if token.kind != "end":
            self.pos += 1
        return token

    def keyword(self, word: str) -> bool:
        token = self.peek()
        if token.kind == "ident" and token.text.lower() == word:
            self.pos += 1
            return True
        return False

    def expect(self, text: str, after: str) -> None:
        token = self.take()
        if token.kind != "punct" or token.text != text:
            raise self.fail(f"expects {text!r} after {after}, found {_found(token)}", token.at)

    def parse_or(self) -> _Expr:
        items = [self.parse_and()]
        while self.keyword("or"):
            items.append(self.parse_and())
        return items[0] if len(items) == 1 else _Or(tuple(items))

    def parse_and(self) -> _Expr:
        items = [self.parse_term()]
        while self.keyword("and"):
            items.append(self.parse_term())
        return items[0] if len(items) == 1 else _And(tuple(items))

    def parse_term(self) -> _Expr:
        token = self.take()
        if token.kind == "punct" and token.text == "(":
            self.depth += 1
            if self.depth > MAX_RULE_DEPTH:
                raise self.fail(f"nests parentheses deeper than {MAX_RULE_DEPTH}", token.at)
            expr = self.parse_or()
            self.expect(")", "a parenthesized term")
            self.depth -= 1
            return expr
        if token.kind == "ident" and token.text.lower() in ("true", "false"):
            return _Const(token.text.lower() == "true")
        if token.kind == "claim":
            return self.claim_term(token)
        if token.kind == "ident" and token.text.lower() in _KEYWORDS:
            raise self.fail(f"expects a term, found {_found(token)}", token.at)
        if token.kind == "ident" and token.text.lower() in _SQL_WORDS:
            raise self.fail(f"has {token.text!r}: rules are not SQL", token.at)
        if token.kind in ("ident", "qident"):
            return self.column_term(token)
        raise self.fail(f"expects a term, found {_found(token)}", token.at)

    def claim_term(self, claim: _Token) -> _Expr:
        path = _claim_path(claim.text)
        if self.keyword("in"):
            self.expect("(", f"'{claim.text} in'")
            return _ClaimLiteral(path, self.literal_list(bare=True))
        token = self.peek()
        if token.kind == "punct" and token.text == "=":
            self.take()
            return _ClaimLiteral(path, (self.literal(bare=True),))
        raise self.fail(f"expects '=' or 'in' after {claim.text}, found {_found(token)}", token.at)

    def column_term(self, token: _Token) -> _Expr:
        try:
            column = parse_identifier(token.text, "column name")
        except IdentifierError as err:
            raise self.fail(f"has a bad column name: {err.message}", token.at) from None
        if self.keyword("in"):
            nxt = self.take()
            if nxt.kind == "claim":
                return _ColumnClaim(column, "in", _claim_path(nxt.text))
            if nxt.kind == "punct" and nxt.text == "(":
                return _ColumnLiteral(column, "in", self.literal_list(bare=False))
            raise self.fail(
                f"expects claims.<name> or a (list) after '{token.text} in', found {_found(nxt)}",
                nxt.at,
            )
        op = self.take()
        if op.kind != "punct" or op.text != "=":
            raise self.fail(
                f"expects '=' or 'in' after column {token.text!r}, found {_found(op)}", op.at
            )
        nxt = self.peek()
        if nxt.kind == "claim":
            self.take()
            return _ColumnClaim(column, "eq", _claim_path(nxt.text))
        return _ColumnLiteral(column, "eq", (self.literal(bare=False),))

    def literal_list(self, *, bare: bool) -> tuple[str, ...]:
        values = [self.literal(bare=bare)]
        while True:
            token = self.take()
            if token.kind == "punct" and token.text == ")":
                return tuple(dict.fromkeys(values))
            if token.kind != "punct" or token.text != ",":
                raise self.fail(f"expects ',' or ')' in a list, found {_found(token)}", token.at)
            values.append(self.literal(bare=bare))

    def literal(self, *, bare: bool) -> str:
        token = self.take()
        if token.kind == "number":
            return token.text
        if token.kind == "string":
            return token.text[1:-1].replace("''", "'")
        if token.kind == "ident" and token.text.lower() in ("true", "false"):
            return token.text.lower()
        if token.kind == "ident" and token.text.lower() in _SQL_WORDS:
            raise self.fail(f"has {token.text!r}: rules are not SQL", token.at)
        if token.kind == "ident" and bare and token.text.lower() not in _KEYWORDS:
            return token.text
        if token.kind == "ident":
            raise self.fail(
                f"compares a column with the bare word {token.text!r}",
                token.at,
                hint=f"compare with a claim: claims.{token.text}; or quote text: '{token.text}'",
            )
        raise self.fail(f"expects a value, found {_found(token)}", token.at)


def _found(token: _Token) -> str:
    return "the end of the rule" if token.kind == "end" else repr(token.text)


def _claim_path(text: str) -> ClaimPath:
    return tuple(
        plain if plain else quoted.replace('""', '"')
        for plain, quoted in _CLAIM_SEGMENT.findall(text[len("claims") :])
    )


def compile_rule(text: str, *, where: str = "rule") -> _Expr:
    """Compile one row rule (see the grammar in docs/security.md); ConfigError if bad."""

    def fail(problem: str, column: int, hint: str | None = None) -> ConfigError:
        return ConfigError(
            f"{where}: {text!r} {problem} (at column {column})", hint=hint or _GRAMMAR_HINT
        )

    if len(text) > MAX_RULE_LENGTH:
        raise ConfigError(f"{where}: rule is longer than {MAX_RULE_LENGTH} characters")
    if not text.strip():
        raise ConfigError(f"{where}: rule is empty", hint=_GRAMMAR_HINT)
    return _Parser(text, fail).parse()
