"""The operator's console at ``/console``: a live page and its JSON feed, guarded by
the ``admin_token`` setting and absent (404) without it.

Routes, below the gateway's mount point:

- ``/console`` redirects to ``/console/`` (so the page's relative URLs resolve);
- ``/console/`` and its static files (``console.js``, ``console.css``, ...), shipped in
  the package as ``pgcast/static/console/``: the page shell, which holds no data, so
  it is served without the token (a browser cannot put a header on a navigation);
- ``/console/js/<module>``: the browser client (as ``/js/``), for the inspector, also
  where the gateway is mounted in an ASGI app;
- ``/console/api/stats``: the data, only with ``Authorization: Bearer <admin_token>``
  (401 without a bearer token, 403 with another one; neither says anything else).
  ``?seconds=N`` (1..300) trims the history; any other query is a 400.

The token is compared through SHA-256 digests with :func:`hmac.compare_digest`:
constant time whatever the length or content of what was sent. The page is not a
CORS route: another origin's script cannot read any of it. The answers are data
(:class:`pgcast.answers.Answer`), served by the native server and the ASGI app alike.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from importlib import resources
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl

import orjson

from . import __version__
from .answers import JSON, Answer, not_found
from .browser_client import js_module
from .console_stats import CAPACITY

if TYPE_CHECKING:
    from .node import Node
    from .transports import RequestHead

__all__ = ["PREFIX", "answer", "authorized", "stats"]

PREFIX: Final = "/console"
_STATIC: Final = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/console.js": ("console.js", "text/javascript; charset=utf-8"),
    "/charts.js": ("charts.js", "text/javascript; charset=utf-8"),
    "/inspector.js": ("inspector.js", "text/javascript; charset=utf-8"),
    "/console.css": ("console.css", "text/css; charset=utf-8"),
}
# Every answer of the gateway already says Cache-Control: no-store.
_PAGE_HEADERS: Final = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    (
        "Content-Security-Policy",
        "default-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    ),
)
_CHALLENGE: Final = ("WWW-Authenticate", 'Bearer realm="pgcast console"')


def answer(node: Node, head: RequestHead, method: str) -> Answer | None:
    """The console's answer to ``method`` ``head``; None for a path outside it."""
    path = head.path
    if path != PREFIX and not path.startswith(PREFIX + "/"):
        return None
    expected = node.settings.admin_token
    if expected is None:
        return not_found()
    if method not in ("GET", "HEAD"):
        return _error(405, "the console answers GET and HEAD only", ("Allow", "GET, HEAD"))
    rest = path[len(PREFIX) :]
    if rest == "":
        return Answer(308, b"", "text/plain", (("Location", "console/"),))
    if rest == "/api/stats":
        refusal = authorized(head.header("Authorization"), expected)
        if refusal is not None:
            return refusal
        return _stats_answer(node, head.query)
    if rest.startswith("/js/"):
        source = js_module(rest[len("/js/") :])
        if source is None:
            return not_found()
        return Answer(200, source, "text/javascript; charset=utf-8", _PAGE_HEADERS)
    static = _STATIC.get(rest)
    if static is None:
        return not_found()
    name, content_type = static
    body = resources.files("pgcast").joinpath("static", "console", name).read_bytes()
    return Answer(200, body, content_type, _PAGE_HEADERS)


def authorized(header: str | None, expected: str) -> Answer | None:
    """None if ``header`` is ``Bearer <expected>``; else the 401 or 403 to answer."""
    scheme, _, given = (header or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return _error(401, "send Authorization: Bearer <admin token>", _CHALLENGE)
    if not _same(given.strip(), expected):
        return _error(403, "wrong admin token")
    return None


def stats(node: Node, seconds: int | None = None) -> dict[str, Any]:
    """The console's document: this node now, its recent history, the nodes it sees."""
    ring = node.console_samples
    latest = ring.latest
    last = ring.samples[-1] if ring.samples else None
    listener = node.listener
    return {
        "at": time.time(),
        "node": {
            "version": __version__,
            "process": os.getpid(),
            "uptime_seconds": round(time.time() - node.started_at, 3),
            "listener": {
                "state": listener.state.value,
                "backend_pid": listener.backend_pid,
                "reconnects": listener.reconnects,
                "last_error": listener.last_error,
            },
            "wal_leader": node.wal.leader,
        },
        "now": {
            "connections": len(node.connections.clients),
            "subscriptions": node.hub.subscription_count(),
            "tables": dict(latest.tables) if latest is not None else {},
            "changes_per_s": last.changes_per_s if last is not None else 0.0,
            "deliveries_per_s": last.deliveries_per_s if last is not None else 0.0,
            "listener_lag": listener.lag_seconds,
            "capture_lag": node.capture_lag,
            "wal_lag_bytes": node.wal.slot.lag_bytes if node.wal.slot is not None else None,
            "changes_total": node.changes_in,
            "deliveries_total": node.deliveries_out + node.catch_ups.deliveries,
            "slow_closes_total": node.overflows,
        },
        "series": ring.series(seconds),
        "cluster": node.console_nodes.document(listener.backend_pid),
    }


def _stats_answer(node: Node, query: str) -> Answer:
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=False, max_num_fields=4)
    except ValueError:
        return _error(400, "too many query parameters")
    seconds: int | None = None
    for key, value in pairs:
        if key != "seconds":
            return _error(400, "unknown query parameter; the only one is seconds")
        if not (value.isascii() and value.isdigit() and len(value) <= 3) or not (
            1 <= int(value) <= CAPACITY
        ):
            return _error(400, f"seconds must be a whole number from 1 to {CAPACITY}")
        seconds = int(value)
    body = orjson.dumps(stats(node, seconds))
    return Answer(200, body, JSON)


def _same(given: str, expected: str) -> bool:
    """Constant time: digests of equal length, whatever ``given`` is."""
    left = hashlib.sha256(given.encode("utf-8", "surrogatepass")).digest()
    right = hashlib.sha256(expected.encode("utf-8")).digest()
    return hmac.compare_digest(left, right)


def _error(status: int, message: str, *headers: tuple[str, str]) -> Answer:
    return Answer(status, orjson.dumps({"error": message}), JSON, headers)
