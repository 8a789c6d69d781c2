"""The shared capacity statement decide sent before migration 0016 (ledger/store/shared_reads.py
at e5c6909), kept verbatim as the reference benchmarks/shared_capacity_bench.py compares
``quota_shared_open`` with: the same parameters (plus each pool read's group, in-group flag
and window as parameters 9 + 3i, 10 + 3i, 11 + 3i) and the same rows, its parameters read
through InitPlans so that its cached generic plan is used at all — which prunes the monthly
partitions only at run time, after every partition's scan has been initialised.
"""

# ruff: noqa: S608, E501 - SQL assembled from constants in this file only; no input reaches it
from __future__ import annotations

import functools
import re

HUB_SCOPE = ""
SERVERS_TOTAL = "#servers"
LEASE_SKEW_SECONDS = 5

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


_AMOUNTS = (
    "(VALUES ('cpu', ROW.cpu_millicores::numeric), ('memory', ROW.memory_bytes::numeric), "
    "('gpu', ROW.gpu_count::numeric) UNION ALL SELECT e.key, e.value::numeric "
    "FROM jsonb_each_text(ROW.extended) e) r(resource, amount)"
)


def _amounts(row: str) -> str:
    """A LATERAL list of (resource, amount) of one segment or lease row: core and extended."""
    return _AMOUNTS.replace("ROW", row)


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
    SELECT 'adjusted', NULL, NULL, 1 WHERE
    EXISTS (SELECT 1 FROM quota_grants g WHERE g.group_name = ANY((SELECT budgeted FROM a)::text[])
            AND g.ends_at > (SELECT at FROM a)
            AND (g.revoked_at IS NULL OR g.revoked_at > (SELECT at FROM a)))
    OR EXISTS (SELECT 1 FROM quota_credits c
               WHERE c.group_name = ANY((SELECT budgeted FROM a)::text[])
                 AND c.credited_at >= (SELECT since FROM a))
"""  # noqa: S608 - constants only


_DAY_US = 86_400_000_000
POOL_USED_SQL = f"""
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


_PARAMETER = re.compile(r"\$(\d+)")


_POOL_ARM = (
    " UNION ALL SELECT 'pool', 'READ', r.resource, r.amount FROM (POOL) q(cpu, memory, gpu)"
    " CROSS JOIN LATERAL (VALUES ('cpu', q.cpu), ('memory', q.memory), ('gpu', q.gpu))"
    " r(resource, amount)"
)


def _renumbered(sql: str, numbers: dict[int, int]) -> str:
    return _PARAMETER.sub(lambda m: f"${numbers[int(m.group(1))]}", sql)


@functools.cache
def with_pool_reads(count: int) -> str:
    """:data:`_OPEN_SCOPED` and ``count`` pool budget reads (:data:`POOL_USED_SQL`, read i's
    group, in-group flag and window as parameters 9 + 3i, 10 + 3i, 11 + 3i; its user and
    instant are the statement's $2 and $1) in one statement: one round trip per decide."""
    arms = "".join(
        _POOL_ARM.replace("READ", str(i)).replace(
            "POOL",
            _renumbered(POOL_USED_SQL, {1: 9 + 3 * i, 2: 2, 3: 10 + 3 * i, 4: 1, 5: 11 + 3 * i}),
        )
        for i in range(count)
    )
    return "SELECT kind, scope, resource, amount::text FROM (" + _OPEN_SCOPED + ") s" + arms  # noqa: S608 - constants only
