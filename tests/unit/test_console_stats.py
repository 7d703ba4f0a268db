"""The console's per-second sample ring (pure: readings in, samples out)."""

from __future__ import annotations

import dataclasses

import pytest

from pgcast.console_stats import Reading, Sample, SampleRing

ZERO = Reading(
    changes=0,
    deliveries=0,
    slow_closes=0,
    connections=0,
    subscriptions=0,
    tables={},
    listener_lag=None,
    capture_lag=None,
)


def reading(**fields: object) -> Reading:
    return dataclasses.replace(ZERO, **fields)  # type: ignore[arg-type]


def test_the_first_reading_only_opens_an_interval() -> None:
    ring = SampleRing()
    assert ring.record(100.0, reading(changes=50)) is None
    assert list(ring.samples) == []
    assert ring.latest == reading(changes=50)


def test_rates_are_per_second_over_the_time_that_really_passed() -> None:
    ring = SampleRing()
    ring.record(100.0, reading(changes=10, deliveries=20))
    # A late tick (2 s instead of 1 s) must not double the rate.
    sample = ring.record(102.0, reading(changes=30, deliveries=80, connections=3))
    assert sample is not None
    assert sample.changes_per_s == 10.0
    assert sample.deliveries_per_s == 30.0
    assert sample.connections == 3
    assert sample.at == 102.0


def test_slow_closes_are_counted_per_interval() -> None:
    ring = SampleRing()
    ring.record(1.0, reading(slow_closes=2))
    first = ring.record(2.0, reading(slow_closes=5))
    second = ring.record(3.0, reading(slow_closes=5))
    assert first is not None and first.slow_closes == 3
    assert second is not None and second.slow_closes == 0


def test_gauges_are_those_of_the_interval_end() -> None:
    ring = SampleRing()
    ring.record(1.0, reading(listener_lag=9.0, capture_lag=9.0, subscriptions=1))
    sample = ring.record(2.0, reading(listener_lag=0.25, capture_lag=0.01, subscriptions=4))
    assert sample == Sample(
        at=2.0,
        changes_per_s=0.0,
        deliveries_per_s=0.0,
        slow_closes=0,
        connections=0,
        subscriptions=4,
        listener_lag=0.25,
        capture_lag=0.01,
    )


@pytest.mark.parametrize("at", [5.0, 4.0], ids=["same-time", "clock-stepped-back"])
def test_a_reading_not_later_than_the_previous_gives_no_sample(at: float) -> None:
    ring = SampleRing()
    ring.record(5.0, reading(changes=1))
    assert ring.record(at, reading(changes=100)) is None
    # The next interval is measured from the reading that replaced it.
    sample = ring.record(at + 1, reading(changes=103))
    assert sample is not None and sample.changes_per_s == 3.0


def test_a_counter_that_went_down_counts_as_no_change() -> None:
    ring = SampleRing()
    ring.record(1.0, reading(changes=1000, deliveries=1000, slow_closes=9))
    sample = ring.record(2.0, reading(changes=5, deliveries=5, slow_closes=0))
    assert sample is not None
    assert (sample.changes_per_s, sample.deliveries_per_s, sample.slow_closes) == (0.0, 0.0, 0)


def test_the_ring_keeps_only_the_newest_samples() -> None:
    ring = SampleRing(capacity=3)
    for second in range(10):
        ring.record(float(second), reading(changes=second * second))
    assert [sample.at for sample in ring.samples] == [7.0, 8.0, 9.0]
    assert ring.series()["changes_per_s"] == [13.0, 15.0, 17.0]


def test_the_series_is_one_list_per_field_and_can_be_trimmed() -> None:
    ring = SampleRing()
    for second in range(5):
        ring.record(float(second), reading(changes=second * 2, connections=second))
    series = ring.series()
    assert set(series) == {field.name for field in dataclasses.fields(Sample)}
    assert series["connections"] == [1, 2, 3, 4]
    assert ring.series(2)["connections"] == [3, 4]
    assert ring.series(100)["connections"] == [1, 2, 3, 4]
    assert ring.series(0)["connections"] == []


def test_a_ring_without_room_is_refused() -> None:
    with pytest.raises(ValueError, match="capacity"):
        SampleRing(capacity=0)


# The console's token check (pgcast.console.authorized) -------------------------------

TOKEN = "s3cret-admin-token-0123456789"


@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer", "Bearer ", "Basic " + TOKEN, TOKEN, "Token " + TOKEN],
    ids=["none", "empty", "no-token", "blank-token", "basic", "bare", "other-scheme"],
)
def test_a_request_without_a_bearer_token_is_challenged(header: str | None) -> None:
    from pgcast.console import authorized

    refusal = authorized(header, TOKEN)
    assert refusal is not None and refusal.status == 401
    assert ("WWW-Authenticate", 'Bearer realm="pgcast console"') in refusal.headers
    assert TOKEN.encode() not in refusal.body


@pytest.mark.parametrize(
    "given",
    [TOKEN[:-1], TOKEN + "x", TOKEN.upper(), "x" * 10_000, "\udcff" * 4, "é" + TOKEN[1:]],
    ids=["prefix", "longer", "case", "huge", "lone-surrogates", "non-ascii"],
)
def test_a_wrong_bearer_token_is_forbidden(given: str) -> None:
    from pgcast.console import authorized

    refusal = authorized("Bearer " + given, TOKEN)
    assert refusal is not None and refusal.status == 403
    assert TOKEN.encode() not in refusal.body


def test_the_right_bearer_token_is_accepted_whatever_the_scheme_case() -> None:
    from pgcast.console import authorized

    assert authorized("Bearer " + TOKEN, TOKEN) is None
    assert authorized("bearer  " + TOKEN + " ", TOKEN) is None
