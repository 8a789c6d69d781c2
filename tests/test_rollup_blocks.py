"""The multi-day rollup blocks (migration 0012) in a real PostgreSQL: kept equal to the sum of
their days by triggers whatever writes the segments, so ``quota_usage`` and the all-users
report read from them equal the raw-segment engine to the microsecond over windows of many
days; ``rollups verify`` finds a wrong block and ``rebuild`` repairs it; the migration
upgrades a loaded ledger in place and downgrades.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from alembic import command
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from ledger.core import usage
from ledger.core.decision import to_us
from ledger.core.policy_yaml import parse_policy
from ledger.core.resources import GIB
from ledger.core.usage_model import resources_from_segments
from ledger.store import db, queries, rollups, segment_writes
from ledger.store.report import build_report

# a block boundary of every width (16 divides its day number): windows straddle them
BASE = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(days=64 * 320)
DAY_S = 86_400
US = 1_000_000
SPAN_DAYS = 80

offset_us = st.one_of(
    st.integers(0, SPAN_DAYS * DAY_S * US),
    st.integers(0, SPAN_DAYS).map(lambda d: d * DAY_S * US),  # midnight exactly
)
duration_us = st.one_of(
    st.none(),  # open
    st.integers(0, 3 * DAY_S * US),
    st.integers(0, 40 * DAY_S * US),  # runs through many days, and blocks
    st.sampled_from([0, 1, DAY_S * US, 2 * DAY_S * US]),
)
segment = st.tuples(offset_us, duration_us, st.integers(0, 8), st.integers(0, 4000))
window_s = st.one_of(
    st.integers(1, 70 * DAY_S),
    st.sampled_from([DAY_S, 7 * DAY_S, 30 * DAY_S, 64 * DAY_S]),
)

RESOURCES = (
    ("cpu", "cpu_millicore_seconds"),
    ("memory", "memory_byte_seconds"),
    ("gpu", "gpu_seconds"),
)


def _row(i: int, start_us: int, length_us: int | None, gib: int, cpu: int, tag: str) -> dict:
    started = BASE + timedelta(microseconds=start_us)
    return {
        "pod_uid": f"{tag}-{i}",
        "username": ("alice", "bob", "carol")[i % 3],
        "servername": f"s{i % 2}",
        "cpu_millicores": cpu,
        "memory_bytes": gib * GIB + i,
        "gpu_count": i % 2,
        "started_at": started,
        "ended_at": None if length_us is None else started + timedelta(microseconds=length_us),
    }


async def _load(engine, first, late, touching, close_at_us) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("TRUNCATE segments, usage_rollups"))
        rows = [_row(i, *seg, "early") for i, seg in enumerate(first)]
        # a segment starting exactly where another ends (same pod size, another pod)
        rows += [
            {
                **r,
                "pod_uid": f"touch-{i}",
                "started_at": r["ended_at"],
                "ended_at": r["ended_at"] + timedelta(microseconds=length),
            }  # fmt: skip
            for i, (r, length) in enumerate(zip(rows, touching, strict=False))
            if r["ended_at"] is not None
        ]
        await queries.upsert_segments(conn, rows)
    # late history: its days (and blocks) were rolled up already
    async with engine.begin() as conn:
        await queries.upsert_segments(conn, [_row(i, *seg, "late") for i, seg in enumerate(late)])
    # open segments closed later, as the collector's reconcile does
    close_at = BASE + timedelta(microseconds=close_at_us)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE segments SET last_seen_at = GREATEST(started_at, :at) "
                "WHERE ended_at IS NULL AND pod_uid LIKE 'early-%'"
            ),
            {"at": close_at},
        )
        uids = list(
            await conn.scalars(
                text("SELECT pod_uid FROM segments WHERE ended_at IS NULL AND pod_uid LIKE '%-1%'")
            )
        )
    ops = [segment_writes.VanishSegments(tuple(uids), close_at)] if uids else []
    await segment_writes.apply_ops(engine, ops)


def _policy(window: int):
    return parse_policy(
        f"""
window: {window}s
unlisted_users: regular
groups:
  regular: {{memory: 900 GiB-hours, cpu: 300 CPU-hours, gpu: 50 GPU-hours}}
