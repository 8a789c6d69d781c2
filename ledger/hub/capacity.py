"""Holding shared capacity for a spawn: the lease half of the quota check.

After ``decide`` allows a spawn, a spawn that meets concurrent caps (the user's own
``running:``, a group pool's, the hub's) takes a lease for its size
(``ledger.store.leases.take``, race-free in PostgreSQL). The lease is released when the spawn
fails or is cancelled (JupyterHub's ``spawner._spawn_future`` ends with an error or is
cancelled: jupyterhub/handlers/base.py ``spawn_single_user``) and when the server stops
(``post_stop_hook``: a server stopped before the collector saw it would otherwise hold its
share of a cap until the TTL, while spawns wait in line for it). Otherwise it ends by itself
when the collector (or the hub's recorder) records the server, or after its TTL: the
spawner's ``start_timeout`` + ``http_timeout`` + a margin, so a hub that dies mid-spawn
holds nothing for long.
"""

from __future__ import annotations

import asyncio
import logging

from ledger.core import shared_verdict
from ledger.core.decision import Decision, ServerRequest
from ledger.hub.background import run_in_background
from ledger.store import leases, shared_reads

log = logging.getLogger("ledger.hub")

# Between start() returning and the collector's next look at the pod.
LEASE_MARGIN_SECONDS = 120.0
# A release runs in the background (nothing waits for it): bounded so a ledger that hangs
# keeps no pooled connection; the lease then expires at its TTL.
RELEASE_TIMEOUT_SECONDS = 10.0


def _release_later(engine, lease_id: int, why: str, then=None) -> None:
    async def run() -> None:
        await release(engine, lease_id, why)
        if then is not None:
            then()

    run_in_background(run())


def lease_ttl_seconds(spawner) -> float:
    start = float(getattr(spawner, "start_timeout", 60) or 60)
    http = float(getattr(spawner, "http_timeout", 30) or 30)
    return start + http + LEASE_MARGIN_SECONDS


def needs_lease(policy, limits, groups) -> bool:
    return bool(limits.running) or shared_reads.applies(policy, limits, groups)


async def hold(
    engine, spawner, policy, groups, request: ServerRequest, now, decision: Decision,
    *, timeout_seconds: float = leases.TAKE_TIMEOUT_SECONDS,
) -> Decision:  # fmt: skip
    """``decision``, refused if the caps no longer allow the spawn once counted under lock;
    when allowed, the spawn holds a lease released if the spawn fails. The take's locks and
    statements are bounded by ``timeout_seconds`` (it outlives a cancel, see below)."""
    limits = policy.limits_for(decision.username, groups)
    if not decision.allowed or limits.denied_all or not needs_lease(policy, limits, groups):
        return decision
    taking = asyncio.ensure_future(leases.take(
        engine, policy, limits, decision.username, groups, request.amounts,
        request.servername, now, lease_ttl_seconds(spawner), timeout_seconds=timeout_seconds,
    ))  # fmt: skip
    try:
        # shielded: the hub cancels a spawn it stops while pending
        # (jupyterhub/apihandlers/users.py ``delete``), or the check's time runs out; a take
        # cancelled as its COMMIT goes out may hold a lease nobody releases until its TTL,
        # so the take finishes and its lease is released
        result = await asyncio.shield(taking)
    except asyncio.CancelledError:
        run_in_background(taking)  # like the release it may start
        taking.add_done_callback(lambda taken: _release_taken(engine, taken))
        raise
    if not result.granted:
        return shared_verdict.attach(decision, result.status)
    decision.shared = result.status
    if result.lease_id is not None:
        release_when_spawn_fails(engine, spawner, result.lease_id)
    return decision


def _release_taken(engine, taken: asyncio.Future) -> None:
    if taken.cancelled() or taken.exception() is not None:
        return  # nothing was taken (its transaction rolled back)
    lease_id = taken.result().lease_id
    if lease_id is not None:
        _release_later(engine, lease_id, "the spawn was cancelled")


def release_when_spawn_fails(engine, spawner, lease_id: int) -> None:
    spawner._quota_lease_id = lease_id
    future = getattr(spawner, "_spawn_future", None)
    if future is None:
        return  # not spawned by the hub's handler (a test double): TTL and segments end it

    def done(f) -> None:
        if f.cancelled() or f.exception() is not None:
            _release_later(engine, lease_id, "the spawn failed")

    future.add_done_callback(done)


def release_when_stopped(engine, spawner, then) -> None:
    """``post_stop_hook``'s half: the server's lease, if it still has one, is released in the
    background (the stop never waits on the ledger), then ``then()`` (wake the waiting line)."""
    lease_id = getattr(spawner, "_quota_lease_id", None)
    if lease_id is None:
        then()
        return
    spawner._quota_lease_id = None
    _release_later(engine, lease_id, "the server stopped", then)


async def release(engine, lease_id: int, why: str) -> None:
    """Never raises: a lease that cannot be deleted now expires at its TTL."""
    try:
        async with asyncio.timeout(RELEASE_TIMEOUT_SECONDS):
            held = await leases.release(engine, lease_id)
        if held:
            log.info("quota: released lease %s (%s)", lease_id, why)
    except Exception as exc:  # noqa: BLE001
        log.warning("quota: lease %s not released (%s): %s; it expires by itself", lease_id,
                    why, exc)  # fmt: skip
