"""The README's tour, executed as written: its ``sh`` and ``python`` blocks, top to bottom.

Only what a reader on another machine would change is substituted: the server (the
test PostgreSQL), the database name ``shop`` (a fresh one) and the gateway port 8000
(a free one; ``pgcast listen`` finds it through ``PGCAST_URL``). A line ending in
``&`` runs in the background, as in a shell, and the next line waits until it is up
(it says ``serving`` or ``listening``); ``kill %N`` stops the Nth of them.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import orjson
import pytest

from ..conftest import ADMIN_DSN

README = Path(__file__).resolve().parents[2] / "README.md"
TIMEOUT = 30.0
pytestmark = pytest.mark.skipif(shutil.which("psql") is None, reason="psql is not installed")


def tour_blocks() -> list[tuple[str, str]]:
    """The fenced blocks (language, text) of the README's tour section."""
    text = README.read_text()
    section = text[text.index("## A 5-minute tour") :]
    section = section[: section.index("\n## ", 1)]
    return re.findall(r"```(\w*)\n(.*?)```", section, flags=re.DOTALL)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Background:
    command: str
    proc: subprocess.Popen[bytes]
    stdout: IO[bytes]
    stderr: IO[bytes]

    def output(self) -> tuple[str, str]:
        self.stdout.seek(0)
        self.stderr.seek(0)
        return self.stdout.read().decode(), self.stderr.read().decode()


@dataclass
class Tour:
    env: dict[str, str]
    cwd: Path
    outputs: dict[str, str] = field(default_factory=dict)
    jobs: list[Background] = field(default_factory=list)

    def run_line(self, line: str) -> None:
        if line.startswith("export "):
            name = line.split()[1].split("=", 1)[0]
            done = self.shell(f'{line} && printf %s "${name}"')
            self.env[name] = done.stdout
        elif line.startswith("kill "):
            for job in re.findall(r"%(\d+)", line):
                self.stop(self.jobs[int(job) - 1])
        elif line.endswith("&"):
            self.start(line[:-1].strip(), ("serving", "listening"))
        else:
            done = self.shell(line)
            self.outputs[line] = done.stdout

    def shell(self, command: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["bash", "-c", command],
            env=self.env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        assert done.returncode == 0, (command, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr, (command, done.stderr)
        return done

    def start(self, command: str, ready: tuple[str, ...], argv: list[str] | None = None) -> None:
        out = (self.cwd / f"job{len(self.jobs)}.out").open("w+b")
        err = (self.cwd / f"job{len(self.jobs)}.err").open("w+b")
        proc = subprocess.Popen(
            argv or ["bash", "-c", f"exec {command}"],
            env=self.env,
            cwd=self.cwd,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
        )
        job = Background(command, proc, out, err)
        self.jobs.append(job)
        deadline = time.monotonic() + TIMEOUT
        while True:
            stdout, stderr = job.output()
            if any(word in stdout + stderr for word in ready):
                return
            assert proc.poll() is None, (command, stdout, stderr)
            assert time.monotonic() < deadline, (command, "not ready", stdout, stderr)
            time.sleep(0.05)  # polling a log file for a readiness line, bounded by the deadline

    def stop(self, job: Background) -> None:
        if job.proc.poll() is None:
            job.proc.send_signal(signal.SIGTERM)
            job.proc.wait(TIMEOUT)


def wait_for_lines(job: Background, count: int) -> list[dict[str, object]]:
    deadline = time.monotonic() + TIMEOUT
    while True:
        lines = [line for line in job.output()[0].splitlines() if line.startswith("{")]
        if len(lines) >= count:
            return [orjson.loads(line) for line in lines]
        assert time.monotonic() < deadline, (job.command, job.output())
        time.sleep(0.05)  # polling the listener's output file, bounded by the deadline


def test_the_readme_tour_runs_as_written(tmp_path: Path) -> None:
    admin_base, _, _ = ADMIN_DSN.partition("?")[0].rpartition("/")
    database = f"pgcast_tour_{uuid.uuid4().hex[:10]}"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGCAST_")}
    env.pop("DATABASE_URL", None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PGCAST_URL"] = f"ws://127.0.0.1:{port}"
    env["PYTHONUNBUFFERED"] = "1"
    tour = Tour(env, tmp_path)

    def localise(text: str) -> str:
        text = text.replace("postgresql://postgres@127.0.0.1:5432", admin_base)
        text = text.replace("/shop", f"/{database}").replace(
            "DATABASE shop", f"DATABASE {database}"
        )
        return text.replace("8000", str(port))

    blocks = tour_blocks()
    assert [lang for lang, _ in blocks].count("sh") >= 5, blocks
    try:
        for lang, text in blocks:
            if lang == "python":
                script = tmp_path / "tour.py"
                script.write_text(localise(text))
                tour.start("python tour.py", ("snapshot",), argv=[sys.executable, str(script)])
            elif lang == "sh":
                for raw in localise(text).splitlines():
                    line = re.sub(r"\s+#\s.*$", "", raw).strip()
                    if line:
                        tour.run_line(line)

        # pgcast status showed the --when-changed option
        status = next(out for line, out in tour.outputs.items() if line == "pgcast status")
        assert "when changed: status" in status, status
        # the background listener printed the INSERT and the UPDATE of the tour
        listener = next(job for job in tour.jobs if job.command == "pgcast listen orders --json")
        insert, update = wait_for_lines(listener, 2)[:2]
        assert insert["op"] == "INSERT" and insert["record"] == {
            "id": 1,
            "customer_name": "ann",
            "status": "pending",
            "merchant_id": 7,
        }
        assert update["op"] == "UPDATE" and update["changed"] == ["status"]
        # the filtered replay printed the pending INSERT; the resume the UPDATE after it
        filtered = next(out for line, out in tour.outputs.items() if "status=eq.pending" in line)
        assert orjson.loads(filtered)["record"]["status"] == "pending"
        resumed = next(out for line, out in tour.outputs.items() if "--since 1 " in line)
        assert orjson.loads(resumed)["id"] == update["id"]
        # the Python snippet ran as a script and received the snapshot
        python = next(job for job in tour.jobs if job.command == "python tour.py")
        assert python.output()[0].startswith("snapshot"), python.output()
        # `kill %1 %2` stopped the gateway and the listener
        assert all(job.proc.poll() is not None for job in tour.jobs[:2])
    finally:
        for job in tour.jobs:
            if job.proc.poll() is None:
                job.proc.kill()
                job.proc.wait(TIMEOUT)
            job.stdout.close()
            job.stderr.close()
        subprocess.run(
            ["psql", ADMIN_DSN, "-q", "-c", f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'],
            capture_output=True,
            timeout=TIMEOUT,
            check=False,
        )
