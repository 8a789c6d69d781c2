"""The usage model: one record per resource, one JSON form, for every surface. Pure, no I/O.

``quota-ledger check``, ``usage`` and ``report``, the JSON API (``/api/v1/*``) and the web
pages all show a user's numbers through :class:`ResourceUsage` (per resource) and
:class:`Membership` (which groups the limits came from), so they cannot disagree on
rounding, keys or group resolution. ``docs/cli.md`` and the ``ResourceUsage`` component of
``docs/openapi.yaml`` describe the JSON; ``ledger.core.usage_text`` is the one human
formatting of the same records.

JSON rules (one place): amounts are resource-hours (``unit``: CPU-hours, GiB-hours,
GPU-hours) rounded by ``ledger.core.json_form`` (6 decimals); what running servers hold is in
the display unit (CPUs, GiB, GPUs) with the same rounding; ``percent_used`` has 2 decimals;
times are ISO 8601 UTC, whole seconds (``retry_at`` rounded up, ``runs_out_at`` down, so
neither promises more than the ledger can keep).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from ledger.core import grants as ledger_grants
from ledger.core import usage
from ledger.core.decision import SegmentRow, ceil_to_second, from_us, to_us
from ledger.core.json_form import json_amounts, json_number
from ledger.core.resources import MICROSECONDS_PER_SECOND, Resource, resource
from ledger.core.times import iso

NEAR_LIMIT_PERCENT = 80.0

# Where a resource's limit came from. "group": the user's policy group(s) (several when
# ``combine: sum`` adds them up); "user": the policy's ``users:`` entry for this user;
# "unlisted": the ``unlisted_users`` group, for a user in no listed group; "unlimited": no
# limit applies.
LIMIT_KINDS = ("group", "user", "unlisted", "unlimited")


def _floor_to_second(at_us: int) -> int:
    return at_us - at_us % MICROSECONDS_PER_SECOND


@dataclass(frozen=True)
class LimitSource:
    kind: str  # one of LIMIT_KINDS
    groups: tuple[str, ...] = ()  # policy groups the limit came from (group, unlisted)
    user: str | None = None  # kind "user": whose entry

    @classmethod
    def of_budget(cls, source: str | None, policy_groups: Sequence[str] = ()) -> LimitSource:
        """From a policy ``Budget.source`` ("group:power", "user:alice", "unlisted:regular",
        "sum:dev+gpu-dev"); None means no budget, i.e. unlimited."""
        return _limit_source(cls, source, tuple(policy_groups))

    @classmethod
    def _parse(cls, source: str | None, policy_groups: tuple[str, ...]) -> LimitSource:
        if source is None:
            return cls("unlimited")
        kind, _, name = source.partition(":")
        if kind == "user":
            return cls("user", user=name)
        if kind == "unlisted":
            return cls("unlisted", (name,))
        if kind == "sum":
            # "+" may also occur inside a group name: take the user's policy groups whose
            # names spell the sum, in the order the policy joined them (sorted).
            found, rest = [], name
            for group in policy_groups:
                if rest == group or rest.startswith(group + "+"):
                    found.append(group)
                    rest = rest[len(group) + 1 :]
            return cls("group", tuple(found) if not rest and found else tuple(name.split("+")))
        return cls("group", (name,))

    def to_json(self) -> dict:
        return {"kind": self.kind, "groups": list(self.groups), "user": self.user}


@functools.lru_cache(maxsize=4096)
def _limit_source(cls, source: str | None, policy_groups: tuple[str, ...]) -> LimitSource:
    # the all-users report asks once per user and resource; few distinct answers (frozen)
    return cls._parse(source, policy_groups)


@dataclass(frozen=True)
class Membership:
    """Whose limits apply: the user's hub groups and how the policy resolved them.

    ``policy_groups`` are the listed groups whose limits apply, or the ``unlisted_users``
    group for a user in none (then ``unlisted`` names it). ``unlisted`` is None for a user in
    a listed group, else ``unlisted_users`` as it applied: a group name, "unlimited" or "deny".
    """

    groups: tuple[str, ...]  # the user's hub groups, as the hub reported them
    policy_groups: tuple[str, ...]
    unlisted: str | None
    denied_all: bool = False

    @classmethod
    def of(cls, groups: Iterable[str], limits) -> Membership:
        return cls(tuple(groups), tuple(limits.groups), limits.unlisted, limits.denied_all)

    def to_json(self) -> dict:
        return {
            "groups": list(self.groups),
            "policy_groups": list(self.policy_groups),
            "unlisted_users": self.unlisted,
        }


@dataclass(frozen=True)
class ResourceUsage:
    """One resource of one user at one time, over the resource's rolling window.

    ``limit_hours`` is the policy limit plus the active grants (``granted_hours``, listed
    in ``grants``); ``used_hours`` is the recorded usage minus the credits inside the window
    (``credited_hours``), ledger.core.grants. Group pools will add to this record; the JSON
    keys here stay.
    """

    resource: str
    used_hours: Decimal
    limit_hours: Decimal | None  # None = unlimited
    window_seconds: int
    running: int  # base units held by the user's running servers now (the burn rate)
    source: LimitSource
    runs_out_at: datetime | None = None  # spent at this time if running servers keep running
    retry_at: datetime | None = None  # used up: has room again at this time if servers stop now
    granted_hours: Decimal = Decimal(0)
    credited_hours: Decimal = Decimal(0)
    grants: tuple = ()  # active ledger.core.grants.Grant records, limit_hours includes them

    @property
    def policy_limit_hours(self) -> Decimal | None:
        return None if self.limit_hours is None else self.limit_hours - self.granted_hours

    @property
    def unit(self) -> str:
        return resource(self.resource).hours_unit

    @property
    def remaining_hours(self) -> Decimal | None:
        if self.limit_hours is None:
            return None
        return max(Decimal(0), self.limit_hours - self.used_hours)

    @property
    def percent_used(self) -> float | None:
        if self.limit_hours is None:
            return None
        if self.limit_hours == 0:
            return 100.0 if self.used_hours > 0 else 0.0
        return float(self.used_hours / self.limit_hours * 100)

    @property
    def burn_per_hour(self) -> Decimal:
        """Resource-hours added per hour while the running servers keep running."""
        return resource(self.resource).to_display(self.running)

    @property
    def state(self) -> str:
        """ok | near (≥ 80 %) | over (≥ 100 %) | none (limit 0) | unlimited."""
        percent = self.percent_used
        if percent is None:
            return "unlimited"
        if self.limit_hours == 0:
            return "none"
        if percent >= 100:
            return "over"
        return "near" if percent >= NEAR_LIMIT_PERCENT else "ok"

    def to_json(self) -> dict:
        percent = self.percent_used
        return {
            "resource": self.resource,
            "unit": self.unit,
            "used": json_number(self.used_hours),
            "limit": json_number(self.limit_hours),
            "remaining": json_number(self.remaining_hours),
            "percent_used": None if percent is None else round(percent, 2),
            "state": self.state,
            "window_seconds": self.window_seconds,
            "running": json_number(resource(self.resource).to_display(self.running)),
            "running_unit": resource(self.resource).display_unit,
            "burn_per_hour": json_number(self.burn_per_hour),
            "runs_out_at": iso(self.runs_out_at),
            "retry_at": iso(self.retry_at),
            "limit_source": self.source.to_json(),
            "policy_limit": json_number(self.policy_limit_hours),
            "granted": json_number(self.granted_hours),
            "credited": json_number(self.credited_hours),
            "grants": [
                {
                    "id": g.id,
                    "amount": json_number(g.amount_hours),
                    "ends_at": iso(g.effective_end),
                    "reason": g.reason,
                    "granted_by": g.granted_by,
                }
                for g in self.grants
            ],
        }


def intervals_of(rows: Sequence[SegmentRow], name: str, now_us: int) -> list[usage.Interval]:
    """The segments' intervals of one resource that started before ``now``."""
    return [
        (r.started_at_us, r.ended_at_us, int(r.amounts.get(name, 0)))
        for r in rows
        if r.amounts.get(name) and r.started_at_us < now_us
    ]


