"""The exact integral: the pure engine, the SQL function and a brute-force sum agree.

Brute force walks every second; the engine sweeps slope changes; SQL integrates with
numeric epoch arithmetic. Segments are generated to hit the edges the accounting rules care
about: open segments, segments crossing the window start, zero-length and touching segments,
several servers at once.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from ledger.core import usage
from ledger.core.decision import from_us, to_us
from ledger.store import queries

BASE = datetime(2026, 10, 1, tzinfo=UTC)
S = 1_000_000  # µs per second


def brute_force(intervals, at_s: int, window_s: int) -> int:
    """Σ rate over every whole second t in [at − window, at) the interval covers (in rate·s)."""
    total = 0
    for start_s, end_s, rate in intervals:
        end = at_s if end_s is None else min(end_s, at_s)
        for _t in range(max(start_s, at_s - window_s), end):
            total += rate
    return total


segment = st.tuples(
    st.integers(0, 400),  # start (seconds after BASE)
    st.one_of(st.none(), st.integers(0, 200)),  # duration; None = still open
    st.integers(0, 5000),  # rate
)


def _intervals(raw):
    return [(s, None if d is None else s + d, r) for s, d, r in raw]


@given(st.lists(segment, max_size=12), st.integers(0, 700), st.integers(1, 300))
def test_engine_equals_brute_force(raw, at_s, window_s):
    intervals = _intervals(raw)
    in_us = [(s * S, None if e is None else e * S, r) for s, e, r in intervals]
    # only segments started before `at` count (later ones did not exist yet)
    started = [(s, e, r) for s, e, r in in_us if s < at_s * S]
    assert (
        usage.window_usage(started, at_s * S, window_s * S)
        == brute_force([(s, e, r) for s, e, r in intervals if s < at_s], at_s, window_s) * S
    )


@given(st.lists(segment, max_size=10), st.integers(1, 300), st.integers(1, 10**6))
def test_first_below_and_first_reaching_are_exact(raw, window_s, limit_scale):
    now_us = 300 * S
    intervals = [(s * S, None if e is None else e * S, r) for s, e, r in _intervals(raw)]
    intervals = [i for i in intervals if i[0] < now_us]
    limit = limit_scale * 1000
    stopped = usage.stopped_at(intervals, now_us)
    t = usage.first_below(stopped, now_us, window_s * S, limit)
    if t is None:
        assert usage.window_usage(stopped, now_us + 2 * window_s * S, window_s * S) >= limit
    else:
        assert usage.window_usage(stopped, t, window_s * S) < limit
        if t > now_us:
            assert usage.window_usage(stopped, t - 1, window_s * S) >= limit
    r = usage.first_reaching(intervals, now_us, window_s * S, limit)
    if r is not None:
        assert usage.window_usage(intervals, r, window_s * S) >= limit
        if r > now_us:
            assert usage.window_usage(intervals, r - 1, window_s * S) < limit


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw=st.lists(segment, min_size=1, max_size=15), at_s=st.integers(0, 700),
       window_s=st.integers(1, 400))  # fmt: skip
async def test_sql_integral_equals_brute_force(engine, raw, at_s, window_s):
    intervals = _intervals(raw)
    rows = [
        {
            "pod_uid": f"pod-{i}",
            "username": "alice" if i % 3 else "bob",
            "servername": "" if i % 2 else f"s{i}",
            "cpu_millicores": rate,
            "memory_bytes": rate * 1024,
            "gpu_count": rate % 3,
            "started_at": BASE + timedelta(seconds=s),
            "ended_at": None if e is None else BASE + timedelta(seconds=e),
        }
        for i, (s, e, rate) in enumerate(intervals)
    ]
    async with engine.begin() as conn:
        # a fresh ledger per example: the rollups follow INSERT, UPDATE and DELETE of
        # segments (their triggers), not TRUNCATE, so they are emptied with them
        await conn.execute(text("TRUNCATE segments, usage_rollups"))
        await queries.upsert_segments(conn, rows)
        at = BASE + timedelta(seconds=at_s)
        report = {r["username"]: r for r in await queries.usage_report(conn, at, window_s)}
        for user in ("alice", "bob"):
            mine = [
                (s, e, r)
                for i, (s, e, r) in enumerate(intervals)
                if ("alice" if i % 3 else "bob") == user and s < at_s
            ]
            expected_cpu = brute_force(mine, at_s, window_s)
            expected_mem = brute_force([(s, e, r * 1024) for s, e, r in mine], at_s, window_s)
            expected_gpu = brute_force([(s, e, r % 3) for s, e, r in mine], at_s, window_s)
            got = report.get(user)
            if got is None:
                assert expected_cpu == expected_mem == expected_gpu == 0
                continue
            assert got["cpu_millicore_seconds"] == expected_cpu
            assert got["memory_byte_seconds"] == expected_mem
            assert got["gpu_seconds"] == expected_gpu
            # and the decision path reads the same rows to the same number
            segs = await queries.user_segments(conn, user, at - timedelta(seconds=window_s), at)
            engine_cpu = usage.window_usage(
                [(r.started_at_us, r.ended_at_us, r.amounts["cpu"]) for r in segs],
                to_us(at),
                window_s * S,
            )
            assert engine_cpu == expected_cpu * S


def test_microsecond_round_trip():
    at = datetime(2026, 11, 22, 12, 0, 0, 123456, tzinfo=UTC)
    assert from_us(to_us(at)) == at
