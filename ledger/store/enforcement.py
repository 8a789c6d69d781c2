"""The enforcer's log in ``enforcement_actions``: earlier warnings and stops, new actions.

Every warning and stop is recorded, dry runs included (flagged), so the admins' page and the
next round see what was done; ``action_history`` reads back what planning needs.
"""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.core.enforcement_plan import Action, Past

HISTORY_SQL = text(
    """
    SELECT username, action, resource, threshold_percent, acted_at, detail
    FROM enforcement_actions
    WHERE acted_at > :since AND acted_at <= :until AND dry_run = :dry_run
      AND username = ANY(:users) AND action IN ('warn', 'under_quota', 'stop')
    ORDER BY acted_at
    """
)

# Who may have an open over-quota episode: a 100 % warning in the window (the plan decides).
WARNED_AT_LIMIT_SQL = text(
    """
    SELECT DISTINCT username FROM enforcement_actions
    WHERE acted_at > :since AND acted_at <= :until AND dry_run = :dry_run
      AND action = 'warn' AND threshold_percent = 100
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


async def action_history(
    engine: AsyncEngine, users: list[str], since: datetime, until: datetime, dry_run: bool
) -> dict[str, list[Past]]:
    """Each user's warnings and stops in (since, until], oldest first; dry runs apart."""
    out: dict[str, list[Past]] = {u: [] for u in users}
    async with engine.connect() as conn:
        rows = await conn.execute(
            HISTORY_SQL, {"since": since, "until": until, "dry_run": dry_run, "users": users}
        )
        for username, action, resource, threshold, acted_at, detail in rows:
            out[username].append(Past(action, resource, threshold, acted_at, detail or {}))
    return out


async def warned_at_limit(
    engine: AsyncEngine, since: datetime, until: datetime, dry_run: bool
) -> list[str]:
    """Users warned at 100 % in (since, until]: those whose over-quota episode may be open."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            WARNED_AT_LIMIT_SQL, {"since": since, "until": until, "dry_run": dry_run}
        )
        return sorted(u for (u,) in rows)


async def record_action(engine: AsyncEngine, action: Action, at: datetime, dry_run: bool) -> None:
    async with engine.begin() as conn:
        await conn.execute(INSERT_ACTION_SQL, {
            "acted_at": at, "username": action.username, "servername": action.servername,
            "action": action.action, "resource": action.resource,
            "threshold_percent": action.threshold_percent, "used_hours": action.used_hours,
            "limit_hours": action.limit_hours, "message": action.message, "dry_run": dry_run,
            "detail": json.dumps(action.detail, default=str),
        })  # fmt: skip
