"""leases: capacity held by spawns the collector has not seen yet; bottleneck columns

``leases`` holds one row per spawn that passed the concurrent caps (the user's, a group
pool's, the hub's) and whose server no segment records yet. Every later cap check counts
it, so two spawns racing for the last GPU cannot both pass: a lease is taken under
transaction-level advisory locks, one per bottleneck (ledger/store/leases.py,
https://www.postgresql.org/docs/current/explicit-locking.html#ADVISORY-LOCKS). A lease ends
when a segment of its server starting at or after it appears (the collector, or the hub's
recorder, saw the server), when the spawn fails or is cancelled (the hub deletes it), or at
``expires_at`` (a hub that died mid-spawn leaks nothing for longer).

``decisions`` gains the bottleneck of a refusal (level: user | pool | hub; scope: the
user, group or "hub"; resource) as columns generated from the decision's JSON ``detail``,
so the rejection log can be filtered and grouped in SQL without a change to how it is
written.

Revision ID: 0007
Revises: 0006 (written against 0004; chain: 0004, 0005, 0008, 0006, 0007)
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE TABLE leases (
    id bigserial PRIMARY KEY,
    username text NOT NULL,
    servername text NOT NULL DEFAULT '',
    -- the pools (group names) it counts toward, as the hub reported the user's groups
    pools text[] NOT NULL DEFAULT '{}',
    cpu_millicores bigint NOT NULL DEFAULT 0,
    memory_bytes bigint NOT NULL DEFAULT 0,
    gpu_count bigint NOT NULL DEFAULT 0,
    extended jsonb NOT NULL DEFAULT '{}'::jsonb,
    taken_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    CONSTRAINT ck_leases_expires_after_taken CHECK (expires_at > taken_at),
    CONSTRAINT uq_leases_username UNIQUE (username, servername)
);
CREATE INDEX ix_leases_expires_at ON leases (expires_at);
COMMENT ON TABLE leases IS
  'Capacity held by spawns whose server no segment records yet (counted by cap checks).';

ALTER TABLE decisions
  ADD COLUMN bottleneck_level text
    GENERATED ALWAYS AS (detail #>> '{shared,bottleneck,level}') STORED,
  ADD COLUMN bottleneck_scope text
    GENERATED ALWAYS AS (detail #>> '{shared,bottleneck,scope}') STORED,
  ADD COLUMN bottleneck_resource text
    GENERATED ALWAYS AS (detail #>> '{shared,bottleneck,resource}') STORED;
"""

DOWNGRADE = r"""
ALTER TABLE decisions DROP COLUMN bottleneck_level, DROP COLUMN bottleneck_scope,
  DROP COLUMN bottleneck_resource;
DROP TABLE leases;
"""


def _run(sql: str) -> None:
    # one statement per call: asyncpg prepares each, and a prepared statement holds one
    for statement in sql.split(";\n"):
        if statement.strip():
            op.execute(statement)


def upgrade() -> None:
    _run(UPGRADE)


def downgrade() -> None:
    _run(DOWNGRADE)
