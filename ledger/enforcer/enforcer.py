"""The enforcer: warn users whose running servers approach a spent budget, then stop them.

One round (``enforce_round``): list the hub's active users (groups come fresh from the hub,
so a user moved to another group is judged by the new limits), read each one's status from
the ledger, plan, act through the Hub REST API, record every action in
``enforcement_actions``. Errors stay with the user they belong to (as jupyterhub-idle-culler
does); a hub that is down ends the round, and the next one tries again.

Rules (``plan_user``, pure):

- Warnings: for each limited resource, the highest threshold of ``warn_at_percent`` (and
  100 when the budget is used up) that usage has crossed is recorded once. It is not
  repeated while a warning at that threshold or higher exists within the budget's window
  since the last stop for that resource: one warning per threshold per window.
- Over-quota since: the time of the 100 % warning (stored in its ``detail.over_since``). A
  stop starts a new episode, so the next exhaustion gets a fresh warning and grace period.
- Stop: once ``grace_seconds`` have passed since over-quota-since, every running server of
  the user is stopped (named servers included), or, with ``exhausted_budget_blocks:
  requested``, only servers the ledger shows holding the spent resource.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import text

from ledger.core.quantities import format_duration, format_hours
from ledger.enforcer.hub_api import HubClient, HubError, HubUser
from ledger.store import queries
from ledger.store.status import user_status

log = logging.getLogger("ledger.enforcer.enforcer")


@dataclass
class Action:
    username: str
    action: str  # warn | stop | stop_failed | stop_skipped
    resource: str = ""
    servername: str = ""
    threshold_percent: int | None = None
    used_hours: float | None = None
    limit_hours: float | None = None
    message: str = ""
    detail: dict = field(default_factory=dict)


@dataclass
class Past:
    """An earlier action of this user, as far as planning needs it."""

    action: str
    resource: str
    threshold_percent: int | None
    acted_at: datetime
    detail: dict


@dataclass
class RoundStats:
    users: int = 0
    warned: int = 0
    stopped: int = 0
    stop_failures: int = 0
    user_errors: int = 0
    hub_errors: int = 0


def _over_since(history: list[Past], resource: str, since: datetime) -> datetime | None:
    hits = [
        p.acted_at
        for p in history
        if p.action == "warn" and p.resource == resource and p.threshold_percent == 100
        and p.acted_at >= since
    ]  # fmt: skip
    return min(hits) if hits else None


def plan_user(
    status, hub_user: HubUser, history: list[Past], policy, now: datetime
) -> list[Action]:
    """The warnings and stops due for one user now. Pure: no I/O, no clock."""
    enforcement = policy.enforcement
    blocks = getattr(policy, "exhausted_budget_blocks", "any")
    thresholds = sorted(set(enforcement.warn_at_percent))
    actions: list[Action] = []
    holding = {s["servername"]: s for s in status.running_servers}
    to_stop: dict[str, str] = {}  # servername -> resource
    for name, budget in status.decision.budgets.items():
        limit, used = budget.limit_hours, budget.used_hours
        exhausted = used >= limit and (limit > 0 or used > 0)
        percent = 100.0 if exhausted else budget.percent_used
        crossed = [t for t in thresholds if percent >= t and t < 100] + ([100] if exhausted else [])
        last_stop = max(
            (p.acted_at for p in history if p.action == "stop" and p.resource == name),
            default=None,
        )
        since = now - timedelta(seconds=budget.window_seconds)
        if last_stop is not None and last_stop > since:
            since = last_stop
        window = format_duration(budget.window_seconds)
        usage = f"{format_hours(name, used)} of {format_hours(name, limit)} in the last {window}"
        numbers = dict(used_hours=float(used), limit_hours=float(limit), resource=name)
        over_since = _over_since(history, name, since) if exhausted else None
        if crossed:
            top = max(crossed)
            warned = any(
                p.action == "warn" and p.resource == name and (p.threshold_percent or 0) >= top
                and p.acted_at >= since
                for p in history
            )  # fmt: skip
            if not warned:
                detail = {"percent_used": round(budget.percent_used, 2)}
                if top == 100:
                    over_since = over_since or now
                    detail["over_since"] = over_since.isoformat()
                    message = (
                        f"Your {name} quota is used up ({usage}). Your running servers will be "
                        f"stopped after {format_duration(enforcement.grace_seconds)}."
                    )
                else:
                    message = f"You have used {percent:.0f}% of your {name} quota ({usage})."
                actions.append(Action(hub_user.name, "warn", threshold_percent=top,
                                      message=message, detail=detail, **numbers))  # fmt: skip
        if not exhausted or over_since is None:
            continue
        if now - over_since < timedelta(seconds=enforcement.grace_seconds):
            continue
        for server in hub_user.servers.values():
            held = holding.get(server.name, {}).get(name, 0)
            if blocks != "any" and not held:
                continue
            to_stop.setdefault(server.name, name)
    for servername, name in sorted(to_stop.items()):
        budget = status.decision.budgets[name]
        server = hub_user.servers[servername]
        numbers = dict(used_hours=float(budget.used_hours), limit_hours=float(budget.limit_hours))
        label = f"server {servername!r}" if servername else "the default server"
        if server.pending == "stop":
            actions.append(Action(hub_user.name, "stop_skipped", name, servername,
                                  message=f"{label} is already stopping", **numbers))  # fmt: skip
            continue
        actions.append(Action(
            hub_user.name, "stop", name, servername,
            message=f"Stopped {label}: the {name} quota is used up "
            f"({format_hours(name, budget.used_hours)} of {format_hours(name, budget.limit_hours)}).",
            detail={"grace_seconds": enforcement.grace_seconds}, **numbers,
        ))  # fmt: skip
    return actions


HISTORY_SQL = text(
    """
    SELECT username, action, resource, threshold_percent, acted_at, detail
    FROM enforcement_actions
    WHERE acted_at > :since AND acted_at <= :until AND dry_run = :dry_run
      AND username = ANY(:users) AND action IN ('warn', 'stop')
    ORDER BY acted_at
    """
)

INSERT_ACTION_SQL = text(
    """
    INSERT INTO enforcement_actions (acted_at, username, servername, action, resource,
        threshold_percent, used_hours, limit_hours, message, dry_run, detail)
    VALUES (:acted_at, :username, :servername, :action, :resource, :threshold_percent,
        :used_hours, :limit_hours, :message, :dry_run, CAST(:detail AS jsonb))
    """
)


async def _history(engine, users: list[str], policy, now: datetime, dry_run: bool):
    since = now - timedelta(seconds=policy.max_window_seconds())
    out: dict[str, list[Past]] = {u: [] for u in users}
    async with engine.connect() as conn:
        rows = await conn.execute(
            HISTORY_SQL, {"since": since, "until": now, "dry_run": dry_run, "users": users}
        )
        for username, action, resource, threshold, acted_at, detail in rows:
            out[username].append(Past(action, resource, threshold, acted_at, detail or {}))
    return out


async def _record(engine, action: Action, now: datetime, dry_run: bool) -> None:
    import json

    async with engine.begin() as conn:
        await conn.execute(INSERT_ACTION_SQL, {
            "acted_at": now, "username": action.username, "servername": action.servername,
            "action": action.action, "resource": action.resource,
            "threshold_percent": action.threshold_percent, "used_hours": action.used_hours,
            "limit_hours": action.limit_hours, "message": action.message, "dry_run": dry_run,
            "detail": json.dumps(action.detail, default=str),
        })  # fmt: skip


async def _enforce_user(engine, hub: HubClient, policy, hub_user: HubUser, history, now,
                        dry_run: bool, stats: RoundStats) -> None:  # fmt: skip
    async with engine.begin() as conn:
        await queries.record_groups(conn, hub_user.name, hub_user.groups, now)
    if not policy.enforcement.enabled:
        return
    status = await user_status(engine, policy, hub_user.name, hub_user.groups, now)
    for action in plan_user(status, hub_user, history, policy, now):
        if action.action == "stop" and not dry_run:
            try:
                outcome = await hub.stop_server(action.username, action.servername)
                action.detail["hub"] = outcome
                stats.stopped += 1
            except HubError as exc:
                action.action = "stop_failed"
                action.detail["error"] = str(exc)
                stats.stop_failures += 1
        elif action.action == "warn":
            stats.warned += 1
        log.log(logging.WARNING if action.action != "warn" else logging.INFO,
                "%s%s %s %r: %s", "[dry run] " if dry_run else "", action.action,
                action.username, action.servername, action.message)  # fmt: skip
        await _record(engine, action, now, dry_run)


async def enforce_round(engine, hub: HubClient, policy, now: datetime, *, dry_run: bool = False):
    """One pass over the hub's active users. Raises HubError only if listing them failed."""
    stats = RoundStats()
    users = [u async for u in hub.active_users() if u.servers]
    stats.users = len(users)
    if not users:
        return stats
    history = await _history(engine, [u.name for u in users], policy, now, dry_run)
    for hub_user in users:
        try:
            await _enforce_user(engine, hub, policy, hub_user, history[hub_user.name], now,
                                dry_run, stats)  # fmt: skip
        except Exception:  # noqa: BLE001 - one user's problem must not stop the others
            stats.user_errors += 1
            log.exception("enforcer: skipped %s this round", hub_user.name)
    return stats
