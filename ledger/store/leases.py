"""Leases: capacity held by a spawn between passing the caps and the collector seeing it.

:func:`take` is the race-free half of a cap check: under transaction-level advisory locks,
one per bottleneck the spawn meets (the user's own caps, each capped pool, the hub), it
counts what runs plus the live leases, evaluates the caps (ledger/core/shared_capacity.py)
and inserts the lease only if everything fits — so fifty spawns racing for two free GPUs
get exactly two leases
(https://www.postgresql.org/docs/current/explicit-locking.html#ADVISORY-LOCKS). The locks
are taken in one fixed order, so two checks never wait on each other in a cycle.

A lease stops counting when a segment of its server appears (it is that segment now), and
is deleted then, on :func:`release` (the spawn failed or was cancelled) or after
``expires_at`` (a server stopped before the collector saw it keeps its lease that long).
Every statement is bound; the hub's database role may insert and delete leases and nothing
else here (ledger/store/roles.py).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.core.shared_capacity import HUB, USER, SharedStatus, pools_for
from ledger.store import shared_reads

# Class id of the two-key advisory locks (the migrations' single-key lock is another space).
LOCK_CLASS = 727275

_LOCK_SQL = "SELECT pg_advisory_xact_lock($1, k) FROM unnest($2::int[]) AS k"
_PRUNE_SQL = f"""
    DELETE FROM leases l
    WHERE l.expires_at <= $1 OR EXISTS (
        SELECT 1 FROM segments s
        WHERE s.username = l.username AND s.servername = l.servername
          AND s.started_at >= l.taken_at - interval '{shared_reads.LEASE_SKEW_SECONDS} seconds')
"""  # noqa: S608 - a constant
_INSERT_SQL = """
    INSERT INTO leases (username, servername, pools, cpu_millicores, memory_bytes, gpu_count,
                        extended, taken_at, expires_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9)
    ON CONFLICT (username, servername) DO UPDATE SET
        id = DEFAULT, pools = EXCLUDED.pools, cpu_millicores = EXCLUDED.cpu_millicores,
        memory_bytes = EXCLUDED.memory_bytes, gpu_count = EXCLUDED.gpu_count,
        extended = EXCLUDED.extended, taken_at = EXCLUDED.taken_at,
        expires_at = EXCLUDED.expires_at
    RETURNING id
"""
# A new take of a server's lease replaces the old one under a new id (``id = DEFAULT``
# above): a release of the old lease arriving late (a cancelled or failed spawn's, a timed-out
# check's) deletes nothing, instead of the lease the server's new spawn holds.

# How long a take may wait for a lock or run a statement unless told: a take holds a pooled
# connection and is shielded from its caller's cancel (ledger/hub/capacity.py), so without a
# bound a stuck lock holder (https://www.postgresql.org/docs/current/runtime-config-client.html
# #GUC-LOCK-TIMEOUT) would keep one connection per spawn attempt until the pool runs dry.
TAKE_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class LeaseResult:
    lease_id: int | None  # None: refused (status says by what), or nothing needed a lease
    status: SharedStatus

    @property
    def granted(self) -> bool:
        return self.status.allowed


def lock_keys(names: Iterable[str]) -> list[int]:
    """Stable signed 32-bit keys, sorted: the one order every check locks in."""
    keys = {zlib.crc32(n.encode()) for n in names}
    return sorted(k - 2**32 if k >= 2**31 else k for k in keys)


def bottlenecks(policy, limits, username: str, groups: Iterable[str]) -> list[str]:
    """The scopes whose caps this user's spawn meets: their locks."""
    names = [f"{USER}:{username}"] if limits.running else []
    names += [f"pool:{g}" for g in pools_for(policy.pools, groups) if policy.pools[g].running]
    if policy.hub.running:
        names.append(HUB)
    return names


async def take(
    engine: AsyncEngine, policy, limits, username: str, groups: Iterable[str],
    request_amounts: Mapping[str, int], servername: str, now: datetime, ttl_seconds: float,
    *, timeout_seconds: float = TAKE_TIMEOUT_SECONDS,
) -> LeaseResult:  # fmt: skip
    """Check the caps under lock and hold a lease for ``request_amounts`` if they allow it.
    Raises (asyncpg's ``LockNotAvailableError`` or ``QueryCanceledError``) if a lock or a
    statement takes longer than ``timeout_seconds``; nothing is taken then."""
    groups = sorted(set(groups))
    names = bottlenecks(policy, limits, username, groups)
    pools = [g for g in pools_for(policy.pools, groups) if policy.pools[g].running]
    async with engine.connect() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        async with raw.transaction():
            bound_ms = max(1, round(timeout_seconds * 1000))
            await raw.execute(
                f"SET LOCAL lock_timeout = {bound_ms}; SET LOCAL statement_timeout = {bound_ms}"
            )
            if names:
                await raw.execute(_LOCK_SQL, LOCK_CLASS, lock_keys(names))
            await raw.execute(_PRUNE_SQL, now)
            usage = await shared_reads.read_usage(raw, policy, username, groups, servername, now)
            status = shared_reads.evaluate(policy, limits, username, groups, request_amounts,
                                           usage)  # fmt: skip
            if not status.allowed or not names:
                return LeaseResult(None, status)
            lease_id = await raw.fetchval(
                _INSERT_SQL,
                username,
                servername,
                pools,
                int(request_amounts.get("cpu", 0)),
                int(request_amounts.get("memory", 0)),
                int(request_amounts.get("gpu", 0)),
                shared_reads.extended_json(request_amounts),
                now,
                now + timedelta(seconds=ttl_seconds),
            )
    return LeaseResult(lease_id, status)


async def release(engine: AsyncEngine, lease_id: int) -> bool:
    """End a lease (the spawn failed or was cancelled). True if it was still held; a lease
    taken again since (a new spawn of the server) has a new id and stays."""
    async with engine.connect() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        return await raw.fetchval("DELETE FROM leases WHERE id = $1 RETURNING true", lease_id)


async def live_leases(engine: AsyncEngine, now: datetime) -> list[dict]:
    """The leases that count at ``now`` (admin pages, tests)."""
    async with engine.connect() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        rows = await raw.fetch(
            f"""SELECT l.id, l.username, l.servername, l.pools, l.cpu_millicores,
                       l.memory_bytes, l.gpu_count, l.extended, l.taken_at, l.expires_at
                FROM leases l
                WHERE l.expires_at > $1 AND l.taken_at <= $1 AND NOT EXISTS (
                    SELECT 1 FROM segments s
                    WHERE s.username = l.username AND s.servername = l.servername
                      AND s.started_at >= l.taken_at
                          - interval '{shared_reads.LEASE_SKEW_SECONDS} seconds')
                ORDER BY l.taken_at, l.id""",  # noqa: S608 - a constant
            now,
        )
    return [dict(r) for r in rows]
