"""Database roles, one per component, so that no component holds the owner's rights.

``quota-ledger migrate`` applies :data:`ROLES_SQL` after the schema upgrade (idempotent,
serialised by the migrations' advisory lock). It creates four NOLOGIN group roles and grants
each only what its component does:

* ``quota_ledger_collector``: writes segments, OOM kills and its heartbeat; deletes segments
  and OOM kills past the retention it is configured with (its own rows).
* ``quota_ledger_hub``: the spawn hook reads usage, writes decisions and the group cache,
  takes and releases leases.
* ``quota_ledger_web``: reads; writes quota requests, their events and the grants an admin
  approves on its pages (a Grafana data source wants a SELECT-only login, docs/deploy.md).
* ``quota_ledger_enforcer``: reads, writes enforcement actions, decisions and the group cache.

None of them owns a table, so none can DROP, ALTER or TRUNCATE anything
(https://www.postgresql.org/docs/current/ddl-priv.html). Components log in as login roles
that are members of these groups: ``migrate`` creates or updates them from the URLs in
``QUOTA_LEDGER_<COMPONENT>_DB_URL`` (user and password), which is what the Helm chart passes.
Without CREATEROLE, run ``quota-ledger migrate --no-roles`` and apply the SQL printed by
``quota-ledger migrate --print-roles-sql`` as a database administrator.
"""

from __future__ import annotations

import os

from sqlalchemy import text
from sqlalchemy.engine import make_url

from ledger.store import db

COMPONENTS = ("collector", "hub", "web", "enforcer")
ROLE_PREFIX = "quota_ledger_"
# Same key as migrations/env.py: role changes never interleave with DDL or with each other.
MIGRATION_LOCK_KEY = 727274


def group_role(component: str) -> str:
    return ROLE_PREFIX + component


def login_url_env(component: str) -> str:
    return f"QUOTA_LEDGER_{component.upper()}_DB_URL"


_CREATE_GROUPS = "\n".join(
    f"""DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{group_role(c)}') THEN
    CREATE ROLE {group_role(c)} NOLOGIN;
  END IF;
END $$;"""
    for c in COMPONENTS
)

ROLES_SQL = f"""
{_CREATE_GROUPS}
GRANT USAGE ON SCHEMA public TO quota_ledger_collector, quota_ledger_hub, quota_ledger_web,
  quota_ledger_enforcer;
-- Reading is every component's job (reports, reconciliation, decisions, pages); tables a
-- later revision adds are covered on the next migrate.
GRANT SELECT ON ALL TABLES IN SCHEMA public TO quota_ledger_collector, quota_ledger_hub,
  quota_ledger_web, quota_ledger_enforcer;

GRANT INSERT, UPDATE, DELETE ON segments, oom_kills TO quota_ledger_collector;
GRANT INSERT, UPDATE ON collector_heartbeats TO quota_ledger_collector;
GRANT USAGE ON SEQUENCE segments_id_seq, oom_kills_id_seq TO quota_ledger_collector;
-- retention notes where raw history starts; the rollups keep the older days
GRANT INSERT, UPDATE ON rollup_horizon TO quota_ledger_collector;
-- month partitions of segments: made ahead and dropped by retention, as the owner
GRANT EXECUTE ON FUNCTION quota_segment_partition_create(timestamptz),
  quota_segment_partitions_drop(timestamptz, boolean) TO quota_ledger_collector;

GRANT INSERT ON decisions TO quota_ledger_hub, quota_ledger_enforcer;
GRANT USAGE ON SEQUENCE decisions_id_seq TO quota_ledger_hub, quota_ledger_enforcer;
GRANT INSERT, UPDATE, DELETE ON user_groups TO quota_ledger_hub, quota_ledger_enforcer;
-- leases: taken (a re-spawn of the same server updates its own), released and pruned by the
-- hub's spawn check only (ledger/store/leases.py)
GRANT INSERT, UPDATE, DELETE ON leases TO quota_ledger_hub;
GRANT USAGE ON SEQUENCE leases_id_seq TO quota_ledger_hub;

GRANT INSERT ON enforcement_actions TO quota_ledger_enforcer;
-- quota requests: users file them on the quota page, admins approve (a grant) or decline
GRANT INSERT, UPDATE ON quota_requests TO quota_ledger_web;
GRANT INSERT ON quota_request_events, quota_grants TO quota_ledger_web;
GRANT USAGE ON SEQUENCE quota_requests_id_seq, quota_request_events_id_seq,
  quota_grants_id_seq TO quota_ledger_web;
-- the spawn hook tells the user of a decided request once, then notes it was told
GRANT UPDATE (seen_at) ON quota_requests TO quota_ledger_hub;
GRANT USAGE ON SEQUENCE enforcement_actions_id_seq TO quota_ledger_enforcer;
"""


