"""May this user start (or keep running) a server of this size? Pure arithmetic, no I/O.

Rules (docs/accounting.md has the long form):
- A budget with limit 0 forbids asking for that resource: denied if the request asks for it.
- A budget is used up when used ≥ limit. It denies the request when the request asks for
  that resource, or — with the policy's default ``exhausted_budget_blocks: any`` — always.
- A concurrent cap (``running:``) denies when what runs now plus the request exceeds it.
  Servers with the requested server's name are not counted as running: a restart replaces
  the old pod, which the collector may not have closed yet.
- ``unlisted_users: deny`` denies everyone in no listed group.

``retry_at`` is the first whole second at which every used-up budget has room again,
assuming the user's running servers stop now; null when waiting cannot help (a zero limit, a
request larger than a cap) or when only a cap blocks (stopping a server helps, not waiting).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from ledger.core import grants as ledger_grants
from ledger.core import usage
from ledger.core.json_form import json_amounts, json_number
from ledger.core.quantities import format_amount, format_duration, format_hours, to_base_units
from ledger.core.resources import MICROSECONDS_PER_SECOND, SERVERS, display_order, resource

# µs times live in ledger.core.times; EPOCH, to_us and from_us stay importable from here
from ledger.core.times import EPOCH, from_us, iso, to_us  # noqa: F401


def ceil_to_second(at_us: int) -> int:
    return -(-at_us // MICROSECONDS_PER_SECOND) * MICROSECONDS_PER_SECOND


@dataclass(frozen=True)
class ServerRequest:
    """The server being asked for, in base units: {"cpu": 2000, "memory": 4 GiB, "gpu": 1}."""

    amounts: Mapping[str, int] = field(default_factory=dict)
    servername: str = ""

    @classmethod
    def from_quantities(
        cls, quantities: Mapping[str, object], servername: str = "", *, where: str = "{name}"
    ) -> ServerRequest:
        """From Kubernetes quantities: ``{"cpu": "500m", "memory": "4Gi", "gpu": 1}``.

        A bad quantity raises QuantityError naming ``where`` (``{name}`` is the resource).
        """
        amounts = {
            name: to_base_units(name, value, where=where.format(name=name))
            for name, value in quantities.items()
            if value is not None
        }
        return cls(amounts, servername=servername)

    def get(self, name: str) -> int:
        return int(self.amounts.get(name, 0))

    @property
    def sized(self) -> bool:
        return any(v > 0 for v in self.amounts.values())

    def describe(self) -> str:
        parts = [format_amount(n, self.get(n)) for n in display_order(self.amounts) if self.get(n)]
        return ", ".join(parts) if parts else "a server of unspecified size"


@dataclass(frozen=True)
class SegmentRow:
    """What the decision needs of one segment (a row of the per-user query)."""

    started_at_us: int
    ended_at_us: int | None
    servername: str
    amounts: Mapping[str, int]


@dataclass
class BudgetStatus:
    resource: str
    limit_hours: Decimal
    window_seconds: int
    source: str
    used_hours: Decimal
    remaining_hours: Decimal
    percent_used: float
    burn_per_hour: Decimal  # resource-hours per hour the running servers add (their size)
    requested: int  # base units
    run_seconds: int | None  # how long the requested server could run; None = no end in sight
    retry_at: datetime | None
    blocks: str | None  # None | "zero_limit" | "used_up"
    # limit_hours is the policy limit plus these active grants; used_hours is net of credits
    granted_hours: Decimal = Decimal(0)
    credited_hours: Decimal = Decimal(0)
    grants: tuple = ()  # the active ledger.core.grants.Grant records

    def to_json(self) -> dict:
        """What this decision found for the budget; its usage figures are the usage model's
        (``ledger.core.usage_model.ResourceUsage``), not repeated here."""
        return {
            "requested": json_number(resource(self.resource).to_display(self.requested)),
            "run_seconds": self.run_seconds,
            "retry_at": iso(self.retry_at),
            "blocks": self.blocks,
            "grant_ids": [g.id for g in self.grants],
        }


@dataclass
class CapStatus:
    resource: str  # cpu | memory | gpu | <extended> | servers
    cap: int
    running: int
    requested: int
    blocks: bool

    def to_json(self) -> dict:
        def show(v: int) -> float | int | None:
            return (
                v
                if self.resource == SERVERS
                else json_number(resource(self.resource).to_display(v))
            )

        return {
            "resource": self.resource,
            "cap": show(self.cap),
            "running": show(self.running),
            "requested": show(self.requested),
            "blocks": self.blocks,
        }


@dataclass
class Decision:
    username: str
    at: datetime
    allowed: bool
    reasons: list[str]  # "used_up:memory", "zero_limit:gpu", "running:gpu", "unlisted"
    budgets: dict[str, BudgetStatus]
    caps: dict[str, CapStatus]
    request: ServerRequest
    groups: tuple[str, ...]
    retry_at: datetime | None
    run_seconds: int | None
    suggestion: dict[str, int] | None  # a smaller server that would be allowed, base units
    message: str
    # group pools and hub caps (ledger.core.shared_capacity.SharedStatus), when the policy has any
    shared: object | None = None

    @property
    def reason(self) -> str:
        return self.reasons[0] if self.reasons else "ok"

    def to_json(self) -> dict:
        """The decision's own fields (the decision log's ``detail``; ``check --format json``
        adds the usage model's per-user keys, docs/cli.md)."""
        return {
            "username": self.username,
            "at": iso(self.at),
            "allowed": self.allowed,
            "reasons": self.reasons,
            "retry_at": iso(self.retry_at),
            "run_seconds": self.run_seconds,
            "policy_groups": list(self.groups),
            "request": json_amounts(self.request.amounts),
            "servername": self.request.servername,
            "budgets": {n: b.to_json() for n, b in self.budgets.items()},
            "caps": {n: c.to_json() for n, c in self.caps.items()},
            "suggestion": None if self.suggestion is None else json_amounts(self.suggestion),
            "message": self.message,
            "shared": None if self.shared is None else self.shared.to_json(),
        }


