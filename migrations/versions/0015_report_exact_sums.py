"""the report's aggregate in one pass, in integer base-unit·µs: ``quota_usage_exact``

``quota_usage_exact(at, window)`` is what ``quota_usage`` computed (migration 0012), with the
usage as exact integers in base-unit·µs (``cpu_used``, ``memory_used``, ``gpu_used``, as in
``usage_rollups``) instead of seconds and hours: the all-users report reads it
(``ledger.store.queries.usage_report_us``) and ``quota_usage`` is now a thin SELECT over it, so
the report, the CLI, the web pages and the SQL views share one aggregate. ``quota_usage``'s
signature, columns and numbers stay as docs/reporting.md documents them.

What changed in the aggregate (same arithmetic, ledger/core/rollup_usage.py; benchmarks/
RESULTS.md has the figures):

- **One aggregate per user** instead of two: the whole days' rows (blocks and days, numeric
  as stored), the edge days' covering rates, their partial segments and the open segments
  feed one ``GROUP BY username``. Each source fills its own columns and leaves the others
  NULL, which an aggregate skips without work.
- **The edge days' partial segments in integers, without sorting.** 0005/0012 grouped them
  by user, edge and server size (a sort of every row) to sum their overlaps as intervals
  before numeric products. Here each row's overlap with the edge is turned into bigint µs
  and multiplied by its rates in bigint; ``SUM(bigint)`` accumulates in 128-bit integers
  (https://www.postgresql.org/docs/current/functions-aggregate.html: its result is numeric,
  exact). The overlap of one edge day is at most 86,400 s, so ``date_part('epoch', interval)``
  (a double: the interval's int64 µs / 10⁶) times 10⁶ is within 2⁻¹⁵ µs of the integer and
  ``round`` gives it back exactly, without the numeric arithmetic of ``EXTRACT``.
  ``memory_bytes × µs`` can exceed bigint (4 GiB for a day is ~3.7·10²⁰), so memory is
  summed as two limbs, ``memory_bytes >> 24`` and ``memory_bytes & (2²⁴ − 1)``, and joined
  once per user (×2²⁴). Every product stays below 2⁶³ for pods under 1.8 PB of memory or
  10⁵ CPUs; beyond, PostgreSQL raises "bigint out of range" rather than give a wrong sum.
- **Fewer raw rows at the edges.** The first edge day's segments starting after ``since``
  have no part in [zs, since) and are counted by the day's ``segments_started`` (in the
  whole days): only those starting before ``since`` and those ending in the day that
  started before it are read (at midnight, 1.7k rows instead of 38k at 3 M segments). The
  last edge day's ∫[za, at) is its rollup integral minus ∫[at, za + 24 h): the covering
  rate's part, and the segments starting at or after ``at`` or running past it. Those are
  the closed segments after ``at`` — none when ``at`` is now — instead of every segment
  the day closed before ``at``.

Revision ID: 0015
Revises: 0014
"""

import importlib.util
from pathlib import Path

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

