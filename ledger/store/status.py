"""A user's own numbers: every resource's usage record, whose limits apply, what runs now,
and the decision for a server of some size. What ``quota-ledger usage`` and ``check`` print
and the user's quota page and ``/api/v1/me`` show.

One query reads the user's segments in the longest window; the decision
(:func:`ledger.core.decision.evaluate`) and the usage records
(:func:`ledger.core.usage_model.resources_from_segments`) are computed from the same rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.core.decision import Decision, SegmentRow, ServerRequest, evaluate
from ledger.core.grants import Adjustments
from ledger.core.resources import CORE_RESOURCES, display_order
from ledger.core.times import iso
from ledger.core.usage_model import (
    Membership,
    ResourceUsage,
    resources_from_segments,
    running_servers,
    servers_json,
    user_json,
)
from ledger.store import grants, queries, shared_reads


@dataclass
class UserStatus:
    username: str
    at: datetime
    membership: Membership
    resources: dict[str, ResourceUsage]
    decision: Decision  # for the request asked about (unsized: may any server start)
    running_servers: list[dict]  # servername and what each holds (base units)
    segments: list[SegmentRow]  # the rows read, for pages that draw the window
    adjustments: Adjustments = Adjustments()  # grants and credits that count at or after at

    @property
    def groups(self) -> tuple[str, ...]:
        return self.membership.groups

    def user_json(self) -> dict:
        count = len(self.running_servers)
        return user_json(self.username, self.at, self.membership, self.resources, count)

    def to_json(self) -> dict:
        """``usage --format json`` and the base of ``/api/v1/me`` (docs/cli.md)."""
        return {
            **self.user_json(),
            "can_start": self.decision.allowed,
            "reasons": self.decision.reasons,
            "retry_at": iso(self.decision.retry_at),
            "message": self.decision.message,
            "servers": servers_json(self.running_servers),
            "shared": None if self.decision.shared is None else self.decision.shared.to_json(),
        }

    def check_json(self, *, admin: bool = False) -> dict:
        """``check --format json``: the usage model's keys plus the decision for the request
        (``admin``: the shared caps' ``holders`` too)."""
        out = {**self.user_json(), **self.decision.to_json()}
        if admin and self.decision.shared is not None:
            out["shared"] = self.decision.shared.to_json(admin=True)
        return out


async def user_status(
    engine: AsyncEngine,
    policy,
    username: str,
    groups: Iterable[str],
    now: datetime,
    request: ServerRequest | None = None,
    *,
    who: bool = False,
) -> UserStatus:
    """``who``: also read who holds each shared cap (admins' views)."""
    groups = tuple(groups)
    limits = policy.limits_for(username, groups)
    window_seconds = max(policy.max_window_seconds(), policy.window_seconds)
    since = now - timedelta(seconds=window_seconds)
    async with engine.connect() as conn:
        rows = await queries.user_segments(conn, username, since, now)
        adjustments = await grants.user_adjustments(conn, username, now, window_seconds)
        decision = evaluate(
            username,
            limits,
            rows,
            request or ServerRequest(),
            now,
            exhausted_budget_blocks=getattr(policy, "exhausted_budget_blocks", "any"),
            adjustments=adjustments,
        )
        decision = await shared_reads.attach(conn, policy, limits, groups, decision, who=who)
    names = display_order(set(CORE_RESOURCES) | set(policy.resource_names()) | set(limits.budgets))
    return UserStatus(
        username=username,
        at=now,
        membership=Membership.of(groups, limits),
        resources=resources_from_segments(
            limits, rows, now, names, policy.window_seconds, adjustments
        ),
        decision=decision,
        running_servers=running_servers(rows, now),
        segments=rows,
        adjustments=adjustments,
    )
