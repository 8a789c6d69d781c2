"""Reads for shared capacity (ledger/core/shared_capacity.py): what the hub, a group's pool
and a user hold right now (running segments plus live leases: the per-scope open totals of
migrations/versions/0011, corrected by the few servers that differ at ``now``), and a pool's
usage over its budgets' windows (the per-group rollups of migrations/versions/0009, plus the
raw starts and ends of the last partial minute at each edge of the window, plus the members'
open segments from the open totals), all in one statement per decide.

:func:`shared_status` is what ``decide`` and ``leases.take`` evaluate; the SQL is here once.
A pool's members are the ``user_groups`` cache the hub hook and enforcer keep, except the
requesting user, whose groups are the ones the hub reported for this spawn.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.core import shared_capacity, shared_verdict
from ledger.core.resources import SERVERS
from ledger.core.shared_capacity import (
    HUB,
    POOL,
    USER,
    SharedStatus,
    SharedUsage,
    evaluate_shared,
    pools_for,
)
from ledger.store import grants, pool_history

# A lease ends when a segment of its server that started at or after it (less this much, for
# clocks of hub and collector that disagree a little) is recorded.
LEASE_SKEW_SECONDS = 5

# Live leases (pools: the groups the lease counts toward), without the requested server ($2,
# $3): a restart replaces it. A lease stops counting once a segment of its server is recorded.
LIVE_LEASES_SQL = f"""
    SELECT l.username, l.servername, l.cpu_millicores, l.memory_bytes, l.gpu_count,
           l.extended, l.pools
    FROM leases l
    WHERE l.expires_at > $1 AND l.taken_at <= $1
      AND NOT (l.username = $2 AND l.servername = $3)
      AND NOT EXISTS (
          SELECT 1 FROM segments s
          WHERE s.username = l.username AND s.servername = l.servername
            AND s.started_at >= l.taken_at - interval '{LEASE_SKEW_SECONDS} seconds')
"""  # noqa: S608 - constants only

# Live capacity scanned: running segments (pools NULL) and live leases, without the requested
# server. Running at $1 is open (the end index's single key 'infinity') or closed after $1 (a
# two-sided range of it): so written, even the generic plan a prepared statement settles on
# after five runs scans those ranges, not every segment that started before $1. Only the
# admins' "who holds it" view (kind 'who') still reads it: decide reads the open totals.
LIVE_SQL = f"""
    SELECT s.username, s.servername, s.cpu_millicores, s.memory_bytes, s.gpu_count,
           s.extended, NULL::text[] AS pools
    FROM segments s
    WHERE COALESCE(s.ended_at, 'infinity'::timestamptz) = 'infinity'::timestamptz
      AND s.started_at <= $1 AND NOT (s.username = $2 AND s.servername = $3)
    UNION ALL
    SELECT s.username, s.servername, s.cpu_millicores, s.memory_bytes, s.gpu_count,
           s.extended, NULL::text[] AS pools
    FROM segments s
    WHERE COALESCE(s.ended_at, 'infinity'::timestamptz) > $1
      AND COALESCE(s.ended_at, 'infinity'::timestamptz) < 'infinity'::timestamptz
      AND s.started_at <= $1 AND NOT (s.username = $2 AND s.servername = $3)
    UNION ALL
    {LIVE_LEASES_SQL}
