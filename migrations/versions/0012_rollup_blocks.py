"""rollup blocks: the per-user day rollups summed over aligned 2..16-day blocks, so a window's
whole days are ≤ ~10 rows per user instead of one per day

``usage_rollup_blocks`` holds, per user, width (2, 4, 8 or 16 days) and block (aligned
to 1970-01-01, so a block of width w starts on a day number divisible by w), the sums of the
``usage_rollups`` days inside it: ``cpu_used``, ``memory_used``, ``gpu_used`` (exact
base-unit·µs, numeric as in usage_rollups) and ``segments_started``. Any range of whole days
is the disjoint union of at most two blocks per width (``quota_rollup_pieces``: the largest
aligned blocks inside it, a day being a width-1 piece read from ``usage_rollups``), so the
30-day report reads ≤ ~8 rows per user for the window's whole days instead of 30; the edge
days are read as before (migration 0005).

Invariant: every block equals the sum of its days in ``usage_rollups``, whatever writes
them. Statement-level triggers with transition tables on ``usage_rollups`` itself (fired by
the segment triggers' upsert, ``rollups rebuild``, or an admin's UPDATE; TRUNCATE empties the
blocks) add each changed day's delta to the 4 blocks containing it, in the same transaction
(https://www.postgresql.org/docs/current/trigger-definition.html; for INSERT … ON CONFLICT
DO UPDATE both the INSERT and the UPDATE statement triggers fire, each with its own rows:
https://www.postgresql.org/docs/current/sql-createtrigger.html, "Notes"). Unlike a cumulative
level, a late or bulk write touches only the 4 blocks of each day it changes, not every
later row. Retention (``quota_ledger.keep_rollups``) keeps the days and so the blocks.
``quota-ledger rollups verify`` compares the blocks with their days, ``rebuild`` recomputes
them.

Revision ID: 0012
Revises: 0011
"""

# ruff: noqa: S608 - SQL assembled from constants in this file only; no input reaches it
import importlib.util
from pathlib import Path

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

# Widest 16: a 30-day window never holds an aligned 32-day block, and each width costs every
# write one more block update per changed day (a 90-day window reads ~9 pieces, not ~6).
WIDTHS_DAYS = (2, 4, 8, 16)
_WIDTHS = "ARRAY[" + ", ".join(str(w) for w in WIDTHS_DAYS) + "]"
_SUMMED = ("cpu_used", "memory_used", "gpu_used", "segments_started")

# From day rows (a relation with ``sign, username, bucket_start`` and the summed columns) to
# block deltas. One template: the triggers, the backfill, rebuild and verify expand it.
AGGREGATE = f"""
    SELECT d.username, w.width_days,
           date_bin(make_interval(hours => 24 * w.width_days), d.bucket_start,
                    timestamptz '1970-01-01 00:00:00+00') AS bucket_start,
           {", ".join(f"SUM(d.sign * d.{c}) AS {c}" for c in _SUMMED)}
    FROM ({{source}}) d CROSS JOIN unnest({_WIDTHS}) AS w(width_days)
    {{where}}
    GROUP BY 1, 2, 3
    {{having}}
"""

_DAY_COLUMNS = "username, bucket_start, " + ", ".join(_SUMMED)

TABLE = rf"""
CREATE TABLE usage_rollup_blocks (
    username text NOT NULL,
    width_days integer NOT NULL CHECK (width_days IN ({", ".join(str(w) for w in WIDTHS_DAYS)})),
    bucket_start timestamptz NOT NULL,
    cpu_used numeric NOT NULL DEFAULT 0,
    memory_used numeric NOT NULL DEFAULT 0,
    gpu_used numeric NOT NULL DEFAULT 0,
    segments_started bigint NOT NULL DEFAULT 0,
    CONSTRAINT pk_usage_rollup_blocks PRIMARY KEY (username, width_days, bucket_start)
)"""

COMMENTS = [
    r"""
COMMENT ON TABLE usage_rollup_blocks IS
  'Per user, the usage_rollups days summed over aligned blocks of 2, 4, 8 or 16 UTC days (closed segments only: exact integrals in base-unit-microseconds, segments started). Kept by triggers on usage_rollups.'
""",
]

# the report reads one (width, block) for every user
INDEXES = [
    "CREATE INDEX ix_usage_rollup_blocks_bucket ON usage_rollup_blocks (width_days, bucket_start)"
]

UPSERT = (
    "INSERT INTO usage_rollup_blocks AS b SELECT * FROM ({aggregate}) a "
    "ON CONFLICT (username, width_days, bucket_start) DO UPDATE SET "
    + ", ".join(f"{c} = b.{c} + EXCLUDED.{c}" for c in _SUMMED)
)

