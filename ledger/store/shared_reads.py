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

import functools
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.core import shared_capacity, shared_verdict
from ledger.core.resources import SERVERS
from ledger.core.shared_capacity import (
    HUB,
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
        SELECT 'hub' AS scope, live.* FROM live WHERE $4
        UNION ALL
        SELECT g.name, live.* FROM unnest($5::text[]) AS g(name) JOIN live ON
            CASE WHEN live.pools IS NOT NULL THEN g.name = ANY(live.pools)
                 WHEN live.username = $2 THEN g.name = ANY($6::text[])
                 ELSE EXISTS (SELECT 1 FROM user_groups ug
                              WHERE ug.username = live.username AND ug.group_name = g.name)
            END
        UNION ALL
        SELECT 'user', live.* FROM live WHERE live.username = $2
    )
    SELECT 'sum' AS kind, scope, NULL AS name,
           -- distinct servers by hashing, not by sorting records of collated text (EXPLAIN:
           -- that sort was most of this statement with ~1,700 servers running)
           (SELECT count(*) FROM (SELECT DISTINCT d.username, d.servername FROM scoped d
                                  WHERE d.scope = scoped.scope) servers) AS servers,
           sum(cpu_millicores)::bigint AS cpu, sum(memory_bytes)::bigint AS memory,
           sum(gpu_count)::bigint AS gpu
    FROM scoped GROUP BY scope
    UNION ALL
    SELECT 'ext', scope, e.key, 0, sum(e.value::bigint)::bigint, 0, 0
    FROM scoped, jsonb_each_text(scoped.extended) AS e
    WHERE scoped.extended <> '{{}}'::jsonb GROUP BY scope, e.key
    UNION ALL
    SELECT 'lease', 'user', NULL, count(*), sum(cpu_millicores)::bigint,
           sum(memory_bytes)::bigint, sum(gpu_count)::bigint
    FROM scoped WHERE scope = 'user' AND pools IS NOT NULL
    UNION ALL
    SELECT 'who', scope, username, count(DISTINCT servername), sum(cpu_millicores)::bigint,
           sum(memory_bytes)::bigint, sum(gpu_count)::bigint
    FROM scoped WHERE $7 GROUP BY scope, username
