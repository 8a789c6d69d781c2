"""shared capacity's read as functions that prune partitions before they run

``decide`` with pools or hub caps reads, in one statement, what runs per scope (the open
totals of migration 0011, corrected server by server) and each pool budget's usage (the
pool rollups of migration 0009 plus raw starts and ends of the edge minutes). Sent from the
client, that statement reached its cached generic plan only because its parameters were
read through InitPlans, and PostgreSQL prunes partitions on InitPlan values only while the
plan runs, after every partition's scan has been set up: ~135 scans of the monthly
``segments`` partitions were initialised per decide, 80 of them never run, about 0.9 ms of
the statement's 1.7 ms (benchmarks/RESULTS.md, "Shared capacity").

As PL/pgSQL functions the same queries see the arguments as plain parameters, so the
generic plan is pruned at executor start-up, before any scan is initialised
(https://www.postgresql.org/docs/current/ddl-partitioning.html#DDL-PARTITION-PRUNING), and
``SET plan_cache_mode = force_generic_plan`` makes that cached plan the only one used
(https://www.postgresql.org/docs/current/plpgsql-implementation.html#PLPGSQL-PLAN-CACHING),
as migration 0013 did for decide's own read. Every range on ``ended_at`` alone also bounds
``started_at`` (a segment ends at or after it starts: ck_segments_ends_after_start), so
those arms are pruned too.

- ``ck_segments_finite_times``: no segment starts or ends at ±infinity (an open one has
  ``ended_at`` NULL).
- ``quota_pool_used(group, username, in_group, at, window_seconds)``: one pool's usage over
  one window (cpu, memory, gpu as exact base-unit·µs, text).
- ``quota_shared_open(at, username, servername, hub, capped[], reported[], budgeted[],
  since, pool_groups[], pool_in_group[], pool_windows[])``: rows (kind, scope, resource,
  amount) as ledger/store/shared_reads.py reads them — 'scope' per capped scope, 'user' and
  'lease' the requesting user's holding, 'adjusted' when the budgeted pools have grants or
  credits, and per pool read i a 'pool' row per core resource with scope i (0-based).

Revision ID: 0016
Revises: 0015
"""

# ruff: noqa: S608 - SQL assembled from constants in this file only; no input reaches it
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

_DAY_US = 86_400_000_000

# The marks of the open totals (migration 0011): the hub's scope, the distinct servers' row.
_HUB_SCOPE = ""
_SERVERS_TOTAL = "#servers"


def _amounts(row: str) -> str:
    """A LATERAL list of (resource, amount) of one segment or lease row: core and extended."""
    return (
        f"(VALUES ('cpu', {row}.cpu_millicores::numeric), ('memory', {row}.memory_bytes::numeric), "
        f"('gpu', {row}.gpu_count::numeric) UNION ALL SELECT e.key, e.value::numeric "
        f"FROM jsonb_each_text({row}.extended) e) r(resource, amount)"
    )


# One edge of a pool window at instant POINT: the members' raw starts (of closed segments)
# and ends in [MINUTE, POINT), each counted from its instant to POINT, with SIGN.
_EDGE_EVENTS = """
        SELECT SIGN * s.event_sign * s.cpu_millicores::numeric * (quota_epoch_us(POINT) - quota_epoch_us(s.event_at)),
               SIGN * s.event_sign * s.memory_bytes::numeric * (quota_epoch_us(POINT) - quota_epoch_us(s.event_at)),
               SIGN * s.event_sign * s.gpu_count::numeric * (quota_epoch_us(POINT) - quota_epoch_us(s.event_at))
        FROM (
            SELECT s.username, s.cpu_millicores, s.memory_bytes, s.gpu_count,
                   s.started_at AS event_at, 1 AS event_sign
            FROM segments s
            WHERE s.started_at >= MINUTE AND s.started_at < POINT AND s.ended_at IS NOT NULL
            UNION ALL
            SELECT s.username, s.cpu_millicores, s.memory_bytes, s.gpu_count, s.ended_at, -1
            FROM segments s
            WHERE COALESCE(s.ended_at, 'infinity'::timestamptz) >= MINUTE
              AND COALESCE(s.ended_at, 'infinity'::timestamptz) < POINT
              AND s.started_at < POINT
        ) s
        WHERE EXISTS (SELECT 1 FROM user_groups ug
                      WHERE ug.username = s.username AND ug.group_name = p_group)
"""


