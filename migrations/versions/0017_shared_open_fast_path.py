"""shared capacity's open read: the open totals alone when nothing needs correcting

``quota_shared_open`` (migration 0016) reads what runs per capped scope as the open totals
(migration 0011) corrected server by server: the servers that started after ``at``, closed
after it, the requesting user's own, and the leased ones. For a decide about the present
that set is empty — nothing starts or stops in the future and a user asking for a server
has none running or leased — and the correction adds nothing; yet every arm of the plan
(the touched servers, their segments, the scope items, the user's holding) is still set up
and run, each costing executor start-up on every monthly ``segments`` partition it reads:
~0.5 ms of backend CPU per decide with pools (benchmarks/RESULTS.md, "Shared capacity").

The function now first asks whether that set can be non-empty, with the same predicates the
correction uses (each an index probe that stops at the first row), and only then runs 0016's
query; otherwise it reads the open totals and the grants-or-credits flag alone, which is
exactly what the full query returns when the set is empty. Each branch's ``RETURN QUERY``
keeps its own cached generic plan, so the fast branch sets up none of the other's scans
(https://www.postgresql.org/docs/current/plpgsql-implementation.html#PLPGSQL-PLAN-CACHING).
Rows, kinds and signature are unchanged: ledger/store/shared_reads.py reads both versions.

Revision ID: 0017
Revises: 0016
"""

# ruff: noqa: S608 - SQL assembled from constants in this file and 0016's only; no input reaches it
import importlib.util
from pathlib import Path

from alembic import op

revision = "0017"
down_revision = "0016"
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


_0016 = _revision_0016()

# The touched servers of 0016's query can exist: a segment open but started after p_at, one
# closed after p_at that ran at it, or one of the requesting user's that runs at or after
# p_at (0016's ``touched`` arms, with live leases tested before).
_MAY_CORRECT = """
    EXISTS (SELECT 1 FROM segments s WHERE s.ended_at IS NULL AND s.started_at > p_at)
    OR EXISTS (SELECT 1 FROM segments s
               WHERE COALESCE(s.ended_at, 'infinity'::timestamptz) > p_at
                 AND COALESCE(s.ended_at, 'infinity'::timestamptz) < 'infinity'::timestamptz
                 AND s.started_at <= p_at)
    OR EXISTS (SELECT 1 FROM segments s
               WHERE s.username = p_username
                 AND COALESCE(s.ended_at, 'infinity'::timestamptz) > p_at)
"""

# With nothing touched, 0016's query is its open totals per scope plus the adjusted flag
# (its adjusted arm, verbatim): no 'user' or 'lease' rows, no per-server corrections.
_ADJUSTED = _0016._OPEN_QUERY[_0016._OPEN_QUERY.index("    -- the budgeted pools") :]
_OPEN_TOTALS_ONLY = f"""
    SELECT 'scope'::text, o.scope, o.resource, sum(o.amount)::bigint::text
    FROM open_totals o
    WHERE o.scope = ANY(p_capped) OR (p_hub AND o.scope = '{_0016._HUB_SCOPE}')
    GROUP BY o.scope, o.resource
    UNION ALL
{_ADJUSTED}"""

# 0016's function replaced in place (the decide statement calls it unchanged): its signature
# and settings, and its pool reads after the open part
_0016_REPLACING = _0016._SHARED_OPEN.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)
_HEADER = _0016_REPLACING[: _0016_REPLACING.index("    IF EXISTS")]
_POOL_LOOP = _0016_REPLACING[_0016_REPLACING.index("    FOR i IN") :]
_SHARED_OPEN = f"""{_HEADER}    IF EXISTS (SELECT 1 FROM leases l WHERE l.expires_at > p_at AND l.taken_at <= p_at) THEN
        RETURN QUERY {_0016._open_query(_0016._LIVE_LEASES)}
    ELSIF {_MAY_CORRECT} THEN
        RETURN QUERY {_0016._open_query(_0016._NO_LEASES)}
    ELSE
        RETURN QUERY {_OPEN_TOTALS_ONLY}
    END IF;
{_POOL_LOOP}"""

UPGRADE = [_SHARED_OPEN]
DOWNGRADE = [_0016_REPLACING]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
