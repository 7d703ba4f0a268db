"""Routing cost per change in process: exact row parsing + hub.match + encoding.

    python bench/row_matching.py

100 subscriptions on one table, each ``k=eq.<n>&<filter>``; 20,000 INSERT changes
built from JSON text as the log returns it. Three cases: integer rows, rows with a
decimal column the filter does not read, rows whose decimal column the filter reads
(``amount=gt.10``: the row is then re-read exactly, see pgcast.exactjson). Prints
the minimum over 9 runs of process CPU time per change (the machine is shared:
wall clock and medians are noise).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from pgcast.events import ChangeEvent
from pgcast.filters import parse_filter
from pgcast.hub import Hub, Subscription

CASES = (("1234", "status=eq.pending"), ("12.34", "status=eq.pending"), ("12.34", "amount=gt.10"))


def rows(amount: str, count: int) -> Iterator[str]:
    for i in range(count):
        yield (
            f'{{"id": {i}, "k": {i % 100}, "status": "pending", "amount": {amount}, '
            '"customer": "Alice Smith", "created_at": "2026-01-01T00:00:00+00:00", "note": null}'
        )


def run(amount: str, extra: str, count: int = 20_000) -> float:
    hub = Hub()
    for k in range(100):
        sub = Subscription(f"s{k}", None, schema="public", table="t", events=frozenset({"INSERT"}))
        sub.set_filter(parse_filter(f"k=eq.{k}&{extra}"))
        hub.add(sub)
    changes = [
        ChangeEvent(
            id=i,
            schema="public",
            table="t",
            op="INSERT",
            record_json=text,
            old_record_json=None,
            changed=None,
            txid=1,
            committed_at="2026-01-01T00:00:00.000000Z",
        )
        for i, text in enumerate(rows(amount, count))
    ]
    start = time.process_time()
    for change in changes:
        for sub, view in hub.match(change):
            change.body(sub.columns, view)
    return (time.process_time() - start) / count * 1e6


def main() -> None:
    for amount, extra in CASES:
        best = min(run(amount, extra) for _ in range(9))
        print(f"amount {amount:>6}, filter k=eq.N&{extra:<18} {best:6.2f} µs CPU/change")


if __name__ == "__main__":
    main()