def _edge_events(sign: int, point: str, minute: str) -> str:
    return _EDGE_EVENTS.replace("SIGN", str(sign)).replace("POINT", point).replace("MINUTE", minute)


# A pool's usage over one window, from pool_rollups (migration 0009): with rate_z the rate
# running at day z's start and Δ, Δt the summed ± rates (and rate × instant) of the members'
# segment starts and ends in [z, p), ∫[z, p) = rate_z·(p − z) + p·Δ − Δt. The window is
# whole days [zs, za) − ∫[zs, since) + ∫[za, at); each edge sums whole hours, whole minutes,
# then the partial minute's raw starts and ends. The rollups count the members user_groups
# caches; the requesting user counts as the hub reported (p_in_group), so their closed usage
# is added or taken out when the cache disagrees. Open segments of the members from the open
# totals: Σ rate·(at − start) = at·Σrate − Σrate·start, less the open segments that start at
# or after ``at`` (they count nothing) or before ``since`` (they count from since on), and the
# requesting user's open segments added or taken out when the cache disagrees.
_POOL_USED = f"""
    CREATE FUNCTION quota_pool_used(
        p_group text, p_username text, p_in_group boolean, p_at timestamptz,
        p_window_seconds double precision
    ) RETURNS TABLE (cpu text, memory text, gpu text)
    LANGUAGE plpgsql STABLE
    SET plan_cache_mode = force_generic_plan AS $fn$
    #variable_conflict use_column
    DECLARE
        v_since timestamptz := p_at - make_interval(secs => p_window_seconds);
        v_since_minute timestamptz :=
            date_bin(interval '1 minute', v_since, timestamptz '1970-01-01 00:00:00+00');
        v_at_minute timestamptz :=
            date_bin(interval '1 minute', p_at, timestamptz '1970-01-01 00:00:00+00');
        -- 1 the requesting user counts and the cache says not, -1 the other way, 0 agreed
        v_user_sign int;
        v_cpu numeric;
        v_memory numeric;
        v_gpu numeric;
    BEGIN
    SELECT CASE WHEN x.cached = p_in_group THEN 0 WHEN p_in_group THEN 1 ELSE -1 END
    INTO v_user_sign
    FROM (SELECT EXISTS (SELECT 1 FROM user_groups
                         WHERE username = p_username AND group_name = p_group) AS cached) x;
    WITH e AS (
        SELECT sign, z, point, quota_epoch_us(point) AS point_us, quota_epoch_us(z) AS z_us,
               date_bin(interval '1 hour', point, timestamptz '1970-01-01 00:00:00+00') AS h,
               date_bin(interval '1 minute', point, timestamptz '1970-01-01 00:00:00+00') AS m
        FROM (SELECT -1 AS sign, quota_bucket_start(v_since) AS z, v_since AS point
              UNION ALL SELECT 1, quota_bucket_start(p_at), p_at) x
    ), days AS MATERIALIZED (
        SELECT r.* FROM pool_rollups r
        WHERE r.group_name = p_group AND r.width_seconds = 86400
          AND r.bucket_start >= quota_bucket_start(v_since)
          AND r.bucket_start <= quota_bucket_start(p_at)
    ), parts AS (
        SELECT r.cpu_rate::numeric * {_DAY_US} + (quota_epoch_us(r.bucket_start) + {_DAY_US})::numeric * r.cpu_delta - r.cpu_delta_us AS cpu,
               r.memory_rate::numeric * {_DAY_US} + (quota_epoch_us(r.bucket_start) + {_DAY_US})::numeric * r.memory_delta - r.memory_delta_us AS memory,
               r.gpu_rate::numeric * {_DAY_US} + (quota_epoch_us(r.bucket_start) + {_DAY_US})::numeric * r.gpu_delta - r.gpu_delta_us AS gpu
        FROM days r WHERE r.bucket_start < quota_bucket_start(p_at)
        UNION ALL
        SELECT e.sign * r.cpu_rate::numeric * (e.point_us - e.z_us),
               e.sign * r.memory_rate::numeric * (e.point_us - e.z_us),
               e.sign * r.gpu_rate::numeric * (e.point_us - e.z_us)
        FROM e JOIN days r ON r.bucket_start = e.z
        UNION ALL
        -- Σ (p·Δ − Δt) over an edge's hours and minutes = p·ΣΔ − ΣΔt: summed first (sums
        -- of bigint are exact), then one product per edge, not one per row
        SELECT e.sign * (e.point_us::numeric * sum(r.cpu_delta) - sum(r.cpu_delta_us)),
               e.sign * (e.point_us::numeric * sum(r.memory_delta) - sum(r.memory_delta_us)),
               e.sign * (e.point_us::numeric * sum(r.gpu_delta) - sum(r.gpu_delta_us))
        FROM e CROSS JOIN LATERAL (
            SELECT r.cpu_delta, r.memory_delta, r.gpu_delta, r.cpu_delta_us,
                   r.memory_delta_us, r.gpu_delta_us
            FROM pool_rollups r
            WHERE r.group_name = p_group AND r.width_seconds = 3600
              AND r.bucket_start >= e.z AND r.bucket_start < e.h
            UNION ALL
            SELECT r.cpu_delta, r.memory_delta, r.gpu_delta, r.cpu_delta_us,
                   r.memory_delta_us, r.gpu_delta_us
            FROM pool_rollups r
            WHERE r.group_name = p_group AND r.width_seconds = 60
              AND r.bucket_start >= e.h AND r.bucket_start < e.m
        ) r
        GROUP BY e.sign, e.point_us
        UNION ALL
        {_edge_events(-1, "v_since", "v_since_minute")}
        UNION ALL
        {_edge_events(1, "p_at", "v_at_minute")}
        UNION ALL
        SELECT quota_epoch_us(p_at)::numeric * sum(t.amount) FILTER (WHERE t.resource = 'cpu')
                 - sum(t.amount_start_us) FILTER (WHERE t.resource = 'cpu'),
               quota_epoch_us(p_at)::numeric * sum(t.amount) FILTER (WHERE t.resource = 'memory')
                 - sum(t.amount_start_us) FILTER (WHERE t.resource = 'memory'),
               quota_epoch_us(p_at)::numeric * sum(t.amount) FILTER (WHERE t.resource = 'gpu')
                 - sum(t.amount_start_us) FILTER (WHERE t.resource = 'gpu')
        FROM open_totals t WHERE t.scope = p_group AND t.resource IN ('cpu', 'memory', 'gpu')
        HAVING count(*) > 0
        UNION ALL
        SELECT -s.cpu_millicores::numeric * s.us, -s.memory_bytes::numeric * s.us,
               -s.gpu_count::numeric * s.us
        FROM (
            SELECT s.username, s.cpu_millicores, s.memory_bytes, s.gpu_count,
                   quota_epoch_us(p_at) - quota_epoch_us(s.started_at) AS us
            FROM segments s WHERE s.ended_at IS NULL AND s.started_at >= p_at
            UNION ALL
            SELECT s.username, s.cpu_millicores, s.memory_bytes, s.gpu_count,
                   quota_epoch_us(v_since) - quota_epoch_us(s.started_at)
            FROM segments s WHERE s.ended_at IS NULL AND s.started_at < v_since
        ) s
        WHERE EXISTS (SELECT 1 FROM user_groups ug
                      WHERE ug.username = s.username AND ug.group_name = p_group)
    )
    SELECT COALESCE(sum(parts.cpu), 0), COALESCE(sum(parts.memory), 0),
           COALESCE(sum(parts.gpu), 0)
    INTO v_cpu, v_memory, v_gpu
    FROM parts;
    -- the requesting user's segments, when the hub's groups and the cache disagree (rare:
    -- a query of its own, so the common case sets up none of its partition scans)
    IF v_user_sign <> 0 THEN
        SELECT v_cpu + COALESCE(sum(v_user_sign * s.cpu_millicores::numeric * o.us), 0),
               v_memory + COALESCE(sum(v_user_sign * s.memory_bytes::numeric * o.us), 0),
               v_gpu + COALESCE(sum(v_user_sign * s.gpu_count::numeric * o.us), 0)
        INTO v_cpu, v_memory, v_gpu
        FROM segments s
        CROSS JOIN LATERAL (
            SELECT CASE WHEN s.ended_at IS NULL
                        THEN quota_epoch_us(p_at) - quota_epoch_us(GREATEST(s.started_at, v_since))
                        ELSE GREATEST(0, quota_epoch_us(LEAST(s.ended_at, p_at))
                                         - quota_epoch_us(GREATEST(s.started_at, v_since)))
                   END AS us
        ) o
        WHERE s.username = p_username
          AND COALESCE(s.ended_at, 'infinity'::timestamptz) > v_since AND s.started_at < p_at;
    END IF;
    RETURN QUERY SELECT v_cpu::text, v_memory::text, v_gpu::text;
    END
    $fn$
"""

