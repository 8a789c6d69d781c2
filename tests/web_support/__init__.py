"""Helpers for the web service tests: a seeded ledger, the app on a free port, users.

The ONE thing replaced at handler level is the hub's answer to "who is this?":
``InjectedUser.get_current_user`` (HubAuthenticated's own hook, which normally asks the
hub's ``/hub/api/user`` with the OAuth token) returns a hub-shaped identify model chosen by
the ``X-Test-User`` header. Everything after it — the admin-scope check, the handlers, the
SQL on a real PostgreSQL, templates — is the real code. tests/test_web_e2e.py runs the
same service behind a real JupyterHub login instead.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import text
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from ledger.core.policy_yaml import parse_policy
from ledger.core.resources import GIB
from ledger.store import queries
from ledger.web.app import make_app
from ledger.web.config import WebConfig

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
PREFIX = "/services/quota/"
POLICY_TEXT = (Path(__file__).resolve().parents[2] / "examples" / "policy.yaml").read_text()

_databases = itertools.count()

XSS_NAME = "<img src=x onerror=alert(1)>"
QUOTE_NAME = "a&b\"'"

# Identify models as JupyterHub returns them from GET /hub/api/user (plus 'kind').
USERS = {
    "dana": {"kind": "user", "name": "dana", "groups": ["regular"], "scopes": ["access:services!service=quota"]},
    "bob": {"kind": "user", "name": "bob", "groups": ["power"], "scopes": ["access:services!service=quota"]},
    "carol": {"kind": "user", "name": "carol", "groups": ["regular"], "scopes": []},
    "admin": {
        "kind": "user", "name": "admin", "groups": ["dev"],
        "scopes": ["access:services!service=quota", "custom:quota:admin"],
    },
    "hubadmin": {"kind": "user", "name": "hubadmin", "groups": [], "scopes": ["admin:users"]},
    "uiadmin": {"kind": "user", "name": "uiadmin", "groups": [], "scopes": ["admin-ui"]},
    "alice": {"kind": "user", "name": "alice", "groups": ["regular"], "scopes": []},
    "filtered": {"kind": "user", "name": "filtered", "groups": [], "scopes": ["admin:users!group=x"]},
    "xss": {"kind": "user", "name": XSS_NAME, "groups": ["<b>grp</b>"], "scopes": []},
    "quote": {"kind": "user", "name": QUOTE_NAME, "groups": ["regular"], "scopes": []},
    "service": {"kind": "service", "name": "other-service", "scopes": ["custom:quota:admin"]},
}  # fmt: skip


class InjectedUser:
    """Test-only mixin: identifies the request from ``X-Test-User`` instead of the hub."""

    def get_current_user(self):
        if self.request.headers.get("X-Test-Token"):
            # as HubAuth marks a request identified by an ``Authorization: token`` header
            self._token_authenticated = True
        return USERS.get(self.request.headers.get("X-Test-User", ""))


def segment(
    username, started_at, ended_at=None, *, cpu=2000, memory_gib=4, gpu=0, server="", uid=None
):
    return {
        "pod_uid": uid or f"{username}-{server}-{started_at.isoformat()}",
        "username": username,
        "servername": server,
        "pod_name": f"jupyter-{len(username)}",
        "cpu_millicores": cpu,
        "memory_bytes": int(memory_gib * GIB),
        "gpu_count": gpu,
        "started_at": started_at,
        "ended_at": ended_at,
    }


async def seed(engine, now: datetime = NOW) -> None:
    """dana near her 60 GiB-hour limit with a server running, bob over his 240,
    the XSS and quote users with a little usage, plus every admin-page table."""
    h = timedelta(hours=1)
    d = timedelta(days=1)
    rows = [
        # dana (regular: 60): 4 GiB × 4 h on 3 days = 48 GiB-hours, plus a running server
        segment("dana", now - 20 * d, now - 20 * d + 4 * h),
        segment("dana", now - 10 * d, now - 10 * d + 4 * h),
        segment("dana", now - 2 * d, now - 2 * d + 4 * h),
        segment("dana", now - 1 * h, None, server="big"),  # running: 4 GiB → 52 GiB-hours
        # bob (power: 240): 8 GiB × 31 h = 248 GiB-hours, over
        segment("bob", now - 25 * d, now - 25 * d + 31 * h, memory_gib=8),
        segment(XSS_NAME, now - 3 * d, now - 3 * d + 2 * h),
        segment(QUOTE_NAME, now - 3 * d, now - 3 * d + 1 * h),
        segment("admin", now - 5 * d, now - 5 * d + 1 * h),
    ]
    async with engine.begin() as conn:
        await queries.upsert_segments(conn, rows)
        for user, groups in [
            ("dana", ["regular"]), ("bob", ["power"]), ("admin", ["dev"]),
            (XSS_NAME, ["<b>grp</b>"]), (QUOTE_NAME, ["regular"]),
        ]:  # fmt: skip
            await queries.record_groups(conn, user, groups, now)
        for user in ("dana", "bob", XSS_NAME):
            await conn.execute(
                text(
                    "INSERT INTO oom_kills (pod_uid, pod_name, container_name, username, "
                    "servername, killed_at, memory_limit_bytes) VALUES "
                    "(:uid, 'jupyter-x', 'notebook', :u, '', :at, :mem)"
                ),
                {"uid": f"oom-{user}", "u": user, "at": now - 2 * d, "mem": 4 * GIB},
            )
            await conn.execute(
                text(
                    "INSERT INTO enforcement_actions (acted_at, username, servername, action, "
                    "resource, threshold_percent, used_hours, limit_hours, message) VALUES "
                    "(:at, :u, '', 'warn', 'memory', 80, 50, 60, :msg)"
                ),
                {"at": now - 3 * h, "u": user, "msg": f"secret-warning-of-{user}"},
            )
            await queries.record_decision(
                conn,
                decided_at=now - 4 * h,
                username=user,
                source="spawn",
                outcome="denied",
                reason="used_up:memory",
                message=f"secret-denial-of-{user}",
                request={"cpu": 2000, "memory": 4 * GIB},
            )
        await conn.execute(
            text(
                "INSERT INTO collector_heartbeats (collector_id, hostname, started_at, "
                "last_heartbeat_at, events_total, buffer_depth, live_pods) VALUES "
                "('c-1', 'node-a', :s, :hb, 1234, 3, 7), ('c-old', 'node-b', :s, :old, 10, 0, 0)"
            ),
            {"s": now - 5 * d, "hb": now - timedelta(seconds=5), "old": now - h},
        )


def web_config(engine, now: datetime = NOW, **kwargs) -> WebConfig:
    policy = parse_policy(POLICY_TEXT, "examples/policy.yaml")
    return WebConfig(engine=engine, policy=lambda: policy, frozen_at=now, **kwargs)


@contextlib.asynccontextmanager
async def serve(config: WebConfig) -> AsyncIterator[str]:
    """The app on a free local port in this event loop; yields the service's base URL."""
    app = make_app(config, prefix=PREFIX, handler_mixin=InjectedUser)
    sockets = bind_sockets(0, "127.0.0.1")
    server = HTTPServer(app)
    server.add_sockets(sockets)
    port = sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}{PREFIX}"
    finally:
        server.stop()
        await server.close_all_connections()


def client(base_url: str, user: str | None = None) -> httpx.AsyncClient:
    headers = {"X-Test-User": user} if user else {}
    return httpx.AsyncClient(base_url=base_url, headers=headers, follow_redirects=False, timeout=30)


@contextlib.asynccontextmanager
async def seeded_database(pg_server_url: str, template_url: str) -> AsyncIterator:
    """A seeded database shared by a module's read-only tests (fresh DB per test is slow
    for a 100-case security matrix). Yields an engine."""
    import asyncpg
    from sqlalchemy.engine import make_url

    from ledger.store import db

    u = make_url(pg_server_url)
    params = {"user": u.username or "postgres", "host": u.query.get("host") or u.host}
    if u.query.get("port") or u.port:
        params["port"] = int(u.query.get("port") or u.port)
    name = f"quota_ledger_web_{os.getpid()}_{next(_databases)}"
    template = make_url(template_url).database
    conn = await asyncpg.connect(database="postgres", **params)
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    finally:
        await conn.close()
    engine = db.create_engine(u.set(database=name).render_as_string(hide_password=False))
    try:
        await seed(engine)
        yield engine
    finally:
        await engine.dispose()
        conn = await asyncpg.connect(database="postgres", **params)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()