"""  # noqa: S608 - constants only

# Per scope: 'hub' (when $4), each group in $5 (members: user_groups, or for the requesting
# user $2 the groups in $6), and 'user' ($2's own). kind 'sum' rows carry the core columns
# and the server count; kind 'ext' rows one extended resource each; kind 'lease' the
# requesting user's own leases; kind 'who' one user's holding (only when $7, for admins).
_SCOPED = f"""
    WITH live AS ({LIVE_SQL}),
    scoped AS (
        SELECT '' AS scope, live.* FROM live WHERE $4
        UNION ALL
        SELECT g.name, live.* FROM unnest($5::text[]) AS g(name) JOIN live ON
            CASE WHEN live.pools IS NOT NULL THEN g.name = ANY(live.pools)
                 WHEN live.username = $2 THEN g.name = ANY($6::text[])
                 ELSE EXISTS (SELECT 1 FROM user_groups ug
                              WHERE ug.username = live.username AND ug.group_name = g.name)
            END
        UNION ALL
        SELECT NULL, live.* FROM live WHERE live.username = $2
    )
    SELECT 'sum' AS kind, scope, NULL AS name,
           -- distinct servers by hashing, not by sorting records of collated text (EXPLAIN:
           -- that sort was most of this statement with ~1,700 servers running)
           (SELECT count(*) FROM (SELECT DISTINCT d.username, d.servername FROM scoped d
                                  WHERE d.scope IS NOT DISTINCT FROM scoped.scope) servers)
               AS servers,
           sum(cpu_millicores)::bigint AS cpu, sum(memory_bytes)::bigint AS memory,
           sum(gpu_count)::bigint AS gpu
    FROM scoped GROUP BY scope
    UNION ALL
    SELECT 'ext', scope, e.key, 0, sum(e.value::bigint)::bigint, 0, 0
    FROM scoped, jsonb_each_text(scoped.extended) AS e
    WHERE scoped.extended <> '{{}}'::jsonb GROUP BY scope, e.key
    UNION ALL
    SELECT 'lease', NULL, NULL, count(*), sum(cpu_millicores)::bigint,
           sum(memory_bytes)::bigint, sum(gpu_count)::bigint
    FROM scoped WHERE scope IS NULL AND pools IS NOT NULL
    UNION ALL
    SELECT 'who', scope, username, count(DISTINCT servername), sum(cpu_millicores)::bigint,
           sum(memory_bytes)::bigint, sum(gpu_count)::bigint
    FROM scoped WHERE $7 GROUP BY scope, username
"""  # noqa: S608 - constants only

# The open totals' marks (migrations/versions/0011_open_totals.py): the hub's scope, and the
# distinct servers' resource.
HUB_SCOPE = ""
SERVERS_TOTAL = "#servers"


# What runs per scope, the requesting user's holding, whether the budgeted pools have grants
# or credits, and each pool budget read, in one round trip: a PL/pgSQL function
# (migrations/versions/0016_shared_generic_plans.py holds the SQL and says why) whose cached
# generic plan prunes the monthly partitions before it runs. What runs at ``at`` per scope:
# '' the hub (when ``hub``), each capped group, from the open totals (migration 0011: per
# scope, Σ over the open segments of the members user_groups caches) corrected server by
# server where "open now" and "running at ``at``" differ or the cache is not what counts:
# - servers with an open segment that starts after ``at``, or a closed one that started by
#   ``at`` and ends after it (ranges that are tiny when ``at`` is about the present, and
#   still right when it is not);
# - the requesting user's (counted in the groups the hub reported, not the cache), and the
#   requested server left out: a restart replaces it;
# - the servers of live leases (a lease and a segment of one server are one server).
# When there are none (a decide about the present, by a user with nothing running or leased),
# the function reads the open totals alone (migrations/versions/0017_shared_open_fast_path.py).
def open_scoped_sql(first_parameter: int = 1) -> str:
    """:data:`_OPEN_SCOPED` with its 11 parameters numbered from ``first_parameter`` (decide
    sends it after the user's history read's parameters, ledger/store/rollups.py)."""
    numbers = ", ".join(f"${n}" for n in range(first_parameter, first_parameter + 11))
    return f"SELECT kind, scope, resource, amount FROM quota_shared_open({numbers})"  # noqa: S608 - numbers only


_OPEN_SCOPED = open_scoped_sql()

# A pool's usage over one window (group, username, in group, at, window seconds), from the
# per-group rollups (migration 0009) plus the edge minutes' raw starts and ends and the
# members' open segments from the open totals (migration 0011): cpu, memory, gpu as text.
_POOL_USED = "SELECT cpu, memory, gpu FROM quota_pool_used($1, $2, $3, $4, $5)"


async def _raw(conn: AsyncConnection):
    return (await conn.get_raw_connection()).driver_connection


@dataclass(frozen=True)
class UsageRead:
    """What :func:`read_usage` asks about one user's spawn, known before any round trip, so
    decide can send it together with the user's own history (ledger/store/decide.py)."""

    username: str
    servername: str
    now: datetime
    groups: list[str]  # the groups the hub reported, sorted
    pools: list[str]  # the pools among them
    capped: list[str]  # pools with running caps
    hub: bool  # the hub has running caps
    budgeted: list[str]  # pools with budgets
    longest_seconds: int  # the longest pool budget window
    reads: list[tuple[str, bool, int]]  # (group, in group, window seconds) per pool budget read

    @classmethod
    def of(cls, policy, username: str, groups: Iterable[str], servername: str, now: datetime):
        groups = sorted(set(groups))
        pools = pools_for(policy.pools, groups)
        budgeted = [g for g in pools if policy.pools[g].budgets]
        windows = {
            g: sorted({b.window_seconds or policy.window_seconds for b in policy.pools[g].budgets.values()})
            for g in pools
        }  # fmt: skip
        return cls(
            username, servername, now, groups, pools,
            capped=[g for g in pools if policy.pools[g].running],
            hub=bool(policy.hub.running),
            budgeted=budgeted,
            longest_seconds=max((w for g in budgeted for w in windows[g]), default=0),
            reads=[(g, g in groups, w) for g in pools for w in windows[g]],
        )  # fmt: skip

    def arguments(self) -> tuple:
        """:data:`_OPEN_SCOPED`'s parameters."""
        since = self.now - timedelta(seconds=self.longest_seconds)
        return (
            self.now, self.username, self.servername, self.hub, self.capped, self.groups,
            self.budgeted, since, [g for g, _, _ in self.reads],
            [in_group for _, in_group, _ in self.reads], [float(w) for _, _, w in self.reads],
        )  # fmt: skip


