"""The shared-capacity reads before the open totals (migrations/versions/0011), kept for the
property tests (tests/test_open_totals.py) and benchmarks/shared_capacity_bench.py to compare
with the current ones on the same data: what runs per scope, scanned from every open segment
of the hub and the segments closed after ``now`` (``SCOPED_SCAN_SQL``, the parameters and
rows of ``ledger.store.shared_reads._SCOPED``), and a pool's budget usage whose open part
sums every open segment of the hub filtered by membership (``POOL_USED_SCAN_SQL``, the
parameters and row of ``ledger.store.shared_reads._POOL_USED``).
"""

# ruff: noqa: S608, E501 - constants only, kept verbatim
LEASE_SKEW_SECONDS = 5
_DAY_US = 86_400_000_000

LIVE_SCAN_SQL = f"""
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
    SELECT l.username, l.servername, l.cpu_millicores, l.memory_bytes, l.gpu_count,
           l.extended, l.pools
    FROM leases l
    WHERE l.expires_at > $1 AND l.taken_at <= $1
      AND NOT (l.username = $2 AND l.servername = $3)
      AND NOT EXISTS (
          SELECT 1 FROM segments s
          WHERE s.username = l.username AND s.servername = l.servername
            AND s.started_at >= l.taken_at - interval '{LEASE_SKEW_SECONDS} seconds')
"""

# scopes: '' the hub, NULL the requesting user, else a group (any may be named "hub")
SCOPED_SCAN_SQL = f"""
    WITH live AS ({LIVE_SCAN_SQL}),
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
"""

POOL_USED_SCAN_SQL = f"""
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
        SELECT s.cpu_millicores::numeric * o.us, s.memory_bytes::numeric * o.us,
               s.gpu_count::numeric * o.us
        FROM p JOIN segments s ON COALESCE(s.ended_at, 'infinity'::timestamptz) = 'infinity'
         AND s.started_at < p.at
        CROSS JOIN LATERAL (SELECT quota_epoch_us(p.at) - quota_epoch_us(GREATEST(s.started_at, p.since)) AS us) o
        WHERE CASE WHEN s.username = $2 THEN $3
                   ELSE EXISTS (SELECT 1 FROM user_groups ug
                                WHERE ug.username = s.username AND ug.group_name = $1) END
    )
    SELECT COALESCE(sum(cpu), 0)::text, COALESCE(sum(memory), 0)::text, COALESCE(sum(gpu), 0)::text
    FROM parts
"""


def normal(records) -> dict:
    """The scan's rows (kind, scope, name, servers, cpu, memory, gpu) as {(kind, scope,
    resource): amount}, zeros left out: what ``read_usage`` makes of them (a missing amount
    is 0), so the scan's and ``shared_reads._from_totals``' rows compare equal."""
    out = {}
    for kind, scope, name, servers, cpu, memory, gpu in records:
        if kind == "ext":
            values = {name: cpu}
        elif kind == "lease" and not servers:
            continue
        else:
            values = {"servers": servers, "cpu": cpu, "memory": memory, "gpu": gpu}
        for resource, amount in values.items():
            if amount:
                out[(kind, scope, resource)] = int(amount)
    return out
