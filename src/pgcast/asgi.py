"""The pgcast gateway as a pure ASGI application, to mount inside FastAPI, Starlette or
Django's ASGI application (no Starlette or Django import here).

Routes, relative to where the app is mounted: ``/ws`` (WebSocket, the same protocol
as ``pgcast serve``), ``/health``, ``/metrics`` and ``/`` (a JSON index). ``/sse`` is
not served over ASGI yet (404 with a pointer to ``pgcast serve``).

Lifecycle: the gateway (LISTEN connection, pool, housekeeping, change hooks) starts
on ``lifespan.startup`` and stops on ``lifespan.shutdown``, which closes the
remaining clients with 4000 (reconnect and resume). A host app that does not pass
lifespan events to mounted apps (Starlette's ``Mount`` does not) runs
``pgcast_app.lifespan`` from its own: ``FastAPI(lifespan=pgcast_app.lifespan)``.

Each WebSocket is an :class:`AsgiWebSocket`: the gateway calls it through the same
``ClientTransport`` methods as a native connection. Those calls are synchronous and
ASGI sends are not, so frames go to a bounded outbox that one writer task per
connection drains with ``await send``. The outbox only grows while that send is
blocked (the server's socket buffer is full: a slow client); past the gateway's
``outbox_limit`` frames (or 32 MiB) the connection is closed with 4001, exactly as
the native transport does. Reading pauses the same way: the gateway's
``transport.pause_reading()`` stops the reader from calling ``receive``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from typing import Any

import orjson

from . import __version__
from .auth import AuthConfig, load_auth_config
from .config import Settings, load_settings
from .exceptions import PgcastError
from .hooks import ChangeHooks, HookFunction
from .protocol import CloseCode
from .server import Gateway
from .transports import Refusal, RequestHead
from .transports.outbox import Outbox, OutboxConnection
from .transports.websocket import CLOSE_TIMEOUT, refusal_body

logger = logging.getLogger("pgcast.asgi")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

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


class AsgiWebSocket(OutboxConnection):
    """One ASGI WebSocket, as a :class:`pgcast.transports.Connection` of the gateway.

    Its outbox is the native transports' (:class:`pgcast.transports.outbox.Outbox`):
    ``paused`` while the writer task is blocked in ``await send``, which is when the
    slow-consumer rule applies."""

    def __init__(
        self,
        gateway: Gateway,
        send: Send,
        *,
        head: RequestHead,
        peer: str,
        outbox_limit: int,
        max_frame_bytes: int,
    ) -> None:
        self.gateway = gateway
        self.events = gateway
        self.peer = peer
        self.head = head
        self.max_frame_bytes = max_frame_bytes
        self.outbox = Outbox(outbox_limit)
        self._send = send
        self._readable = asyncio.Event()  # cleared while the gateway pauses reading
        self._readable.set()
        self._wake = asyncio.Event()  # the writer has something to do
        self._open = False
        self._closing: tuple[int, str] | None = None
        self._close_sent = False
        self._writer: asyncio.Task[None] | None = None
        self._deadline: asyncio.TimerHandle | None = None

    # Connection -----------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._open and self._closing is None

    def queue_change(self, prefix: bytes, body: bytes, change_id: int) -> None:
        self.outbox.add(prefix + body)  # one piece: one ASGI message

    def queue_message(self, prefix: bytes, body: bytes) -> None:
        self.outbox.add(prefix + body)

    def send(self, payload: bytes) -> None:
        self.outbox.add(payload)
        self.flush()

    def _write_out(self) -> None:
        self._wake.set()

    def pause_reading(self) -> None:
        self._readable.clear()

    def resume_reading(self) -> None:
        self._readable.set()

    def close(self, code: int, reason: str = "") -> None:
        """Send what is queued, then the close frame (the writer does it)."""
        if self._closing is not None:
            return
        self._closing = (code, reason)
        self._wake.set()
        # A client that does not read keeps our send blocked: give up on it in time.
        self._deadline = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, self.abort)

    def abort(self) -> None:
        """ASGI cannot cut a socket; drop the outbox and end the connection's tasks."""
        self._clear()
        self._open = False
        self._readable.set()
        if self._writer is not None:
            self._writer.cancel()

    async def drained(self) -> None:
        """Return once the writer has handed every queued frame to the server."""
        while (self.outbox.frames or self.outbox.paused) and self.is_open:
            await self.outbox.released()

    # the connection's life ------------------------------------------------------------

    async def run(self, receive: Receive) -> None:
        """Serve an accepted WebSocket until it closes (the gateway knows it meanwhile)."""
        self._open = True
        self.gateway.opened(self)
        writer = asyncio.create_task(self._write(), name=f"pgcast-asgi-writer-{self.peer}")
        self._writer = writer
        reader = asyncio.create_task(self._read(receive), name=f"pgcast-asgi-reader-{self.peer}")
        try:
            done, _ = await asyncio.wait({writer, reader}, return_when=asyncio.FIRST_COMPLETED)
            if reader not in done and self._close_sent:
                # We sent the close frame: give the client time to answer it.
                await asyncio.wait({reader}, timeout=CLOSE_TIMEOUT)
        finally:
            self._open = False
            if self._deadline is not None:
                self._deadline.cancel()
            for task in (writer, reader):
                task.cancel()
            for result in await asyncio.gather(writer, reader, return_exceptions=True):
                if isinstance(result, Exception):
                    # The client left while we were writing: nothing to tell anyone.
                    logger.debug("WebSocket %s ended: %r", self.peer, result)
            self._clear()
            self.gateway.closed(self)

    async def _read(self, receive: Receive) -> None:
        while True:
            await self._readable.wait()
            if not self._open:
                return
            message = await receive()
            kind = message["type"]
            if kind == "websocket.disconnect":
                return
            if kind != "websocket.receive":
                continue
            text = message.get("text")
            data: str | bytes = text if text is not None else (message.get("bytes") or b"")
            size = len(data) if isinstance(data, bytes) else len(data.encode())
            if size > self.max_frame_bytes:
                self.close(CloseCode.MESSAGE_TOO_BIG, f"frame over {self.max_frame_bytes} bytes")
                continue
            if self.is_open:
                self.gateway.received(self, data)

    async def _write(self) -> None:
        outbox = self.outbox
        while True:
            await self._wake.wait()
            self._wake.clear()
            while outbox.frames:
                # While a send is blocked the outbox is paused: frames queued meanwhile
                # count against its limit (4001), as on a backed-up socket.
                outbox.paused = True
                try:
                    for data in outbox.take_frames():
                        await self._send({"type": "websocket.send", "text": data.decode()})
                finally:
                    outbox.paused = False
            outbox.release()
            if not self._open:
                return
            if self._closing is not None:
                code, reason = self._closing
                await self._send({"type": "websocket.close", "code": code, "reason": reason})
                self._close_sent = True
                return

    def _clear(self) -> None:
        self.outbox.clear()
        self.outbox.release()


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
            await self._http(scope, send)
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

    async def _http(self, scope: Scope, send: Send) -> None:
        path = _route_path(scope)
        gateway = self._gateway
        if gateway is None:
            await _respond(send, 503, orjson.dumps({"error": _NOT_STARTED}), _JSON)
            return
        if path == "/health":
            health = gateway.health()
            status = 200 if health["status"] == "ok" else 503
            body = orjson.dumps(health)
            await _respond(send, status, body, _JSON, head=scope["method"] == "HEAD")
        elif path == "/metrics":
            body = gateway.metrics().encode()
            content_type = b"text/plain; version=0.0.4"
            await _respond(send, 200, body, content_type, head=scope["method"] == "HEAD")
        elif path in ("/", ""):
            index = {
                "name": "pgcast",
                "version": __version__,
                "websocket": "ws",
                "health": "health",
                "metrics": "metrics",
            }
            await _respond(send, 200, orjson.dumps(index), _JSON)
        elif path == "/sse":
            message = (
                "Server-Sent Events are not served by the ASGI app yet; "
                "use the WebSocket (/ws), or run `pgcast serve` beside the app for /sse"
            )
            await _respond(send, 404, orjson.dumps({"error": message}), _JSON)
        else:
            await _respond(send, 404, b'{"error":"not found"}', _JSON)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        gateway = self._gateway
        if _route_path(scope) != "/ws":
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
    send: Send, status: int, body: bytes, content_type: bytes, *, head: bool = False
) -> None:
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


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
