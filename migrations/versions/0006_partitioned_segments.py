"""segments partitioned by month of started_at; partitions made ahead, old ones dropped whole

``segments`` becomes ``PARTITION BY RANGE (started_at)`` with one partition per UTC month
(``segments_YYYY_MM``) and a default partition (``segments_default``) that takes any row no
month partition covers yet, so a write is never refused for want of a partition.
https://www.postgresql.org/docs/current/ddl-partitioning.html

What a partitioned table cannot have, and what replaces it:

- a unique index must contain the partition key: the primary key becomes
  ``(id, started_at)`` (``id`` stays unique, from its sequence); ``(pod_uid, started_at)``
  already contains it;
- "at most one open segment per pod" was a unique index on ``pod_uid`` where ``ended_at IS
  NULL``; it becomes a plain partial index plus a BEFORE INSERT row trigger that skips a
  second open segment of a pod (what ``INSERT … ON CONFLICT DO NOTHING`` did with the index),
  serialised per pod by a transaction advisory lock.

The statement-level rollup triggers with transition tables stay on the parent: PostgreSQL
fires them for statements naming the partitioned table, with the rows of every affected
partition (https://www.postgresql.org/docs/current/sql-createtrigger.html, "Notes"), and an
UPDATE that moves a row to another partition still fires only the UPDATE statement trigger.

SECURITY DEFINER functions (run as the ledger's owner, so the collector's role needs no
DDL rights): ``quota_segment_partition_create(month)`` makes one month's partition (moving
its rows out of the default partition if any landed there), ``quota_segment_partitions_drop
(cutoff, dry_run)`` drops month partitions wholly before ``cutoff`` whose segments are all
closed, ended before the cutoff and are in the rollups, and records the cut in
``rollup_horizon``.

The conversion copies the rows into the new table under an exclusive lock; views on
``segments``, functions whose bodies depend on it (BEGIN ATOMIC), its triggers, indexes,
comments and grants are read from the catalog as they are at upgrade time and recreated, so whatever a later or parallel revision defined on the
table survives.

Revision ID: 0006
Revises: 0008 (written against 0004; re-chained after merging main)
"""

# ruff: noqa: S608 - SQL assembled from catalog names quoted by the server and constants
from __future__ import annotations

import re

from alembic import op
from sqlalchemy import text

revision = "0006"
down_revision = "0008"
branch_labels = None
depends_on = None

PARTITION_LOCK_KEY = 727275
MONTHS_AHEAD = 2

OPEN_POD_TRIGGER = r"""
CREATE FUNCTION quota_segments_one_open_per_pod() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $fn$
BEGIN
    -- a unique index on a partitioned table must contain started_at; this keeps the rule
    -- "one open segment per pod" across partitions. The lock serialises two writers of the
    -- same pod until the first commits.
    PERFORM pg_advisory_xact_lock(hashtextextended(NEW.pod_uid, 727276));
    IF EXISTS (SELECT 1 FROM segments
               WHERE pod_uid = NEW.pod_uid AND ended_at IS NULL
                 AND started_at <> NEW.started_at AND id <> NEW.id) THEN
        IF TG_OP = 'UPDATE' THEN
            RAISE EXCEPTION 'pod_uid % already has an open segment', NEW.pod_uid
                USING ERRCODE = 'unique_violation';
        END IF;
        RETURN NULL;  -- as ON CONFLICT DO NOTHING did with the unique index
    END IF;
    RETURN NEW;
END
$fn$"""

OPEN_POD_TRIGGERS = [
    "CREATE TRIGGER quota_one_open_per_pod_insert BEFORE INSERT ON segments FOR EACH ROW "
    "WHEN (NEW.ended_at IS NULL) EXECUTE FUNCTION quota_segments_one_open_per_pod()",
    "CREATE TRIGGER quota_one_open_per_pod_update BEFORE UPDATE ON segments FOR EACH ROW "
    "WHEN (NEW.ended_at IS NULL AND (OLD.ended_at IS NOT NULL OR OLD.pod_uid <> NEW.pod_uid)) "
    "EXECUTE FUNCTION quota_segments_one_open_per_pod()",
]

