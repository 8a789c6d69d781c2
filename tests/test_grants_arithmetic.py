"""Grants and credits in the decision arithmetic, pure: the stepped limit E(t) against a
brute-force check at every microsecond, and the rollup engine asked "from a later time"
equal to the raw engine (the SQL side is in test_grants_db.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st
from test_rollup_usage import B, ask, history

from ledger.core import grants, usage
from ledger.core.decision import EPOCH, from_us
from ledger.core.resources import resource

MEMORY = resource("memory")
UNIT = MEMORY.base_per_unit * 3_600_000_000  # base-unit·µs in one GiB-hour


def grant(i, start_us, length_us, amount, revoke_after=None):
    start = from_us(start_us)
    return grants.Grant(
        id=i, username="u", resource="memory", amount_hours=Decimal(amount) / UNIT,
        starts_at=start, ends_at=start + timedelta(microseconds=length_us), reason="r",
        granted_by="admin", created_at=start,
        revoked_at=None if revoke_after is None else start + timedelta(microseconds=revoke_after),
        revoked_by=None if revoke_after is None else "admin",
    )  # fmt: skip


def credit(i, at_us, amount):
    at = from_us(at_us)
    return grants.Credit(i, "u", "memory", Decimal(amount) / UNIT, at, "outage", "admin", at)


segment = st.tuples(
    st.integers(0, 3000),
    st.one_of(st.none(), st.integers(0, 1500)),
    st.integers(0, 50),
)
grant_st = st.tuples(
    st.integers(0, 4000), st.integers(1, 2500), st.integers(1, 30_000),
    st.one_of(st.none(), st.integers(0, 2500)),
)  # fmt: skip
credit_st = st.tuples(st.integers(0, 4000), st.integers(1, 30_000))


def effective_limit(adj, policy_limit, t_us, window_us):
    """E(t) by definition: policy + grants valid at t + credits inside [t − W, t)."""
    at = from_us(t_us)
    total = policy_limit
    total += sum(g.amount_base_us() for g in adj.grants if g.active_at(at))
    for c in adj.credits:
        c_us = (c.credited_at - EPOCH) // timedelta(microseconds=1)
        if t_us - window_us <= c_us < t_us:
            total += c.amount_base_us()
    return total


@settings(max_examples=150, deadline=None)
@given(
    raw=st.lists(segment, max_size=8),
    raw_grants=st.lists(grant_st, max_size=3),
    raw_credits=st.lists(credit_st, max_size=3),
    now_us=st.integers(0, 4000),
    window_us=st.integers(1, 2500),
    policy_limit=st.integers(0, 60_000),
    extra=st.integers(0, 40),
)
def test_stepped_limit_answers_equal_brute_force(
    raw, raw_grants, raw_credits, now_us, window_us, policy_limit, extra
):
    intervals = [(s, None if d is None else s + d, r) for s, d, r in raw]
    started = [i for i in intervals if i[0] < now_us and i[2]]
    adj = grants.Adjustments(
        tuple(grant(i, *g) for i, g in enumerate(raw_grants)),
        tuple(credit(i, *c) for i, c in enumerate(raw_credits)),
    )
    steps = adj.steps("memory", policy_limit, from_us(now_us), window_us)
    horizon = now_us + 2 * window_us + 4100

    # E(t) as steps == E(t) by definition, at every µs from now on
    pieces = list(steps.segments())
    for t in range(now_us, horizon, 7):
        piece = next(p for p in pieces if p[0] <= t and (p[1] is None or t < p[1]))
        assert piece[2] == effective_limit(adj, policy_limit, t, window_us)

    raw_engine = usage.RawHistory(started, now_us)
    # retry: the first µs with U(t) < E(t) when everything stops now
    stopped = usage.stopped_at(started, now_us)
    expected_below = next(
        (
            t
            for t in range(now_us, horizon)
            if usage.window_usage(stopped, t, window_us)
            < effective_limit(adj, policy_limit, t, window_us)
        ),
        None,
    )
    assert grants.first_below_stopped(raw_engine, window_us, steps) == expected_below
    # run-out: the first µs with U(t) ≥ E(t) with a server of ``extra`` started now
    running = [*started, (now_us, None, extra)]
    expected_reach = next(
        (
            t
            for t in range(now_us, horizon)
            if usage.window_usage(running, t, window_us)
            >= effective_limit(adj, policy_limit, t, window_us)
        ),
        None,
    )
    got_reach = grants.first_reaching(raw_engine, window_us, steps, extra)
    if expected_reach is None:
        # past the horizon only what runs counts: U is constant, E is the policy limit
        assert got_reach is None or got_reach >= horizon
    else:
        assert got_reach == expected_reach

    # the rollup engine gives the same stepped answers
    h, load = history(intervals, now_us, window_us)
    assert ask(h, load, lambda: grants.first_below_stopped(h, window_us, steps))[0] == (
        grants.first_below_stopped(raw_engine, window_us, steps)
    )
    assert ask(h, load, lambda: grants.first_reaching(h, window_us, steps, extra))[0] == got_reach


@settings(max_examples=300, deadline=None)
@given(
    raw=st.lists(segment, max_size=12),
    now_us=st.integers(0, 4000),
    window_us=st.one_of(st.integers(1, 2500), st.sampled_from([B, 3 * B])),
    limit=st.integers(-5, 60_000),
    extra=st.integers(0, 40),
    from_offset=st.one_of(st.integers(0, 6000), st.sampled_from([0, B, 2 * B])),
)
def test_rollup_first_reaching_from_a_later_time_equals_raw(
    raw, now_us, window_us, limit, extra, from_offset
):
    intervals = [(s, None if d is None else s + d, r) for s, d, r in raw]
    raw_engine = usage.RawHistory([i for i in intervals if i[0] < now_us and i[2]], now_us)
    h, load = history(intervals, now_us, window_us)
    start = now_us + from_offset
    got, rounds = ask(h, load, lambda: h.first_reaching(window_us, limit, extra, from_us=start))
    assert got == raw_engine.first_reaching(window_us, limit, extra, from_us=start)
    assert rounds <= 1


def test_credit_counts_inside_the_window_only():
    now = datetime(2026, 11, 1, tzinfo=UTC)
    c = grants.Credit(1, "u", "memory", Decimal(20), now, "outage", "admin", now)
    window = 30 * 86400
    assert not c.in_window(now, window)  # [t − W, t): not yet at its own instant
    assert c.in_window(now + timedelta(microseconds=1), window)
    assert c.in_window(now + timedelta(seconds=window), window)
    assert not c.in_window(now + timedelta(seconds=window, microseconds=1), window)


def test_grant_states_and_revocation():
    now = datetime(2026, 11, 1, tzinfo=UTC)
    g = grants.Grant(
        1, "u", "memory", Decimal(100), now, now + timedelta(days=10), "thesis", "admin", now
    )
    assert g.state(now - timedelta(seconds=1)) == "scheduled"
    assert g.state(now) == "active" and g.active_at(now)
    assert g.state(now + timedelta(days=10)) == "expired"
    revoked = grants.Grant(
        1, "u", "memory", Decimal(100), now, now + timedelta(days=10), "thesis", "admin", now,
        revoked_at=now + timedelta(days=2), revoked_by="admin", revoke_reason="done early",
    )  # fmt: skip
    assert revoked.active_at(now + timedelta(days=1))
    assert not revoked.active_at(now + timedelta(days=2))
    assert revoked.state(now + timedelta(days=3)) == "revoked"
    adj = grants.Adjustments((g, revoked))
    assert adj.granted_hours("memory", now + timedelta(days=1)) == 200
    assert adj.granted_hours("memory", now + timedelta(days=5)) == 100
    assert adj.granted_hours("cpu", now + timedelta(days=1)) == 0
