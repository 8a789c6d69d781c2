"""Exact rolling-window usage of one resource, and when it crosses a limit. Pure, no I/O.

Usage at time t over a window W is ``U(t) = Σ rate × |[start, end) ∩ [t − W, t)|``
(docs/accounting.md, "Usage over a window").
Times are integer microseconds since the epoch and rates integer base units (millicores,
bytes, devices), so U is an exact integer in base-unit·µs — no floats anywhere.

U is continuous and piecewise linear in t. Each interval changes U's slope at four instants:
+rate when it starts accruing (start), −rate when it stops growing (min(end, start + W)),
−rate when it starts leaving the window (max(end, start + W)), and +rate when it has left
(end + W). Sweeping those instants in order answers "when will U reach the limit?" (how long
a server can run) and "when will U fall below it?" (when the user can start again) exactly,
in O(n log n) for n intervals.

The SQL function ``quota_usage`` (migrations/versions/0004, from rollups) computes the same
integral, and :mod:`ledger.core.rollup_usage` answers the same questions from per-day
rollups; property tests keep all three equal.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

# An interval: (start_us, end_us or None while still running, rate in base units).
Interval = tuple[int, int | None, int]


def overlap_us(start_us: int, end_us: int | None, from_us: int, to_us: int) -> int:
    """Microseconds of [start, end) inside [from, to); an open interval runs to ``to``."""
    end = to_us if end_us is None else min(end_us, to_us)
    return max(0, end - max(start_us, from_us))


def window_usage(intervals: Iterable[Interval], at_us: int, window_us: int) -> int:
    """U(at): base-unit·µs used in [at − window, at). Open intervals run to ``at``."""
    since = at_us - window_us
    return sum(rate * overlap_us(start, end, since, at_us) for start, end, rate in intervals)


def burn_rate(intervals: Iterable[Interval], at_us: int) -> int:
    """Sum of rates of intervals running at ``at`` (started, not yet ended)."""
    return sum(
        rate for start, end, rate in intervals if start <= at_us and (end is None or end > at_us)
    )


def stopped_at(intervals: Iterable[Interval], now_us: int) -> list[Interval]:
    """The intervals as they would be if everything running stopped at ``now``."""
    out = []
    for start, end, rate in intervals:
        if start >= now_us:
            continue
        out.append((start, now_us if end is None or end > now_us else end, rate))
    return out


@dataclass
class _Sweep:
    """U and its slope from ``now`` on, with the slope changes still ahead."""

    at_us: int
    usage: int
    slope: int
    events: list[tuple[int, int]]  # (time_us, slope delta), sorted, all > at_us


def _sweep(intervals: Sequence[Interval], now_us: int, window_us: int) -> _Sweep:
    # Right-hand slope at now: every change at or before now has happened. Only the changes
    # still ahead need sorting — for a month of history that is a handful, not 4n.
    slope = 0
    ahead: list[tuple[int, int]] = []
    for start, end, rate in intervals:
        if rate == 0 or (end is not None and end <= start):
            continue
        if end is None:
            changes = ((start, rate), (start + window_us, -rate))
        else:
            changes = (
                (start, rate),
                (min(end, start + window_us), -rate),
                (max(end, start + window_us), -rate),
                (end + window_us, rate),
            )
        for time_us, delta in changes:
            if time_us <= now_us:
                slope += delta
            else:
                ahead.append((time_us, delta))
    ahead.sort()
    return _Sweep(now_us, window_usage(intervals, now_us, window_us), slope, ahead)


def first_reaching(
    intervals: Sequence[Interval], now_us: int, window_us: int, limit: int
) -> int | None:
    """The first t ≥ now with U(t) ≥ limit, or None if U never gets there.

    Open intervals keep running, so this is when a budget runs out if nothing stops.
    """
    sweep = _sweep(intervals, now_us, window_us)
    t, usage, slope = sweep.at_us, sweep.usage, sweep.slope
    if usage >= limit:
        return now_us
    for time_us, delta in sweep.events:
        if time_us > t:
            reached = usage + slope * (time_us - t)
            if slope > 0 and reached >= limit:
                # smallest whole µs d with usage + slope·d ≥ limit
                return t + -(-(limit - usage) // slope)
            usage, t = reached, time_us
        slope += delta
    return None


def first_below(
    intervals: Sequence[Interval], now_us: int, window_us: int, limit: int
) -> int | None:
    """The first t ≥ now with U(t) < limit, or None if never (limit ≤ 0).

    Call with :func:`stopped_at` intervals: with nothing running, U only falls after now.
    """
    if limit <= 0:
        return None
    sweep = _sweep(intervals, now_us, window_us)
    t, usage, slope = sweep.at_us, sweep.usage, sweep.slope
    if usage < limit:
        return now_us
    for time_us, delta in sweep.events:
        if time_us > t:
            reached = usage + slope * (time_us - t)
            if slope < 0 and reached < limit:
                # smallest whole µs d with usage + slope·d < limit: d > (usage − limit) / −slope
                return t + (usage - limit) // -slope + 1
            usage, t = reached, time_us
        slope += delta
    return None if usage >= limit else t


class UsageHistory(Protocol):
    """What a decision asks of one resource's usage at a fixed ``now`` (base-unit·µs, µs)."""

    def used(self, window_us: int) -> int: ...

    def first_below_stopped(self, window_us: int, limit: int) -> int | None: ...

    def first_reaching(
        self, window_us: int, limit: int, extra_rate: int = 0, from_us: int | None = None
    ) -> int | None: ...


@dataclass
class RawHistory:
    """One resource's usage questions answered from all its raw intervals (the reference
    engine; :class:`ledger.core.rollup_usage.ResourceHistory` answers the same from rollups)."""

    intervals: list[Interval]
    now_us: int

    def used(self, window_us: int) -> int:
        return window_usage(self.intervals, self.now_us, window_us)

    def first_below_stopped(self, window_us: int, limit: int) -> int | None:
        stopped = stopped_at(self.intervals, self.now_us)
        return first_below(stopped, self.now_us, window_us, limit)

    def first_reaching(
        self, window_us: int, limit: int, extra_rate: int = 0, from_us: int | None = None
    ) -> int | None:
        with_extra = [*self.intervals, (self.now_us, None, extra_rate)]
        start_us = self.now_us if from_us is None else max(from_us, self.now_us)
        return first_reaching(with_extra, start_us, window_us, limit)