async def open_scoped(
    raw, now: datetime, username: str, servername: str, hub: bool, capped: list[str],
    reported: list[str], budgeted: list[str] = (), since: datetime | None = None,
    pool_reads: Sequence[tuple[str, bool, int]] = (),
) -> tuple[list[tuple], bool, list[dict[str, int]]]:  # fmt: skip
    """:data:`_OPEN_SCOPED`: what runs per scope in the scan's row shape; whether the
    ``budgeted`` pools have grants or credits from ``since`` on; and per ``(group, in group,
    window seconds)`` of ``pool_reads`` the pool's usage (:data:`_POOL_USED`), one round trip."""
    found = await raw.fetch(
        _OPEN_SCOPED, now, username, servername, hub, capped, reported, list(budgeted),
        since or now, [group for group, _, _ in pool_reads],
        [in_group for _, in_group, _ in pool_reads],
        [float(window) for _, _, window in pool_reads],
    )  # fmt: skip
    return _parsed_open(found, len(pool_reads))


def _parsed_open(found, reads: int) -> tuple[list[tuple], bool, list[dict[str, int]]]:
    """:data:`_OPEN_SCOPED`'s rows: the scan's rows, whether adjusted, each read's usage."""
    adjusted = any(r[0] == "adjusted" for r in found)
    used: list[dict[str, int]] = [{} for _ in range(reads)]
    for kind, scope, name, amount in found:
        if kind == "pool":
            used[int(scope)][name] = int(Decimal(amount))
    rows = [r for r in found if r[0] not in ("adjusted", "pool")]
    return _from_totals(rows), adjusted, used


def _from_totals(records) -> list[tuple]:
    """:data:`_OPEN_SCOPED`'s (kind, scope, resource, amount) rows as the scan's rows."""
    core = ("cpu", "memory", "gpu")
    scopes: dict[tuple[str, str], dict[str, int]] = {}
    for kind, scope, name, amount in records:
        if kind == "scope":
            key = ("sum", scope)
        else:
            key = ("sum" if kind == "user" else "lease", None)
        scopes.setdefault(key, {})[SERVERS if name == SERVERS_TOTAL else name] = int(amount)
    out = []
    for (kind, scope), amounts in scopes.items():
        cpu, memory, gpu = (amounts.get(n, 0) for n in core)
        out.append((kind, scope, None, amounts.get(SERVERS, 0), cpu, memory, gpu))
        if kind == "sum":
            extra = ((n, v) for n, v in amounts.items() if n not in (*core, SERVERS))
            out.extend(("ext", scope, n, 0, v, 0, 0) for n, v in extra)
    # the scan's order: every scope's sums before its extended rows (read_usage fills them in)
    return sorted(out, key=lambda r: r[0] == "ext")


def _scope_key(scope: str | None) -> tuple[str, str]:
    """A read row's scope ('' the hub, None the requesting user, else a group: no JupyterHub
    group is named '' or NULL, any may be named "hub" or "user") as SharedUsage keys it."""
    if scope is None:
        return (USER, USER)
    return (HUB, HUB) if scope == HUB_SCOPE else (POOL, scope)


def applies(policy, limits, groups: Iterable[str]) -> bool:
    """Whether shared capacity has anything to say about this user (else nothing is read)."""
    pools = getattr(policy, "pools", {})
    hub = getattr(policy, "hub", None)
    return bool(pools_for(pools, groups) or (hub is not None and hub.running))