CREATE_PARTITION = rf"""
CREATE FUNCTION quota_segment_partition_create(month_at timestamptz) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $fn$
DECLARE
    lo timestamptz := date_trunc('month', month_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    hi timestamptz := (date_trunc('month', month_at AT TIME ZONE 'UTC') + interval '1 month')
                      AT TIME ZONE 'UTC';
    name text := 'segments_' || to_char(month_at AT TIME ZONE 'UTC', 'YYYY_MM');
BEGIN
    IF to_regclass(name) IS NOT NULL THEN RETURN NULL; END IF;
    PERFORM pg_advisory_xact_lock({PARTITION_LOCK_KEY});
    IF to_regclass(name) IS NOT NULL THEN RETURN NULL; END IF;
    IF EXISTS (SELECT 1 FROM segments_default WHERE started_at >= lo AND started_at < hi) THEN
        -- rows of this month landed in the default partition: move them (statements on a
        -- partition fire none of the parent's statement triggers, so the rollups, which
        -- already count them, are untouched), then attach
        LOCK TABLE segments IN SHARE ROW EXCLUSIVE MODE;
        EXECUTE format('CREATE TABLE %I (LIKE segments INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                       name);
        EXECUTE format('WITH moved AS (DELETE FROM segments_default WHERE started_at >= $1 '
                       'AND started_at < $2 RETURNING *) INSERT INTO %I SELECT * FROM moved',
                       name) USING lo, hi;
        EXECUTE format('ALTER TABLE segments ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                       name, lo, hi);
    ELSE
        EXECUTE format('CREATE TABLE %I PARTITION OF segments FOR VALUES FROM (%L) TO (%L)',
                       name, lo, hi);
    END IF;
    RETURN name;
END
$fn$"""

PARTITIONS_VIEW = r"""
CREATE VIEW quota_segment_partitions AS
    SELECT c.relname::text AS partition,
           substring(pg_get_expr(c.relpartbound, c.oid) from 'FROM \(''([^'']*)''\)')::timestamptz
               AS range_start,
           substring(pg_get_expr(c.relpartbound, c.oid) from 'TO \(''([^'']*)''\)')::timestamptz
               AS range_end,
           c.reltuples::bigint AS estimated_segments,
           pg_total_relation_size(c.oid) AS total_bytes
    FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = 'segments'::regclass
"""

DROP_PARTITIONS = r"""
CREATE FUNCTION quota_segment_partitions_drop(cutoff timestamptz, dry_run boolean DEFAULT false)
RETURNS TABLE (partition text, range_end timestamptz, segments bigint, dropped boolean,
               reason text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $fn$
DECLARE
    p record;
    n bigint; open_n bigint; late_n bigint; unrolled_n bigint;
BEGIN
    FOR p IN SELECT v.partition, v.range_end FROM quota_segment_partitions v
             WHERE v.range_end IS NOT NULL AND v.range_end <= cutoff ORDER BY v.range_end LOOP
        IF NOT dry_run THEN
            EXECUTE format('LOCK TABLE %I IN ACCESS EXCLUSIVE MODE', p.partition);
        END IF;
        -- a closed segment is in the rollups from its first day on: a missing row for that
        -- day means the rollups were cleared or rebuilt without it; keep the raw history
        EXECUTE format(
            'SELECT count(*), count(*) FILTER (WHERE ended_at IS NULL), '
            'count(*) FILTER (WHERE ended_at >= $1), '
            'count(*) FILTER (WHERE ended_at IS NOT NULL AND NOT EXISTS ('
            '  SELECT 1 FROM usage_rollups r WHERE r.username = s.username '
            '  AND r.bucket_start = quota_bucket_start(s.started_at))) FROM %I s',
            p.partition) INTO n, open_n, late_n, unrolled_n USING cutoff;
        partition := p.partition; range_end := p.range_end; segments := n; dropped := false;
        IF open_n > 0 THEN
            reason := format('%s segment(s) still open', open_n);
        ELSIF late_n > 0 THEN
            reason := format('%s segment(s) end after the cutoff', late_n);
        ELSIF unrolled_n > 0 THEN
            reason := format('%s segment(s) missing from usage_rollups '
                             '(quota-ledger rollups verify / rebuild)', unrolled_n);
        ELSE
            reason := NULL;
            IF NOT dry_run THEN
                INSERT INTO rollup_horizon (raw_complete_since) VALUES (cutoff)
                ON CONFLICT (id) DO UPDATE SET raw_complete_since =
                    GREATEST(rollup_horizon.raw_complete_since, EXCLUDED.raw_complete_since);
                EXECUTE format('DROP TABLE %I', p.partition);
                dropped := true;
            END IF;
        END IF;
        RETURN NEXT;
    END LOOP;
END
$fn$"""

