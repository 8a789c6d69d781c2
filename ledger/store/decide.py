"""``decide()``: the async entry point every caller uses (hub hook, enforcer, CLI, web).

One database round trip reads the user's segments in the longest window the policy uses;
the arithmetic is the pure :func:`ledger.core.decision.evaluate`. Recording the decision is a
separate, optional write so a caller on a deadline (the hub hook) can answer first.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ledger.core.decision import Decision, ServerRequest, evaluate
from ledger.store import queries


async def decide(
    db: AsyncEngine | AsyncConnection,
    policy,
    username: str,
    groups: Iterable[str],
    request: ServerRequest,
    now: datetime,
) -> Decision:
    """May ``username`` (in ``groups``) start ``request`` at ``now``? Never reads the clock."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    limits = policy.limits_for(username, groups)
    if limits.budgets:
        since = now - timedelta(seconds=policy.max_window_seconds())
    else:
        since = now  # caps only: just what is running now
    if limits.budgets or limits.running:
        if isinstance(db, AsyncConnection):
            rows = await queries.user_segments(db, username, since, now)
        else:
            async with db.connect() as conn:
                rows = await queries.user_segments(conn, username, since, now)
    else:
        rows = []
    return evaluate(
        username,
        limits,
        rows,
        request,
        now,
        exhausted_budget_blocks=getattr(policy, "exhausted_budget_blocks", "any"),
    )


async def record(
    db: AsyncEngine,
    decision: Decision,
    *,
    source: str,
    outcome: str | None = None,
    latency_ms: float | None = None,
) -> None:
    """Write ``decision`` to the decision log (the admins' rejection log)."""
    async with db.begin() as conn:
        await queries.record_decision(
            conn, **decision_row(decision, source=source, outcome=outcome, latency_ms=latency_ms)
        )


def decision_row(
    decision: Decision,
    *,
    source: str,
    outcome: str | None = None,
    latency_ms: float | None = None,
) -> dict:
    """The ``queries.record_decision`` arguments for ``decision`` (kept to write later)."""
    return dict(
        decided_at=decision.at,
        username=decision.username,
        servername=decision.request.servername,
        source=source,
        outcome=outcome or ("allowed" if decision.allowed else "denied"),
        reason=decision.reason,
        message=decision.message,
        request=dict(decision.request.amounts),
        groups=list(decision.groups),
        detail=decision.to_json(),
        retry_at=decision.retry_at,
        latency_ms=latency_ms,
    )