# Live leases (pools: the groups the lease counts toward), without the requested server: a
# restart replaces it. A lease stops counting once a segment of its server that started at
# or after it (less 5 s, ledger/store/shared_reads.py LEASE_SKEW_SECONDS) is recorded.
_LIVE_LEASES = """
    SELECT l.username, l.servername, l.cpu_millicores, l.memory_bytes, l.gpu_count,
           l.extended, l.pools
    FROM leases l
    WHERE l.expires_at > p_at AND l.taken_at <= p_at
      AND NOT (l.username = p_username AND l.servername = p_servername)
      AND NOT EXISTS (
          SELECT 1 FROM segments s
          WHERE s.username = l.username AND s.servername = l.servername
            AND s.started_at >= l.taken_at - interval '5 seconds')
"""

# What runs at p_at per scope ('' the hub when p_hub, each group in p_capped) from the open
# totals, corrected server by server where "open now" and "running at p_at" differ or the
# cache is not what counts (ledger/store/shared_reads.py says which servers and why); then
# the requesting user's own holding and leases, whether the budgeted pools have grants or
# credits from p_since on, and the pool reads.
# With no live lease at all (most decides), the query reads none: its lease CTE is an empty
# relation, so none of the leases' per-partition segment probes is set up.
_NO_LEASES = """
    SELECT NULL::text AS username, NULL::text AS servername, NULL::bigint AS cpu_millicores,
           NULL::bigint AS memory_bytes, NULL::int AS gpu_count, NULL::jsonb AS extended,
           NULL::text[] AS pools
    WHERE false
"""

