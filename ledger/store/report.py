"""The admins' report: every user with usage in the window, as usage-model records
(``ledger.core.usage_model``): the same figures ``usage`` and ``check`` show for one user.

Usage comes from the ``quota_usage_exact`` SQL function, the aggregate the SQL views'
``quota_usage`` reads too (one query per distinct window the policy uses — usually one).
Limits come from the policy and the user's groups (from a groups file, or the
``user_groups`` table the hub hook and enforcer keep fresh).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.core.decision import SegmentRow, to_us
from ledger.core.grants import NO_ADJUSTMENTS, Adjustments
from ledger.core.resources import CORE_RESOURCES
from ledger.core.usage_model import (
    Membership,
    RecordTerms,
    ResourceUsage,
    max_percent,
    needs_times,
    resource_usage,
    resources_from_segments,
    user_json,
)
from ledger.store import grants, queries


@dataclass
class UserLine:
    username: str
    at: datetime
    membership: Membership
    resources: dict[str, ResourceUsage] = field(default_factory=dict)
    running_servers: int = 0
    times_added: bool = False  # run-out and retry times filled in (add_times)
    adjustments: Adjustments = NO_ADJUSTMENTS  # the user's grants and credits

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
      AND started_at <= $3
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
                amounts=queries.row_amounts(cpu, mem, gpu, ext),
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
    """Every user with usage in the window, as usage-model records, from the aggregate.

    Run-out and retry times need each user's segments, which the aggregate does not read:
    they are None here, and :func:`add_times` fills them for the lines that are shown (a
    page of the admin report, or every line of ``quota-ledger report``).
    """
    windows = _policy_windows(policy)
    usage_by_window: dict[int, dict] = {}
    with _cyclic_gc_paused():
        async with engine.connect() as conn:
            for window in sorted(windows):
                usage_by_window[window] = await queries.usage_report_us(conn, at, window)
            if groups_by_user is None:
                groups_by_user = await queries.groups_by_user(conn)
            adjustments = await grants.adjustments_by_user(conn, at, max(windows))
        return _lines(policy, at, usage_by_window, groups_by_user, adjustments)


@contextlib.contextmanager
def _cyclic_gc_paused():
    """The report allocates ~100k objects in no reference cycle (the rows asyncpg decodes,
    the groups, the lines: records, their dicts), so the cyclic collector has nothing to
    find in them; but their allocations set off its passes, and the full ones
    walk every object of the process — in a process that holds more (the benchmark's, a web
    service's), more than the report's own Python. Paused from the first read to the last
    line, and restored as it was (https://docs.python.org/3/library/gc.html#gc.disable);
    reference counting frees everything meanwhile. The reads are awaited, so other tasks run
    with it paused too, for the report's duration (a fraction of a second): cycles they make
    are collected once it resumes. Reports running together compose: the first to pause
    resumes it. (Code that disables the collector itself in that window would find it
    resumed.)"""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _lines(policy, at, usage_by_window, groups_by_user, adjustments) -> list[UserLine]:
    default_usage = usage_by_window[policy.window_seconds]
    if len(usage_by_window) == 1:
        users = sorted(default_usage)
    else:
        users = sorted({u for by_user in usage_by_window.values() for u in by_user})
    names = report_resources(policy)
    lines = []
    # Users in the same groups (and no entry of their own) have the same limits: computing
    # them, and what each resource reads, once per combination keeps 10k users' report to
    # the aggregate's cost.
    plans_by_key: dict = {}
    running_servers_at = queries.USAGE_REPORT_US_RUNNING_SERVERS
    for username in users:
        groups = groups_by_user.get(username, ())
        key = (username if username in policy.users else None, tuple(groups))
        plan = plans_by_key.get(key)
        if plan is None:
            limits = policy.limits_for(username, list(groups))
            resources = []
            for name in names:
                budget = limits.budgets.get(name)
                window = budget.window_seconds if budget else policy.window_seconds
                terms = RecordTerms.of(name, budget, window, at, limits.groups)
                used_at, running_at = queries.USAGE_REPORT_US_POSITIONS[name]
                resources.append(
                    (name, budget, window, terms, usage_by_window[window], used_at, running_at)
                )
            plan = plans_by_key[key] = (limits, Membership.of(groups, limits), resources)
        limits, membership, resources = plan
        user_adjustments = adjustments.get(username, NO_ADJUSTMENTS)
        default_row = default_usage.get(username)
        records = {}
        if user_adjustments is NO_ADJUSTMENTS:  # most users: the group's terms
            for name, _, _, terms, by_user, used_at, running_at in resources:
                row = default_row if by_user is default_usage else by_user.get(username)
                if row is None:
                    records[name] = terms.record(0, 0)
                else:
                    records[name] = terms.record(int(row[used_at]), row[running_at])
        else:  # grants or credits: this user's own terms
            for name, budget, window, _, by_user, used_at, running_at in resources:
                row = by_user.get(username)
                records[name] = resource_usage(
                    name,
                    budget,
                    window,
                    at,
                    used_base_us=int(row[used_at]) if row else 0,
                    running=row[running_at] if row else 0,
                    intervals=None,
                    policy_groups=limits.groups,
                    adjustments=user_adjustments,
                )
        lines.append(
            UserLine(
                username,
                at,
                membership,
                records,
                default_row[running_servers_at] if default_row else 0,
                False,
                user_adjustments,
            )
        )
    return lines


def report_resources(policy) -> list[str]:
    """The resources the report covers: the policy's that ``quota_usage`` integrates."""
    integrated = queries.USAGE_REPORT_US_POSITIONS
    return [n for n in policy.resource_names() if n in integrated] or list(CORE_RESOURCES)


async def add_times(engine: AsyncEngine, policy, lines: Sequence[UserLine]) -> None:
    """Fill in the run-out and retry times of ``lines`` (in place; idempotent).

    One query reads the segments of the users whose records can have a time (running
    something limited, or at a limit); those records are recomputed from the segments —
    the same numbers the aggregate gave (a property test keeps ``quota_usage`` and the
    Python integral equal), now with the times, exactly as ``usage`` shows them.
    """
    todo = [line for line in lines if not line.times_added]
    wanted = [line for line in todo if any(needs_times(r) for r in line.resources.values())]
    if wanted:
        at = wanted[0].at
        since = at - timedelta(seconds=max(_policy_windows(policy)))
        async with engine.connect() as conn:
            segments = await _segments_of(conn, [line.username for line in wanted], since, at)
        for line in wanted:
            limits = policy.limits_for(line.username, line.groups)
            names = [n for n, r in line.resources.items() if needs_times(r)]
            timed = resources_from_segments(
                limits,
                segments[line.username],
                line.at,
                names,
                policy.window_seconds,
                line.adjustments,
            )
            line.resources = {n: timed.get(n, r) for n, r in line.resources.items()}
    for line in todo:
        line.times_added = True
