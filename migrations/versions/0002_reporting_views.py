"""reporting views and functions for psql and Grafana (documented in docs/reporting.md)

The charge rule lives here once, in SQL: a segment is charged for its overlap with the
window, [started_at, COALESCE(ended_at, at)) ∩ [at - window, at). The Python decision code
implements the same rule (ledger/core/usage.py) and a property test keeps the two equal.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE FUNCTION quota_overlap_seconds(
    started_at timestamptz, ended_at timestamptz, from_at timestamptz, to_at timestamptz
) RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT GREATEST(0::numeric, EXTRACT(EPOCH FROM (
        LEAST(COALESCE(ended_at, to_at), to_at) - GREATEST(started_at, from_at))))
$$;

COMMENT ON FUNCTION quota_overlap_seconds IS
  'Seconds (exact, microsecond precision) of [started_at, ended_at or to_at) inside [from_at, to_at).';

CREATE FUNCTION quota_usage(
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
    WITH charged AS (
        SELECT s.username, s.cpu_millicores, s.memory_bytes, s.gpu_count,
               quota_overlap_seconds(s.started_at, s.ended_at, at_time - window_length, at_time) AS seconds,
               (s.started_at <= at_time AND COALESCE(s.ended_at, 'infinity') > at_time) AS running
        FROM segments s
        WHERE COALESCE(s.ended_at, 'infinity'::timestamptz) > at_time - window_length
          AND s.started_at < at_time
    )
    SELECT username,
           SUM(cpu_millicores * seconds),
           SUM(memory_bytes * seconds),
           SUM(gpu_count * seconds),
           ROUND(SUM(cpu_millicores * seconds) / 3600000, 6),
           ROUND(SUM(memory_bytes * seconds) / (3600 * 1073741824::numeric), 6),
           ROUND(SUM(gpu_count * seconds) / 3600, 6),
           COUNT(*) FILTER (WHERE running),
           COALESCE(SUM(cpu_millicores) FILTER (WHERE running), 0)::bigint,
           COALESCE(SUM(memory_bytes) FILTER (WHERE running), 0)::bigint,
           COALESCE(SUM(gpu_count) FILTER (WHERE running), 0)::bigint,
           COUNT(*)
    FROM charged
    GROUP BY username
$$;

COMMENT ON FUNCTION quota_usage IS
  'Usage of every user with segments in the rolling window ending at at_time. Exact integrals in base-unit-seconds and rounded resource-hours.';

CREATE VIEW quota_user_usage_30d AS
    SELECT * FROM quota_usage(now(), interval '30 days');

COMMENT ON VIEW quota_user_usage_30d IS 'Per-user usage over the last 30 days, now.';

CREATE VIEW quota_group_usage_30d AS
    SELECT g.group_name,
           COUNT(DISTINCT u.username) AS users,
           SUM(u.cpu_hours) AS cpu_hours,
           SUM(u.memory_gib_hours) AS memory_gib_hours,
           SUM(u.gpu_hours) AS gpu_hours,
           SUM(u.running_servers) AS running_servers
    FROM quota_user_usage_30d u
    JOIN user_groups g USING (username)
    GROUP BY g.group_name;

COMMENT ON VIEW quota_group_usage_30d IS
  'Usage over the last 30 days summed per JupyterHub group (a user in two groups counts in both).';

CREATE FUNCTION quota_daily_usage_between(from_day date, to_day date)
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
$$;

COMMENT ON FUNCTION quota_daily_usage_between IS
  'Usage per user per UTC day for days from_day..to_day inclusive (open segments up to now).';

CREATE VIEW quota_daily_usage AS
    SELECT * FROM quota_daily_usage_between((now() AT TIME ZONE 'UTC')::date - 89, (now() AT TIME ZONE 'UTC')::date);

COMMENT ON VIEW quota_daily_usage IS 'Usage per user per UTC day, the last 90 days.';

CREATE VIEW quota_segments AS
    SELECT s.*,
           EXTRACT(EPOCH FROM (COALESCE(s.ended_at, now()) - s.started_at)) AS charged_seconds,
           EXTRACT(EPOCH FROM (s.noticed_gone_at - s.ended_at)) AS unconfirmed_seconds,
           s.ended_at IS NULL AS running
    FROM segments s;

COMMENT ON VIEW quota_segments IS
  'Segments with their charged duration and, for pods that vanished while no collector watched, the unconfirmed time that was not charged.';
"""

DOWNGRADE = r"""
DROP VIEW IF EXISTS quota_segments;
DROP VIEW IF EXISTS quota_daily_usage;
DROP FUNCTION IF EXISTS quota_daily_usage_between(date, date);
DROP VIEW IF EXISTS quota_group_usage_30d;
DROP VIEW IF EXISTS quota_user_usage_30d;
DROP FUNCTION IF EXISTS quota_usage(timestamptz, interval);
DROP FUNCTION IF EXISTS quota_overlap_seconds(timestamptz, timestamptz, timestamptz, timestamptz);
"""


def _statements(script: str) -> list[str]:
    # asyncpg prepares each statement separately: one command per execute.
    return [part.strip() for part in script.split(";\n\n") if part.strip()]


def upgrade() -> None:
    for statement in _statements(UPGRADE):
        op.execute(statement)


def downgrade() -> None:
    for statement in _statements(DOWNGRADE.replace(";\n", ";\n\n")):
        op.execute(statement)
