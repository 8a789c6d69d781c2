"""The enforcement plan: which warnings and stops are due for a user now. Pure, no I/O.

The enforcer (ledger/enforcer/enforcer.py) reads the inputs — the hub's view of the user,
the ledger's decision and running servers, earlier actions — and carries the plan out.

- Warnings: for each limited resource, the highest threshold of ``warn_at_percent`` (and
  100 when the budget is used up) that usage has crossed is recorded once. It is not
  repeated while a warning at that threshold or higher exists within the budget's window
  since the last stop for that resource: one warning per threshold per window.
- Over-quota episode: opens with the 100 % warning (its time is over-quota-since, stored in
  its ``detail.over_since``) and ends with a round that stops every server it meant to (one
  where a stop failed is retried by the next round, in the same episode; a warning of the
  stop's own round, as with ``grace: 0s``, belongs to the episode it ended) or when a round
  sees the user back under the limit (a grant, or the window dropping old usage), which is
  recorded as ``under_quota``. The next exhaustion then gets a new 100 % warning and a fresh
  grace period; an exhaustion that never ended keeps its first over-quota-since however many
  rounds see it. The enforcer's log is the only memory between rounds (and restarts), hence
  the ``under_quota`` row; a user whose episode is open is planned even with nothing
  running (``open_episode``), so stopping one's own servers does not hide the episode's end.
- Stop: once ``grace_seconds`` have passed since over-quota-since, every running server of
  the user is stopped (named servers included), or, with ``exhausted_budget_blocks:
  requested``, only servers the ledger shows holding the spent resource.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from ledger.core.decision import Decision
from ledger.core.quantities import format_duration, format_hours


@dataclass
class HubServer:
    name: str  # "" for the default server
    ready: bool
    pending: str | None  # "spawn" | "stop" | None


@dataclass
class HubUser:
    """A user as the Hub REST API shows them: groups and the servers not stopped."""

    name: str
    groups: list[str]
    servers: dict[str, HubServer] = field(default_factory=dict)


@dataclass
class Action:
    username: str
    action: str  # warn | under_quota | stop | stop_failed | stop_skipped
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


def _stopped_at(history: list[Past], resource: str) -> datetime | None:
    """When the last round that stopped servers for ``resource`` stopped them all (a round's
    actions share its time): the end of that episode. A round where a stop failed does not
    end it, so the next round retries rather than warning anew (docs/hub.md)."""
    stops = {p.acted_at for p in history if p.action == "stop" and _for(p, resource)}
    failed = {p.acted_at for p in history if p.action == "stop_failed" and _for(p, resource)}
    return max(stops - failed, default=None)


def _for(past: Past, resource: str) -> bool:
    """A stop is for its resource and every other one used up past its grace in that round
    (``detail.resources``): one stop per server ends each of their episodes."""
    return past.resource == resource or resource in (past.detail.get("resources") or ())


def _current(acted_at: datetime, window_start: datetime, stopped_at: datetime | None) -> bool:
    """Inside the window, and after the stop that ended the last episode: a warning of the
    stop's own round (grace 0s) belongs to the episode it ended."""
    return acted_at >= window_start and (stopped_at is None or acted_at > stopped_at)


def _over_since(history: list[Past], resource: str, window_start: datetime,
                stopped_at: datetime | None) -> datetime | None:  # fmt: skip
    """When the episode still open for ``resource`` began (its first 100 % warning), or None.

    Only actions after the last episode's stop and inside the window count; an
    ``under_quota`` row after the warning ends it too.
    """
    over = None
    for p in sorted(history, key=lambda p: p.acted_at):
        if p.resource != resource or not _current(p.acted_at, window_start, stopped_at):
            continue
        if p.action == "warn" and p.threshold_percent == 100 and over is None:
            over = p.acted_at
        elif p.action == "under_quota":
            over = None
    return over


def open_episode(history: list[Past], policy, now: datetime) -> bool:
    """Whether some resource's over-quota episode may still be open in ``history`` (its 100 %
    warning inside the longest window a budget of that resource has, not ended by a stop or
    an ``under_quota`` row since). The enforcer plans such a user even with no server
    running: a round must see them back under the limit, or their next exhaustion would be
    stopped at once on the old over-quota-since, with no new warning and no grace."""
    for name in {p.resource for p in history if p.resource}:
        window_start = now - timedelta(seconds=policy.longest_window_seconds(name))
        if _over_since(history, name, window_start, _stopped_at(history, name)) is not None:
            return True
    return False


