"""docs/deploy/nginx.conf in a real nginx (Debian package) in front of a real gateway.

nginx runs in the foreground (``daemon off;``) with a generated nginx.conf whose
``http {}`` holds the deploy file itself, with only its ``listen`` line and upstream
``server`` lines rewritten to a free port and the test's gateways; pid, logs and temp
paths live in a temporary prefix (``-p``). Proven through nginx: a WebSocket client
subscribes and receives a change, close code 4000 passes through, an SSE stream
delivers a change while it is still open (not buffered until its end), /health works.
Nothing sleeps a fixed time: readiness and frames are awaited with deadlines.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import re
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from pgcast.auth import load_auth_config
from pgcast.capture.installer import track
from pgcast.client import connect
from pgcast.config import Settings
from pgcast.identifiers import parse_table_name
from pgcast.server import Gateway

from .gateway_helpers import TIMEOUT, WsClient, running_gateway

pytestmark = pytest.mark.timeout(90)

DEPLOY_CONF = Path(__file__).resolve().parents[2] / "docs" / "deploy" / "nginx.conf"


def nginx_binary() -> str:
    found = shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None
    )
    if found is None:
        pytest.fail(
            "nginx is not installed: these tests run a real nginx in front of the gateway. "
            "Install the Debian package (apt-get install nginx); .ci/run does it."
        )
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def render_deploy_conf(text: str, listen_port: int, upstreams: list[int]) -> str:
    """The deploy file with its listen and upstream server lines pointed at the test."""
    text, listens = re.subn(r"^([ \t]*)listen[ \t]+[^;#\n]+;", "", text, flags=re.M)
    assert listens == 1, f"{DEPLOY_CONF} should have exactly one active listen line"
    text = text.replace("server {", f"server {{\n    listen 127.0.0.1:{listen_port};", 1)

    upstream = re.search(r"upstream pgcast \{(.*?)\n\}", text, flags=re.S)
    assert upstream, f"{DEPLOY_CONF} has no `upstream pgcast {{...}}` block"
    body = upstream.group(1)
    active = re.findall(r"^[ \t]*server[ \t]+\S+([^;\n]*);", body, flags=re.M)
    assert active, f"{DEPLOY_CONF}: the upstream has no active server line"
    options = active[0]
    body = re.sub(r"^[ \t]*server[ \t]+[^;\n]+;\n?", "", body, flags=re.M)
    servers = "".join(f"\n    server 127.0.0.1:{port}{options};" for port in upstreams)
    return text[: upstream.start(1)] + servers + body + text[upstream.end(1) :]


def nginx_conf(
    prefix: Path, listen_port: int, upstreams: list[int], worker_connections: int = 256
) -> str:
    site = render_deploy_conf(DEPLOY_CONF.read_text(), listen_port, upstreams)
    temp = "\n".join(
        f"    {kind}_temp_path {prefix / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""daemon off;
worker_processes 1;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} info;
events {{ worker_connections {worker_connections}; }}
http {{
    access_log {prefix / "access.log"};
{temp}
{site}
}}
"""


@dataclass
class Nginx:
    port: int
    prefix: Path

    def log(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text() if path.exists() else ""


def prepare_prefix(upstreams: list[int], worker_connections: int) -> tuple[Path, int, Path]:
    prefix = Path(tempfile.mkdtemp(prefix="pgcast-nginx-"))
    prefix.chmod(0o755)  # nginx's workers drop root (to nobody) when the test runs as root
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_conf(prefix, port, upstreams, worker_connections))
    return prefix, port, conf


