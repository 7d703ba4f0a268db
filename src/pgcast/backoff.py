"""Reconnect delays: a pure, capped, exponential backoff generator with jitter.

Used by the Python client (gateway reconnects) and by the gateway's LISTEN loop
(PostgreSQL reconnects). Resetting after a success is the caller's job and is one
line: drop the iterator and call :func:`backoff` again.

Jitter is a *blend* between no jitter and "full jitter", chosen by ``jitter``::

    d     = min(maximum, initial * factor ** attempt)
    delay = d * (1 - jitter) + uniform(0, d * jitter)

so every delay lies in ``[d * (1 - jitter), d]`` and never exceeds ``maximum``.
``jitter=0.5`` (the default) is the classic *equal jitter* (half fixed, half
random: never retries immediately, still spreads a herd of clients that were
all cut at once, e.g. by a gateway restart); ``jitter=1.0`` is *full jitter*
(uniform in ``[0, d]``); ``jitter=0.0`` is plain exponential backoff.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

__all__ = ["backoff"]


def backoff(
    initial: float = 0.1,
    maximum: float = 10.0,
    factor: float = 2.0,
    jitter: float = 0.5,
    rng: random.Random | None = None,
) -> Iterator[float]:
    """Yield an endless series of delays (seconds) to wait before each retry.

    The nominal delay starts at ``initial``, is multiplied by ``factor`` after each
    attempt and is capped at ``maximum``; ``jitter`` (0..1) is the randomized share
    of each delay (see the module docstring). Pass a seeded ``rng`` for reproducible
    delays in tests.

    Raises :class:`ValueError` for parameters that would make no sense (negative
    delays, ``factor < 1``, ``jitter`` outside 0..1, ``maximum < initial``).
    """
    if initial <= 0:
        raise ValueError(f"backoff initial delay must be > 0, got {initial!r}")
    if maximum < initial:
        raise ValueError(f"backoff maximum ({maximum!r}) must be >= initial ({initial!r})")
    if factor < 1:
        raise ValueError(f"backoff factor must be >= 1, got {factor!r}")
    if not 0.0 <= jitter <= 1.0:
        raise ValueError(f"backoff jitter must be between 0 and 1, got {jitter!r}")
    return _delays(initial, maximum, factor, jitter, rng or random.Random())


def _delays(
    initial: float, maximum: float, factor: float, jitter: float, rng: random.Random
) -> Iterator[float]:
    # A separate generator so that bad arguments raise at the call, not at the
    # first next().
    nominal = initial
    while True:
        yield nominal * (1.0 - jitter) + rng.random() * nominal * jitter
        # Stop multiplying once capped: no float overflow after many retries.
        nominal = min(maximum, nominal * factor)
