"""The client's WebSocket link: open it, read frames exactly, keep it alive, and tell
the gateway's close code from our own.

These are the parts of a connection that do not depend on subscriptions; the
``Client`` (``_connection.py``) runs one link at a time and reconnects.
"""

from __future__ import annotations

import asyncio
import decimal
import json
import logging
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from pgcast.client._protocol import encode
from pgcast.exceptions import ConnectionRejected

logger = logging.getLogger("pgcast.client")

_PING = encode({"type": "ping"})


async def open_link(
    url: str,
    token: str | None,
    *,
    open_timeout: float,
    close_timeout: float,
    max_size: int | None,
) -> ClientConnection | ConnectionRejected | None:
    """The open WebSocket; a rejection (401/403: do not retry); None to retry."""
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        return await ws_connect(
            url,
            additional_headers=headers,
            open_timeout=open_timeout,
            close_timeout=close_timeout,
            ping_interval=None,  # application-level ping/pong, see keep_alive
            max_size=max_size,
        )
    except InvalidStatus as exc:
        status = exc.response.status_code
        if status in (401, 403):
            code = 4501 if status == 401 else 4502
            reason = exc.response.body.decode(errors="replace").strip() if exc.response.body else ""
            return ConnectionRejected(code, reason, http_status=status)
        logger.warning("connecting to %s failed: %s", url, exc)
        return None
    except (TimeoutError, WebSocketException) as exc:
        logger.warning("connecting to %s failed: %s", url, exc)
        return None
    except OSError as exc:
        # Nothing listens there (the usual first-run mistake): say what to start.
        logger.warning(
            "cannot reach a gateway at %s (%s): is `pgcast serve` running there? retrying",
            url,
            " ".join(str(exc).split()),
        )
        return None


async def keep_alive(
    ws: ClientConnection,
    interval: float,
    timeout: float,
    activity: asyncio.Event,
    url: str,
) -> tuple[int | None, str]:
    """Ping every ``interval`` s; end (to reconnect) when nothing arrives within
    ``timeout`` (the reader sets ``activity`` on every frame: any frame proves the
    link alive). Returns the close code and reason."""
    try:
        while True:
            await asyncio.sleep(interval)
            activity.clear()
            await ws.send(_PING)
            try:
                async with asyncio.timeout(timeout):
                    await activity.wait()
            except TimeoutError:
                logger.warning("no pong from %s within %ss; reconnecting", url, timeout)
                return None, "heartbeat timeout"
    except ConnectionClosed as exc:
        return server_close(exc)


def decode(raw: str | bytes) -> dict[str, Any] | None:
    """A frame as a dict (numbers exactly), or None if it is not a JSON object."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        # orjson refuses numbers beyond the float range (a numeric 1e400): read those
        # exactly rather than drop the change.
        value = None
        for parse_int in (int, decimal.Decimal):  # Decimal past int's 4,300-digit limit
            try:
                value = json.loads(raw, parse_float=decimal.Decimal, parse_int=parse_int)
                break
            except (ValueError, RecursionError):
                continue
    return value if isinstance(value, dict) else None


def server_close(exc: ConnectionClosed) -> tuple[int | None, str]:
    """The close code the gateway chose, or None if it chose none.

    A close we initiated (e.g. 1009 because a frame from the gateway exceeded
    max_size) is not the gateway's verdict, so it is reported as None (reconnect).
    """
    received, sent = exc.rcvd, exc.sent
    if received is None:
        return None, ""
    if sent is not None and not exc.rcvd_then_sent:
        return None, received.reason
    return received.code, received.reason
