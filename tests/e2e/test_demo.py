"""The demo end to end in a real headless Chromium: two pages, live updates, offline/resume."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from pgcast.demo.server import run_demo
from pgcast.server import Gateway

from .conftest import ARTIFACTS

# Waits until the status select of order `id` shows STATUS.
SELECTED = "id => document.querySelector(`tr[data-id='${id}'] select`).value === 'STATUS'"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def demo(dsn: str, port: int) -> AsyncIterator[Gateway]:
    stop = asyncio.Event()
    ready: asyncio.Future[Gateway] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_demo(dsn, port=port, stop=stop, on_ready=ready.set_result))
    try:
        yield await asyncio.wait_for(ready, 30)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def row_text(page: Any, order_id: int) -> str:
    text: str = await page.locator(f'tr[data-id="{order_id}"]').inner_text()
    return text


async def test_two_pages_stay_in_sync_across_a_gateway_restart(
    database_url: str, browser: Any
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    db = await asyncpg.connect(database_url)
    try:
        async with demo(database_url, port):
            page_a = await browser.new_page()
            page_b = await browser.new_page()
            for page in (page_a, page_b):
                await page.goto(url)
                await page.locator('#status[data-status="live"]').wait_for(timeout=10_000)

            # created through the form in page A, shown in page B within a second
            await page_a.fill('input[name="customer_name"]', "Ada")
            await page_a.fill('input[name="product_name"]', "Teapot")
            await page_a.click('button[type="submit"]')
            await page_b.locator("tr[data-id]", has_text="Teapot").wait_for(timeout=1_000)
            order_id = await db.fetchval("SELECT id FROM orders WHERE product_name = 'Teapot'")

            # an UPDATE and a DELETE made with SQL appear in both pages
            await db.execute("UPDATE orders SET status = 'shipped' WHERE id = $1", order_id)
            for page in (page_a, page_b):
                select = page.locator(f'tr[data-id="{order_id}"] select')
                await page.wait_for_function(
                    SELECTED.replace("STATUS", "shipped"),
                    arg=order_id,
                    timeout=2_000,
                )
                assert await select.input_value() == "shipped"
            other = await db.fetchval(
                "INSERT INTO orders (customer_name, product_name) "
                "VALUES ('Bob', 'Kettle') RETURNING id"
            )
            await db.execute("DELETE FROM orders WHERE id = $1", order_id)
            for page in (page_a, page_b):
                await page.locator(f'tr[data-id="{order_id}"]').wait_for(
                    state="detached", timeout=2_000
                )
                await page.locator(f'tr[data-id="{other}"]').wait_for(timeout=2_000)

        # gateway stopped: both pages show offline
        for page in (page_a, page_b):
            await page.locator(
                '#status[data-status="offline"], #status[data-status="connecting"]'
            ).wait_for(timeout=10_000)
        # changes made while it is down ...
        await db.execute("UPDATE orders SET status = 'delivered' WHERE id = $1", other)
        missed = await db.fetchval(
            "INSERT INTO orders (customer_name, product_name) VALUES ('Cy', 'Mug') RETURNING id"
        )
        # ... appear once it is back (resume from the last change id)
        async with demo(database_url, port):
            for page in (page_a, page_b):
                await page.locator('#status[data-status="live"]').wait_for(timeout=20_000)
                await page.locator(f'tr[data-id="{missed}"]').wait_for(timeout=5_000)
                await page.wait_for_function(
                    SELECTED.replace("STATUS", "delivered"),
                    arg=other,
                    timeout=5_000,
                )
            ARTIFACTS.mkdir(exist_ok=True)
            await page_b.screenshot(path=str(ARTIFACTS / "demo.png"), full_page=True)
            assert "Mug" in await row_text(page_a, missed)
    finally:
        await db.close()


async def test_rest_api_validates_input(database_url: str) -> None:
    port = free_port()
    async with demo(database_url, port):
        cases = [
            ("POST", "/api/orders", b"not json", 400),
            ("POST", "/api/orders", b'{"customer_name": "x"}', 400),
            ("POST", "/api/orders", b'{"customer_name": "x", "product_name": 5}', 400),
            (
                "POST",
                "/api/orders",
                b'{"customer_name": "x", "product_name": "y", "admin": true}',
                400,
            ),
            (
                "POST",
                "/api/orders",
                b'{"customer_name": "' + b"x" * 300 + b'", "product_name": "y"}',
                400,
            ),
            (
                "POST",
                "/api/orders",
                b'{"customer_name": "x\'; DROP TABLE orders; --", "product_name": "y"}',
                201,
            ),
            ("PUT", "/api/orders/1", b'{"status": "teleported"}', 400),
            ("PUT", "/api/orders/999", b'{"status": "shipped"}', 404),
            ("GET", "/api/orders/abc", b"", 404),
            ("DELETE", "/api/orders", b"", 405),
            ("DELETE", "/api/orders/1", b"", 204),
            ("DELETE", "/api/orders/1", b"", 404),
        ]
        for method, path, body, status in cases:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            head = (
                f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                f"Content-Length: {len(body)}\r\n"
                "Content-Type: application/json\r\n\r\n"
            )
            writer.write(head.encode() + body)
            response = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            assert response.split(b" ")[1] == str(status).encode(), (
                method,
                path,
                body,
                response[:200],
            )
