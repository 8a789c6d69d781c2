"""A user's own numbers: usage of every resource, limits, what runs now, when they could
start again. What ``quota-ledger usage`` prints and the user's quota page shows.

It is the decision for an unsized request (so every budget counts), plus usage of the
resources the policy does not limit, from the same single query.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.core import usage
from ledger.core.decision import Decision, ServerRequest, evaluate, to_us
from ledger.core.resources import CORE_RESOURCES, MICROSECONDS_PER_SECOND, display_order, resource
from ledger.store import queries


@dataclass
class ResourceUsage:
    resource: str
    used_hours: Decimal
    window_seconds: int
    running: int  # base units held by running servers now
    limit_hours: Decimal | None
    remaining_hours: Decimal | None
    percent_used: float | None

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
class UserStatus:
    username: str
    at: datetime
    groups: tuple[str, ...]
    resources: dict[str, ResourceUsage]
    decision: Decision  # for an unsized server: blocked or not, retry_at
    running_servers: list[dict]
    segments: list  # the rows read, for pages that draw the window

    def to_json(self) -> dict:
        return {
            "username": self.username,
            "at": self.at.isoformat(),
            "groups": list(self.groups),
            "can_start": self.decision.allowed,
            "reasons": self.decision.reasons,
            "retry_at": self.decision.retry_at.isoformat() if self.decision.retry_at else None,
            "message": self.decision.message,
            "running_servers": self.running_servers,
            "resources": {n: r.to_json() for n, r in self.resources.items()},
        }


async def user_status(
    engine: AsyncEngine, policy, username: str, groups: Iterable[str], now: datetime
) -> UserStatus:
    groups = tuple(groups)
    limits = policy.limits_for(username, groups)
    since = now - timedelta(seconds=max(policy.max_window_seconds(), policy.window_seconds))
    async with engine.connect() as conn:
        rows = await queries.user_segments(conn, username, since, now)
    decision = evaluate(username, limits, rows, ServerRequest(), now)
    now_us = to_us(now)
    names = display_order(set(CORE_RESOURCES) | set(limits.budgets))
    resources = {}
    for name in names:
        budget = limits.budgets.get(name)
        window = budget.window_seconds if budget else policy.window_seconds
        intervals = [
            (r.started_at_us, r.ended_at_us, int(r.amounts.get(name, 0)))
            for r in rows
            if r.amounts.get(name) and r.started_at_us < now_us
        ]
        status = decision.budgets.get(name)
        if status is not None:
            used_hours = status.used_hours  # the decision already integrated this one
        else:
            used = usage.window_usage(intervals, now_us, window * MICROSECONDS_PER_SECOND)
            used_hours = resource(name).to_hours(used)
        resources[name] = ResourceUsage(
            resource=name,
            used_hours=used_hours,
            window_seconds=window,
            running=usage.burn_rate(intervals, now_us),
            limit_hours=status.limit_hours if status else None,
            remaining_hours=status.remaining_hours if status else None,
            percent_used=status.percent_used if status else None,
        )
    running = {}
    for r in rows:
        if r.started_at_us <= now_us and (r.ended_at_us is None or r.ended_at_us > now_us):
            entry = running.setdefault(r.servername, {"servername": r.servername})
            for name, amount in r.amounts.items():
                if amount:
                    entry[name] = entry.get(name, 0) + float(resource(name).to_display(amount))
    return UserStatus(
        username=username,
        at=now,
        groups=groups,
        resources=resources,
        decision=decision,
        running_servers=sorted(running.values(), key=lambda e: e["servername"]),
        segments=rows,
    )