# U = Σ used over the whole days [zs, za) (aligned blocks and single days, migration 0012)
# − ∫[zs, since) + ∫[za, at) for closed segments (the edges from the covering rate, day za's
# integral and the edge days' partial segments), plus open segments up to ``at``. Segment
# counts: the whole days' starts, plus day zs's covering segments and those ending in it
# after since, minus its starts that ended by since; day za's starts minus those at or
# after at (when za > zs; else day zs's segments in the window, read raw); open ones.
QUOTA_USAGE_EXACT = r"""
CREATE FUNCTION quota_usage_exact(
    at_time timestamptz DEFAULT now(), window_length interval DEFAULT interval '30 days'
) RETURNS TABLE (
    username text,
    cpu_used numeric,
    memory_used numeric,
    gpu_used numeric,
    running_servers bigint,
    running_cpu_millicores bigint,
    running_memory_bytes bigint,
    running_gpu_count bigint,
    segments bigint
)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    WITH p AS (
        SELECT at_time - window_length AS since,
               quota_bucket_start(at_time - window_length) AS zs,
               quota_bucket_start(at_time) AS za
    ), edges AS (
        -- (day, first?, point, µs from the day's start to the point, whole days in between,
        -- the end of the starts read raw, µs the covering rate counts for (signed), whether
        -- the day's rollup integral counts): subtract ∫[zs, since); add ∫[za, at) as the
        -- day's integral minus ∫[at, za + 24 h), which is no segment's for a closed one's
        -- before now
        SELECT zs AS z, true AS first, since AS point,
               quota_epoch_us(since) - quota_epoch_us(zs) AS us, za > zs AS whole_days,
               CASE WHEN za > zs THEN since + interval '1 microsecond'
                    ELSE zs + interval '24 hours' END AS starts_until,
               quota_epoch_us(zs) - quota_epoch_us(since) AS cover_us
        FROM p
        UNION ALL
        SELECT za, false, at_time, quota_epoch_us(at_time) - quota_epoch_us(za), za > zs,
               at_time, quota_epoch_us(at_time) - quota_epoch_us(za + interval '24 hours')
        FROM p
    ), pieces AS MATERIALIZED (
        SELECT q.width_days, q.bucket_start FROM p, quota_rollup_pieces(p.zs, p.za) q
    ), parts AS (
        -- whole days (numeric, as stored); LATERAL … OFFSET 0 keeps each piece an index
        -- lookup (migration 0012)
        SELECT r.username, r.cpu_used AS cpu, r.memory_used AS memory, r.gpu_used AS gpu,
               NULL::bigint AS cpu_e, NULL::bigint AS memory_hi, NULL::bigint AS memory_lo,
               NULL::bigint AS gpu_e, r.segments_started AS n, NULL::int AS run_n,
               NULL::bigint AS run_cpu, NULL::bigint AS run_memory, NULL::bigint AS run_gpu
        FROM pieces q CROSS JOIN LATERAL (
            SELECT r.username, r.cpu_used, r.memory_used, r.gpu_used, r.segments_started
            FROM usage_rollups r WHERE r.bucket_start = q.bucket_start OFFSET 0) r
        WHERE q.width_days = 1
        UNION ALL
        SELECT b.username, b.cpu_used, b.memory_used, b.gpu_used,
               NULL, NULL, NULL, NULL, b.segments_started, NULL, NULL, NULL, NULL
        FROM pieces q CROSS JOIN LATERAL (
            SELECT b.username, b.cpu_used, b.memory_used, b.gpu_used, b.segments_started
            FROM usage_rollup_blocks b
            WHERE b.width_days = q.width_days AND b.bucket_start = q.bucket_start
            OFFSET 0) b
        WHERE q.width_days > 1
        UNION ALL
        -- the edge days' rollup rows: the covering rate × µs, and the last one's integral
        SELECT r.username,
               CASE WHEN NOT e.first THEN r.cpu_used END,
               CASE WHEN NOT e.first THEN r.memory_used END,
               CASE WHEN NOT e.first THEN r.gpu_used END,
               e.cover_us * r.cpu_cover,
               e.cover_us * (r.memory_cover >> 24),
               e.cover_us * (r.memory_cover & 16777215),
               e.cover_us * r.gpu_cover,
               CASE WHEN e.first THEN r.segments_covering
                    WHEN e.whole_days THEN r.segments_started ELSE 0 END,
               NULL, NULL, NULL, NULL
        FROM edges e JOIN usage_rollups r ON r.bucket_start = e.z
        UNION ALL
        -- the first edge day's partial segments: those starting in it before
        -- ``starts_until`` (later ones have no overlap with [zs, since), and its starts are
        -- counted from its rollup row's ``segments_started``, in the pieces), and those
        -- ending in it that started before it; each one's overlap with [zs, since) in
        -- bigint µs, times its rates
        SELECT s.username, NULL, NULL, NULL,
               -o.us * s.cpu_millicores, -o.us * (s.memory_bytes >> 24),
               -o.us * (s.memory_bytes & 16777215), -o.us * s.gpu_count,
               CASE WHEN NOT e.whole_days
                        THEN (s.started_at < at_time AND s.ended_at > e.point)::int
                    -- counted in segments_started, but not in the window
                    WHEN s.started_at >= e.z THEN -(s.ended_at <= e.point)::int
                    ELSE (s.ended_at > e.point)::int END,
               NULL, NULL, NULL, NULL
        FROM edges e
        JOIN segments s ON e.first AND s.ended_at IS NOT NULL AND (
            (s.started_at >= e.z AND s.started_at < e.starts_until)
            OR (COALESCE(s.ended_at, 'infinity'::timestamptz) > e.z
                AND COALESCE(s.ended_at, 'infinity'::timestamptz) < e.z + interval '24 hours'
                AND s.started_at < e.z))
        CROSS JOIN LATERAL (SELECT CASE
            WHEN s.started_at < e.point AND s.ended_at > e.z AND e.point > e.z
            THEN round(date_part('epoch', LEAST(s.ended_at, e.point)
                                          - GREATEST(s.started_at, e.z)) * 1000000)::bigint
            ELSE 0 END AS us) o
        UNION ALL
        -- the last edge day's partial segments with a part in [at, za + 24 h), taken off its
        -- integral: those starting at or after ``at`` (not counted either), and those
        -- running past it; none but clock skew's when ``at`` is now
        SELECT s.username, NULL, NULL, NULL,
               -o.us * s.cpu_millicores, -o.us * (s.memory_bytes >> 24),
               -o.us * (s.memory_bytes & 16777215), -o.us * s.gpu_count,
               -(p.za > p.zs AND s.started_at >= at_time)::int,
               NULL, NULL, NULL, NULL
        FROM p
        JOIN segments s ON s.ended_at IS NOT NULL AND (
            (s.started_at >= at_time AND s.started_at < p.za + interval '24 hours')
            OR (COALESCE(s.ended_at, 'infinity'::timestamptz) > at_time
                AND s.started_at < at_time
                AND (s.started_at >= p.za OR s.ended_at < p.za + interval '24 hours')))
        CROSS JOIN LATERAL (SELECT GREATEST(round(date_part('epoch',
                LEAST(s.ended_at, p.za + interval '24 hours') - GREATEST(s.started_at, at_time))
            * 1000000)::bigint, 0) AS us) o
        UNION ALL
        -- what is open or runs at ``at`` (few rows, from the open-pod index)
        SELECT s.username,
               s.cpu_millicores::numeric * o.us, s.memory_bytes::numeric * o.us,
               s.gpu_count::numeric * o.us, NULL, NULL, NULL, NULL, (s.ended_at IS NULL)::int,
               1, s.cpu_millicores, s.memory_bytes, s.gpu_count
        FROM segments s CROSS JOIN p
        CROSS JOIN LATERAL (SELECT CASE WHEN s.ended_at IS NULL
            THEN quota_epoch_us(at_time) - quota_epoch_us(GREATEST(s.started_at, p.since))
            ELSE 0 END AS us) o
        WHERE COALESCE(s.ended_at, 'infinity'::timestamptz) > at_time AND s.started_at < at_time
    ), sums AS (
        SELECT username, SUM(cpu) AS cpu, SUM(memory) AS memory, SUM(gpu) AS gpu,
               SUM(cpu_e) AS cpu_e, SUM(memory_hi) AS memory_hi, SUM(memory_lo) AS memory_lo,
               SUM(gpu_e) AS gpu_e, SUM(n) AS n, COUNT(run_n) AS run_n,
               SUM(run_cpu) AS run_cpu, SUM(run_memory) AS run_memory, SUM(run_gpu) AS run_gpu
        FROM parts GROUP BY username
    )
    SELECT username,
           COALESCE(cpu, 0) + COALESCE(cpu_e, 0),
           COALESCE(memory, 0) + COALESCE(memory_hi, 0) * 16777216 + COALESCE(memory_lo, 0),
           COALESCE(gpu, 0) + COALESCE(gpu_e, 0),
           run_n, COALESCE(run_cpu, 0)::bigint, COALESCE(run_memory, 0)::bigint,
           COALESCE(run_gpu, 0)::bigint, n::bigint
    FROM sums
    WHERE n > 0
$$
"""

