"""Grants and credits on a real ledger: decide() (rollups + the grants read) equals the raw
engine with the same entries; a grant changes the limit only while valid; a credit enters
and leaves the window at its exact microsecond; retry_at is allowed at that instant and
denied one second before."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from ledger.core.decision import ServerRequest, evaluate, to_us
from ledger.core.policy_yaml import parse_policy
from ledger.core.resources import GIB
from ledger.store import grants, queries
from ledger.store.decide import decide

BASE = datetime(2026, 10, 1, tzinfo=UTC)
DAY_S = 86_400
US = 1_000_000
REQUEST = ServerRequest({"cpu": 500, "memory": 2 * GIB})

offset_us = st.one_of(
    st.integers(0, 6 * DAY_S * US), st.sampled_from([d * DAY_S * US for d in range(7)])
)
segment = st.tuples(
    offset_us,
    st.one_of(st.none(), st.integers(0, 2 * DAY_S * US)),
    st.integers(1, 8),
)
grant_st = st.tuples(offset_us, st.integers(1, 4 * DAY_S * US), st.integers(1, 300), st.booleans())
credit_st = st.tuples(offset_us, st.integers(1, 200))


def _policy(window_s: int, memory_gib_hours: int):
    return parse_policy(
        f"window: {window_s}s\nunlisted_users: regular\n"
        f"groups:\n  regular: {{memory: {memory_gib_hours} GiB-hours}}\n"
    )


async def _load(engine, segments, grant_rows, credit_rows) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "TRUNCATE segments, usage_rollups, quota_grants, quota_credits, quota_requests, quota_request_events"
            )
        )
        await queries.upsert_segments(
            conn,
            [
                {
                    "pod_uid": f"p{i}",
                    "username": "alice",
                    "servername": f"s{i}",
                    "cpu_millicores": 500,
                    "memory_bytes": gib * GIB,
                    "gpu_count": 0,
                    "started_at": BASE + timedelta(microseconds=start),
                    "ended_at": None
                    if length is None
                    else BASE + timedelta(microseconds=start + length),
                }
                for i, (start, length, gib) in enumerate(segments)
            ],
        )
        for start, length, hours, revoke in grant_rows:
            starts_at = BASE + timedelta(microseconds=start)
            g = await grants.add_grant(
                conn, username="alice", resource="memory", amount_hours=Decimal(hours),
                starts_at=starts_at, ends_at=starts_at + timedelta(microseconds=length),
                reason="deadline", granted_by="admin", created_at=starts_at,
            )  # fmt: skip
            if revoke:
                await grants.revoke_grant(
                    conn, g.id, by="admin", reason="done",
                    at=starts_at + timedelta(microseconds=length // 2),
                )  # fmt: skip
        for at, hours in credit_rows:
            at = BASE + timedelta(microseconds=at)
            await grants.add_credit(
                conn, username="alice", resource="memory", amount_hours=Decimal(hours),
                credited_at=at, reason="outage", credited_by="admin", created_at=at,
            )  # fmt: skip


async def _raw(engine, policy, now):
    window_s = policy.max_window_seconds()
    async with engine.connect() as conn:
        rows = await queries.user_segments(conn, "alice", now - timedelta(seconds=window_s), now)
        adj = await grants.user_adjustments(conn, "alice", now, window_s)
    return evaluate("alice", policy.limits_for("alice", []), rows, REQUEST, now, adjustments=adj)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    segments=st.lists(segment, max_size=6),
    grant_rows=st.lists(grant_st, max_size=3),
    credit_rows=st.lists(credit_st, max_size=3),
    now_us=st.integers(0, 8 * DAY_S * US),
    window_s=st.one_of(st.integers(3600, 3 * DAY_S), st.sampled_from([DAY_S, 2 * DAY_S])),
    memory_gib_hours=st.integers(1, 400),
)
async def test_decide_with_grants_and_credits_equals_raw_engine(
    engine, segments, grant_rows, credit_rows, now_us, window_s, memory_gib_hours
):
    await _load(engine, segments, grant_rows, credit_rows)
    policy = _policy(window_s, memory_gib_hours)
    now = BASE + timedelta(microseconds=now_us)
    got = await decide(engine, policy, "alice", [], REQUEST, now)
    expected = await _raw(engine, policy, now)
    assert got.to_json() == expected.to_json()
    budget = got.budgets["memory"]
    # the limit is the policy's plus exactly the grants valid at now
    async with engine.connect() as conn:
        every = await grants.list_grants(conn, ["alice"])
    valid = [g for g in every if g.starts_at <= now < g.effective_end]
    assert budget.limit_hours == memory_gib_hours + sum(g.amount_hours for g in valid)
    assert sorted(g.id for g in budget.grants) == sorted(g.id for g in valid)
    async with engine.connect() as conn:
        segs = await queries.user_segments(conn, "alice", now - timedelta(days=9), now)
    idle = all(r.ended_at_us is not None and r.ended_at_us <= to_us(now) for r in segs)
    if got.retry_at is not None and idle:
        assert (await decide(engine, policy, "alice", [], REQUEST, got.retry_at)).allowed
        before = got.retry_at - timedelta(seconds=1)
        if before > now:
            assert not (await decide(engine, policy, "alice", [], REQUEST, before)).allowed


async def test_a_credit_enters_and_leaves_the_window_at_its_microsecond(engine):
    policy = _policy(DAY_S, 60)
    credited_at = BASE + timedelta(days=2, microseconds=5)
    await _load(engine, [(0, 4 * DAY_S * US, 1)], [], [(2 * DAY_S * US + 5, 10)])
    assert (await grants_credit_times(engine)) == [credited_at]

    async def used(at):
        return (await decide(engine, policy, "alice", [], REQUEST, at)).budgets["memory"]

    # one GiB running throughout: 24 GiB-hours recorded in any 1-day window inside it
    at_credit = await used(credited_at)
    just_after = await used(credited_at + timedelta(microseconds=1))
    assert at_credit.credited_hours == 0 and just_after.credited_hours == 10
    last = await used(credited_at + timedelta(days=1))
    gone = await used(credited_at + timedelta(days=1, microseconds=1))
    assert last.credited_hours == 10 and gone.credited_hours == 0
    assert last.used_hours == 24 - 10 and gone.used_hours == 24


async def grants_credit_times(engine):
    async with engine.connect() as conn:
        return [c.credited_at for c in await grants.list_credits(conn, ["alice"])]


async def test_a_grant_lifts_a_denial_only_while_it_is_valid(engine):
    policy = _policy(30 * DAY_S, 60)
    # 64 GiB-hours used: over 60
    await _load(engine, [(0, 4 * 3600 * US, 16)], [], [])
    now = BASE + timedelta(days=1)
    assert not (await decide(engine, policy, "alice", [], REQUEST, now)).allowed
    async with engine.begin() as conn:
        g = await grants.add_grant(
            conn, username="alice", resource="memory", amount_hours=Decimal(100),
            starts_at=now, ends_at=now + timedelta(days=2), reason="thesis deadline",
            granted_by="admin", created_at=now,
        )  # fmt: skip
    d = await decide(engine, policy, "alice", [], REQUEST, now)
    assert d.allowed and d.budgets["memory"].limit_hours == 160
    # a 2 GiB server runs out when the grant ends (the limit falls back to 60 < 64 used)
    assert d.run_seconds == 2 * DAY_S
    assert not (await decide(engine, policy, "alice", [], REQUEST, g.ends_at)).allowed
    assert (
        await decide(engine, policy, "alice", [], REQUEST, g.ends_at - timedelta(microseconds=1))
    ).allowed
    async with engine.begin() as conn:
        revoked = await grants.revoke_grant(
            conn, g.id, by="admin", reason="mistake", at=now + timedelta(hours=1)
        )
    assert revoked.revoked_by == "admin"
    later = await decide(engine, policy, "alice", [], REQUEST, now + timedelta(hours=1))
    assert not later.allowed and later.budgets["memory"].limit_hours == 60
    # while it is denied, retry_at is when the 64 GiB-hours leave the window; exact as before
    assert later.retry_at == BASE + timedelta(days=30, minutes=15, seconds=1)


async def test_grants_are_read_only_for_a_user_who_has_some(engine, monkeypatch):
    """The history read says whether any grant or credit may count; a user without (most)
    costs decide no second round trip, and one credit is enough to have them read."""
    calls = []
    real = grants.user_adjustments

    async def counted(*args):
        calls.append(args[1])
        return await real(*args)

    monkeypatch.setattr(grants, "user_adjustments", counted)
    policy = _policy(DAY_S, 60)
    now = BASE + timedelta(days=3)
    await _load(engine, [(0, 4 * DAY_S * US, 1)], [], [])
    assert (await decide(engine, policy, "alice", [], REQUEST, now)).budgets["memory"]
    assert calls == []
    await _load(engine, [(0, 4 * DAY_S * US, 1)], [], [(3 * DAY_S * US - 5, 10)])
    budget = (await decide(engine, policy, "alice", [], REQUEST, now)).budgets["memory"]
    assert calls == ["alice"] and budget.credited_hours == 10
    # an expired grant and an old credit: nothing can count any more, nothing is read
    await _load(engine, [(0, 4 * DAY_S * US, 1)], [(0, DAY_S * US, 5, False)], [(0, 10)])
    calls.clear()
    assert (await decide(engine, policy, "alice", [], REQUEST, now)).budgets["memory"]
    assert calls == []
