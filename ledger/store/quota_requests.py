"""Quota requests (migrations/versions/0008): a user asks for more of one resource until a
time; an admin approves it (as asked or changed: a grant, ledger/store/grants.py) or
declines it with a message. Every action is a ``quota_request_events`` row (who, when, what).
"""

# ruff: noqa: S608 - column lists and ORDER BY are constants of this module; values are bound
from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.core.grants import Grant
from ledger.core.json_form import json_number
from ledger.core.resources import resource
from ledger.core.times import iso
from ledger.store import grants

REQUEST_STATES = ("pending", "approved", "declined")
COLUMNS = (
    "id, username, resource, amount_hours, until_at, reason, state, created_at, decided_at, "
    "decided_by, decision_message, grant_id, seen_at"
)
# Most pending requests an admin inbox shows at once (oldest first).
INBOX_LIMIT = 200


class RequestError(ValueError):
    """A request that does not exist, or cannot change the way asked (already decided)."""


@dataclass(frozen=True)
class QuotaRequest:
    id: int
    username: str
    resource: str
    amount_hours: Decimal
    until_at: datetime
    reason: str
    state: str
    created_at: datetime
    decided_at: datetime | None
    decided_by: str | None
    decision_message: str | None
    grant_id: int | None
    seen_at: datetime | None  # when the user was first told the decision (hook, page)

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "username": self.username,
            "resource": self.resource,
            "unit": resource(self.resource).hours_unit,
            "amount": json_number(self.amount_hours),
            "until": iso(self.until_at),
            "reason": self.reason,
            "state": self.state,
            "created_at": iso(self.created_at),
            "decided_at": iso(self.decided_at),
            "decided_by": self.decided_by,
            "message": self.decision_message,
            "grant_id": self.grant_id,
        }


async def _event(conn, request_id: int, at: datetime, actor: str, action: str, detail: dict):
    await conn.execute(
        text(
            "INSERT INTO quota_request_events (request_id, at, actor, action, detail) "
            "VALUES (:id, :at, :actor, :action, CAST(:detail AS jsonb))"
        ),
        {"id": request_id, "at": at, "actor": actor, "action": action,
         "detail": json.dumps(detail, default=str)},
    )  # fmt: skip


async def create(
    conn: AsyncConnection,
    *,
    username: str,
    resource_name: str,
    amount_hours: Decimal,
    until_at: datetime,
    reason: str,
    at: datetime,
) -> QuotaRequest:
    row = (
        await conn.execute(
            text(
                "INSERT INTO quota_requests (username, resource, amount_hours, until_at, reason, "
                f"created_at) VALUES (:u, :r, :a, :until, :reason, :at) RETURNING {COLUMNS}"
            ),
            {
                "u": username,
                "r": resource_name,
                "a": amount_hours,
                "until": until_at,
                "reason": reason,
                "at": at,
            },
        )  # fmt: skip
    ).one()
    request = QuotaRequest(*row)
    await _event(conn, request.id, at, username, "requested", request.to_json())
    return request


# quota_requests.id is a bigint: a larger number names no request (asked as a parameter, it
# would be a DataError the web service took for an outage)
MAX_ID = 2**63 - 1


async def get(conn: AsyncConnection, request_id: int, *, for_update: bool = False):
    if not 0 < request_id <= MAX_ID:
        return None
    lock = " FOR UPDATE" if for_update else ""
    row = (
        await conn.execute(
            text(f"SELECT {COLUMNS} FROM quota_requests WHERE id = :id{lock}"), {"id": request_id}
        )
    ).one_or_none()
    return None if row is None else QuotaRequest(*row)


async def of_user(conn: AsyncConnection, username: str, limit: int = 20) -> list[QuotaRequest]:
    rows = await conn.execute(
        text(
            f"SELECT {COLUMNS} FROM quota_requests WHERE username = :u "
            "ORDER BY created_at DESC, id DESC LIMIT :n"
        ),
        {"u": username, "n": limit},
    )
    return [QuotaRequest(*r) for r in rows]


async def listed(
    conn: AsyncConnection, states: Iterable[str] = ("pending",), limit: int = INBOX_LIMIT
) -> list[QuotaRequest]:
    """Requests in ``states``: pending ones oldest first (a queue), decided newest first."""
    states = list(states)
    order = "created_at, id" if states == ["pending"] else "COALESCE(decided_at, created_at) DESC"
    stmt = text(
        f"SELECT {COLUMNS} FROM quota_requests WHERE state IN :states ORDER BY {order} LIMIT :n"
    ).bindparams(bindparam("states", expanding=True))
    return [QuotaRequest(*r) for r in await conn.execute(stmt, {"states": states, "n": limit})]


