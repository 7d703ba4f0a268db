"""When the log reader reads next (pgcast.wakeup.PollPolicy), without a database."""

from __future__ import annotations

import pytest

from pgcast.wakeup import ARM_AFTER_EMPTY_READS, WRITERS_OPEN_MAX_DELAY, NextRead, PollPolicy


def empty(
    policy: PollPolicy, *, armed_read: bool, armed: bool | None = True, writers: bool | None = False
) -> NextRead:
    return policy.after_read(
        found=False, more=False, armed_read=armed_read, armed=armed, writers=writers
    )


def test_reads_again_after_the_fast_interval_while_changes_flow() -> None:
    policy = PollPolicy(fast=0.002, idle=1.0)
    step = policy.after_read(found=True, more=False, armed_read=False)
    assert (step.delay, step.arm) == (0.002, False)
    assert policy.after_read(found=True, more=True, armed_read=False).delay == 0.0


def test_empty_reads_back_off_then_arm_then_sleep_until_woken() -> None:
    policy = PollPolicy(fast=0.002, idle=1.0)
    policy.after_read(found=True, more=False, armed_read=False)
    first = empty(policy, armed_read=False)
    assert (first.delay, first.arm) == (0.004, ARM_AFTER_EMPTY_READS <= 1)
    second = empty(policy, armed_read=False)
    assert (second.delay, second.arm) == (0.008, True)
    # The arming read itself is not enough: a capture that ended between its
    # snapshot and its check is only visible to the next read.
    arming = empty(policy, armed_read=True)
    assert arming.delay < 1.0 and not policy.asleep
    confirm = empty(policy, armed_read=True)
    assert (confirm.delay, confirm.arm) == (1.0, True) and policy.asleep
    # Idle: one read per idle interval, forever, without overflowing the backoff.
    for _ in range(2000):
        assert empty(policy, armed_read=True).delay == 1.0
    woken = policy.after_read(found=True, more=False, armed_read=True)
    assert woken.delay == 0.002 and not policy.asleep


@pytest.mark.parametrize(
    ("armed", "writers"),
    [(True, True), (None, False), (None, None), (False, False)],
)
def test_never_sleeps_long_unless_armed_with_no_writer_open(
    armed: bool | None, writers: bool | None
) -> None:
    policy = PollPolicy(fast=0.002, idle=5.0)
    delays = [empty(policy, armed_read=True, armed=armed, writers=writers).delay for _ in range(30)]
    assert not policy.asleep
    ceiling = WRITERS_OPEN_MAX_DELAY if writers else 5.0
    assert max(delays) == ceiling
    assert delays == sorted(delays)  # a backoff, not a fixed rate


def test_fast_interval_never_exceeds_the_idle_one() -> None:
    policy = PollPolicy(fast=3.0, idle=0.5)
    assert policy.after_read(found=True, more=False, armed_read=False).delay == 0.5
