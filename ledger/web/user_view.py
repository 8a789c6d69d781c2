"""One user's numbers, as the user page and ``/api/v1/me`` show them.

Built from ``ledger.store.status.user_status`` (one indexed query for the segments) plus the
decision for a *typical* server evaluated on the same rows (no second usage query), and
three small reads: recent sessions, OOM kills, enforcer warnings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from ledger.core import usage
from ledger.core.decision import Decision, ServerRequest, evaluate, from_us, to_us
from ledger.core.quantities import format_amount
from ledger.core.resources import MICROSECONDS_PER_SECOND, display_order, resource
from ledger.core.times import iso
from ledger.store import page_reads as reads
from ledger.store.status import UserStatus, user_status
from ledger.web import chart

NEAR_LIMIT_PERCENT = 80.0
MEMORY_HINT = (
    "Your server ran out of memory and the program using it was stopped. "
    "Choose a larger server, or reduce the memory your work uses (load less data at once, "
    "free large variables, close notebooks you do not need)."
)


@dataclass
class ResourceView:
    name: str
    unit: str  # "GiB-hours"
    used_hours: Decimal
    limit_hours: Decimal | None
    remaining_hours: Decimal | None
    percent_used: float | None
    window_seconds: int
    running_amount: int  # base units held by running servers now
    burn_per_hour: Decimal  # resource-hours per hour while they keep running
    runs_out_at: datetime | None  # when the budget is spent if running servers continue
    retry_at: datetime | None  # used up: when it has room again if servers stop now
    chart_svg: str | None = None

    @property
    def state(self) -> str:
        if self.percent_used is None:
            return "unlimited"
        if self.limit_hours == 0:
            return "none"
        if self.percent_used >= 100:
            return "over"
        return "near" if self.percent_used >= NEAR_LIMIT_PERCENT else "ok"

    def to_json(self) -> dict:
        return {
            "resource": self.name,
            "unit": self.unit,
            "used": float(round(self.used_hours, 6)),
            "limit": None if self.limit_hours is None else float(self.limit_hours),
            "remaining": None
            if self.remaining_hours is None
            else float(round(self.remaining_hours, 6)),
            "percent_used": None if self.percent_used is None else round(self.percent_used, 2),
            "window_seconds": self.window_seconds,
            "running": float(resource(self.name).to_display(self.running_amount)),
            "burn_per_hour": float(self.burn_per_hour),
            "runs_out_at": iso(self.runs_out_at),
            "retry_at": iso(self.retry_at),
            "state": self.state,
        }


@dataclass
class UserView:
    status: UserStatus
    typical: Decision  # may a typical server start now; if not, when
    limited: list[ResourceView]
    unlimited: list[ResourceView]
    sessions: list[dict] = field(default_factory=list)
    oom_kills: list[dict] = field(default_factory=list)
    warnings: list[dict] = field(default_factory=list)

    @property
    def runs_out_at(self) -> datetime | None:
        times = [r.runs_out_at for r in self.limited if r.runs_out_at is not None]
        return min(times) if times else None

    @property
    def worst_state(self) -> str:
        states = {r.state for r in self.limited}
        return next((s for s in ("over", "near") if s in states), "ok")

    def to_json(self) -> dict:
        data = self.status.to_json()
        data["resources"] = {r.name: r.to_json() for r in (*self.limited, *self.unlimited)}
        data["typical_server"] = {
            "request": {
                n: float(resource(n).to_display(v)) for n, v in self.typical.request.amounts.items()
            },
            "allowed": self.typical.allowed,
            "retry_at": iso(self.typical.retry_at),
            "run_seconds": self.typical.run_seconds,
            "message": self.typical.message,
        }
        data["runs_out_at"] = iso(self.runs_out_at)
        data["recent_sessions"] = [
            {**s, "started_at": iso(s["started_at"]), "ended_at": iso(s["ended_at"])}
            for s in self.sessions
        ]
        data["oom_kills"] = [{**k, "killed_at": iso(k["killed_at"])} for k in self.oom_kills]
        data["warnings"] = [{**w, "acted_at": iso(w["acted_at"])} for w in self.warnings]
        return data


def _intervals(status: UserStatus, name: str, now_us: int) -> list[usage.Interval]:
    return [
        (r.started_at_us, r.ended_at_us, int(r.amounts.get(name, 0)))
        for r in status.segments
        if r.amounts.get(name) and r.started_at_us < now_us
    ]


def _session(row: dict, now: datetime) -> dict:
    end = row["ended_at"] or now
    seconds = max(0, int((end - row["started_at"]).total_seconds()))
    amounts = {"cpu": row["cpu_millicores"], "memory": row["memory_bytes"], "gpu": row["gpu_count"]}
    amounts.update({k: int(v) for k, v in (row.get("extended") or {}).items()})
    names = [n for n in display_order(amounts) if amounts[n]]
    return {
        "servername": row["servername"],
        "size": ", ".join(format_amount(n, amounts[n]) for n in names) or "no resources",
        "started_at": row["started_at"],
        "ended_at": row["ended_at"],
        "running": row["ended_at"] is None,
        "duration_seconds": seconds,
        "cost_hours": {
            n: float(round(resource(n).to_hours(amounts[n] * seconds * MICROSECONDS_PER_SECOND), 4))
            for n in names
        },
    }


def resource_views(
    status: UserStatus, typical: Decision, *, with_charts: bool
) -> tuple[list[ResourceView], list[ResourceView]]:
    now_us = to_us(status.at)
    limited, unlimited = [], []
    for name, r in status.resources.items():
        budget = status.decision.budgets.get(name)
        intervals = _intervals(status, name, now_us)
        window_us = r.window_seconds * MICROSECONDS_PER_SECOND
        runs_out_at = retry_at = reach = None
        if budget is not None and r.running and budget.limit_hours > 0:
            limit = resource(name).from_hours(budget.limit_hours)
            reach = usage.first_reaching(intervals, now_us, window_us, limit)
            runs_out_at = None if reach is None else from_us(reach)
        if budget is not None:
            retry_at = budget.retry_at
        view = ResourceView(
            name=name,
            unit=resource(name).hours_unit,
            used_hours=r.used_hours,
            limit_hours=r.limit_hours,
            remaining_hours=r.remaining_hours,
            percent_used=r.percent_used,
            window_seconds=r.window_seconds,
            running_amount=r.running,
            burn_per_hour=resource(name).to_display(r.running),
            runs_out_at=runs_out_at,
            retry_at=retry_at,
        )
        if budget is None:
            unlimited.append(view)
            continue
        if with_charts and budget.limit_hours > 0:
            typical_budget = typical.budgets.get(name)
            retry = typical_budget.retry_at if typical_budget else None
            drawn = chart.build_chart(
                name,
                intervals,
                now_us,
                window_us,
                resource(name).from_hours(budget.limit_hours),
                None if retry is None else to_us(retry),
                reach,
            )
            view.chart_svg = chart.render_svg(drawn)
        limited.append(view)
    return limited, unlimited


async def build_user_view(
    config, username: str, groups, *, with_charts: bool = True, with_history: bool = True
) -> UserView:
    policy = config.policy()
    now = config.now()
    status = await user_status(config.engine, policy, username, groups, now)
    request: ServerRequest = config.typical_request
    typical = evaluate(
        username,
        policy.limits_for(username, status.groups),
        status.segments,
        request,
        now,
        exhausted_budget_blocks=getattr(policy, "exhausted_budget_blocks", "any"),
    )
    limited, unlimited = resource_views(status, typical, with_charts=with_charts)
    view = UserView(status, typical, limited, unlimited)
    if with_history:
        since = now - timedelta(seconds=max(policy.window_seconds, 7 * 86400))
        async with config.engine.connect() as conn:
            rows = await reads.recent_sessions(conn, username, since, now, config.recent_sessions)
            view.oom_kills = await reads.oom_kills(conn, username, since, now)
            view.warnings = await reads.enforcement_for_user(conn, username, since, now)
        view.sessions = [_session(r, now) for r in rows]
    return view
