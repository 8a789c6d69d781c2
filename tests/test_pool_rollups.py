"""A pool's usage read from the per-group rollups (migrations/versions/0009) equals the sum
over its members computed from the raw segments, on a real PostgreSQL: across membership
changes, late history, segments closed later or deleted, open segments, windows whose
edges fall anywhere (days, hours, minutes, microseconds), and a requesting user whose
groups the hub reports differently from the cache. ``rollups verify`` / ``rebuild`` cover
the table: a planted corruption is found and repaired."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from ledger.core.decision import to_us
from ledger.core.policy_yaml import parse_policy
from ledger.core.resources import GIB
from ledger.store import queries, rollups, shared_reads

T0 = datetime(2026, 11, 1, tzinfo=UTC)
USERS = ["ann", "bob", "cy", "dee"]
GROUPS = ["g1", "g2"]
WINDOWS = {"1d": 86400, "2d": 172800, "7h": 25200, "61m": 3660}
POLICY = parse_policy(
    """
window: 2d
groups:
  g1: {pool: {cpu: {limit: 1000 CPU-hours, window: 1d}, memory: 9000 GiB-hours,
              gpu: {limit: 99 GPU-hours, window: 7h}}}
  g2: {pool: {memory: {limit: 9000 GiB-hours, window: 61m}, cpu: 1000 CPU-hours}}