def _intervals(rows: Sequence[SegmentRow], name: str, now_us: int) -> list[usage.Interval]:
    out = []
    for row in rows:
        rate = int(row.amounts.get(name, 0))
        if rate and row.started_at_us < now_us:
            out.append((row.started_at_us, row.ended_at_us, rate))
    return out


def _running_rows(rows: Sequence[SegmentRow], now_us: int, servername: str) -> list[SegmentRow]:
    return [
        r
        for r in rows
        if r.started_at_us <= now_us
        and (r.ended_at_us is None or r.ended_at_us > now_us)
        and r.servername != servername
    ]


def evaluate(
    username: str,
    limits,
    rows: Sequence[SegmentRow],
    request: ServerRequest,
    now: datetime,
    *,
    exhausted_budget_blocks: str = "any",
    histories: Mapping[str, usage.UsageHistory] | None = None,
    adjustments: ledger_grants.Adjustments | None = None,
) -> Decision:
    """The decision for ``request`` given the user's segments and effective limits (policy).

    ``rows`` must hold at least the segments running at ``now`` (caps and burn rate). Usage
    comes from ``histories`` (per resource, e.g. rollup-based) when given, else from ``rows``,
    which must then hold every segment in the longest window. ``adjustments``: the user's
    grants (added to the limit while valid) and credits (negative usage inside the window),
    ledger.core.grants.
    """
    adjustments = adjustments or ledger_grants.NO_ADJUSTMENTS
    now_us = to_us(now)
    reasons: list[str] = []
    budgets: dict[str, BudgetStatus] = {}
    waiting_helps = True
    retry_candidates: list[int] = []
    run_candidates: list[int] = []
    suggestion = dict(request.amounts)
    running_rows = _running_rows(rows, now_us, request.servername)

    for name in display_order(limits.budgets):
        budget = limits.budgets[name]
        res = resource(name)
        window_us = budget.window_seconds * MICROSECONDS_PER_SECOND
        adjusted = ledger_grants.BudgetAdjustment.of(adjustments, name, now, budget.window_seconds)
        limit_hours = Decimal(budget.limit_hours) + adjusted.granted_hours
        policy_limit = res.from_hours(budget.limit_hours)
        limit = res.from_hours(limit_hours) if adjusted.granted_hours else policy_limit
        steps = adjustments.steps(name, policy_limit, now, window_us)
        if histories is None:
            history = usage.RawHistory(_intervals(rows, name, now_us), now_us)
        else:
            history = histories.get(name) or usage.RawHistory([], now_us)
        recorded = history.used(window_us)
        credited = res.from_hours(adjusted.credited_hours) if adjusted.credited_hours else 0
        used = recorded - credited
        requested = request.get(name)
        burn = sum(int(r.amounts.get(name, 0)) for r in running_rows)
        blocks = None
        retry_at = None
        if limit <= 0:
            if requested > 0:
                blocks = "zero_limit"
                waiting_helps = False
                suggestion[name] = 0
        elif recorded >= steps.now_limit and (
            requested > 0 or exhausted_budget_blocks == "any" or not request.sized
        ):
            blocks = "used_up"
            below_us = ledger_grants.first_below_stopped(history, window_us, steps)
            if below_us is None:
                waiting_helps = False
            else:
                retry_us = ceil_to_second(below_us)
                retry_at = from_us(retry_us)
                retry_candidates.append(retry_us)
        run_seconds = None
        if blocks is None and requested > 0 and limit > 0:
            reach_us = ledger_grants.first_reaching(history, window_us, steps, requested)
            if reach_us is not None:
                run_seconds = (reach_us - now_us) // MICROSECONDS_PER_SECOND
                run_candidates.append(run_seconds)
        if blocks:
            reasons.append(f"{blocks}:{name}")
        used_hours = res.to_hours(recorded) - adjusted.credited_hours
        budgets[name] = BudgetStatus(
            resource=name,
            limit_hours=limit_hours,
            window_seconds=budget.window_seconds,
            source=budget.source,
            used_hours=used_hours,
            remaining_hours=max(Decimal(0), limit_hours - used_hours),
            percent_used=float(used_hours / limit_hours * 100)
            if limit_hours
            else (100.0 if used > 0 else 0.0),
            burn_per_hour=res.to_display(burn),
            requested=requested,
            run_seconds=run_seconds,
            retry_at=retry_at,
            blocks=blocks,
            granted_hours=adjusted.granted_hours,
            credited_hours=adjusted.credited_hours,
            grants=adjusted.grants,
        )

    caps: dict[str, CapStatus] = {}
    for name in display_order(limits.running):
        cap = int(limits.running[name])
        if name == SERVERS:
            running_now, requested = len({r.servername for r in running_rows}), 1
        else:
            running_now = sum(int(r.amounts.get(name, 0)) for r in running_rows)
            requested = request.get(name)
        blocks = requested > 0 and running_now + requested > cap
        caps[name] = CapStatus(name, cap, running_now, requested, blocks)
        if blocks:
            reasons.append(f"running:{name}")
            if requested > cap:
                waiting_helps = False  # too big even with nothing else running
            if suggestion is not None and name != SERVERS:
                suggestion[name] = max(0, cap - running_now)

    if limits.denied_all:
        reasons.insert(0, "unlisted")
        waiting_helps = False

    allowed = not reasons
    only_caps = reasons and all(r.startswith("running:") for r in reasons)
    retry_at = None
    if not allowed and waiting_helps and retry_candidates and not only_caps:
        retry_at = from_us(max(retry_candidates))
    if any(r.startswith("used_up:") for r in reasons) or limits.denied_all:
        suggestion = None  # a smaller server does not help with a spent budget
    elif suggestion == dict(request.amounts) or any(
        request.get(n) > 0 and suggestion.get(n, 0) == 0 for n in ("cpu", "memory")
    ):
        suggestion = None  # no smaller server to offer: a server needs some cpu and memory
    decision = Decision(
        username=username,
        at=now,
        allowed=allowed,
        reasons=reasons,
        budgets=budgets,
        caps=caps,
        request=request,
        groups=tuple(limits.groups),
        retry_at=retry_at,
        run_seconds=min(run_candidates) if run_candidates else None,
        suggestion=None if allowed else suggestion,
        message="",
    )
    decision.message = describe(decision)
    return decision


