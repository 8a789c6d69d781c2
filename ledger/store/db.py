"""Connecting to the ledger database, running migrations, refusing an old schema.

Which database: ``--db URL``, else ``QUOTA_LEDGER_DB_URL``. Only a caller that asks for it
(``resolve_url(..., allow_embedded=True)``: the demo, ``quota-ledger db``, the admin commands a
person runs by hand) falls back to the embedded PostgreSQL of ledger/store/embedded.py. The
collector, the web service, the enforcer and the hub hook never start one: a daemon that
forgot its URL must fail where its operator sees it, not run a private database.

Every command except ``migrate`` checks that the schema is at the head revision first and
refuses to run on an older one, the way JupyterHub's ``check_db_revision`` does, with the fix
in the message.
"""

from __future__ import annotations

import asyncio
import os
import time
from importlib import resources as importlib_resources
from pathlib import Path

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

DB_URL_ENV = "QUOTA_LEDGER_DB_URL"


class DatabaseError(RuntimeError):
    """The database cannot be used: unreachable, or its schema is not what we need."""


class SchemaBehindError(DatabaseError):
    pass


class DatabaseNotConfigured(RuntimeError):
    """No database URL was given, and the embedded server was not asked for.

    Not a :class:`DatabaseError`: it is a configuration mistake, which retrying cannot fix.
    """


def normalize_url(url: str) -> str:
    """Accept plain ``postgresql://`` / ``postgres://`` URLs (psql, Grafana style) too."""
    for prefix in (
        "postgres://",
        "postgresql://",
        "postgresql+psycopg2://",
        "postgresql+psycopg://",
    ):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    return url


def configured_url(url: str | None = None) -> str | None:
    """``url``, else ``$QUOTA_LEDGER_DB_URL`` (normalized); None when neither is set."""
    url = url or os.environ.get(DB_URL_ENV)
    return normalize_url(url) if url else None


def resolve_url(
    url: str | None = None, *, allow_embedded: bool = False, how_to_pass: str = "--db URL"
) -> str:
    """The database URL: ``url``, else ``$QUOTA_LEDGER_DB_URL``.

    With neither, ``allow_embedded=True`` starts (or reuses) the embedded server; otherwise
    :class:`DatabaseNotConfigured` says to set the variable or ``how_to_pass``.
    """
    found = configured_url(url)
    if found:
        return found
    if not allow_embedded:
        raise DatabaseNotConfigured(
            f"no database configured: set ${DB_URL_ENV} or pass {how_to_pass} "
            "(a PostgreSQL URL such as postgresql://quota:PASSWORD@db-host/quota_ledger). "
            "This never starts the embedded PostgreSQL; for a local one run "
            "`quota-ledger db start` and use the URL it prints."
        )
    from ledger.store import embedded

    return embedded.ensure_running()


async def connect(url: str | None = None) -> AsyncEngine:
    """An engine on the ledger at ``url`` (default ``$QUOTA_LEDGER_DB_URL``), schema checked.

    For library callers (docs/library.md): never starts the embedded server, raises
    :class:`DatabaseNotConfigured` without a URL and :class:`DatabaseError` for a database
    that cannot be reached or whose schema is not this version's. ``await engine.dispose()``
    when done.
    """
    engine = create_engine(resolve_url(url, how_to_pass="connect(url)"))
    try:
        await check_schema(engine)
    except DBAPIError as exc:  # refused login, missing database …
        await engine.dispose()
        first_line = str(exc.orig or exc).splitlines()[0]
        where = engine.url.render_as_string(hide_password=True)
        raise DatabaseError(f"cannot use the database at {where}: {first_line}") from None
    except BaseException:
        await engine.dispose()
        raise
    return engine


def redact(url: str) -> str:
    """The URL without its password, for logs and pages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a malformed URL must not leak through an error either
        return "<unparseable database URL>"


def asyncpg_params(url: str, database: str | None = None) -> dict:
    """``asyncpg.connect(**params)`` for a SQLAlchemy URL (Unix-socket ``?host=`` included)."""
    u = make_url(normalize_url(url))
    params: dict = {
        "database": database or u.database or "postgres",
        "user": u.username or "postgres",
    }
    if u.password:
        params["password"] = u.password
    host = u.query.get("host") or u.host
    if host:
        params["host"] = host
    port = u.query.get("port") or u.port
    if port:
        params["port"] = int(port)
    return params


# A pooled connection used less than this long ago is handed out without a ping. SQLAlchemy's
# pool_pre_ping pings on every checkout, and with asyncpg a ping is three round trips (BEGIN,
# the ping, ROLLBACK): more than a decision's own query. A connection idle longer (a restarted
# server, a firewall that dropped it) is pinged the same way and replaced if dead, before the
# caller sees it: https://docs.sqlalchemy.org/en/20/core/pooling.html#disconnect-handling-pessimistic
PING_IDLE_SECONDS = 5.0


def create_engine(
    url: str, *, ping_idle_seconds: float = PING_IDLE_SECONDS, **kwargs
) -> AsyncEngine:
    kwargs.setdefault("pool_size", 5)
    engine = create_async_engine(normalize_url(url), **kwargs)
    if not kwargs.get("pool_pre_ping"):
        _ping_when_idle(engine, ping_idle_seconds)
    return engine


def _ping_when_idle(engine: AsyncEngine, idle_seconds: float) -> None:
    @event.listens_for(engine.sync_engine, "checkin")
    def _checked_in(dbapi_connection, record) -> None:
        record.info["quota_checked_in_at"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _checked_out(dbapi_connection, record, proxy) -> None:
        checked_in_at = record.info.get("quota_checked_in_at")
        if checked_in_at is None or time.monotonic() - checked_in_at < idle_seconds:
            return  # just connected, or used moments ago
        try:
            dbapi_connection.ping()
        except Exception as error:  # the pool discards it and connects again
            raise DisconnectionError(str(error)) from error


def migrations_dir() -> Path:
    """The alembic scripts: ``ledger.migrations`` when installed, ``migrations/`` in a checkout."""
    try:
        return Path(str(importlib_resources.files("ledger.migrations")))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(url: str):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    # ConfigParser interpolation would eat % signs in passwords
    cfg.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(
        alembic_config("postgresql+asyncpg://x@/x")
    ).get_current_head()


def _upgrade_sync(url: str, revision: str) -> None:
    from alembic import command

    command.upgrade(alembic_config(url), revision)


async def migrate(url: str, revision: str = "head") -> None:
    """Upgrade the schema. Alembic's async env runs its own event loop, so use a thread."""
    await asyncio.to_thread(_upgrade_sync, url, revision)


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        exists = await conn.scalar(text("SELECT to_regclass('alembic_version') IS NOT NULL"))
        if not exists:
            return None
        return await conn.scalar(text("SELECT version_num FROM alembic_version"))


async def check_schema(engine: AsyncEngine) -> None:
    """Refuse a database whose schema is behind (or ahead of) this version of quota-ledger."""
    try:
        current = await current_revision(engine)
    except (OSError, ConnectionError) as exc:
        raise DatabaseError(
            f"cannot reach the database at {redact(str(engine.url))}: {exc}"
        ) from exc
    head = head_revision()
    if current == head:
        return
    if current is None:
        raise SchemaBehindError(
            "the database has no quota-ledger schema yet. Run `quota-ledger migrate` "
            "(with the same --db) to create it."
        )
    raise SchemaBehindError(
        f"the database schema is at revision {current}, this quota-ledger needs {head}. "
        "Back up the database, then run `quota-ledger migrate` to upgrade it."
    )
