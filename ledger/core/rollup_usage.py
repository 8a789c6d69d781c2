"""Exact rolling-window usage from per-bucket rollups plus the raw segments of a few buckets.

The same numbers as :mod:`ledger.core.usage` (a property test keeps them equal), at a cost
that does not grow with the user's history: whole buckets are read as totals, and raw
segments only for the buckets where the answer's shape matters.

Write ρ(τ) for the user's total rate at instant τ. Before ``now`` it is the recorded history;
from ``now`` on it is what keeps running (open segments, segments that end later, and for a
run-out question the requested server). Usage is ``U(t) = ∫ ρ over [t − W, t)``, so for
t ≥ now the window's start x = t − W walks through history: U changes by ρ(t) − ρ(x).

A bucket ``[z, z + B)`` stores, for closed segments only:

- ``used``: ∫ ρ over the bucket, exact (base-unit·µs);
- ``cover_rate``: the summed rate of segments that started before z and end at or after
  z + B (they run through the whole bucket).

Every other closed segment touching the bucket starts inside it or ends inside it — the
bucket's *partial* segments, readable with two index range scans. ``cover_rate`` plus the
partial segments give ρ exactly inside a bucket; ``used`` alone gives U exactly at every
bucket boundary. So:

- U(now) needs raw segments only for the buckets holding ``now − W`` and ``now``;
- when U falls below the limit (retry) or reaches it (run-out), U is exact at each bucket
  boundary, so only the bucket where the crossing lies needs its raw segments.

A bucket the answer needs but was not given raises :class:`NeedBuckets`; the caller reads
those buckets' partial segments and asks again (decide: at most two round trips).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from ledger.core import usage
from ledger.core.usage import Interval

DAY_US = 86_400 * 1_000_000


class NeedBuckets(Exception):  # noqa: N818 - a request for data, not a failure
    """The answer needs the partial segments of these buckets (start times in µs)."""

    def __init__(self, bucket_starts: Iterable[int]):
        self.bucket_starts = frozenset(bucket_starts)
        super().__init__(sorted(self.bucket_starts))


class Bucket(NamedTuple):  # a tuple: decide builds ~60 per user, a dataclass costs 3× more
    used: int = 0  # ∫ rate of closed segments over the bucket, base-unit·µs
    cover_rate: int = 0  # rate of closed segments running through the whole bucket


@dataclass
class ResourceHistory:
    """One resource of one user, as the rollups and a few raw reads describe it at ``now``.

    ``partials`` holds, per loaded bucket, the closed segments of that bucket that start
    inside it or end inside it (and started before ``now``). ``open_starts`` are segments
    still open (start, rate), ``running`` every segment started before ``now`` and not ended
    at ``now`` (end or None, rate) — open ones included.
    """

    now_us: int
    bucket_us: int = DAY_US
    buckets: Mapping[int, Bucket] = field(default_factory=dict)
    partials: Mapping[int, list[Interval]] = field(default_factory=dict)
    open_starts: list[tuple[int, int]] = field(default_factory=list)
    running: list[tuple[int | None, int]] = field(default_factory=list)
    _in_bucket: dict[int, list[Interval]] = field(default_factory=dict, repr=False)
    _pieces: dict[tuple[int, int], int] = field(default_factory=dict, repr=False)
    _window: dict[int, list[tuple[int, int, int, int | None]]] = field(
        default_factory=dict, repr=False
    )
    _used: dict[int, int] = field(default_factory=dict, repr=False)

    def bucket_of(self, at_us: int) -> int:
        return at_us - at_us % self.bucket_us

    def _history_intervals(self, z: int) -> list[Interval]:
        """ρ before now inside loaded bucket z, as intervals (cover, partial, open)."""
        if z in self._in_bucket:
            return self._in_bucket[z]
        out = list(self.partials[z])
        cover = self.buckets.get(z, Bucket()).cover_rate
        if cover:
            out.append((z - 1, z + self.bucket_us, cover))
        out.extend((s, None, r) for s, r in self.open_starts)
        self._in_bucket[z] = out
        return out

    def _open_overlap(self, a: int, b: int) -> int:
        if not self.open_starts:
            return 0
        return sum(r * usage.overlap_us(s, None, a, b) for s, r in self.open_starts)

    def _piece_integral(self, z: int, a: int, b: int) -> int | None:
        """∫ ρ over [a, b) inside bucket z, or None if that needs z's raw segments."""
        if a == z and b == z + self.bucket_us:  # a whole bucket: its total, loaded or not
            bucket = self.buckets.get(z)
            return (bucket.used if bucket else 0) + self._open_overlap(a, b)
        if z in self.partials:
            if (a, b) not in self._pieces:
                intervals = self._history_intervals(z)
                self._pieces[a, b] = sum(r * usage.overlap_us(s, e, a, b) for s, e, r in intervals)
            return self._pieces[a, b]
        return None

    def _window_pieces(self, window_us: int) -> list[tuple[int, int, int, int | None]]:
        """(bucket, piece start, piece end, ∫ ρ over the piece or None if unloaded) over
        [now − window, now): worked out once, for U(now) and then the retry and run-out
        questions, which walk the same pieces."""
        pieces = self._window.get(window_us)
        if pieces is None:
            pieces = self._window[window_us] = self._cut(self.now_us - window_us, self.now_us)
        return pieces

    def _cut(self, lo_us: int, hi_us: int) -> list[tuple[int, int, int, int | None]]:
        """[lo, hi) as :meth:`_window_pieces` gives it: a piece of the first bucket, the
        whole buckets between, a piece of the last. This runs for every budget of every
        decide, so the whole buckets, most of a window, are one comprehension."""
        if lo_us >= hi_us:
            return []
        width, piece = self.bucket_us, self._piece_integral
        z, last = self.bucket_of(lo_us), self.bucket_of(hi_us)
        if z == last:
            return [(z, lo_us, hi_us, piece(z, lo_us, hi_us))]
        pieces = []
        if lo_us > z:
            pieces.append((z, lo_us, z + width, piece(z, lo_us, z + width)))
            z += width
        if self.open_starts:
            pieces += [(y, y, y + width, piece(y, y, y + width)) for y in range(z, last, width)]
        else:  # with nothing open, a whole bucket's integral is its total
            get = self.buckets.get
            pieces += [
                (y, y, y + width, bucket.used if (bucket := get(y)) else 0)
                for y in range(z, last, width)
            ]
        if hi_us > last:
            pieces.append((last, last, hi_us, piece(last, last, hi_us)))
        return pieces

    def used(self, window_us: int) -> int:
        """U(now): base-unit·µs used in [now − window, now)."""
        found = self._used.get(window_us)
        if found is None:  # asked again by the retry and run-out questions: worked out once
            pieces = self._window_pieces(window_us)
            missing = {z for z, _, _, piece in pieces if piece is None}
            if missing:
                raise NeedBuckets(missing)
            found = self._used[window_us] = sum(piece for _, _, _, piece in pieces)
        return found

    def _future_rate(self, t_us: int, extra: int) -> int:
        return extra + sum(r for e, r in self.running if e is None or e > t_us)

    def _future_integral(self, a: int, b: int, extra: int) -> int:
        return extra * (b - a) + sum(
            r * usage.overlap_us(self.now_us, e, a, b) for e, r in self.running
        )

    def _slope_events(
        self, z: int, a: int, b: int, window_us: int, extra: int
    ) -> tuple[int, list[tuple[int, int]]]:
        """U's slope at a + W and its changes inside (a + W, b + W), for loaded bucket z."""
        history = self._history_intervals(z)
        slope = -sum(r for s, e, r in history if s <= a and (e is None or e > a))
        slope += self._future_rate(a + window_us, extra)
        events = []
        for s, e, r in history:
            if a < s < b:
                events.append((s + window_us, -r))
            if e is not None and a < e < b:
                events.append((e + window_us, r))
        for e, r in self.running:
            if e is not None and a + window_us < e < b + window_us:
                events.append((e, -r))
        events.sort()
        return slope, events

    def first_reaching(
        self, window_us: int, limit: int, extra_rate: int = 0, from_us: int | None = None
    ) -> int | None:
        """The first t ≥ now (≥ ``from_us`` if given) with U(t) ≥ limit when everything
        running keeps running and a server of ``extra_rate`` starts now; None if never.
        Equals usage.first_reaching (a limit that changes later asks from each change on,
        ledger.core.grants)."""
        now = self.now_us
        start = now if from_us is None else max(from_us, now)
        value = self.used(window_us)
        if value >= limit and start == now:
            return now
        needed: set[int] = set()
        for z, a, b, piece in self._window_pieces(window_us):
            gain = self._future_integral(a + window_us, b + window_us, extra_rate)
            if piece is None:
                raise NeedBuckets({z})
            end_value = value - piece + gain
            answers = b + window_us > start  # a piece that ends before ``start`` cannot
            # U only loses what leaves the window, so it stays ≤ value + gain in this piece:
            # below the limit, the piece's shape does not matter.
            if answers and value + gain >= limit:
                if z not in self.partials:
                    needed.add(z)  # U may reach the limit inside: need its shape
                elif not needed:
                    slope, events = self._slope_events(z, a, b, window_us, extra_rate)
                    hit = _walk_up(a + window_us, value, slope, events, b + window_us, limit, start)
                    if hit is not None:
                        return hit
            if needed and end_value >= limit:
                raise NeedBuckets(needed)
            value = end_value
        if needed:
            raise NeedBuckets(needed)
        # From now + W on, only what keeps running is in the window.
        ahead = [(now, e, r) for e, r in self.running]
        if extra_rate:
            ahead.append((now, None, extra_rate))
        return usage.first_reaching(ahead, max(now + window_us, start), window_us, limit)

    def first_below_stopped(self, window_us: int, limit: int) -> int | None:
        """The first t ≥ now with U(t) < limit if everything running stopped at now; None if
        never (limit ≤ 0). Equals usage.first_below(usage.stopped_at(...))."""
        if limit <= 0:
            return None
        now = self.now_us
        value = self.used(window_us)
        if value < limit:
            return now
        for z, a, b, piece in self._window_pieces(window_us):
            if piece is None:
                raise NeedBuckets({z})
            if value - piece < limit:  # U falls below the limit inside this piece
                if z not in self.partials:
                    raise NeedBuckets({z})
                history = self._history_intervals(z)
                slope = -sum(r for s, e, r in history if s <= a and (e is None or e > a))
                events = sorted(
                    [(s + window_us, -r) for s, e, r in history if a < s < b]
                    + [(e + window_us, r) for s, e, r in history if e is not None and a < e < b]
                )
                return _walk_down(a + window_us, value, slope, events, b + window_us, limit)
            value -= piece
        return now + window_us  # unreachable with limit > 0: U(now + W) = 0


def _walk_up(
    t: int, value: int, slope: int, events, end: int, limit: int, lo: int | None = None
) -> int | None:
    """First whole µs in [max(t, lo), end] where a piecewise-linear value reaches ``limit``."""
    for time_us, delta in [*events, (end, 0)]:
        if time_us > t:
            if lo is not None and t < lo:
                if time_us <= lo:  # wholly before lo: only carry the value along
                    value, t = value + slope * (time_us - t), time_us
                    slope += delta
                    continue
                value, t = value + slope * (lo - t), lo
            if value >= limit:
                return t
            reached = value + slope * (time_us - t)
            if slope > 0 and reached >= limit:
                return t + -(-(limit - value) // slope)
            value, t = reached, time_us
        slope += delta
    return None


def _walk_down(t: int, value: int, slope: int, events, end: int, limit: int) -> int:
    """First whole µs in (t, end] where a falling value gets below ``limit`` (it does)."""
    for time_us, delta in [*events, (end, 0)]:
        if time_us > t:
            reached = value + slope * (time_us - t)
            if slope < 0 and reached < limit:
                return t + (value - limit) // -slope + 1
            value, t = reached, time_us
        slope += delta
    raise AssertionError("usage must fall below the limit inside this bucket")
