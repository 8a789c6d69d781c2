"""usage rollups: exact per-user, per-UTC-day integrals kept by triggers; reports read them

``usage_rollups`` holds, per user and UTC day, for closed segments only:

- ``*_used``: the exact integral rate × overlap with the day (base-unit·µs; numeric because
  bytes × µs overflows bigint within a day);
- ``*_cover``: the summed rate of segments that started before the day and end at or after
  its end (they run through it);
- ``segments_started`` / ``segments_covering``: how many closed segments start in the day /
  run through it (for the reports' ``segments`` column).

Every other closed segment touching a day starts inside it or ends inside it, and two index
range scans find those (ix_segments_user_start, ix_segments_user_end). The decision and the
report read whole days from here and raw segments only for the days at the window's edges
(ledger/core/rollup_usage.py has the arithmetic).

Statement-level triggers with transition tables (https://www.postgresql.org/docs/current/trigger-definition.html)
keep the rollups in the same transaction as any write to ``segments`` — the collector,
import, reconcile, late history, an admin's psql UPDATE — so they are never stale. A DELETE
subtracts, unless the transaction set ``quota_ledger.keep_rollups = on`` (retention: raw
history goes, the days stay for reports); ``rollup_horizon`` then records from when raw
history is complete, so rebuild and verify never touch older days.

Revision ID: 0004
Revises: 0003
"""

# ruff: noqa: S608 - SQL assembled from constants in this file only; no input reaches it
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# The aggregation from segment rows (a relation with a ``sign`` column) to rollup deltas.
# One template: the triggers, rebuild and verify all expand it.
AGGREGATE = """
    SELECT d.username, b.bucket_start,
           SUM(d.sign * d.cpu_millicores::numeric * b.overlap_us) AS cpu_used,
           SUM(d.sign * d.memory_bytes::numeric * b.overlap_us) AS memory_used,
           SUM(d.sign * d.gpu_count::numeric * b.overlap_us) AS gpu_used,
           -- FILTER: most segments have no extended resources; skip the JSON work for them
           quota_jsonb_sum(quota_jsonb_scale(d.extended, d.sign * b.overlap_us))
               FILTER (WHERE d.extended <> '{{}}') AS extended_used,
           COALESCE(SUM(d.sign * d.cpu_millicores) FILTER (WHERE b.covers), 0) AS cpu_cover,
           COALESCE(SUM(d.sign * d.memory_bytes) FILTER (WHERE b.covers), 0) AS memory_cover,
           COALESCE(SUM(d.sign * d.gpu_count) FILTER (WHERE b.covers), 0) AS gpu_cover,
           quota_jsonb_sum(quota_jsonb_scale(d.extended, d.sign))
               FILTER (WHERE b.covers AND d.extended <> '{{}}') AS extended_cover,
           COALESCE(SUM(d.sign) FILTER (WHERE b.starts), 0) AS segments_started,
           COALESCE(SUM(d.sign) FILTER (WHERE b.covers), 0) AS segments_covering
    FROM ({source}) d
    CROSS JOIN LATERAL quota_segment_buckets(d.started_at, d.ended_at) b
    {where}
    GROUP BY d.username, b.bucket_start
"""

SEGMENT_COLUMNS = (
    "username, started_at, ended_at, cpu_millicores, memory_bytes, gpu_count, extended"
)

UPSERT = """
    INSERT INTO usage_rollups AS r
    SELECT username, bucket_start, cpu_used, memory_used, gpu_used,
           COALESCE(extended_used, '{{}}'),
           cpu_cover, memory_cover, gpu_cover, COALESCE(extended_cover, '{{}}'),
           segments_started, segments_covering
    FROM ({aggregate}) a
    ON CONFLICT (username, bucket_start) DO UPDATE SET
        cpu_used = r.cpu_used + EXCLUDED.cpu_used,
        memory_used = r.memory_used + EXCLUDED.memory_used,
        gpu_used = r.gpu_used + EXCLUDED.gpu_used,
        extended_used = quota_jsonb_add(r.extended_used, EXCLUDED.extended_used),
        cpu_cover = r.cpu_cover + EXCLUDED.cpu_cover,
        memory_cover = r.memory_cover + EXCLUDED.memory_cover,
        gpu_cover = r.gpu_cover + EXCLUDED.gpu_cover,
        extended_cover = quota_jsonb_add(r.extended_cover, EXCLUDED.extended_cover),
        segments_started = r.segments_started + EXCLUDED.segments_started,
        segments_covering = r.segments_covering + EXCLUDED.segments_covering
"""


