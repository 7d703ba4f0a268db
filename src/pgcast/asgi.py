"""The pgcast gateway as a pure ASGI application, to mount inside FastAPI, Starlette or
Django's ASGI application (no Starlette or Django import here).

Routes, relative to where the app is mounted, are ``pgcast serve``'s (one table,
:mod:`pgcast.routes`): ``/ws`` (WebSocket), ``/sse`` (Server-Sent Events, for networks
that block WebSockets), ``/health``, ``/metrics`` and ``/`` (a JSON index).

Lifecycle: the gateway (LISTEN connection, pool, housekeeping, change hooks) starts
on ``lifespan.startup`` and stops on ``lifespan.shutdown``, which closes the
remaining clients with 4000 (reconnect and resume). A host app that does not pass
lifespan events to mounted apps (Starlette's ``Mount`` does not) runs
``pgcast_app.lifespan`` from its own: ``FastAPI(lifespan=pgcast_app.lifespan)``.

Each WebSocket and each event stream is a connection of the gateway like a native
one, with the same outbox and slow-consumer rule (:mod:`pgcast.transports.asgi`).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import AsyncIterator, Callable, Mapping

import orjson

from . import __version__, cors
from . import routes as route_table
from .auth import AuthConfig, load_auth_config
from .broadcast_api import PATH as BROADCAST_PATH
from .config import Settings, load_settings
from .exceptions import PgcastError
from .hooks import ChangeHooks, HookFunction
from .server import Gateway
from .transports import Refusal, RequestHead
from .transports.asgi import AsgiStreamSink, AsgiWebSocket, Receive, Scope, Send
from .transports.http import MAX_BODY_BYTES
from .transports.sse import SseConnection
from .transports.websocket import refusal_body

logger = logging.getLogger("pgcast.asgi")


_JSON = b"application/json"
_NOT_STARTED = (
    "the pgcast ASGI app is not started: run its lifespan "
    "(FastAPI(lifespan=pgcast_app.lifespan), or pass lifespan events to it)"
)


class AppState(enum.Enum):
    IDLE = "idle"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


class PgcastASGI:
    """The pgcast gateway as an ASGI application (see the module docstring)."""

    def __init__(self, settings: Settings, *, dsn: str | None, auth: AuthConfig) -> None:
        self.settings = settings
        self.auth = auth
        self._dsn = dsn
        self._gateway: Gateway | None = None
        self._hooks: list[tuple[HookFunction, str, str | None, tuple[str, ...] | None]] = []
        self.state = AppState.IDLE

    @property
    def gateway(self) -> Gateway:
        """The running gateway (health, metrics, hub); only between startup and shutdown."""
        if self._gateway is None:
            raise PgcastError(
                f"the pgcast app has no gateway in state {self.state.value!r}; expected running",
                hint="run its lifespan: FastAPI(lifespan=pgcast_app.lifespan)",
            )
        return self._gateway

    async def broadcast(self, topic: str, event: str, payload: object) -> None:
        """Send ``event`` with ``payload`` (JSON) to every member of ``topic`` on every
        gateway node (from a request handler of the embedding app, say); see
        :meth:`pgcast.node.Node.broadcast`."""
        await self.gateway.broadcast(topic, event, payload)

    def on_change(
        self, table: str, *, schema: str | None = None, events: tuple[str, ...] | None = None
    ) -> Callable[[HookFunction], HookFunction]:
        """Decorator: call the function (sync or async) for each committed change of
        ``table``; see :meth:`pgcast.server.Gateway.on_change`. Register before startup."""
        if self.state is not AppState.IDLE and self.state is not AppState.STOPPED:
            raise PgcastError(
                f"on_change({table!r}) in state {self.state.value!r}; expected idle",
                hint="register hooks at import time, before the app starts",
            )
        # Validate now (bad arguments raise at import time); applied to each started gateway.
        validate = ChangeHooks().on_change(table, schema=schema, events=events)

        def register(function: HookFunction) -> HookFunction:
            validate(function)
            self._hooks.append((function, table, schema, events))
            return function

        return register

    # lifecycle ------------------------------------------------------------------------

    async def startup(self) -> None:
        """Start the gateway: pool, LISTEN connection, housekeeping, change hooks."""
        if self.state is not AppState.IDLE and self.state is not AppState.STOPPED:
            raise PgcastError(
                f"startup in state {self.state.value!r}; expected idle or stopped",
                hint="run the pgcast app's lifespan once",
            )
        self.state = AppState.STARTING
        try:
            dsn = self._dsn or self.settings.database_url
            if dsn is None:
                from .embedded import resolve_database_url

                dsn = await asyncio.to_thread(resolve_database_url, self.settings)
            gateway = Gateway(self.settings, dsn, auth=self.auth)
            for function, table, schema, events in self._hooks:
                gateway.on_change(table, schema=schema, events=events)(function)
            if warning := self.auth.warning():
                logging.getLogger("pgcast.auth").warning(warning)
            await gateway.start(serve_tcp=False)
        except BaseException:
            self.state = AppState.IDLE
            raise
        self._gateway = gateway
        self.state = AppState.RUNNING
        logger.info("pgcast %s started inside the ASGI app (ws: /ws)", __version__)

    async def shutdown(self, *, timeout: float = 5.0) -> None:
        """Close the remaining clients (4000: reconnect and resume), stop the gateway."""
        gateway = self._gateway
        if gateway is None or self.state is not AppState.RUNNING:
            return
        self.state = AppState.STOPPING
        try:
            await gateway.stop(timeout=timeout)
        finally:
            self._gateway = None
            self.state = AppState.STOPPED

    @contextlib.asynccontextmanager
    async def lifespan(self, app: object = None) -> AsyncIterator[None]:
        """The gateway's lifetime as a context manager, in the shape FastAPI and Starlette
        take for ``lifespan=``; or ``async with pgcast_app.lifespan():`` in your own."""
        await self.startup()
        try:
            yield
        finally:
            await self.shutdown()

    # ASGI -----------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        else:
            raise PgcastError(f"unsupported ASGI scope type {kind!r}")

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    logger.exception("pgcast startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    await self.shutdown()
                except Exception as exc:
                    logger.exception("pgcast shutdown failed")
                    await send({"type": "lifespan.shutdown.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = _route_path(scope)
        head = scope["method"] == "HEAD"
        gateway = self._gateway
        if gateway is None:
            await _respond(send, route_table.Answer(503, orjson.dumps({"error": _NOT_STARTED})))
            return
        if scope["method"] == "OPTIONS" and cors.cors_path(path):
            await _preflight(send, gateway, _request_head(scope))
            return
        if route_table.STREAMS.get(path) == "sse" and scope["method"] == "GET":
            await self._sse(gateway, scope, receive, send)
            return
        found = route_table.answer(gateway, path)
        if path == BROADCAST_PATH and scope["method"] != "OPTIONS":
            found = await _broadcast(gateway, scope, receive)
        if found is None:
            found = route_table.index("") if path in ("/", "") else route_table.not_found()
        extra = gateway.cors_headers(_request_head(scope))
        await _respond(send, found, head=head, extra=extra)

    async def _sse(self, gateway: Gateway, scope: Scope, receive: Receive, send: Send) -> None:
        """``GET /sse``: one subscription as an event stream, as under ``pgcast serve``."""
        head = _request_head(scope)
        stream = SseConnection(
            gateway,
            head,
            outbox_limit=self.settings.outbox_limit,
            headers=gateway.cors_headers(head),
        )
        sink = AsgiStreamSink(stream, send)
        stream.attach(sink, _peer(scope))
        try:
            stream.open()
            await sink.run(receive)
        finally:
            stream.ended()

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        gateway = self._gateway
        if route_table.STREAMS.get(_route_path(scope)) != "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": "not found: use /ws"})
            return
        if gateway is None or self.state is not AppState.RUNNING:
            # 1013 "try again later": the app is starting or stopping.
            await send({"type": "websocket.close", "code": 1013, "reason": "pgcast not running"})
            return
        conn = AsgiWebSocket(
            gateway,
            send,
            head=_request_head(scope),
            peer=_peer(scope),
            outbox_limit=self.settings.outbox_limit,
            max_frame_bytes=self.settings.max_frame_bytes,
        )
        try:
            refusal = gateway.admit(conn)
            if refusal is not None:
                await _refuse(scope, send, refusal)
                return
            await send({"type": "websocket.accept"})
        except BaseException:
            gateway.closed(conn)
            raise
        await conn.run(receive)


def asgi_app(
    settings_or_config: Settings | Mapping[str, object] | None = None,
    *,
    dsn: str | None = None,
    auth: AuthConfig | None = None,
) -> PgcastASGI:
    """A pgcast gateway as an ASGI app: mount it, run its lifespan, connect to ``/ws``.

    ``settings_or_config``: a ``Settings``, a mapping of ``Settings`` field names (the
    values a ``pgcast serve`` flag would take; ``PGCAST_*`` environment variables and
    pgcast.toml fill the rest), or None (environment and pgcast.toml only). ``dsn``
    overrides the settings' ``database_url``; without either, the embedded PostgreSQL
    is used. ``auth`` defaults to the ``PGCAST_JWT_*`` environment and pgcast.toml, as
    for ``pgcast serve``. ``host`` and ``port`` are ignored: the ASGI server binds.
    """
    if isinstance(settings_or_config, Settings):
        settings = settings_or_config
    else:
        settings = load_settings(settings_or_config or {})
    if auth is None:
        auth = load_auth_config()
    return PgcastASGI(settings, dsn=dsn, auth=auth)


# helpers ------------------------------------------------------------------------------


async def _broadcast(gateway: Gateway, scope: Scope, receive: Receive) -> route_table.Answer:
    """``POST /api/broadcast`` (see pgcast.broadcast_api); the body read up to its limit."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return route_table.Answer(400, b'{"error":"bad_request"}')
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            body = orjson.dumps({"error": "payload_too_large", "message": "body over 1 MiB"})
            return route_table.Answer(413, body)
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    head = _request_head(scope)
    return await gateway.broadcast_endpoint.answer(
        scope["method"], head.target, list(head.headers), b"".join(chunks)
    )


