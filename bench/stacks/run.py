"""Fan-out benchmark: deliveries/s of WebSocket server stacks to N loopback clients.

For every variant and run: start ``server.py`` as its own process, connect the clients
from ``loadgen.py`` process(es), do a short warm-up broadcast, then tell the server (over
its control port) to broadcast M ~300-byte JSON messages as fast as it can. The rate is
total text frames received by all clients / (last client's last frame - the server's
clock just before its first send); both are CLOCK_MONOTONIC, which is system-wide.

    python bench/stacks/run.py --clients 1000 --messages 200 --runs 3

Prints one JSON object per variant (one line each). By default the server is pinned to
CPU 0 and the load generator(s) to CPU 1 so they do not steal each other's core.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Variant:
    name: str
    server: str
    batch: int
    note: str


VARIANTS = [
    Variant("a-websockets-broadcast", "websockets", 1, "websockets.broadcast per message"),
    Variant(
        "a-websockets-broadcast-b50",
        "websockets",
        50,
        "websockets.broadcast per message, yields to the loop every 50 messages only",
    ),
    Variant("b-uvicorn-starlette-loop", "uvicorn-loop", 1, "for ws: await ws.send_text()"),
    Variant("b-uvicorn-starlette-gather", "uvicorn-gather", 1, "gather(send_text per client)"),
    Variant("c-native-join-b1", "native-join", 1, "frame once; 1 write/conn/message"),
    Variant("c-native-join-b10", "native-join", 10, "frame once; 1 write/conn/10 messages"),
    Variant("c-native-join-b50", "native-join", 50, "frame once; 1 write/conn/50 messages"),
    Variant(
        "d-native-writelines-b10", "native-writelines", 10, "as c-b10 with transport.writelines"
    ),
    Variant(
        "d-native-writelines-b50", "native-writelines", 50, "as c-b50 with transport.writelines"
    ),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def busy_cpu_seconds() -> float:
    """Machine-wide non-idle CPU time so far (all cores), from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:9]]
    except OSError:
        return float("nan")
    idle = fields[3] + fields[4]
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


def pinned(cpu: int | None) -> Any:
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


class Control:
    def __init__(self, port: int, deadline: float = 15.0) -> None:
        end = time.monotonic() + deadline
        while True:
            try:
                self.sock = socket.create_connection(("127.0.0.1", port))
                break
            except OSError:
                if time.monotonic() > end:
                    raise
                time.sleep(0.05)
        self.file = self.sock.makefile("rwb")

    def ask(self, line: str) -> Any:
        self.file.write(line.encode() + b"\n")
        self.file.flush()
        return json.loads(self.file.readline())

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def expect_line(stream: IO[bytes], want: bytes | None = None) -> bytes:
    line = stream.readline().strip()
    if not line or (want is not None and line != want):
        raise RuntimeError(f"load generator said {line!r}, expected {want!r}")
    return line


def one_run(variant: Variant, args: argparse.Namespace) -> dict[str, Any]:
    port, control_port = free_port(), free_port()
    cpus = os.cpu_count() or 1
    pin = args.pin and cpus >= 2
    server = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "server.py"),
            "--variant",
            variant.server,
            "--port",
            str(port),
            "--control-port",
            str(control_port),
        ],
        preexec_fn=pinned(0 if pin else None),
    )
    loadgens: list[subprocess.Popen[bytes]] = []
    control = None
    try:
        control = Control(control_port)
        shares = [args.clients // args.loadgen_procs] * args.loadgen_procs
        shares[0] += args.clients - sum(shares)
        for share in shares:
            loadgens.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        str(HERE / "loadgen.py"),
                        "--port",
                        str(port),
                        "--clients",
                        str(share),
                    ],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    preexec_fn=pinned(1 if pin else None),
                )
            )
        for lg in loadgens:
            expect_line(lg.stdout, b"ready")  # type: ignore[arg-type]
        end = time.monotonic() + 15
        while control.ask("clients") < args.clients:
            if time.monotonic() > end:
                raise RuntimeError("server did not register every client")
            time.sleep(0.05)

        def round_(messages: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
            timeout = max(30.0, args.clients * messages / 5000)
            for lg in loadgens:
                lg.stdin.write(f"expect {messages} {timeout}\n".encode())  # type: ignore[union-attr]
                lg.stdin.flush()  # type: ignore[union-attr]
            for lg in loadgens:
                expect_line(lg.stdout, b"armed")  # type: ignore[arg-type]
            sent = control.ask(f"bcast {messages} {variant.batch}")  # type: ignore[union-attr]
            got = [json.loads(expect_line(lg.stdout)) for lg in loadgens]  # type: ignore[arg-type]
            return sent, got

        round_(args.warmup)
        busy0 = busy_cpu_seconds()
        sent, got = round_(args.messages)
        busy = busy_cpu_seconds() - busy0
        cpu_end = control.ask("cpu")["cpu"]
        frames = sum(g["frames"] for g in got)
        elapsed = max(g["t_last"] for g in got) - sent["t0"]
        return {
            "deliveries": frames,
            "expected": args.clients * args.messages,
            "complete": all(g["complete"] for g in got),
            "elapsed_s": round(elapsed, 4),
            "deliveries_per_s": round(frames / elapsed),
            "send_loop_s": round(sent["t_sent"] - sent["t0"], 4),
            "server_cpu_s": round(cpu_end - sent["cpu0"], 4),
            "server_cpu_us_per_delivery": round((cpu_end - sent["cpu0"]) / frames * 1e6, 2),
            "loadgen_cpu_busy": [round(g["cpu"] / elapsed, 2) for g in got],
            # cores' worth of CPU used by anything else while the round ran (other
            # processes on the machine, and loopback softirq work charged to no process)
            "other_load": round(
                (busy - (cpu_end - sent["cpu0"]) - sum(g["cpu"] for g in got)) / elapsed, 2
            ),
        }
    finally:
        if control is not None:
            control.close()
        for lg in loadgens:
            lg.stdin.close()  # type: ignore[union-attr]
        for proc in [*loadgens, server]:
            proc.terminate()
        for proc in [*loadgens, server]:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=20, help="messages before each run")
    parser.add_argument("--loadgen-procs", type=int, default=1)
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="no CPU pinning")
    parser.add_argument(
        "--only", nargs="*", default=None, help="variant names (or prefixes) to run"
    )
    args = parser.parse_args()
    selected = [
        v for v in VARIANTS if args.only is None or any(v.name.startswith(o) for o in args.only)
    ]
    for variant in selected:
        runs = [one_run(variant, args) for _ in range(args.runs)]
        rates = [r["deliveries_per_s"] for r in runs]
        cpu = [r["server_cpu_us_per_delivery"] for r in runs]
        print(
            json.dumps(
                {
                    "variant": variant.name,
                    "server": variant.server,
                    "batch": variant.batch,
                    "note": variant.note,
                    "clients": args.clients,
                    "messages": args.messages,
                    "runs": args.runs,
                    "loadgen_procs": args.loadgen_procs,
                    "pinned": args.pin and (os.cpu_count() or 1) >= 2,
                    "deliveries_per_s": {
                        "median": round(statistics.median(rates)),
                        "min": min(rates),
                        "max": max(rates),
                    },
                    "server_cpu_us_per_delivery_median": statistics.median(cpu),
                    "all_complete": all(r["complete"] for r in runs),
                    "detail": runs,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
