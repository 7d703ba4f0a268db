"""Server-side change hooks: Python callbacks run for each committed change of a table.

The gateway's dispatch path only appends ``(hook, change)`` pairs to one bounded
queue (a dict lookup and an append per matching hook; nothing when no hook is
registered). One worker task, owned by :class:`ChangeHooks` and started and stopped
with the gateway, decodes each change and calls its hooks in commit order:

* an ``async def`` hook is awaited in the event loop;
* a plain ``def`` hook runs in a worker thread (``asyncio.to_thread``), so a blocking
  call (an ORM write, SMTP) never stalls the loop; it is still awaited, so hooks run
  one at a time and in order.

A hook that raises is logged with its change id and counted; the next change is
handled as usual. A queue that overflows (hooks slower than the change rate for too
long) drops the newest changes, logs it and counts them in
``pgcast_hook_drops_total``: hooks are best effort on the node that runs them. An
application that must see every change exactly once reads with the Python client
and its own resume position instead (see docs/embedding.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from .events import OPS, ChangeEvent
from .exactjson import exact_loads
from .metrics import Registry

logger = logging.getLogger("pgcast.hooks")

QUEUE_LIMIT = 10_000  # pending (hook, change) pairs before new ones are dropped

Change = dict[str, Any]
HookFunction = Callable[[Change], Any]


@dataclass(frozen=True)
class Hook:
    """One registered callback: ``table`` (and optionally ``schema``), for ``events``."""

    function: HookFunction
    table: str
    schema: str | None
    events: frozenset[str]

    @property
    def name(self) -> str:
        return getattr(self.function, "__qualname__", repr(self.function))


def decode(change: ChangeEvent) -> Change:
    """The change as a subscriber receives it, without ``type`` and ``sub``.

    Numbers orjson cannot hold (1e400, more than 64-bit integers in some builds)
    are read exactly (int or Decimal) rather than failing the hook call.
    """
    text = b"{" + change.body()
    try:
        decoded: Change = orjson.loads(text)
    except orjson.JSONDecodeError:
        decoded = exact_loads(text)
    return decoded


class ChangeHooks:
    """The hooks registered on one gateway, their queue and their worker task."""

    def __init__(self, *, queue_limit: int = QUEUE_LIMIT) -> None:
        self._by_table: dict[str, list[Hook]] = {}
        self._queue: asyncio.Queue[tuple[Hook, ChangeEvent]] | None = None
        self._queue_limit = queue_limit
        self._worker: asyncio.Task[None] | None = None
        self.calls = 0
        self.errors = 0
        self.dropped = 0

    def __bool__(self) -> bool:
        return bool(self._by_table)

    def on_change(
        self,
        table: str,
        *,
        schema: str | None = None,
        events: tuple[str, ...] | list[str] | None = None,
    ) -> Callable[[HookFunction], HookFunction]:
        """Decorator: call the function with each committed change of ``table``.

        ``schema`` restricts it to one schema (default: a table of that name in any
        tracked schema); ``events`` to some operations (INSERT, UPDATE, DELETE,
        TRUNCATE; default all). Returns the function unchanged.
        """
        wanted = frozenset(e.upper() for e in events) if events is not None else OPS
        if not wanted or not wanted <= OPS:
            raise ValueError(f"events must be some of {sorted(OPS)}, not {events!r}")
        if not table:
            raise ValueError("on_change needs a table name")

        def register(function: HookFunction) -> HookFunction:
            if not callable(function):
                raise TypeError(f"on_change({table!r}) decorates a function, not {function!r}")
            hook = Hook(function, table, schema, wanted)
            self._by_table.setdefault(table, []).append(hook)
            return function

        return register

    @property
    def hooks(self) -> list[Hook]:
        return [hook for hooks in self._by_table.values() for hook in hooks]

    def register_metrics(self, registry: Registry) -> None:
        registry.counter("pgcast_hook_calls_total", "Change hook calls.", lambda: self.calls)
        registry.counter(
            "pgcast_hook_errors_total", "Change hook calls that raised.", lambda: self.errors
        )
        registry.counter(
            "pgcast_hook_drops_total",
            "Changes not passed to a hook because its queue was full.",
            lambda: self.dropped,
        )

    # lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker (in the running loop); a no-op when no hook is registered."""
        if not self._by_table or self._worker is not None:
            return
        self._queue = asyncio.Queue(self._queue_limit)
        self._worker = asyncio.create_task(self._work(), name="pgcast-hooks")

    async def stop(self, *, timeout: float = 5.0) -> None:
        """Let the worker finish the queued calls (up to ``timeout``), then stop it."""
        worker, queue = self._worker, self._queue
        if worker is None or queue is None:
            return
        if not worker.done():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await queue.join()
        if queue.qsize():
            logger.warning("stopping with %d change hook calls not made", queue.qsize())
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker
        self._worker = self._queue = None

    # hot path -------------------------------------------------------------------------

    def feed(self, changes: list[ChangeEvent]) -> None:
        """Queue the hook calls for a batch of changes; never blocks."""
        queue = self._queue
        if queue is None:
            return
        by_table = self._by_table
        for change in changes:
            hooks = by_table.get(change.table)
            if not hooks:
                continue
            for hook in hooks:
                if change.op not in hook.events or (
                    hook.schema is not None and hook.schema != change.schema
                ):
                    continue
                try:
                    queue.put_nowait((hook, change))
                except asyncio.QueueFull:
                    self.dropped += 1
                    if self.dropped == 1 or self.dropped % 1000 == 0:
                        logger.error(
                            "change hook queue full (%d pending): dropped change %s for %s "
                            "(%d dropped so far); the hooks are slower than the changes",
                            queue.qsize(),
                            change.id,
                            hook.name,
                            self.dropped,
                        )

    # worker ---------------------------------------------------------------------------

    async def _work(self) -> None:
        assert self._queue is not None
        queue = self._queue
        decoded: tuple[ChangeEvent | None, Change] = (None, {})
        while True:
            hook, change = await queue.get()
            try:
                if decoded[0] is not change:
                    decoded = (change, decode(change))
                # Each hook gets its own copy: one hook mutating it cannot affect another.
                await self._call(hook, dict(decoded[1]))
            finally:
                queue.task_done()

    async def _call(self, hook: Hook, change: Change) -> None:
        self.calls += 1
        try:
            if inspect.iscoroutinefunction(hook.function):
                await hook.function(change)
            else:
                result = await asyncio.to_thread(hook.function, change)
                if inspect.isawaitable(result):  # a callable object with an async __call__
                    await _awaited(result)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.errors += 1
            logger.exception(
                "change hook %s failed for change %s (%s %s.%s)",
                hook.name,
                change.get("id"),
                change.get("op"),
                change.get("schema"),
                change.get("table"),
            )


async def _awaited(result: Awaitable[Any]) -> None:
    await result


__all__ = ["Change", "ChangeHooks", "Hook", "decode"]
