"""open totals: what the hub and each group run now, kept by triggers, read in O(1)

A hub or pool cap counts what runs (plus live leases), and a pool budget's open part sums
its members' open segments: both scanned every open segment of the hub per decide (~1,700
on the benchmark ledger, +10 ms). This keeps, in the same transaction as every write, per
scope (``scope``: '' the whole hub, else a group of ``user_groups``) and resource
(``cpu``, ``memory``, ``gpu``, an extended resource, or ``#servers``: the distinct servers),
the sums over the open segments (``ended_at IS NULL``):

- ``amount``: Σ rate (``#servers``: how many distinct (username, servername) run);
- ``amount_start_us``: Σ rate × the segment's start (epoch µs), so a pool budget's open part
  over [since, at) is at·Σrate − Σrate·start, less the few open segments that start after
  ``at`` or before ``since`` (ledger/store/shared_reads.py has the reads).

``open_totals`` is append-only: each writing statement adds one row per scope and resource
it changes and, in the same statement, folds the older rows of those keys that no other
transaction holds into it (``FOR UPDATE SKIP LOCKED``: it never waits), so a key has about
one row per concurrent writer and a read sums a handful. Updating one row per key instead
would make the hub's rows a hot spot every open and close waits on, and an import that
closes open segments would hold them for its whole transaction, blocking the collector
(https://www.postgresql.org/docs/current/explicit-locking.html#LOCKING-ROWS).

``open_servers`` counts each server's open segments (a row per server, upserted in sorted
order): its 0 → 1 and 1 → 0 transitions are the ``#servers`` deltas, exact under
concurrency because the upsert locks that server's row
(https://www.postgresql.org/docs/current/sql-insert.html#SQL-ON-CONFLICT). Only writers of
the same server wait on it, as they already do on its segment rows.

Membership changes move a user's open segments between groups; they lock ``segments`` as
migration 0009's triggers do (SHARE ROW EXCLUSIVE, after checking READ COMMITTED), so a
segment's trigger and a membership's never miss each other. ``quota-ledger rollups
verify|rebuild`` cover both tables.

Revision ID: 0011
Revises: 0013
"""

# ruff: noqa: S608 - SQL assembled from constants in this file only; no input reaches it
from alembic import op

revision = "0011"
down_revision = "0013"
branch_labels = None
depends_on = None

SERVERS = "#servers"  # no Kubernetes resource name holds a '#'

OPEN_COLUMNS = "username, servername, started_at, cpu_millicores, memory_bytes, gpu_count, extended"

# From signed open-segment rows (``sign`` + OPEN_COLUMNS) to (scope, resource, amount,
# amount_start_us) of the core and extended resources, per scope ('' and every group).
RESOURCES = """
    SELECT sc.scope, r.resource, c.sign * r.amount AS amount,
           c.sign * r.amount * quota_epoch_us(c.started_at) AS amount_start_us
    FROM ({source}) c
    CROSS JOIN LATERAL (
        VALUES ('cpu', c.cpu_millicores::numeric), ('memory', c.memory_bytes::numeric),
               ('gpu', c.gpu_count::numeric)
        UNION ALL SELECT e.key, e.value::numeric FROM jsonb_each_text(c.extended) e
    ) r(resource, amount)
    CROSS JOIN LATERAL (
        SELECT '' AS scope
        UNION ALL SELECT ug.group_name FROM user_groups ug
        WHERE ug.username = c.username AND ug.group_name <> ''
    ) sc
    WHERE r.amount <> 0
"""

# Fold ``delta`` (a CTE of scope, resource, amount, amount_start_us) into open_totals: one new
# row per key, holding the delta plus the key's older rows no other transaction holds.
FOLD = """
    summed AS MATERIALIZED (
        SELECT scope, resource, sum(amount) AS amount, sum(amount_start_us) AS amount_start_us
        FROM delta GROUP BY scope, resource
    ), picked AS (
        SELECT t.ctid AS row_id FROM open_totals t
        JOIN summed d ON t.scope = d.scope AND t.resource = d.resource
        FOR UPDATE OF t SKIP LOCKED
    ), gone AS (
        DELETE FROM open_totals t USING picked p WHERE t.ctid = p.row_id
        RETURNING t.scope, t.resource, t.amount, t.amount_start_us
    )
    INSERT INTO open_totals (scope, resource, amount, amount_start_us)
    SELECT scope, resource, sum(amount), sum(amount_start_us)
    FROM (SELECT * FROM summed UNION ALL SELECT * FROM gone) x
    GROUP BY scope, resource
"""


def _segment_changes(op_name: str) -> str:
    new = f"SELECT {OPEN_COLUMNS} FROM new_rows WHERE ended_at IS NULL"
    old = f"SELECT {OPEN_COLUMNS} FROM old_rows WHERE ended_at IS NULL"
    if op_name == "INSERT":
        return f"SELECT 1 AS sign, * FROM ({new}) n"
    if op_name == "DELETE":
        return f"SELECT -1 AS sign, * FROM ({old}) o"
    # UPDATE: only open rows that opened, closed or changed (heartbeats touch last_seen_at)
    return (
        f"SELECT -1 AS sign, * FROM ({old} EXCEPT ALL {new}) o "
        f"UNION ALL SELECT 1, * FROM ({new} EXCEPT ALL {old}) n"
    )


