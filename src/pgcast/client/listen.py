"""``pgcast listen``: print the changes of one table (or a raw channel) as they happen.

The CLI parses the arguments and calls :func:`listen`; this module owns what is
printed and the exit code.

Exit codes: 0 stopped normally (``max_events`` reached, or the client closed);
1 the gateway refused the subscription (bad filter, forbidden table...);
2 the gateway rejected the connection (close code 4500-4999, HTTP 401/403) or the
target / URL is unusable.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

import orjson

from pgcast.client._connection import ClientError, ConnectionRejected, Subscription, connect
from pgcast.client._protocol import parse_target
from pgcast.exceptions import PgcastError

__all__ = ["format_frame", "listen"]

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_REJECTED = 2
UNAUTHORIZED = 4501  # close code: no token, or one that does not verify


async def listen(
    url: str,
    target: str,
    *,
    filter: str | None = None,
    since: str | None = None,
    events: list[str] | None = None,
    json_lines: bool = False,
    token: str | None = None,
    channel: bool = False,
    max_events: int | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Subscribe to ``target`` and print every frame it receives; return an exit code.

    ``target`` is a table (``orders``, ``audit.events``, ``"Booking"``: unquoted
    names are lowercased, quoted ones keep their case) or, with ``channel=True``, a
    raw NOTIFY channel name used as is. With ``json_lines`` each frame is printed
    as received, one compact JSON object per line; otherwise as a one-line summary
    (``INSERT public.orders change=1042 {...}``: the change id, then the row).
    ``resync`` frames are printed too: they mean the consumer must refetch.
    ``max_events`` stops after that many changes/messages. ``out`` / ``err`` default
    to stdout / stderr.
    """
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    try:
        async with connect(url, token=token) as client:
            if channel:
                subscription: Subscription = client.channel(target)
            else:
                schema, table = parse_target(target)
                subscription = client.subscribe(
                    table, schema=schema, filter=filter, events=events, since=since
                )
            async with subscription as sub:
                print(f"pgcast: listening to {sub.target} at {client.url}", file=err, flush=True)
                count = 0
                async for frame in sub:
                    out.write(_render(frame, json_lines) + "\n")
                    out.flush()
                    if frame.get("type") in ("change", "message"):
                        count += 1
                        if max_events is not None and count >= max_events:
                            break
    except BrokenPipeError:
        return EXIT_OK  # `pgcast listen orders --json | head -1`
    except ConnectionRejected as exc:
        if exc.code == UNAUTHORIZED and not token:
            print(
                f"pgcast: the gateway at {url} requires a token: pass --token TOKEN "
                f"(it said: {exc.reason or 'unauthorized'})",
                file=err,
                flush=True,
            )
        else:
            print(f"pgcast: {exc}", file=err, flush=True)
        return EXIT_REJECTED
    except ClientError as exc:
        print(f"pgcast: {exc}", file=err, flush=True)
        return EXIT_REFUSED
    except PgcastError as exc:  # bad target or URL
        print(f"pgcast: {exc}", file=err, flush=True)
        return EXIT_REJECTED
    return EXIT_OK


def _render(frame: dict[str, Any], json_lines: bool) -> str:
    if json_lines:
        return orjson.dumps(frame).decode()
    return format_frame(frame)


def format_frame(frame: dict[str, Any]) -> str:
    """A readable one-line summary of a ``change``, ``message`` or ``resync`` frame."""
    kind = frame.get("type")
    if kind == "change":
        where = f"{frame.get('schema')}.{frame.get('table')}"
        # "change" and not "id": the row's own id column is printed right after it.
        line = f"{frame.get('op')} {where} change={frame.get('id')}"
        row = frame.get("record")
        if row is None:
            row = frame.get("old_record")
        if row is not None:
            line += " " + orjson.dumps(row).decode()
        changed = frame.get("changed")
        if changed:
            line += " changed=" + ",".join(str(column) for column in changed)
        return line
    if kind == "message":
        return f"MESSAGE {frame.get('channel')} {frame.get('payload')}"
    if kind == "resync":
        reason = frame.get("reason")
        line = "RESYNC the change log no longer covers this position: refetch"
        return f"{line} ({reason})" if reason else line
    return orjson.dumps(frame).decode()