def _window_text(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    return f"{days} days" if not rest else format_duration(seconds)


def describe(decision: Decision) -> str:
    """One paragraph a scientist understands. Times in UTC; the hub renders local time."""
    lines = []
    if "unlisted" in decision.reasons:
        lines.append("Your account is not in any group that has a compute quota on this hub.")
    for b in decision.budgets.values():
        window = _window_text(b.window_seconds)
        if b.blocks == "zero_limit":
            lines.append(
                f"Your quota does not include {resource(b.resource).display_unit}s "
                f"({b.resource} limit is 0), and this server asks for "
                f"{format_amount(b.resource, b.requested)}."
            )
        elif b.blocks == "used_up":
            extra = ledger_grants.adjustment_text(b.resource, b.grants, b.credited_hours)
            lines.append(
                f"You have used {format_hours(b.resource, b.used_hours)} of your "
                f"{format_hours(b.resource, b.limit_hours)} of {b.resource} "
                f"in the last {window}{f' ({extra})' if extra else ''}."
            )
    for c in decision.caps.values():
        if c.blocks:
            if c.resource == SERVERS:
                lines.append(f"You already have {c.running} of at most {c.cap} servers running.")
            else:
                lines.append(
                    f"Your running servers hold {format_amount(c.resource, c.running)}; "
                    f"with this one that would be more than your cap of "
                    f"{format_amount(c.resource, c.cap)} at a time."
                )
    if decision.allowed:
        parts = []
        for b in decision.budgets.values():
            if b.limit_hours == 0 and b.used_hours == 0:
                continue  # "0 of 0 GPU-hours" says nothing: that resource is not offered
            used_number = format_hours(b.resource, b.used_hours).split(" ")[0]
            parts.append(
                f"{used_number} of {format_hours(b.resource, b.limit_hours)} used in the last "
                f"{_window_text(b.window_seconds)}"
            )
        text = "Quota: " + "; ".join(parts) + "." if parts else "No quota limits apply."
        if decision.run_seconds is not None and decision.request.sized:
            text += (
                f" This {decision.request.describe()} server can run about "
                f"{format_duration(decision.run_seconds)}."
            )
        return text
    if decision.retry_at is not None:
        lines.append(
            f"You can start this server again at {decision.retry_at:%Y-%m-%d %H:%M:%S} UTC, "
            "when enough of your usage has left the rolling window."
        )
    if decision.suggestion:
        smaller = ServerRequest(decision.suggestion).describe()
        lines.append(f"A smaller server ({smaller}) would be allowed now.")
    if any(r.startswith("running:") for r in decision.reasons):
        lines.append("Stopping one of your running servers frees its share.")
    return " ".join(lines)
