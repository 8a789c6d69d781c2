"""Shared capacity: group pools and hub-wide caps. Pure: the model, the rule, the arithmetic.

A group's ``pool:`` limits what the group's members use *together*: budgets over the same
rolling windows as a user's (``gpu: 500 GPU-hours``) and concurrent caps
(``running: {gpu: 4, servers: 30}``). The top-level ``hub: {running: {...}}`` caps what the
whole hub runs at once.

The multi-group rule: a user in several groups with pools is counted in **every** one of
them, and **every** pool of every policy group the user is in must allow the spawn (unlike a
user's own limits, pools never combine by ``combine:``: each pool is its own shared
capacity). Pools apply to the groups the hub reports for the user; the ``unlisted_users``
fallback group gives a user that group's own limits, not a share of its pool.

What counts as in use, for a cap: the running segments of the scope's users (the hub: all
users) plus the live leases (ledger/store/leases.py) — a spawn that passed the caps holds a
lease for its size until the collector records its server, so two spawns racing for the last
GPU cannot both pass. A server restarting under the same name is not counted twice.

``wait:`` says which caps a refused spawn may wait for instead of failing (default: gpu).

A pool's budget moves with the grants and credits given to the group (ledger/core/grants.py:
the same step-function limit as a user's). A spent pool budget has a retry time found by the
user's rule: the first whole second at which the pool's usage is below its limit again if
the servers its members run now stopped now (ledger/store/pool_history.py reads it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from ledger.core import grants as ledger_grants
from ledger.core.json_form import json_number
from ledger.core.quantities import format_amount, format_hours
from ledger.core.resources import SERVERS, display_order, resource
from ledger.core.times import from_us, iso

__all__ = [
    "DEFAULT_WAIT",
    "POOL_BUDGET_RESOURCES",
    "PoolBudget",
    "ScopeCheck",
    "SharedLimits",
    "SharedStatus",
    "SharedUsage",
    "budget_steps",
    "evaluate_shared",
    "pools_for",
]

DEFAULT_WAIT = frozenset({"gpu"})
# Pool budgets are summed from the per-day rollups' core columns (usage_rollups).
POOL_BUDGET_RESOURCES = ("cpu", "memory", "gpu")
HUB = "hub"
POOL = "pool"
USER = "user"


@dataclass(frozen=True)
class PoolBudget:
    limit_hours: Decimal  # the resource's hours unit
    window_seconds: int | None  # None: the policy's window


@dataclass(frozen=True)
class SharedLimits:
    """One ``pool:`` (of a group) or the ``hub:`` section."""

    budgets: dict[str, PoolBudget] = field(default_factory=dict)
    running: dict[str, int] = field(default_factory=dict)  # base units; servers: count
    wait: frozenset[str] = DEFAULT_WAIT

    @property
    def empty(self) -> bool:
        return not (self.budgets or self.running)


def pools_for(pools: Mapping[str, SharedLimits], groups: Iterable[str]) -> list[str]:
    """The groups whose pools apply to a user in ``groups`` (every one of them), sorted."""
    return sorted({g for g in groups if g in pools and not pools[g].empty})


@dataclass
class SharedUsage:
    """What the store read, per scope: ``running`` and ``by_user`` keyed by (level, scope) —
    (HUB, HUB), (POOL, group name), (USER, USER) — because a JupyterHub group may be named
    "hub" or "user"; ``used``, ``adjustments`` and ``retry_us`` (pools only) by group name.

    ``running``: base units (and ``servers``) held by running segments plus live leases,
    without the requested server itself. ``used``: base-unit·µs over each budget's window,
    keyed by (resource, window seconds). ``by_user``: who holds what (for admins' messages).
    """

    running: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)
    used: dict[str, dict[tuple[str, int], int]] = field(default_factory=dict)
    by_user: dict[tuple[str, str], dict[str, dict[str, int]]] = field(default_factory=dict)
    own_leases: dict[str, int] = field(default_factory=dict)  # the user's own live leases
    at: datetime | None = None  # the instant read (grants and credits count relative to it)
    # per group: the pool's grants and credits (ledger.core.grants.Adjustments)
    adjustments: dict[str, ledger_grants.Adjustments] = field(default_factory=dict)
    # per group, (resource, window seconds) → epoch µs of a spent budget's retry, None: never
    retry_us: dict[str, dict[tuple[str, int], int | None]] = field(default_factory=dict)


def budget_steps(
    budget: PoolBudget, name: str, adjustments, at: datetime, default_window_seconds: int
) -> tuple[int, ledger_grants.LimitSteps]:
    """A pool budget's window and its limit from ``at`` on: the policy's limit plus the
    group's grants while valid plus its credits inside the window (ledger.core.grants)."""
    window = budget.window_seconds or default_window_seconds
    limit = resource(name).from_hours(budget.limit_hours)
    adjustments = adjustments or ledger_grants.NO_ADJUSTMENTS
    return window, adjustments.steps(name, limit, at, window * 1_000_000)


@dataclass
class ScopeCheck:
    """One limit of one scope, as this spawn meets it."""

    level: str  # user | pool | hub
    scope: str  # username, group name, or "hub"
    resource: str
    kind: str  # running | budget
    limit: int  # cap in base units (servers: count) or budget in base-unit·µs
    in_use: int
    requested: int
    blocks: str | None  # None | "running" | "used_up" | "zero_limit"
    waitable: bool
    window_seconds: int | None = None
    holders: dict[str, int] = field(default_factory=dict)  # user → amount (running caps)
    # budgets: when a spent one has room again (None: never, or not spent); what grants add
    # to ``limit`` and credits take from ``in_use`` (base-unit·µs), and the active grants
    retry_at: datetime | None = None
    granted: int = 0
    credited: int = 0
    grants: tuple = ()

    @property
    def reason(self) -> str:
        where = self.level if self.level != POOL else f"pool:{self.scope}"
        return f"{where}_{self.blocks}:{self.resource}"

    def show(self, amount: int) -> float | int | None:
        if self.kind == "budget":
            return json_number(resource(self.resource).to_hours(amount))
        if self.resource == SERVERS:
            return amount
        return json_number(resource(self.resource).to_display(amount))

    def ranked_holders(self) -> list[tuple[str, float | int | None]]:
        """Who holds this cap, most first (then by name), in the check's display units."""
        ranked = sorted(self.holders.items(), key=lambda kv: (-kv[1], kv[0]))
        return [(user, self.show(amount)) for user, amount in ranked]

    def to_json(self, *, admin: bool = False) -> dict:
        out = {
            "level": self.level,
            "scope": self.scope,
            "resource": self.resource,
            "kind": self.kind,
            "limit": self.show(self.limit),
            "in_use": self.show(self.in_use),
            "requested": self.show(self.requested) if self.kind == "running" else None,
            "window_seconds": self.window_seconds,
            "blocks": self.blocks,
            "waitable": self.waitable,
        }
        if self.kind == "budget":
            out["retry_at"] = iso(self.retry_at)
            out["granted"] = self.show(self.granted)
            out["credited"] = self.show(self.credited)
            out["grant_ids"] = [g.id for g in self.grants]
        if admin:
            out["holders"] = {u: self.show(v) for u, v in sorted(self.holders.items())}
        return out

    def describe(self) -> str:
        """ "your group's (gpu-dev) pool: 4 of 4 GPUs in use" — the bottleneck, for people."""
        owner = {USER: "your", POOL: f"the {self.scope} group's pool", HUB: "this hub"}[self.level]
        if self.kind == "budget":
            used = format_hours(self.resource, resource(self.resource).to_hours(self.in_use))
            limit = format_hours(self.resource, resource(self.resource).to_hours(self.limit))
            days = (self.window_seconds or 0) // 86400
            if self.blocks == "zero_limit":
                return f"{owner} has no {self.resource} budget (limit 0)"
            credited = resource(self.resource).to_hours(self.credited)
            extra = ledger_grants.adjustment_text(self.resource, self.grants, credited)
            text = f"{owner} has used {used} of its {limit} in the last {days} days"
            if extra:
                text += f" ({extra})"
            if self.blocks == "used_up" and self.retry_at is not None:
                text += f"; it has room again at {self.retry_at:%Y-%m-%d %H:%M:%S} UTC"
            return text
        cap = format_amount(self.resource, self.limit)
        # "3 of 4 GPUs"; amounts with a unit of their own stay whole: "12 GiB of 2 TiB"
        in_use = (
            format_amount(self.resource, self.in_use)
            if self.resource in ("cpu", "memory")
            else str(self.in_use)
        )
        if self.level == USER:
            return f"{in_use} of your cap of {cap} in use (servers that are starting included)"
        return f"{in_use} of {cap} in use {'on' if self.level == HUB else 'in'} {owner}"


@dataclass
class SharedStatus:
    """Every shared limit this spawn meets, and which of them refuse it."""

    checks: list[ScopeCheck] = field(default_factory=list)
    pools: tuple[str, ...] = ()

    @property
    def blocking(self) -> list[ScopeCheck]:
        return [c for c in self.checks if c.blocks]

    @property
    def allowed(self) -> bool:
        return not self.blocking

    @property
    def may_wait(self) -> bool:
        """Refused only by caps that allow waiting (a spent budget never waits)."""
        blocking = self.blocking
        return bool(blocking) and all(c.blocks == "running" and c.waitable for c in blocking)

    @property
    def bottleneck(self) -> ScopeCheck | None:
        """The first refusing limit, hub before pool before user (the widest scope first)."""
        order = {HUB: 0, POOL: 1, USER: 2}
        blocking = sorted(self.blocking, key=lambda c: (order[c.level], c.scope, c.resource))
        return blocking[0] if blocking else None

    def summary(self, request: Mapping[str, int]) -> str:
        """The shared caps this server draws on, for the progress line of an allowed spawn."""
        parts = [
            c.describe()
            for c in self.checks
            if c.kind == "running"
            and c.level != USER
            and _requested(request, c.resource)
            and c.resource != SERVERS
        ]
        return f"Shared: {'; '.join(parts)}." if parts else ""

    def reasons(self) -> list[str]:
        return [c.reason for c in self.blocking]

    def message(self) -> str:
        lines = []
        for c in self.blocking:
            if c.kind == "running":
                lines.append(
                    f"Not enough {c.resource} free: {c.describe()}, and this server asks "
                    f"for {format_amount(c.resource, c.requested)}."
                )
            else:
                lines.append(f"Shared budget: {c.describe()}.")
        return " ".join(lines)

    def to_json(self, *, admin: bool = False) -> dict:
        neck = self.bottleneck
        return {
            "pools": list(self.pools),
            "checks": [c.to_json(admin=admin) for c in self.checks],
            "bottleneck": None if neck is None else neck.to_json(admin=admin),
            "may_wait": self.may_wait,
        }


def _requested(request: Mapping[str, int], name: str) -> int:
    return 1 if name == SERVERS else int(request.get(name, 0))


def evaluate_shared(
    username: str,
    user_running: Mapping[str, int],
    pools: Mapping[str, SharedLimits],
    hub: SharedLimits,
    request: Mapping[str, int],
    usage: SharedUsage,
    *,
    window_seconds: int,
    exhausted_budget_blocks: str = "any",
) -> SharedStatus:
    """Which shared limits (and the user's own caps, counting leases) refuse ``request``.

    ``user_running`` is the user's own ``running:`` caps (``EffectiveLimits.running``): the
    user's running segments are counted there already (``ledger.core.decision``); here only
    their live leases are added, so a user's own racing spawns cannot pass either.
    """
    sized = any(int(v) > 0 for v in request.values())
    checks: list[ScopeCheck] = []
    user_now = usage.running.get((USER, USER), {})
    for name in display_order(user_running):
        leased = usage.own_leases.get(name, 0)
        asked = _requested(request, name)
        if not leased or not asked:
            continue
        cap, held = int(user_running[name]), user_now.get(name, 0)
        blocks = "running" if held + asked > cap else None
        checks.append(ScopeCheck(USER, username, name, "running", cap, held, asked, blocks, False))
    scopes = [(POOL, g, pools[g]) for g in pools_for(pools, pools)] + [(HUB, HUB, hub)]
    for level, scope, limits in scopes:
        running = usage.running.get((level, scope), {})
        for name in display_order(limits.running):
            asked = _requested(request, name)
            cap, held = int(limits.running[name]), running.get(name, 0)
            blocks = "running" if asked and held + asked > cap else None
            # waiting cannot help a server larger than the whole cap
            waitable = name in limits.wait and asked <= cap
            holders = {
                u: a[name] for u, a in usage.by_user.get((level, scope), {}).items() if a.get(name)
            }
            checks.append(
                ScopeCheck(
                    level,
                    scope,
                    name,
                    "running",
                    cap,
                    held,
                    asked,
                    blocks,
                    waitable,
                    holders=holders,
                )  # fmt: skip
            )
        for name in display_order(limits.budgets):
            budget = limits.budgets[name]
            adjustments = usage.adjustments.get(scope, ledger_grants.NO_ADJUSTMENTS)
            at = usage.at if usage.at is not None else from_us(0)  # no adjustments then
            window, steps = budget_steps(budget, name, adjustments, at, window_seconds)
            adjusted = ledger_grants.BudgetAdjustment.of(adjustments, name, at, window)
            res = resource(name)
            granted = res.from_hours(adjusted.granted_hours)
            credited = res.from_hours(adjusted.credited_hours)
            limit = res.from_hours(budget.limit_hours) + granted
            recorded = usage.used.get(scope, {}).get((name, window), 0)
            asked = int(request.get(name, 0))
            blocks, retry_at = None, None
            if limit <= 0:
                blocks = "zero_limit" if asked else None
            elif recorded >= steps.now_limit and (
                asked or exhausted_budget_blocks == "any" or not sized
            ):
                blocks = "used_up"
                retry_us = usage.retry_us.get(scope, {}).get((name, window))
                retry_at = None if retry_us is None else from_us(retry_us)
            checks.append(
                ScopeCheck(
                    level,
                    scope,
                    name,
                    "budget",
                    limit,
                    recorded - credited,
                    asked,
                    blocks,
                    False,
                    window,
                    retry_at=retry_at,
                    granted=granted,
                    credited=credited,
                    grants=adjusted.grants,
                )  # fmt: skip
            )
    return SharedStatus(checks, tuple(pools_for(pools, pools)))