# a day whose summed columns did not change (an UPDATE of covers only) writes no block
_NONZERO = "HAVING " + " OR ".join(f"SUM(d.sign * d.{c}) <> 0" for c in _SUMMED)


def _trigger_source(op_name: str) -> str:
    new = f"SELECT 1 AS sign, {_DAY_COLUMNS} FROM new_rows"
    old = f"SELECT -1 AS sign, {_DAY_COLUMNS} FROM old_rows"
    if op_name == "INSERT":
        return new
    if op_name == "DELETE":
        return old
    return f"{old} UNION ALL {new}"


def _trigger_function(op_name: str) -> str:
    # SECURITY DEFINER as usage_rollups' own triggers (migrations/versions/0004): kept as the
    # ledger's owner whoever writes the days.
    upsert = UPSERT.format(
        aggregate=AGGREGATE.format(source=_trigger_source(op_name), where="", having=_NONZERO)
    )
    return f"""
CREATE FUNCTION quota_rollup_blocks_on_{op_name.lower()}() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $fn$
BEGIN
    {upsert};
    RETURN NULL;
END
$fn$"""


TRUNCATE_FUNCTION = r"""
CREATE FUNCTION quota_rollup_blocks_on_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $fn$
BEGIN
    TRUNCATE usage_rollup_blocks;
    RETURN NULL;
END
$fn$"""

# What the blocks holding any day from ``since``'s day on should be, from usage_rollups
# (their earlier days included). Rebuild and verify use it. Days left all zero (their
# segments deleted) make no block: verify takes a missing block for zeros.
FROM_DAYS = f"""
CREATE FUNCTION quota_rollup_blocks_from_days(since timestamptz)
RETURNS SETOF usage_rollup_blocks
LANGUAGE sql STABLE AS $$
    SELECT * FROM ({
    AGGREGATE.format(
        source=f"SELECT 1 AS sign, {_DAY_COLUMNS} FROM usage_rollups "
        f"WHERE bucket_start > quota_bucket_start(since) - interval '{max(WIDTHS_DAYS)} days'",
        where="",
        having=_NONZERO,
    )
}) a
    WHERE a.bucket_start + make_interval(hours => 24 * a.width_days) > quota_bucket_start(since)
$$"""

FROM_DAYS_COMMENT = r"""
COMMENT ON FUNCTION quota_rollup_blocks_from_days IS
  'What usage_rollup_blocks should hold for the blocks holding days from since on, summed from usage_rollups (quota-ledger rollups rebuild / verify).'
"""

# The canonical cover of the days [from_day, to_day) (both UTC midnights) by aligned blocks:
# for each width, the blocks inside the range whose parent block (twice as wide) is not
# inside it; width 1 is a single day (usage_rollups), 16 the widest. ≤ 2 pieces per width.
PIECES = f"""
CREATE FUNCTION quota_rollup_pieces(from_day timestamptz, to_day timestamptz)
RETURNS TABLE (width_days integer, bucket_start timestamptz)
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    WITH d AS (
        SELECT (EXTRACT(EPOCH FROM from_day - timestamptz '1970-01-01 00:00:00+00') / 86400)::bigint AS a,
               (EXTRACT(EPOCH FROM to_day - timestamptz '1970-01-01 00:00:00+00') / 86400)::bigint AS b
    )
    SELECT w::integer, timestamptz '1970-01-01 00:00:00+00' + make_interval(hours => 24 * s::integer)
    FROM d, unnest(ARRAY[1, {", ".join(str(w) for w in WIDTHS_DAYS)}]) AS w,
         generate_series(((d.a + w - 1) / w) * w, d.b - w, w) AS s
    WHERE w = {max(WIDTHS_DAYS)} OR s - s % (2 * w) < d.a OR s - s % (2 * w) + 2 * w > d.b
$$"""