def _trigger_source(op_name: str) -> str:
    new = f"SELECT 1 AS sign, {SEGMENT_COLUMNS} FROM new_rows WHERE ended_at IS NOT NULL"
    old = f"SELECT -1 AS sign, {SEGMENT_COLUMNS} FROM old_rows WHERE ended_at IS NOT NULL"
    if op_name == "INSERT":
        return new
    if op_name == "DELETE":
        return old
    # UPDATE: only rows whose charged fields changed (heartbeats touch last_seen_at only)
    changed_old = (
        f"SELECT {SEGMENT_COLUMNS} FROM old_rows WHERE ended_at IS NOT NULL "
        f"EXCEPT ALL SELECT {SEGMENT_COLUMNS} FROM new_rows WHERE ended_at IS NOT NULL"
    )
    changed_new = (
        f"SELECT {SEGMENT_COLUMNS} FROM new_rows WHERE ended_at IS NOT NULL "
        f"EXCEPT ALL SELECT {SEGMENT_COLUMNS} FROM old_rows WHERE ended_at IS NOT NULL"
    )
    return (
        f"SELECT -1 AS sign, * FROM ({changed_old}) o "
        f"UNION ALL SELECT 1 AS sign, * FROM ({changed_new}) n"
    )


def _trigger_function(op_name: str) -> str:
    # SECURITY DEFINER: the rollups are kept as the ledger's owner whoever writes segments,
    # so the collector's and hub's database roles need no write access to usage_rollups
    # (ledger/store/roles.py); the search path is pinned as PostgreSQL advises for such
    # functions: https://www.postgresql.org/docs/current/sql-createfunction.html#SQL-CREATEFUNCTION-SECURITY
    upsert = UPSERT.format(aggregate=AGGREGATE.format(source=_trigger_source(op_name), where=""))
    skip = ""
    if op_name == "DELETE":
        skip = (
            "IF current_setting('quota_ledger.keep_rollups', true) = 'on' THEN RETURN NULL; END IF;"
        )
    return f"""
CREATE FUNCTION quota_rollups_on_{op_name.lower()}() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $fn$
BEGIN
    {skip}
    {upsert};
    RETURN NULL;
END
$fn$"""


