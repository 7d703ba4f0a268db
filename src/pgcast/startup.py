"""Reaching PostgreSQL when the gateway starts: retry with backoff, and say so.

A gateway often starts before its database (a container restart, a compose file, a
host reboot): an unreachable server is waited for, one log line per attempt. A
server that answers but refuses (wrong password, unknown role or database) will not
change its mind, so that is an error at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any, TypeVar

import asyncpg

from .backoff import backoff
from .changelog import DATABASE_ERRORS
from .config import redact_url
from .exceptions import DatabaseUnavailable

__all__ = ["connect_with_retry", "one_line", "wait_unless_stopped"]

logger = logging.getLogger("pgcast.server")

T = TypeVar("T")

# Answers from a live server that retrying cannot change.
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.InvalidPasswordError,
    asyncpg.InvalidAuthorizationSpecificationError,
    asyncpg.InvalidCatalogNameError,
)
HINT = "check --database-url / PGCAST_DATABASE_URL / DATABASE_URL"


def one_line(exc: BaseException) -> str:
    """``exc`` as one short line (asyncpg's messages can span several)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


async def connect_with_retry(
    connect: Callable[[], Awaitable[T]],
    dsn: str,
    *,
    retry: bool = True,
    delays: Iterator[float] | None = None,
) -> T:
    """Run ``connect`` until it succeeds; between failures, log and wait (backoff).

    Raises ``DatabaseUnavailable`` at once for a refusal (PERMANENT_ERRORS), and for
    any failure when ``retry`` is False. Cancel the caller to give up waiting.
    """
    where = redact_url(dsn)
    delays = delays if delays is not None else backoff(initial=0.5, maximum=10.0)
    while True:
        try:
            return await connect()
        except PERMANENT_ERRORS as exc:
            raise DatabaseUnavailable(
                f"cannot connect to PostgreSQL at {where}: {one_line(exc)}", hint=HINT
            ) from None
        except DATABASE_ERRORS as exc:
            if not retry:
                raise DatabaseUnavailable(
                    f"cannot connect to PostgreSQL: {one_line(exc)}", hint=HINT
                ) from None
            delay = next(delays)
            logger.warning(
                "cannot connect to PostgreSQL at %s (%s); retrying in %.1f s",
                where,
                one_line(exc),
                delay,
            )
            logger.debug("connection attempt failed", exc_info=True)
            await asyncio.sleep(delay)


async def wait_unless_stopped(work: Coroutine[Any, Any, None], stop: asyncio.Event | None) -> bool:
    """Run ``work`` (a start that may wait for the database) unless ``stop`` is set first
    (Ctrl-C while waiting): True if it finished, False if it was cancelled."""
    task = asyncio.ensure_future(work)
    if stop is None:
        await task
        return True
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if task.cancelled():
        return False
    task.result()
    return True
