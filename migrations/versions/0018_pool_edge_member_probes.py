"""a pool read's raw edge events probe membership per row, never hash the whole group

``quota_pool_used`` (migration 0016) counts the members' raw starts and ends in each window
edge's partial minute, and the members' open segments that start after ``at`` or before the
window, keeping the rows whose user is in the group with ``WHERE EXISTS (… user_groups …)``.
Its cached generic plan cannot know that a partial minute holds a handful of events, so it
plans that semi-join as a hash of every member's ``user_groups`` row: for the benchmark's
6,970-member group, 3.3 ms of a 4.3 ms pool read at 13:43:21.5, to keep 10 of 20 events
(EXPLAIN ANALYZE through auto_explain, benchmarks/RESULTS.md "Eighth session"). At midnight
the partial minutes are empty and the hash is never built, which is why the benchmark's
``at`` (a midnight) did not show it; a hub's ``now`` almost never is one.

A ``LATERAL`` subquery with ``LIMIT 1`` cannot be turned into a semi-join
(https://www.postgresql.org/docs/current/queries-table-expressions.html#QUERIES-LATERAL),
so each event costs one primary-key probe of ``user_groups`` instead, as 0016's open read
already does for its scope items. Same rows; only the membership test's plan changes.

Revision ID: 0018
Revises: 0017
"""

import importlib.util
from pathlib import Path

from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def _revision_0016():
    # a module name cannot start with a digit: load 0016's file for its statements
    spec = importlib.util.spec_from_file_location(
        "quota_ledger_0016", Path(__file__).with_name("0016_shared_generic_plans.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_0016_REPLACING = _revision_0016()._POOL_USED.replace(
    "CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1
)

_HASHED = """        WHERE EXISTS (SELECT 1 FROM user_groups ug
                      WHERE ug.username = s.username AND ug.group_name = p_group)"""
_PROBED = """        CROSS JOIN LATERAL (SELECT 1 FROM user_groups ug
                            WHERE ug.username = s.username AND ug.group_name = p_group
                            LIMIT 1) member"""

# the two edges' events and the open segments outside [since, at): three tests in 0016
if _0016_REPLACING.count(_HASHED) != 3:
    raise RuntimeError("0016's quota_pool_used is not the one this migration rewrites")

UPGRADE = [_0016_REPLACING.replace(_HASHED, _PROBED)]
DOWNGRADE = [_0016_REPLACING]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
