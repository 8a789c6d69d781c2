"""Grants and credits in the ledger (migrations/versions/0008): writes, lists, and the read
the decision makes. The arithmetic is ledger/core/grants.py. A row is held by a user
(``username``) or by a group's pool (``group_name``, migration 0010): exactly one of them.

:func:`user_adjustments` is what :func:`ledger.store.decide.decide` and the user's pages
read: the grants that still count at ``now`` and the credits inside the longest window, in
one statement (one round trip, served by ix_quota_grants_user_end and
ix_quota_credits_user_at).
"""

# ruff: noqa: S608 - column lists are constants of this module; values are bound parameters
from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.core.grants import Adjustments, Credit, Grant, by_user

GRANT_COLUMNS = (
    "id, username, resource, amount_hours, starts_at, ends_at, reason, granted_by, created_at, "
    "revoked_at, revoked_by, revoke_reason, request_id, group_name"
)
CREDIT_COLUMNS = (
    "id, username, resource, amount_hours, credited_at, reason, credited_by, created_at, group_name"
)

# A user's own rows have no group: the reads of them do not name the column (so a decide
# also works on a schema from before migration 0010, as during a rolling upgrade).
USER_GRANT_COLUMNS = GRANT_COLUMNS.replace(", group_name", ", NULL::text AS group_name")
USER_CREDIT_COLUMNS = CREDIT_COLUMNS.replace(", group_name", ", NULL::text AS group_name")

# Grants whose end (or revocation) is after now, and credits dated since now − window: what
# can still count at or after now. Both halves share one row shape (kind 0 grant, 1 credit).
_ADJUSTMENTS_SQL = f"""
    SELECT 0 AS kind, {USER_GRANT_COLUMNS}
    FROM quota_grants
    WHERE username = $1 AND ends_at > $2 AND (revoked_at IS NULL OR revoked_at > $2)
    UNION ALL
    SELECT 1, id, username, resource, amount_hours, credited_at, NULL, reason, credited_by,
           created_at, NULL, NULL, NULL, NULL, NULL::text
    FROM quota_credits
    WHERE username = $1 AND credited_at >= $3
"""
# The same for the pools of the groups in $1 (ix_quota_grants_group_end,
# ix_quota_credits_group_at).
_GROUP_ADJUSTMENTS_SQL = f"""
    SELECT 0 AS kind, {GRANT_COLUMNS}
    FROM quota_grants
    WHERE group_name = ANY($1::text[]) AND ends_at > $2
      AND (revoked_at IS NULL OR revoked_at > $2)
    UNION ALL
    SELECT 1, id, username, resource, amount_hours, credited_at, NULL, reason, credited_by,
           created_at, NULL, NULL, NULL, NULL, group_name
    FROM quota_credits
    WHERE group_name = ANY($1::text[]) AND credited_at >= $3
"""


# Whether a group has grants or credits that :func:`pool_adjustments` would read (a
# superset: two index probes, ix_quota_grants_group_end and ix_quota_credits_group_at) is
# asked by quota_shared_open (migrations/versions/0016), in the statement decide runs anyway:
# the adjustments are read only when it says so.


class GrantError(ValueError):
    """A grant that does not exist or cannot change the way asked."""


def grant_of(row) -> Grant:
    return Grant(*row)


def credit_of(row) -> Credit:
    return Credit(*row)


def _split(records) -> Adjustments:
    grants, credits = [], []
    for kind, *row in records:
        if kind == 0:
            grants.append(Grant(*row))
        else:
            cid, username, res, amount, at, _, reason, by, created, *_, group = row
            credits.append(Credit(cid, username, res, amount, at, reason, by, created, group))
    return Adjustments(tuple(grants), tuple(credits))


async def user_adjustments(
    conn: AsyncConnection, username: str, now: datetime, window_seconds: int
) -> Adjustments:
    """``username``'s grants that count at or after ``now`` and credits of the last window."""
    raw = (await conn.get_raw_connection()).driver_connection
    since = now - timedelta(seconds=window_seconds)
    return _split(await raw.fetch(_ADJUSTMENTS_SQL, username, now, since))


async def pool_adjustments(
    raw, groups: Iterable[str], now: datetime, window_seconds: int
) -> dict[str, Adjustments]:
    """Per group in ``groups``: its pool's grants that count at or after ``now`` and its
    credits of the last ``window_seconds`` (one round trip; ``raw``: the asyncpg connection)."""
    since = now - timedelta(seconds=window_seconds)
    found = _split(await raw.fetch(_GROUP_ADJUSTMENTS_SQL, sorted(set(groups)), now, since))
    return by_user(found.grants, found.credits)


async def adjustments_by_user(
    conn: AsyncConnection, now: datetime, window_seconds: int
) -> dict[str, Adjustments]:
    """Every user's :func:`user_adjustments` (the all-users report)."""
    since = now - timedelta(seconds=window_seconds)
    grants = await conn.execute(
        text(
            f"SELECT {USER_GRANT_COLUMNS} FROM quota_grants WHERE ends_at > :now "
            "AND (revoked_at IS NULL OR revoked_at > :now) AND username IS NOT NULL"
        ),
        {"now": now},
    )
    credits = await conn.execute(
        text(
            f"SELECT {USER_CREDIT_COLUMNS} FROM quota_credits WHERE credited_at >= :since "
            "AND username IS NOT NULL"
        ),
        {"since": since},
    )
    return by_user([grant_of(r) for r in grants], [credit_of(r) for r in credits])


