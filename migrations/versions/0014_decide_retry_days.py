"""decide's first read also ships the day a busy user's retry time falls in

A user with more than ``WHOLE_WINDOW_SEGMENTS`` closed segments in the window gets the edge
days' raw segments only (ledger/store/rollups.py). Over budget, their retry time — the first
instant usage drops below the limit once everything running stops — lies in some day inside
the window, whose raw segments the arithmetic needs: a second round trip, which about one
user in eleven of the benchmark ledger paid (benchmarks/RESULTS.md, "round trips").

That day can be found from what the statement already reads. With R(x) the usage in
[x, now) (closed segments from the days' totals, open ones by their rate), the retry time
lies in the day d with R(d) ≥ limit > R(d + 1 day); the days' totals give R exactly at every
midnight but for today's piece [today, now), which is at most today's total. So the
statement takes each budget's (resource, window start, limit), and ships the raw segments of
the (at most three per budget) days where the crossing can lie, with a row of kind 5 per
such day ("its raw segments are here"). It is a hint: the Python arithmetic stays the judge
(ledger/core/rollup_usage.py), and a day it needs that the hint missed (grants or credits
moving the limit, a run-out question) still costs a round trip; the answer is the same.

The function now runs one of two queries, each with its own cached generic plan: a quiet
user's (read whole: days, and every segment of the window in one index range — kind 0 open,
1 closed by now, 6 closed after now, which is both a running and a closed segment) and a busy
user's (days, running segments, the hint, the edge and hinted days' partial segments), so
the common case sets up none of the busy case's scans; deciding which costs a second probe of
the user's days (https://www.postgresql.org/docs/current/plpgsql-implementation.html#PLPGSQL-PLAN-CACHING).

Revision ID: 0014
Revises: 0012
"""

import importlib.util
from pathlib import Path

from alembic import op

revision = "0014"
down_revision = "0012"
branch_labels = None
depends_on = None