@contextlib.asynccontextmanager
async def running_nginx(
    upstreams: list[int], worker_connections: int = 256
) -> AsyncIterator[Nginx]:
    binary = nginx_binary()
    prefix, port, conf = prepare_prefix(upstreams, worker_connections)
    base = [binary, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
    test = await asyncio.create_subprocess_exec(
        *base, "-t", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(test.communicate(), TIMEOUT)
    assert test.returncode == 0, f"nginx -t refused the config:\n{out.decode()}\n{conf.read_text()}"
    proc = await asyncio.create_subprocess_exec(
        *base, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        await wait_listening(port, proc)
        yield Nginx(port, prefix)
    finally:
        if proc.returncode is None:
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), TIMEOUT)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        shutil.rmtree(prefix, ignore_errors=True)


async def wait_listening(port: int, proc: asyncio.subprocess.Process) -> None:
    """Until nginx accepts on ``port`` (fails at once if it exited)."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            if proc.returncode is not None:
                assert proc.stdout is not None
                raise AssertionError(f"nginx exited: {(await proc.stdout.read()).decode()}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(
                    0.02
                )  # poll interval while nginx binds, not a wait for an outcome
                continue
            writer.close()
            return


async def http_request(
    port: int, path: str, headers: str = ""
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int, dict[str, str]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**20)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: changes.test\r\n{headers}\r\n".encode())
    async with asyncio.timeout(TIMEOUT):
        head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    parsed = {}
    for line in lines:
        if line:
            name, _, value = line.partition(":")
            parsed[name.strip().lower()] = value.strip()
    return reader, writer, int(status_line.split()[1]), parsed


class EventStream:
    """An SSE body as an HTTP/1.1 client sees it from nginx (chunked or not)."""

    def __init__(self, reader: asyncio.StreamReader, headers: dict[str, str]) -> None:
        self.reader = reader
        self.chunked = headers.get("transfer-encoding", "").lower() == "chunked"
        self.buffer = b""
        self.ended = False

    async def _more(self) -> None:
        if not self.chunked:
            data = await self.reader.read(65536)
        else:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            data = await self.reader.readexactly(size) if size else b""
            await self.reader.readexactly(2)
        if not data:
            self.ended = True
            raise EOFError("the event stream ended")
        self.buffer += data

    async def event(self, timeout: float = TIMEOUT) -> tuple[str, dict[str, Any]]:
        """The next event with data, as (event name, JSON data); comments are skipped."""
        async with asyncio.timeout(timeout):
            while True:
                while b"\n\n" not in self.buffer:
                    await self._more()
                block, self.buffer = self.buffer.split(b"\n\n", 1)
                name, data = "message", ""
                for line in block.decode().split("\n"):
                    field, _, value = line.partition(": ")
                    if field == "event":
                        name = value
                    elif field == "data":
                        data = value
                if data:
                    return name, orjson.loads(data)


@pytest.fixture
async def orders(conn: asyncpg.Connection) -> asyncpg.Connection:
    await conn.execute("CREATE TABLE orders (id serial PRIMARY KEY, status text, amount int)")
    await track(conn, parse_table_name("orders"))
    return conn


async def test_websocket_subscribes_and_receives_changes_through_nginx(
    database_url: str, orders: asyncpg.Connection
) -> None:
    async with running_gateway(database_url) as gateway, running_nginx([gateway.port]) as nginx:
        async with (
            connect(f"ws://127.0.0.1:{nginx.port}") as client,
            client.subscribe("orders", filter="status=eq.pending") as sub,
        ):
            await orders.execute("INSERT INTO orders (status, amount) VALUES ('shipped', 1)")
            await orders.execute("INSERT INTO orders (status, amount) VALUES ('pending', 42)")
            frames = aiter(sub)
            change = await asyncio.wait_for(anext(frames), TIMEOUT)
        assert change["type"] == "change" and change["op"] == "INSERT"
        assert change["record"]["amount"] == 42 and change["record"]["status"] == "pending"
        assert nginx.log().count("[emerg]") == 0


async def test_shutdown_close_code_4000_passes_through_nginx(
    database_url: str, orders: asyncpg.Connection
) -> None:
    gateway = Gateway(Settings(port=0, poll_interval=0.5, probe_interval=2.0), database_url)
    await gateway.start()
    try:
        async with (
            running_nginx([gateway.port]) as nginx,
            ws_connect(f"ws://127.0.0.1:{nginx.port}/ws") as ws,
        ):
            raw = WsClient(ws)
            assert (await raw.recv())["type"] == "welcome"
            assert (await raw.subscribe("o", table="orders"))["type"] == "subscribed"
            await orders.execute("INSERT INTO orders (status, amount) VALUES ('new', 7)")
            (change,) = await raw.changes(1)
            assert change["record"]["amount"] == 7
            await gateway.stop()
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), TIMEOUT)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4000
    finally:
        await gateway.stop()


async def test_sse_events_are_not_buffered_by_nginx(
    database_url: str, orders: asyncpg.Connection
) -> None:
    async with running_gateway(database_url) as gateway, running_nginx([gateway.port]) as nginx:
        reader, writer, status, headers = await http_request(
            nginx.port, "/sse?table=orders", "Accept: text/event-stream\r\n"
        )
        try:
            assert status == 200, headers
            assert headers["content-type"].startswith("text/event-stream")
            stream = EventStream(reader, headers)
            kind, subscribed = await stream.event()
            assert kind == "subscribed" and subscribed["table"] == "orders"
            for amount in (1, 2):
                await orders.execute(
                    "INSERT INTO orders (status, amount) VALUES ('new', $1)", amount
                )
                # Each event arrives while the stream is open: nginx passes it on at once.
                kind, change = await stream.event()
                assert kind == "change" and change["record"]["amount"] == amount
            assert not stream.ended
        finally:
            writer.close()


async def test_health_through_nginx(database_url: str) -> None:
    async with running_gateway(database_url) as gateway, running_nginx([gateway.port]) as nginx:
        for _ in range(2):  # twice: the upstream keepalive connection is reused
            reader, writer, status, headers = await http_request(nginx.port, "/health")
            try:
                body = await asyncio.wait_for(
                    reader.readexactly(int(headers["content-length"])), TIMEOUT
                )
            finally:
                writer.close()
            assert status == 200
            health = orjson.loads(body)
            assert health["status"] == "ok" and health["listener"]["state"] == "listening"
        _, writer, status, _ = await http_request(nginx.port, "/metrics")
        writer.close()
        assert status == 404  # scrape each node directly, not through the public proxy


def test_render_keeps_everything_but_listen_and_servers() -> None:
    text = DEPLOY_CONF.read_text()
    rendered = render_deploy_conf(text, 18080, [9001, 9002])
    assert "listen 127.0.0.1:18080;" in rendered
    assert "server 127.0.0.1:9001 max_fails=1 fail_timeout=5s;" in rendered
    assert "server 127.0.0.1:9002 max_fails=1 fail_timeout=5s;" in rendered
    for directive in ("proxy_buffering off;", "proxy_read_timeout 1h;", "keepalive 16;"):
        assert rendered.count(directive) == text.count(directive)


# --- the client address behind nginx (trusted_proxies) ---------------------------------

NGINX_ADDRESS = "127.0.0.1"  # nginx connects to the gateway from here
HANDSHAKE = (
    "GET /ws HTTP/1.1\r\nHost: changes.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)


@dataclass
class RawSocket:
    """A WebSocket opened by hand from a chosen local address, held open, never read."""

    status: int
    writer: asyncio.StreamWriter


async def open_ws(port: int, source: str, headers: str = "") -> RawSocket:
    """Open /ws from ``source`` (any 127.x.y.z is loopback on Linux); on 101, return only
    once the gateway's welcome arrived, that is once it counted the connection."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, local_addr=(source, 0), limit=2**16
    )
    writer.write((HANDSHAKE + headers + "\r\n").encode())
    async with asyncio.timeout(TIMEOUT):
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        if status == 101:
            first, length = await reader.readexactly(2)
            assert first == 0x81 and length < 126, (first, length)
            welcome = orjson.loads(await reader.readexactly(length))
            assert welcome["type"] == "welcome", welcome
    if status != 101:
        writer.close()
    return RawSocket(status, writer)