"""
)
SPAN_US = 4 * 86_400_000_000  # instants within [T0 - 2 days, T0 + 2 days)


def _at(offset_us: int) -> datetime:
    return T0 - timedelta(days=2) + timedelta(microseconds=offset_us)


instants = st.integers(0, SPAN_US).map(_at)
# The checks' instants and their windows' starts, and segment starts and ends scattered
# around them (within the same minute, hour, day, or just across a boundary), so every part
# of the edge arithmetic (whole days, hours, minutes, the partial minute's raw rows) meets
# segments.
CHECK_ANCHORS = [T0, T0 + timedelta(hours=12, minutes=30, seconds=17)]
ANCHORS = sorted({a - timedelta(seconds=w) for a in CHECK_ANCHORS for w in [0, *WINDOWS.values()]})
near = st.builds(
    lambda anchor, jitter_us: anchor + timedelta(microseconds=jitter_us),
    st.sampled_from(ANCHORS),
    st.one_of(st.integers(-150_000_000, 150_000_000), st.integers(-3, 3),
              st.integers(-2 * 3_600_000_000, 2 * 3_600_000_000)),
)  # fmt: skip
times = st.one_of(instants, near, near)
check_times = st.builds(
    lambda anchor, jitter_us: anchor + timedelta(microseconds=jitter_us),
    st.sampled_from(CHECK_ANCHORS),
    st.one_of(st.just(0), st.integers(-120_000_000, 120_000_000)),
)

segment = st.fixed_dictionaries(
    {
        "user": st.sampled_from(USERS),
        "start": times,
        "end": times,
        "open": st.booleans(),
        "cpu": st.integers(0, 4000),
        "memory_gib": st.integers(0, 64),
        "gpu": st.integers(0, 2),
    }
)
operation = st.one_of(
    st.tuples(st.just("add"), segment),
    st.tuples(st.just("groups"), st.sampled_from(USERS), st.sets(st.sampled_from(GROUPS))),
    st.tuples(st.just("close"), st.integers(0, 50), times),
    st.tuples(st.just("delete"), st.integers(0, 50)),
)


async def _apply(engine, ops) -> None:
    added: list[tuple[str, datetime]] = []
    for i, op in enumerate(ops):
        async with engine.begin() as conn:
            if op[0] == "add":
                s = op[1]
                start, end = sorted([s["start"], s["end"]])
                uid = f"pod-{i}"
                await queries.upsert_segments(
                    conn,
                    [{"pod_uid": uid, "username": s["user"], "servername": "",
                      "cpu_millicores": s["cpu"], "memory_bytes": s["memory_gib"] * GIB,
                      "gpu_count": s["gpu"], "started_at": start,
                      "ended_at": None if s["open"] else end}],
                )  # fmt: skip
                added.append((uid, start))
            elif op[0] == "groups":
                await queries.record_groups(conn, op[1], sorted(op[2]), T0)
            elif op[0] == "close" and added:
                uid, start = added[op[1] % len(added)]
                await conn.execute(
                    text(
                        "UPDATE segments SET ended_at = :end WHERE pod_uid = :uid "
                        "AND ended_at IS NULL"
                    ),
                    {"end": max(start, op[2]), "uid": uid},
                )
            elif op[0] == "delete" and added:
                uid, _ = added.pop(op[1] % len(added))
                await conn.execute(text("DELETE FROM segments WHERE pod_uid = :uid"), {"uid": uid})


async def _expected(engine, group, username, reported, at, window_seconds) -> dict[str, int]:
    """Σ over the members (the cache, but ``username`` as the hub reported) of rate × the
    overlap of each segment with [at − window, at), from the raw segments."""
    async with engine.connect() as conn:
        cached = {
            r.username
            for r in await conn.execute(
                text("SELECT username FROM user_groups WHERE group_name = :g"), {"g": group}
            )
        }
        rows = (await conn.execute(text("SELECT * FROM segments"))).all()
    members = (cached - {username}) | ({username} if group in reported else set())
    since_us, at_us = to_us(at) - window_seconds * 1_000_000, to_us(at)
    out = {"cpu": 0, "memory": 0, "gpu": 0}
    for r in rows:
        if r.username not in members or to_us(r.started_at) >= at_us:
            continue
        end_us = at_us if r.ended_at is None else min(to_us(r.ended_at), at_us)
        overlap = max(0, end_us - max(to_us(r.started_at), since_us))
        for name, rate in (("cpu", r.cpu_millicores), ("memory", r.memory_bytes), ("gpu", r.gpu_count)):  # fmt: skip
            out[name] += rate * overlap
    return out


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    memberships=st.lists(
        st.tuples(
            st.just("groups"), st.sampled_from(USERS), st.sets(st.sampled_from(GROUPS), min_size=1)
        ),
        min_size=1,
        max_size=4,
    ),
    history=st.lists(st.tuples(st.just("add"), segment), min_size=1, max_size=10),
    later=st.lists(operation, max_size=10),
    checks=st.lists(
        st.tuples(check_times, st.sampled_from(["", *USERS]), st.sets(st.sampled_from(GROUPS))),
        min_size=1,
        max_size=3,
    ),
)
async def test_pool_usage_from_the_rollups_equals_the_members_raw_sum(
    engine, memberships, history, later, checks
):
    # memberships first, then segments (added to the groups their users are in), then
    # anything: membership changes (a user's whole history moves), late history, segments
    # closed later or deleted
    ops = memberships + history + later
    async with engine.begin() as conn:
        await conn.execute(text("TRUNCATE segments, usage_rollups, pool_rollups, user_groups"))
    await _apply(engine, ops)
    windows = sorted(set(WINDOWS.values()))
    for at, username, reported in checks:
        async with engine.connect() as conn:
            raw = await shared_reads._raw(conn)
            for group in GROUPS:
                for window in windows:
                    got = await raw.fetchrow(
                        shared_reads._POOL_USED, group, username, group in reported, at,
                        float(window),
                    )  # fmt: skip
                    want = await _expected(engine, group, username, reported, at, window)
                    assert [int(x) for x in got] == [want[n] for n in ("cpu", "memory", "gpu")], (
                        group, window, at, username, reported
                    )  # fmt: skip
    assert await rollups.verify(engine, None) == []


async def _segment(engine, user, start, end, memory_gib=4):
    async with engine.begin() as conn:
        await queries.upsert_segments(
            conn,
            [{"pod_uid": f"{user}-{start.isoformat()}", "username": user, "servername": "",
              "cpu_millicores": 500, "memory_bytes": memory_gib * GIB, "gpu_count": 0,
              "started_at": start, "ended_at": end}],
        )  # fmt: skip


async def test_verify_finds_a_planted_pool_corruption_and_rebuild_repairs_it(engine):
    async with engine.begin() as conn:
        await queries.record_groups(conn, "ann", ["g1"], T0)
    await _segment(engine, "ann", T0 - timedelta(hours=30), T0 - timedelta(hours=1, seconds=7))
    assert await rollups.verify(engine, None) == []
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE pool_rollups SET memory_delta_us = memory_delta_us + 1 "
                "WHERE (group_name, width_seconds, bucket_start) = (SELECT group_name, "
                "width_seconds, bucket_start FROM pool_rollups WHERE width_seconds = 60 "
                "AND memory_delta <> 0 ORDER BY bucket_start LIMIT 1)"
            )
        )
    found = await rollups.verify(engine, None)
    assert [(m.group_name, m.width_seconds) for m in found] == [("g1", 60)]
    assert "g1" in found[0].describe() and found[0].to_json()["group"] == "g1"
    first_day, written, pool_written = await rollups.rebuild(engine, None)
    assert written > 0 and pool_written > 0
    assert await rollups.verify(engine, None) == []


async def test_a_membership_change_moves_the_users_whole_history(engine):
    start, end = T0 - timedelta(days=1, minutes=3), T0 - timedelta(seconds=30)
    await _segment(engine, "bob", start, end)
    used = await _pool_memory(engine, "g1")
    assert used == 0
    async with engine.begin() as conn:
        await queries.record_groups(conn, "bob", ["g1"], T0)
    assert await _pool_memory(engine, "g1") == 4 * GIB * to_us(end) - 4 * GIB * to_us(start)
    async with engine.begin() as conn:  # a re-sync with the same groups changes nothing
        await queries.record_groups(conn, "bob", ["g1"], T0 + timedelta(minutes=1))
        await queries.record_groups(conn, "bob", ["g2"], T0 + timedelta(minutes=2))
    assert await _pool_memory(engine, "g1") == 0
    assert await rollups.verify(engine, None) == []


async def _pool_memory(engine, group) -> int:
    async with engine.connect() as conn:
        raw = await shared_reads._raw(conn)
        usage = await shared_reads.read_usage(raw, POLICY, "", [group], "", T0)
    return usage.used[group][("memory", 172800)]


def test_the_policy_windows_cover_minutes_hours_and_days():
    windows = {w for g in POLICY.pools.values() for b in g.budgets.values() for w in [b.window_seconds or POLICY.window_seconds]}  # fmt: skip
    assert windows == set(WINDOWS.values())


async def test_a_segment_written_while_a_membership_changes_is_counted_either_order(engine):
    # the two triggers of one user's segment and membership, in concurrent transactions:
    # whichever commits first, the other sees it (the membership change locks segments)
    import asyncio

    start, end = T0 - timedelta(hours=5), T0 - timedelta(hours=4, seconds=1)
    for first in ("segment", "membership"):
        async with engine.begin() as conn:
            await conn.execute(text("TRUNCATE segments, usage_rollups, pool_rollups, user_groups"))
        a, b = await engine.connect(), await engine.connect()
        try:
            ta, tb = await a.begin(), await b.begin()
            segment = queries.upsert_segments(
                a if first == "segment" else b,
                [{"pod_uid": f"p-{first}", "username": "cy", "cpu_millicores": 100,
                  "memory_bytes": GIB, "started_at": start, "ended_at": end}],
            )  # fmt: skip
            membership = queries.record_groups(b if first == "segment" else a, "cy", ["g1"], T0)
            await (segment if first == "segment" else membership)
            later = asyncio.ensure_future(membership if first == "segment" else segment)
            await asyncio.sleep(0.5)
            assert not later.done()  # waits for the first transaction
            await ta.commit()
            await later
            await tb.commit()
        finally:
            await a.close()
            await b.close()
        assert await _pool_memory(engine, "g1") == GIB * (to_us(end) - to_us(start))
        assert await rollups.verify(engine, None) == []
