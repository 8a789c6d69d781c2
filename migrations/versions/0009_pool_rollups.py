"""pool rollups: per-group usage kept by triggers, so a pool's budget is read in few rows

A group pool's budget sums its members' usage over a rolling window. Summing every member's
per-day rollups and the edge days' raw segments costs as much as the pool is big; this keeps
the sum per group instead, exact and in the same transaction as every write.

``pool_rollups`` holds, per group and bucket (a UTC day, hour or minute: ``width_seconds``
86400, 3600, 60), for the closed segments of the group's members (``user_groups``):

- ``*_delta``: Σ ± rate of the segments' starts (+) and ends (−) inside the bucket;
- ``*_delta_us``: Σ ± rate × the instant (epoch µs) of those starts and ends;
- ``*_rate`` (day rows only): the summed rate of the segments running at the day's start
  (started before it, ending at or after it).

For any instant ``p`` in the day that starts at ``z``, with ``Δ`` and ``Δt`` summed over the
starts and ends in ``[z, p)``, the exact integral of the members' closed segments is
``∫[z, p) = rate_z·(p − z) + p·Δ − Δt`` (each segment contributes its rate times its overlap
with ``[z, p)``). ``[z, p)`` is whole hours, then whole minutes, then the last partial
minute, whose few starts and ends are read from the raw segments (ix_segments_started,
ix_segments_end): at most ~24 + 60 bucket rows and a minute of raw history per edge,
whatever the pool's size. ledger/store/shared_reads.py has the read.

Triggers keep it: statement-level ones on ``segments`` (beside the ``usage_rollups`` ones:
any write, the collector's, import, late history, a segment closed later, psql) add each
changed closed segment to every group its user is in; ones on ``user_groups`` add (or
subtract) a user's whole closed history when a membership starts (or ends). So the two never
race, a membership change locks ``segments`` against writers (SHARE ROW EXCLUSIVE) before it
reads them: a writer's trigger then either committed first (its segment is read) or waits
and sees the new membership
(https://www.postgresql.org/docs/current/explicit-locking.html#LOCKING-TABLES). Changes that
only touch ``synced_at`` (every spawn's group sync) change nothing and take no lock.

A DELETE of segments under ``quota_ledger.keep_rollups = on`` (retention) keeps the pool
days, as it keeps the user days; a membership changed later only moves the raw history that
is still there (``rollup_horizon``): rebuild and verify cover the days from there on.

Revision ID: 0009
Revises: 0007
"""

# ruff: noqa: S608 - SQL assembled from constants in this file only; no input reaches it
from alembic import op

revision = "0009"
down_revision = "0007"
branch_labels = None
depends_on = None

WIDTHS_SECONDS = (86400, 3600, 60)

# From segment rows (``sign, group_name, started_at, ended_at, cpu_millicores, memory_bytes,
# gpu_count``; closed ones only) to pool_rollups deltas. One template: the triggers, the
# backfill, rebuild and verify all expand it.
AGGREGATE = """
    WITH d AS MATERIALIZED ({source})
    SELECT group_name, width_seconds, bucket_start,
           SUM(cpu_rate)::bigint AS cpu_rate, SUM(memory_rate)::bigint AS memory_rate,
           SUM(gpu_rate)::bigint AS gpu_rate,
           SUM(cpu_delta)::bigint AS cpu_delta, SUM(memory_delta)::bigint AS memory_delta,
           SUM(gpu_delta)::bigint AS gpu_delta,
           SUM(cpu_delta::numeric * at_us) AS cpu_delta_us,
           SUM(memory_delta::numeric * at_us) AS memory_delta_us,
           SUM(gpu_delta::numeric * at_us) AS gpu_delta_us
    FROM (
        -- each start (+rate) and end (-rate), in its day, hour and minute
        SELECT d.group_name, w.width_seconds,
               date_bin(make_interval(secs => w.width_seconds), ev.at,
                        timestamptz '1970-01-01 00:00:00+00') AS bucket_start,
               0 AS cpu_rate, 0 AS memory_rate, 0 AS gpu_rate,
               d.sign * ev.k * d.cpu_millicores AS cpu_delta,
               d.sign * ev.k * d.memory_bytes AS memory_delta,
               d.sign * ev.k * d.gpu_count AS gpu_delta,
               quota_epoch_us(ev.at) AS at_us
        FROM d
        CROSS JOIN LATERAL (VALUES (d.started_at, 1), (d.ended_at, -1)) AS ev(at, k)
        CROSS JOIN (VALUES (86400), (3600), (60)) AS w(width_seconds)
        UNION ALL
        -- the rate running at each day start z with started_at < z <= ended_at
        SELECT d.group_name, 86400, z, d.sign * d.cpu_millicores, d.sign * d.memory_bytes,
               d.sign * d.gpu_count, 0, 0, 0, 0
        FROM d
        CROSS JOIN LATERAL generate_series(
            quota_bucket_start(d.started_at) + interval '24 hours',
            quota_bucket_start(d.ended_at), interval '24 hours') AS z
    ) x
    {where}
    GROUP BY group_name, width_seconds, bucket_start
"""