def resource_usage(
    name: str,
    budget,
    window_seconds: int,
    now: datetime,
    *,
    used_base_us: int,
    running: int,
    intervals: Sequence[usage.Interval] | None,
    policy_groups: Sequence[str] = (),
    adjustments: ledger_grants.Adjustments | None = None,
) -> ResourceUsage:
    """The record of ``name`` given its exact recorded usage (base-unit·µs) and what runs now.

    ``budget`` is the policy ``Budget`` that applies, or None (unlimited). ``intervals`` are
    needed only for the two times; without them (the all-users report's aggregate) both are
    None: the caller fills them for the records where :func:`needs_times`. ``adjustments``:
    the user's grants and credits (ledger.core.grants); they count only where a budget does.
    """
    terms = RecordTerms.of(name, budget, window_seconds, now, policy_groups, adjustments)
    runs_out_at = retry_at = None
    if budget is not None and intervals is not None:
        res = terms.res
        now_us = to_us(now)
        window_us = window_seconds * MICROSECONDS_PER_SECOND
        steps = (adjustments or ledger_grants.NO_ADJUSTMENTS).steps(
            name, res.from_hours(budget.limit_hours), now, window_us
        )
        limit = res.from_hours(terms.limit_hours)
        history = usage.RawHistory(list(intervals), now_us)
        if limit > 0 and running > 0:
            reach = ledger_grants.first_reaching(history, window_us, steps)
            runs_out_at = None if reach is None else from_us(_floor_to_second(reach))
        if limit > 0 and used_base_us >= steps.now_limit:
            below = ledger_grants.first_below_stopped(history, window_us, steps)
            retry_at = None if below is None else from_us(ceil_to_second(below))
    return terms.record(used_base_us, running, runs_out_at, retry_at)