_OPEN_QUERY = f"""    WITH lv AS MATERIALIZED (LIVE),
    touched AS MATERIALIZED (
        SELECT s.username, s.servername FROM segments s
        WHERE s.ended_at IS NULL AND s.started_at > p_at
        UNION
        SELECT s.username, s.servername FROM segments s
        WHERE COALESCE(s.ended_at, 'infinity'::timestamptz) > p_at
          AND COALESCE(s.ended_at, 'infinity'::timestamptz) < 'infinity'::timestamptz
          AND s.started_at <= p_at
        UNION
        SELECT s.username, s.servername FROM segments s
        WHERE s.username = p_username AND COALESCE(s.ended_at, 'infinity'::timestamptz) > p_at
        UNION
        SELECT username, servername FROM lv
    ), seg AS MATERIALIZED (
        SELECT s.username, s.servername, s.cpu_millicores, s.memory_bytes, s.gpu_count,
               s.extended, s.ended_at IS NULL AS open,
               s.started_at <= p_at AND NOT (s.username = p_username AND s.servername = p_servername) AS runs
        FROM touched t JOIN segments s ON s.username = t.username
         AND s.servername = t.servername
         AND COALESCE(s.ended_at, 'infinity'::timestamptz) > p_at
    ), sc AS MATERIALIZED (
        SELECT '{_HUB_SCOPE}'::text AS scope WHERE p_hub
        UNION SELECT unnest(p_capped)
    ), items AS MATERIALIZED (
        -- membership probed per row (LIMIT 1: an index probe, never a hash of user_groups)
        SELECT sc.scope, w.sign, s.username, s.servername, s.cpu_millicores, s.memory_bytes,
               s.gpu_count, s.extended
        FROM sc CROSS JOIN seg s
        LEFT JOIN LATERAL (
            SELECT true AS cached FROM user_groups ug
            WHERE ug.username = s.username AND ug.group_name = sc.scope LIMIT 1
        ) c ON sc.scope <> '{_HUB_SCOPE}'
        CROSS JOIN LATERAL (
            SELECT -1 AS sign WHERE s.open AND (sc.scope = '{_HUB_SCOPE}' OR c.cached IS TRUE)
            UNION ALL
            SELECT 1 WHERE s.runs AND (sc.scope = '{_HUB_SCOPE}' OR CASE
                WHEN s.username = p_username THEN sc.scope = ANY(p_reported)
                ELSE c.cached IS TRUE END)
        ) w
        UNION ALL
        SELECT sc.scope, 1, l.username, l.servername, l.cpu_millicores, l.memory_bytes,
               l.gpu_count, l.extended
        FROM sc JOIN lv l ON sc.scope = '{_HUB_SCOPE}' OR sc.scope = ANY(l.pools)
    ), own AS MATERIALIZED (
        SELECT 'user' AS kind, username, servername, cpu_millicores, memory_bytes, gpu_count,
               extended
        FROM seg WHERE runs AND username = p_username
        UNION ALL
        SELECT 'user', username, servername, cpu_millicores, memory_bytes, gpu_count, extended
        FROM lv WHERE username = p_username
        UNION ALL
        SELECT 'lease', username, servername, cpu_millicores, memory_bytes, gpu_count,
               '{{}}'::jsonb
        FROM lv WHERE username = p_username
    )
    SELECT 'scope'::text, x.scope, x.resource, sum(x.amount)::bigint::text
    FROM (
        SELECT o.scope, o.resource, o.amount FROM open_totals o
        WHERE o.scope IN (SELECT scope FROM sc)
        UNION ALL
        SELECT i.scope, r.resource, i.sign * r.amount
        FROM items i CROSS JOIN LATERAL {_amounts("i")}
        UNION ALL
        SELECT scope, '{_SERVERS_TOTAL}', sign * count(DISTINCT (username, servername))
        FROM items GROUP BY scope, sign
    ) x
    GROUP BY x.scope, x.resource
    UNION ALL
    SELECT o.kind, NULL, r.resource, sum(r.amount)::bigint::text
    FROM own o CROSS JOIN LATERAL {_amounts("o")} GROUP BY o.kind, r.resource
    UNION ALL
    SELECT kind, NULL, '{_SERVERS_TOTAL}', count(DISTINCT (username, servername))::text
    FROM own GROUP BY kind
    UNION ALL
    -- the budgeted pools have grants or credits that may count: only then are they read
    SELECT 'adjusted', NULL, NULL, '1'
    WHERE EXISTS (SELECT 1 FROM quota_grants g WHERE g.group_name = ANY(p_budgeted)
                  AND g.ends_at > p_at AND (g.revoked_at IS NULL OR g.revoked_at > p_at))
       OR EXISTS (SELECT 1 FROM quota_credits c
                  WHERE c.group_name = ANY(p_budgeted) AND c.credited_at >= p_since);
"""


