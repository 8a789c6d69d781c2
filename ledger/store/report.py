"""The admins' report: every user with usage in the window, as usage-model records
(``ledger.core.usage_model``): the same figures ``usage`` and ``check`` show for one user.

Usage comes from the ``quota_usage`` SQL function (one aggregate query per distinct window
the policy uses — usually one). Limits come from the policy and the user's groups (from a
groups file, or the ``user_groups`` table the hub hook and enforcer keep fresh).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.core.decision import SegmentRow, to_us
from ledger.core.resources import CORE_RESOURCES, MICROSECONDS_PER_SECOND
from ledger.core.usage_model import (
    Membership,
    ResourceUsage,
    intervals_of,
    max_percent,
    needs_times,
    resource_usage,
    user_json,
)
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
class UserLine:
    username: str
    at: datetime
    membership: Membership
    resources: dict[str, ResourceUsage] = field(default_factory=dict)
    running_servers: int = 0

    @property
    def groups(self) -> list[str]:
        return list(self.membership.groups)

    @property
    def policy_groups(self) -> list[str]:
        return list(self.membership.policy_groups)

    @property
    def denied_all(self) -> bool:
        return self.membership.denied_all

    @property
    def max_percent(self) -> float:
        return max_percent(self.resources.values())

    def to_json(self) -> dict:
        """One user of ``report --format json`` and ``/api/v1/report`` (docs/cli.md)."""
        return user_json(
            self.username, self.at, self.membership, self.resources, self.running_servers
        )


# The segments of several users that touch a window (the run-out and retry times of the
# users who need them): the same index range scan as queries.USER_SEGMENTS_SQL, per user.
USERS_SEGMENTS_SQL = """
    SELECT username, started_at, ended_at, servername, cpu_millicores, memory_bytes,
           gpu_count, extended
    FROM segments
    WHERE username = ANY($1::text[])
      AND COALESCE(ended_at, 'infinity'::timestamptz) > $2
      AND started_at < $3
"""


async def _segments_of(conn, usernames: list[str], since: datetime, until: datetime):
    by_user: dict[str, list[SegmentRow]] = {u: [] for u in usernames}
    if not usernames:
        return by_user
    raw = (await conn.get_raw_connection()).driver_connection
    for username, started, ended, servername, cpu, mem, gpu, ext in await raw.fetch(
        USERS_SEGMENTS_SQL, usernames, since, until
    ):
        by_user[username].append(
            SegmentRow(
                started_at_us=to_us(started),
                ended_at_us=None if ended is None else to_us(ended),
                servername=servername,
                amounts=queries._row_amounts(cpu, mem, gpu, ext),
            )
        )
    return by_user


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
    """Every user with usage in the window, as usage-model records.

    Usage and what runs now come from the ``quota_usage`` aggregate. Run-out and retry times
    need a user's segments: they are read (one more query) only for the users that have one —
    running something limited, or at or over a limit.
    """
    windows = _policy_windows(policy)
    usage_by_window: dict[int, dict[str, dict]] = {}
    async with engine.connect() as conn:
        for window in sorted(windows):
            rows = await queries.usage_report(conn, at, window)
            usage_by_window[window] = {r["username"]: r for r in rows}
        if groups_by_user is None:
            groups_by_user = await queries.groups_by_user(conn)
        users = sorted({u for by_user in usage_by_window.values() for u in by_user})
        names = [n for n in policy.resource_names() if n in INTEGRAL_COLUMNS] or list(
            CORE_RESOURCES
        )
        figures: dict[str, tuple] = {}
        timed: list[str] = []
        for username in users:
            groups = list(groups_by_user.get(username, []))
            limits = policy.limits_for(username, groups)
            per_resource = {}
            for name in names:
                budget = limits.budgets.get(name)
                window = budget.window_seconds if budget else policy.window_seconds
                row = usage_by_window[window].get(username)
                seconds = Decimal(row[INTEGRAL_COLUMNS[name]]) if row else Decimal(0)
                used_base_us = int(seconds * MICROSECONDS_PER_SECOND)
                running = int(row[RUNNING_COLUMNS[name]]) if row else 0
                per_resource[name] = (budget, window, used_base_us, running)
                if needs_times(name, budget, used_base_us, running) and username not in timed:
                    timed.append(username)
            figures[username] = (groups, limits, per_resource)
        since = at - timedelta(seconds=max(windows))
        segments = await _segments_of(conn, timed, since, at)
    at_us = to_us(at)
    lines = []
    for username in users:
        groups, limits, per_resource = figures[username]
        rows = segments.get(username)
        line = UserLine(username=username, at=at, membership=Membership.of(groups, limits))
        for name, (budget, window, used_base_us, running) in per_resource.items():
            line.resources[name] = resource_usage(
                name,
                budget,
                window,
                at,
                used_base_us=used_base_us,
                running=running,
                intervals=None if rows is None else intervals_of(rows, name, at_us),
                policy_groups=limits.groups,
            )
        default_row = usage_by_window[policy.window_seconds].get(username)
        line.running_servers = int(default_row["running_servers"]) if default_row else 0
        lines.append(line)
    return lines