def _revision_0013():
    # a module name cannot start with a digit: load 0013's file for its statements
    spec = importlib.util.spec_from_file_location(
        "quota_ledger_0013", Path(__file__).with_name("0013_decide_generic_plans.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_OLD_SIGNATURE = "quota_user_history(text, timestamptz, timestamptz, bigint, timestamptz[])"
_NEW_SIGNATURE = (
    "quota_user_history(text, timestamptz, timestamptz, bigint, timestamptz[], text[], "
    "timestamptz[], numeric[])"
)


_DAYS = """
            SELECT r.bucket_start, r.cpu_cover, r.memory_cover, r.gpu_cover, r.extended_cover,
                   r.cpu_used, r.memory_used, r.gpu_used, r.extended_used
            FROM usage_rollups r
            WHERE r.username = p_username AND r.bucket_start >= p_first_day
              AND r.bucket_start <= p_at
"""
_DAY_ROWS = """
        SELECT 2, quota_epoch_us(d.bucket_start), NULL::bigint, ''::text,
               d.cpu_cover, d.memory_cover, d.gpu_cover, NULLIF(d.extended_cover, '{}'),
               d.cpu_used::text, d.memory_used::text, d.gpu_used::text,
               NULLIF(d.extended_used, '{}')
        FROM days d
        UNION ALL
        -- most users have none: one index probe each saves them grants.user_adjustments'
        -- round trip (a superset of what it reads: credits from the window's first day on)
        SELECT 4, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
        WHERE EXISTS (SELECT 1 FROM quota_grants g WHERE g.username = p_username
                      AND g.ends_at > p_at AND (g.revoked_at IS NULL OR g.revoked_at > p_at))
           OR EXISTS (SELECT 1 FROM quota_credits c WHERE c.username = p_username
                      AND c.credited_at >= p_first_day)
"""


def _create(module) -> str:
    return f"""
    CREATE FUNCTION quota_user_history(
        p_username text, p_first_day timestamptz, p_at timestamptz, p_whole_max bigint,
        p_edges timestamptz[], p_resources text[], p_since timestamptz[], p_limits numeric[]
    ) RETURNS TABLE ({module._ROW})
    LANGUAGE plpgsql STABLE
    SET plan_cache_mode = force_generic_plan AS $fn$
    DECLARE
        v_whole boolean;
        v_days timestamptz[];
    BEGIN
    -- Two queries, each with its own cached plan, so that the common case (a quiet user,
    -- read whole) sets up no scan of the busy case's; the days' index range is read twice.
    SELECT COALESCE(SUM(r.segments_started), 0) + COALESCE(MAX(r.segments_covering), 0)
           <= p_whole_max INTO v_whole
    FROM usage_rollups r
    WHERE r.username = p_username AND r.bucket_start >= p_first_day AND r.bucket_start <= p_at;
    IF v_whole THEN
    RETURN QUERY
        WITH days AS ({_DAYS})
        {_DAY_ROWS}
        UNION ALL
        SELECT 3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
        UNION ALL
        -- every segment touching the window's days, one index range (ix_segments_user_end,
        -- index-only): kind 0 open, 1 closed by now, 6 closed after now (running at now
        -- and a closed segment of the window both); a servername only for the running.
        -- A segment starting at p_at runs at p_at (segments are [start, end)), as
        -- ledger.core.decision counts it
        SELECT CASE WHEN s.ended_at IS NULL THEN 0 WHEN s.ended_at > p_at THEN 6 ELSE 1 END,
               quota_epoch_us(s.started_at), quota_epoch_us(s.ended_at),
               CASE WHEN COALESCE(s.ended_at, 'infinity'::timestamptz) > p_at
                    THEN s.servername END,
               s.cpu_millicores, s.memory_bytes, s.gpu_count, NULLIF(s.extended, '{{}}'),
               NULL, NULL, NULL, NULL::jsonb
        FROM segments s
        WHERE s.username = p_username
          AND COALESCE(s.ended_at, 'infinity'::timestamptz) > p_first_day
          AND s.started_at <= p_at;
    ELSE
    -- the hint first, into a variable: as a plain parameter the partials' function below
    -- stays inlined (an argument holding a subquery would run it as a function of its own)
    SELECT COALESCE(array_agg(c.day), '{{}}') INTO v_days FROM (
        WITH days AS ({_DAYS}), open_segments AS (
            SELECT s.started_at, s.cpu_millicores, s.memory_bytes, s.gpu_count, s.extended
            FROM segments s
            WHERE s.username = p_username
              AND COALESCE(s.ended_at, 'infinity'::timestamptz) = 'infinity'::timestamptz
              AND s.started_at < p_at
        ), per_day AS MATERIALIZED (
            -- per budget and day from the day after the window's first to today: the day's
            -- closed usage plus what open segments used in it (up to now), of its resource
            -- (materialized: worked out once per row, not once per window function using it)
            SELECT l.i, l.lim, z.day,
                   COALESCE(CASE l.res WHEN 'cpu' THEN d.cpu_used
                                       WHEN 'memory' THEN d.memory_used
                                       WHEN 'gpu' THEN d.gpu_used
                                       ELSE (d.extended_used ->> l.res)::numeric END, 0)
                   + CASE WHEN NOT EXISTS (SELECT 1 FROM open_segments) THEN 0 ELSE COALESCE((
                       SELECT SUM(CASE l.res WHEN 'cpu' THEN o.cpu_millicores
                                             WHEN 'memory' THEN o.memory_bytes
                                             WHEN 'gpu' THEN o.gpu_count
                                             ELSE (o.extended ->> l.res)::bigint END::numeric
                                  * GREATEST(0, quota_epoch_us(LEAST(z.day + interval '24 hours',
                                                                     p_at))
                                                - quota_epoch_us(GREATEST(z.day, o.started_at))))
                       FROM open_segments o), 0) END AS v
            FROM unnest(p_resources, p_since, p_limits) WITH ORDINALITY AS l(res, since, lim, i)
            CROSS JOIN LATERAL generate_series(
                quota_bucket_start(l.since) + interval '24 hours', quota_bucket_start(p_at),
                interval '24 hours') AS z(day)
            LEFT JOIN days d ON d.bucket_start = z.day
        )
        -- R(day) lies within today's v below from_day, R(day + 1) within it below
        -- from_day - v: the days where R can cross the limit, the latest three per budget
        SELECT DISTINCT b.day FROM (
            SELECT b.day, row_number() OVER (PARTITION BY b.i ORDER BY b.day DESC) AS k
            FROM (
                SELECT p.i, p.day, p.lim, p.v,
                       SUM(p.v) OVER w AS from_day, FIRST_VALUE(p.v) OVER w AS today
                FROM per_day p
                WINDOW w AS (PARTITION BY p.i ORDER BY p.day DESC)
            ) b
            WHERE b.day < quota_bucket_start(p_at) AND b.from_day >= b.lim
              AND b.from_day - b.v - b.today < b.lim
        ) b WHERE b.k <= 3
    ) c;
    RETURN QUERY
        WITH days AS ({_DAYS})
        {_DAY_ROWS}
        UNION ALL
        SELECT 0, quota_epoch_us(s.started_at), quota_epoch_us(s.ended_at), s.servername,
               s.cpu_millicores, s.memory_bytes, s.gpu_count, NULLIF(s.extended, '{{}}'),
               NULL, NULL, NULL, NULL::jsonb
        FROM segments s
        WHERE s.username = p_username
          AND COALESCE(s.ended_at, 'infinity'::timestamptz) > p_at AND s.started_at <= p_at
        UNION ALL
        SELECT 5, quota_epoch_us(z.day), NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
               NULL
        FROM unnest(v_days) AS z(day)
        UNION ALL
        SELECT * FROM quota_user_partials(p_username, p_edges || v_days);
    END IF;
    END
    $fn$
    """  # noqa: S608 - constants only


def upgrade() -> None:
    op.execute(f"DROP FUNCTION {_OLD_SIGNATURE}")
    op.execute(_create(_revision_0013()))


def downgrade() -> None:
    op.execute(f"DROP FUNCTION {_NEW_SIGNATURE}")
    module = _revision_0013()
    op.execute(module.UPGRADE[2])