"""
    )


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    first=st.lists(segment, max_size=14),
    late=st.lists(segment, max_size=5),
    touching=st.lists(st.integers(0, 5 * DAY_S * US), max_size=4),
    close_at_us=offset_us,
    at_us=st.one_of(
        st.integers(0, (SPAN_DAYS + 5) * DAY_S * US),
        st.integers(0, SPAN_DAYS).map(lambda d: d * DAY_S * US),
    ),
    window=window_s,
)
async def test_usage_and_report_from_blocks_equal_raw_segments(
    engine, first, late, touching, close_at_us, at_us, window
):
    await _load(engine, first, late, touching, close_at_us)
    at = BASE + timedelta(microseconds=at_us)
    since = at - timedelta(seconds=window)
    policy = _policy(window)
    lines = {line.username: line for line in await build_report(engine, policy, at)}
    async with engine.connect() as conn:
        report = {r["username"]: r for r in await queries.usage_report(conn, at, window)}
        for user in ("alice", "bob", "carol"):
            rows = await queries.user_segments(conn, user, since, at)
            rows = [r for r in rows if r.started_at_us < to_us(at)]
            got = report.get(user)
            if not rows:
                assert got is None and user not in lines
                continue
            assert got["segments"] == len(rows)
            for name, column in RESOURCES:
                intervals = [(r.started_at_us, r.ended_at_us, r.amounts[name]) for r in rows]
                assert got[column] * US == usage.window_usage(intervals, to_us(at), window * US)
            running = [r for r in rows if r.ended_at_us is None or r.ended_at_us > to_us(at)]
            assert got["running_servers"] == len(running)
            # the report's records: the usage model's, from the raw segments
            raw = resources_from_segments(
                policy.limits_for(user, []), rows, at, [n for n, _ in RESOURCES], window
            )
            for name, _ in RESOURCES:
                assert lines[user].resources[name].used_hours == raw[name].used_hours
                assert lines[user].resources[name].running == raw[name].running
    assert await rollups.verify(engine, None) == []


async def _add_some(engine) -> None:
    rows = [
        _row(i, i * 97_000 * US, (i % 4) * 9 * DAY_S * US + 1234, 4, 1000, "v") for i in range(60)
    ]
    async with engine.begin() as conn:
        await queries.upsert_segments(conn, rows)


async def _blocks(engine) -> list[tuple]:
    async with engine.connect() as conn:
        return [
            tuple(r)
            for r in await conn.execute(
                text(
                    "SELECT * FROM usage_rollup_blocks ORDER BY username, width_days, bucket_start"
                )
            )
        ]


async def test_blocks_are_the_sums_of_their_days(engine):
    await _add_some(engine)
    async with engine.connect() as conn:
        widths = set(
            await conn.scalars(text("SELECT DISTINCT width_days FROM usage_rollup_blocks"))
        )
        # one user's 8-day blocks against their days, summed here
        days = (
            await conn.execute(
                text(
                    "SELECT bucket_start, memory_used, segments_started FROM usage_rollups "
                    "WHERE username = 'bob'"
                )
            )
        ).all()
        blocks = (
            await conn.execute(
                text(
                    "SELECT bucket_start, memory_used, segments_started FROM usage_rollup_blocks "
                    "WHERE username = 'bob' AND width_days = 8 AND memory_used <> 0"
                )
            )
        ).all()
    assert widths == {2, 4, 8, 16}
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    expected: dict = {}
    for day, used, started in days:
        block = epoch + timedelta(days=(day - epoch).days // 8 * 8)
        total = expected.setdefault(block, [Decimal(0), 0])
        total[0] += used
        total[1] += started
    assert {b: [u, n] for b, u, n in blocks} == {b: t for b, t in expected.items() if t[0] != 0}


async def test_verify_finds_a_wrong_block_and_rebuild_repairs_it(engine):
    await _add_some(engine)
    assert await rollups.verify(engine, None) == []
    before = await _blocks(engine)
    async with engine.begin() as conn:  # plant: one block off by one byte·µs, one missing
        await conn.execute(
            text(
                "UPDATE usage_rollup_blocks SET memory_used = memory_used + 1 "
                "WHERE username = 'bob' AND width_days = 16 AND bucket_start = "
                "(SELECT min(bucket_start) FROM usage_rollup_blocks "
                " WHERE username = 'bob' AND width_days = 16)"
            )
        )
        await conn.execute(
            text(
                "DELETE FROM usage_rollup_blocks WHERE username = 'alice' AND width_days = 2 "
                "AND bucket_start = (SELECT max(bucket_start) FROM usage_rollup_blocks "
                "WHERE username = 'alice' AND width_days = 2 AND memory_used > 0)"
            )
        )
    found = await rollups.verify(engine, None)
    assert {type(m) for m in found} == {rollups.BlockMismatch}
    assert {(m.username, m.width_days) for m in found} == {("bob", 16), ("alice", 2)}
    bob = next(m for m in found if m.username == "bob")
    assert int(bob.stored["memory_used"]) == int(bob.expected["memory_used"]) + 1
    assert "16-day block" in bob.describe() and bob.to_json()["block_days"] == 16
    alice = next(m for m in found if m.username == "alice")
    assert alice.stored is None and alice.expected is not None
    await rollups.rebuild(engine, None)
    assert await rollups.verify(engine, None) == []
    assert await _blocks(engine) == before


async def test_admin_writes_to_days_and_truncate_keep_blocks_exact(engine):
    await _add_some(engine)
    async with engine.begin() as conn:  # an admin corrects segments, and a day, by hand
        await conn.execute(
            text(
                "UPDATE segments SET ended_at = started_at + interval '90 minutes', "
                "memory_bytes = memory_bytes * 2 WHERE pod_uid IN ('v-3', 'v-4', 'v-9')"
            )
        )
        await conn.execute(text("DELETE FROM segments WHERE pod_uid = 'v-5'"))
    assert await rollups.verify(engine, None) == []
    async with engine.begin() as conn:
        await conn.execute(text("TRUNCATE usage_rollups"))
        assert await conn.scalar(text("SELECT count(*) FROM usage_rollup_blocks")) == 0
    await rollups.rebuild(engine, None)
    assert await rollups.verify(engine, None) == []
    async with engine.connect() as conn:
        assert await conn.scalar(text("SELECT count(*) FROM usage_rollup_blocks")) > 0


async def test_pieces_cover_a_range_with_few_aligned_blocks(engine):
    async with engine.connect() as conn:
        for first, days in ((3, 30), (0, 64), (5, 1), (7, 0), (1, 90), (63, 2)):
            start = BASE + timedelta(days=first)
            pieces = (
                await conn.execute(
                    text("SELECT * FROM quota_rollup_pieces(:a, :b) ORDER BY bucket_start"),
                    {"a": start, "b": start + timedelta(days=days)},
                )
            ).all()
            covered = start
            for width, block in pieces:  # contiguous, aligned, exactly the range
                assert block == covered
                assert (block - datetime(1970, 1, 1, tzinfo=UTC)).days % width == 0
                covered = block + timedelta(days=width)
            assert covered == start + timedelta(days=days)
            assert len(pieces) <= 12


BEFORE = BASE + timedelta(days=10)
AT_TIMES = [BEFORE + timedelta(days=d, hours=h) for d, h in ((5, 3), (20, 0), (41, 17), (70, 9))]


async def _reports(engine) -> list[list[dict]]:
    async with engine.connect() as conn:
        return [
            sorted(await queries.usage_report(conn, at, w), key=lambda r: r["username"])
            for at in AT_TIMES
            for w in (3600, 86_400, 9 * 86_400, 30 * 86_400, 65 * 86_400)
        ]


async def test_upgrade_a_loaded_0010_ledger_in_place_and_downgrade(empty_db_url):
    await db.migrate(empty_db_url, "0010")
    engine = db.create_engine(empty_db_url)
    try:
        await _add_some(engine)
        before = await _reports(engine)
        await db.migrate(empty_db_url)
        async with engine.connect() as conn:
            assert await conn.scalar(text("SELECT count(*) FROM usage_rollup_blocks")) > 100
        assert await rollups.verify(engine, None) == []
        assert await _reports(engine) == before
        await asyncio.to_thread(command.downgrade, db.alembic_config(empty_db_url), "0010")
        async with engine.connect() as conn:
            assert not await conn.scalar(
                text("SELECT to_regclass('usage_rollup_blocks') IS NOT NULL")
            )
        assert await _reports(engine) == before
        assert await rollups.verify(engine, None) == []
        async with engine.begin() as conn:  # writes still work without the blocks' triggers
            await queries.upsert_segments(conn, [_row(999, 5 * US, 9 * DAY_S * US, 1, 1, "x")])
    finally:
        await engine.dispose()
