"""The operator console in a real headless Chromium: the page opens with the admin
token, its figures and charts move under a write load, the inspector shows a change
as it arrives; screenshots are taken and checked (size, not blank, what the DOM held)."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from playwright.async_api import expect

from pgcast.capture.installer import track
from pgcast.identifiers import parse_table_name

from ..integration.gateway_helpers import running_gateway, ws_client
from .png import read_png

TOKEN = "console-admin-token-for-tests-0123"
WIDTH, HEIGHT = 1000, 900
WAIT_MS = 20_000
# A positive number as the page writes it in data-value.
POSITIVE = re.compile(r"^[0-9.]*[1-9][0-9.]*$")
FIGURES = [
    "connections",
    "subscriptions",
    "changes-rate",
    "deliveries-rate",
    "listener-lag",
    "capture-lag",
    "wal-lag",
    "slow-closes",
]
CHARTS = ["chart-changes", "chart-deliveries", "chart-connections", "chart-lag"]
# The figures and charts as the page shows them, read at screenshot time.
DOM_STATE = """() => ({
    figures: Object.fromEntries([...document.querySelectorAll('.figure .value')]
        .map(el => [el.id, el.dataset.value])),
    points: Object.fromEntries([...document.querySelectorAll('svg.chart')]
        .map(el => [el.id, Number(el.dataset.points || 0)])),
    tables: [...document.querySelectorAll('#tables tr')].map(tr => tr.innerText),
    nodes: document.querySelectorAll('#nodes tr').length,
    changes: [...document.querySelectorAll('#inspect-log li')].map(li => li.textContent),
    state: document.querySelector('#node-state').textContent,
    message: document.querySelector('#message').textContent,
    chart: (({width, height}) => ({width, height}))(
        document.querySelector('#chart-changes').getBoundingClientRect()),
})"""


@pytest.fixture
async def orders(conn: asyncpg.Connection) -> asyncpg.Connection:
    await conn.execute("CREATE TABLE orders (id serial PRIMARY KEY, status text)")
    await track(conn, parse_table_name("orders"))
    return conn


@contextlib.asynccontextmanager
async def write_load(dsn: str) -> AsyncIterator[None]:
    """A writer inserting small batches, paced, until the block ends."""
    writer = await asyncpg.connect(dsn)
    done = asyncio.Event()

    async def write() -> None:
        while not done.is_set():
            await writer.execute(
                "INSERT INTO orders (status) SELECT 'load' FROM generate_series(1, 20)"
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 0.05)  # pacing, not a wait for an event

    task = asyncio.create_task(write())
    try:
        yield
    finally:
        done.set()
        await task
        await writer.close()


def check_screenshot(path: Path, width: int, height: int) -> None:
    image = read_png(path.read_bytes())
    assert (image.width, image.height) == (width, height)
    colours = image.colours(step=5)
    assert len(colours) > 10, f"{path.name} looks blank: {len(colours)} colours"


async def test_the_console_shows_the_gateway_live_and_inspects_a_table(
    database_url: str, orders: asyncpg.Connection, browser: Any, tmp_path: Path
) -> None:
    async with running_gateway(database_url, admin_token=TOKEN) as gateway:
        page = await browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        # The page runs under its Content-Security-Policy: waits use locators, not eval.
        page.on("console", lambda message: errors.append(message.text))
        # The fragment never reaches the gateway; the page keeps the token for the tab.
        await page.goto(f"http://127.0.0.1:{gateway.port}/console/#token={TOKEN}")
        await expect(page.locator("#node-state")).to_have_text(
            re.compile("^listening"), timeout=WAIT_MS
        )
        assert "#token" not in page.url
        for name in FIGURES + CHARTS:
            assert await page.locator(f"#{name}").count() == 1, name

        # The inspector subscribes as a client: it shows up in the figures.
        await page.fill("#inspect-table", "orders")
        await page.fill("#inspect-filter", "status=eq.watched")
        await page.click("#inspect-start")
        await expect(page.locator("#inspect-status")).to_have_text(
            re.compile("^live"), timeout=WAIT_MS
        )
        await expect(page.locator("#subscriptions")).to_have_attribute(
            "data-value", "1", timeout=WAIT_MS
        )

        # A second subscriber, without a filter, receives the load: deliveries/s moves.
        async with ws_client(gateway) as reader, write_load(database_url):
            assert (await reader.subscribe("all", table="orders"))["type"] == "subscribed"
            # The figures move: changes/s and deliveries/s rise above 0, the chart draws it.
            for figure in ["#changes-rate", "#deliveries-rate"]:
                await expect(page.locator(figure)).to_have_attribute(
                    "data-value", POSITIVE, timeout=WAIT_MS
                )
            await expect(page.locator("#chart-changes")).to_have_attribute(
                "data-max", POSITIVE, timeout=WAIT_MS
            )
            await orders.execute("INSERT INTO orders (status) VALUES ('watched')")
            await expect(page.locator("#inspect-log li")).to_contain_text(
                ["watched"], timeout=WAIT_MS
            )
            state = await page.evaluate(DOM_STATE)
            shot = tmp_path / "console.png"
            await page.screenshot(path=str(shot))
            chart = tmp_path / "chart-changes.png"
            await page.locator("#chart-changes").screenshot(path=str(chart))

        assert float(state["figures"]["changes-rate"]) > 0
        assert state["figures"]["connections"] == "2"
        assert state["figures"]["wal-lag"] == "null"  # trigger capture: no slot
        assert all(state["points"][name] > 0 for name in CHARTS), state["points"]
        assert state["tables"] == ["public.orders\t2"]
        assert state["nodes"] == 1
        # Only the change the filter lets through: the load's rows are not 'watched'.
        assert len(state["changes"]) == 1 and "INSERT" in state["changes"][0]
        assert state["message"] == ""
        check_screenshot(shot, WIDTH, HEIGHT)
        check_chart = read_png(chart.read_bytes())
        # The element's box, rounded outwards to whole pixels: within a pixel of the CSS box.
        assert abs(check_chart.width - state["chart"]["width"]) <= 1, state["chart"]
        assert abs(check_chart.height - state["chart"]["height"]) <= 1, state["chart"]
        assert len(check_chart.colours(step=1)) > 2, "the chart has no line"
        assert errors == []


async def test_the_console_page_refuses_a_wrong_token_then_opens_with_the_right_one(
    database_url: str, browser: Any, tmp_path: Path
) -> None:
    async with running_gateway(database_url, admin_token=TOKEN) as gateway:
        page = await browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
        await page.goto(f"http://127.0.0.1:{gateway.port}/console/#token=not-the-token")
        await expect(page.locator("#message")).to_contain_text("refused", timeout=WAIT_MS)
        state = await page.evaluate(DOM_STATE)
        shot = tmp_path / "refused.png"
        await page.screenshot(path=str(shot))
        assert set(state["figures"].values()) == {None}  # never filled in
        assert state["nodes"] == 0
        check_screenshot(shot, WIDTH, HEIGHT)
        # The form opens it with the right token.
        await page.fill("#admin-token", TOKEN)
        await page.click("#token-form button")
        await expect(page.locator("#node-state")).to_have_text(
            re.compile("^listening"), timeout=WAIT_MS
        )
        await expect(page.locator("#message")).to_have_text("")
