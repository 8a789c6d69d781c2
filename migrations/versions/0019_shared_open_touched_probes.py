"""shared capacity's open read probes the touched servers' segments, never scans what runs

``quota_shared_open`` (migrations 0016, 0017) corrects the open totals server by server for
the "touched" servers: those that start after ``at`` or closed after it, the requesting
user's own, the leased ones. Their segments (``seg``) were a join of ``touched`` with
``segments`` on (username, servername) and ``COALESCE(ended_at, 'infinity') > at``. The
function's cached generic plan cannot know that ``touched`` holds a handful of rows, and
with some statistics it plans that join as a scan of every segment open at ``at`` hashed
against ``touched``: every segment running on the hub read for each decide of a user who
runs a server, ~1.2 ms of a 2.7 ms shared read with 1,697 servers running (EXPLAIN ANALYZE
through auto_explain, benchmarks/RESULTS.md "Fourteenth session"), growing with the hub's
running servers. The plan flipped between runs on the same ledger after an ANALYZE.

A ``LATERAL`` subquery with ``OFFSET 0`` is not pulled up into the join
(https://www.postgresql.org/docs/current/queries-table-expressions.html#QUERIES-LATERAL),
so each touched server costs one probe of each partition's (username, ended_at) index
instead, whatever the statistics. Same rows; only the join's plan changes.

Revision ID: 0019
Revises: 0018
"""

import importlib.util
from pathlib import Path

from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def _revision(name: str):
    # a module name cannot start with a digit: load the earlier file for its statements
    spec = importlib.util.spec_from_file_location(
        f"quota_ledger_{name[:4]}", Path(__file__).with_name(name)
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_0017 = _revision("0017_shared_open_fast_path.py")

_JOINED = """        FROM touched t JOIN segments s ON s.username = t.username
         AND s.servername = t.servername
         AND COALESCE(s.ended_at, 'infinity'::timestamptz) > p_at"""
_PROBED = """        FROM touched t CROSS JOIN LATERAL (
            SELECT s.* FROM segments s
            WHERE s.username = t.username AND s.servername = t.servername
              AND COALESCE(s.ended_at, 'infinity'::timestamptz) > p_at
            OFFSET 0) s"""

# 0017's function runs 0016's open query in two branches (live leases or not)
if _0017._SHARED_OPEN.count(_JOINED) != 2:
    raise RuntimeError("0017's quota_shared_open is not the one this migration rewrites")

UPGRADE = [_0017._SHARED_OPEN.replace(_JOINED, _PROBED)]
DOWNGRADE = [_0017._SHARED_OPEN]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
