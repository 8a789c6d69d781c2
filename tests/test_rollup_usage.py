"""Rollup-based usage equals the raw-segment engine exactly (pure; the SQL side is in
test_rollups_db.py).

Buckets here are a few hundred µs so random segments span many of them, start and end on
bucket boundaries, cover whole buckets, touch each other or have zero length.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.core import usage
from ledger.core.rollup_usage import Bucket, NeedBuckets, ResourceHistory

B = 200  # bucket length, µs


def rollups(intervals, bucket_us):
    """What the SQL trigger stores: per bucket, used and cover rate of closed segments, and
    each bucket's partial segments (starting inside it or ending inside it)."""
    used: dict[int, int] = {}
    cover: dict[int, int] = {}
    partials: dict[int, list] = {}
    for s, e, r in intervals:
        if e is None or e <= s or r == 0:
            continue
        z = s - s % bucket_us
        while z < e:
            used[z] = used.get(z, 0) + r * usage.overlap_us(s, e, z, z + bucket_us)
            if s < z and e >= z + bucket_us:
                cover[z] = cover.get(z, 0) + r
            else:
                partials.setdefault(z, []).append((s, e, r))
            z += bucket_us
    buckets = {z: Bucket(used[z], cover.get(z, 0)) for z in used}
    return buckets, partials


def history(intervals, now_us, window_us, bucket_us=B, whole_window=False):
    """The rollup engine, given only the edge buckets at first and more when it asks (or,
    ``whole_window``, every bucket of the window at once, as decide reads a quiet user)."""
    buckets, all_partials = rollups(intervals, bucket_us)
    started = [(s, e, r) for s, e, r in intervals if s < now_us and r]
    h = ResourceHistory(
        now_us=now_us,
        bucket_us=bucket_us,
        buckets=buckets,
        partials={},
        open_starts=[(s, r) for s, e, r in started if e is None],
        running=[(e, r) for s, e, r in started if e is None or e > now_us],
    )

    def load(zs):
        for z in zs:
            h.partials[z] = [i for i in all_partials.get(z, []) if i[0] < now_us]

    first, last = h.bucket_of(now_us - window_us), h.bucket_of(now_us)
    load(range(first, last + 1, bucket_us) if whole_window else {first, last})
    return h, load


def ask(h, load, question):
    """Answer, loading what the engine asks for; count the extra rounds."""
    for rounds in range(10):
        try:
            return question(), rounds
        except NeedBuckets as need:
            load(need.bucket_starts)
    raise AssertionError("engine kept asking")


segment = st.tuples(
    st.integers(0, 3000),  # start µs
    st.one_of(st.none(), st.integers(0, 1500), st.sampled_from([0, B, 2 * B])),  # length
    st.integers(0, 50),  # rate
)


@settings(max_examples=400, deadline=None)
@given(
    raw=st.lists(segment, max_size=14),
    now_us=st.one_of(st.integers(0, 4000), st.sampled_from([1000, 1200, 2000])),
    window_us=st.one_of(st.integers(1, 2500), st.sampled_from([B, 3 * B, 1000])),
    limit=st.integers(-5, 60_000),
    extra=st.integers(0, 40),
    whole_window=st.booleans(),
)
def test_rollup_engine_equals_raw(raw, now_us, window_us, limit, extra, whole_window):
    intervals = [(s, None if d is None else s + d, r) for s, d, r in raw]
    raw_engine = usage.RawHistory([i for i in intervals if i[0] < now_us and i[2]], now_us)
    h, load = history(intervals, now_us, window_us, whole_window=whole_window)
    used, rounds = ask(h, load, lambda: h.used(window_us))
    assert used == raw_engine.used(window_us)
    assert rounds == 0  # the edges are enough for U(now)
    below, rounds = ask(h, load, lambda: h.first_below_stopped(window_us, limit))
    assert below == raw_engine.first_below_stopped(window_us, limit)
    assert rounds <= (0 if whole_window else 1)
    reach, rounds = ask(h, load, lambda: h.first_reaching(window_us, limit, extra))
    assert reach == raw_engine.first_reaching(window_us, limit, extra)
    assert rounds <= (0 if whole_window else 1)  # every bucket loaded: no second trip


def test_whole_buckets_are_read_as_totals():
    # 20 buckets of history, window of 10: only the two edge buckets are ever raw.
    intervals = [(i * B + 10, i * B + 150, 7) for i in range(20)]
    h, _ = history(intervals, now_us=20 * B + 50, window_us=10 * B)
    assert set(h.partials) == {h.bucket_of(10 * B + 50), h.bucket_of(20 * B + 50)}
    raw = usage.RawHistory(intervals, 20 * B + 50)
    assert h.used(10 * B) == raw.used(10 * B)
