"""The report's aggregate in integers (migration 0015) in a real PostgreSQL: ``quota_usage_exact``
(what ``build_report`` reads) and ``quota_usage`` (the SQL views' function, now a SELECT over
it) equal the raw-segment engine to the microsecond for sizes whose integrals overflow bigint
(terabyte pods over whole days, the edge days summed in two limbs), at midnight and at any
microsecond, for windows shorter than a day too; and the migration downgrades to 0012's
function with the same numbers.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from alembic import command
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from ledger.core import usage
from ledger.core.decision import to_us
from ledger.core.policy_yaml import parse_policy
from ledger.core.resources import GIB
from ledger.core.usage_model import resources_from_segments
from ledger.store import db, queries
from ledger.store.report import build_report

BASE = datetime(2026, 10, 1, tzinfo=UTC)
DAY_S = 86_400
US = 1_000_000
TIB = 1024 * GIB
COLUMNS = {"cpu": "cpu_millicore_seconds", "memory": "memory_byte_seconds", "gpu": "gpu_seconds"}
POSITIONS = queries.USAGE_REPORT_US_POSITIONS

offset_us = st.one_of(
    st.integers(0, 12 * DAY_S * US),
    st.integers(0, 12).map(lambda d: d * DAY_S * US),  # midnight exactly
)
duration_us = st.one_of(
    st.none(),  # open
    st.integers(0, 3 * DAY_S * US),
    st.integers(0, 9 * DAY_S * US),  # through whole edge days: the covering rates
    st.sampled_from([0, 1, DAY_S * US]),
)
# memory up to 6 TiB with low bits set (both limbs), cpu up to 512 CPUs, a few GPUs
size = st.tuples(st.integers(0, 6 * TIB), st.integers(0, 512_000), st.integers(0, 8))
segment = st.tuples(offset_us, duration_us, size)


def _policy(window_s: int):
    return parse_policy(
        f"""
window: {window_s}s
unlisted_users: regular
groups:
  regular: {{memory: 900000 GiB-hours, cpu: 300 CPU-hours, gpu: 50 GPU-hours}}
"""
    )


async def _load(engine, segments) -> None:
    rows = []
    for i, (start_us, length_us, (memory, cpu, gpu)) in enumerate(segments):
        started = BASE + timedelta(microseconds=start_us)
        rows.append(
            {
                "pod_uid": f"p-{i}",
                "username": ("ann", "ben")[i % 2],
                "cpu_millicores": cpu,
                "memory_bytes": memory,
                "gpu_count": gpu,
                "started_at": started,
                "ended_at": None
                if length_us is None
                else started + timedelta(microseconds=length_us),
            }
        )
    async with engine.begin() as conn:
        await conn.execute(text("TRUNCATE segments, usage_rollups"))
        await queries.upsert_segments(conn, rows)


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    segments=st.lists(segment, max_size=10),
    at_us=st.one_of(
        st.integers(0, 14 * DAY_S * US),
        st.integers(0, 14).map(lambda d: d * DAY_S * US),
    ),
    window_s=st.one_of(
        st.integers(1, 11 * DAY_S),
        st.sampled_from([5 * 3600, DAY_S, 2 * DAY_S, 7 * DAY_S]),
    ),
    at_edges=st.booleans(),
)
async def test_exact_integers_equal_raw_segments_for_huge_sizes(
    engine, segments, at_us, window_s, at_edges
):
    if at_edges:  # segments touching the window's start and end, zero-length ones on them
        since_us, big = at_us - window_s * US, (TIB + 3, 1500, 1)
        segments = segments + [
            (since_us, 0, big),
            (since_us, 1, big),
            (since_us - 5 * US, 5 * US, big),
            (since_us - 5 * US, 6 * US, big),
            (at_us, 0, big),
            (at_us - 1, 1, big),
        ]
        segments = [seg for seg in segments if seg[0] >= 0]
    await _load(engine, segments)
    at = BASE + timedelta(microseconds=at_us)
    since = at - timedelta(seconds=window_s)
    policy = _policy(window_s)
    lines = {line.username: line for line in await build_report(engine, policy, at)}
    async with engine.connect() as conn:
        exact = await queries.usage_report_us(conn, at, window_s)
        views = {r["username"]: r for r in await queries.usage_report(conn, at, window_s)}
        assert set(exact) == set(views) == set(lines)
        for user in ("ann", "ben"):
            rows = await queries.user_segments(conn, user, since, at)
            rows = [r for r in rows if r.started_at_us < to_us(at)]
            if not rows:
                assert user not in exact
                continue
            row = exact[user]
            assert row["segments"] == views[user]["segments"] == len(rows)
            raw = resources_from_segments(
                policy.limits_for(user, []), rows, at, list(COLUMNS), window_s
            )
            for name, column in COLUMNS.items():
                intervals = [(r.started_at_us, r.ended_at_us, r.amounts[name]) for r in rows]
                want = usage.window_usage(intervals, to_us(at), window_s * US)
                used_at, running_at = POSITIONS[name]
                assert int(row[used_at]) == want
                assert views[user][column] * US == want
                assert row[running_at] == usage.burn_rate(intervals, to_us(at))
                assert lines[user].resources[name].used_hours == raw[name].used_hours
                assert lines[user].resources[name].running == raw[name].running


async def test_downgrade_to_0012_keeps_quota_usage(empty_db_url):
    engine = db.create_engine(empty_db_url)
    at_times = [BASE + timedelta(days=d, hours=h, microseconds=7) for d, h in ((3, 5), (9, 0))]
    try:
        await db.migrate(empty_db_url)
        await _load(
            engine,
            [
                (i * 7_300_000_000, (i % 5) * 20 * 3600 * US + 11, (i * TIB + 5, 1000 + i, i % 3))
                for i in range(40)
            ],
        )

        async def reports():
            async with engine.connect() as conn:
                return [
                    sorted(await queries.usage_report(conn, at, w), key=lambda r: r["username"])
                    for at in at_times
                    for w in (3600, DAY_S, 4 * DAY_S)
                ]

        before = await reports()
        assert any(before)
        await asyncio.to_thread(command.downgrade, db.alembic_config(empty_db_url), "0012")
        async with engine.connect() as conn:
            assert not await conn.scalar(
                text(
                    "SELECT to_regprocedure('quota_usage_exact(timestamptz, interval)') IS NOT NULL"
                )
            )
        assert await reports() == before
        await db.migrate(empty_db_url)
        assert await reports() == before
    finally:
        await engine.dispose()


async def test_build_report_leaves_the_cyclic_collector_as_it_found_it(engine, monkeypatch):
    import gc

    policy = _policy(DAY_S)
    at = BASE + timedelta(days=1)
    assert gc.isenabled()
    try:
        await build_report(engine, policy, at)
        assert gc.isenabled()
        gc.disable()
        await build_report(engine, policy, at)
        assert not gc.isenabled()
        gc.enable()

        async def failing(*args):
            raise RuntimeError("the database went away")

        monkeypatch.setattr(queries, "usage_report_us", failing)
        with pytest.raises(RuntimeError):
            await build_report(engine, policy, at)
        assert gc.isenabled()
    finally:
        gc.enable()
