"""The enforcer: warn users whose running servers approach a spent budget, then stop them.

One round (``enforce_round``): list the hub's active users (groups come fresh from the hub,
so a user moved to another group is judged by the new limits), read each one's status from
the ledger, plan, act through the Hub REST API, record every action in
``enforcement_actions``. Errors stay with the user they belong to (as jupyterhub-idle-culler
does); a hub that is down ends the round, and the next one tries again.

What is due (the warnings, the stops, their rules) is planned in
ledger/core/enforcement_plan.py; the log is written by ledger/store/enforcement.py.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from ledger.core.enforcement_plan import HubUser, open_episode, plan_user
from ledger.enforcer.hub_api import HubClient, HubError
from ledger.store import page_reads, queries
from ledger.store.enforcement import action_history, record_action, warned_at_limit
from ledger.store.status import user_status

log = logging.getLogger("ledger.enforcer.enforcer")


@dataclass
class RoundStats:
    users: int = 0
    warned: int = 0
    stopped: int = 0
    stop_failures: int = 0
    user_errors: int = 0
    hub_errors: int = 0


async def _enforce_user(engine, hub: HubClient, policy, hub_user: HubUser, history, now,
                        dry_run: bool, stats: RoundStats, *, from_hub: bool = True) -> None:  # fmt: skip
    if from_hub:  # the hub's groups, fresh: kept for the hook, the pages and the pools
        async with engine.begin() as conn:
            await queries.record_groups(conn, hub_user.name, hub_user.groups, now)
    if not policy.enforcement.enabled:
        return
    status = await user_status(engine, policy, hub_user.name, hub_user.groups, now)
    actions = plan_user(status.decision, status.running_servers, hub_user, history, policy, now)
    for action in actions:
        if action.action == "stop" and not dry_run:
            try:
                outcome = await hub.stop_server(action.username, action.servername)
                action.detail["hub"] = outcome
                stats.stopped += 1
            except HubError as exc:  # not recorded as a stop, so the next round tries again
                action.action = "stop_failed"
                action.message = f"Could not stop the server ({exc}); retried next round."
                action.detail["error"] = str(exc)
                stats.stop_failures += 1
        elif action.action == "warn":
            stats.warned += 1
        quiet = action.action in ("warn", "under_quota")
        log.log(logging.INFO if quiet else logging.WARNING,
                "%s%s %s %r: %s", "[dry run] " if dry_run else "", action.action,
                action.username, action.servername, action.message)  # fmt: skip
        await record_action(engine, action, now, dry_run)


async def enforce_round(engine, hub: HubClient, policy, now: datetime, *, dry_run: bool = False):
    """One pass over the hub's active users. Raises HubError only if listing them failed."""
    stats = RoundStats()
    users = [u async for u in hub.active_users() if u.servers]
    since = now - timedelta(seconds=policy.max_window_seconds())
    # Users running nothing whose over-quota episode is open (they stopped their servers
    # during the grace): planned too, with the groups the hub last reported, so a round sees
    # them back under the limit (plan_user records it) and their next exhaustion is warned.
    listed = {u.name for u in users}
    idle = [n for n in await warned_at_limit(engine, since, now, dry_run) if n not in listed]
    stats.users = len(users)
    if not users and not idle:
        return stats
    history = await action_history(engine, [u.name for u in users] + idle, since, now, dry_run)
    idle = [n for n in idle if open_episode(history[n], policy, now)]
    if idle:
        async with engine.connect() as conn:
            idle_users = [HubUser(n, await page_reads.groups_of(conn, n)) for n in idle]
    else:
        idle_users = []
    for hub_user, from_hub in [(u, True) for u in users] + [(u, False) for u in idle_users]:
        try:
            await _enforce_user(engine, hub, policy, hub_user, history[hub_user.name], now,
                                dry_run, stats, from_hub=from_hub)  # fmt: skip
        except Exception:  # noqa: BLE001 - one user's problem must not stop the others
            stats.user_errors += 1
            log.exception("enforcer: skipped %s this round", hub_user.name)
    return stats
