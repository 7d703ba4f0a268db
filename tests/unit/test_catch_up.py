"""The catch-up gate (slots, one per tenant, FIFO, bounded wait) and the bounded live buffer."""

from __future__ import annotations

import asyncio

import pytest

from pgcast.catch_up import CatchUpGate
from pgcast.events import ChangeEvent, Horizon
from pgcast.exceptions import ProtocolError
from pgcast.hub import Subscription
from pgcast.log_replay import malformed_position, resync_reason


async def settle() -> None:
    """Let every ready task run until it blocks (no timer involved: pure asyncio)."""
    for _ in range(10):
        await asyncio.sleep(0)


async def test_gate_holds_at_most_limit_and_one_per_key_in_fifo_order() -> None:
    gate = CatchUpGate(2)
    order: list[str] = []
    release = asyncio.Event()

    async def hold(key: str, name: str) -> None:
        async with gate.slot(key, 5):
            order.append(name)
            await release.wait()

    tasks = [
        asyncio.create_task(hold("a", "a1")),
        asyncio.create_task(hold("a", "a2")),  # same tenant: waits although a slot is free
        asyncio.create_task(hold("b", "b1")),
        asyncio.create_task(hold("c", "c1")),  # both slots in use: waits
    ]
    await settle()
    assert order == ["a1", "b1"] and gate.waiting == 2
    release.set()
    await asyncio.gather(*tasks)
    assert order[2:] in (["a2", "c1"], ["c1", "a2"]) and gate.running == 0


async def test_gate_answers_unavailable_when_the_wait_runs_out() -> None:
    gate = CatchUpGate(1)
    async with gate.slot("a", 5):
        with pytest.raises(ProtocolError) as refused:
            async with gate.slot("b", 0.05):
                pass
    assert refused.value.code == "unavailable"
    assert gate.rejected == 1 and gate.waiting == 0 and gate.running == 0


async def test_a_cancelled_waiter_leaves_the_queue() -> None:
    gate = CatchUpGate(1)
    async with gate.slot("a", 5):
        waiter = asyncio.create_task(gate.slot("b", 5).__aenter__())
        await settle()
        assert gate.waiting == 1
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert gate.waiting == 0
    assert gate.running == 0


def change(id: int, txid: int = 10) -> ChangeEvent:
    return ChangeEvent.from_dicts(
        id=id, schema="public", table="t", op="INSERT", record={"id": id}, txid=txid
    )


def test_the_catch_up_buffer_holds_at_most_its_limit_and_says_so() -> None:
    sub = Subscription("s", None, schema="public", table="t", events=frozenset({"INSERT"}))
    sub.begin_catch_up(limit=3)
    assert sub.buffer is not None
    for n in range(1, 6):
        sub.buffer.append(change(n))
    assert len(sub.buffer) == 3 and sub.buffer.overflowed
    sub.buffer.restart()
    assert len(sub.buffer) == 0 and not sub.buffer.overflowed


def test_positions_ahead_of_the_log_resync_and_impossible_ones_are_malformed() -> None:
    now = Horizon(100, frozenset({50}), 60)
    assert resync_reason(100, now, 0) is None
    assert resync_reason(Horizon(90, frozenset({40}), 55), now, 0) is None
    assert "ahead" in (resync_reason(101, now, 0) or "")
    assert "ahead" in (resync_reason(Horizon(90, frozenset(), 61), now, 0) or "")
    assert "pruned" in (resync_reason(10, now, 20) or "")
    assert resync_reason(150, Horizon(0, frozenset(), 60), 150) is None  # all pruned: head 0
    assert malformed_position(Horizon(2**63 - 1, frozenset(), 0)) is not None
    assert malformed_position(Horizon(5, frozenset({10}), 10)) is not None
    assert malformed_position(Horizon(5, frozenset({9}), 10)) is None