@dataclass(frozen=True)
class RecordTerms:
    """What the records of one resource share for users with the same budget, window and
    grants and credits at ``now``: the limit and where it came from. The all-users report
    makes one per group combination and resource (users without grants or credits) and
    :meth:`record` per user; :func:`resource_usage` is the same for one user."""

    name: str
    res: Resource
    window_seconds: int
    limit_hours: Decimal | None
    source: LimitSource
    adjusted: ledger_grants.BudgetAdjustment

    @classmethod
    def of(
        cls,
        name: str,
        budget,
        window_seconds: int,
        now: datetime,
        policy_groups: Sequence[str] = (),
        adjustments: ledger_grants.Adjustments | None = None,
    ) -> RecordTerms:
        adjusted = ledger_grants.NO_BUDGET_ADJUSTMENT
        if budget is not None and adjustments:
            adjusted = ledger_grants.BudgetAdjustment.of(adjustments, name, now, window_seconds)
        return cls(
            name,
            resource(name),
            window_seconds,
            None if budget is None else Decimal(budget.limit_hours) + adjusted.granted_hours,
            LimitSource.of_budget(None if budget is None else budget.source, policy_groups),
            adjusted,
        )

    def __post_init__(self) -> None:
        # What every record of these terms holds but its usage, and the one record of no
        # usage with nothing running (most users' gpu): record() copies the one, returns the
        # other (records are frozen, so users may share it).
        adjusted = self.adjusted
        fields = {
            "resource": self.name,
            "used_hours": None,
            "limit_hours": self.limit_hours,
            "window_seconds": self.window_seconds,
            "running": 0,
            "source": self.source,
            "runs_out_at": None,
            "retry_at": None,
            "granted_hours": adjusted.granted_hours,
            "credited_hours": adjusted.credited_hours,
            "grants": adjusted.grants,
        }
        object.__setattr__(self, "_fields", fields)
        object.__setattr__(self, "_unused", None)
        object.__setattr__(self, "_credited", adjusted.credited_hours or None)
        object.__setattr__(self, "_to_hours", self.res.to_hours)

    def record(
        self,
        used_base_us: int,
        running: int,
        runs_out_at: datetime | None = None,
        retry_at: datetime | None = None,
    ) -> ResourceUsage:
        """The record given the exact recorded usage (base-unit·µs) and what runs now.

        Built with every field set at once: a frozen dataclass's ``__init__`` sets each field
        through ``object.__setattr__``
        (https://docs.python.org/3/library/dataclasses.html#frozen-instances), a third of the
        all-users report's Python for its ~26k records. Same record (tests/test_usage_model.py).
        """
        unused = not used_base_us and not running and runs_out_at is None and retry_at is None
        if unused and self._unused is not None:
            return self._unused
        used_hours = self._to_hours(used_base_us)
        if self._credited is not None:
            used_hours -= self._credited
        fields = self._fields.copy()
        fields["used_hours"] = used_hours
        fields["running"] = running
        if runs_out_at is not None or retry_at is not None:
            fields["runs_out_at"] = runs_out_at
            fields["retry_at"] = retry_at
        record = object.__new__(ResourceUsage)
        object.__setattr__(record, "__dict__", fields)
        if unused:
            object.__setattr__(self, "_unused", record)
        return record


