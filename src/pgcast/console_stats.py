"""The operator console's recent history: per-second samples in a bounded ring.

Pure bookkeeping, no I/O and no clock of its own. The node reads its counters once a
second (a :class:`Reading`: totals since start and gauges of the moment) and feeds
them to :meth:`SampleRing.record` with the time of the read; the ring turns each
pair of consecutive readings into a :class:`Sample` (rates per second over the
interval actually elapsed, so a late tick does not inflate a rate) and keeps the
newest ``capacity`` of them. ``/console/api/stats`` serves :meth:`SampleRing.series`.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Mapping
from typing import Any, Final

__all__ = ["CAPACITY", "Reading", "Sample", "SampleRing"]

# Five minutes at one sample per second.
CAPACITY: Final = 300


@dataclasses.dataclass(frozen=True, slots=True)
class Reading:
    """A node's counters at one instant: totals since start, and gauges."""

    changes: int  # changes read from the log (total)
    deliveries: int  # messages delivered to subscribers (total)
    slow_closes: int  # clients closed for an overflowing outbox (total)
    connections: int
    subscriptions: int
    tables: Mapping[str, int]  # "schema.table" -> subscriptions
    listener_lag: float | None  # seconds since the last complete log read
    capture_lag: float | None  # commit to dispatch of the newest change, seconds


@dataclasses.dataclass(frozen=True, slots=True)
class Sample:
    """One interval between two readings: rates over it, gauges at its end."""

    at: float  # wall-clock time of the reading that ends the interval
    changes_per_s: float
    deliveries_per_s: float
    slow_closes: int  # clients closed as slow during the interval
    connections: int
    subscriptions: int
    listener_lag: float | None
    capture_lag: float | None


class SampleRing:
    """The newest ``capacity`` samples; older ones fall off the far end."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.samples: deque[Sample] = deque(maxlen=capacity)
        self.latest: Reading | None = None
        self._previous: tuple[float, Reading] | None = None

    def record(self, at: float, reading: Reading) -> Sample | None:
        """Add the reading taken at ``at`` (seconds); the sample it closes, if any.

        The first reading only opens an interval. A reading not later than the
        previous one (a clock step back) starts over instead of giving a negative
        or infinite rate; a counter that went down (a restarted node) counts as 0.
        """
        self.latest = reading
        previous, self._previous = self._previous, (at, reading)
        if previous is None:
            return None
        then, before = previous
        elapsed = at - then
        if elapsed <= 0:
            return None
        sample = Sample(
            at=at,
            changes_per_s=_rate(reading.changes - before.changes, elapsed),
            deliveries_per_s=_rate(reading.deliveries - before.deliveries, elapsed),
            slow_closes=max(0, reading.slow_closes - before.slow_closes),
            connections=reading.connections,
            subscriptions=reading.subscriptions,
            listener_lag=reading.listener_lag,
            capture_lag=reading.capture_lag,
        )
        self.samples.append(sample)
        return sample

    def series(self, seconds: int | None = None) -> dict[str, list[Any]]:
        """The newest samples (all, or those of the last ``seconds`` samples), as
        one list per field: the shape the console's charts draw."""
        samples = list(self.samples)
        if seconds is not None:
            samples = samples[-seconds:] if seconds > 0 else []
        return {
            field.name: [getattr(sample, field.name) for sample in samples]
            for field in dataclasses.fields(Sample)
        }


def _rate(delta: int, elapsed: float) -> float:
    return round(max(0, delta) / elapsed, 3)