async def sse_status(port: int, source: str, headers: str) -> int:
    """The status of a ``GET /sse`` for a raw channel from ``source`` (the stream is closed)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        request = "GET /sse?channel=system_notifications HTTP/1.1\r\nHost: changes.test\r\n"
        writer.write((request + headers + "\r\n").encode())
        async with asyncio.timeout(TIMEOUT):
            head = await reader.readuntil(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1])
    finally:
        writer.close()


def loopback(n: int) -> str:
    """The n-th of many distinct client addresses (127.1.0.0/16)."""
    return f"127.1.{n // 250}.{n % 250 + 1}"


async def test_1500_clients_through_nginx_each_count_under_their_own_address(
    database_url: str,
) -> None:
    """max_connections_per_ip at its default (1000) caps each client, not the whole node."""
    clients = 1500
    auth = load_auth_config({"max_connections_per_ip": 1000}, env={})
    sockets: list[RawSocket] = []
    async with (
        running_gateway(database_url, auth=auth, trusted_proxies=NGINX_ADDRESS) as gateway,
        running_nginx([gateway.port], worker_connections=4 * clients) as nginx,
    ):
        gate = asyncio.Semaphore(100)  # under nginx's listen backlog (511)

        async def one(n: int) -> RawSocket:
            async with gate:
                return await open_ws(nginx.port, loopback(n))

        try:
            results = await asyncio.gather(
                *(one(n) for n in range(clients)), return_exceptions=True
            )
            sockets = [sock for sock in results if isinstance(sock, RawSocket)]
            failed = [repr(exc) for exc in results if isinstance(exc, BaseException)]
            assert not failed, f"{len(failed)} failed: {failed[:3]}\n{nginx.log()[-2000:]}"
            statuses = collections.Counter(sock.status for sock in sockets)
            assert statuses == {101: clients}, statuses
            assert gateway.health()["clients"] == clients
        finally:
            for sock in sockets:
                sock.writer.close()
        assert "worker_connections are not enough" not in nginx.log()


async def test_a_client_cannot_choose_the_address_it_counts_under(database_url: str) -> None:
    """Through nginx or straight to the gateway, forged X-Forwarded-For / Forwarded
    headers leave a client counted under its own address; without trusted_proxies,
    everyone behind nginx shares nginx's address (the issue this setting solves)."""
    limit = 2
    auth = load_auth_config({"max_connections_per_ip": limit}, env={})
    held: list[RawSocket] = []

    def forged(n: int) -> str:
        return f"X-Forwarded-For: 198.51.100.{n}\r\nForwarded: for=198.51.100.{n}\r\n"

    async def statuses(port: int, source: str, count: int) -> list[int]:
        opened = [await open_ws(port, source, forged(n)) for n in range(count)]
        held.extend(opened)
        return [sock.status for sock in opened]

    def release() -> None:
        """Close the held sockets before their gateway stops (it would wait for them)."""
        for sock in held:
            sock.writer.close()
        held.clear()

    try:
        async with (
            running_gateway(database_url, auth=auth, trusted_proxies=NGINX_ADDRESS) as gateway,
            running_nginx([gateway.port]) as nginx,
        ):
            # Through nginx: each forged connection still counts under 127.0.0.3 ...
            assert await statuses(nginx.port, "127.0.0.3", limit + 1) == [101, 101, 429]
            # ... not under nginx's address: another client is still admitted.
            assert await statuses(nginx.port, "127.0.0.4", 1) == [101]
            # An SSE stream counts under the same address as the client's WebSockets.
            assert await sse_status(nginx.port, "127.0.0.3", forged(9)) == 429
            assert await sse_status(nginx.port, "127.0.0.6", forged(9)) == 200
            # Straight to the gateway, from an address that is not a trusted proxy.
            assert await statuses(gateway.port, "127.0.0.5", limit + 1) == [101, 101, 429]
            release()
        async with (
            running_gateway(database_url, auth=auth) as untrusting,
            running_nginx([untrusting.port]) as nginx,
        ):
            # No trusted_proxies: three clients behind nginx are one address to the gateway.
            assert [
                (await statuses(nginx.port, source, 1))[0]
                for source in ("127.0.0.3", "127.0.0.4", "127.0.0.5")
            ] == [101, 101, 429]
            release()
    finally:
        release()