def _segment_trigger_function(op_name: str) -> str:
    changes = _segment_changes(op_name)
    # SECURITY DEFINER as the rollups' triggers (migrations 0004, 0009): kept as the owner
    # whoever writes segments.
    return f"""
CREATE FUNCTION quota_open_totals_on_segments_{op_name.lower()}() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $fn$
BEGIN
    -- one pass over the transition tables: with nothing open among them, every CTE is empty
    WITH c AS MATERIALIZED ({changes}),
    per_server AS (
        SELECT username, servername, sum(sign)::integer AS n FROM c
        GROUP BY username, servername HAVING sum(sign) <> 0
    ), counted AS (
        -- sorted, so two writers of the same servers lock their rows in one order
        INSERT INTO open_servers AS o (username, servername, segments)
        SELECT username, servername, n FROM per_server ORDER BY username, servername
        ON CONFLICT (username, servername) DO UPDATE SET segments = o.segments + EXCLUDED.segments
        RETURNING o.username, o.servername, o.segments AS after
    ), moved AS (
        SELECT k.username, (k.after > 0)::integer - (k.after - p.n > 0)::integer AS n
        FROM counted k JOIN per_server p USING (username, servername)
    ), delta AS (
        {RESOURCES.format(source="SELECT * FROM c")}
        UNION ALL
        SELECT sc.scope, '{SERVERS}', m.n, 0
        FROM moved m
        CROSS JOIN LATERAL (
            SELECT '' AS scope
            UNION ALL SELECT ug.group_name FROM user_groups ug
            WHERE ug.username = m.username AND ug.group_name <> ''
        ) sc
        WHERE m.n <> 0
    ), {FOLD};
    RETURN NULL;
END
$fn$"""


def _membership_changes(op_name: str) -> str:
    new = "SELECT username, group_name FROM new_rows WHERE group_name <> ''"
    old = "SELECT username, group_name FROM old_rows WHERE group_name <> ''"
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
    return f"""
CREATE FUNCTION quota_open_totals_on_groups_{op_name.lower()}() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $fn$
BEGIN
    -- a synced_at-only update (every spawn's group sync) changes no membership: no lock
    IF NOT EXISTS ({changes}) THEN RETURN NULL; END IF;
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'quota-ledger: change user_groups in READ COMMITTED transactions '
                        '(open totals read the members'' segments after locking them)';
    END IF;
    -- as migration 0009: a segment writer either committed first or waits for this change
    LOCK TABLE segments IN SHARE ROW EXCLUSIVE MODE;
    WITH m AS MATERIALIZED ({changes}),
    s AS MATERIALIZED (
        SELECT m.sign, m.group_name, o.*
        FROM m JOIN segments o ON o.username = m.username AND o.ended_at IS NULL
    ), delta AS (
        SELECT s.group_name AS scope, r.resource, s.sign * r.amount AS amount,
               s.sign * r.amount * quota_epoch_us(s.started_at) AS amount_start_us
        FROM s
        CROSS JOIN LATERAL (
            VALUES ('cpu', s.cpu_millicores::numeric), ('memory', s.memory_bytes::numeric),
                   ('gpu', s.gpu_count::numeric)
            UNION ALL SELECT e.key, e.value::numeric FROM jsonb_each_text(s.extended) e
        ) r(resource, amount)
        WHERE r.amount <> 0
        UNION ALL
        SELECT group_name, '{SERVERS}', sum(sign), 0
        FROM (SELECT DISTINCT sign, group_name, username, servername FROM s) d
        GROUP BY group_name
    ), {FOLD};
    RETURN NULL;
END
$fn$"""


TABLES = [
    r"""
CREATE TABLE open_totals (
    scope text NOT NULL,
    resource text NOT NULL,
    amount numeric NOT NULL,
    amount_start_us numeric NOT NULL
)""",
    "CREATE INDEX ix_open_totals_scope ON open_totals (scope, resource)",
    r"""COMMENT ON TABLE open_totals IS
  'Per scope ('''' = the hub, else a group of user_groups) and resource (#servers = distinct servers), the open segments'' summed rate and rate x start epoch-microseconds. Append-only deltas summed on read, folded by the writers; kept by triggers on segments and user_groups.'""",
    r"""
CREATE TABLE open_servers (
    username text NOT NULL,
    servername text NOT NULL,
    segments integer NOT NULL,
    CONSTRAINT pk_open_servers PRIMARY KEY (username, servername)
)""",
    r"""COMMENT ON TABLE open_servers IS
  'Per server, how many open segments it has (0 kept): the transitions are open_totals'' #servers deltas.'""",
    # a pool budget's open part corrects its totals by the open segments that start after
    # ``at`` or before its window: both ranges of this (small) index
    "CREATE INDEX IF NOT EXISTS ix_segments_open_started ON segments (started_at) "
    "WHERE ended_at IS NULL",
]

