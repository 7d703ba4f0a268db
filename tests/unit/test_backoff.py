"""pgcast.backoff: capped exponential delays with bounded jitter, pure and seedable."""

from __future__ import annotations

import itertools
import random

import pytest

from pgcast.backoff import backoff


def take(n: int, delays: object) -> list[float]:
    return list(itertools.islice(delays, n))  # type: ignore[call-overload]


def test_without_jitter_delays_grow_by_factor_and_stop_at_maximum() -> None:
    delays = take(8, backoff(initial=0.1, maximum=2.0, factor=2.0, jitter=0.0))
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0])


@pytest.mark.parametrize("jitter", [0.0, 0.25, 0.5, 1.0])
def test_jittered_delays_stay_within_their_documented_band(jitter: float) -> None:
    rng = random.Random(7)
    nominal = take(12, backoff(initial=0.05, maximum=1.0, factor=3.0, jitter=0.0))
    for _ in range(200):
        delays = take(12, backoff(initial=0.05, maximum=1.0, factor=3.0, jitter=jitter, rng=rng))
        for delay, cap in zip(delays, nominal, strict=True):
            assert cap * (1 - jitter) - 1e-12 <= delay <= cap + 1e-12
            assert delay <= 1.0


def test_equal_jitter_is_the_default_and_never_retries_immediately() -> None:
    rng = random.Random(1)
    firsts = [next(backoff(initial=1.0, rng=rng)) for _ in range(500)]
    assert min(firsts) >= 0.5
    assert max(firsts) <= 1.0
    assert max(firsts) - min(firsts) > 0.4  # actually random, spread over the band


def test_full_jitter_spreads_delays_down_to_zero() -> None:
    rng = random.Random(2)
    firsts = [next(backoff(initial=1.0, jitter=1.0, rng=rng)) for _ in range(500)]
    assert min(firsts) < 0.05
    assert max(firsts) > 0.95


def test_same_seed_gives_same_delays() -> None:
    first = take(10, backoff(rng=random.Random(42)))
    second = take(10, backoff(rng=random.Random(42)))
    assert first == second
    assert take(10, backoff(rng=random.Random(43))) != first


def test_reset_is_a_fresh_generator_starting_at_initial_again() -> None:
    delays = backoff(initial=0.1, maximum=5.0, jitter=0.0)
    assert take(6, delays)[-1] == pytest.approx(3.2)
    delays = backoff(initial=0.1, maximum=5.0, jitter=0.0)  # after a success
    assert next(delays) == pytest.approx(0.1)


def test_many_retries_stay_capped_without_overflow() -> None:
    delays = backoff(initial=1.0, maximum=30.0, factor=10.0, jitter=0.0)
    assert take(5000, delays)[-1] == 30.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial": 0.0},
        {"initial": -1.0},
        {"initial": 5.0, "maximum": 1.0},
        {"factor": 0.5},
        {"jitter": -0.1},
        {"jitter": 1.5},
    ],
)
def test_nonsense_parameters_are_refused_at_the_call(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        backoff(**kwargs)  # type: ignore[arg-type]
