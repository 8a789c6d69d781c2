"""One user's numbers, as the user page and ``/api/v1/me`` show them.

Built from ``ledger.store.status.user_status`` (one indexed query for the segments) plus the
decision for a *typical* server evaluated on the same rows (no second usage query), and
three small reads: recent sessions, OOM kills, enforcer warnings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ledger.core.decision import Decision, ServerRequest, evaluate, to_us
from ledger.core.json_form import json_amounts, json_number
from ledger.core.quantities import format_amount
from ledger.core.resources import MICROSECONDS_PER_SECOND, display_order, resource
from ledger.core.times import iso
from ledger.core.usage_model import ResourceUsage, intervals_of
from ledger.store import page_reads as reads
from ledger.store import quota_requests
from ledger.store.status import UserStatus, user_status
from ledger.web import chart

MEMORY_HINT = (
    "Your server ran out of memory and the program using it was stopped. "
    "Choose a larger server, or reduce the memory your work uses (load less data at once, "
    "free large variables, close notebooks you do not need)."
)


@dataclass
class UserView:
    status: UserStatus
    typical: Decision  # may a typical server start now; if not, when
    limited: list[ResourceUsage]
    unlimited: list[ResourceUsage]
    charts: dict[str, str] = field(default_factory=dict)  # resource -> SVG
    sessions: list[dict] = field(default_factory=list)
    oom_kills: list[dict] = field(default_factory=list)
    warnings: list[dict] = field(default_factory=list)
    requests: list = field(default_factory=list)  # the user's quota requests, newest first
    requestable: list[str] = field(default_factory=list)  # resources they may ask more of

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
        data["typical_server"] = {
            "request": json_amounts(self.typical.request.amounts),
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
        data["requests"] = [r.to_json() for r in self.requests]
        return data


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
            n: json_number(resource(n).to_hours(amounts[n] * seconds * MICROSECONDS_PER_SECOND))
            for n in names
        },
    }


def _charts(status: UserStatus) -> dict[str, str]:
    now_us = to_us(status.at)
    out = {}
    for name, r in status.resources.items():
        if r.limit_hours is None or r.limit_hours <= 0:
            continue
        drawn = chart.build_chart(
            name,
            intervals_of(status.segments, name, now_us),
            now_us,
            r.window_seconds * MICROSECONDS_PER_SECOND,
            # the recorded usage is drawn: its limit is the policy's + grants + credits
            resource(name).from_hours(r.limit_hours + r.credited_hours),
            None if r.retry_at is None else to_us(r.retry_at),
            None if r.runs_out_at is None else to_us(r.runs_out_at),
        )
        out[name] = chart.render_svg(drawn)
    return out


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
        adjustments=status.adjustments,
    )
    resources = list(status.resources.values())
    view = UserView(
        status,
        typical,
        limited=[r for r in resources if r.limit_hours is not None],
        unlimited=[r for r in resources if r.limit_hours is None],
        charts=_charts(status) if with_charts else {},
        requestable=display_order(policy.limits_for(username, status.groups).budgets),
    )
    if with_history:
        since = now - timedelta(seconds=max(policy.window_seconds, 7 * 86400))
        async with config.engine.connect() as conn:
            rows = await reads.recent_sessions(conn, username, since, now, config.recent_sessions)
            view.oom_kills = await reads.oom_kills(conn, username, since, now)
            view.warnings = await reads.enforcement_for_user(conn, username, since, now)
            view.requests = await quota_requests.of_user(conn, username)
        view.sessions = [_session(r, now) for r in rows]
    return view
