"""decide's reads as functions that always run one generic plan

``decide`` reads one user's rollup days, running segments and edge-day (or whole-window)
segments in one statement (ledger/store/rollups.py). Sent from the client as a prepared
statement, PostgreSQL's ``plan_cache_mode = auto`` plans it afresh (a custom plan) for the
first five runs on each connection and then keeps custom plans for good if those five were
cheap enough — a choice made by luck, per connection. A custom plan of this statement over
the monthly partitions costs 1.5–3 ms of planning; the generic plan, which prunes partitions
at executor start-up, runs in ~0.4 ms (benchmarks/RESULTS.md, "decide with generic plans").
Only this statement is pinned: the report's aggregate is 3× slower with a generic plan, so
the session setting stays ``auto``.

A PL/pgSQL function with ``SET plan_cache_mode = force_generic_plan`` caches its query's
plan per session and applies the setting only while it runs
(https://www.postgresql.org/docs/current/runtime-config-query.html#GUC-PLAN-CACHE-MODE,
https://www.postgresql.org/docs/current/plpgsql-implementation.html#PLPGSQL-PLAN-CACHING).
The edge days come as an array (one plan for any number of windows), each day two index
range scans (ix_segments_user_start, ix_segments_user_end) under a LATERAL join, defined once
in the inlinable ``quota_user_partials``.

Row kinds (ledger/store/rollups.py ``UserHistory.add_records``): 2 a rollup day, 1 a closed
segment (keyed by id for edge days), 0 a running segment, 3 "every closed segment of the
window is here", 4 "the user has grants or credits that may count".

Revision ID: 0013
Revises: 0010
"""

from alembic import op

revision = "0013"
down_revision = "0010"
branch_labels = None
depends_on = None

_ROW = """
    kind int, a bigint, b bigint, servername text, cpu bigint, memory bigint, gpu bigint,
    ext jsonb, cpu_used text, memory_used text, gpu_used text, ext_used jsonb
"""