FROM_SEGMENTS = [
    f"""
CREATE FUNCTION quota_open_totals_from_segments()
RETURNS TABLE (scope text, resource text, amount numeric, amount_start_us numeric)
LANGUAGE sql STABLE AS $$
    SELECT scope, resource, sum(amount), sum(amount_start_us) FROM (
        {RESOURCES.format(source=f"SELECT 1 AS sign, {OPEN_COLUMNS} FROM segments WHERE ended_at IS NULL")}
        UNION ALL
        SELECT sc.scope, '{SERVERS}', count(DISTINCT (s.username, s.servername)), 0
        FROM segments s
        CROSS JOIN LATERAL (
            SELECT '' AS scope
            UNION ALL SELECT ug.group_name FROM user_groups ug
            WHERE ug.username = s.username AND ug.group_name <> ''
        ) sc
        WHERE s.ended_at IS NULL
        GROUP BY sc.scope
    ) x
    GROUP BY scope, resource
$$""",
    r"""COMMENT ON FUNCTION quota_open_totals_from_segments IS
  'What open_totals should sum to per scope and resource, from the open segments and user_groups (quota-ledger rollups rebuild / verify).'""",
    """
CREATE FUNCTION quota_open_servers_from_segments()
RETURNS TABLE (username text, servername text, segments integer)
LANGUAGE sql STABLE AS $$
    SELECT username, servername, count(*)::integer FROM segments WHERE ended_at IS NULL
    GROUP BY username, servername
$$""",
]


# TRUNCATE fires no row or DELETE trigger: emptying segments empties every total, emptying
# user_groups every group's (https://www.postgresql.org/docs/current/sql-createtrigger.html).
TRUNCATE_FUNCTIONS = [
    """
CREATE FUNCTION quota_open_totals_on_segments_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $fn$
BEGIN
    DELETE FROM open_totals;
    DELETE FROM open_servers;
    RETURN NULL;
END
$fn$""",
    """
CREATE FUNCTION quota_open_totals_on_groups_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $fn$
BEGIN
    DELETE FROM open_totals WHERE scope <> '';
    RETURN NULL;
END
$fn$""",
]


def _triggers() -> list[str]:
    out = []
    for op_name, refs in (
        ("INSERT", "NEW TABLE AS new_rows"),
        ("UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows"),
        ("DELETE", "OLD TABLE AS old_rows"),
    ):
        name = op_name.lower()
        for table, kind in (("segments", "segments"), ("user_groups", "groups")):
            out.append(
                f"CREATE TRIGGER quota_open_totals_{name} AFTER {op_name} ON {table} "
                f"REFERENCING {refs} FOR EACH STATEMENT "
                f"EXECUTE FUNCTION quota_open_totals_on_{kind}_{name}()"
            )
    for table, kind in (("segments", "segments"), ("user_groups", "groups")):
        out.append(
            f"CREATE TRIGGER quota_open_totals_truncate AFTER TRUNCATE ON {table} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION quota_open_totals_on_{kind}_truncate()"
        )
    return out


BACKFILL = [
    "INSERT INTO open_totals SELECT * FROM quota_open_totals_from_segments()",
    "INSERT INTO open_servers SELECT * FROM quota_open_servers_from_segments()",
]


def upgrade() -> None:
    # No writer may slip between the backfill and the triggers.
    op.execute("LOCK TABLE segments IN SHARE ROW EXCLUSIVE MODE")
    op.execute("LOCK TABLE user_groups IN SHARE ROW EXCLUSIVE MODE")
    for statement in TABLES + FROM_SEGMENTS:
        op.execute(statement)
    for op_name in ("INSERT", "UPDATE", "DELETE"):
        op.execute(_segment_trigger_function(op_name))
        op.execute(_membership_trigger_function(op_name))
    for statement in TRUNCATE_FUNCTIONS + BACKFILL + _triggers():
        op.execute(statement)


def downgrade() -> None:
    for name in ("insert", "update", "delete", "truncate"):
        op.execute(f"DROP TRIGGER IF EXISTS quota_open_totals_{name} ON segments")
        op.execute(f"DROP TRIGGER IF EXISTS quota_open_totals_{name} ON user_groups")
        op.execute(f"DROP FUNCTION IF EXISTS quota_open_totals_on_segments_{name}()")
        op.execute(f"DROP FUNCTION IF EXISTS quota_open_totals_on_groups_{name}()")
    op.execute("DROP FUNCTION IF EXISTS quota_open_totals_from_segments()")
    op.execute("DROP FUNCTION IF EXISTS quota_open_servers_from_segments()")
    op.execute("DROP INDEX IF EXISTS ix_segments_open_started")
    op.execute("DROP TABLE IF EXISTS open_servers")
    op.execute("DROP TABLE IF EXISTS open_totals")
