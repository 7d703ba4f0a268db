"""Summarize a py-spy ``--format raw`` profile (collapsed stacks): top functions.

    python bench/profile_summary.py bench/results/perf-2026-11-21/profiles/ingest-gateway.txt

Prints the share of samples in which each function is on the stack (inclusive) and
at the top of it (self). Profiles come from ``PGCAST_BENCH_PROFILE=<dir>`` (see
common.gateway_process).
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path


def frame_name(frame: str) -> str:
    name, _, where = frame.partition(" (")
    return f"{name} {where.rsplit('/', 1)[-1].split(':')[0]}" if where else name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in args.profile.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        samples = int(count)
        total += samples
        frames = [frame_name(f) for f in stack.split(";")]
        for name in set(frames):
            inclusive[name] += samples
        own[frames[-1]] += samples
    print(f"samples {total}")
    for title, counter in (("inclusive", inclusive), ("self", own)):
        print(f"--- {title}")
        for name, samples in counter.most_common(args.top):
            print(f"{samples / total * 100:5.1f}% {name}")


if __name__ == "__main__":
    main()
