"""SQL the pages need beyond ``ledger.store.status`` and ``ledger.store.report``. Bound parameters only.

Every per-user read takes the username as a bound parameter and filters on it: the user
pages can only ever show rows of the user they were asked for. Admin lists are newest first
and bounded (``limit``/``offset``) so a page never reads a whole table.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

# Through ix_segments_user_end (username, end): only the user's rows that ended after
# ``since`` are read and sorted, however long their history is.
RECENT_SESSIONS_SQL = text(
    """
    SELECT servername, cpu_millicores, memory_bytes, gpu_count, extended,
           started_at, ended_at, end_reason
    FROM segments
    WHERE username = :username
      AND COALESCE(ended_at, 'infinity'::timestamptz) > :since
      AND started_at < :at
    ORDER BY started_at DESC
    LIMIT :limit
    """
)


async def recent_sessions(
    conn: AsyncConnection, username: str, since: datetime, at: datetime, limit: int
) -> list[dict]:
    result = await conn.execute(
        RECENT_SESSIONS_SQL, {"username": username, "since": since, "at": at, "limit": limit}
    )
    return [dict(r._mapping) for r in result]


async def oom_kills(
    conn: AsyncConnection, username: str, since: datetime, at: datetime, limit: int = 10
) -> list[dict]:
    result = await conn.execute(
        text(
            """
            SELECT servername, pod_name, container_name, killed_at, memory_limit_bytes
            FROM oom_kills
            WHERE username = :username AND killed_at >= :since AND killed_at <= :at
            ORDER BY killed_at DESC
            LIMIT :limit
            """
        ),
        {"username": username, "since": since, "at": at, "limit": limit},
    )
    return [dict(r._mapping) for r in result]


async def enforcement_for_user(
    conn: AsyncConnection, username: str, since: datetime, at: datetime, limit: int = 10
) -> list[dict]:
    result = await conn.execute(
        text(
            """
            SELECT acted_at, servername, action, resource, threshold_percent, used_hours,
                   limit_hours, message
            FROM enforcement_actions
            WHERE username = :username AND acted_at >= :since AND acted_at <= :at
              AND NOT dry_run
            ORDER BY acted_at DESC
            LIMIT :limit
            """
        ),
        {"username": username, "since": since, "at": at, "limit": limit},
    )
    return [dict(r._mapping) for r in result]


async def groups_of(conn: AsyncConnection, username: str) -> list[str]:
    """A user's groups as the hub last reported them (for admins looking at someone else)."""
    result = await conn.execute(
        text("SELECT group_name FROM user_groups WHERE username = :u ORDER BY group_name"),
        {"u": username},
    )
    return [g for (g,) in result]


async def running_servers(
    conn: AsyncConnection, at: datetime, limit: int, offset: int
) -> tuple[int, list[dict]]:
    """Open segments at ``at`` (oldest first), and how many there are."""
    where = "started_at <= :at AND COALESCE(ended_at, 'infinity'::timestamptz) > :at"
    total = await conn.scalar(text(f"SELECT count(*) FROM segments WHERE {where}"), {"at": at})  # noqa: S608 - constant
    result = await conn.execute(
        text(
            f"""
            SELECT username, servername, pod_name, cpu_millicores, memory_bytes, gpu_count,
                   started_at, last_seen_at
            FROM segments WHERE {where}
            ORDER BY started_at, username
            LIMIT :limit OFFSET :offset
            """  # noqa: S608 - constant condition above; values are bound
        ),
        {"at": at, "limit": limit, "offset": offset},
    )
    return int(total or 0), [dict(r._mapping) for r in result]


# Up to ``until`` (``serve --at``: the logs as they stood then), or everything when None.
_REJECTIONS_COUNT = text(
    "SELECT count(*) FROM decisions WHERE outcome <> 'allowed' "
    "AND (CAST(:until AS timestamptz) IS NULL OR decided_at <= :until)"
)
_REJECTIONS = text(
    """
    SELECT decided_at, username, servername, source, outcome, reason, message, request,
           groups, retry_at
    FROM decisions
    WHERE outcome <> 'allowed' AND (CAST(:until AS timestamptz) IS NULL OR decided_at <= :until)
    ORDER BY decided_at DESC, id DESC
    LIMIT :limit OFFSET :offset
    """
)
_ACTIONS_COUNT = text(
    "SELECT count(*) FROM enforcement_actions "
    "WHERE CAST(:until AS timestamptz) IS NULL OR acted_at <= :until"
)
_ACTIONS = text(
    """
    SELECT acted_at, username, servername, action, resource, threshold_percent, used_hours,
           limit_hours, message, dry_run
    FROM enforcement_actions
    WHERE CAST(:until AS timestamptz) IS NULL OR acted_at <= :until
    ORDER BY acted_at DESC, id DESC
    LIMIT :limit OFFSET :offset
    """
)


async def _page(conn, count, rows, limit: int, offset: int, until) -> tuple[int, list[dict]]:
    total = await conn.scalar(count, {"until": until})
    result = await conn.execute(rows, {"until": until, "limit": limit, "offset": offset})
    return int(total or 0), [dict(r._mapping) for r in result]


async def rejections(
    conn: AsyncConnection, limit: int, offset: int, until: datetime | None = None
) -> tuple[int, list[dict]]:
    """The decision log without the allowed decisions, newest first, up to ``until``."""
    return await _page(conn, _REJECTIONS_COUNT, _REJECTIONS, limit, offset, until)


async def enforcement_actions(
    conn: AsyncConnection, limit: int, offset: int, until: datetime | None = None
) -> tuple[int, list[dict]]:
    """The enforcer's log, newest first, up to ``until``."""
    return await _page(conn, _ACTIONS_COUNT, _ACTIONS, limit, offset, until)


async def collector_health(conn: AsyncConnection) -> list[dict]:
    result = await conn.execute(
        text(
            """
            SELECT collector_id, hostname, version, started_at, last_heartbeat_at,
                   last_event_at, last_relist_at, events_total, pods_skipped_total,
                   buffer_depth, live_pods
            FROM collector_heartbeats
            ORDER BY last_heartbeat_at DESC
            """
        )
    )
    return [dict(r._mapping) for r in result]


async def group_members(conn: AsyncConnection) -> dict[str, list[str]]:
    """group → its members, as the hub last reported them."""
    result = await conn.execute(
        text("SELECT group_name, username FROM user_groups ORDER BY group_name, username")
    )
    out: dict[str, list[str]] = {}
    for group, username in result:
        out.setdefault(group, []).append(username)
    return out