async def read_usage(
    raw, policy, username: str, groups: Iterable[str], servername: str, now: datetime,
    *, who: bool = False, read: UsageRead | None = None, found: Sequence | None = None,
) -> SharedUsage:  # fmt: skip
    """In-use amounts per scope and the pools' used budgets: one round trip (none when
    ``found`` holds ``read``'s :data:`_OPEN_SCOPED` rows, read with the user's history; plus
    the pools' grants and credits when they have some, and a spent pool's retry search)."""
    if read is None or found is None:
        read = UsageRead.of(policy, username, groups, servername, now)
    groups, pools, reads, hub = read.groups, read.pools, read.reads, read.hub
    usage = SharedUsage(at=now)
    adjusted = bool(read.budgeted)
    if who:  # who holds each cap: the scan, server by server (admins' views)
        records = await raw.fetch(_SCOPED, now, username, servername, hub, read.capped, groups, who)
        used = []
        for group, in_group, window in reads:
            row = await raw.fetchrow(_POOL_USED, group, username, in_group, now, float(window))
            used.append(
                dict(zip(("cpu", "memory", "gpu"), map(int, map(Decimal, row)), strict=True))
            )
    else:
        if found is None:
            found = await raw.fetch(_OPEN_SCOPED, *read.arguments())
        records, adjusted, used = _parsed_open(found, len(reads))
    for (group, _, window), amounts in zip(reads, used, strict=True):
        for name, total in amounts.items():
            usage.used.setdefault(group, {})[(name, window)] = total
    for kind, scope, name, servers, cpu, memory, gpu in records:
        key = _scope_key(scope)
        if kind == "sum":
            usage.running[key] = {SERVERS: servers, "cpu": cpu, "memory": memory, "gpu": gpu}
        elif kind == "ext":
            usage.running.setdefault(key, {})[name] = cpu
        elif kind == "lease" and servers:
            usage.own_leases = {SERVERS: servers, "cpu": cpu, "memory": memory, "gpu": gpu}
        elif kind == "who":
            usage.by_user.setdefault(key, {})[name] = {
                SERVERS: servers,
                "cpu": cpu,
                "memory": memory,
                "gpu": gpu,
            }
    if adjusted:  # the pools' grants and credits (ledger/store/grants.py), one round trip
        usage.adjustments = await grants.pool_adjustments(
            raw, read.budgeted, now, read.longest_seconds
        )
    for group in pools:
        await _add_retry_times(raw, policy, usage, group, username, group in groups, now)
    return usage


# Finding a spent pool's retry time reads every member's rollup days and edge-day segments
# (ledger/store/pool_history.py: ~0.8 ms per member on the 3 M-segment benchmark ledger), so a
# bigger pool is refused without a time rather than past the hook's deadline, where the
# spawn would take on_ledger_error instead of this refusal. Deterministic: a count, not a
# clock.
POOL_RETRY_MAX_MEMBERS = 200
# counted no further than the bound: a pool of thousands costs what one of 201 does
_MEMBER_COUNT_SQL = (
    "SELECT count(*) FROM (SELECT 1 FROM user_groups WHERE group_name = $1 LIMIT $2) m"
)


async def _add_retry_times(raw, policy, usage, group, username, in_group, now) -> None:
    """A spent budget of ``group``'s pool: when it has room again (ledger/store/pool_history.py,
    read only for a spent budget of a pool of at most POOL_RETRY_MAX_MEMBERS, so an open pool
    costs nothing more)."""
    asks = []
    for name, budget in policy.pools[group].budgets.items():
        adjustments = usage.adjustments.get(group)
        window, steps = shared_capacity.budget_steps(
            budget, name, adjustments, now, policy.window_seconds
        )
        recorded = usage.used.get(group, {}).get((name, window), 0)
        if steps.now_limit > 0 and recorded >= steps.now_limit:
            asks.append((name, window, steps))
    if (
        asks
        and await raw.fetchval(_MEMBER_COUNT_SQL, group, POOL_RETRY_MAX_MEMBERS + 1)
        <= POOL_RETRY_MAX_MEMBERS
    ):
        found = await pool_history.retry_times(raw, group, username, in_group, now, asks)
        usage.retry_us.setdefault(group, {}).update(found)


async def shared_status(
    conn: AsyncConnection, policy, limits, username: str, groups: Iterable[str],
    request_amounts: Mapping[str, int], servername: str, now: datetime, *, who: bool = False,
) -> SharedStatus:  # fmt: skip
    """Every shared limit this spawn meets at ``now`` (nothing is reserved: see leases.take)."""
    raw = await _raw(conn)
    usage = await read_usage(raw, policy, username, groups, servername, now, who=who)
    return evaluate(policy, limits, username, groups, request_amounts, usage)


