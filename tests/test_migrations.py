"""Schema: migrate from nothing, refuse a schema that is behind, views exist."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from ledger.store import db


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


def test_wheel_ships_migrations_inside_ledger_not_top_level(tmp_path):
    """`quota-ledger migrate` works from any cwd, no top-level package."""
    import subprocess
    import sys
    import zipfile
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
         "-w", str(tmp_path), str(root)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    wheel = next(tmp_path.glob("quota_ledger-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "ledger/migrations/env.py" in names
    assert "ledger/migrations/versions/0001_ledger_schema.py" in names
    assert "ledger/migrations/script.py.mako" in names
    assert not any(n.startswith("migrations/") for n in names)
    assert (db.migrations_dir() / "env.py").exists()
