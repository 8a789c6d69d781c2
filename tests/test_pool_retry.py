"""A spawn refused by a spent group-pool budget says when it can start, exactly (allowed at
that second, refused one second before), from the pool's per-day series plus the edge days'
raw segments (ledger/store/pool_history.py), in the message, the JSON and the decision log;
and grants and credits to a pool move its budget like a user's."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import text

from ledger.core.decision import ServerRequest
from ledger.core.policy_yaml import parse_policy
from ledger.core.resources import GIB
from ledger.store import grants, queries
from ledger.store.decide import decide, record

NOW = datetime(2026, 11, 1, 12, 0, 7, 123456, tzinfo=UTC)
POLICY = parse_policy(
    """
window: 30d
groups:
  lab: {memory: 100000 GiB-hours, pool: {memory: 300 GiB-hours, running: {gpu: 3}}}
  bio: {memory: 100000 GiB-hours, pool: {memory: {limit: 100 GiB-hours, window: 2d}}}
"""
)
SERVER = ServerRequest({"cpu": 1000, "memory": 4 * GIB})
SECOND = timedelta(seconds=1)


async def add(engine, user, start, end, memory_gib=4, name=""):
    async with engine.begin() as conn:
        await queries.upsert_segments(
            conn,
            [{"pod_uid": f"{user}-{name}-{start.isoformat()}", "username": user,
              "servername": name, "cpu_millicores": 500, "memory_bytes": memory_gib * GIB,
              "gpu_count": 0, "started_at": start, "ended_at": end}],
        )  # fmt: skip


async def member(engine, user, group="lab"):
    async with engine.begin() as conn:
        await queries.record_groups(conn, user, [group], NOW)


def pool_refused(d, group="lab"):
    return not d.allowed and f"pool:{group}_used_up:memory" in d.reasons


async def test_retry_at_is_exact_and_said_everywhere(engine):
    # 384 GiB-hours, leaving the window from 12 hours from now on
    await member(engine, "m1")
    await add(engine, "m1", NOW - timedelta(days=29, hours=12), NOW - timedelta(days=27, hours=12), 8)  # fmt: skip
    d = await decide(engine, POLICY, "m2", ["lab"], SERVER, NOW)
    assert pool_refused(d) and d.retry_at is not None
    # 84 GiB-hours must leave at 8 GiB: 10.5 hours after the segment starts leaving
    assert d.retry_at == NOW + timedelta(hours=12 + 10.5) - timedelta(microseconds=123456) + SECOND
    check = next(c for c in d.shared.checks if c.blocks)
    assert check.retry_at == d.retry_at
    shown = f"{d.retry_at:%Y-%m-%d %H:%M:%S} UTC"
    assert f"it has room again at {shown}" in d.message
    assert f"You can start this server at {shown}" in d.message
    assert d.to_json()["retry_at"] == d.retry_at.isoformat().replace("+00:00", "Z")
    assert d.to_json()["shared"]["bottleneck"]["retry_at"] == d.to_json()["retry_at"]
    assert (await decide(engine, POLICY, "m2", ["lab"], SERVER, d.retry_at)).allowed
    assert pool_refused(await decide(engine, POLICY, "m2", ["lab"], SERVER, d.retry_at - SECOND))
    await record(engine, d, source="spawn")
    async with engine.connect() as conn:
        logged = await conn.scalar(text("SELECT retry_at FROM decisions"))
    assert logged == d.retry_at


async def test_retry_at_is_exact_for_random_pools(engine):
    rng = random.Random(1501)
    for user in ("a", "b", "c"):
        await member(engine, user, "bio")
        for _ in range(6):  # closed segments over the 2-day window's days, some spanning days
            start = NOW - timedelta(seconds=rng.randrange(0, 4 * 86400))
            end = min(start + timedelta(seconds=rng.randrange(60, 2 * 86400)), NOW - SECOND)
            if end > start:
                await add(engine, user, start, end, rng.randrange(1, 6), name=str(rng.random()))
    d = await decide(engine, POLICY, "a", ["bio"], SERVER, NOW)
    assert pool_refused(d, "bio"), d.message  # the seed gives a spent pool
    assert (await decide(engine, POLICY, "a", ["bio"], SERVER, d.retry_at)).allowed
    assert pool_refused(
        await decide(engine, POLICY, "a", ["bio"], SERVER, d.retry_at - SECOND), "bio"
    )


async def test_own_and_pool_budgets_wait_for_the_later(engine):
    policy = parse_policy(
        "window: 30d\ngroups:\n  lab: {memory: 200 GiB-hours, pool: {memory: 300 GiB-hours}}\n"
    )
    await member(engine, "m1")
    await add(engine, "m1", NOW - timedelta(days=29, hours=12), NOW - timedelta(days=27, hours=12), 8)  # fmt: skip
    own = await decide(engine, parse_policy("window: 30d\ngroups:\n  lab: {memory: 200 GiB-hours}\n"), "m1", ["lab"], SERVER, NOW)  # fmt: skip
    d = await decide(engine, policy, "m1", ["lab"], SERVER, NOW)
    assert d.reasons == ["used_up:memory", "pool:lab_used_up:memory"]
    pool = next(c for c in d.shared.checks if c.blocks)
    assert pool.retry_at is not None and pool.retry_at < own.retry_at == d.retry_at
    # another member's usage in the pool only: now the pool frees last
    await member(engine, "m2")
    await add(engine, "m2", NOW - timedelta(days=2), NOW - timedelta(days=1), 8)
    d = await decide(engine, policy, "m1", ["lab"], SERVER, NOW)
    pool = next(c for c in d.shared.checks if c.blocks)
    assert own.retry_at < pool.retry_at == d.retry_at
    assert d.message.count("You can start this server") == 1
    assert (await decide(engine, policy, "m1", ["lab"], SERVER, d.retry_at)).allowed
    assert not (await decide(engine, policy, "m1", ["lab"], SERVER, d.retry_at - SECOND)).allowed


async def pool_grant(engine, group, hours, starts_at, ends_at):
    async with engine.begin() as conn:
        return await grants.add_grant(
            conn, username=None, group_name=group, resource="memory",
            amount_hours=Decimal(hours), starts_at=starts_at, ends_at=ends_at,
            reason="deadline", granted_by="admin", created_at=starts_at,
        )  # fmt: skip


async def test_a_pool_grant_adds_to_the_budget_and_moves_the_retry(engine):
    await member(engine, "m1")
    await add(engine, "m1", NOW - timedelta(days=29, hours=12), NOW - timedelta(days=27, hours=12), 8)  # fmt: skip
    before = await decide(engine, POLICY, "m2", ["lab"], SERVER, NOW)
    g = await pool_grant(engine, "lab", 100, NOW - timedelta(hours=1), NOW + timedelta(days=1))
    d = await decide(engine, POLICY, "m2", ["lab"], SERVER, NOW)
    assert d.allowed
    check = next(c for c in d.shared.checks if c.kind == "budget" and c.scope == "lab")
    assert check.to_json()["limit"] == 400 and check.to_json()["grant_ids"] == [g.id]
    # a grant to the pool is nobody's own: the members' budgets are untouched
    assert d.budgets["memory"].granted_hours == 0
    # a grant ending before the pool frees: refused again after it, with the old retry time
    async with engine.begin() as conn:
        await grants.revoke_grant(conn, g.id, by="admin", reason="ended", at=NOW)
    short = await pool_grant(engine, "lab", 100, NOW - timedelta(hours=1), NOW + timedelta(hours=2))
    later = NOW + timedelta(hours=3)
    d = await decide(engine, POLICY, "m2", ["lab"], SERVER, later)
    assert pool_refused(d) and d.retry_at == before.retry_at
    d = await decide(engine, POLICY, "m2", ["lab"], SERVER, NOW)
    assert d.allowed and "includes 100 GiB-hours granted until" in next(
        c.describe() for c in d.shared.checks if c.kind == "budget" and c.scope == "lab"
    )
    assert short.group_name == "lab" and short.username is None


async def test_a_pool_credit_takes_usage_back_inside_the_window(engine):
    await member(engine, "m1")
    await add(engine, "m1", NOW - timedelta(days=29, hours=12), NOW - timedelta(days=27, hours=12), 8)  # fmt: skip
    async with engine.begin() as conn:
        await grants.add_credit(
            conn, username=None, group_name="lab", resource="memory",
            amount_hours=Decimal(90), credited_at=NOW - timedelta(days=1), reason="outage",
            credited_by="admin", created_at=NOW,
        )  # fmt: skip
    d = await decide(engine, POLICY, "m2", ["lab"], SERVER, NOW)
    assert d.allowed
    check = next(c for c in d.shared.checks if c.kind == "budget" and c.scope == "lab")
    assert check.to_json()["in_use"] == 294 and check.to_json()["credited"] == 90
    # a user's own adjustments never see the pool's
    async with engine.connect() as conn:
        own = await grants.user_adjustments(conn, "m1", NOW, 30 * 86400)
        assert not own
        assert not await grants.adjustments_by_user(conn, NOW, 30 * 86400)


async def test_a_big_pool_is_refused_without_a_time_rather_than_late(engine, monkeypatch):
    """Past POOL_RETRY_MAX_MEMBERS the retry search (every member's history) is not run: the
    refusal and its figures stand, only the time is left out."""
    from ledger.store import shared_reads

    await member(engine, "m1")
    await add(engine, "m1", NOW - timedelta(days=29, hours=12), NOW - timedelta(days=27, hours=12), 8)  # fmt: skip
    assert (await decide(engine, POLICY, "m2", ["lab"], SERVER, NOW)).retry_at is not None
    monkeypatch.setattr(shared_reads, "POOL_RETRY_MAX_MEMBERS", 0)
    d = await decide(engine, POLICY, "m2", ["lab"], SERVER, NOW)
    assert pool_refused(d) and d.retry_at is None
    assert "the lab group's pool has used 384 GiB-hours" in d.message
    assert "room again" not in d.message
