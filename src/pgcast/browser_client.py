"""The browser client (``clients/js``), shipped inside the package and served at ``/js/``.

The wheel carries every module of ``clients/js`` as ``pgcast/static/js/`` (see
pyproject.toml; in a checkout ``src/pgcast/static/js`` links to ``clients/js``), so
``pgcast serve`` and ``pgcast demo`` serve ``/js/pgcast.js``, ``/js/react.js`` and the
modules they import from the installed package, never from a repository checkout.
"""

from __future__ import annotations

import re
from importlib import resources

from websockets.http11 import Response

from .transports.http import HttpRequest
from .transports.websocket import http_response

__all__ = ["JS_PREFIX", "js_module", "js_response"]

JS_PREFIX = "/js/"
# Module paths only: no "..", no hidden files, no other file types.
_MODULE = re.compile(
    r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*(?:/[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*)*"
)
# In a checkout the link exposes the whole clients/js directory: never serve these.
_PRIVATE = frozenset({"test", "node_modules"})


def js_module(name: str) -> bytes | None:
    """The source of the shipped module ``name`` (e.g. ``pgcast.js``), or None."""
    if not name.endswith(".js") or not _MODULE.fullmatch(name):
        return None
    parts = name.split("/")
    if parts[0] in _PRIVATE:
        return None
    resource = resources.files("pgcast").joinpath("static", "js", *parts)
    try:
        return resource.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def js_response(request: HttpRequest) -> Response | None:
    """Answer ``GET /js/<module>``; None for every other request."""
    if not request.path.startswith(JS_PREFIX) or request.method not in ("GET", "HEAD"):
        return None
    source = js_module(request.path[len(JS_PREFIX) :])
    if source is None:
        body = b"// no such module in the pgcast browser client\n"
        return http_response(404, "Not Found", body, "text/javascript; charset=utf-8")
    return http_response(200, "OK", source, "text/javascript; charset=utf-8")