def _open_query(live: str) -> str:
    return _OPEN_QUERY.replace("LIVE", live)


_SHARED_OPEN = f"""
    CREATE FUNCTION quota_shared_open(
        p_at timestamptz, p_username text, p_servername text, p_hub boolean,
        p_capped text[], p_reported text[], p_budgeted text[], p_since timestamptz,
        p_pool_groups text[], p_pool_in_group boolean[], p_pool_windows double precision[]
    ) RETURNS TABLE (kind text, scope text, resource text, amount text)
    LANGUAGE plpgsql STABLE
    SET plan_cache_mode = force_generic_plan AS $fn$
    #variable_conflict use_column
    BEGIN
    IF EXISTS (SELECT 1 FROM leases l WHERE l.expires_at > p_at AND l.taken_at <= p_at) THEN
        RETURN QUERY {_open_query(_LIVE_LEASES)}
    ELSE
        RETURN QUERY {_open_query(_NO_LEASES)}
    END IF;
    FOR i IN 1 .. COALESCE(array_length(p_pool_groups, 1), 0) LOOP
        RETURN QUERY
        SELECT 'pool'::text, (i - 1)::text, r.resource, r.amount
        FROM quota_pool_used(p_pool_groups[i], p_username, p_pool_in_group[i], p_at,
                             p_pool_windows[i]) q
        CROSS JOIN LATERAL (VALUES ('cpu', q.cpu), ('memory', q.memory), ('gpu', q.gpu))
            r(resource, amount);
    END LOOP;
    END
    $fn$
"""

# A segment running now has ended_at NULL. 'infinity' reads as running in the scans but not in
# the open totals (migration 0011); the rollup triggers already fail on it ("timestamp out of
# range"), so no ledger holds one, and this check says why instead
# (https://www.postgresql.org/docs/current/datatype-datetime.html#DATATYPE-DATETIME-SPECIAL-VALUES).
_FINITE = [
    "ALTER TABLE segments ADD CONSTRAINT ck_segments_finite_times "
    "CHECK (isfinite(started_at) AND (ended_at IS NULL OR isfinite(ended_at)))",
]

UPGRADE = [*_FINITE, _POOL_USED, _SHARED_OPEN]

DOWNGRADE = [
    "ALTER TABLE segments DROP CONSTRAINT IF EXISTS ck_segments_finite_times",
    "DROP FUNCTION IF EXISTS quota_shared_open(timestamptz, text, text, boolean, text[], "
    "text[], text[], timestamptz, text[], boolean[], double precision[])",
    "DROP FUNCTION IF EXISTS quota_pool_used(text, text, boolean, timestamptz, double precision)",
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
