"""Grants and credits: ledger entries that move a user's limit or usage. Pure, no I/O.

A **grant** adds ``amount_hours`` to the user's limit of one resource while it is valid,
``starts_at ≤ t < ends_at`` (and ``t < revoked_at`` once revoked). Several grants add up;
a grant on a resource the policy leaves unlimited changes nothing.

A **credit** dated ``c`` is negative usage at one instant: it counts in the rolling window
``[t − W, t)`` as usage does, i.e. for ``c < t ≤ c + W``, and then leaves it.

The decision compares the recorded usage ``U(t)`` (:mod:`ledger.core.usage`, or
:mod:`ledger.core.rollup_usage` from rollups) against an *effective limit*
``E(t) = policy limit + active grants(t) + credits in the window(t)``: a user is over when
``U − credits ≥ limit + grants``, i.e. ``U ≥ E``. ``E`` is a step function (a grant starts
or ends, a credit enters or leaves the window), constant between its steps, so "when does U
fall below?" (retry) and "when does U reach it?" (run-out) are answered piece by piece with
the constant-limit engines, exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from ledger.core.json_form import json_number
from ledger.core.quantities import format_hours
from ledger.core.resources import resource
from ledger.core.rollup_usage import NeedBuckets
from ledger.core.times import iso, to_us

GRANT_STATES = ("active", "scheduled", "expired", "revoked")


@dataclass(frozen=True)
class Grant:
    id: int
    username: str
    resource: str
    amount_hours: Decimal  # in the resource's hours unit (GiB-hours, CPU-hours, GPU-hours)
    starts_at: datetime
    ends_at: datetime
    reason: str
    granted_by: str
    created_at: datetime
    revoked_at: datetime | None = None
    revoked_by: str | None = None
    revoke_reason: str | None = None
    request_id: int | None = None
    group_name: str | None = None  # a grant to the group's pool (then username is None)

    @property
    def effective_end(self) -> datetime:
        """When it stops counting: its end, or its revocation if that came first."""
        if self.revoked_at is not None and self.revoked_at < self.ends_at:
            return self.revoked_at
        return self.ends_at

    def active_at(self, at: datetime) -> bool:
        return self.starts_at <= at < self.effective_end

    def state(self, at: datetime) -> str:
        if self.revoked_at is not None and (
            self.revoked_at <= at or self.revoked_at <= self.starts_at  # revoked before it began
        ):
            return "revoked"
        if at < self.starts_at:
            return "scheduled"
        return "active" if at < self.ends_at else "expired"

    def amount_base_us(self) -> int:
        return resource(self.resource).from_hours(self.amount_hours)

    def to_json(self, at: datetime) -> dict:
        return {
            "id": self.id,
            "username": self.username,
            "resource": self.resource,
            "unit": resource(self.resource).hours_unit,
            "amount": json_number(self.amount_hours),
            "starts_at": iso(self.starts_at),
            "ends_at": iso(self.ends_at),
            "state": self.state(at),
            "reason": self.reason,
            "granted_by": self.granted_by,
            "created_at": iso(self.created_at),
            "revoked_at": iso(self.revoked_at),
            "revoked_by": self.revoked_by,
            "revoke_reason": self.revoke_reason,
            "request_id": self.request_id,
            "group": self.group_name,
        }


@dataclass(frozen=True)
class Credit:
    id: int
    username: str
    resource: str
    amount_hours: Decimal
    credited_at: datetime  # the instant it counts as negative usage at
    reason: str
    credited_by: str
    created_at: datetime
    group_name: str | None = None  # a credit to the group's pool (then username is None)

    def in_window(self, at: datetime, window_seconds: int) -> bool:
        """Inside [at − W, at): it counts against usage then."""
        at_us = to_us(at)
        return at_us - window_seconds * 1_000_000 <= to_us(self.credited_at) < at_us

    def amount_base_us(self) -> int:
        return resource(self.resource).from_hours(self.amount_hours)

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "username": self.username,
            "resource": self.resource,
            "unit": resource(self.resource).hours_unit,
            "amount": json_number(self.amount_hours),
            "credited_at": iso(self.credited_at),
            "reason": self.reason,
            "credited_by": self.credited_by,
            "created_at": iso(self.created_at),
            "group": self.group_name,
        }


@dataclass(frozen=True)
class LimitSteps:
    """``E(t)`` from ``now`` on: ``(start_us, limit)`` pieces, the first starting at now,
    each holding until the next starts (the last forever). Base-unit·µs."""

    pieces: tuple[tuple[int, int], ...]

    @property
    def now_limit(self) -> int:
        return self.pieces[0][1]

    def segments(self) -> Iterator[tuple[int, int | None, int]]:
        """(from µs, until µs or None, limit) in time order."""
        for i, (lo, limit) in enumerate(self.pieces):
            hi = self.pieces[i + 1][0] if i + 1 < len(self.pieces) else None
            yield lo, hi, limit


@dataclass(frozen=True)
class Adjustments:
    """A user's grants and credits that can matter at or after some ``now``."""

    grants: tuple[Grant, ...] = ()
    credits: tuple[Credit, ...] = ()

    def active_grants(self, name: str, at: datetime) -> list[Grant]:
        return [g for g in self.grants if g.resource == name and g.active_at(at)]

    def granted_hours(self, name: str, at: datetime) -> Decimal:
        return sum((g.amount_hours for g in self.active_grants(name, at)), Decimal(0))

    def credits_in_window(self, name: str, at: datetime, window_seconds: int) -> list[Credit]:
        return [c for c in self.credits if c.resource == name and c.in_window(at, window_seconds)]

    def credited_hours(self, name: str, at: datetime, window_seconds: int) -> Decimal:
        found = self.credits_in_window(name, at, window_seconds)
        return sum((c.amount_hours for c in found), Decimal(0))

    def steps(self, name: str, policy_limit: int, now: datetime, window_us: int) -> LimitSteps:
        """``E(t)`` for ``t ≥ now``: the policy limit plus grants plus credits in the window."""
        now_us = to_us(now)
        if not self.grants and not self.credits:  # most users: the policy limit from now on
            return LimitSteps(((now_us, policy_limit),))
        changes: list[tuple[int, int]] = []  # (µs, delta): E changes from that µs on
        for g in self.grants:
            if g.resource == name:
                amount = g.amount_base_us()
                changes += [(to_us(g.starts_at), amount), (to_us(g.effective_end), -amount)]
        for c in self.credits:
            if c.resource == name:
                amount, at_us = c.amount_base_us(), to_us(c.credited_at)
                # in [t − W, t) for t in [c + 1 µs, c + W]: enters at c + 1, leaves at c + W + 1
                changes += [(at_us + 1, amount), (at_us + window_us + 1, -amount)]
        limit = policy_limit + sum(d for at_us, d in changes if at_us <= now_us)
        pieces = [(now_us, limit)]
        for at_us, delta in sorted(c for c in changes if c[0] > now_us):
            limit += delta
            if at_us == pieces[-1][0]:
                pieces[-1] = (at_us, limit)
            else:
                pieces.append((at_us, limit))
        merged = [pieces[0]]
        for piece in pieces[1:]:
            if piece[1] != merged[-1][1]:
                merged.append(piece)
        return LimitSteps(tuple(merged))

    def __bool__(self) -> bool:
        return bool(self.grants or self.credits)