UPGRADE = [
    # closed segments starting or ending inside each day of p_days (a segment ending at
    # midnight is not inside the day before); both arms are index range scans per day
    f"""
    CREATE FUNCTION quota_user_partials(p_username text, p_days timestamptz[])
    RETURNS TABLE ({_ROW})
    LANGUAGE sql STABLE AS $fn$
        SELECT 1, quota_epoch_us(s.started_at), quota_epoch_us(s.ended_at), s.id::text,
               s.cpu_millicores, s.memory_bytes, s.gpu_count, NULLIF(s.extended, '{{}}'),
               NULL::text, NULL::text, NULL::text, NULL::jsonb
        FROM unnest(p_days) AS z(day) CROSS JOIN LATERAL (
            SELECT x.id, x.started_at, x.ended_at, x.cpu_millicores, x.memory_bytes,
                   x.gpu_count, x.extended
            FROM segments x
            WHERE x.username = p_username AND x.ended_at IS NOT NULL
              AND x.started_at >= z.day AND x.started_at < z.day + interval '24 hours'
            UNION ALL
            SELECT x.id, x.started_at, x.ended_at, x.cpu_millicores, x.memory_bytes,
                   x.gpu_count, x.extended
            FROM segments x
            WHERE x.username = p_username AND x.ended_at IS NOT NULL
              AND COALESCE(x.ended_at, 'infinity'::timestamptz) > z.day
              AND COALESCE(x.ended_at, 'infinity'::timestamptz) < z.day + interval '24 hours'
              AND NOT (x.started_at >= z.day AND x.started_at < z.day + interval '24 hours')
        ) s
    $fn$
    """,  # noqa: S608 - constants only
    f"""
    CREATE FUNCTION quota_user_days(p_username text, p_days timestamptz[])
    RETURNS TABLE ({_ROW})
    LANGUAGE plpgsql STABLE
    SET plan_cache_mode = force_generic_plan AS $fn$
    BEGIN
        RETURN QUERY SELECT * FROM quota_user_partials(p_username, p_days);
    END
    $fn$
    """,  # noqa: S608 - constants only
    # one user's history at p_at: rollup days from p_first_day, running segments, and every
    # closed segment of the window when there are at most p_whole_max of them (counted from
    # the rollups), else the partial segments of the edge days p_edges
    f"""
    CREATE FUNCTION quota_user_history(
        p_username text, p_first_day timestamptz, p_at timestamptz, p_whole_max bigint,
        p_edges timestamptz[]
    ) RETURNS TABLE ({_ROW})
    LANGUAGE plpgsql STABLE
    SET plan_cache_mode = force_generic_plan AS $fn$
    BEGIN
    RETURN QUERY
        WITH days AS (
            SELECT r.bucket_start, r.cpu_cover, r.memory_cover, r.gpu_cover, r.extended_cover,
                   r.cpu_used, r.memory_used, r.gpu_used, r.extended_used,
                   r.segments_started, r.segments_covering
            FROM usage_rollups r
            WHERE r.username = p_username AND r.bucket_start >= p_first_day
              AND r.bucket_start <= p_at
        ), whole AS (
            SELECT COALESCE(SUM(d.segments_started), 0) + COALESCE(MAX(d.segments_covering), 0)
                   <= p_whole_max AS whole
            FROM days d
        )
        SELECT 2, quota_epoch_us(d.bucket_start), NULL::bigint, ''::text,
               d.cpu_cover, d.memory_cover, d.gpu_cover, NULLIF(d.extended_cover, '{{}}'),
               d.cpu_used::text, d.memory_used::text, d.gpu_used::text,
               NULLIF(d.extended_used, '{{}}')
        FROM days d
        UNION ALL
        SELECT 3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
        WHERE (SELECT w.whole FROM whole w)
        UNION ALL
        -- most users have none: one index probe each saves them grants.user_adjustments'
        -- round trip (a superset of what it reads: credits from the window's first day on)
        SELECT 4, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
        WHERE EXISTS (SELECT 1 FROM quota_grants g WHERE g.username = p_username
                      AND g.ends_at > p_at AND (g.revoked_at IS NULL OR g.revoked_at > p_at))
           OR EXISTS (SELECT 1 FROM quota_credits c WHERE c.username = p_username
                      AND c.credited_at >= p_first_day)
        UNION ALL
        SELECT 0, quota_epoch_us(s.started_at), quota_epoch_us(s.ended_at), s.servername,
               s.cpu_millicores, s.memory_bytes, s.gpu_count, NULLIF(s.extended, '{{}}'),
               NULL, NULL, NULL, NULL::jsonb
        FROM segments s
        WHERE s.username = p_username AND COALESCE(s.ended_at, 'infinity'::timestamptz) > p_at
          AND s.started_at < p_at
        UNION ALL
        -- every closed segment touching the window's days (an index-only scan of
        -- ix_segments_user_end: no id, which is not in the index)
        SELECT 1, quota_epoch_us(s.started_at), quota_epoch_us(s.ended_at), NULL,
               s.cpu_millicores, s.memory_bytes, s.gpu_count, NULLIF(s.extended, '{{}}'),
               NULL, NULL, NULL, NULL::jsonb
        FROM segments s
        WHERE s.username = p_username AND s.ended_at IS NOT NULL
          AND COALESCE(s.ended_at, 'infinity'::timestamptz) > p_first_day
          AND s.started_at < p_at
          AND (SELECT w.whole FROM whole w)
        UNION ALL
        SELECT * FROM quota_user_partials(p_username, p_edges)
        WHERE NOT (SELECT w.whole FROM whole w);
    END
    $fn$
    """,  # noqa: S608 - constants only
]

DOWNGRADE = [
    "DROP FUNCTION IF EXISTS quota_user_history(text, timestamptz, timestamptz, bigint, "
    "timestamptz[])",
    "DROP FUNCTION IF EXISTS quota_user_days(text, timestamptz[])",
    "DROP FUNCTION IF EXISTS quota_user_partials(text, timestamptz[])",
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