FUNCTIONS = [
    r"""
CREATE FUNCTION quota_epoch_us(at_time timestamptz) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (EXTRACT(EPOCH FROM at_time) * 1000000)::bigint
$$""",
    r"""
CREATE FUNCTION quota_bucket_start(at_time timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT date_bin(interval '24 hours', at_time, timestamptz '1970-01-01 00:00:00+00')
$$""",
    r"""
CREATE FUNCTION quota_segment_buckets(started_at timestamptz, ended_at timestamptz)
RETURNS TABLE (bucket_start timestamptz, overlap_us bigint, covers boolean, starts boolean)
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT z,
           quota_epoch_us(LEAST(ended_at, z + interval '24 hours'))
               - quota_epoch_us(GREATEST(started_at, z)),
           started_at < z AND ended_at >= z + interval '24 hours',
           started_at >= z
    FROM generate_series(
        quota_bucket_start(started_at),
        quota_bucket_start(GREATEST(started_at, ended_at - interval '1 microsecond')),
        interval '24 hours') AS z
$$""",
    r"""
CREATE FUNCTION quota_jsonb_scale(amounts jsonb, factor numeric) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN amounts = '{}'::jsonb THEN amounts ELSE (
        SELECT COALESCE(jsonb_object_agg(key, value::numeric * factor)
                        FILTER (WHERE value::numeric * factor <> 0), '{}'::jsonb)
        FROM jsonb_each_text(amounts)) END
$$""",
    r"""
CREATE FUNCTION quota_jsonb_add(a jsonb, b jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN b IS NULL OR b = '{}'::jsonb THEN a
                WHEN a IS NULL OR a = '{}'::jsonb THEN b ELSE (
        SELECT COALESCE(jsonb_object_agg(key, total) FILTER (WHERE total <> 0), '{}'::jsonb)
        FROM (SELECT key, SUM(value::numeric) AS total
              FROM (SELECT * FROM jsonb_each_text(a) UNION ALL SELECT * FROM jsonb_each_text(b)) kv
              GROUP BY key) sums) END
$$""",
    r"""
CREATE AGGREGATE quota_jsonb_sum(jsonb) (SFUNC = quota_jsonb_add, STYPE = jsonb, INITCOND = '{}')
""",
    r"""
CREATE TABLE usage_rollups (
    username text NOT NULL,
    bucket_start timestamptz NOT NULL,
    cpu_used numeric NOT NULL DEFAULT 0,
    memory_used numeric NOT NULL DEFAULT 0,
    gpu_used numeric NOT NULL DEFAULT 0,
    extended_used jsonb NOT NULL DEFAULT '{}',
    cpu_cover bigint NOT NULL DEFAULT 0,
    memory_cover bigint NOT NULL DEFAULT 0,
    gpu_cover bigint NOT NULL DEFAULT 0,
    extended_cover jsonb NOT NULL DEFAULT '{}',
    segments_started bigint NOT NULL DEFAULT 0,
    segments_covering bigint NOT NULL DEFAULT 0,
    CONSTRAINT pk_usage_rollups PRIMARY KEY (username, bucket_start)
)""",
    "CREATE INDEX ix_usage_rollups_bucket ON usage_rollups (bucket_start)",
    r"""
COMMENT ON TABLE usage_rollups IS
  'Per user and UTC day, closed segments only: exact integrals (base-unit-microseconds), rates of segments running through the whole day, segment counts. Kept by triggers on segments.'
""",
    r"""
CREATE TABLE rollup_horizon (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    raw_complete_since timestamptz NOT NULL
)""",
    r"""
COMMENT ON TABLE rollup_horizon IS
  'Raw segments are complete from this instant on (retention deleted older ones; their days stay in usage_rollups).'
""",
    f"""
CREATE FUNCTION quota_rollups_from_segments(since timestamptz)
RETURNS SETOF usage_rollups
LANGUAGE sql STABLE AS $$
    SELECT username, bucket_start, cpu_used, memory_used, gpu_used,
           COALESCE(extended_used, '{{}}'),
           cpu_cover, memory_cover, gpu_cover, COALESCE(extended_cover, '{{}}'),
           segments_started, segments_covering
    FROM ({
        AGGREGATE.format(
            source=f"SELECT 1 AS sign, {SEGMENT_COLUMNS} FROM segments "
            "WHERE ended_at IS NOT NULL AND ended_at > quota_bucket_start(since)",
            where="WHERE b.bucket_start >= quota_bucket_start(since)",
        )
    }) a
$$""",
    r"""
COMMENT ON FUNCTION quota_rollups_from_segments IS
  'What usage_rollups should hold for days from since on, computed from the raw segments (quota-ledger rollups rebuild / verify).'
""",
    _trigger_function("INSERT"),
    _trigger_function("UPDATE"),
    _trigger_function("DELETE"),
]

INDEXES = [
    # the partial segments of a day, by start (the end side uses ix_segments_user_end)
    "CREATE INDEX ix_segments_user_start ON segments (username, started_at)",
    "CREATE INDEX ix_segments_started ON segments (started_at)",
]

TRIGGERS = [
    "CREATE TRIGGER quota_rollups_insert AFTER INSERT ON segments "
    "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT "
    "EXECUTE FUNCTION quota_rollups_on_insert()",
    "CREATE TRIGGER quota_rollups_update AFTER UPDATE ON segments "
    "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT "
    "EXECUTE FUNCTION quota_rollups_on_update()",
    "CREATE TRIGGER quota_rollups_delete AFTER DELETE ON segments "
    "REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT "
    "EXECUTE FUNCTION quota_rollups_on_delete()",
]

