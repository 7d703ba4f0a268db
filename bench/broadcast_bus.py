"""Broadcast and presence between two gateway nodes over the PostgreSQL bus.

Two ``Realtime`` nodes, each with its own ``PostgresBus`` on one database (what two
gateways do). Node A broadcasts ``--count`` messages of ``--payload`` bytes, one at a
time (each waits for the bus: what a client with ``ack`` waits for) and, separately,
as fast as the send queue takes them; node B's member records when each arrives.
Then ``--tracks`` presence tracks on A and the time until B has them all.

    python bench/broadcast_bus.py --dsn postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from pgcast.auth import Limits
from pgcast.broadcast import Broadcast
from pgcast.bus_postgres import PostgresBus
from pgcast.realtime import Realtime
from pgcast.topics import Member, MemberOptions


class Arrivals:
    def __init__(self) -> None:
        self.times: dict[int, float] = {}
        self.presence = 0
        self.event = asyncio.Event()

    def presence_state(self, topic: str, state: dict[str, Any]) -> None:
        pass

    def presence_diff(self, topic: str, joins: dict[str, Any], leaves: dict[str, Any]) -> None:
        self.presence += len(joins)
        self.event.set()

    def broadcast(self, message: Broadcast) -> None:
        self.times[message.payload["n"]] = time.perf_counter()
        self.event.set()


async def wait(check: Any, timeout: float = 60) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            sink.event.clear()
            await sink.event.wait()


sink = Arrivals()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--payload", type=int, default=100)
    parser.add_argument("--tracks", type=int, default=1000)
    args = parser.parse_args()
    limits = Limits(broadcast_rate=0, presence_rate=0, max_topic_members=0)
    a = Realtime(PostgresBus(args.dsn), limits)
    b = Realtime(PostgresBus(args.dsn), limits)
    await a.start()
    await b.start()
    b.join(Member("reader", "bench", sink, MemberOptions()))
    pad = "x" * args.payload
    try:
        # 1. one at a time: latency from send to arrival on the other node
        sent: dict[int, float] = {}
        for n in range(args.count):
            sent[n] = time.perf_counter()
            await a.broadcast("bench", "e", {"n": n, "pad": pad})
        await wait(lambda: len(sink.times) >= args.count)
        latencies = sorted((sink.times[n] - sent[n]) * 1000 for n in range(args.count))
        print(
            f"sequential: {args.count} broadcasts of {args.payload} B, "
            f"latency p50 {statistics.median(latencies):.2f} ms, "
            f"p99 {latencies[int(len(latencies) * 0.99) - 1]:.2f} ms, "
            f"max {latencies[-1]:.2f} ms"
        )
        # 2. throughput: many senders at once (50 concurrent), arrivals counted on B
        sink.times.clear()
        started = time.perf_counter()
        base = args.count

        async def sender(offset: int) -> None:
            for n in range(offset, args.count, 50):
                await a.broadcast("bench", "e", {"n": base + n, "pad": pad})

        await asyncio.gather(*(sender(i) for i in range(50)))
        await wait(lambda: len(sink.times) >= args.count)
        elapsed = max(sink.times.values()) - started
        print(f"throughput: {args.count / elapsed:.0f} broadcasts/s across nodes")
        # 3. presence: tracks on A until B has them all
        for i in range(args.tracks):
            a.join(Member(f"c{i}", "bench", Arrivals(), MemberOptions(presence=False)))
        started = time.perf_counter()
        for i in range(args.tracks):
            a.track(f"c{i}", "bench", f"user{i}", {"i": i})
        await wait(lambda: sink.presence >= args.tracks)
        print(
            f"presence: {args.tracks} tracks on A seen on B after "
            f"{(time.perf_counter() - started) * 1000:.0f} ms"
        )
    finally:
        await a.stop()
        await b.stop()


if __name__ == "__main__":
    asyncio.run(main())
