"""Monthly partitions of segments (migration 0006, ledger/store/partitions.py): the in-place
conversion of a loaded ledger, the default partition, one open segment per pod, retention by
whole months, and the components' roles on partitions made after migrate."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from test_db_roles import logins  # noqa: F401 - the fixture
from test_rollups_migration import AT_TIMES, _reports, _rows

from ledger.core.decision import ServerRequest, evaluate
from ledger.core.policy_yaml import parse_policy
from ledger.store import db, partitions, queries, rollups, segment_writes
from ledger.store.decide import decide

POLICY = parse_policy(
    (Path(__file__).resolve().parent.parent / "examples" / "policy.yaml").read_text(),
    "examples/policy.yaml",
)
REQUEST = ServerRequest({"cpu": 1000, "memory": 2**30, "gpu": 0})


def _utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


async def _decisions(engine, *, raw: bool = False) -> list:
    """decide's answers, or with ``raw`` the raw-segment engine's (every segment of the window
    swept: it reads only ``segments``, so it answers at any revision, where decide needs its
    reads of migration 0013)."""
    out = []
    for at in AT_TIMES:
        for user in ("user0", "user3", "user11"):
            if raw:
                since = at - timedelta(seconds=POLICY.max_window_seconds())
                async with engine.connect() as conn:
                    rows = await queries.user_segments(conn, user, since, at)
                d = evaluate(user, POLICY.limits_for(user, []), rows, REQUEST, at)
            else:
                d = await decide(engine, POLICY, user, [], REQUEST, at)
            out.append((d.allowed, d.retry_at, d.message))
    return out


async def _where(engine, pod_uid: str) -> str:
    async with engine.connect() as conn:
        return await conn.scalar(
            text("SELECT tableoid::regclass::text FROM segments WHERE pod_uid = :u"), {"u": pod_uid}
        )


async def test_migration_partitions_a_loaded_ledger_in_place(empty_db_url):
    await db.migrate(empty_db_url, "0008")
    engine = db.create_engine(empty_db_url)
    try:
        async with engine.begin() as conn:
            await queries.upsert_segments(conn, _rows(3000))
            await conn.execute(text("CREATE VIEW my_dashboard AS SELECT * FROM quota_segments"))
            await conn.execute(text("COMMENT ON VIEW my_dashboard IS 'an operator''s view'"))
            await conn.execute(text(  # a body parsed at creation depends on the table
                "CREATE FUNCTION my_open_count() RETURNS bigint LANGUAGE sql "
                "BEGIN ATOMIC SELECT count(*) FROM segments WHERE ended_at IS NULL; END"
            ))  # fmt: skip
            opened = await conn.scalar(text("SELECT my_open_count()"))
            max_id = await conn.scalar(text("SELECT max(id) FROM segments"))
        reports, decisions = await _reports(engine), await _decisions(engine, raw=True)
        await db.migrate(empty_db_url)
        async with engine.connect() as conn:
            kind = await conn.scalar(
                text("SELECT relkind::text FROM pg_class WHERE relname = 'segments'")
            )
            months = await conn.scalar(
                text(
                    "SELECT count(*) FROM quota_segment_partitions WHERE range_start < '2026-11-01'"
                )
            )
            in_default = await conn.scalar(text("SELECT count(*) FROM segments_default"))
            comment = await conn.scalar(text("SELECT obj_description('my_dashboard'::regclass)"))
            assert await conn.scalar(text("SELECT count(*) FROM my_dashboard")) == 3000
            assert await conn.scalar(text("SELECT my_open_count()")) == opened == 60
        assert (kind, months, in_default, comment) == ("p", 2, 0, "an operator's view")
        assert await rollups.verify(engine, None) == []
        assert await _reports(engine) == reports
        assert await _decisions(engine) == decisions
        async with engine.begin() as conn:  # the id sequence carries on
            await queries.upsert_segments(
                conn, [{"pod_uid": "new", "username": "u", "started_at": _utc(2026, 9, 3)}]
            )
            assert await conn.scalar(text("SELECT id FROM segments WHERE pod_uid = 'new'")) > max_id
            await conn.execute(text("DELETE FROM segments WHERE pod_uid = 'new'"))
        await asyncio.to_thread(command.downgrade, db.alembic_config(empty_db_url), "0008")
        async with engine.connect() as conn:
            assert await conn.scalar(text("SELECT relkind::text FROM pg_class WHERE relname = 'segments'")) == "r"  # fmt: skip
            assert await conn.scalar(text("SELECT my_open_count()")) == opened
        assert await rollups.verify(engine, None) == []
        assert await _reports(engine) == reports
    finally:
        await engine.dispose()


async def test_a_month_without_partition_lands_in_default_then_moves(engine):
    far = {"pod_uid": "far", "username": "u", "cpu_millicores": 1000}
    async with engine.begin() as conn:
        await queries.upsert_segments(
            conn, [{**far, "started_at": _utc(2031, 5, 2), "ended_at": _utc(2031, 5, 3)}]
        )
    assert await _where(engine, "far") == "segments_default"
    assert await partitions.ensure(engine, _utc(2031, 4, 30), _utc(2031, 5, 1)) == [
        "segments_2031_04",
        "segments_2031_05",
    ]
    assert await _where(engine, "far") == "segments_2031_05"
    assert await partitions.ensure(engine, _utc(2031, 5, 1), _utc(2031, 5, 1)) == []
    assert await rollups.verify(engine, None) == []


async def test_one_open_segment_per_pod_across_partitions(engine):
    await partitions.ensure(engine, _utc(2030, 1, 1), _utc(2030, 2, 1))
    row = {"pod_uid": "p", "username": "u", "memory_bytes": 2**30}
    async with engine.begin() as conn:
        await queries.upsert_segments(conn, [{**row, "started_at": _utc(2030, 1, 30)}])
        # a second open segment of the pod, in the next month's partition: skipped, as the
        # unique index did for INSERT … ON CONFLICT DO NOTHING
        await queries.upsert_segments(conn, [{**row, "started_at": _utc(2030, 2, 2)}])
        assert await conn.scalar(text("SELECT count(*) FROM segments WHERE pod_uid = 'p'")) == 1
        await queries.upsert_segments(
            conn, [{**row, "started_at": _utc(2030, 1, 2), "ended_at": _utc(2030, 1, 3)}]
        )
    with pytest.raises(DBAPIError, match="already has an open segment"):
        async with engine.begin() as conn:
            await conn.execute(
                text("UPDATE segments SET ended_at = NULL WHERE started_at = :s"),
                {"s": _utc(2030, 1, 2)},
            )


async def test_moving_a_row_across_partitions_keeps_rollups_exact(engine):
    await partitions.ensure(engine, _utc(2030, 3, 1), _utc(2030, 4, 1))
    async with engine.begin() as conn:
        await queries.upsert_segments(conn, [{
            "pod_uid": "m", "username": "u", "cpu_millicores": 500,
            "started_at": _utc(2030, 3, 30, 20), "ended_at": _utc(2030, 4, 1, 5),
        }])  # fmt: skip
        await conn.execute(
            text("UPDATE segments SET started_at = :s WHERE pod_uid = 'm'"),
            {"s": _utc(2030, 4, 1, 1)},
        )
    assert await _where(engine, "m") == "segments_2030_04"
    assert await rollups.verify(engine, None) == []


def test_retention_shorter_than_the_longest_window_is_refused():
    now = _utc(2027, 1, 1)
    with pytest.raises(partitions.RetentionError, match="keep at least 37 days"):
        partitions.retention_cutoff(now, 20 * 86400, 30 * 86400)
    assert partitions.retention_cutoff(now, 40 * 86400, 30 * 86400) == now - timedelta(days=40)


async def _daily(engine, first, last) -> list:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT * FROM quota_daily_usage_between(:a, :b) ORDER BY 1, 2"),
            {"a": first, "b": last},
        )
        return [tuple(r) for r in rows]


async def test_retention_drops_rolled_up_months_and_keeps_the_rest(engine):
    await partitions.ensure(engine, _utc(2025, 1, 1), _utc(2025, 5, 1))

    def seg(uid, start, end, user="u"):
        return {"pod_uid": uid, "username": user, "cpu_millicores": 1000,
                "memory_bytes": 2**30, "started_at": start, "ended_at": end}  # fmt: skip

    async with engine.begin() as conn:
        await queries.upsert_segments(conn, [
            seg("jan", _utc(2025, 1, 5), _utc(2025, 1, 7)),
            seg("feb", _utc(2025, 2, 5), _utc(2025, 2, 6), user="lost"),
            seg("mar", _utc(2025, 3, 5), None),
            seg("apr", _utc(2025, 4, 28), _utc(2025, 5, 20)),
        ])  # fmt: skip
        # rollups cleared for February's user behind the triggers' back: unrolled history
        await conn.execute(text("DELETE FROM usage_rollups WHERE username = 'lost'"))
    january = await _daily(engine, _utc(2025, 1, 1).date(), _utc(2025, 1, 31).date())
    assert january
    cutoff = _utc(2025, 5, 10)
    dry = await partitions.drop_before(engine, cutoff, dry_run=True)
    assert [(d.partition, d.dropped, d.reason is None) for d in dry][:4] == [
        ("segments_2025_01", False, True),
        ("segments_2025_02", False, False),
        ("segments_2025_03", False, False),
        ("segments_2025_04", False, False),
    ]
    done = {d.partition: d for d in await partitions.drop_before(engine, cutoff)}
    assert done["segments_2025_01"].dropped and done["segments_2025_01"].segments == 1
    assert "missing from usage_rollups" in done["segments_2025_02"].reason
    assert "still open" in done["segments_2025_03"].reason
    assert "end after the cutoff" in done["segments_2025_04"].reason
    async with engine.connect() as conn:
        assert await conn.scalar(text("SELECT to_regclass('segments_2025_01')")) is None
        assert await conn.scalar(text("SELECT raw_complete_since FROM rollup_horizon")) == cutoff
    # the rollups keep January for reports
    assert await _daily(engine, _utc(2025, 1, 1).date(), _utc(2025, 1, 31).date()) == january


async def test_collector_role_makes_and_drops_partitions_after_migrate(logins):  # noqa: F811
    collector = logins["collector"]
    made = await partitions.ensure(collector, _utc(2029, 6, 1), _utc(2029, 6, 1))
    assert made == ["segments_2029_06"]
    async with collector.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO segments (pod_uid, username, started_at, ended_at, last_seen_at) "
                "VALUES ('r', 'alice', :s, :e, :e)"
            ),
            {"s": _utc(2029, 6, 2), "e": _utc(2029, 6, 3)},
        )
    for component in ("web", "hub", "enforcer"):
        async with logins[component].connect() as conn:
            assert await conn.scalar(text("SELECT count(*) FROM segments WHERE pod_uid = 'r'")) == 1
    now = _utc(2030, 6, 1)
    removed, _ = await segment_writes.delete_older_than(collector, now, 300 * 86400)
    assert removed == 1
    async with collector.connect() as conn:
        assert await conn.scalar(text("SELECT to_regclass('segments_2029_06')")) is None


async def test_a_drop_keeps_months_whose_rollups_differ_from_their_segments(engine, tmp_path):
    """A segment written behind the rollup triggers' back (its days have rows, with other
    values): before, the partition was dropped with its raw history, and `rollups verify`
    then agreed because the horizon had moved past it. Now nothing is dropped and the reason
    says how to repair it; after the rebuild it drops."""
    await partitions.ensure(engine, _utc(2025, 1, 1), _utc(2025, 3, 1))
    async with engine.begin() as conn:
        await queries.upsert_segments(conn, [
            {"pod_uid": "a", "username": "old", "cpu_millicores": 1000, "memory_bytes": 2**30,
             "started_at": _utc(2025, 1, 10, 10), "ended_at": _utc(2025, 1, 10, 11)},
            {"pod_uid": "feb", "username": "other", "cpu_millicores": 1000,
             "memory_bytes": 2**30, "started_at": _utc(2025, 2, 3), "ended_at": _utc(2025, 2, 4)},
        ])  # fmt: skip
        await conn.execute(text("ALTER TABLE segments DISABLE TRIGGER USER"))
        await queries.upsert_segments(conn, [
            {"pod_uid": "b", "username": "old", "cpu_millicores": 4000, "memory_bytes": 2**30,
             "started_at": _utc(2025, 1, 10, 12), "ended_at": _utc(2025, 1, 12, 12)},
        ])  # fmt: skip
        await conn.execute(text("ALTER TABLE segments ENABLE TRIGGER USER"))
    cutoff = _utc(2025, 3, 1)
    kept = {d.partition: d for d in await partitions.drop_before(engine, cutoff)}
    assert not any(d.dropped for d in kept.values())
    assert (
        "rollups differ from its raw segments (old on 2025-01-10" in kept["segments_2025_01"].reason
    )
    assert partitions.rollups_differ(list(kept.values()))
    assert "rollups rebuild --since 2025-01-10" in kept["segments_2025_01"].reason
    assert "not dropped until segments_2025_01" in kept["segments_2025_02"].reason
    # the collector's retention deletes no row either (it would take the usage with it)
    assert await segment_writes.delete_older_than(engine, cutoff, 0) == (0, 0)
    async with engine.connect() as conn:
        assert await conn.scalar(text("SELECT count(*) FROM segments")) == 3
    await rollups.rebuild(engine, _utc(2025, 1, 1))
    done = {d.partition: d for d in await partitions.drop_before(engine, cutoff)}
    assert done["segments_2025_01"].dropped and done["segments_2025_02"].dropped


def test_a_drop_at_a_future_time_is_refused(capsys):
    from ledger.cli import main

    code = main(["partitions", "drop", "--db", "postgresql+asyncpg://x@/y", "--keep", "40d",
                 "--at", "2999-01-01T00:00:00Z"])  # fmt: skip
    assert code == 2
    assert "is in the future; a drop happens now" in capsys.readouterr().err