async def events(conn: AsyncConnection, request_ids: Iterable[int]) -> dict[int, list[dict]]:
    ids = list(request_ids)
    out: dict[int, list[dict]] = {i: [] for i in ids}
    if not ids:
        return out
    stmt = text(
        "SELECT request_id, at, actor, action, detail FROM quota_request_events "
        "WHERE request_id IN :ids ORDER BY at, id"
    ).bindparams(bindparam("ids", expanding=True))
    for request_id, at, actor, action, detail in await conn.execute(stmt, {"ids": ids}):
        out[request_id].append({"at": iso(at), "actor": actor, "action": action,
                                "detail": detail})  # fmt: skip
    return out


async def _pending(conn, request_id: int) -> QuotaRequest:
    request = await get(conn, request_id, for_update=True)
    if request is None:
        raise RequestError(f"there is no request {request_id}")
    if request.state != "pending":
        raise RequestError(
            f"request {request_id} was already {request.state} by {request.decided_by} at "
            f"{request.decided_at:%Y-%m-%d %H:%M:%S} UTC"
        )
    return request


async def approve(
    conn: AsyncConnection,
    request_id: int,
    *,
    by: str,
    at: datetime,
    amount_hours: Decimal | None = None,
    until_at: datetime | None = None,
    message: str = "",
) -> tuple[QuotaRequest, Grant]:
    """Approve as asked, or with a changed amount or end: a grant from ``at`` on."""
    request = await _pending(conn, request_id)
    amount = request.amount_hours if amount_hours is None else amount_hours
    until = request.until_at if until_at is None else until_at
    if until <= at:
        raise RequestError(f"request {request_id} asks until {iso(until)}, which has passed")
    grant = await grants.add_grant(
        conn, username=request.username, resource=request.resource, amount_hours=amount,
        starts_at=at, ends_at=until, reason=f"request {request.id}: {request.reason}",
        granted_by=by, created_at=at, request_id=request.id,
    )  # fmt: skip
    row = (
        await conn.execute(
            text(
                "UPDATE quota_requests SET state = 'approved', decided_at = :at, decided_by = :by, "
                f"decision_message = :m, grant_id = :g WHERE id = :id RETURNING {COLUMNS}"
            ),
            {"at": at, "by": by, "m": message or None, "g": grant.id, "id": request_id},
        )
    ).one()
    changed = amount != request.amount_hours or until != request.until_at
    await _event(conn, request_id, at, by, "approved",
                 {"grant_id": grant.id, "amount": str(amount), "until": iso(until),
                  "changed": changed, "message": message})  # fmt: skip
    return QuotaRequest(*row), grant


async def decline(
    conn: AsyncConnection, request_id: int, *, by: str, at: datetime, message: str
) -> QuotaRequest:
    await _pending(conn, request_id)
    row = (
        await conn.execute(
            text(
                "UPDATE quota_requests SET state = 'declined', decided_at = :at, decided_by = :by, "
                f"decision_message = :m WHERE id = :id RETURNING {COLUMNS}"
            ),
            {"at": at, "by": by, "m": message, "id": request_id},
        )
    ).one()
    await _event(conn, request_id, at, by, "declined", {"message": message})
    return QuotaRequest(*row)


async def unseen_decisions(conn: AsyncConnection, username: str) -> list[QuotaRequest]:
    """Decided requests the user was not told about yet (the next spawn's progress line)."""
    rows = await conn.execute(
        text(
            f"SELECT {COLUMNS} FROM quota_requests WHERE username = :u AND state <> 'pending' "
            "AND seen_at IS NULL ORDER BY decided_at"
        ),
        {"u": username},
    )
    return [QuotaRequest(*r) for r in rows]


async def mark_seen(conn: AsyncConnection, request_ids: Iterable[int], at: datetime) -> None:
    ids = list(request_ids)
    if ids:
        stmt = text(
            "UPDATE quota_requests SET seen_at = :at WHERE id IN :ids AND seen_at IS NULL"
        ).bindparams(bindparam("ids", expanding=True))
        await conn.execute(stmt, {"at": at, "ids": ids})
