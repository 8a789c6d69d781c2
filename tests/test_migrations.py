"""Schema: migrate from nothing, refuse a schema that is behind, views exist."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from ledger import db


async def test_migrate_from_empty_then_schema_check_passes(empty_db_url):
    engine = db.create_engine(empty_db_url)
    try:
        with pytest.raises(db.SchemaBehindError, match="quota-ledger migrate"):
            await db.check_schema(engine)
        await db.migrate(empty_db_url)
        await db.check_schema(engine)
        await db.migrate(empty_db_url)  # idempotent
        async with engine.connect() as conn:
            views = set(
                await conn.scalars(
                    text("SELECT viewname FROM pg_views WHERE schemaname = 'public'")
                )
            )
        assert {"quota_user_usage_30d", "quota_daily_usage", "quota_group_usage_30d"} <= views
    finally:
        await engine.dispose()


async def test_schema_behind_is_refused_with_the_fix(empty_db_url):
    await db.migrate(empty_db_url, "0001")
    engine = db.create_engine(empty_db_url)
    try:
        with pytest.raises(db.SchemaBehindError) as info:
            await db.check_schema(engine)
        assert "0001" in str(info.value) and "quota-ledger migrate" in str(info.value)
    finally:
        await engine.dispose()


def test_installed_layout_has_no_top_level_migrations_package():
    import importlib.util

    assert importlib.util.find_spec("migrations") is None or "ledger" in str(
        importlib.util.find_spec("migrations").origin
    )
    assert (db.migrations_dir() / "env.py").exists()