QUOTA_USAGE_EXACT_COMMENT = r"""
COMMENT ON FUNCTION quota_usage_exact IS
  'quota_usage with the usage as exact integers in base-unit-microseconds (cpu_used, memory_used, gpu_used); quota_usage reads it.'
"""

# quota_usage: same signature, columns and numbers as 0002..0012, from quota_usage_exact
QUOTA_USAGE_V6 = r"""
CREATE OR REPLACE FUNCTION quota_usage(
    at_time timestamptz DEFAULT now(), window_length interval DEFAULT interval '30 days'
) RETURNS TABLE (
    username text,
    cpu_millicore_seconds numeric,
    memory_byte_seconds numeric,
    gpu_seconds numeric,
    cpu_hours numeric,
    memory_gib_hours numeric,
    gpu_hours numeric,
    running_servers bigint,
    running_cpu_millicores bigint,
    running_memory_bytes bigint,
    running_gpu_count bigint,
    segments bigint
)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT username,
           cpu_used * 0.000001, memory_used * 0.000001, gpu_used * 0.000001,  -- µs to seconds
           ROUND(cpu_used / 3600000000000, 6),
           ROUND(memory_used / (3600000000 * 1073741824::numeric), 6),
           ROUND(gpu_used / 3600000000, 6),
           running_servers, running_cpu_millicores, running_memory_bytes, running_gpu_count,
           segments
    FROM quota_usage_exact(at_time, window_length)
$$
"""


def _revision_0012():
    # a module name cannot start with a digit: load 0012's file for its quota_usage
    spec = importlib.util.spec_from_file_location(
        "quota_ledger_0012", Path(__file__).with_name("0012_rollup_blocks.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def upgrade() -> None:
    op.execute(QUOTA_USAGE_EXACT)
    op.execute(QUOTA_USAGE_EXACT_COMMENT)
    op.execute(QUOTA_USAGE_V6)


def downgrade() -> None:
    # quota_usage first: a SQL function's body does not hold a dependency on what it calls
    op.execute(_revision_0012().QUOTA_USAGE_V5)
    op.execute("DROP FUNCTION IF EXISTS quota_usage_exact(timestamptz, interval)")
