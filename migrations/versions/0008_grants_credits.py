"""grants, credits and quota requests: ledger entries that add to a user's limit or take back usage

- ``quota_grants``: a time-limited addition to one user's limit of one resource, valid
  ``starts_at <= t < ends_at`` (and before ``revoked_at`` once revoked), with who granted it
  and why; revoking keeps the row (who, when, why), so the history stays.
- ``quota_credits``: usage credited back, dated: negative usage at ``credited_at``, inside a
  rolling window like usage (ledger/core/grants.py has the arithmetic).

- ``quota_requests``: a user's request for more quota (resource, amount, until, why) and
  its state; ``quota_request_events`` records every action on one (requested, approved,
  declined) with who and when. Approving creates a grant (``quota_grants.request_id``).

Amounts are resource-hours (numeric, exact) in the resource's hours unit: CPU-hours,
GiB-hours, GPU-hours, device-hours for extended resources. Nothing here touches segments.

Revision ID: 0008
Revises: 0005
"""

from alembic import op

revision = "0008"
down_revision = "0005"
branch_labels = None
depends_on = None

UPGRADE = [
    """
CREATE TABLE quota_grants (
    id bigserial PRIMARY KEY,
    username text NOT NULL CHECK (username <> ''),
    resource text NOT NULL CHECK (resource <> ''),
    amount_hours numeric NOT NULL CHECK (amount_hours > 0),
    starts_at timestamptz NOT NULL,
    ends_at timestamptz NOT NULL,
    reason text NOT NULL CHECK (reason <> ''),
    granted_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz,
    revoked_by text,
    revoke_reason text,
    request_id bigint,
    CHECK (ends_at > starts_at),
    CHECK ((revoked_at IS NULL) = (revoked_by IS NULL))
)""",
    # decide reads a user's grants that still count: username, then the end
    "CREATE INDEX ix_quota_grants_user_end ON quota_grants (username, ends_at)",
    """CREATE TABLE quota_credits (
    id bigserial PRIMARY KEY,
    username text NOT NULL CHECK (username <> ''),
    resource text NOT NULL CHECK (resource <> ''),
    amount_hours numeric NOT NULL CHECK (amount_hours > 0),
    credited_at timestamptz NOT NULL,
    reason text NOT NULL CHECK (reason <> ''),
    credited_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
)""",
    "CREATE INDEX ix_quota_credits_user_at ON quota_credits (username, credited_at)",
    """CREATE TABLE quota_requests (
    id bigserial PRIMARY KEY,
    username text NOT NULL CHECK (username <> ''),
    resource text NOT NULL CHECK (resource <> ''),
    amount_hours numeric NOT NULL CHECK (amount_hours > 0),
    until_at timestamptz NOT NULL,
    reason text NOT NULL CHECK (reason <> ''),
    state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'approved', 'declined')),
    created_at timestamptz NOT NULL,
    decided_at timestamptz,
    decided_by text,
    decision_message text,
    grant_id bigint REFERENCES quota_grants (id),
    seen_at timestamptz,
    CHECK ((state = 'pending') = (decided_at IS NULL))
)""",
    "CREATE INDEX ix_quota_requests_user ON quota_requests (username, created_at)",
    "CREATE INDEX ix_quota_requests_pending ON quota_requests (created_at) WHERE state = 'pending'",
    """CREATE TABLE quota_request_events (
    id bigserial PRIMARY KEY,
    request_id bigint NOT NULL REFERENCES quota_requests (id),
    at timestamptz NOT NULL,
    actor text NOT NULL,
    action text NOT NULL CHECK (action IN ('requested', 'approved', 'declined')),
    detail jsonb NOT NULL DEFAULT '{}'
)""",
    "CREATE INDEX ix_quota_request_events_request ON quota_request_events (request_id, at)",
    """COMMENT ON TABLE quota_grants IS
  'Time-limited additions to a user''s limit of one resource (resource-hours), with who and why.'""",
    """COMMENT ON TABLE quota_credits IS
  'Usage credited back: negative usage at credited_at, counted inside the rolling window.'""",
]

DOWNGRADE = [
    "DROP TABLE IF EXISTS quota_request_events",
    "DROP TABLE IF EXISTS quota_requests",
    "DROP TABLE IF EXISTS quota_credits",
    "DROP TABLE IF EXISTS quota_grants",
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