COLUMNS = (
    "cpu_rate",
    "memory_rate",
    "gpu_rate",
    "cpu_delta",
    "memory_delta",
    "gpu_delta",
    "cpu_delta_us",
    "memory_delta_us",
    "gpu_delta_us",
)

UPSERT = (
    "INSERT INTO pool_rollups AS r SELECT * FROM ({aggregate}) a "
    "ON CONFLICT (group_name, width_seconds, bucket_start) DO UPDATE SET "
    + ", ".join(f"{c} = r.{c} + EXCLUDED.{c}" for c in COLUMNS)
)

SEGMENT_COLUMNS = "started_at, ended_at, cpu_millicores, memory_bytes, gpu_count"
CHARGED = f"username, {SEGMENT_COLUMNS}"


def _segment_source(op_name: str) -> str:
    def joined(sign: int, rows: str) -> str:
        return (
            f"SELECT {sign} AS sign, ug.group_name, {', '.join('c.' + c for c in SEGMENT_COLUMNS.split(', '))} "
            f"FROM ({rows}) c JOIN user_groups ug ON ug.username = c.username"
        )

    new = f"SELECT {CHARGED} FROM new_rows WHERE ended_at IS NOT NULL"
    old = f"SELECT {CHARGED} FROM old_rows WHERE ended_at IS NOT NULL"
    if op_name == "INSERT":
        return joined(1, new)
    if op_name == "DELETE":
        return joined(-1, old)
    # UPDATE: only rows whose charged fields changed (heartbeats touch last_seen_at only)
    return (
        f"{joined(-1, f'{old} EXCEPT ALL {new}')} UNION ALL {joined(1, f'{new} EXCEPT ALL {old}')}"
    )


def _segment_trigger_function(op_name: str) -> str:
    # SECURITY DEFINER as usage_rollups' triggers (migrations/versions/0004): kept as the
    # ledger's owner whoever writes segments.
    skip = ""
    if op_name == "DELETE":
        skip = (
            "IF current_setting('quota_ledger.keep_rollups', true) = 'on' THEN RETURN NULL; END IF;"
        )
    upsert = UPSERT.format(aggregate=AGGREGATE.format(source=_segment_source(op_name), where=""))
    return f"""
CREATE FUNCTION quota_pool_rollups_on_segments_{op_name.lower()}() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $fn$
BEGIN
    {skip}
    {upsert};
    RETURN NULL;
END
$fn$"""


def _membership_changes(op_name: str) -> str:
    new = "SELECT username, group_name FROM new_rows"
    old = "SELECT username, group_name FROM old_rows"
    if op_name == "INSERT":
        return f"SELECT 1 AS sign, * FROM ({new}) n"
    if op_name == "DELETE":
        return f"SELECT -1 AS sign, * FROM ({old}) o"
    return (
        f"SELECT -1 AS sign, * FROM ({old} EXCEPT ALL {new}) o "
        f"UNION ALL SELECT 1, * FROM ({new} EXCEPT ALL {old}) n"
    )


def _membership_trigger_function(op_name: str) -> str:
    changes = _membership_changes(op_name)
    source = (
        f"SELECT m.sign, m.group_name, {', '.join('s.' + c for c in SEGMENT_COLUMNS.split(', '))} "
        f"FROM ({changes}) m "
        "JOIN segments s ON s.username = m.username AND s.ended_at IS NOT NULL"
    )
    upsert = UPSERT.format(aggregate=AGGREGATE.format(source=source, where=""))
    return f"""
CREATE FUNCTION quota_pool_rollups_on_groups_{op_name.lower()}() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $fn$
BEGIN
    -- a synced_at-only update (every spawn's group sync) changes no membership: no lock
    IF NOT EXISTS ({changes}) THEN RETURN NULL; END IF;
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        -- the segments read below must be those committed once the lock is held
        RAISE EXCEPTION 'quota-ledger: change user_groups in READ COMMITTED transactions '
                        '(pool rollups read the members'' segments after locking them)';
    END IF;
    LOCK TABLE segments IN SHARE ROW EXCLUSIVE MODE;
    {upsert};
    RETURN NULL;
END
$fn$"""


