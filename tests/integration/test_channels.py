"""Raw NOTIFY channels matching the allowed patterns reach their subscribers."""

from __future__ import annotations

import asyncpg
import pytest

from .gateway_helpers import running_gateway, ws_client


async def test_notify_on_allowed_channels_reaches_subscribers(
    database_url: str, conn: asyncpg.Connection
) -> None:
    async with (
        running_gateway(database_url) as gateway,
        ws_client(gateway) as a,
        ws_client(gateway) as b,
    ):
        for client in (a, b):
            ack = await client.subscribe("q", channel="query_results_42")
            assert ack == {"type": "subscribed", "id": "q", "channel": "query_results_42"}
        assert (await a.subscribe("sys", channel="system_notifications"))["type"] == "subscribed"
        assert (await b.subscribe("t", channel="table_updates_orders"))["type"] == "subscribed"
        await conn.execute("SELECT pg_notify('query_results_42', $1)", '{"rows": 3}')
        await conn.execute("SELECT pg_notify('system_notifications', 'maintenance at 5')")
        await conn.execute("SELECT pg_notify('table_updates_orders', 'x')")
        await conn.execute("SELECT pg_notify('query_results_43', 'not subscribed')")
        got_a = [await a.recv(), await a.recv()]
        got_b = [await b.recv(), await b.recv()]
    assert got_a == [
        {"type": "message", "sub": "q", "channel": "query_results_42", "payload": '{"rows": 3}'},
        {
            "type": "message",
            "sub": "sys",
            "channel": "system_notifications",
            "payload": "maintenance at 5",
        },
    ]
    assert got_b == [
        {"type": "message", "sub": "q", "channel": "query_results_42", "payload": '{"rows": 3}'},
        {"type": "message", "sub": "t", "channel": "table_updates_orders", "payload": "x"},
    ]


async def test_last_unsubscribe_unlistens_and_disallowed_channels_are_refused(
    database_url: str, conn: asyncpg.Connection
) -> None:
    async with (
        running_gateway(database_url, channels="alerts_*") as gateway,
        ws_client(gateway) as client,
    ):
        refused = await client.subscribe("x", channel="system_notifications")
        assert refused["code"] == "forbidden_channel" and "alerts_*" in refused["message"]
        await client.subscribe("a", channel="alerts_eu")
        await client.send({"type": "unsubscribe", "id": "a"})
        assert (await client.recv())["type"] == "unsubscribed"
        await client.subscribe("b", channel="alerts_us")
        await conn.execute("SELECT pg_notify('alerts_eu', 'gone'), pg_notify('alerts_us', 'here')")
        message = await client.recv()
        assert message["channel"] == "alerts_us"
        assert "alerts_eu" not in gateway.listener._active_channels


@pytest.mark.parametrize("name", ["alerts_eu; LISTEN x", "Alerts EU", "a" * 64, ""])
async def test_hostile_channel_names_are_refused(
    database_url: str, conn: asyncpg.Connection, name: str
) -> None:
    async with running_gateway(database_url, channels="*") as gateway, ws_client(gateway) as client:
        refused = await client.subscribe("x", channel=name)
        assert refused["type"] == "error" and refused["code"] == "bad_request"
