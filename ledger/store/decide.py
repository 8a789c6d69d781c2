"""``decide()``: the async entry point every caller uses (hub hook, enforcer, CLI, web).

Usage comes from the per-day rollups (ledger/store/rollups.py). One round trip reads the
rollup days of the longest window, the segments running now, and either every closed segment
of the window (a user with at most ``rollups.WHOLE_WINDOW_SEGMENTS`` of them: then no answer
needs more) or, for a busier user, the raw segments of the edge days and of the days where
each budget's retry time can lie, found from the days' totals in the same statement
(migrations/versions/0014), so a busy user over budget needs one round trip too. A run-out
time inside a day no edge touches, or a retry day the hint missed (grants or credits move
the limit), costs another round trip (that day's raw segments; a run-out question asks for
all its candidate days at once): at most ``2 + 2 × budgets`` in all. A user with grants or
credits that may count (the first read says so) costs one more, to read them. The reads run
on the pooled connection's asyncpg connection, outside any transaction (each statement sees
its own snapshot), whatever the engine's isolation level: no BEGIN or ROLLBACK is sent
(tests/test_decide_statements.py). Pools and hub caps add their reads
(ledger/store/shared_reads.py). The arithmetic is the pure
:func:`ledger.core.decision.evaluate`. Recording the decision is a separate, optional write
so a caller on a deadline (the hub hook) can answer first.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.util import greenlet_spawn

from ledger.core.decision import Decision, ServerRequest, evaluate
from ledger.core.grants import Adjustments
from ledger.core.rollup_usage import NeedBuckets
from ledger.store import grants, queries, rollups, shared_reads


# Each later round loads the days one budget's question asked for (a run-out question asks
# for all its candidate days at once): at most two questions per budget.
def _max_rounds(limits) -> int:
    return 2 + 2 * len(limits.budgets)


async def decide(
    db: AsyncEngine | AsyncConnection,
    policy,
    username: str,
    groups: Iterable[str],
    request: ServerRequest,
    now: datetime,
) -> Decision:
    """May ``username`` (in ``groups``) start ``request`` at ``now``? Never reads the clock."""
    (decision,) = await decide_many(db, policy, username, groups, [request], now)
    return decision


async def decide_many(
    db: AsyncEngine | AsyncConnection,
    policy,
    username: str,
    groups: Iterable[str],
    requests: Sequence[ServerRequest],
    now: datetime,
) -> list[Decision]:
    """:func:`decide` for several sizes of one user (the choices of a server-options form):
    the user's history, grants and shared capacity are read once and every request is
    evaluated on them, and the days of raw segments the sizes' run-out times fall in are read
    together, so a form of any number of choices costs the round trips of one decision."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    groups = list(groups)
    if isinstance(db, AsyncConnection):
        return await _decide_on(db, policy, username, groups, requests, now)
    # decide's reads use only the pooled asyncpg connection (get_raw_connection): check it
    # out of the engine's pool directly, one greenlet switch each way instead of an
    # AsyncConnection's three, ~0.08 ms of a decide's p50
    # (https://docs.sqlalchemy.org/en/20/core/connections.html#sqlalchemy.engine.Engine.raw_connection)
    pooled = await greenlet_spawn(db.sync_engine.raw_connection)
    try:
        return await _decide_on(_Pooled(pooled), policy, username, groups, requests, now)
    finally:
        await greenlet_spawn(pooled.close)  # back to the pool (reset: no transaction to end)


class _Pooled:
    """What decide's reads ask of an AsyncConnection, for a connection checked out of the
    pool directly."""

    def __init__(self, pooled):
        self._pooled = pooled

    async def get_raw_connection(self):
        return self._pooled


async def _decide_on(conn, policy, username, groups, requests, now) -> list[Decision]:
    limits = policy.limits_for(username, groups)
    # what the pools and the hub hold is read in the history's round trip (None: nothing)
    shared = shared_reads.usage_read(
        policy, limits, groups, username, requests[0].servername if requests else "", now
    )
    decisions, found = await _evaluate_all(conn, policy, limits, username, requests, now, shared)
    return await shared_reads.attach_many(
        conn, policy, limits, groups, decisions, read=shared, found=found
    )


async def _evaluate_all(
    conn, policy, limits, username, requests, now, shared
) -> tuple[list[Decision], list | None]:
    """The decisions, and the shared capacity read's rows when they came with the history."""
    blocks = getattr(policy, "exhausted_budget_blocks", "any")
    if not (limits.budgets or limits.running):
        decisions = [
            evaluate(username, limits, [], r, now, exhausted_budget_blocks=blocks) for r in requests
        ]
        return decisions, None
    windows = sorted({b.window_seconds for b in limits.budgets.values()})
    also = None
    if shared is not None:
        sql = shared_reads.open_scoped_sql(rollups.ALSO_FIRST_PARAMETER)
        also = (sql, shared.arguments())
    history = await rollups.user_history(
        conn, username, now, windows, rollups.retry_limits(limits.budgets), also=also
    )
    found = history.also_rows if shared is not None else None
    # Grants and credits: one more round trip (ledger/store/grants.py), only with budgets and
    # only for a user the history read found some for.
    adjustments = None
    if windows:
        adjustments = (
            await grants.user_adjustments(conn, username, now, windows[-1])
            if history.has_adjustments
            else Adjustments()
        )
    # A limit that grants or credits change later is asked about piece by piece: each piece
    # may want its days once (ledger.core.grants batches them, this bound is for safety).
    steps = len(adjustments.grants) * 2 + len(adjustments.credits) * 2 if adjustments else 0
    decisions: list[Decision | None] = [None] * len(requests)
    pending = list(range(len(requests)))
    for _ in range(_max_rounds(limits) + steps):
        # every size asks for the days it needs; the union is read in one round trip
        histories, needed, waiting = history.histories(limits.budgets), set(), []
        for i in pending:
            try:
                decisions[i] = evaluate(
                    username,
                    limits,
                    history.running,
                    requests[i],
                    now,
                    exhausted_budget_blocks=blocks,
                    histories=histories,
                    adjustments=adjustments,
                )
            except NeedBuckets as need:
                needed |= need.bucket_starts
                waiting.append(i)
        if not waiting:
            return decisions, found
        await rollups.load_days(conn, username, history, needed)
        pending = waiting
    raise RuntimeError(f"decide for {username!r} kept asking for more days of raw segments")


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
