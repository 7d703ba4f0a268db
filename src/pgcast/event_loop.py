"""The event loop the gateway runs on: uvloop where it is installed, else asyncio's.

The delivery path is measured on both (bench/RESULTS.md, "Event loop"); uvloop's is
the faster, so ``pgcast serve`` uses it when the ``uvloop`` package is importable.
``PGCAST_EVENT_LOOP=asyncio`` forces asyncio's loop (to compare, or to rule the loop
out when debugging); ``uvloop`` requires it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar

from .exceptions import ConfigError

__all__ = ["CHOICES", "loop_factory", "run"]

T = TypeVar("T")
CHOICES = ("auto", "uvloop", "asyncio")


def loop_factory(
    env: Mapping[str, str] | None = None,
) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory, or None for asyncio's (see the module docstring)."""
    choice = (os.environ if env is None else env).get("PGCAST_EVENT_LOOP", "auto").strip().lower()
    if choice not in CHOICES:
        raise ConfigError(
            f"PGCAST_EVENT_LOOP={choice!r} is not an event loop",
            hint="auto (uvloop when installed), uvloop or asyncio",
        )
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ConfigError(
                "PGCAST_EVENT_LOOP=uvloop but uvloop is not installed",
                hint="pip install uvloop (or pgcast[fast])",
            ) from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(
    main: Coroutine[Any, Any, T], *, serving: bool = True, env: Mapping[str, str] | None = None
) -> T:
    """``asyncio.run(main)`` on the chosen event loop.

    ``serving=False`` (one-shot commands: track, status...) always takes asyncio's: they
    deliver nothing, and asyncio's connection errors name the address they tried."""
    factory = loop_factory(env) if serving else None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