# The rollup arithmetic's JSON helpers (0004), same results, made inlinable: a SQL function
# whose body has a sub-SELECT is never inlined, so every call paid a function call even for
# the usual empty map ('{}'); the CASE now inlines and only non-empty maps reach the
# sub-SELECT. Measured: the import's rollup upsert over 68 k user-days 26 s -> 11 s (loaded
# machine, benchmarks/RESULTS.md). https://wiki.postgresql.org/wiki/Inlining_of_SQL_functions
JSONB_HELPERS = [
    r"""
CREATE FUNCTION quota_jsonb_scale_nonempty(amounts jsonb, factor numeric) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT COALESCE(jsonb_object_agg(key, value::numeric * factor)
                    FILTER (WHERE value::numeric * factor <> 0), '{}'::jsonb)
    FROM jsonb_each_text(amounts)
$$""",
    r"""
CREATE OR REPLACE FUNCTION quota_jsonb_scale(amounts jsonb, factor numeric) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN amounts = '{}'::jsonb THEN amounts
                ELSE quota_jsonb_scale_nonempty(amounts, factor) END
$$""",
    r"""
CREATE FUNCTION quota_jsonb_add_nonempty(a jsonb, b jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT COALESCE(jsonb_object_agg(key, total) FILTER (WHERE total <> 0), '{}'::jsonb)
    FROM (SELECT key, SUM(value::numeric) AS total
          FROM (SELECT * FROM jsonb_each_text(a) UNION ALL SELECT * FROM jsonb_each_text(b)) kv
          GROUP BY key) sums
$$""",
    r"""
CREATE OR REPLACE FUNCTION quota_jsonb_add(a jsonb, b jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN b IS NULL OR b = '{}'::jsonb THEN a
                WHEN a IS NULL OR a = '{}'::jsonb THEN b
                ELSE quota_jsonb_add_nonempty(a, b) END
$$""",
]
JSONB_HELPERS_0004 = [
    r"""
CREATE OR REPLACE FUNCTION quota_jsonb_scale(amounts jsonb, factor numeric) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN amounts = '{}'::jsonb THEN amounts ELSE (
        SELECT COALESCE(jsonb_object_agg(key, value::numeric * factor)
                        FILTER (WHERE value::numeric * factor <> 0), '{}'::jsonb)
        FROM jsonb_each_text(amounts)) END
$$""",
    r"""
CREATE OR REPLACE FUNCTION quota_jsonb_add(a jsonb, b jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN b IS NULL OR b = '{}'::jsonb THEN a
                WHEN a IS NULL OR a = '{}'::jsonb THEN b ELSE (
        SELECT COALESCE(jsonb_object_agg(key, total) FILTER (WHERE total <> 0), '{}'::jsonb)
        FROM (SELECT key, SUM(value::numeric) AS total
              FROM (SELECT * FROM jsonb_each_text(a) UNION ALL SELECT * FROM jsonb_each_text(b)) kv
              GROUP BY key) sums) END
$$""",
    "DROP FUNCTION IF EXISTS quota_jsonb_add_nonempty(jsonb, jsonb)",
    "DROP FUNCTION IF EXISTS quota_jsonb_scale_nonempty(jsonb, numeric)",
]

FUNCTIONS = [OPEN_POD_TRIGGER, CREATE_PARTITION, PARTITIONS_VIEW, DROP_PARTITIONS]
DROP_FUNCTIONS = [
    "DROP FUNCTION IF EXISTS quota_segment_partitions_drop(timestamptz, boolean)",
    "DROP VIEW IF EXISTS quota_segment_partitions",
    "DROP FUNCTION IF EXISTS quota_segment_partition_create(timestamptz)",
    "DROP FUNCTION IF EXISTS quota_segments_one_open_per_pod()",
]


# --- reading what depends on segments, as it is now ---------------------------------------