def plan_user(
    decision: Decision,
    running_servers: list[dict],
    hub_user: HubUser,
    history: list[Past],
    policy,
    now: datetime,
) -> list[Action]:
    """The warnings and stops due for one user now. Pure: no I/O, no clock.

    ``decision`` is the user's decision for an unsized server (every budget counts),
    ``running_servers`` what the ledger shows each running server holding (``servername``
    and an amount per resource), ``history`` the user's earlier warnings and stops.
    """
    enforcement = policy.enforcement
    blocks = getattr(policy, "exhausted_budget_blocks", "any")
    thresholds = sorted(set(enforcement.warn_at_percent))
    actions: list[Action] = []
    holding = {s["servername"]: s for s in running_servers}
    to_stop: dict[str, list[str]] = {}  # servername -> the resources it is stopped for
    for name, budget in decision.budgets.items():
        limit, used = budget.limit_hours, budget.used_hours
        exhausted = used >= limit and (limit > 0 or used > 0)
        percent = 100.0 if exhausted else budget.percent_used
        crossed = [t for t in thresholds if percent >= t and t < 100] + ([100] if exhausted else [])
        stopped_at = _stopped_at(history, name)
        window_start = now - timedelta(seconds=budget.window_seconds)
        window = format_duration(budget.window_seconds)
        usage = f"{format_hours(name, used)} of {format_hours(name, limit)} in the last {window}"
        numbers = dict(used_hours=float(used), limit_hours=float(limit), resource=name)
        over_since = _over_since(history, name, window_start, stopped_at)
        if not exhausted and over_since is not None:
            # Seen back under the limit: the episode ends here, durably, so that the next
            # exhaustion is warned anew with a fresh grace period rather than stopped at once.
            actions.append(Action(
                hub_user.name, "under_quota",
                message=f"Your {name} quota has room again ({usage}). If it is used up again, "
                + (f"you will be warned {format_duration(enforcement.grace_seconds)} before "
                   "your servers are stopped." if enforcement.grace_seconds else
                   "your servers will be stopped."),
                detail={"over_since": over_since.isoformat(),
                        "percent_used": round(budget.percent_used, 2)},
                **numbers,
            ))  # fmt: skip
            over_since = None
        if crossed:
            top = max(crossed)
            # 100 %: once per episode. Below: once per window since the last stop (a 100 %
            # warning of an ended episode still counts, so a grant does not re-warn at 80 %).
            warned = over_since is not None if top == 100 else any(
                p.action == "warn" and p.resource == name and (p.threshold_percent or 0) >= top
                and _current(p.acted_at, window_start, stopped_at)
                for p in history
            )  # fmt: skip
            if not warned:
                detail = {"percent_used": round(budget.percent_used, 2)}
                if top == 100:
                    over_since = over_since or now
                    detail["over_since"] = over_since.isoformat()
                    message = f"Your {name} quota is used up ({usage}). " + (
                        f"Your running servers will be stopped after "
                        f"{format_duration(enforcement.grace_seconds)}."
                        if enforcement.grace_seconds
                        else "Your running servers are being stopped."
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
            to_stop.setdefault(server.name, []).append(name)
    for name in sorted({p.resource for p in history if p.resource} - decision.budgets.keys()):
        # No longer limited (the budget left the policy, or this user's override) while an
        # episode was open: it ends here, so a budget put back later warns anew with a fresh
        # grace rather than stopping at once on the old over-quota-since.
        over_since = _over_since(
            history, name, datetime.min.replace(tzinfo=UTC), _stopped_at(history, name)
        )
        if over_since is not None:
            actions.append(Action(
                hub_user.name, "under_quota", name,
                message=f"Your {name} quota no longer applies: your servers are not stopped "
                f"for {name} usage.",
                detail={"over_since": over_since.isoformat(), "no_longer_limited": True},
            ))  # fmt: skip
    for servername, names in sorted(to_stop.items()):
        name = names[0]
        budget = decision.budgets[name]
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
            detail={"grace_seconds": enforcement.grace_seconds, "resources": names}, **numbers,
        ))  # fmt: skip
    return actions
