"""Component roles (ledger/store/roles.py): each can do its job, none can destroy another's data.

Real PostgreSQL (the session's test server); each component logs in as its own login role,
created by the same `quota-ledger migrate` code path the chart's init containers run.
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from ledger.cli import main
from ledger.store import db, queries, roles, segment_writes
from ledger.store.enforcement import INSERT_ACTION_SQL

NOW = datetime(2026, 11, 1, 12, tzinfo=UTC)


def _as(url: str, user: str, password: str = "pw-" + "x" * 8) -> str:
    return make_url(url).set(username=user, password=password).render_as_string(hide_password=False)


@pytest.fixture
async def logins(fresh_db_url):
    """Component -> engine logged in as that component's own login role."""
    suffix = f"{os.getpid()}_{abs(hash(fresh_db_url)) % 10**6}"
    urls = {c: _as(fresh_db_url, f"ql_{c}_{suffix}") for c in roles.COMPONENTS}
    # twice: idempotent (a second init container, or the next upgrade)
    for _ in range(2):
        done = await roles.apply_roles(fresh_db_url, urls)
        assert len(done) == 1 + len(roles.COMPONENTS)
    engines = {c: db.create_engine(u, pool_size=1) for c, u in urls.items()}
    yield engines
    for engine in engines.values():
        await engine.dispose()


async def _denied(engine, sql: str, params: dict | None = None) -> str:
    with pytest.raises(DBAPIError) as err:
        async with engine.begin() as conn:
            await conn.execute(text(sql), params or {})
    message = str(err.value.orig).lower()
    assert "permission denied" in message or "must be owner" in message, message
    return message


SEGMENT = (
    "INSERT INTO segments (pod_uid, username, memory_bytes, started_at, ended_at, last_seen_at)"
    " VALUES ('uid-a', 'alice', 1073741824, :s, :e, :e)"
)


async def test_collector_writes_segments_and_heartbeats_only(logins):
    collector = logins["collector"]
    async with collector.begin() as conn:
        await conn.execute(
            text(SEGMENT), {"s": NOW - timedelta(days=500), "e": NOW - timedelta(days=499)}
        )
        await conn.execute(
            text(
                "INSERT INTO oom_kills (pod_uid, container_name, username, killed_at)"
                " VALUES ('uid-a', 'notebook', 'alice', :k)"
            ),
            {"k": NOW - timedelta(days=499)},
        )
    await segment_writes.touch_last_seen(collector, ["uid-a"], NOW)
    await segment_writes.upsert_heartbeat(collector, {
        "collector_id": "c1", "hostname": "h", "version": "0", "started_at": NOW,
        "last_heartbeat_at": NOW, "last_event_at": None, "last_relist_at": None,
        "events_total": 0, "pods_skipped_total": 0, "buffer_depth": 0, "live_pods": 0,
    })  # fmt: skip
    # retention deletes its own old rows
    assert await segment_writes.delete_older_than(collector, NOW, 400 * 86400) == (1, 1)
    await _denied(collector, "DELETE FROM decisions")
    await _denied(collector, "DELETE FROM enforcement_actions")
    await _denied(collector, "DELETE FROM user_groups")
    await _denied(collector, "DELETE FROM collector_heartbeats")
    await _denied(collector, "INSERT INTO decisions (decided_at, username, source, outcome, reason)"
                             " VALUES (now(), 'x', 'spawn', 'allowed', 'ok')")  # fmt: skip


async def test_hub_reads_usage_and_writes_decisions_and_groups(logins):
    hub = logins["hub"]
    async with hub.begin() as conn:
        await queries.record_groups(conn, "alice", ["regular"], NOW)
        await queries.record_groups(conn, "alice", ["power"], NOW)  # replaces: DELETE + INSERT
        await queries.record_decision(
            conn, decided_at=NOW, username="alice", source="spawn", outcome="denied", reason="x"
        )
        assert await conn.scalar(text("SELECT count(*) FROM segments")) == 0
        assert await conn.scalar(text("SELECT count(*) FROM quota_user_usage_30d")) == 0
    await _denied(hub, "DELETE FROM segments")
    await _denied(hub, "UPDATE segments SET ended_at = now()")
    await _denied(hub, SEGMENT, {"s": NOW, "e": NOW})
    await _denied(hub, "DELETE FROM decisions")  # the rejection log is append-only for it
    await _denied(hub, "DELETE FROM enforcement_actions")


