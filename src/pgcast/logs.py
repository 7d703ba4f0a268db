"""Log output for the ``pgcast`` command: plain text or one JSON object per line.

``--log-format json`` (or ``PGCAST_LOG_FORMAT=json``) makes every record one line::

    {"ts": "2026-11-21T10:15:02.114Z", "level": "error", "logger": "pgcast.listener",
     "message": "LISTEN connection lost: ...", "exception": "Traceback ..."}

``exception`` (the formatted traceback) is present only when the record carries one;
``stack`` likewise for ``stack_info``. Values that JSON cannot hold are written with
``str()``, so a log call never fails because of its arguments.
"""

from __future__ import annotations

import datetime
import logging
import sys
from typing import Final, TextIO

import orjson

LOG_FORMATS: Final = ("text", "json")
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object: ``ts``, ``level``, ``logger``, ``message``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(entry, default=str).decode()


class OneLineErrors(logging.Filter):
    """Folds a record's traceback into its message as one line: ``...: Type: text``.

    Installed below the debug level, so that an operator reads one line per event
    (asyncpg's pool alone logs a ~40-line traceback per failed reconnect while the
    database is down); ``--log-level debug`` keeps the tracebacks.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            detail = " ".join(str(exc).split())
            record.msg = f"{record.getMessage()}: {type(exc).__name__}" + (
                f": {detail}" if detail else ""
            )
            record.args = None
            record.exc_info = None
            record.exc_text = None
        record.stack_info = None
        return True


def configure_logging(level: str = "info", fmt: str = "text", stream: TextIO | None = None) -> None:
    """Send every log record at ``level`` or above to ``stream`` (stderr) in ``fmt``.

    Tracebacks are printed at the ``debug`` level only (see OneLineErrors)."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format {fmt!r} is not one of {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    if level.lower() != "debug":
        handler.addFilter(OneLineErrors())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
