"""When the log reader reads next: adaptive polling plus a one-shot armed wake-up.

Why not a NOTIFY per transaction: PostgreSQL makes every transaction that called
NOTIFY take a cluster-wide lock at pre-commit and hold it until its commit record
is flushed (``PreCommit_Notify`` in ``src/backend/commands/async.c``). Notifying
commits therefore run one at a time and lose group commit: 16 writers of a tracked
table committed 3.7-4x slower than untracked ones (bench/RESULTS.md). So the capture
trigger does not notify, and the reader finds commits itself:

* **While changes flow** it reads again ``fast`` seconds after a read that found
  some (at once if a page was full), so a commit waits about ``fast / 2`` plus one
  read. Empty reads double the delay, up to ``idle`` (``poll_interval``).
* **When idle** it *arms* the wake sequence (``pgcast.wake``, see
  :data:`pgcast.capture.sql.WAKE_SEQUENCE`): the first capture that claims it sends
  one ``pg_notify``, every other capture sends none. So an idle gateway still wakes
  within milliseconds of a commit, at the cost of at most one notifying transaction
  per arming, and an idle reader costs one query per ``idle`` seconds.

Sleeping long is only safe when no commit can go unnoticed. A capture that ran
before the arming did not see it armed; if its transaction is still open it will
commit without a notification. So the arming statement also checks, *after* arming,
whether any other session holds a write lock on ``pgcast.changes`` (every capturing
transaction does, from its first log row until it ends). If none does, every log row
not visible to the *next* read's snapshot comes from a capture that runs after the
arming, which wakes us. Only when an arming read saw no open writer and the read
after it found nothing does the reader sleep for ``idle``.

Residual case, bounded by ``idle``: the capture that claimed the wake-up rolls back
(or a concurrent capture claims it in the instant of re-arming); no notification
comes, and the next idle poll, at most ``idle`` seconds later, reads the changes.

A database without the sequence (schema older than version 2, whose trigger still
notifies per transaction) or a gateway role without ``SELECT, UPDATE`` on it: the
arming yields NULL and the reader never sleeps longer than the backoff allows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .capture.sql import WAKE_STRIDE

if TYPE_CHECKING:
    from .changelog import LogRead

__all__ = [
    "ARM_AFTER_EMPTY_READS",
    "ARM_AND_CHECK",
    "WRITERS_OPEN_MAX_DELAY",
    "NextRead",
    "PollPolicy",
]

ARM_AFTER_EMPTY_READS = 2
"""Consecutive empty reads before the reader arms: a short pause between commits
should not make the next writer pay for a notification."""

WRITERS_OPEN_MAX_DELAY = 0.1
"""Longest backoff while a capturing transaction that may not notify is open: it
bounds how late such a transaction's commit is seen, at ~10 queries/s per node."""

# One row (armed, writers) when $5 is true, no row otherwise. The CASE arms before
# the correlated EXISTS looks at pg_locks (the EXISTS needs a.armed, so it runs after
# the sub-select that computed it; OFFSET 0 keeps that sub-select from being merged
# into the outer one). setval(v, false) makes the next nextval return v, a multiple
# of WAKE_STRIDE, which is how the trigger recognises the one capture that may
# notify. armed: true (armed now), NULL (no sequence, or no rights on it: arming is
# unavailable).
ARM_AND_CHECK = f"""
SELECT a.armed,
       EXISTS (SELECT FROM pg_catalog.pg_locks AS l
                WHERE a.armed
                  AND l.locktype = 'relation'
                  AND l.mode = 'RowExclusiveLock'
                  AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d
                                     WHERE d.datname = current_database())
                  AND l.relation = to_regclass('pgcast.changes')
                  AND l.pid <> pg_backend_pid()) AS writers
  FROM (SELECT CASE
                 WHEN NOT has_sequence_privilege(w.s, 'SELECT') THEN NULL
                 WHEN pg_sequence_last_value(w.s) IS NULL THEN true
                 WHEN has_sequence_privilege(w.s, 'UPDATE')
                 THEN setval(w.s,
                             (pg_sequence_last_value(w.s) / {WAKE_STRIDE} + 1) * {WAKE_STRIDE},
                             false) IS NOT NULL
               END AS armed
          FROM (SELECT to_regclass('pgcast.wake') AS s) AS w
         WHERE $5::boolean AND w.s IS NOT NULL
        OFFSET 0) AS a
"""


@dataclass(frozen=True)
class NextRead:
    """What the reader does after a read: wait ``delay`` seconds (or for a wake-up
    notification, whichever comes first), then read, arming first if ``arm``."""

    delay: float
    arm: bool


class PollPolicy:
    """Pure decision of when to read next, from what the last reads found."""

    def __init__(self, *, fast: float, idle: float) -> None:
        self.idle = idle
        self.fast = min(fast, idle)
        self.empty_reads = 0
        self.asleep = False  # the last decision was the idle sleep (woken by the wake-up)
        # The latest arming read saw the wake-up armed and no open log writer, and no
        # read since found changes.
        self._safe = False
        # The latest arming read saw another session writing the log: a capture that
        # may have run before the arming, whose commit will not wake us.
        self._writers = False

    def after(self, read: LogRead, *, armed_read: bool) -> NextRead:
        """``after_read`` for a live read of the log (``changelog.read_new``)."""
        return self.after_read(
            found=bool(read.changes) or read.gap_through is not None,
            more=read.more,
            armed_read=armed_read,
            armed=read.armed,
            writers=read.writers,
        )

    def after_read(
        self,
        *,
        found: bool,
        more: bool,
        armed_read: bool,
        armed: bool | None = None,
        writers: bool | None = None,
    ) -> NextRead:
        self.asleep = False
        if found:
            self.empty_reads = 0
            self._safe = False
            self._writers = False
            return NextRead(0.0 if more else self.fast, arm=False)
        # The check of an arming read counts only for the reads after it: a capture
        # that ran before the arming and ended before the check is visible only to a
        # later snapshot.
        safe_before = self._safe
        if armed_read:
            self._safe = armed is True and writers is False
            self._writers = armed is True and writers is True
        self.empty_reads += 1
        if safe_before:
            self.asleep = True
            return NextRead(self.idle, arm=True)
        ceiling = min(self.idle, WRITERS_OPEN_MAX_DELAY) if self._writers else self.idle
        delay = min(ceiling, self.fast * 2.0 ** min(self.empty_reads, 40))
        return NextRead(delay, arm=self.empty_reads >= ARM_AFTER_EMPTY_READS)
