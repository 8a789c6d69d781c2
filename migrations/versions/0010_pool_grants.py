"""grants and credits to a group's pool: ``quota_grants`` / ``quota_credits`` rows held by a
group (``group_name``) instead of a user (``username``), exactly one of the two

A group's grant adds to its ``pool:`` budget while valid, a group's credit takes usage back
from the pool inside the rolling window: the arithmetic of a user's (ledger/core/grants.py).
Nothing here touches segments, rollups or their triggers.

Revision ID: 0010
Revises: 0009
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

UPGRADE = []
for _table in ("quota_grants", "quota_credits"):
    UPGRADE += [
        f"ALTER TABLE {_table} ADD COLUMN group_name text CHECK (group_name <> '')",
        f"ALTER TABLE {_table} ALTER COLUMN username DROP NOT NULL",
        f"ALTER TABLE {_table} ADD CONSTRAINT {_table}_one_holder "
        "CHECK ((username IS NULL) <> (group_name IS NULL))",
    ]
UPGRADE += [
    # decide reads a pool's grants that still count and credits of the window, per group
    "CREATE INDEX ix_quota_grants_group_end ON quota_grants (group_name, ends_at) "
    "WHERE group_name IS NOT NULL",
    "CREATE INDEX ix_quota_credits_group_at ON quota_credits (group_name, credited_at) "
    "WHERE group_name IS NOT NULL",
]

DOWNGRADE = [
    "DROP INDEX IF EXISTS ix_quota_credits_group_at",
    "DROP INDEX IF EXISTS ix_quota_grants_group_end",
]
for _table in ("quota_grants", "quota_credits"):
    DOWNGRADE += [
        # a pool's entries have no user to fall back to: they go with the column (requests
        # are approved as user grants only, so none refers to them)
        f"DELETE FROM {_table} WHERE group_name IS NOT NULL",  # noqa: S608 - constant names
        f"ALTER TABLE {_table} DROP CONSTRAINT {_table}_one_holder",
        f"ALTER TABLE {_table} DROP COLUMN group_name",
        f"ALTER TABLE {_table} ALTER COLUMN username SET NOT NULL",
    ]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