TABLE = r"""
CREATE TABLE pool_rollups (
    group_name text NOT NULL,
    width_seconds integer NOT NULL CHECK (width_seconds IN (86400, 3600, 60)),
    bucket_start timestamptz NOT NULL,
    cpu_rate bigint NOT NULL DEFAULT 0,
    memory_rate bigint NOT NULL DEFAULT 0,
    gpu_rate bigint NOT NULL DEFAULT 0,
    cpu_delta bigint NOT NULL DEFAULT 0,
    memory_delta bigint NOT NULL DEFAULT 0,
    gpu_delta bigint NOT NULL DEFAULT 0,
    cpu_delta_us numeric NOT NULL DEFAULT 0,
    memory_delta_us numeric NOT NULL DEFAULT 0,
    gpu_delta_us numeric NOT NULL DEFAULT 0,
    CONSTRAINT pk_pool_rollups PRIMARY KEY (group_name, width_seconds, bucket_start)
)"""

COMMENT = r"""
COMMENT ON TABLE pool_rollups IS
  'Per group and UTC day/hour/minute, the closed segments of its members (user_groups): rate running at the day start, summed +/- rates of starts/ends and rate x epoch-microseconds of them. Kept by triggers on segments and user_groups.'
"""

FROM_SEGMENTS = f"""
CREATE FUNCTION quota_pool_rollups_from_segments(since timestamptz)
RETURNS SETOF pool_rollups
LANGUAGE sql STABLE AS $$
    {
    AGGREGATE.format(
        source="SELECT 1 AS sign, ug.group_name, "
        + ", ".join("s." + c for c in SEGMENT_COLUMNS.split(", "))
        + " FROM segments s JOIN user_groups ug ON ug.username = s.username "
        "WHERE s.ended_at IS NOT NULL AND s.ended_at >= quota_bucket_start(since)",
        where="WHERE bucket_start >= quota_bucket_start(since)",
    )
}
$$"""

FROM_SEGMENTS_COMMENT = r"""
COMMENT ON FUNCTION quota_pool_rollups_from_segments IS
  'What pool_rollups should hold for buckets from the day of since on, computed from the raw segments and user_groups (quota-ledger rollups rebuild / verify).'
"""

# the partial minute at an edge: its starts are a range of this index (its ends one of
# ix_segments_end)
INDEXES = ["CREATE INDEX IF NOT EXISTS ix_segments_started ON segments (started_at)"]


def _triggers() -> list[str]:
    out = []
    for op_name, refs in (
        ("INSERT", "NEW TABLE AS new_rows"),
        ("UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows"),
        ("DELETE", "OLD TABLE AS old_rows"),
    ):
        name = op_name.lower()
        out.append(
            f"CREATE TRIGGER quota_pool_rollups_{name} AFTER {op_name} ON segments "
            f"REFERENCING {refs} FOR EACH STATEMENT "
            f"EXECUTE FUNCTION quota_pool_rollups_on_segments_{name}()"
        )
        out.append(
            f"CREATE TRIGGER quota_pool_rollups_{name} AFTER {op_name} ON user_groups "
            f"REFERENCING {refs} FOR EACH STATEMENT "
            f"EXECUTE FUNCTION quota_pool_rollups_on_groups_{name}()"
        )
    return out


def upgrade() -> None:
    # No writer may slip between the backfill and the triggers.
    op.execute("LOCK TABLE segments IN SHARE ROW EXCLUSIVE MODE")
    op.execute("LOCK TABLE user_groups IN SHARE ROW EXCLUSIVE MODE")
    op.execute(TABLE)
    op.execute(COMMENT)
    for statement in INDEXES:
        op.execute(statement)
    op.execute(FROM_SEGMENTS)
    op.execute(FROM_SEGMENTS_COMMENT)
    for op_name in ("INSERT", "UPDATE", "DELETE"):
        op.execute(_segment_trigger_function(op_name))
        op.execute(_membership_trigger_function(op_name))
    op.execute(
        "INSERT INTO pool_rollups SELECT * FROM quota_pool_rollups_from_segments('-infinity')"
    )
    for statement in _triggers():
        op.execute(statement)


def downgrade() -> None:
    for name in ("insert", "update", "delete"):
        op.execute(f"DROP TRIGGER IF EXISTS quota_pool_rollups_{name} ON segments")
        op.execute(f"DROP TRIGGER IF EXISTS quota_pool_rollups_{name} ON user_groups")
        op.execute(f"DROP FUNCTION IF EXISTS quota_pool_rollups_on_segments_{name}()")
        op.execute(f"DROP FUNCTION IF EXISTS quota_pool_rollups_on_groups_{name}()")
    op.execute("DROP FUNCTION IF EXISTS quota_pool_rollups_from_segments(timestamptz)")
    op.execute("DROP TABLE IF EXISTS pool_rollups")
