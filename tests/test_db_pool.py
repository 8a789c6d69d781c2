"""The engine's pool: a connection used moments ago is handed out without a ping (a decision
pays one round trip, not four); one idle longer is pinged, and a dead one is replaced before
the caller sees it."""

from __future__ import annotations

import asyncio

from sqlalchemy import event, text

from ledger.store import db


async def _backend_pid(engine) -> int:
    async with engine.connect() as conn:
        return await conn.scalar(text("SELECT pg_backend_pid()"))


async def _statements(engine, action, idle_seconds: float = 0) -> list[str]:
    """The statements the pool and ``action`` send (asyncpg's own, as the server sees them)."""
    seen: list[str] = []
    async with engine.connect() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        raw.add_query_logger(lambda record: seen.append(record.query))
    await asyncio.sleep(idle_seconds)
    await action()
    async with engine.connect() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        raw._query_loggers.clear()
    return seen


async def test_recently_used_connection_is_not_pinged(fresh_db_url):
    engine = db.create_engine(fresh_db_url, pool_size=1, max_overflow=0)
    try:
        pid = await _backend_pid(engine)
        statements = await _statements(engine, lambda: _backend_pid(engine))
        assert statements == ["BEGIN;", "ROLLBACK;"]  # our query's transaction, no ping
        assert await _backend_pid(engine) == pid
    finally:
        await engine.dispose()


async def test_idle_connection_is_pinged_and_a_dead_one_replaced(fresh_db_url):
    engine = db.create_engine(fresh_db_url, pool_size=1, max_overflow=0, ping_idle_seconds=0.05)
    invalidated = []
    event.listen(engine.sync_engine, "invalidate", lambda *a: invalidated.append(a))
    try:
        pid = await _backend_pid(engine)
        statements = await _statements(engine, lambda: _backend_pid(engine), idle_seconds=0.1)
        # the ping (BEGIN, ";", ROLLBACK), then our query's transaction
        assert statements == ["BEGIN;", ";", "ROLLBACK;", "BEGIN;", "ROLLBACK;"]
        # the server ends the pooled connection (a restart, an idle timeout, a failover)
        other = db.create_engine(fresh_db_url)
        async with other.connect() as conn:
            await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        await other.dispose()
        await asyncio.sleep(0.1)
        assert await _backend_pid(engine) != pid  # no error: the pool connected again
        assert invalidated
    finally:
        await engine.dispose()
