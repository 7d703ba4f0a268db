"""Does LISTEN/NOTIFY work through this database URL? (PgBouncer in transaction mode: no.)

pgcast's live path is a ``LISTEN`` held by one session. PgBouncer in *transaction*
(or *statement*) pool mode gives the server connection back to its pool after every
transaction, so the backend that ran ``LISTEN`` serves other clients and its
notifications go to whoever holds it, or nowhere. Nothing fails loudly: the gateway
still polls the log every ``poll_interval``, so changes arrive late instead of live.

The check is functional, not a guess from version strings: a first connection
``LISTEN``s on a random channel, a second one ``NOTIFY``s it, and the notification must
reach the first within ``timeout``. Two hints then say *why* it failed:

- PgBouncer refuses startup parameters it does not know ("unsupported startup
  parameter"), which PostgreSQL accepts for a custom ``pgcast.*`` setting, so a third
  connection carrying ``pgcast.probe`` identifies PgBouncer (or a pooler that behaves
  the same, unless ``ignore_startup_parameters`` lists it);
- ``inet_server_port()`` differing from the URL's port means something (a pooler or
  a proxy) sits between pgcast and PostgreSQL.

``pgcast status`` prints :meth:`ListenCheck.explain`; ``pgcast serve`` logs it as an
error at startup when notifications do not arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import uuid
from typing import Any
from urllib.parse import urlsplit

import asyncpg

logger = logging.getLogger("pgcast.pgbouncer")

CONNECT_TIMEOUT = 5.0
PROBE_SETTING = "pgcast.probe"
PGBOUNCER_REJECTION = "unsupported startup parameter"

_ADVICE = (
    "Give pgcast a direct connection to PostgreSQL (or a PgBouncer pool in session "
    "mode) in --database-url / DATABASE_URL; your application can keep using PgBouncer "
    "in transaction mode, the capture triggers work whatever connection writes."
)


@dataclasses.dataclass(frozen=True)
class ListenCheck:
    """The outcome of :func:`check_listen`.

    ``delivered``: whether the probe notification arrived (``None`` when the check could
    not run: see ``error``). ``pgbouncer``: whether PgBouncer was identified. ``via_proxy``:
    whether the server's port differs from the URL's. ``timeout``: seconds waited.
    """

    delivered: bool | None
    pgbouncer: bool = False
    via_proxy: bool = False
    server_port: int | None = None
    url_port: int | None = None
    timeout: float = 2.0
    error: str | None = None

    @property
    def broken(self) -> bool:
        """True when LISTEN/NOTIFY was shown not to work through this URL."""
        return self.delivered is False

    def explain(self) -> str:
        """One paragraph for a person: what was found and what to do."""
        if self.delivered is None:
            return f"LISTEN/NOTIFY could not be checked: {self.error}"
        through = ""
        if self.pgbouncer:
            through = " through PgBouncer"
        elif self.via_proxy:
            through = (
                f" through a proxy or pooler (PostgreSQL listens on port {self.server_port}, "
                f"the URL names port {self.url_port})"
            )
        if self.delivered:
            if self.pgbouncer:
                return (
                    "LISTEN/NOTIFY works through PgBouncer (session pool mode): each "
                    "gateway holds one server connection for its LISTEN."
                )
            return f"LISTEN/NOTIFY works{through}."
        cause = (
            "PgBouncer in transaction or statement pool mode hands the server connection "
            "that ran LISTEN to other clients after each transaction, so notifications "
            "are lost"
            if self.pgbouncer or self.via_proxy
            else "a connection pooler in transaction mode, or a server that drops "
            "notifications, is the usual cause"
        )
        return (
            f"LISTEN/NOTIFY does not work{through}: a NOTIFY from a second connection did "
            f"not reach the listening connection within {self.timeout:g}s. {cause}; the "
            f"gateway then only sees changes when it polls the log (every poll_interval), "
            f"not live. {_ADVICE}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "works": self.delivered,
            "pgbouncer": self.pgbouncer,
            "via_proxy": self.via_proxy,
            "server_port": self.server_port,
            "url_port": self.url_port,
            "detail": self.explain(),
        }


def url_port(dsn: str) -> int | None:
    """The TCP port a ``postgresql://`` URL names (5432 when omitted), or None for a socket."""
    try:
        parts = urlsplit(dsn)
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if host is None or host.startswith("/") or "%2f" in parts.netloc.lower():
        return None  # a Unix socket (or a host given only in the query string)
    return port or 5432


async def _connect(dsn: str, **kwargs: Any) -> Any:
    # No statement cache: named prepared statements break in transaction pool mode.
    return await asyncpg.connect(dsn, statement_cache_size=0, timeout=CONNECT_TIMEOUT, **kwargs)


async def _close(conn: Any) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(conn.close(), 2.0)


async def notification_arrives(dsn: str, timeout: float) -> tuple[bool, int | None]:
    """LISTEN on one connection, NOTIFY from another: did it arrive? Also the server port."""
    channel = f"pgcast_probe_{uuid.uuid4().hex}"
    arrived = asyncio.Event()
    listener = await _connect(dsn)
    try:
        server_port = await listener.fetchval("SELECT inet_server_port()")
        await listener.add_listener(channel, lambda *_: arrived.set())
        notifier = await _connect(dsn)
        try:
            await notifier.execute(f"NOTIFY {channel}, 'probe'")
        finally:
            await _close(notifier)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(arrived.wait(), timeout)
    finally:
        await _close(listener)
    return arrived.is_set(), server_port


async def rejects_custom_startup_parameter(dsn: str) -> bool:
    """True when the server refuses ``pgcast.probe`` at startup as PgBouncer does."""
    try:
        conn = await _connect(dsn, server_settings={PROBE_SETTING: "on"})
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return PGBOUNCER_REJECTION in str(exc).lower()
    await _close(conn)
    return False


def decide(
    *,
    delivered: bool,
    rejected_probe: bool,
    server_port: int | None,
    dsn_port: int | None,
    timeout: float,
) -> ListenCheck:
    """Combine the probe's observations into a :class:`ListenCheck` (pure, for tests)."""
    via_proxy = server_port is not None and dsn_port is not None and server_port != dsn_port
    return ListenCheck(
        delivered=delivered,
        pgbouncer=rejected_probe,
        via_proxy=via_proxy,
        server_port=server_port,
        url_port=dsn_port,
        timeout=timeout,
    )


async def check_listen(dsn: str, *, timeout: float = 2.0) -> ListenCheck:
    """Whether a LISTEN on ``dsn`` receives a NOTIFY sent on ``dsn`` within ``timeout`` s.

    Never raises for database trouble: a check that cannot run returns
    ``delivered=None`` with ``error`` set.
    """
    try:
        delivered, server_port = await notification_arrives(dsn, timeout)
        rejected = await rejects_custom_startup_parameter(dsn)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        return ListenCheck(delivered=None, timeout=timeout, error=str(exc) or type(exc).__name__)
    return decide(
        delivered=delivered,
        rejected_probe=rejected,
        server_port=server_port,
        dsn_port=url_port(dsn),
        timeout=timeout,
    )


async def warn_if_broken(dsn: str, *, timeout: float = 2.0) -> ListenCheck:
    """Run :func:`check_listen` and log the outcome (an error when LISTEN is broken)."""
    check = await check_listen(dsn, timeout=timeout)
    if check.broken:
        logger.error("%s", check.explain())
    elif check.delivered is None:
        logger.debug("%s", check.explain())
    elif check.pgbouncer or check.via_proxy:
        logger.info("%s", check.explain())
    return check