def needs_times(r: ResourceUsage) -> bool:
    """Whether the record may have a run-out or retry time (then it needs the segments):
    a positive limit, and something running or the limit reached."""
    if r.limit_hours is None or r.limit_hours <= 0:
        return False
    return r.running > 0 or r.used_hours >= r.limit_hours


def resources_from_segments(
    limits,
    rows: Sequence[SegmentRow],
    now: datetime,
    names: Iterable[str],
    default_window_seconds: int,
    adjustments: ledger_grants.Adjustments | None = None,
) -> dict[str, ResourceUsage]:
    """Every resource in ``names`` for a user whose segments in the window are ``rows``
    (and whose grants and credits are ``adjustments``)."""
    now_us = to_us(now)
    out = {}
    for name in names:
        budget = limits.budgets.get(name)
        window = budget.window_seconds if budget else default_window_seconds
        intervals = intervals_of(rows, name, now_us)
        out[name] = resource_usage(
            name,
            budget,
            window,
            now,
            used_base_us=usage.window_usage(intervals, now_us, window * MICROSECONDS_PER_SECOND),
            running=usage.burn_rate(intervals, now_us),
            intervals=intervals,
            policy_groups=limits.groups,
            adjustments=adjustments,
        )
    return out


def running_servers(rows: Sequence[SegmentRow], now: datetime) -> list[dict]:
    """The servers running at ``now`` with what they hold (base units), by name:
    ``[{"servername": "", "cpu": 2000, "memory": 4294967296}]``."""
    now_us = to_us(now)
    running: dict[str, dict[str, int]] = {}
    for r in rows:
        if r.started_at_us <= now_us and (r.ended_at_us is None or r.ended_at_us > now_us):
            held = running.setdefault(r.servername, {})
            for name, amount in r.amounts.items():
                if amount:
                    held[name] = held.get(name, 0) + int(amount)
    return [{"servername": name, **running[name]} for name in sorted(running)]


def servers_json(servers: Sequence[dict]) -> list[dict]:
    """:func:`running_servers` in display units (CPUs, GiB, GPUs)."""
    return [
        {
            "servername": s["servername"],
            **json_amounts({k: v for k, v in s.items() if k != "servername"}),
        }
        for s in servers
    ]


def max_percent(resources: Iterable[ResourceUsage]) -> float:
    values = [r.percent_used for r in resources if r.percent_used is not None]
    return max(values) if values else 0.0


def user_json(
    username: str,
    at: datetime,
    membership: Membership,
    resources: Mapping[str, ResourceUsage],
    running_servers: int,
) -> dict:
    """The keys every per-user JSON object starts with (check, usage, report, the API)."""
    return {
        "username": username,
        "at": iso(at),
        **membership.to_json(),
        "running_servers": running_servers,
        "max_percent_used": round(max_percent(resources.values()), 2),
        "resources": {n: r.to_json() for n, r in resources.items()},
    }
