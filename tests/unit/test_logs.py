"""The JSON log formatter and ``configure_logging``."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import orjson
import pytest

from pgcast.logs import JsonFormatter, configure_logging


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_one_json_object_per_record_with_exception() -> None:
    stream = io.StringIO()
    configure_logging("debug", "json", stream)
    log = logging.getLogger("pgcast.test")
    log.info("hello %s", "world")
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        log.exception("failed with %r", {"a": 1})
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (orjson.loads(line) for line in lines)
    assert first["message"] == "hello world" and first["level"] == "info"
    assert first["logger"] == "pgcast.test" and first["ts"].endswith("Z")
    assert "exception" not in first
    assert second["level"] == "error" and "ValueError: boom" in second["exception"]


def test_unserialisable_values_do_not_break_logging() -> None:
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "%s", (object(),), None)
    entry = orjson.loads(JsonFormatter().format(record))
    assert entry["message"].startswith("<object object")


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="log format"):
        configure_logging("info", "xml")


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_tracebacks_only_at_debug_level(fmt: str) -> None:
    """Below debug, a record with a traceback (asyncpg's pool logs one per failed
    reconnect) is one line: the message, the exception type and its text."""
    stream = io.StringIO()
    configure_logging("info", fmt, stream)
    log = logging.getLogger("asyncpg.pool")
    try:
        raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 1)")
    except OSError:
        log.warning("Failed to restore the pool connection floor; retrying", exc_info=True)
    text = stream.getvalue()
    assert len(text.splitlines()) == 1, text
    assert "Traceback" not in text
    assert "retrying: ConnectionRefusedError: [Errno 111] Connect call failed" in text

    stream = io.StringIO()
    configure_logging("debug", fmt, stream)
    try:
        raise ValueError("boom")
    except ValueError:
        log.warning("failed", exc_info=True)
    assert "Traceback" in stream.getvalue()
