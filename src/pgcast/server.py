"""The native gateway: a :class:`pgcast.node.Node` behind pgcast's own TCP server.

Every TCP connection is an :class:`pgcast.transports.sse.HttpConnection`: plain HTTP
requests are answered from the route table (:mod:`pgcast.routes`), ``GET /ws``
becomes a WebSocket and ``GET /sse`` an event stream, both handed to the node.
``serve()`` runs a gateway until asked to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from websockets.http11 import Response

from . import cors
from . import routes as route_table
from .auth import AuthConfig
from .browser_client import js_response
from .bus import Bus
from .config import Settings
from .connections import AUTH_TIMEOUT, INBOX_BYTES, INBOX_LIMIT
from .node import Node
from .startup import wait_unless_stopped
from .transports import RequestHead
from .transports.http import HttpRequest
from .transports.sse import HttpConnection
from .transports.websocket import WebSocketConnection, http_response

__all__ = ["AUTH_TIMEOUT", "INBOX_BYTES", "INBOX_LIMIT", "Gateway", "serve"]

logger = logging.getLogger("pgcast.server")

Routes = Callable[[HttpRequest], Awaitable[Response | None]]


class Gateway(Node):
    """A pgcast gateway bound to one database, serving its own TCP port."""

    def __init__(
        self,
        settings: Settings,
        dsn: str,
        *,
        routes: Routes | None = None,
        auth: AuthConfig | None = None,
        bus: Bus | None = None,
    ) -> None:
        """``routes`` answers plain HTTP requests the gateway does not (an embedding app's
        own pages and API); it returns None for paths it does not serve. ``bus``: see
        :class:`pgcast.node.Node`."""
        super().__init__(settings, dsn, auth=auth, bus=bus)
        self.routes = routes
        self._server: asyncio.Server | None = None

    async def start(
        self, *, ready_timeout: float = 10.0, serve_tcp: bool = True, retry: bool = False
    ) -> None:
        """Connect to PostgreSQL, start the listener and bind the HTTP/WebSocket port.

        ``serve_tcp=False`` binds nothing: an embedding server (pgcast.asgi) carries the
        connections and calls the transport callbacks itself. ``retry`` waits for an
        unreachable database (with backoff, logging each attempt) instead of failing."""
        await super().start(ready_timeout=ready_timeout, retry=retry)
        if not serve_tcp:
            return
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._new_connection,
            self.settings.host,
            self.settings.port,
            reuse_address=True,
            backlog=4096,
        )
        logger.info(
            "serving on http://%s:%s (ws: /ws, sse: /sse, health: /health)",
            self.settings.host,
            self.port,
        )

    @property
    def port(self) -> int:
        assert self._server is not None, "gateway is not started"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def stop(self, *, timeout: float = 5.0) -> None:
        """Stop accepting, tell every client to reconnect elsewhere (4000), release all."""
        if self._server is not None:
            self._server.close()
        await super().stop(timeout=timeout)
        if self._server is not None:
            await self._server.wait_closed()

    def _new_connection(self) -> WebSocketConnection:
        return HttpConnection(
            self,
            self,
            max_frame_bytes=self.settings.max_frame_bytes,
            outbox_limit=self.settings.outbox_limit,
            pending_requests=self.pending_requests,
            stream_headers=self.cors_headers,
        )

    def cors_headers(self, head: RequestHead) -> list[tuple[str, str]]:
        """The CORS headers of the answer to ``head`` (see :mod:`pgcast.cors`)."""
        if not cors.cors_path(head.path):
            return []
        return cors.response_headers(self.auth.limits, head.header("Origin"))

    async def http(self, request: HttpRequest) -> Response:
        """Plain HTTP: the gateway's own routes, then the embedding app's (``routes``,
        answered as it answers them), then ``/js/`` and the index; CORS headers on the
        gateway's answers to the routes a page on another origin calls."""
        found = route_table.answer(self, request.path)
        if found is None and self.routes is not None:
            response = await self.routes(request)
            if response is not None:
                return response
        if request.method == "OPTIONS" and cors.cors_path(request.path):
            return self._preflight(request)
        if found is None and (script := js_response(request)) is not None:
            response = script  # the browser client, at /js/
        else:
            if found is None:
                found = route_table.index("/") if request.path == "/" else route_table.not_found()
            reason = _REASONS.get(found.status, "")
            response = http_response(found.status, reason, found.body, found.content_type)
        head = RequestHead(request.target, tuple(request.headers))
        for name, value in self.cors_headers(head):
            response.headers[name] = value
        return response

    def _preflight(self, request: HttpRequest) -> Response:
        headers = cors.preflight_headers(self.auth.limits, request.header("Origin"))
        if headers is None:
            body = b'{"error":"this Origin may not call the gateway"}'
            return http_response(403, "Forbidden", body, route_table.JSON)
        response = http_response(204, "No Content", b"", route_table.JSON)
        del response.headers["Content-Type"], response.headers["Content-Length"]
        for name, value in headers:
            response.headers[name] = value
        return response


_REASONS = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}


async def serve(
    settings: Settings,
    dsn: str,
    *,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[Gateway], None] | None = None,
    auth: AuthConfig | None = None,
    routes: Routes | None = None,
) -> None:
    """Run a gateway until ``stop`` is set (or forever), then shut down cleanly."""
    gateway = Gateway(settings, dsn, auth=auth, routes=routes)
    try:
        if not await wait_unless_stopped(gateway.start(retry=True), stop):
            return  # stopped while waiting for the database
        if on_ready is not None:
            on_ready(gateway)
        await (stop.wait() if stop is not None else asyncio.Event().wait())
    finally:
        with contextlib.suppress(Exception):
            await gateway.stop()