# quota_usage: same signature and columns as 0002/0003, from rollups + the two edge days.
# U = Σ used over days [zs, za) − ∫ over [zs, since) + ∫ over [za, at), closed segments; the
# edge integrals come from the covering rate and the edge days' partial segments. Open
# segments and what runs at ``at`` are read raw (few rows, from the open-pod index).
QUOTA_USAGE_V3 = r"""
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
        -- (day, sign, point): subtract ∫[zs, since), add ∫[za, at)
        SELECT zs AS z, -1 AS sign, since AS point, true AS first FROM p
        UNION ALL SELECT za, 1, at_time, false FROM p
    ), parts AS (
        SELECT r.username, r.cpu_used AS cpu, r.memory_used AS memory, r.gpu_used AS gpu,
               CASE WHEN r.bucket_start > p.zs THEN r.segments_started ELSE 0 END AS n,
               0 AS run_n, 0 AS run_cpu, 0 AS run_memory, 0 AS run_gpu
        FROM usage_rollups r, p
        WHERE r.bucket_start >= p.zs AND r.bucket_start < p.za
        UNION ALL
        SELECT r.username,
               e.sign * r.cpu_cover::numeric * (quota_epoch_us(e.point) - quota_epoch_us(e.z)),
               e.sign * r.memory_cover::numeric * (quota_epoch_us(e.point) - quota_epoch_us(e.z)),
               e.sign * r.gpu_cover::numeric * (quota_epoch_us(e.point) - quota_epoch_us(e.z)),
               CASE WHEN e.first THEN r.segments_covering ELSE 0 END,
               0, 0, 0, 0
        FROM edges e JOIN usage_rollups r ON r.bucket_start = e.z
        UNION ALL
        SELECT s.username,
               e.sign * s.cpu_millicores::numeric * o.us,
               e.sign * s.memory_bytes::numeric * o.us,
               e.sign * s.gpu_count::numeric * o.us,
               CASE WHEN e.first THEN (s.started_at < at_time AND s.ended_at > p.since)::int
                    WHEN p.za <> p.zs THEN (s.started_at >= p.za AND s.started_at < at_time)::int
                    ELSE 0 END,
               0, 0, 0, 0
        FROM edges e CROSS JOIN p
        JOIN segments s ON s.ended_at IS NOT NULL AND (
            (s.started_at >= e.z AND s.started_at < e.z + interval '24 hours')
            OR (COALESCE(s.ended_at, 'infinity'::timestamptz) > e.z
                AND COALESCE(s.ended_at, 'infinity'::timestamptz) < e.z + interval '24 hours'))
        CROSS JOIN LATERAL (SELECT GREATEST(0, quota_epoch_us(LEAST(s.ended_at, e.point))
                                               - quota_epoch_us(GREATEST(s.started_at, e.z))) AS us) o
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

# Per UTC day = per rollup bucket: closed segments from the rollups, open ones up to now.
DAILY_V2 = r"""
CREATE OR REPLACE FUNCTION quota_daily_usage_between(from_day date, to_day date)
RETURNS TABLE (day date, username text, cpu_hours numeric, memory_gib_hours numeric, gpu_hours numeric)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    WITH parts AS (
        SELECT (r.bucket_start AT TIME ZONE 'UTC')::date AS day, r.username,
               r.cpu_used AS cpu, r.memory_used AS memory, r.gpu_used AS gpu
        FROM usage_rollups r
        WHERE r.bucket_start >= from_day::timestamp AT TIME ZONE 'UTC'
          AND r.bucket_start < (to_day + 1)::timestamp AT TIME ZONE 'UTC'
        UNION ALL
        SELECT (b.bucket_start AT TIME ZONE 'UTC')::date, s.username,
               s.cpu_millicores::numeric * b.overlap_us, s.memory_bytes::numeric * b.overlap_us,
               s.gpu_count::numeric * b.overlap_us
        FROM segments s
        CROSS JOIN LATERAL quota_segment_buckets(s.started_at, GREATEST(s.started_at, now())) b
        WHERE s.ended_at IS NULL
          AND b.bucket_start >= from_day::timestamp AT TIME ZONE 'UTC'
          AND b.bucket_start < (to_day + 1)::timestamp AT TIME ZONE 'UTC'
    )
    SELECT day, username,
           ROUND(SUM(cpu) / 3600000000000, 6),
           ROUND(SUM(memory) / (3600000000 * 1073741824::numeric), 6),
           ROUND(SUM(gpu) / 3600000000, 6)
    FROM parts GROUP BY day, username
