"""faster reads of the rollups: an inlinable quota_epoch_us, quota_usage summing intervals

- ``quota_epoch_us`` computed ``EXTRACT(EPOCH FROM timestamptz)``, which PostgreSQL marks
  STABLE (it can depend on the time zone), inside a function declared IMMUTABLE: such a SQL
  function is never inlined (https://wiki.postgresql.org/wiki/Inlining_of_SQL_functions), so
  every call ran the function machinery (~7 µs; 2.5 s of the all-users report, and most of
  one user's decision query). ``timestamptz - timestamptz`` and ``EXTRACT(EPOCH FROM
  interval)`` are IMMUTABLE: the same exact value, now inlined.
- ``quota_usage`` (same signature, same columns, same exact numbers) sums the rollup days
  per user first, and the edge days' partial segments as native ``interval``s grouped by
  user, server size and edge, before the exact numeric products (as 0003 did for raw
  segments).

Revision ID: 0005
Revises: 0004
"""

import importlib.util
from pathlib import Path

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

EPOCH_US_V2 = r"""
CREATE OR REPLACE FUNCTION quota_epoch_us(at_time timestamptz) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (EXTRACT(EPOCH FROM at_time - timestamptz '1970-01-01 00:00:00+00') * 1000000)::bigint
$$"""

# U = Σ used over days [zs, za) − ∫ over [zs, since) + ∫ over [za, at), closed segments, plus
# open segments up to ``at``; the edge integrals come from the covering rate and the edge
# days' partial segments (ledger/core/rollup_usage.py has the arithmetic).
QUOTA_USAGE_V4 = r"""
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
    WITH p AS (
        SELECT at_time - window_length AS since,
               quota_bucket_start(at_time - window_length) AS zs,
               quota_bucket_start(at_time) AS za
    ), edges AS (
        -- (day, sign, point, µs from the day's start to the point):
        -- subtract ∫[zs, since), add ∫[za, at)
        SELECT zs AS z, -1 AS sign, since AS point, true AS first,
               quota_epoch_us(since) - quota_epoch_us(zs) AS us
        FROM p
        UNION ALL
        SELECT za, 1, at_time, false, quota_epoch_us(at_time) - quota_epoch_us(za) FROM p
    ), edge_sizes AS (
        -- the edge days' partial segments, their overlaps summed as intervals (int64 µs
        -- inside PostgreSQL) per user, size and edge: numeric work on few rows
        SELECT s.username, e.sign, s.cpu_millicores, s.memory_bytes, s.gpu_count,
               SUM(GREATEST(LEAST(s.ended_at, e.point) - GREATEST(s.started_at, e.z),
                            interval '0')) AS overlap,
               SUM(CASE WHEN e.first THEN (s.started_at < at_time AND s.ended_at > p.since)::int
                        WHEN p.za <> p.zs
                            THEN (s.started_at >= p.za AND s.started_at < at_time)::int
                        ELSE 0 END) AS n
        FROM edges e CROSS JOIN p
        JOIN segments s ON s.ended_at IS NOT NULL AND (
            (s.started_at >= e.z AND s.started_at < e.z + interval '24 hours')
            OR (COALESCE(s.ended_at, 'infinity'::timestamptz) > e.z
                AND COALESCE(s.ended_at, 'infinity'::timestamptz) < e.z + interval '24 hours'))
        GROUP BY s.username, e.sign, s.cpu_millicores, s.memory_bytes, s.gpu_count
    ), parts AS (
        SELECT r.username, SUM(r.cpu_used) AS cpu, SUM(r.memory_used) AS memory,
               SUM(r.gpu_used) AS gpu,
               SUM(CASE WHEN r.bucket_start > p.zs THEN r.segments_started ELSE 0 END) AS n,
               0 AS run_n, 0 AS run_cpu, 0 AS run_memory, 0 AS run_gpu
        FROM usage_rollups r, p
        WHERE r.bucket_start >= p.zs AND r.bucket_start < p.za
        GROUP BY r.username
        UNION ALL
        SELECT r.username,
               e.sign * e.us * r.cpu_cover::numeric,
               e.sign * e.us * r.memory_cover::numeric,
               e.sign * e.us * r.gpu_cover::numeric,
               CASE WHEN e.first THEN r.segments_covering ELSE 0 END,
               0, 0, 0, 0
        FROM edges e JOIN usage_rollups r ON r.bucket_start = e.z
        UNION ALL
        SELECT g.username,
               g.sign * g.cpu_millicores * o.us,
               g.sign * g.memory_bytes * o.us,
               g.sign * g.gpu_count * o.us,
               g.n, 0, 0, 0, 0
        FROM edge_sizes g
        CROSS JOIN LATERAL (
            SELECT (EXTRACT(EPOCH FROM g.overlap) * 1000000)::bigint::numeric AS us) o
        UNION ALL
        SELECT s.username,
               s.cpu_millicores::numeric * o.us, s.memory_bytes::numeric * o.us,
               s.gpu_count::numeric * o.us, (s.ended_at IS NULL)::int,
               1, s.cpu_millicores, s.memory_bytes, s.gpu_count
        FROM segments s CROSS JOIN p
        CROSS JOIN LATERAL (SELECT CASE WHEN s.ended_at IS NULL
            THEN quota_epoch_us(at_time) - quota_epoch_us(GREATEST(s.started_at, p.since))
            ELSE 0 END AS us) o
        WHERE COALESCE(s.ended_at, 'infinity'::timestamptz) > at_time AND s.started_at < at_time
    ), sums AS (
        SELECT username, SUM(cpu) AS cpu, SUM(memory) AS memory, SUM(gpu) AS gpu,
               SUM(n) AS n, SUM(run_n) AS run_n, SUM(run_cpu) AS run_cpu,
               SUM(run_memory) AS run_memory, SUM(run_gpu) AS run_gpu
        FROM parts GROUP BY username
    )
    SELECT username,
           cpu * 0.000001, memory * 0.000001, gpu * 0.000001,  -- exact: µs to seconds
           ROUND(cpu / 3600000000000, 6),
           ROUND(memory / (3600000000 * 1073741824::numeric), 6),
           ROUND(gpu / 3600000000, 6),
           run_n::bigint, run_cpu::bigint, run_memory::bigint, run_gpu::bigint, n::bigint
    FROM sums
    WHERE n > 0
$$
"""


def _revision_0004():
    # a module name cannot start with a digit: load 0004's file for its definitions
    spec = importlib.util.spec_from_file_location(
        "quota_ledger_0004", Path(__file__).with_name("0004_usage_rollups.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def upgrade() -> None:
    op.execute(EPOCH_US_V2)
    op.execute(QUOTA_USAGE_V4)


def downgrade() -> None:
    v4 = _revision_0004()
    op.execute(v4.QUOTA_USAGE_V3)
    epoch_us = next(f for f in v4.FUNCTIONS if "FUNCTION quota_epoch_us" in f)
    op.execute(epoch_us.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))