async def add_grant(
    conn: AsyncConnection,
    *,
    username: str | None,
    resource: str,
    amount_hours: Decimal,
    starts_at: datetime,
    ends_at: datetime,
    reason: str,
    granted_by: str,
    created_at: datetime,
    request_id: int | None = None,
    group_name: str | None = None,
) -> Grant:
    """A grant to ``username``, or with ``username=None`` to ``group_name``'s pool."""
    row = (
        await conn.execute(
            text(
                "INSERT INTO quota_grants (username, resource, amount_hours, starts_at, ends_at, "
                "reason, granted_by, created_at, request_id, group_name) VALUES (:username, "
                ":resource, :amount, :starts_at, :ends_at, :reason, :by, :created_at, "
                f":request_id, :group_name) RETURNING {GRANT_COLUMNS}"
            ),
            dict(
                group_name=group_name,
                username=username,
                resource=resource,
                amount=amount_hours,
                starts_at=starts_at,
                ends_at=ends_at,
                reason=reason,
                by=granted_by,
                created_at=created_at,
                request_id=request_id,
            ),
        )
    ).one()
    return grant_of(row)


async def add_credit(
    conn: AsyncConnection,
    *,
    username: str | None,
    resource: str,
    amount_hours: Decimal,
    credited_at: datetime,
    reason: str,
    credited_by: str,
    created_at: datetime,
    group_name: str | None = None,
) -> Credit:
    """A credit to ``username``, or with ``username=None`` to ``group_name``'s pool."""
    row = (
        await conn.execute(
            text(
                "INSERT INTO quota_credits (username, resource, amount_hours, credited_at, "
                "reason, credited_by, created_at, group_name) VALUES (:username, :resource, "
                ":amount, :credited_at, :reason, :by, :created_at, :group_name) "
                f"RETURNING {CREDIT_COLUMNS}"
            ),
            dict(
                group_name=group_name,
                username=username,
                resource=resource,
                amount=amount_hours,
                credited_at=credited_at,
                reason=reason,
                by=credited_by,
                created_at=created_at,
            ),
        )
    ).one()
    return credit_of(row)


async def revoke_grant(
    conn: AsyncConnection, grant_id: int, *, by: str, reason: str, at: datetime
) -> Grant:
    """Revoke a grant from ``at`` on; GrantError if there is none or it already stopped."""
    row = (
        await conn.execute(
            text(f"SELECT {GRANT_COLUMNS} FROM quota_grants WHERE id = :id FOR UPDATE"),
            {"id": grant_id},
        )
    ).one_or_none()
    if row is None:
        raise GrantError(f"there is no grant {grant_id} (quota-ledger grants lists them)")
    grant = grant_of(row)
    if grant.revoked_at is not None:
        raise GrantError(
            f"grant {grant_id} was already revoked at {grant.revoked_at:%Y-%m-%d %H:%M:%S} UTC "
            f"by {grant.revoked_by}"
        )
    if grant.ends_at <= at:
        raise GrantError(f"grant {grant_id} already ended at {grant.ends_at:%Y-%m-%d %H:%M:%S} UTC")
    row = (
        await conn.execute(
            text(
                "UPDATE quota_grants SET revoked_at = :at, revoked_by = :by, "
                f"revoke_reason = :reason WHERE id = :id RETURNING {GRANT_COLUMNS}"
            ),
            {"id": grant_id, "at": max(at, grant.starts_at), "by": by, "reason": reason},
        )
    ).one()
    return grant_of(row)


async def list_grants(
    conn: AsyncConnection,
    usernames: Iterable[str] | None = None,
    *,
    since: datetime | None = None,
    groups: Iterable[str] | None = None,
) -> list[Grant]:
    """Grants (of ``usernames`` if given; of the pools of ``groups`` if given; else all) that
    ended at or after ``since`` (all if None), newest first."""
    where, params = ["TRUE"], {}
    if usernames is not None:
        where.append("username IN :usernames")
        params["usernames"] = list(usernames)
    if groups is not None:
        where.append("group_name IN :groups")
        params["groups"] = list(groups)
    if since is not None:
        where.append("LEAST(ends_at, COALESCE(revoked_at, ends_at)) >= :since")
        params["since"] = since
    stmt = text(
        f"SELECT {GRANT_COLUMNS} FROM quota_grants WHERE {' AND '.join(where)} "
        "ORDER BY created_at DESC, id DESC"
    )
    for name in sorted(params.keys() & {"usernames", "groups"}):
        stmt = stmt.bindparams(bindparam(name, expanding=True))
    return [grant_of(r) for r in await conn.execute(stmt, params)]


async def list_credits(
    conn: AsyncConnection,
    usernames: Iterable[str] | None = None,
    *,
    groups: Iterable[str] | None = None,
) -> list[Credit]:
    where, params = ["TRUE"], {}
    if usernames is not None:
        where.append("username IN :usernames")
        params["usernames"] = list(usernames)
    if groups is not None:
        where.append("group_name IN :groups")
        params["groups"] = list(groups)
    stmt = text(
        f"SELECT {CREDIT_COLUMNS} FROM quota_credits WHERE {' AND '.join(where)} "
        "ORDER BY credited_at DESC, id DESC"
    )
    for name in sorted(params.keys() & {"usernames", "groups"}):
        stmt = stmt.bindparams(bindparam(name, expanding=True))
    return [credit_of(r) for r in await conn.execute(stmt, params)]
