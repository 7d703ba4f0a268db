"""The WebSocket load generator, run as its own process by the benchmarks.

    python bench/clients.py --port 8000 --clients 1000 --target pgcast \
        --table bench_events --filter 'kind=eq.bench' --expect-total 1000000

Opens ``--clients`` raw WebSocket clients (common.RawClient: hand-written upgrade,
frames counted from their headers), gives each ``--subs-per-client`` subscriptions
to ``--table`` (pgcast only; ``{n}`` in ``--filter`` is replaced by the subscription's
number, 0-based over all clients), waits for every ``subscribed``, then prints one
JSON line ``{"ready": ...}``. It then counts change frames until their total reaches
``--expect-total`` (or ``stop`` arrives on stdin, or ``--timeout``) and prints one
JSON line of figures: frames received, time of the first and last (``time.time()``,
comparable across processes), its own CPU seconds (is the load generator the
bottleneck?), connections lost, and for the first ``--probes`` clients every change
id with its receive time.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RawClient, raise_nofile


class Counter:
    def __init__(self, expect: int) -> None:
        self.total = 0
        self.expect = expect
        self.counting = False
        self.first = 0.0
        self.last = 0.0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()


class CountingClient(RawClient):
    def __init__(self, counter: Counter, probe: dict[int, float] | None, target: str) -> None:
        super().__init__(self._probe if probe is not None else None)
        self.counter = counter
        self.samples = probe
        self.target = target

    def _probe(self, payload: bytes) -> None:
        if not self.counter.counting or self.samples is None:
            return
        message = orjson.loads(payload)
        record = message.get("record") if self.target == "pgcast" else message
        if isinstance(record, dict) and "id" in record:
            self.samples.setdefault(record["id"], time.time())

    def data_received(self, data: bytes) -> None:
        before = self.frames
        super().data_received(data)
        counter = self.counter
        if counter.counting and self.frames != before:
            now = time.time()
            if not counter.total:
                counter.first = now
            counter.last = now
            counter.total += self.frames - before
            if counter.expect and counter.total >= counter.expect and not counter.done.done():
                counter.done.set_result(None)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--target", choices=["pgcast", "baseline"], default="pgcast")
    parser.add_argument("--table", default="")
    parser.add_argument("--filter", default="", help="{n} = the subscription's number")
    parser.add_argument("--subs-per-client", type=int, default=1)
    parser.add_argument("--no-subscribe", action="store_true", help="idle connections only")
    parser.add_argument("--probes", type=int, default=0)
    parser.add_argument("--expect-total", type=int, default=0, help="0: run until 'stop'")
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()
    raise_nofile(args.clients + 256)
    loop = asyncio.get_running_loop()
    counter = Counter(args.expect_total)
    probes: list[dict[int, float]] = [{} for _ in range(args.probes)]
    opened_at = time.monotonic()
    clients: list[CountingClient] = []
    for i in range(args.clients):
        probe = probes[i] if i < args.probes else None
        _, client = await loop.create_connection(
            lambda probe=probe: CountingClient(counter, probe, args.target),  # type: ignore[misc]
            "127.0.0.1",
            args.port,
        )
        clients.append(client)
        if i % 500 == 499:
            await asyncio.gather(*(c.opened for c in clients[i - 499 : i + 1]))
    await asyncio.gather(*(c.opened for c in clients))
    open_s = time.monotonic() - opened_at
    if args.target == "pgcast":
        await asyncio.gather(*(c.wait_frames(1, 120) for c in clients))  # welcome
        if not args.no_subscribe:
            n = 0
            for client in clients:
                for j in range(args.subs_per_client):
                    message: dict[str, object] = {
                        "type": "subscribe",
                        "id": f"s{j}",
                        "table": args.table,
                    }
                    if args.filter:
                        message["filter"] = args.filter.format(n=n)
                    client.send(message)
                    n += 1
            want = 1 + args.subs_per_client
            await asyncio.gather(*(c.wait_frames(want, 300) for c in clients))
    refused = [c.close_code for c in clients if c.lost.done()]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_ready = usage.ru_utime + usage.ru_stime
    counter.counting = True
    print(
        orjson.dumps(
            {"ready": len(clients), "open_s": round(open_s, 3), "lost_before_ready": refused}
        ).decode(),
        flush=True,
    )
    stop = asyncio.Event()

    def on_stdin() -> None:
        sys.stdin.readline()  # "stop", or EOF when the parent went away
        stop.set()

    loop.add_reader(sys.stdin.fileno(), on_stdin)
    waiters = [asyncio.ensure_future(stop.wait())]
    if args.expect_total:
        waiters.append(counter.done)  # type: ignore[arg-type]
    _, pending = await asyncio.wait(
        waiters, timeout=args.timeout, return_when=asyncio.FIRST_COMPLETED
    )
    for task in pending:
        if task is not counter.done:
            task.cancel()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result = {
        "frames": counter.total,
        "expected": args.expect_total,
        "complete": bool(args.expect_total) and counter.total >= args.expect_total,
        "first_recv": counter.first,
        "last_recv": counter.last,
        "loadgen_cpu_s": round(usage.ru_utime + usage.ru_stime - cpu_ready, 3),
        "lost": sum(1 for c in clients if c.lost.done()),
        "probes": [list(p.items()) for p in probes],
    }
    print(orjson.dumps(result).decode(), flush=True)
    for client in clients:
        if client.transport is not None:
            client.transport.abort()


if __name__ == "__main__":
    asyncio.run(main())
