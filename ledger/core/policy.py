"""The quota policy: budgets per group over a rolling window, read from YAML admins edit.

A budget is resource-hours over a window (``memory: 60 GiB-hours``, or
``{limit: 60 GiB-hours, window: 7d}``); ``running:`` caps what a user may hold at once. A
resource a group does not name is unlimited for that group; a limit of 0 forbids it.

How a user's limits are worked out (``Policy.limits_for``), per resource:

1. The groups that count are the user's groups that the policy lists; others are ignored.
2. Several groups combine per ``combine``:

   - ``max`` (default): the most generous. A group that leaves the resource unlimited makes
     it unlimited. Otherwise the largest limit wins, with its own window; between equal
     limits the longer window wins (the same hours over a longer window is stricter).
   - ``min``: the strictest. Any group's limit applies; the smallest wins, ties again going
     to the longer window.
   - ``sum``: limits add up, over the longest window among them; unlimited if any group
     leaves it unlimited.

   Running caps combine the same way (max: any uncapped group → uncapped; min: smallest;
   sum: total, uncapped if any group is uncapped).
3. A user in none of the listed groups gets ``unlisted_users``: a group's limits (source
   ``unlisted:<group>``), ``unlimited`` (the default, so a first install denies no one), or
   ``deny`` (every request refused). A user named under ``users:`` is never denied as
   unlisted: their entry is their whole policy, and what it does not name is unlimited.
4. ``users:`` entries override, per resource, whatever the groups gave (``null`` there means
   unlimited for that user); resources the entry does not name still come from the groups.

A budget without its own window uses the policy's ``window`` (default 30d).

A group's ``pool:`` and the top-level ``hub:`` limit what users hold *together*; they are
``ledger.core.shared_capacity`` (its docstring has the multi-group rule).

The YAML is read by ``ledger.core.policy_yaml``; the file (and its hot reload) by
``ledger.store.policy_file``. How servers are sized for charging is ``Policy.accounting``
(``ledger.core.accounting``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from ledger.core.accounting import Accounting
from ledger.core.resources import display_order
from ledger.core.shared_capacity import SharedLimits

__all__ = [
    "Budget",
    "BudgetSpec",
    "EffectiveLimits",
    "Enforcement",
    "GroupLimits",
    "Messages",
    "Policy",
]

DEFAULT_WINDOW_SECONDS = 30 * 86400
COMBINE_CHOICES = ("max", "min", "sum")
UNLISTED_KEYWORDS = ("deny", "unlimited")
LEDGER_ERROR_CHOICES = ("deny", "allow")
EXHAUSTED_CHOICES = ("any", "requested")


@dataclass(frozen=True)
class BudgetSpec:
    """A budget as written in a group or user entry."""

    limit_hours: Decimal  # in the resource's hours unit (CPU-hours, GiB-hours, GPU-hours)
    window_seconds: int | None  # None: the policy's window


@dataclass(frozen=True)
class GroupLimits:
    """One ``groups:`` or ``users:`` entry. A None value: explicitly unlimited."""

    budgets: dict[str, BudgetSpec | None] = field(default_factory=dict)
    running: dict[str, int | None] = field(default_factory=dict)  # base units; servers: count


@dataclass(frozen=True)
class Budget:
    resource: str  # "cpu" | "memory" | "gpu" | extended short name
    limit_hours: Decimal  # in the resource's hours unit
    window_seconds: int
    source: str  # "group:power" | "user:alice" | "unlisted:regular" | "sum:dev+gpu-dev"


@dataclass(frozen=True)
class EffectiveLimits:
    budgets: dict[str, Budget]  # resources absent here are unlimited
    running: dict[str, int]  # concurrent caps in base units; keys cpu/memory/gpu/<ext>/servers
    groups: tuple[str, ...]  # the policy groups that applied (sorted), () if none
    unlisted: str | None  # None, or "deny"/"unlimited"/<group> when unlisted_users applied
    denied_all: bool  # True when unlisted_users == deny applied


@dataclass(frozen=True)
class Messages:
    contact: str = "Ask your hub admins for more quota."
    contact_url: str | None = None
    quota_page_url: str = "/services/quota/"


@dataclass(frozen=True)
class Enforcement:
    enabled: bool = True
    warn_at_percent: tuple[int, ...] = (80, 95)
    grace_seconds: int = 600
    interval_seconds: int = 60


@dataclass(frozen=True)
class Policy:
    window_seconds: int = DEFAULT_WINDOW_SECONDS
    combine: str = "max"
    unlisted_users: str = "unlimited"
    on_ledger_error: str = "deny"
    # any: a spent budget blocks every new server (a user over quota starts nothing);
    # requested: only servers asking for that resource (spent GPU-hours, CPU server still ok)
    exhausted_budget_blocks: str = "any"
    accounting: Accounting = field(default_factory=Accounting)
    groups: dict[str, GroupLimits] = field(default_factory=dict)
    users: dict[str, GroupLimits] = field(default_factory=dict)
    messages: Messages = field(default_factory=Messages)
    enforcement: Enforcement = field(default_factory=Enforcement)
    # shared capacity (ledger.core.shared_capacity): a group's members together; the hub
    pools: dict[str, SharedLimits] = field(default_factory=dict)
    hub: SharedLimits = field(default_factory=SharedLimits)
    source: str = "<string>"
    # limits_for's answers for users without limits of their own, by the policy groups they
    # are in: decide asks on every spawn and working one out costs ~20 µs (a policy is
    # never changed, a reload makes a new one)
    _limits_by_groups: dict[tuple[str, ...], EffectiveLimits] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def limits_for(self, username: str, groups: Iterable[str]) -> EffectiveLimits:
        """The budgets and running caps that apply to ``username`` in ``groups``."""
        listed = sorted({g for g in groups if g in self.groups})
        if username in self.users:
            return self._limits_for(username, listed)
        key = tuple(listed)
        found = self._limits_by_groups.get(key)
        if found is None:
            found = self._limits_by_groups[key] = self._limits_for(username, listed)
        # copies: a caller may change its dicts
        return EffectiveLimits(
            dict(found.budgets), dict(found.running), found.groups, found.unlisted,
            found.denied_all,
        )  # fmt: skip

    def _limits_for(self, username: str, listed: list[str]) -> EffectiveLimits:
        override = self.users.get(username)
        unlisted: str | None = None
        if listed:
            base = [(f"group:{g}", self.groups[g]) for g in listed]
        elif self.unlisted_users == "unlimited" or (
            self.unlisted_users == "deny" and override is not None
        ):
            base, unlisted = [], None if override is not None else "unlimited"
        elif self.unlisted_users == "deny":
            return EffectiveLimits({}, {}, (), "deny", True)
        else:
            listed, unlisted = [self.unlisted_users], self.unlisted_users
            base = [(f"unlisted:{unlisted}", self.groups[unlisted])]
        budgets = self._combine_budgets(base)
        running = self._combine_running(base)
        if override is not None:
            for name, spec in override.budgets.items():
                if spec is None:
                    budgets.pop(name, None)
                else:
                    window = spec.window_seconds or self.window_seconds
                    budgets[name] = Budget(name, spec.limit_hours, window, f"user:{username}")
            for name, cap in override.running.items():
                if cap is None:
                    running.pop(name, None)
                else:
                    running[name] = cap
        return EffectiveLimits(budgets, running, tuple(listed), unlisted, False)

    def _combine_budgets(self, base: list[tuple[str, GroupLimits]]) -> dict[str, Budget]:
        combined: dict[str, Budget] = {}
        for name in display_order({n for _, limits in base for n in limits.budgets}):
            specs = [(source, limits.budgets.get(name)) for source, limits in base]
            found = [
                Budget(name, spec.limit_hours, spec.window_seconds or self.window_seconds, source)
                for source, spec in specs
                if spec is not None
            ]
            if not found or (self.combine != "min" and len(found) < len(specs)):
                continue  # max and sum: a group that does not limit it makes it unlimited
            if self.combine == "sum" and len(found) > 1:
                groups = "+".join(b.source.split(":", 1)[1] for b in found)
                total = sum((b.limit_hours for b in found), Decimal(0))
                window = max(b.window_seconds for b in found)
                combined[name] = Budget(name, total, window, f"sum:{groups}")
            elif self.combine == "min":  # smallest limit; same limit: the longer window
                combined[name] = min(found, key=lambda b: (b.limit_hours, -b.window_seconds))
            else:  # max (or a single group under sum): largest; same limit: longer window
                combined[name] = max(found, key=lambda b: (b.limit_hours, b.window_seconds))
        return combined

    def _combine_running(self, base: list[tuple[str, GroupLimits]]) -> dict[str, int]:
        combined: dict[str, int] = {}
        for name in display_order({n for _, limits in base for n in limits.running}):
            # Unlike budgets, a group that sets no cap does not lift another group's cap:
            # caps guard shared capacity (as a ResourceQuota does for a namespace,
            # https://kubernetes.io/docs/concepts/policy/resource-quotas/), so regular +
            # gpu-dev keeps gpu-dev's `running: {gpu: 2}`. Only the groups that set a cap
            # are combined.
            found = [cap for _, limits in base if (cap := limits.running.get(name)) is not None]
            if not found:
                continue
            pick = {"max": max, "min": min, "sum": sum}[self.combine]
            combined[name] = pick(found)
        return combined

    def _windows(self, *sections: dict) -> list[int]:
        """The policy's window and every window a budget of ``sections`` names."""
        windows = [self.window_seconds]
        for limits in (limits for section in sections for limits in section.values()):
            windows += [s.window_seconds for s in limits.budgets.values() if s and s.window_seconds]
        return windows

    def max_window_seconds(self) -> int:
        """The longest window any budget uses: how far back the one usage query must read."""
        return max(self._windows(self.groups, self.users, self.pools))

    def longest_window_seconds(self, resource: str) -> int:
        """The longest window of a user budget of ``resource`` (a group's or a user's), or
        :meth:`max_window_seconds` if none has one (it left the policy): how long the
        enforcer's warning for it can still belong to an open episode."""
        windows = [
            limits.budgets[resource].window_seconds or self.window_seconds
            for section in (self.groups, self.users)
            for limits in section.values()
            if limits.budgets.get(resource)
        ]
        return max(windows, default=self.max_window_seconds())

    def min_user_window_seconds(self) -> int:
        """The shortest window of a user's budgets (the policy's, the groups', the users'):
        the enforcer's grace must fit in it (ledger/core/policy_yaml.py)."""
        return min(self._windows(self.groups, self.users))

    def resource_names(self) -> list[str]:
        """cpu, memory, then the extended resources' short names (gpu first)."""
        return display_order(["cpu", "memory", *self.accounting.resources])