async def test_web_only_reads(logins):
    web = logins["web"]
    async with web.connect() as conn:
        for relation in ("segments", "decisions", "enforcement_actions", "quota_daily_usage"):
            await conn.execute(text(f"SELECT * FROM {relation} LIMIT 1"))
    await _denied(web, SEGMENT, {"s": NOW, "e": NOW})
    await _denied(web, "DELETE FROM user_groups")
    await _denied(web, "INSERT INTO user_groups VALUES ('a', 'b', now())")


async def test_enforcer_writes_actions(logins):
    enforcer = logins["enforcer"]
    async with enforcer.begin() as conn:
        await conn.execute(INSERT_ACTION_SQL, {
            "acted_at": NOW, "username": "alice", "servername": "", "action": "stop",
            "resource": "memory", "threshold_percent": 100, "used_hours": 61.0,
            "limit_hours": 60.0, "message": "over", "dry_run": False, "detail": "{}",
        })  # fmt: skip
        await queries.record_groups(conn, "alice", ["regular"], NOW)
    await _denied(enforcer, "DELETE FROM enforcement_actions")
    await _denied(enforcer, "DELETE FROM segments")
    await _denied(enforcer, "UPDATE decisions SET reason = 'x'")


@pytest.mark.parametrize("component", roles.COMPONENTS)
async def test_no_component_can_drop_or_truncate(logins, component):
    engine = logins[component]
    for table in ("segments", "decisions", "enforcement_actions", "alembic_version"):
        await _denied(engine, f"DROP TABLE {table}")
        await _denied(engine, f"TRUNCATE {table}")
    await _denied(engine, "ALTER TABLE segments ADD COLUMN x int")
    # and the schema check every component runs at start passes with its rights
    await db.check_schema(engine)


async def test_migrate_command_creates_login_roles_from_the_environment(
    fresh_db_url, monkeypatch, capsys
):
    user = f"ql_cli_web_{os.getpid()}"
    monkeypatch.setenv(roles.login_url_env("web"), _as(fresh_db_url, user))
    assert await asyncio.to_thread(main, ["migrate", "--db", fresh_db_url]) == 0
    out = capsys.readouterr().out
    assert f"login {user}: member of quota_ledger_web" in out
    assert "pw-" not in out  # no password in the output
    monkeypatch.setenv(roles.login_url_env("hub"), fresh_db_url)  # the owner itself: refused
    assert await asyncio.to_thread(main, ["migrate", "--db", fresh_db_url]) == 2
    assert "database owner" in capsys.readouterr().err
    assert await asyncio.to_thread(main, ["migrate", "--print-roles-sql"]) == 0
    assert "CREATE ROLE quota_ledger_collector NOLOGIN" in capsys.readouterr().out


async def test_hub_takes_and_releases_leases_and_no_one_else_writes_them(logins):
    from ledger.core.policy_yaml import parse_policy
    from ledger.store import leases

    policy = parse_policy("hub: {running: {gpu: 1}}")
    limits = policy.limits_for("alice", [])
    taken = await leases.take(logins["hub"], policy, limits, "alice", [], {"gpu": 1}, "", NOW, 60)
    assert taken.granted and taken.lease_id
    refused = await leases.take(logins["hub"], policy, limits, "bob", [], {"gpu": 1}, "", NOW, 60)
    assert not refused.granted
    assert await leases.release(logins["hub"], taken.lease_id)
    lease = "INSERT INTO leases (username, taken_at, expires_at) VALUES ('x', :t, CAST(:t AS timestamptz) + interval '1m')"
    for component in ("web", "collector", "enforcer"):
        await _denied(logins[component], lease, {"t": NOW})
        await _denied(logins[component], "DELETE FROM leases")


@pytest.mark.parametrize("component", ["hub", "enforcer", "web"])
async def test_components_that_decide_can_run_decides_reads(logins, component):
    # decide's reads are functions (migrations/versions/0013, and 0016 for pools and hub
    # caps): each deciding role may run them
    from ledger.core.decision import ServerRequest
    from ledger.core.policy_yaml import parse_policy
    from ledger.store.decide import decide

    policy = parse_policy(
        "window: 30d\nhub: {running: {gpu: 4}}\ngroups:\n"
        "  all: {memory: 10 GiB-hours, pool: {memory: 100 GiB-hours, running: {servers: 5}}}\n",
        "policy.yaml",
    )
    decision = await decide(
        logins[component], policy, "alice", ["all"], ServerRequest({"memory": 2**30}), NOW
    )
    assert decision.allowed
    assert decision.shared is not None and decision.shared.checks and decision.shared.allowed
