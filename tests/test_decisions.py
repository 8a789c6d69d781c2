"""Decisions on a real ledger: budgets, zero limits, caps, retry time to the second, window
edges and time zones, the seed's user workflow."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from ledger.core.decision import ServerRequest
from ledger.core.policy_yaml import parse_policy
from ledger.core.resources import GIB
from ledger.store import queries
from ledger.store.decide import decide, record

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
SEED_POLICY = """
window: 30d
unlisted_users: regular
groups:
  regular: {memory: 60 GiB-hours, gpu: 0 GPU-hours}
  power:   {memory: 240 GiB-hours, gpu: 0 GPU-hours}
  dev:     {memory: 640 GiB-hours, gpu: 0 GPU-hours}
  gpu-dev: {memory: 640 GiB-hours, gpu: 160 GPU-hours, running: {gpu: 2}}
users:
  alice: {memory: 1000 GiB-hours}
"""
POLICY = parse_policy(SEED_POLICY)


def server(memory_gib=4, cpu=1000, gpu=0, name=""):
    return ServerRequest({"cpu": cpu, "memory": memory_gib * GIB, "gpu": gpu}, servername=name)


async def add(engine, username, start, end, memory_gib=4, cpu=1000, gpu=0, name="", uid=None):
    async with engine.begin() as conn:
        await queries.upsert_segments(
            conn,
            [
                {
                    "pod_uid": uid or f"{username}-{name}-{start.isoformat()}",
                    "username": username,
                    "servername": name,
                    "cpu_millicores": cpu,
                    "memory_bytes": memory_gib * GIB,
                    "gpu_count": gpu,
                    "started_at": start,
                    "ended_at": end,
                }
            ],
        )


async def test_seed_workflow_4gib_for_5_hours_is_20_gib_hours(engine):
    # a 4 GB server kept ~4 hours, then culled after 60 min idle (jupyterhub-idle-culler): 20 GiB-hours
    await add(engine, "sam", NOW - timedelta(hours=6), NOW - timedelta(hours=1))
    d = await decide(engine, POLICY, "sam", ["regular"], server(), NOW)
    assert d.allowed
    assert d.budgets["memory"].used_hours == 20
    assert d.budgets["memory"].remaining_hours == 40
    # the remaining 40 GiB-hours last a 4 GiB server exactly 10 hours
    assert d.run_seconds == 10 * 3600
    assert "20 of 60 GiB-hours" in d.message


async def test_at_50_of_60_told_what_is_left_then_power_raises_limit(engine):
    await add(
        engine, "sam", NOW - timedelta(days=3), NOW - timedelta(days=3) + timedelta(hours=12.5)
    )
    d = await decide(engine, POLICY, "sam", ["regular"], server(), NOW)
    assert d.allowed and d.budgets["memory"].used_hours == 50
    assert d.budgets["memory"].remaining_hours == 10
    assert d.run_seconds == int(2.5 * 3600)
    d = await decide(engine, POLICY, "sam", ["power"], server(), NOW)
    assert d.budgets["memory"].limit_hours == 240 and d.budgets["memory"].remaining_hours == 190


async def test_used_up_budget_denies_with_exact_retry_time(engine):
    # 64 GiB-hours: 16 GiB for 4 hours, ending 20 days ago → over the 60 GiB-hour limit
    start = NOW - timedelta(days=29, hours=23)
    await add(engine, "bob", start, start + timedelta(hours=4), memory_gib=16)
    d = await decide(engine, POLICY, "bob", ["regular"], server(), NOW)
    assert not d.allowed
    assert d.reasons == ["used_up:memory"]
    assert d.retry_at is not None
    # the user is allowed at retry_at, and denied one second earlier
    allowed = await decide(engine, POLICY, "bob", ["regular"], server(), d.retry_at)
    before = await decide(
        engine, POLICY, "bob", ["regular"], server(), d.retry_at - timedelta(seconds=1)
    )
    assert allowed.allowed and not before.allowed
    # exact: usage falls below 60 once 4 GiB-hours (15 min of the 16 GiB server) left the window
    assert d.retry_at == start + timedelta(days=30, minutes=15, seconds=1)


async def test_retry_time_with_fractional_now_is_whole_seconds(engine):
    start = NOW - timedelta(days=29, hours=23, microseconds=250)
    await add(engine, "bob", start, start + timedelta(hours=4), memory_gib=16)
    at = NOW + timedelta(microseconds=777)
    d = await decide(engine, POLICY, "bob", ["regular"], server(), at)
    assert d.retry_at.microsecond == 0
    assert (await decide(engine, POLICY, "bob", ["regular"], server(), d.retry_at)).allowed
    earlier = d.retry_at - timedelta(seconds=1)
    assert not (await decide(engine, POLICY, "bob", ["regular"], server(), earlier)).allowed


async def test_zero_limit_forbids_asking_but_not_other_servers(engine):
    d = await decide(engine, POLICY, "carol", ["regular"], server(gpu=1), NOW)
    assert not d.allowed and d.reasons == ["zero_limit:gpu"]
    assert d.retry_at is None  # waiting does not help
    assert d.suggestion == {"cpu": 1000, "memory": 4 * GIB, "gpu": 0}
    assert (await decide(engine, POLICY, "carol", ["regular"], server(gpu=0), NOW)).allowed


async def test_running_cap_counts_running_servers_not_the_one_restarting(engine):
    await add(engine, "gus", NOW - timedelta(hours=1), None, gpu=1, name="a")
    d = await decide(engine, POLICY, "gus", ["gpu-dev"], server(gpu=2, name="b"), NOW)
    assert not d.allowed and d.reasons == ["running:gpu"]
    assert d.caps["gpu"].running == 1 and d.caps["gpu"].cap == 2
    assert d.suggestion["gpu"] == 1
    assert d.retry_at is None
    assert (await decide(engine, POLICY, "gus", ["gpu-dev"], server(gpu=1, name="b"), NOW)).allowed
    # restarting server "a" itself replaces its pod: not counted twice
    assert (await decide(engine, POLICY, "gus", ["gpu-dev"], server(gpu=2, name="a"), NOW)).allowed


async def test_groups_combine_max_and_user_override(engine):
    start = NOW - timedelta(days=10)
    await add(engine, "alice", start, start + timedelta(hours=100), memory_gib=8)  # 800
    d = await decide(engine, POLICY, "alice", ["regular", "dev"], server(), NOW)
    assert d.budgets["memory"].limit_hours == 1000  # per-user override beats groups
    assert d.allowed
    await add(engine, "dave", start, start + timedelta(hours=100), memory_gib=8)
    d = await decide(engine, POLICY, "dave", ["regular", "dev"], server(), NOW)
    assert d.budgets["memory"].limit_hours == 640 and not d.allowed


async def test_open_segment_runs_to_now_and_burn_rate(engine):
    await add(engine, "erin", NOW - timedelta(hours=2), None, memory_gib=8)
    d = await decide(engine, POLICY, "erin", ["regular"], server(memory_gib=4, name="x"), NOW)
    assert d.budgets["memory"].used_hours == 16
    assert d.budgets["memory"].burn_per_hour == 8
    # 44 GiB-hours left, burning 8 + 4 per hour → 3 h 40 min
    assert d.run_seconds == 3 * 3600 + 40 * 60


async def test_window_edges_and_time_zones(engine):
    # a segment ending exactly at the window start is outside; one starting at `at` too
    await add(engine, "fay", NOW - timedelta(days=31), NOW - timedelta(days=30), memory_gib=100)
    await add(engine, "fay", NOW, NOW + timedelta(hours=1), memory_gib=100)
    d = await decide(engine, POLICY, "fay", ["regular"], server(), NOW)
    assert d.budgets["memory"].used_hours == 0
    # the same instant in another zone gives the same answer
    tokyo = NOW.astimezone(timezone(timedelta(hours=9)))
    d2 = await decide(engine, POLICY, "fay", ["regular"], server(), tokyo)
    assert d2.budgets["memory"].used_hours == 0
    later = await decide(engine, POLICY, "fay", ["regular"], server(), NOW + timedelta(minutes=30))
    assert later.budgets["memory"].used_hours == 50
    with pytest.raises(ValueError, match="timezone"):
        await decide(engine, POLICY, "fay", ["regular"], server(), NOW.replace(tzinfo=None))


async def test_unlisted_deny_and_unlimited():
    deny = parse_policy("unlisted_users: deny\ngroups: {regular: {memory: 60 GiB-hours}}")
    limits = deny.limits_for("zed", [])
    assert limits.denied_all
    from ledger.core.decision import evaluate

    d = evaluate("zed", limits, [], server(), NOW)
    assert not d.allowed and d.reasons == ["unlisted"] and d.retry_at is None
    open_policy = parse_policy("groups: {regular: {memory: 60 GiB-hours}}")
    assert evaluate("zed", open_policy.limits_for("zed", []), [], server(), NOW).allowed


async def test_denials_are_recorded(engine):
    from sqlalchemy import text

    d = await decide(engine, POLICY, "carol", ["regular"], server(gpu=1), NOW)
    await record(engine, d, source="cli", latency_ms=1.5)
    async with engine.connect() as conn:
        row = (await conn.execute(text("SELECT * FROM decisions"))).mappings().one()
    assert row["outcome"] == "denied" and row["reason"] == "zero_limit:gpu"
    assert row["request"]["gpu"] == 1 and row["detail"]["allowed"] is False