def _route_path(scope: Scope) -> str:
    """The path below the mount point (``root_path``), as Starlette's routing computes it."""
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        return path[len(root) :] or "/"
    return path or "/"


def _request_head(scope: Scope) -> RequestHead:
    """The request as the gateway's admission code reads it (path with query, headers)."""
    query = scope.get("query_string", b"").decode("latin-1")
    target = _route_path(scope) + ("?" + query if query else "")
    headers = tuple(
        (name.decode("latin-1"), value.decode("latin-1")) for name, value in scope["headers"]
    )
    return RequestHead(target, headers)


def _peer(scope: Scope) -> str:
    client = scope.get("client")
    if not client:
        return "?"
    host, port = client[0], client[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


async def _respond(
    send: Send,
    answer: route_table.Answer,
    *,
    head: bool = False,
    extra: list[tuple[str, str]] | None = None,
) -> None:
    headers = [
        (b"content-type", answer.content_type.encode()),
        (b"content-length", str(len(answer.body)).encode()),
        (b"cache-control", b"no-store"),
    ]
    headers += [(name.lower().encode(), value.encode()) for name, value in extra or ()]
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else answer.body})


async def _preflight(send: Send, gateway: Gateway, head: RequestHead) -> None:
    """A preflight ``OPTIONS``: 204 with what a page on an allowed origin may send."""
    headers = cors.preflight_headers(gateway.auth.limits, head.header("Origin"))
    if headers is None:
        body = b'{"error":"this Origin may not call the gateway"}'
        await _respond(send, route_table.Answer(403, body))
        return
    raw = [(name.lower().encode(), value.encode()) for name, value in headers]
    await send({"type": "http.response.start", "status": 204, "headers": raw})
    await send({"type": "http.response.body", "body": b""})


async def _refuse(scope: Scope, send: Send, refusal: Refusal) -> None:
    """Refuse a WebSocket handshake with the gateway's HTTP answer when the server can
    send one (the ``websocket.http.response`` extension), else with close code 1008."""
    if "websocket.http.response" in scope.get("extensions", {}):
        body = refusal_body(refusal)
        headers = [(b"content-type", _JSON), (b"content-length", str(len(body)).encode())]
        await send(
            {
                "type": "websocket.http.response.start",
                "status": refusal.status,
                "headers": headers,
            }
        )
        await send({"type": "websocket.http.response.body", "body": body})
        return
    reason = refusal.message[:120]
    await send({"type": "websocket.close", "code": 1008, "reason": reason})


__all__ = ["AppState", "AsgiWebSocket", "PgcastASGI", "asgi_app"]
