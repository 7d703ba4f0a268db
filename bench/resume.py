"""Resume cost: how long a reconnecting client takes to get 10,000 missed changes.

    python bench/resume.py --changes 10000 --runs 3 --modes bulk,txns

Each run starts a fresh database (``--seed`` rows already in the change log) and
its own gateway process (``pgcast serve``). A raw WebSocket client connects, keeps
the welcome ``position``, subscribes to the table (no ``since``), and disconnects.
A writer then commits ``--changes`` single-row INSERTs, written as

* ``bulk``: one ``INSERT ... SELECT generate_series`` statement (one transaction);
* ``txns``: transactions of ``--txn-size`` single-row INSERT statements each;
* ``autocommit``: one transaction per row (slow to write: ~1 ms per commit).

Once the gateway's live reader has read them (/health ``listener.position``), a new
client connects and sends ``subscribe`` with ``since`` = the kept position; the
time measured is from sending ``subscribe`` to receiving ``subscribed`` (which the
gateway sends after the whole replay), with the number of change frames received
checked against ``--changes``. Prints JSON lines: one per run, then a summary.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import asyncpg
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    DEFAULT_DSN,
    RawClient,
    fetch_health,
    free_port,
    gateway_process,
    open_clients,
    scratch_database,
)

from pgcast.capture.installer import track
from pgcast.identifiers import parse_table_name

TABLE = "items"


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


class Recorder:
    """Counts change frames and keeps the control frames, with their arrival time."""

    def __init__(self) -> None:
        self.changes = 0
        self.first_change_at: float | None = None
        self.control: list[tuple[float, dict[str, object]]] = []
        self.got: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def __call__(self, payload: bytes) -> None:
        now = time.perf_counter()
        if payload.startswith(b'{"type":"change"'):
            self.changes += 1
            if self.first_change_at is None:
                self.first_change_at = now
            return
        message = orjson.loads(payload)
        self.control.append((now, message))
        if message.get("type") in ("subscribed", "error") and not self.got.done():
            self.got.set_result(None)

    def first(self, kind: str) -> tuple[float, dict[str, object]]:
        return next((t, m) for t, m in self.control if m.get("type") == kind)


async def write_changes(dsn: str, mode: str, args: argparse.Namespace) -> float:
    conn = await asyncpg.connect(dsn, server_settings={"synchronous_commit": "off"})
    payload = "x" * args.row_bytes
    insert = f"INSERT INTO {TABLE} (kind, payload) VALUES ('bench', $1)"
    started = time.perf_counter()
    if mode == "bulk":
        await conn.execute(
            f"INSERT INTO {TABLE} (kind, payload) SELECT 'bench', $1 FROM generate_series(1, $2)",
            payload,
            args.changes,
        )
    elif mode == "txns":
        done = 0
        while done < args.changes:
            size = min(args.txn_size, args.changes - done)
            async with conn.transaction():
                for _ in range(size):
                    await conn.execute(insert, payload)
            done += size
    else:
        for _ in range(args.changes):
            await conn.execute(insert, payload)
    elapsed = time.perf_counter() - started
    await conn.close()
    return elapsed


async def wait_position(port: int, position: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        health = await asyncio.to_thread(fetch_health, port)
        listener = health["listener"]
        assert isinstance(listener, dict)
        if int(listener["position"]) >= position:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"gateway position {listener['position']} < {position}")
        await asyncio.sleep(0.05)  # polling /health until the live reader caught up


async def connect(port: int) -> tuple[RawClient, Recorder]:
    recorder = Recorder()
    (client,) = await open_clients(port, 1, lambda _: RawClient(recorder))
    await client.wait_frames(1, 30)  # welcome
    return client, recorder


async def one_run(args: argparse.Namespace, mode: str) -> dict[str, object]:
    load_before = loadavg()
    async with scratch_database(args.dsn) as dsn:
        conn = await asyncpg.connect(dsn)
        await conn.execute(
            f"CREATE TABLE {TABLE} (id bigserial PRIMARY KEY, kind text, payload text)"
        )
        await track(conn, parse_table_name(TABLE))
        if args.seed:
            await conn.execute(
                f"INSERT INTO {TABLE} (kind, payload)"
                " SELECT 'seed', 'x' FROM generate_series(1, $1)",
                args.seed,
            )
        seeded = await conn.fetchval("SELECT coalesce(max(id), 0) FROM pgcast.changes")
        port = free_port()
        with gateway_process("pgcast", dsn, port):
            await wait_position(port, seeded, 30)
            client, recorder = await connect(port)
            position = str(recorder.first("welcome")[1]["position"])
            client.send({"type": "subscribe", "id": "s", "table": TABLE})
            await asyncio.wait_for(recorder.got, 30)
            assert recorder.first("subscribed")
            assert client.transport is not None
            client.transport.close()
            await asyncio.wait_for(client.lost, 10)

            write_s = await write_changes(dsn, mode, args)
            head = await conn.fetchval("SELECT max(id) FROM pgcast.changes")
            await wait_position(port, head, 60)

            client, recorder = await connect(port)
            started = time.perf_counter()
            client.send({"type": "subscribe", "id": "s", "table": TABLE, "since": position})
            await asyncio.wait_for(recorder.got, 120)
            done_at, subscribed = recorder.first("subscribed")
            assert client.transport is not None
            client.transport.close()
        await conn.close()
    if recorder.changes != args.changes or subscribed.get("replayed") != args.changes:
        raise AssertionError(
            f"expected {args.changes} changes, got {recorder.changes} frames, {subscribed}"
        )
    first = recorder.first_change_at
    return {
        "mode": mode,
        "resume_s": round(done_at - started, 4),
        "first_change_s": round(first - started, 4) if first is not None else None,
        "changes_per_s": round(args.changes / (done_at - started)),
        "replayed": subscribed["replayed"],
        "write_s": round(write_s, 3),
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dsn", default=DEFAULT_DSN, help="admin DSN; scratch databases")
    parser.add_argument("--changes", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=10_000, help="rows in the log beforehand")
    parser.add_argument("--row-bytes", type=int, default=100)
    parser.add_argument("--txn-size", type=int, default=1000)
    parser.add_argument("--modes", default="bulk,txns", help="bulk, txns, autocommit")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    modes = args.modes.split(",")
    results: dict[str, list[dict[str, object]]] = {mode: [] for mode in modes}
    for _ in range(args.runs):
        for mode in modes:
            run = await one_run(args, mode)
            results[mode].append(run)
            print(orjson.dumps({"benchmark": "resume", "run": run}).decode(), flush=True)
    summary: dict[str, object] = {
        "benchmark": "resume",
        "changes": args.changes,
        "seed": args.seed,
        "row_bytes": args.row_bytes,
        "txn_size": args.txn_size,
    }
    for mode, runs in results.items():
        summary[mode] = {
            key: {
                "median": statistics.median(float(r[key]) for r in runs),  # type: ignore[arg-type]
                "min": min(float(r[key]) for r in runs),  # type: ignore[arg-type]
                "max": max(float(r[key]) for r in runs),  # type: ignore[arg-type]
            }
            for key in ("resume_s", "first_change_s")
        }
    print(orjson.dumps(summary).decode(), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