$$
"""


def upgrade() -> None:
    # No writer may slip between the backfill and the triggers.
    op.execute("LOCK TABLE segments IN SHARE ROW EXCLUSIVE MODE")
    for statement in INDEXES + FUNCTIONS:
        op.execute(statement)
    op.execute("INSERT INTO usage_rollups SELECT * FROM quota_rollups_from_segments('-infinity')")
    for statement in TRIGGERS:
        op.execute(statement)
    op.execute(QUOTA_USAGE_V3)
    op.execute(DAILY_V2)


def downgrade() -> None:
    import importlib.util
    from pathlib import Path

    # 0003's quota_usage, loaded from its file (a module name cannot start with a digit)
    spec = importlib.util.spec_from_file_location(
        "quota_ledger_0003", Path(__file__).with_name("0003_faster_usage.py")
    )
    v2 = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(v2)
    for name in ("insert", "update", "delete"):
        op.execute(f"DROP TRIGGER IF EXISTS quota_rollups_{name} ON segments")
        op.execute(f"DROP FUNCTION IF EXISTS quota_rollups_on_{name}()")
    op.execute(v2.QUOTA_USAGE_V2)
    op.execute(DAILY_V1)
    op.execute("DROP FUNCTION IF EXISTS quota_rollups_from_segments(timestamptz)")
    op.execute("DROP TABLE IF EXISTS rollup_horizon")
    op.execute("DROP TABLE IF EXISTS usage_rollups")
    op.execute("DROP AGGREGATE IF EXISTS quota_jsonb_sum(jsonb)")
    for signature in (
        "quota_jsonb_add(jsonb, jsonb)",
        "quota_jsonb_scale(jsonb, numeric)",
        "quota_segment_buckets(timestamptz, timestamptz)",
        "quota_bucket_start(timestamptz)",
        "quota_epoch_us(timestamptz)",
    ):
        op.execute(f"DROP FUNCTION IF EXISTS {signature}")
    op.execute("DROP INDEX IF EXISTS ix_segments_started")
    op.execute("DROP INDEX IF EXISTS ix_segments_user_start")


DAILY_V1 = r"""
CREATE OR REPLACE FUNCTION quota_daily_usage_between(from_day date, to_day date)
RETURNS TABLE (day date, username text, cpu_hours numeric, memory_gib_hours numeric, gpu_hours numeric)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT d.day::date, s.username,
           ROUND(SUM(s.cpu_millicores * o.seconds) / 3600000, 6),
           ROUND(SUM(s.memory_bytes * o.seconds) / (3600 * 1073741824::numeric), 6),
           ROUND(SUM(s.gpu_count * o.seconds) / 3600, 6)
    FROM segments s
    CROSS JOIN LATERAL generate_series(
        GREATEST(date_trunc('day', s.started_at AT TIME ZONE 'UTC'), from_day::timestamp),
        LEAST(date_trunc('day', COALESCE(s.ended_at, now()) AT TIME ZONE 'UTC'), to_day::timestamp),
        interval '1 day') AS d(day)
    CROSS JOIN LATERAL (
        SELECT quota_overlap_seconds(s.started_at, s.ended_at,
                                     d.day AT TIME ZONE 'UTC',
                                     LEAST((d.day + interval '1 day') AT TIME ZONE 'UTC', now())) AS seconds
    ) o
    WHERE COALESCE(s.ended_at, 'infinity'::timestamptz) > from_day::timestamp AT TIME ZONE 'UTC'
      AND s.started_at < (to_day + 1)::timestamp AT TIME ZONE 'UTC'
    GROUP BY d.day, s.username
$$
"""
