"""The admins' report: every user with usage in the window, their limits and percent used.

Usage comes from the ``quota_usage`` SQL function (one aggregate query per distinct window
the policy uses — usually one). Limits come from the policy and the user's groups (from a
groups file, or the ``user_groups`` table the hub hook and enforcer keep fresh).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.core.resources import CORE_RESOURCES, MICROSECONDS_PER_SECOND, resource
from ledger.store import queries

# quota_usage column holding each resource's exact integral, in base-unit·seconds
INTEGRAL_COLUMNS = {
    "cpu": "cpu_millicore_seconds",
    "memory": "memory_byte_seconds",
    "gpu": "gpu_seconds",
}
RUNNING_COLUMNS = {
    "cpu": "running_cpu_millicores",
    "memory": "running_memory_bytes",
    "gpu": "running_gpu_count",
}


@dataclass
class ResourceLine:
    resource: str
    used_hours: Decimal
    limit_hours: Decimal | None  # None = unlimited
    window_seconds: int
    running: int  # base units held by running servers now

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

    def to_json(self) -> dict:
        return {
            "unit": resource(self.resource).hours_unit,
            "used": float(round(self.used_hours, 6)),
            "limit": None if self.limit_hours is None else float(self.limit_hours),
            "remaining": None
            if self.remaining_hours is None
            else float(round(self.remaining_hours, 6)),
            "percent_used": None if self.percent_used is None else round(self.percent_used, 2),
            "window_seconds": self.window_seconds,
            "running": float(resource(self.resource).to_display(self.running)),
        }


@dataclass
class UserLine:
    username: str
    groups: list[str]
    policy_groups: list[str]
    resources: dict[str, ResourceLine] = field(default_factory=dict)
    running_servers: int = 0
    denied_all: bool = False

    @property
    def max_percent(self) -> float:
        values = [r.percent_used for r in self.resources.values() if r.percent_used is not None]
        return max(values) if values else 0.0

    def to_json(self) -> dict:
        return {
            "username": self.username,
            "groups": self.groups,
            "policy_groups": self.policy_groups,
            "running_servers": self.running_servers,
            "max_percent_used": round(self.max_percent, 2),
            "resources": {n: r.to_json() for n, r in self.resources.items()},
        }


def _policy_windows(policy) -> set[int]:
    windows = {policy.window_seconds}
    for limits in list(policy.groups.values()) + list(policy.users.values()):
        for budget in getattr(limits, "budgets", {}).values():
            window = getattr(budget, "window_seconds", None)
            if window:
                windows.add(window)
    return windows


async def build_report(
    engine: AsyncEngine,
    policy,
    at: datetime,
    groups_by_user: Mapping[str, list[str]] | None = None,
) -> list[UserLine]:
    windows = _policy_windows(policy)
    usage_by_window: dict[int, dict[str, dict]] = {}
    async with engine.connect() as conn:
        for window in sorted(windows):
            rows = await queries.usage_report(conn, at, window)
            usage_by_window[window] = {r["username"]: r for r in rows}
        if groups_by_user is None:
            groups_by_user = await queries.groups_by_user(conn)
    users = sorted({u for by_user in usage_by_window.values() for u in by_user})
    names = [n for n in policy.resource_names() if n in INTEGRAL_COLUMNS] or list(CORE_RESOURCES)
    lines = []
    for username in users:
        groups = list(groups_by_user.get(username, []))
        limits = policy.limits_for(username, groups)
        line = UserLine(
            username=username,
            groups=groups,
            policy_groups=list(limits.groups),
            denied_all=limits.denied_all,
        )
        for name in names:
            budget = limits.budgets.get(name)
            window = budget.window_seconds if budget else policy.window_seconds
            row = usage_by_window[window].get(username)
            integral = Decimal(row[INTEGRAL_COLUMNS[name]]) if row else Decimal(0)
            line.resources[name] = ResourceLine(
                resource=name,
                used_hours=resource(name).to_hours(integral * MICROSECONDS_PER_SECOND),
                limit_hours=Decimal(budget.limit_hours) if budget else None,
                window_seconds=window,
                running=int(row[RUNNING_COLUMNS[name]]) if row else 0,
            )
        default_row = usage_by_window[policy.window_seconds].get(username)
        line.running_servers = int(default_row["running_servers"]) if default_row else 0
        lines.append(line)
    return lines