# quota_usage: same signature, columns and numbers as 0005's. The window's whole days
# [zs, za) come from the pieces (blocks, and single days from usage_rollups) instead of one
# usage_rollups row per day; everything else as 0005: U = Σ used over [zs, za) − ∫[zs, since)
# + ∫[za, at) for closed segments (the edges from the covering rate and the edge days'
# partial segments), plus open segments up to ``at``. The segment count over [zs, za) now
# includes day zs's starts, which the zs edge row takes back (they are counted by the edge's
# partial segments, as before). LATERAL … OFFSET 0 keeps each piece an index lookup (the
# planner, not knowing the pieces, would otherwise merge-join the whole table).
QUOTA_USAGE_V5 = r"""
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
        -- (day, sign, point, µs from the day's start to the point, whole days in between):
        -- subtract ∫[zs, since), add ∫[za, at)
        SELECT zs AS z, -1 AS sign, since AS point, true AS first,
               quota_epoch_us(since) - quota_epoch_us(zs) AS us, za > zs AS whole_days
        FROM p
        UNION ALL
        SELECT za, 1, at_time, false, quota_epoch_us(at_time) - quota_epoch_us(za), za > zs
        FROM p
    ), pieces AS MATERIALIZED (
        SELECT q.width_days, q.bucket_start FROM p, quota_rollup_pieces(p.zs, p.za) q
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
        SELECT x.username, SUM(x.cpu_used) AS cpu, SUM(x.memory_used) AS memory,
               SUM(x.gpu_used) AS gpu, SUM(x.segments_started) AS n,
               0 AS run_n, 0 AS run_cpu, 0 AS run_memory, 0 AS run_gpu
        FROM (
            SELECT r.*
            FROM pieces q CROSS JOIN LATERAL (
                SELECT r.username, r.cpu_used, r.memory_used, r.gpu_used, r.segments_started
                FROM usage_rollups r WHERE r.bucket_start = q.bucket_start OFFSET 0) r
            WHERE q.width_days = 1
            UNION ALL
            SELECT b.*
            FROM pieces q CROSS JOIN LATERAL (
                SELECT b.username, b.cpu_used, b.memory_used, b.gpu_used, b.segments_started
                FROM usage_rollup_blocks b
                WHERE b.width_days = q.width_days AND b.bucket_start = q.bucket_start
                OFFSET 0) b
            WHERE q.width_days > 1
        ) x
        GROUP BY x.username
        UNION ALL
        SELECT r.username,
               e.sign * e.us * r.cpu_cover::numeric,
               e.sign * e.us * r.memory_cover::numeric,
               e.sign * e.us * r.gpu_cover::numeric,
               CASE WHEN NOT e.first THEN 0
                    WHEN e.whole_days THEN r.segments_covering - r.segments_started
                    ELSE r.segments_covering END,
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


def _triggers() -> list[str]:
    out = []
    for op_name, refs in (
        ("INSERT", "NEW TABLE AS new_rows"),
        ("UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows"),
        ("DELETE", "OLD TABLE AS old_rows"),
    ):
        name = op_name.lower()
        out.append(
            f"CREATE TRIGGER quota_rollup_blocks_{name} AFTER {op_name} ON usage_rollups "
            f"REFERENCING {refs} FOR EACH STATEMENT "
            f"EXECUTE FUNCTION quota_rollup_blocks_on_{name}()"
        )
    out.append(
        "CREATE TRIGGER quota_rollup_blocks_truncate AFTER TRUNCATE ON usage_rollups "
        "FOR EACH STATEMENT EXECUTE FUNCTION quota_rollup_blocks_on_truncate()"
    )
    return out


def _revision_0005():
    # a module name cannot start with a digit: load 0005's file for its quota_usage
    spec = importlib.util.spec_from_file_location(
        "quota_ledger_0005", Path(__file__).with_name("0005_faster_reads.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def upgrade() -> None:
    # No writer of the days may slip between the backfill and the triggers (segment writers
    # write days through their triggers).
    op.execute("LOCK TABLE segments IN SHARE ROW EXCLUSIVE MODE")
    op.execute("LOCK TABLE usage_rollups IN SHARE ROW EXCLUSIVE MODE")
    op.execute(TABLE)
    for statement in COMMENTS + INDEXES:
        op.execute(statement)
    op.execute(FROM_DAYS)
    op.execute(FROM_DAYS_COMMENT)
    op.execute(PIECES)
    for op_name in ("INSERT", "UPDATE", "DELETE"):
        op.execute(_trigger_function(op_name))
    op.execute(TRUNCATE_FUNCTION)
    # block by block (the order the report reads them), as they would accrue over time
    op.execute(
        "INSERT INTO usage_rollup_blocks SELECT * FROM quota_rollup_blocks_from_days('-infinity') "
        "ORDER BY width_days, bucket_start, username"
    )
    for statement in _triggers():
        op.execute(statement)
    op.execute(QUOTA_USAGE_V5)
    op.execute("ANALYZE usage_rollup_blocks")


def downgrade() -> None:
    op.execute(_revision_0005().QUOTA_USAGE_V4)
    for name in ("insert", "update", "delete", "truncate"):
        op.execute(f"DROP TRIGGER IF EXISTS quota_rollup_blocks_{name} ON usage_rollups")
        op.execute(f"DROP FUNCTION IF EXISTS quota_rollup_blocks_on_{name}()")
    op.execute("DROP FUNCTION IF EXISTS quota_rollup_pieces(timestamptz, timestamptz)")
    op.execute("DROP FUNCTION IF EXISTS quota_rollup_blocks_from_days(timestamptz)")
    op.execute("DROP TABLE IF EXISTS usage_rollup_blocks")
