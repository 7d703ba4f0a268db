"""What the command line says: one line, what happened and what to do, no traceback
(issue 14's "Messages and logs" findings, each reproduced as the user met it)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path

import asyncpg
import pytest

from .test_cli import (
    UNREACHABLE_URL,
    Cli,
    assert_no_traceback,
    cli_env,
    free_port,
    listening,
    serving,
)


@pytest.fixture
def cli(tmp_path: Path, database_url: str) -> Cli:
    return Cli(tmp_path, database_url)


async def test_bare_pgcast_lists_the_commands(tmp_path: Path) -> None:
    result = await Cli(tmp_path, UNREACHABLE_URL).run()
    assert result.code == 2
    for command in ("serve", "track", "status", "listen", "demo", "embedded"):
        assert f"    {command} " in result.stderr, result.stderr
    assert "Start with `pgcast demo`" in result.stderr


async def test_help_pages_describe_the_command_table_and_defaults(tmp_path: Path) -> None:
    offline = Cli(tmp_path, UNREACHABLE_URL)
    track, listen = await asyncio.gather(
        offline.run("track", "--help"), offline.run("listen", "--help")
    )
    track_help, listen_help = (" ".join(r.stdout.split()) for r in (track, listen))
    assert "Installs pgcast's schema" in track_help, track_help
    assert "schema-qualified audit.events" in track_help  # TABLE explained
    assert "Needs `pgcast serve` running" in listen_help
    assert "default: PGCAST_URL, else ws://127.0.0.1:8000" in listen_help


async def test_log_options_after_the_subcommand(cli: Cli) -> None:
    result = await cli.run("status", "--log-level", "debug", "--log-format", "json")
    assert result.code == 0, result


async def test_status_shows_an_empty_log_and_the_track_options(
    cli: Cli, conn: asyncpg.Connection
) -> None:
    await conn.execute("CREATE TABLE orders (id int PRIMARY KEY, status text)")
    await cli.ok("track", "orders", "--when-changed", "status")
    status = (await cli.ok("status")).stdout
    assert "when changed: status" in status, status
    assert "change log: 0 rows" in status and ", empty" in status, status
    assert "None" not in status, status


async def test_prune_names_the_flag_that_is_wrong(cli: Cli) -> None:
    result = await cli.run("prune", "--older-than", "1 week")
    assert result.code == 2, result
    assert result.stderr.startswith("pgcast: error: --older-than='1 week' is not a valid"), result
    assert "retention" not in result.stderr.split("is not")[0]
    assert result.stderr.count("\n") == 1


async def test_status_json_into_a_closed_pipe_ends_quietly(cli: Cli, tmp_path: Path) -> None:
    """`pgcast status --json | head` ended in a BrokenPipeError traceback. `true` closes
    the pipe without reading it, long before status has connected and printed."""
    proc = await asyncio.create_subprocess_shell(
        "pgcast status --json | true; echo ${PIPESTATUS[0]}",
        executable="/bin/bash",
        cwd=tmp_path,
        env=cli_env(cli.database_url),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert out.decode().strip() == "0"
    assert err.decode() == "", err.decode()


async def test_no_false_gap_after_pruning_the_whole_log(cli: Cli, conn: asyncpg.Connection) -> None:
    """After `prune` emptied the log, every start logged a false 'pruned through' ERROR."""
    await conn.execute("CREATE TABLE orders (id int PRIMARY KEY)")
    await cli.ok("track", "orders")
    await conn.execute("INSERT INTO orders SELECT generate_series(1, 20)")
    await cli.ok("prune", "--keep-last", "0")
    async with serving(cli) as gateway:
        # a live change delivered: the reader has read the log since it started
        async with listening(cli, "orders", "--url", gateway.url) as listener:
            await conn.execute("INSERT INTO orders VALUES (21)")
            await listener.stdout.expect(lambda line: '"id":21' in line)
        stderr = gateway.process.stderr.text
    assert "pruned through" not in stderr, stderr
    status = (await cli.ok("status")).stdout
    assert "pruned through id 20" in status, status


async def test_serve_waits_for_the_database_and_says_so(tmp_path: Path) -> None:
    db_port = free_port()
    offline = Cli(tmp_path, f"postgresql://postgres@127.0.0.1:{db_port}/postgres")
    gateway_port = free_port()
    async with offline.start("serve", "--port", str(gateway_port)) as proc:
        line = await proc.stderr.expect(lambda text: "retrying in" in text)
        assert "cannot connect to PostgreSQL at postgresql://postgres@127.0.0.1:" in line
        # the database appears (a forwarder to the real one): the gateway comes up
        server = await asyncio.start_server(forward_to_postgres, "127.0.0.1", db_port)
        async with server:
            await proc.stderr.expect(lambda text: "serving ws://" in text, timeout=30)
            proc.proc.send_signal(signal.SIGINT)
            assert await proc.exit_code() == 0
    assert_no_traceback(proc.stderr.text)


async def test_serve_waiting_for_the_database_stops_on_ctrl_c(tmp_path: Path) -> None:
    offline = Cli(tmp_path, UNREACHABLE_URL)
    async with offline.start("serve", "--port", str(free_port())) as proc:
        await proc.stderr.expect(lambda text: "retrying in" in text)
        proc.proc.send_signal(signal.SIGINT)
        assert await proc.exit_code() == 0
    assert_no_traceback(proc.stderr.text)


async def forward_to_postgres(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    up_reader, up_writer = await asyncio.open_connection("127.0.0.1", 5432)

    async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        dst.close()

    await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def test_listen_without_a_gateway_suggests_pgcast_serve(tmp_path: Path) -> None:
    offline = Cli(tmp_path, UNREACHABLE_URL)
    url = f"ws://127.0.0.1:{free_port()}"
    async with offline.start("listen", "orders", "--url", url) as proc:
        line = await proc.stderr.expect(lambda text: "cannot reach a gateway" in text)
        assert "is `pgcast serve` running there?" in line


async def test_listen_without_a_token_says_pass_token(cli: Cli) -> None:
    secret = "s" * 40
    port = free_port()
    async with cli.start("serve", "--port", str(port), "--jwt-secret", secret) as gateway:
        await gateway.stderr.expect(lambda line: "serving ws://" in line)
        result = await cli.run("listen", "orders", "--url", f"ws://127.0.0.1:{port}")
        gateway.proc.send_signal(signal.SIGTERM)
    assert result.code == 2, result
    assert "requires a token: pass --token TOKEN" in result.stderr, result.stderr
    assert_no_traceback(result.stderr)
    assert [line for line in result.stderr.splitlines() if "token" in line] == [
        line for line in result.stderr.splitlines() if line.startswith("pgcast:")
    ], result.stderr