"""  # noqa: S608 - constants only

# The open totals' marks (migrations/versions/0011_open_totals.py): the hub's scope, and the
# distinct servers' resource.
HUB_SCOPE = ""
SERVERS_TOTAL = "#servers"


_AMOUNTS = (
    "(VALUES ('cpu', ROW.cpu_millicores::numeric), ('memory', ROW.memory_bytes::numeric), "
    "('gpu', ROW.gpu_count::numeric) UNION ALL SELECT e.key, e.value::numeric "
    "FROM jsonb_each_text(ROW.extended) e) r(resource, amount)"
)


def _amounts(row: str) -> str:
    """A LATERAL list of (resource, amount) of one segment or lease row: core and extended."""
    return _AMOUNTS.replace("ROW", row)


# What runs at $1 per scope: '' the hub (when $4), each group in $5, from the open totals
# (migration 0011: per scope, Σ over the open segments of the members user_groups caches)
# corrected server by server where "open now" and "running at $1" differ or the cache is not
# what counts:
# - servers with an open segment that starts after $1, or a closed one that started by $1 and
#   ends after it (ix_segments_open_started, ix_segments_end: ranges that are tiny when $1 is
#   about the present, and still right when it is not);
# - the requesting user's ($2: counted in the groups the hub reported, $6, not the cache), and
#   the requested server ($3) left out: a restart replaces it;
# - the servers of live leases (a lease and a segment of one server are one server).
# Each such server's open segments are taken out as the totals counted them and its segments
# running at $1 put in as the old scan (kind 'who' below) counts them; correcting one server
# more than needed changes nothing. Kind 'user' is $2's own holding, 'lease' $2's leases,
# 'adjusted' says the budgeted pools ($7) have grants or credits from $8 on.
# Past ``lv``, every parameter is read from ``a`` (InitPlans): the planner sees no value then,
# so each run's custom plan costs what the generic plan does and, from the sixth run on, the
# cached generic plan is used; with the values visible, a custom plan looked cheaper and was
# planned anew every time (~2.5 ms of planning per decide, measured; see
# https://www.postgresql.org/docs/current/sql-prepare.html#SQL-PREPARE-NOTES).
_OPEN_SCOPED = f"""
    WITH a AS MATERIALIZED (
        SELECT $1::timestamptz AS at, $2::text AS username, $3::text AS servername,
               $4::boolean AS hub, $5::text[] AS capped, $6::text[] AS reported,
               $7::text[] AS budgeted, $8::timestamptz AS since
    ),
    lv AS MATERIALIZED ({LIVE_LEASES_SQL}),
    touched AS MATERIALIZED (
        SELECT s.username, s.servername FROM segments s
        WHERE s.ended_at IS NULL AND s.started_at > (SELECT at FROM a)
        UNION
        SELECT s.username, s.servername FROM segments s
        WHERE COALESCE(s.ended_at, 'infinity'::timestamptz) > (SELECT at FROM a)
          AND COALESCE(s.ended_at, 'infinity'::timestamptz) < 'infinity'::timestamptz
          AND s.started_at <= (SELECT at FROM a)
        UNION
        SELECT s.username, s.servername FROM segments s
        WHERE s.username = (SELECT username FROM a) AND COALESCE(s.ended_at, 'infinity'::timestamptz) > (SELECT at FROM a)
        UNION
        SELECT username, servername FROM lv
    ), seg AS MATERIALIZED (
        SELECT s.username, s.servername, s.cpu_millicores, s.memory_bytes, s.gpu_count,
               s.extended, s.ended_at IS NULL AS open,
               s.started_at <= (SELECT at FROM a) AND NOT (s.username = (SELECT username FROM a) AND s.servername = (SELECT servername FROM a)) AS runs
        FROM touched t JOIN segments s ON s.username = t.username
         AND s.servername = t.servername
         AND COALESCE(s.ended_at, 'infinity'::timestamptz) > (SELECT at FROM a)
    ), sc AS MATERIALIZED (
        SELECT '{HUB_SCOPE}'::text AS scope WHERE (SELECT hub FROM a)
        UNION SELECT unnest((SELECT capped FROM a))
    ), items AS MATERIALIZED (
        -- membership probed per row (LIMIT 1: an index probe, never a hash of user_groups)
        SELECT sc.scope, w.sign, s.username, s.servername, s.cpu_millicores, s.memory_bytes,
               s.gpu_count, s.extended
        FROM sc CROSS JOIN seg s
        LEFT JOIN LATERAL (
            SELECT true AS cached FROM user_groups ug
            WHERE ug.username = s.username AND ug.group_name = sc.scope LIMIT 1
        ) c ON sc.scope <> '{HUB_SCOPE}'
        CROSS JOIN LATERAL (
            SELECT -1 AS sign WHERE s.open AND (sc.scope = '{HUB_SCOPE}' OR c.cached IS TRUE)
            UNION ALL
            SELECT 1 WHERE s.runs AND (sc.scope = '{HUB_SCOPE}' OR CASE
                WHEN s.username = (SELECT username FROM a) THEN sc.scope = ANY((SELECT reported FROM a)::text[])
                ELSE c.cached IS TRUE END)
        ) w
        UNION ALL
        SELECT sc.scope, 1, l.username, l.servername, l.cpu_millicores, l.memory_bytes,
               l.gpu_count, l.extended
        FROM sc JOIN lv l ON sc.scope = '{HUB_SCOPE}' OR sc.scope = ANY(l.pools)
    ), own AS MATERIALIZED (
        SELECT 'user' AS kind, username, servername, cpu_millicores, memory_bytes, gpu_count,
               extended
        FROM seg WHERE runs AND username = (SELECT username FROM a)
        UNION ALL
        SELECT 'user', username, servername, cpu_millicores, memory_bytes, gpu_count, extended
        FROM lv WHERE username = (SELECT username FROM a)
        UNION ALL
        SELECT 'lease', username, servername, cpu_millicores, memory_bytes, gpu_count,
               '{{}}'::jsonb
        FROM lv WHERE username = (SELECT username FROM a)
    )
    SELECT 'scope' AS kind, x.scope, x.resource, sum(x.amount)::bigint AS amount
    FROM (
        SELECT o.scope, o.resource, o.amount FROM open_totals o
        WHERE o.scope IN (SELECT scope FROM sc)
        UNION ALL
        SELECT i.scope, r.resource, i.sign * r.amount
        FROM items i CROSS JOIN LATERAL {_amounts("i")}
        UNION ALL
        SELECT scope, '{SERVERS_TOTAL}', sign * count(DISTINCT (username, servername))
        FROM items GROUP BY scope, sign
    ) x
    GROUP BY x.scope, x.resource
    UNION ALL
    SELECT o.kind, NULL, r.resource, sum(r.amount)::bigint
    FROM own o CROSS JOIN LATERAL {_amounts("o")} GROUP BY o.kind, r.resource
    UNION ALL
    SELECT kind, NULL, '{SERVERS_TOTAL}', count(DISTINCT (username, servername))
    FROM own GROUP BY kind
    UNION ALL
    -- the budgeted pools ($7) have grants or credits that may count: only then are they read
    SELECT 'adjusted', NULL, NULL, 1 WHERE {
    grants.GROUP_ADJUSTMENTS_EXIST_SQL.format(
        groups="(SELECT budgeted FROM a)::text[]",
        now="(SELECT at FROM a)",
        since="(SELECT since FROM a)",
    )
}
"""  # noqa: S608 - constants only

# A pool's usage over one window, from pool_rollups (migrations/versions/0009): with rate_z the
# rate running at day z's start and Δ, Δt the summed ± rates (and rate × instant) of the
# members' segment starts and ends in [z, p), ∫[z, p) = rate_z·(p − z) + p·Δ − Δt. The window
# is whole days [zs, za) − ∫[zs, since) + ∫[za, at); each edge sums whole hours, whole
# minutes, then the partial minute's raw starts and ends (ix_segments_started,
# ix_segments_end). The rollups count the members user_groups caches; the requesting user
# ($2) counts as the hub reported ($3), so their closed usage is added or taken out when the
# cache disagrees. Open segments (ended_at NULL) of the members, from the open totals
# (migration 0011): Σ rate·(at − start) = at·Σrate − Σrate·start, less the open segments that
# start at or after ``at`` (they count nothing) or before ``since`` (they count from since
# on): both ranges of ix_segments_open_started, tiny for a ``now`` about the present; and the
# requesting user's open segments added or taken out when the cache disagrees.
_DAY_US = 86_400_000_000
_POOL_USED = f"""
    WITH p AS (
        SELECT $4::timestamptz AS at, $4::timestamptz - make_interval(secs => $5) AS since
    ), e AS (
        SELECT sign, z, point, quota_epoch_us(point) AS point_us, quota_epoch_us(z) AS z_us,
               date_bin(interval '1 hour', point, timestamptz '1970-01-01 00:00:00+00') AS h,
               date_bin(interval '1 minute', point, timestamptz '1970-01-01 00:00:00+00') AS m
        FROM (SELECT -1 AS sign, quota_bucket_start(since) AS z, since AS point FROM p
              UNION ALL SELECT 1, quota_bucket_start(at), at FROM p) x
    ), days AS MATERIALIZED (
        SELECT r.* FROM pool_rollups r
        WHERE r.group_name = $1 AND r.width_seconds = 86400
          AND r.bucket_start >= (SELECT z FROM e WHERE sign = -1)
          AND r.bucket_start <= (SELECT z FROM e WHERE sign = 1)
    ), parts AS (
        SELECT r.cpu_rate::numeric * {_DAY_US} + (quota_epoch_us(r.bucket_start) + {_DAY_US})::numeric * r.cpu_delta - r.cpu_delta_us AS cpu,
               r.memory_rate::numeric * {_DAY_US} + (quota_epoch_us(r.bucket_start) + {_DAY_US})::numeric * r.memory_delta - r.memory_delta_us AS memory,
               r.gpu_rate::numeric * {_DAY_US} + (quota_epoch_us(r.bucket_start) + {_DAY_US})::numeric * r.gpu_delta - r.gpu_delta_us AS gpu
        FROM days r WHERE r.bucket_start < (SELECT z FROM e WHERE sign = 1)
        UNION ALL
        SELECT e.sign * r.cpu_rate::numeric * (e.point_us - e.z_us),
               e.sign * r.memory_rate::numeric * (e.point_us - e.z_us),
               e.sign * r.gpu_rate::numeric * (e.point_us - e.z_us)
        FROM e JOIN days r ON r.bucket_start = e.z
        UNION ALL
        SELECT e.sign * (e.point_us::numeric * r.cpu_delta - r.cpu_delta_us),
               e.sign * (e.point_us::numeric * r.memory_delta - r.memory_delta_us),
               e.sign * (e.point_us::numeric * r.gpu_delta - r.gpu_delta_us)
        FROM e CROSS JOIN LATERAL (
            SELECT * FROM pool_rollups r
            WHERE r.group_name = $1 AND r.width_seconds = 3600
              AND r.bucket_start >= e.z AND r.bucket_start < e.h
            UNION ALL
            SELECT * FROM pool_rollups r
            WHERE r.group_name = $1 AND r.width_seconds = 60
              AND r.bucket_start >= e.h AND r.bucket_start < e.m
        ) r
        UNION ALL
        SELECT e.sign * s.event_sign * s.cpu_millicores::numeric * (e.point_us - quota_epoch_us(s.event_at)),
               e.sign * s.event_sign * s.memory_bytes::numeric * (e.point_us - quota_epoch_us(s.event_at)),
               e.sign * s.event_sign * s.gpu_count::numeric * (e.point_us - quota_epoch_us(s.event_at))
        FROM e CROSS JOIN LATERAL (
            SELECT s.username, s.cpu_millicores, s.memory_bytes, s.gpu_count,
                   s.started_at AS event_at, 1 AS event_sign
            FROM segments s
            WHERE s.started_at >= e.m AND s.started_at < e.point AND s.ended_at IS NOT NULL
            UNION ALL
            SELECT s.username, s.cpu_millicores, s.memory_bytes, s.gpu_count, s.ended_at, -1
            FROM segments s
            WHERE COALESCE(s.ended_at, 'infinity'::timestamptz) >= e.m
              AND COALESCE(s.ended_at, 'infinity'::timestamptz) < e.point
        ) s
        WHERE EXISTS (SELECT 1 FROM user_groups ug
                      WHERE ug.username = s.username AND ug.group_name = $1)
        UNION ALL
        SELECT c.k * s.cpu_millicores::numeric * o.us, c.k * s.memory_bytes::numeric * o.us,
               c.k * s.gpu_count::numeric * o.us
        FROM p CROSS JOIN (
            SELECT CASE WHEN cached = $3 THEN 0 WHEN $3 THEN 1 ELSE -1 END AS k
            FROM (SELECT EXISTS (SELECT 1 FROM user_groups
                                 WHERE username = $2 AND group_name = $1) AS cached) x
        ) c
        JOIN segments s ON c.k <> 0 AND s.username = $2 AND s.ended_at IS NOT NULL
         AND COALESCE(s.ended_at, 'infinity'::timestamptz) > p.since AND s.started_at < p.at
        CROSS JOIN LATERAL (SELECT GREATEST(0, quota_epoch_us(LEAST(s.ended_at, p.at))
                                               - quota_epoch_us(GREATEST(s.started_at, p.since))) AS us) o
        UNION ALL
        SELECT at_us * sum(t.amount) FILTER (WHERE t.resource = 'cpu')
                 - sum(t.amount_start_us) FILTER (WHERE t.resource = 'cpu'),
               at_us * sum(t.amount) FILTER (WHERE t.resource = 'memory')
                 - sum(t.amount_start_us) FILTER (WHERE t.resource = 'memory'),
               at_us * sum(t.amount) FILTER (WHERE t.resource = 'gpu')
                 - sum(t.amount_start_us) FILTER (WHERE t.resource = 'gpu')
        FROM (SELECT quota_epoch_us(at)::numeric AS at_us FROM p) p
        JOIN open_totals t ON t.scope = $1 AND t.resource IN ('cpu', 'memory', 'gpu')
        GROUP BY p.at_us
        UNION ALL
        SELECT -s.cpu_millicores::numeric * s.us, -s.memory_bytes::numeric * s.us,
               -s.gpu_count::numeric * s.us
        FROM p CROSS JOIN LATERAL (
            SELECT s.*, quota_epoch_us(p.at) - quota_epoch_us(s.started_at) AS us
            FROM segments s WHERE s.ended_at IS NULL AND s.started_at >= p.at
            UNION ALL
            SELECT s.*, quota_epoch_us(p.since) - quota_epoch_us(s.started_at)
            FROM segments s WHERE s.ended_at IS NULL AND s.started_at < p.since
        ) s
        WHERE EXISTS (SELECT 1 FROM user_groups ug
                      WHERE ug.username = s.username AND ug.group_name = $1)
        UNION ALL
        SELECT c.k * s.cpu_millicores::numeric * o.us, c.k * s.memory_bytes::numeric * o.us,
               c.k * s.gpu_count::numeric * o.us
        FROM p CROSS JOIN (
            SELECT CASE WHEN cached = $3 THEN 0 WHEN $3 THEN 1 ELSE -1 END AS k
            FROM (SELECT EXISTS (SELECT 1 FROM user_groups
                                 WHERE username = $2 AND group_name = $1) AS cached) x
        ) c
        JOIN segments s ON c.k <> 0 AND s.username = $2
         AND COALESCE(s.ended_at, 'infinity'::timestamptz) = 'infinity'
         AND s.ended_at IS NULL AND s.started_at < p.at
        CROSS JOIN LATERAL (SELECT quota_epoch_us(p.at) - quota_epoch_us(GREATEST(s.started_at, p.since)) AS us) o
    )
    SELECT COALESCE(sum(cpu), 0)::text, COALESCE(sum(memory), 0)::text, COALESCE(sum(gpu), 0)::text
    FROM parts
