"""Prometheus metrics: counters, gauges and histograms, rendered in the text format.

Pure bookkeeping with no I/O; the gateway updates them on its hot path (each update
is an integer or float addition) and renders them for ``GET /metrics``.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Histogram:
    """A Prometheus histogram with fixed buckets (upper bounds, seconds)."""

    def __init__(self, name: str, help: str, buckets: Sequence[float] = LATENCY_BUCKETS) -> None:
        self.name = name
        self.help = help
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        if math.isnan(value):
            return
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        cumulative = 0
        for bound, count in zip(self.buckets, self.counts, strict=False):
            cumulative += count
            lines.append(f'{self.name}_bucket{{le="{bound}"}} {cumulative}')
        lines.append(f'{self.name}_bucket{{le="+Inf"}} {self.count}')
        lines.append(f"{self.name}_sum {self.sum}")
        lines.append(f"{self.name}_count {self.count}")
        return lines


class Registry:
    """Named counters and gauges (read through callables) plus histograms."""

    def __init__(self) -> None:
        self._values: list[tuple[str, str, str, Callable[[], float | None]]] = []
        self.histograms: list[Histogram] = []

    def counter(self, name: str, help: str, read: Callable[[], float | None]) -> None:
        self._values.append((name, help, "counter", read))

    def gauge(self, name: str, help: str, read: Callable[[], float | None]) -> None:
        self._values.append((name, help, "gauge", read))

    def histogram(self, name: str, help: str) -> Histogram:
        histogram = Histogram(name, help)
        self.histograms.append(histogram)
        return histogram

    def render(self) -> str:
        lines: list[str] = []
        for name, help, kind, read in self._values:
            value = read()
            if value is None:
                continue
            lines += [f"# HELP {name} {help}", f"# TYPE {name} {kind}", f"{name} {value}"]
        for histogram in self.histograms:
            lines += histogram.render()
        return "\n".join(lines) + "\n"
