"""A decision with the pools' and the hub's verdict added (ledger/core/shared_capacity.py
has the limits and what each one finds). Pure.

A refusing pool or hub limit refuses the spawn; the message says which and how full, and
for a spent budget when the spawn can start: the latest retry time of every refusing budget,
the user's own (ledger/core/decision.py) and the pools' (found by the same arithmetic,
ledger/store/pool_history.py).
"""

from __future__ import annotations

from ledger.core.decision import describe
from ledger.core.shared_capacity import SharedStatus

__all__ = ["attach", "retry_after"]


def retry_after(decision, status: SharedStatus, *, own_refused: bool):
    """When the spawn can start, counting the shared budgets' retry times: the latest of
    every refusing budget's (the user's and the pools'), or None when waiting cannot help
    (a zero limit, a budget that never frees, a server larger than a cap, no listed group)
    or when only caps refuse (stopping servers helps, not waiting)."""
    spent = [c for c in status.blocking if c.kind == "budget"]
    if not spent or any(c.retry_at is None for c in spent):
        return None
    if any(c.kind == "running" and c.requested > c.limit for c in status.blocking):
        return None
    times = [c.retry_at for c in spent]
    if own_refused:
        own_budgets = [b for b in decision.budgets.values() if b.blocks]
        too_big = any(c.blocks and c.requested > c.cap for c in decision.caps.values())
        if "unlisted" in decision.reasons or too_big:
            return None
        if any(b.blocks != "used_up" or b.retry_at is None for b in own_budgets):
            return None
        times += [b.retry_at for b in own_budgets]
    return max(times)


def attach(decision, status: SharedStatus):
    """``decision`` (ledger.core.decision.Decision) with the shared limits' verdict added: a
    refusing pool or hub limit refuses the spawn, and the message says which and how full,
    and (for a spent pool budget) when the spawn can start."""
    decision.shared = status
    if status.blocking:
        was_allowed = decision.allowed
        decision.allowed = False
        decision.reasons = [*decision.reasons, *status.reasons()]
        if was_allowed:
            decision.suggestion = None
            decision.run_seconds = None
        retry_at = retry_after(decision, status, own_refused=not was_allowed)
        if any(c.kind == "budget" for c in status.blocking):
            decision.suggestion = None  # a smaller server does not help with a spent budget
            decision.retry_at = None  # said once, below, for every budget together
        own = describe(decision) if not was_allowed else ""
        decision.retry_at = retry_at if retry_at is not None else decision.retry_at
        parts = [own, status.message()]
        if retry_at is not None:
            parts.append(
                f"You can start this server at {retry_at:%Y-%m-%d %H:%M:%S} UTC, when enough "
                "usage has left the rolling window."
            )
        decision.message = " ".join(p for p in parts if p)
    else:
        summary = status.summary(decision.request.amounts)
        if summary:
            decision.message = f"{decision.message} {summary}".strip()
    return decision