NO_ADJUSTMENTS = Adjustments()


def first_below_stopped(history, window_us: int, steps: LimitSteps) -> int | None:
    """The first t ≥ now with U(t) < E(t) if everything running stopped now; None if never.

    Stopped, U only falls, so in a piece of constant limit ``L`` the answer is the first
    time U < L (from now on), if that lies before the piece ends.
    """
    needed: set[int] = set()
    for lo, hi, limit in steps.segments():
        if limit <= 0:
            continue
        try:
            below = history.first_below_stopped(window_us, limit)
        except NeedBuckets as need:
            needed |= need.bucket_starts
            continue
        if below is None:
            continue
        found = max(below, lo)
        if hi is None or found < hi:
            if needed:  # an earlier piece may hold an earlier answer
                raise NeedBuckets(needed)
            return found
    if needed:
        raise NeedBuckets(needed)
    return None


def first_reaching(history, window_us: int, steps: LimitSteps, extra_rate: int = 0) -> int | None:
    """The first t ≥ now with U(t) ≥ E(t) while what runs keeps running (plus a server of
    ``extra_rate`` starting now); None if never. U may rise and fall, so each piece asks
    from its own start."""
    needed: set[int] = set()
    for lo, hi, limit in steps.segments():
        if limit <= 0:
            found: int | None = lo  # U ≥ 0 always
        else:
            try:
                if lo == history.now_us:
                    found = history.first_reaching(window_us, limit, extra_rate)
                else:
                    found = history.first_reaching(window_us, limit, extra_rate, from_us=lo)
            except NeedBuckets as need:
                needed |= need.bucket_starts
                continue
        if found is not None and (hi is None or found < hi):
            if needed:
                raise NeedBuckets(needed)
            return found
    if needed:
        raise NeedBuckets(needed)
    return None


@dataclass(frozen=True)
class BudgetAdjustment:
    """What grants and credits do to one budget at ``now`` (for the usage records)."""

    granted_hours: Decimal = Decimal(0)
    credited_hours: Decimal = Decimal(0)
    grants: tuple[Grant, ...] = field(default_factory=tuple)
    credits: tuple[Credit, ...] = field(default_factory=tuple)

    @classmethod
    def of(
        cls, adjustments: Adjustments, name: str, now: datetime, window_seconds: int
    ) -> BudgetAdjustment:
        if not adjustments.grants and not adjustments.credits:
            return NO_BUDGET_ADJUSTMENT  # most users: the all-users report asks 10k times
        grants = tuple(adjustments.active_grants(name, now))
        credits = tuple(adjustments.credits_in_window(name, now, window_seconds))
        return cls(
            sum((g.amount_hours for g in grants), Decimal(0)),
            sum((c.amount_hours for c in credits), Decimal(0)),
            grants,
            credits,
        )


NO_BUDGET_ADJUSTMENT = BudgetAdjustment()


def by_user(grants: Iterable[Grant], credits: Iterable[Credit]) -> dict[str, Adjustments]:
    """Per holder: the username, or for a pool's entries the group name."""
    out: dict[str, tuple[list, list]] = {}
    for g in grants:
        out.setdefault(g.username or g.group_name, ([], []))[0].append(g)
    for c in credits:
        out.setdefault(c.username or c.group_name, ([], []))[1].append(c)
    return {u: Adjustments(tuple(g), tuple(c)) for u, (g, c) in out.items()}


def adjustment_text(name: str, grants: Iterable[Grant], credited_hours: Decimal) -> str:
    """``"includes 100 GiB-hours granted until 2026-12-31 00:00 UTC (thesis deadline);
    20 GiB-hours credited"``; empty when there is nothing to say."""
    parts = [
        f"{format_hours(name, g.amount_hours)} granted until "
        f"{g.effective_end:%Y-%m-%d %H:%M} UTC ({g.reason})"
        for g in sorted(grants, key=lambda g: (g.effective_end, g.id))
    ]
    text = "includes " + ", ".join(parts) if parts else ""
    if credited_hours:
        credit = f"{format_hours(name, credited_hours)} credited back"
        text = f"{text}; {credit}" if text else credit
    return text