DEPENDENT_VIEWS = """
WITH RECURSIVE deps(oid, depth) AS (
    SELECT r.ev_class, 1 FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid
    WHERE d.classid = 'pg_rewrite'::regclass AND d.refobjid = 'segments'::regclass
      AND r.ev_class <> 'segments'::regclass
    UNION
    SELECT r.ev_class, deps.depth + 1 FROM deps
    JOIN pg_depend d ON d.refobjid = deps.oid AND d.classid = 'pg_rewrite'::regclass
    JOIN pg_rewrite r ON r.oid = d.objid
    WHERE r.ev_class <> deps.oid
)
SELECT c.oid, c.oid::regclass::text AS name, c.relkind, max(deps.depth) AS depth,
       pg_get_viewdef(c.oid) AS definition, c.reloptions,
       obj_description(c.oid, 'pg_class') AS comment
FROM deps JOIN pg_class c ON c.oid = deps.oid
GROUP BY c.oid ORDER BY max(deps.depth), c.oid
"""

GRANTS = """
SELECT format('GRANT %s ON %s TO %s%s', a.privilege_type, CAST(:name AS text),
              CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END,
              CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END)
FROM pg_class c, aclexplode(c.relacl) a
WHERE c.oid = CAST(CAST(:name AS text) AS regclass) AND a.grantee <> c.relowner
"""


def _all(sql: str, **params) -> list:
    return list(op.get_bind().execute(text(sql), params))


def _refuse_other_dependents() -> None:
    others = _all(
        """
        SELECT pg_describe_object(classid, objid, objsubid) AS what FROM pg_depend
        WHERE refobjid = 'segments'::regclass AND deptype = 'n'
          AND classid NOT IN ('pg_rewrite'::regclass, 'pg_trigger'::regclass,
                              'pg_constraint'::regclass, 'pg_class'::regclass,
                              'pg_attrdef'::regclass, 'pg_index'::regclass,
                              'pg_proc'::regclass)
        UNION ALL
        SELECT conname || ' on ' || conrelid::regclass FROM pg_constraint
        WHERE confrelid = 'segments'::regclass
        """
    )
    if others:
        raise RuntimeError(
            "segments has dependents this migration does not know how to carry over: "
            + ", ".join(r.what for r in others)
        )


def _views() -> list[dict]:
    views = []
    for v in _all(DEPENDENT_VIEWS):
        views.append(
            {
                "name": v.name,
                "kind": "MATERIALIZED VIEW" if v.relkind == "m" else "VIEW",
                "definition": v.definition,
                "options": f" WITH ({', '.join(v.reloptions)})" if v.reloptions else "",
                "comment": v.comment,
                "grants": [r[0] for r in _all(GRANTS, name=v.name)],
                "indexes": [
                    r[0]
                    for r in _all(
                        "SELECT pg_get_indexdef(indexrelid) FROM pg_index "
                        "WHERE indrelid = CAST(CAST(:n AS text) AS regclass)",
                        n=v.name,
                    )
                ],
                "column_comments": [
                    (r.attname, r.comment)
                    for r in _all(
                        "SELECT attname, col_description(attrelid, attnum) AS comment "
                        "FROM pg_attribute WHERE attrelid = CAST(CAST(:n AS text) AS regclass) AND attnum > 0 "
                        "AND col_description(attrelid, attnum) IS NOT NULL",
                        n=v.name,
                    )
                ],
            }
        )
    return views


def _functions() -> list[dict]:
    """SQL functions whose body is parsed at creation (BEGIN ATOMIC) and so depends on
    segments; plain-string bodies are resolved at call time and need nothing."""
    out = []
    for f in _all(
        "SELECT DISTINCT p.oid, p.oid::regprocedure::text AS signature, "
        "pg_get_functiondef(p.oid) AS definition, obj_description(p.oid, 'pg_proc') AS comment "
        "FROM pg_depend d JOIN pg_proc p ON p.oid = d.objid "
        "WHERE d.classid = 'pg_proc'::regclass AND d.refobjid = 'segments'::regclass"
    ):
        grants = _all(
            "SELECT format('GRANT EXECUTE ON FUNCTION %s TO %s', p.oid::regprocedure, "
            "CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) "
            "END) FROM pg_proc p, aclexplode(p.proacl) a "
            "WHERE p.oid = CAST(:oid AS oid) AND a.grantee <> p.proowner",
            oid=f.oid,
        )
        public = _all(
            "SELECT p.proacl IS NOT NULL AND NOT EXISTS (SELECT 1 FROM aclexplode(p.proacl) a "
            "WHERE a.grantee = 0) FROM pg_proc p WHERE p.oid = CAST(:oid AS oid)",
            oid=f.oid,
        )[0][0]
        out.append({"signature": f.signature, "definition": f.definition, "comment": f.comment,
                    "grants": [g[0] for g in grants], "revoke_public": public})  # fmt: skip
    return out