async def attach(
    conn: AsyncConnection, policy, limits, groups: Iterable[str], decision, *, who: bool = False
):
    """``decision`` with the pools' and the hub's verdict (nothing read when none apply);
    ``who``: also who holds each cap (for admins: ``SharedStatus.to_json(admin=True)``)."""
    (decision,) = await attach_many(conn, policy, limits, groups, [decision], who=who)
    return decision


def usage_read(policy, limits, groups: Iterable[str], username: str, servername: str, now):
    """The :class:`UsageRead` :func:`attach_many` would make for this spawn, or None when
    shared capacity has nothing to say about it (nothing is read then)."""
    groups = list(groups)
    if not applies(policy, limits, groups) or limits.denied_all:
        return None
    return UsageRead.of(policy, username, groups, servername, now)


async def attach_many(
    conn: AsyncConnection, policy, limits, groups: Iterable[str], decisions, *,
    who: bool = False, read: UsageRead | None = None, found: Sequence | None = None,
):  # fmt: skip
    """:func:`attach` for several sizes of one user's server at one instant: what the pools
    and the hub hold is read once (or was, with the user's history: :func:`usage_read`'s
    ``read`` and its rows ``found``), and each size is judged against it."""
    groups = list(groups)
    if not decisions or not applies(policy, limits, groups) or limits.denied_all:
        return decisions
    first = decisions[0]
    raw = await _raw(conn)
    usage = await read_usage(
        raw, policy, first.username, groups, first.request.servername, first.at, who=who,
        read=read, found=found,
    )  # fmt: skip
    return [
        shared_verdict.attach(
            d, evaluate(policy, limits, d.username, groups, d.request.amounts, usage)
        )
        for d in decisions
    ]


def evaluate(policy, limits, username, groups, request_amounts, usage) -> SharedStatus:
    pools = {g: policy.pools[g] for g in pools_for(policy.pools, groups)}
    return evaluate_shared(
        username,
        limits.running,
        pools,
        policy.hub,
        request_amounts,
        usage,
        window_seconds=policy.window_seconds,
        exhausted_budget_blocks=getattr(policy, "exhausted_budget_blocks", "any"),
    )


def extended_json(amounts: Mapping[str, int]) -> str:
    """The lease's ``extended`` column: resources other than cpu, memory and gpu."""
    ext = {k: int(v) for k, v in amounts.items() if k not in ("cpu", "memory", "gpu") and v}
    return json.dumps(ext, sort_keys=True)


__all__ = ["HUB", "USER", "applies", "evaluate", "read_usage", "shared_status"]


async def totals(engine, policy, now: datetime, *, who: bool = False) -> SharedStatus:
    """Every pool's and the hub's figures at ``now`` (the report and admin views): what
    each pool used of its budgets, and what runs (plus live leases) against each cap."""
    pools = list(getattr(policy, "pools", {}))
    hub = getattr(policy, "hub", None)
    if not pools and not (hub is not None and hub.running):
        return SharedStatus()
    async with engine.connect() as conn:
        raw = await _raw(conn)
        # no requesting user: "" is nobody's name, so every member comes from user_groups
        usage = await read_usage(raw, policy, "", pools, "", now, who=who)
    return evaluate_shared(
        "", {}, {g: policy.pools[g] for g in pools_for(policy.pools, pools)}, policy.hub, {},
        usage, window_seconds=policy.window_seconds,
    )  # fmt: skip


# The line as the decision log has it: spawns whose latest decision is "waiting" and whose
# wait has not run out (the hub writes waiting / woke / gave_up / allowed / denied rows).
_LINE_SQL = text(
    """
    SELECT username, servername, reason, bottleneck_level, bottleneck_scope,
           bottleneck_resource, decided_at AS waiting_since, message
    FROM (
        SELECT DISTINCT ON (username, servername) *
        FROM decisions
        WHERE source = 'spawn' AND decided_at > CAST(:now AS timestamptz) - interval '1 day'
        ORDER BY username, servername, decided_at DESC, id DESC
    ) latest
    WHERE outcome = 'waiting' AND CAST(detail ->> 'wait_deadline' AS timestamptz) > :now
    ORDER BY reason, decided_at, username
    """
)


async def waiting_line(conn: AsyncConnection, now: datetime) -> list[dict]:
    """Who waits for which bottleneck, first in line first (admin pages)."""
    return [dict(r._mapping) for r in await conn.execute(_LINE_SQL, {"now": now})]
