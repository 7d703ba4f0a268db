"""The one route table of a gateway, whatever serves it (``pgcast serve`` or ASGI).

``/ws`` is a WebSocket and ``/sse`` an event stream (both connections of the node);
``/health``, ``/metrics``, ``/console`` (:mod:`pgcast.console`, when configured) and
``/`` are plain HTTP answers computed here, as data (:class:`pgcast.answers.Answer`)
that the native HTTP server and the ASGI app each send their own way. An embedding
app's own routes come after these and before the index.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import orjson

from . import __version__, console
from .answers import JSON, Answer, not_found

if TYPE_CHECKING:
    from .node import Node
    from .transports import RequestHead

__all__ = ["JSON", "PHOENIX_PATHS", "STREAMS", "Answer", "answer", "index", "not_found"]

# The Supabase Realtime endpoint (Phoenix channels; pgcast.supabase): where supabase-js
# connects (<project url>/realtime/v1/websocket), and Phoenix's own default path.
PHOENIX_PATHS: Final = frozenset({"/realtime/v1/websocket", "/socket/websocket"})
# Paths whose GET opens a connection of the node, and the transport it takes.
STREAMS: Final = {"/ws": "websocket", "/sse": "sse"} | dict.fromkeys(PHOENIX_PATHS, "websocket")


def answer(node: Node, head: RequestHead, method: str = "GET") -> Answer | None:
    """The gateway's own answer to a plain request; None if it has none."""
    path = head.path
    if path == "/health":
        health = node.health()
        return Answer(200 if health["status"] == "ok" else 503, orjson.dumps(health))
    if path == "/metrics":
        return Answer(200, node.metrics().encode(), "text/plain; version=0.0.4")
    return console.answer(node, head, method)


def index(base: str) -> Answer:
    """``/``: what this gateway serves, as paths below ``base`` ("/" or "" when mounted)."""
    body = {
        "name": "pgcast",
        "version": __version__,
        "websocket": base + "ws",
        "sse": base + "sse",
        "supabase_realtime": base + "realtime/v1/websocket",
        "health": base + "health",
        "metrics": base + "metrics",
    }
    return Answer(200, orjson.dumps(body))