class RoleError(RuntimeError):
    """The roles could not be created or granted (usually: no CREATEROLE)."""


def login_urls_from_env(environ=os.environ) -> dict[str, str]:
    """Component -> database URL whose user the component logs in as."""
    return {c: environ[login_url_env(c)] for c in COMPONENTS if environ.get(login_url_env(c))}


def _login(url: str, where: str) -> tuple[str, str | None]:
    try:
        parsed = make_url(db.normalize_url(url))
    except Exception as exc:  # noqa: BLE001 - sqlalchemy raises several types
        raise RoleError(f"{where}: not a database URL: {exc}") from None
    if not parsed.username:
        raise RoleError(f"{where}: the URL names no user")
    return parsed.username, parsed.password


async def apply_roles(url: str, logins: dict[str, str] | None = None) -> list[str]:
    """Create/grant the group roles; create or update each component's login role.

    ``logins`` maps a component to the URL it connects with. Returns what was done, one
    line each, without passwords.
    """
    logins = logins or {}
    owner = make_url(db.normalize_url(url)).username
    done: list[str] = []
    engine = db.create_engine(url, pool_size=1)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
            raw = (await conn.get_raw_connection()).driver_connection
            try:
                await raw.execute(ROLES_SQL)
            except Exception as exc:  # noqa: BLE001 - asyncpg's permission errors vary
                raise RoleError(
                    f"cannot create or grant the component roles as {owner!r}: {exc}. Give that "
                    "role CREATEROLE, or run `quota-ledger migrate --no-roles` and apply "
                    "`quota-ledger migrate --print-roles-sql` as an administrator."
                ) from None
            done.append("roles: " + ", ".join(group_role(c) for c in COMPONENTS))
            for component, login_url in sorted(logins.items()):
                user, password = _login(login_url, login_url_env(component))
                if user in {group_role(c) for c in COMPONENTS}:
                    raise RoleError(
                        f"{login_url_env(component)}: {user!r} is one of the group roles; "
                        "log in as a role of its own (the chart uses <release>_<component>_login)"
                    )
                if user == owner:
                    raise RoleError(
                        f"{login_url_env(component)} logs in as the database owner {owner!r}: "
                        "give the component a login role of its own"
                    )
                # Quoted by the server (format %I/%L): no identifier or password is ever
                # spliced in by us. DDL takes no bind parameters.
                exists = await raw.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", user)
                verb = "ALTER" if exists else "CREATE"
                statement = await raw.fetchval(
                    "SELECT format('%s ROLE %I WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
                    "INHERIT' || CASE WHEN $3::text IS NULL THEN '' ELSE ' PASSWORD %L' END, "
                    "$1::text, $2::text, $3::text)",
                    verb,
                    user,
                    password,
                )
                await raw.execute(statement)
                grant = await raw.fetchval(
                    "SELECT format('GRANT %I TO %I', $1::text, $2::text)",
                    group_role(component),
                    user,
                )
                await raw.execute(grant)
                done.append(f"login {user}: member of {group_role(component)}")
    finally:
        await engine.dispose()
    return done
