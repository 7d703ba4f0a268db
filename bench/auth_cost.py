"""What authorization costs the gateway: deliveries per second with row rules on vs off.

    python bench/auth_cost.py --merchants 50 --subscribers 500 --rows 10000 --runs 3

Per run, one scratch database and, in turn (the order rotates every run, so drift of
a shared machine hits every configuration alike), one gateway process per
configuration, each with ``--subscribers`` raw WebSocket clients (``--subscribers /
--merchants`` per merchant, each its own connection subscribed to ``orders``):

* ``open``: no auth configured (open mode); each client subscribes with the filter
  ``merchant_id=eq.<its merchant>``.
* ``rules``: HS256 tokens required (``PGCAST_JWT_SECRET``) and ``pgcast.toml`` with
  ``[rules.tables.orders] read = "merchant_id = claims.merchant_id"``; each client
  sends its tenant token (``?token=``) and subscribes without a filter. The rule binds
  to the same ``merchant_id=eq.<m>`` condition, so the hub indexes it the same way.
* ``rules_or`` (``--with-or``): the rule ``merchant_id = claims.merchant_id or public =
  true``, which does not fold to filter conditions: the hub cannot index it, so every
  change is evaluated against every subscription's rule in memory.

Then one transaction inserts ``--rows`` rows spread evenly over the merchants, and the
run is timed from the commit to the last expected change received by every client
(each must get exactly ``rows / merchants`` changes). Reported per configuration:
deliveries/s and the gateway process's CPU time per delivery (less sensitive to the
load generator sharing the machine). Prints JSON; medians of the runs.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import jwt
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    DEFAULT_DSN,
    RawClient,
    free_port,
    gateway_process,
    open_clients,
    scratch_database,
)

from pgcast.capture.installer import track
from pgcast.identifiers import parse_table_name

SECRET = "bench-secret-" + "s" * 40
RULES = {
    "rules": 'read = "merchant_id = claims.merchant_id"',
    "rules_or": 'read = "merchant_id = claims.merchant_id or public = true"',
}
# One IP opens every connection, and subscribes arrive in a burst.
LIMITS = {
    "PGCAST_MAX_CONNECTIONS_PER_IP": "0",
    "PGCAST_MAX_CONNECTIONS_PER_SUBJECT": "0",
    "PGCAST_SUBSCRIBE_RATE": "0",
}


class TokenClient(RawClient):
    """RawClient whose upgrade request carries ``?token=`` (when given)."""

    def __init__(self, jwt_token: str | None) -> None:
        super().__init__()
        self.path = "/ws" if jwt_token is None else f"/ws?token={jwt_token}"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def gateway_env(config: str, workdir: Path) -> dict[str, str]:
    toml = workdir / f"{config}.toml"
    if config == "open":
        toml.write_text("")  # no auth at all: open mode
        return {**LIMITS, "PGCAST_CONFIG": str(toml)}
    toml.write_text(f"[rules.tables.orders]\n{RULES[config]}\n")
    return {**LIMITS, "PGCAST_CONFIG": str(toml), "PGCAST_JWT_SECRET": SECRET}


def merchant_of(i: int, merchants: int) -> int:
    return i % merchants + 1


async def measure(args: argparse.Namespace, dsn: str, config: str, workdir: Path) -> dict:
    port = free_port()
    per_client = args.rows // args.merchants
    with gateway_process("pgcast", dsn, port, env=gateway_env(config, workdir)) as proc:

        def factory(i: int) -> RawClient:
            if config == "open":
                return TokenClient(None)
            claims = {
                "sub": f"user-{i}",
                "merchant_id": merchant_of(i, args.merchants),
                "exp": int(time.time()) + 3600,
            }
            return TokenClient(jwt.encode(claims, SECRET, algorithm="HS256"))

        clients = await open_clients(port, args.subscribers, factory)
        for i, client in enumerate(clients):
            message: dict[str, object] = {"type": "subscribe", "id": "s", "table": "orders"}
            if config == "open":
                message["filter"] = f"merchant_id=eq.{merchant_of(i, args.merchants)}"
            client.send(message)
        # welcome + subscribed
        await asyncio.gather(*(c.wait_frames(2, 60) for c in clients))
        refused = [c.close_code for c in clients if c.close_code is not None]
        assert not refused, f"{config}: connections closed: {refused[:5]}"
        conn = await asyncpg.connect(dsn)
        try:
            cpu_before = cpu_seconds(proc.pid)
            started = time.perf_counter()
            await conn.execute(
                "INSERT INTO orders (merchant_id, public, status, amount) "
                "SELECT g % $2 + 1, false, 'open', g FROM generate_series(1, $1) g",
                per_client * args.merchants,
                args.merchants,
            )
            committed = time.perf_counter()
            await asyncio.gather(*(c.wait_frames(2 + per_client, 300) for c in clients))
            received = time.perf_counter()
            cpu_after = cpu_seconds(proc.pid)
        finally:
            await conn.close()
        extra = [c.frames - 2 - per_client for c in clients if c.frames != 2 + per_client]
        for client in clients:
            assert client.transport is not None
            client.transport.close()
    deliveries = per_client * len(clients)
    seconds = received - committed
    return {
        "config": config,
        "deliveries": deliveries,
        "insert_s": round(committed - started, 3),
        "commit_to_all_received_s": round(seconds, 3),
        "deliveries_per_s": round(deliveries / seconds),
        "gateway_cpu_us_per_delivery": round((cpu_after - cpu_before) / deliveries * 1e6, 2),
        "unexpected_frames": extra,
    }


async def one_run(args: argparse.Namespace, configs: list[str], workdir: Path) -> list[dict]:
    async with scratch_database(args.dsn) as dsn:
        conn = await asyncpg.connect(dsn)
        await conn.execute(
            "CREATE TABLE orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
            "merchant_id int NOT NULL, public boolean NOT NULL, status text, amount int)"
        )
        await track(conn, parse_table_name("orders"))
        await conn.close()
        return [await measure(args, dsn, config, workdir) for config in configs]


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    parser.add_argument("--merchants", type=int, default=50)
    parser.add_argument("--subscribers", type=int, default=500)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--with-or", action="store_true", help="also the unindexable OR rule")
    args = parser.parse_args()
    configs = ["open", "rules"] + (["rules_or"] if args.with_or else [])
    load_before = loadavg()
    runs: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(args.runs):
            order = configs[n % len(configs) :] + configs[: n % len(configs)]
            runs.extend(await one_run(args, order, Path(tmp)))
    result: dict[str, object] = {
        "benchmark": "auth_cost",
        "merchants": args.merchants,
        "subscribers": args.subscribers,
        "rows": args.rows,
        "machine": f"{platform.node()} {os.cpu_count()} CPUs",
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
        "runs": runs,
    }
    for config in configs:
        mine = [r for r in runs if r["config"] == config]
        result[config] = {
            key: {
                "median": statistics.median(r[key] for r in mine),
                "min": min(r[key] for r in mine),
                "max": max(r[key] for r in mine),
            }
            for key in (
                "deliveries_per_s",
                "gateway_cpu_us_per_delivery",
                "commit_to_all_received_s",
            )
        }
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode(), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
