"""Migration 0004 converts a loaded ledger in place: rollups backfilled exactly, reports
unchanged, and it downgrades back to 0003."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

from alembic import command
from sqlalchemy import text

from ledger.store import db, queries, rollups

BASE = datetime(2026, 9, 1, tzinfo=UTC)
AT_TIMES = [BASE + timedelta(days=d, hours=h) for d, h in ((5, 3), (20, 0), (33, 17), (45, 9))]


def _rows(n: int) -> list[dict]:
    rng = random.Random(14)
    rows = []
    for i in range(n):
        start = BASE + timedelta(microseconds=rng.randrange(40 * 86_400 * 10**6))
        length = timedelta(microseconds=rng.choice([0, rng.randrange(3 * 86_400 * 10**6)]))
        rows.append(
            {
                "pod_uid": f"pod-{i}",
                "username": f"user{i % 17}",
                "servername": f"s{i % 4}",
                "cpu_millicores": rng.choice([0, 250, 1000, 4000]),
                "memory_bytes": rng.choice([0, 2**30, 7 * 2**30 + 12345]),
                "gpu_count": rng.choice([0, 0, 1]),
                "started_at": start,
                "ended_at": None if i % 50 == 0 else start + length,
            }
        )
    return rows


async def _reports(engine) -> list[list[dict]]:
    async with engine.connect() as conn:
        return [
            sorted(await queries.usage_report(conn, at, w), key=lambda r: r["username"])
            for at in AT_TIMES
            for w in (3600, 86_400, 30 * 86_400)
        ]


async def test_upgrade_a_loaded_0003_ledger_in_place(empty_db_url):
    await db.migrate(empty_db_url, "0003")
    engine = db.create_engine(empty_db_url)
    try:
        async with engine.begin() as conn:
            await queries.upsert_segments(conn, _rows(3000))
        before = await _reports(engine)
        await db.migrate(empty_db_url)
        async with engine.connect() as conn:
            days = await conn.scalar(text("SELECT count(*) FROM usage_rollups"))
        assert days > 500
        assert await rollups.verify(engine, None) == []
        assert await _reports(engine) == before
        await asyncio.to_thread(command.downgrade, db.alembic_config(empty_db_url), "0003")
        async with engine.connect() as conn:
            assert not await conn.scalar(text("SELECT to_regclass('usage_rollups') IS NOT NULL"))
        assert await _reports(engine) == before
    finally:
        await engine.dispose()