def _recreate_functions(functions: list[dict]) -> None:
    for f in functions:
        op.execute(f["definition"])
        if f["revoke_public"]:
            op.execute(f"REVOKE EXECUTE ON FUNCTION {f['signature']} FROM PUBLIC")
        for statement in f["grants"]:
            op.execute(statement)
        if f["comment"] is not None:
            op.execute(f"COMMENT ON FUNCTION {f['signature']} IS {_literal(f['comment'])}")


def _recreate_views(views: list[dict]) -> None:
    for v in views:
        op.execute(f"CREATE {v['kind']} {v['name']}{v['options']} AS {v['definition']}")
        for index in v["indexes"]:
            op.execute(index)
        for statement in v["grants"]:
            op.execute(statement)
        if v["comment"] is not None:
            op.get_bind().execute(
                text(f"COMMENT ON {v['kind']} {v['name']} IS " + _literal(v["comment"]))
            )
        for column, comment in v["column_comments"]:
            op.execute(f'COMMENT ON COLUMN {v["name"]}."{column}" IS {_literal(comment)}')


def _literal(value: str) -> str:
    return (
        op.get_bind().execute(text("SELECT quote_literal(CAST(:v AS text))"), {"v": value}).scalar()
    )


def _table_state() -> dict:
    """Triggers, indexes, constraints, grants and comment of segments, as defined now."""
    return {
        "triggers": [
            (r.tgname, r.definition)
            for r in _all(
                "SELECT tgname, pg_get_triggerdef(oid) AS definition FROM pg_trigger "
                "WHERE tgrelid = 'segments'::regclass AND NOT tgisinternal AND tgparentid = 0 "
                "ORDER BY tgname"
            )
        ],
        "constraints": [
            (r.conname, r.definition)
            for r in _all(
                "SELECT conname, pg_get_constraintdef(oid) AS definition FROM pg_constraint "
                "WHERE conrelid = 'segments'::regclass AND contype IN ('p', 'u') "
                "ORDER BY contype, conname"
            )
        ],
        "indexes": [
            (r.name, r.definition)
            for r in _all(
                "SELECT c.relname AS name, pg_get_indexdef(i.indexrelid) AS definition "
                "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "WHERE i.indrelid = 'segments'::regclass AND NOT EXISTS (SELECT 1 FROM "
                "pg_constraint k WHERE k.conindid = i.indexrelid) ORDER BY c.relname"
            )
        ],
        "grants": [r[0] for r in _all(GRANTS, name="segments")],
        "comment": op.get_bind()
        .execute(text("SELECT obj_description('segments'::regclass, 'pg_class')"))
        .scalar(),
    }


def _key_with_start(name: str, definition: str, partitioned: bool) -> str:
    """A primary key / unique constraint's definition for the target layout."""
    columns = [c.strip() for c in re.search(r"\((.*)\)", definition).group(1).split(",")]
    kind = definition.split("(")[0].strip()
    if partitioned and "started_at" not in columns:
        if kind != "PRIMARY KEY":
            raise RuntimeError(
                f"unique constraint {name} ({', '.join(columns)}) lacks started_at, which a "
                "partitioned table's unique constraints must contain"
            )
        columns.append("started_at")
    if not partitioned and kind == "PRIMARY KEY" and columns == ["id", "started_at"]:
        columns = ["id"]
    return f"ALTER TABLE segments ADD CONSTRAINT {name} {kind} ({', '.join(columns)})"


def _index_for(name: str, definition: str, partitioned: bool) -> str:
    if partitioned and name == "uq_segments_open_pod":
        return definition.replace("CREATE UNIQUE INDEX uq_segments_open_pod", "CREATE INDEX ix_segments_open_pod")  # fmt: skip
    if not partitioned and name == "ix_segments_open_pod":
        return definition.replace("CREATE INDEX ix_segments_open_pod", "CREATE UNIQUE INDEX uq_segments_open_pod")  # fmt: skip
    if partitioned and definition.startswith("CREATE UNIQUE") and "started_at" not in definition:
        raise RuntimeError(f"unique index {name} lacks started_at: {definition}")
    return definition


def _months_with_rows() -> list:
    return [
        r[0]
        for r in _all(
            "SELECT DISTINCT date_trunc('month', started_at AT TIME ZONE 'UTC') "
            "AT TIME ZONE 'UTC' FROM segments_unlayered "
            "UNION SELECT date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' "
            f"+ make_interval(months => m) FROM generate_series(0, {MONTHS_AHEAD}) m ORDER BY 1"
        )
    ]


def _convert(partitioned: bool) -> None:
    """Rebuild ``segments`` (partitioned or plain), rows, definitions and grants kept."""
    op.execute("LOCK TABLE segments IN ACCESS EXCLUSIVE MODE")
    _refuse_other_dependents()
    views = _views()
    functions = _functions()
    state = _table_state()
    for v in reversed(views):
        op.execute(f"DROP {v['kind']} {v['name']}")
    for f in functions:
        op.execute(f"DROP FUNCTION {f['signature']}")
    op.execute("ALTER TABLE segments RENAME TO segments_unlayered")
    for name, _ in state["indexes"]:
        op.execute(f'DROP INDEX "{name}"')
    for name, _ in state["constraints"]:
        op.execute(f'ALTER TABLE segments_unlayered DROP CONSTRAINT "{name}"')
    op.execute("ALTER SEQUENCE segments_id_seq OWNED BY NONE")
    layout = " PARTITION BY RANGE (started_at)" if partitioned else ""
    op.execute(
        "CREATE TABLE segments (LIKE segments_unlayered INCLUDING DEFAULTS "
        f"INCLUDING CONSTRAINTS INCLUDING COMMENTS INCLUDING STORAGE){layout}"
    )
    if partitioned:
        op.execute(CREATE_PARTITION.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION"))
        op.execute("CREATE TABLE segments_default PARTITION OF segments DEFAULT")
        for month in _months_with_rows():
            op.get_bind().execute(text("SELECT quota_segment_partition_create(:m)"), {"m": month})
    op.execute("INSERT INTO segments SELECT * FROM segments_unlayered")
    op.execute("DROP TABLE segments_unlayered")
    op.execute("ALTER SEQUENCE segments_id_seq OWNED BY segments.id")
    for name, definition in state["constraints"]:
        op.execute(_key_with_start(name, definition, partitioned))
    for name, definition in state["indexes"]:
        op.execute(_index_for(name, definition, partitioned))
    for name, definition in state["triggers"]:
        if name.startswith("quota_one_open_per_pod_") and not partitioned:
            continue
        op.execute(definition)
    for statement in state["grants"]:
        op.execute(statement)
    if state["comment"] is not None:
        op.execute(f"COMMENT ON TABLE segments IS {_literal(state['comment'])}")
    _recreate_functions(functions)
    _recreate_views(views)
    op.execute("ANALYZE segments")


def upgrade() -> None:
    _convert(partitioned=True)
    for statement in FUNCTIONS[:1] + FUNCTIONS[2:] + JSONB_HELPERS:
        op.execute(statement)
    for statement in OPEN_POD_TRIGGERS:
        op.execute(statement)
    for name in ("quota_segment_partition_create(timestamptz)",
                 "quota_segment_partitions_drop(timestamptz, boolean)"):  # fmt: skip
        # only the ledger's owner and the roles granted in ledger/store/roles.py
        op.execute(f"REVOKE EXECUTE ON FUNCTION {name} FROM PUBLIC")


def downgrade() -> None:
    for name in ("insert", "update"):
        op.execute(f"DROP TRIGGER IF EXISTS quota_one_open_per_pod_{name} ON segments")
    op.execute("DROP FUNCTION IF EXISTS quota_segment_partitions_drop(timestamptz, boolean)")
    op.execute("DROP VIEW IF EXISTS quota_segment_partitions")
    _convert(partitioned=False)
    for statement in DROP_FUNCTIONS + JSONB_HELPERS_0004:
        op.execute(statement)
