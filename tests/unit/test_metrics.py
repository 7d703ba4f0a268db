"""Metrics render in the Prometheus text format with cumulative buckets."""

from __future__ import annotations

from pgcast.metrics import Registry


def test_counters_gauges_and_histograms_render() -> None:
    registry = Registry()
    total = {"n": 3}
    registry.counter("pgcast_changes_total", "Changes read.", lambda: total["n"])
    registry.gauge("pgcast_lag_seconds", "Lag.", lambda: None)  # unknown: omitted
    latency = registry.histogram("pgcast_dispatch_seconds", "Dispatch time.")
    for value in (0.0001, 0.003, 0.003, 7.0, float("nan")):
        latency.observe(value)
    text = registry.render()
    assert "pgcast_changes_total 3" in text
    assert "pgcast_lag_seconds" not in text
    assert 'pgcast_dispatch_seconds_bucket{le="0.0005"} 1' in text
    assert 'pgcast_dispatch_seconds_bucket{le="0.005"} 3' in text
    assert 'pgcast_dispatch_seconds_bucket{le="2.5"} 3' in text
    assert 'pgcast_dispatch_seconds_bucket{le="+Inf"} 4' in text
    assert "pgcast_dispatch_seconds_count 4" in text
