"""CORS for the routes a browser page on another origin calls: ``/sse``, ``/health``,
``/`` and ``/js/*``.

A WebSocket is not subject to CORS (the gateway checks its ``Origin`` at admission),
but an ``EventSource``, a ``fetch`` and a ``<script type="module">`` from another
origin see a response only if it names that origin. The origins are the ones
``allowed_origins`` admits (empty: any), echoed back with ``Vary: Origin`` rather
than ``*`` so that a cache never serves one origin's answer to another. No
``Access-Control-Allow-Credentials``: tokens travel as ``?token=`` or an
``Authorization`` header, never as cookies. ``/metrics`` is for scrapers, not pages,
so it gets no CORS headers. An embedding app's own routes are its own business.
"""

from __future__ import annotations

from typing import Final

from .auth.limits import Limits

__all__ = ["MAX_AGE", "cors_path", "preflight_headers", "response_headers"]

# Seconds a browser may cache a preflight answer.
MAX_AGE: Final = 600
_METHODS: Final = "GET, HEAD, OPTIONS"
_HEADERS: Final = "Authorization, Last-Event-ID, Content-Type"
# Every answer of these paths depends on Origin, including one without CORS headers.
_VARY: Final = ("Vary", "Origin")
_PATHS: Final = frozenset({"/sse", "/health", "/", ""})


def cors_path(path: str) -> bool:
    """Whether ``path`` (below the mount point) answers pages on other origins."""
    return path in _PATHS or path.startswith("/js/")


def response_headers(limits: Limits, origin: str | None) -> list[tuple[str, str]]:
    """The CORS headers of a response to a request from ``origin``: none for a request
    without one (not a cross-origin browser request) or from an origin not allowed."""
    if origin is None or not limits.origin_allowed(origin):
        return [_VARY]
    return [("Access-Control-Allow-Origin", origin), _VARY]


def preflight_headers(limits: Limits, origin: str | None) -> list[tuple[str, str]] | None:
    """The headers of a 204 answer to a preflight ``OPTIONS`` from ``origin``; None
    when the origin is not allowed (the gateway answers 403, without CORS headers)."""
    allowed = response_headers(limits, origin)
    if origin is not None and not limits.origin_allowed(origin):
        return None
    return [
        *allowed,
        ("Access-Control-Allow-Methods", _METHODS),
        ("Access-Control-Allow-Headers", _HEADERS),
        ("Access-Control-Max-Age", str(MAX_AGE)),
        ("Allow", _METHODS),
    ]