"""  # noqa: S608 - constants only


async def _raw(conn: AsyncConnection):
    return (await conn.get_raw_connection()).driver_connection


_PARAMETER = re.compile(r"\$(\d+)")


_POOL_ARM = (
    " UNION ALL SELECT 'pool', 'READ', r.resource, r.amount FROM (POOL) q(cpu, memory, gpu)"
    " CROSS JOIN LATERAL (VALUES ('cpu', q.cpu), ('memory', q.memory), ('gpu', q.gpu))"
    " r(resource, amount)"
)


def _renumbered(sql: str, numbers: dict[int, int]) -> str:
    return _PARAMETER.sub(lambda m: f"${numbers[int(m.group(1))]}", sql)


@functools.cache
def _with_pool_reads(count: int) -> str:
    """:data:`_OPEN_SCOPED` and ``count`` pool budget reads (:data:`_POOL_USED`, read i's
    group, in-group flag and window as parameters 9 + 3i, 10 + 3i, 11 + 3i; its user and
    instant are the statement's $2 and $1) in one statement: one round trip per decide."""
    arms = "".join(
        _POOL_ARM.replace("READ", str(i)).replace(
            "POOL",
            _renumbered(_POOL_USED, {1: 9 + 3 * i, 2: 2, 3: 10 + 3 * i, 4: 1, 5: 11 + 3 * i}),
        )
        for i in range(count)
    )
    return "SELECT kind, scope, resource, amount::text FROM (" + _OPEN_SCOPED + ") s" + arms  # noqa: S608 - constants only


async def open_scoped(
    raw, now: datetime, username: str, servername: str, hub: bool, capped: list[str],
    reported: list[str], budgeted: list[str] = (), since: datetime | None = None,
    pool_reads: Sequence[tuple[str, bool, int]] = (),
) -> tuple[list[tuple], bool, list[dict[str, int]]]:  # fmt: skip
    """:data:`_OPEN_SCOPED`: what runs per scope in the scan's row shape; whether the
    ``budgeted`` pools have grants or credits from ``since`` on; and per ``(group, in group,
    window seconds)`` of ``pool_reads`` the pool's usage (:data:`_POOL_USED`), one round trip."""
    found = await raw.fetch(
        _with_pool_reads(len(pool_reads)), now, username, servername, hub, capped, reported,
        list(budgeted), since or now,
        *(x for group, in_group, window in pool_reads for x in (group, in_group, float(window))),
    )  # fmt: skip
    adjusted = any(r[0] == "adjusted" for r in found)
    used: list[dict[str, int]] = [{} for _ in pool_reads]
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
            key = ("sum", HUB if scope == HUB_SCOPE else scope)
        else:
            key = ("sum" if kind == "user" else "lease", USER)
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


def applies(policy, limits, groups: Iterable[str]) -> bool:
    """Whether shared capacity has anything to say about this user (else nothing is read)."""
    pools = getattr(policy, "pools", {})
    hub = getattr(policy, "hub", None)
    return bool(pools_for(pools, groups) or (hub is not None and hub.running))


async def read_usage(
    raw, policy, username: str, groups: Iterable[str], servername: str, now: datetime,
    *, who: bool = False,
) -> SharedUsage:  # fmt: skip
    """In-use amounts per scope and the pools' used budgets: one round trip (plus the pools'
    grants and credits when they have some, and a spent pool's retry search)."""
    groups = sorted(set(groups))
    pools = pools_for(policy.pools, groups)
    capped = [g for g in pools if policy.pools[g].running]
    usage = SharedUsage(at=now)
    hub = bool(policy.hub.running)
    budgeted = [g for g in pools if policy.pools[g].budgets]
    longest = max(
        (b.window_seconds or policy.window_seconds
         for g in budgeted for b in policy.pools[g].budgets.values()),
        default=0,
    )  # fmt: skip
    adjusted = bool(budgeted)
    reads = [
        (group, group in groups, window)
        for group in pools
        for window in sorted(
            {
                b.window_seconds or policy.window_seconds
                for b in policy.pools[group].budgets.values()
            }
        )
    ]
    if who:  # who holds each cap: the scan, server by server (admins' views)
        records = await raw.fetch(_SCOPED, now, username, servername, hub, capped, groups, who)
        used = []
        for group, in_group, window in reads:
            row = await raw.fetchrow(_POOL_USED, group, username, in_group, now, float(window))
            used.append(
                dict(zip(("cpu", "memory", "gpu"), map(int, map(Decimal, row)), strict=True))
            )
    else:
        since = now - timedelta(seconds=longest)
        records, adjusted, used = await open_scoped(
            raw, now, username, servername, hub, capped, groups, budgeted, since, reads
        )
    for (group, _, window), amounts in zip(reads, used, strict=True):
        for name, total in amounts.items():
            usage.used.setdefault(group, {})[(name, window)] = total
    for kind, scope, name, servers, cpu, memory, gpu in records:
        if kind == "sum":
            usage.running[scope] = {SERVERS: servers, "cpu": cpu, "memory": memory, "gpu": gpu}
        elif kind == "ext":
            usage.running.setdefault(scope, {})[name] = cpu
        elif kind == "lease" and servers:
            usage.own_leases = {SERVERS: servers, "cpu": cpu, "memory": memory, "gpu": gpu}
        elif kind == "who":
            usage.by_user.setdefault(scope, {})[name] = {
                SERVERS: servers,
                "cpu": cpu,
                "memory": memory,
                "gpu": gpu,
            }
    if adjusted:  # the pools' grants and credits (ledger/store/grants.py), one round trip
        usage.adjustments = await grants.pool_adjustments(raw, budgeted, now, longest)
    for group in pools:
        await _add_retry_times(raw, policy, usage, group, username, group in groups, now)
    return usage


# Finding a spent pool's retry time reads every member's rollup days and edge-day segments
# (ledger/store/pool_history.py: ~0.8 ms per member on the 3 M-segment benchmark ledger), so a
# bigger pool is refused without a time rather than past the hook's deadline, where the
# spawn would take on_ledger_error instead of this refusal. Deterministic: a count, not a
# clock.
POOL_RETRY_MAX_MEMBERS = 200
_MEMBER_COUNT_SQL = "SELECT count(*) FROM user_groups WHERE group_name = $1"


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
    if asks and await raw.fetchval(_MEMBER_COUNT_SQL, group) <= POOL_RETRY_MAX_MEMBERS:
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


async def attach_many(
    conn: AsyncConnection, policy, limits, groups: Iterable[str], decisions, *, who: bool = False
):
    """:func:`attach` for several sizes of one user's server at one instant: what the pools
    and the hub hold is read once, and each size is judged against it."""
    groups = list(groups)
    if not decisions or not applies(policy, limits, groups) or limits.denied_all:
        return decisions
    first = decisions[0]
    raw = await _raw(conn)
    usage = await read_usage(
        raw, policy, first.username, groups, first.request.servername, first.at, who=who
    )
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
