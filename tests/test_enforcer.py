"""The enforcer's rounds against a real ledger and a scripted Hub REST API (httpx transport).

The real hub is exercised in tests/test_hub_e2e.py; here the hub's answers are scripted so
each rule (thresholds, grace, named servers, group change, hub down) is checked exactly.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from hub_support.ledger_data import insert, segment, write_policy
from sqlalchemy import text

from ledger.core.policy_yaml import parse_policy
from ledger.core.times import parse_at
from ledger.enforcer.enforcer import enforce_round
from ledger.enforcer.hub_api import HubClient, HubError
from ledger.store import grants
from ledger.store.policy_file import load_policy

NOW = parse_at("2026-11-01T12:00:00Z")


class FakeHubApi:
    """Users and servers as the Hub REST API reports them; records DELETEs."""

    def __init__(self, users: dict[str, dict]):
        self.users = users  # name -> {"groups": [...], "servers": [names]}
        self.deleted: list[tuple[str, str]] = []
        self.down = False
        self.requests: list[httpx.Request] = []
        self.stop_answer: httpx.Response | None = None  # the hub refusing a DELETE

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.down:
            raise httpx.ConnectError("connection refused")
        path = request.url.path.removeprefix("/hub/api/")
        if request.method == "GET" and path == "users":
            assert request.headers["authorization"] == "token secret"
            offset = int(request.url.params["offset"])
            names = sorted(self.users)
            page = names[offset : offset + 1]  # one per page: exercises pagination
            items = [
                {
                    "name": n,
                    "groups": self.users[n]["groups"],
                    "servers": {
                        s: {"name": s, "ready": True, "pending": None, "stopped": False}
                        for s in self.users[n]["servers"]
                    },
                }
                for n in page
            ]
            more = offset + 1 < len(names)
            next_page = {"offset": offset + 1, "limit": 1, "url": "x"} if more else None
            return httpx.Response(
                200, json={"items": items, "_pagination": {"offset": offset, "next": next_page}}
            )
        if request.method == "DELETE":
            parts = path.split("/")
            user, server = parts[1], (parts[3] if parts[2] == "servers" else "")
            self.deleted.append((user, server))
            if self.stop_answer is not None:
                return self.stop_answer
            self.users[user]["servers"].remove(server)
            return httpx.Response(202 if server else 204)
        return httpx.Response(404)

    def client(self) -> HubClient:
        return HubClient(
            "http://hub/hub/api", "secret", transport=httpx.MockTransport(self.handler)
        )


@pytest.fixture
def policy(tmp_path):
    return load_policy(write_policy(tmp_path / "p.yaml"))


async def actions(engine, user=None):
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT action, username, servername, resource, threshold_percent, dry_run "
                "FROM enforcement_actions ORDER BY id"
            )
        )
        return [tuple(r) for r in rows if user is None or r[1] == user]


async def test_warns_once_per_threshold_then_stops_after_grace(engine, policy):
    # 4 GiB running for 13 h = 52 GiB-hours of 60: 86 % → warn at 80 once
    start = NOW - timedelta(hours=13)
    await insert(engine, [segment("ada", start, None, memory_gib=4)])
    hub = FakeHubApi({"ada": {"groups": ["regular"], "servers": [""]}})
    client = hub.client()
    await enforce_round(engine, client, policy, NOW)
    await enforce_round(engine, client, policy, NOW + timedelta(minutes=1))
    assert await actions(engine) == [("warn", "ada", "", "memory", 80, False)]
    # 15 h: 60 GiB-hours — used up: the 100 % warning, no stop during the grace period
    at = NOW + timedelta(hours=2)
    await enforce_round(engine, client, policy, at)
    await enforce_round(engine, client, policy, at + timedelta(minutes=9))
    assert [a[0:5] for a in await actions(engine)][1:] == [("warn", "ada", "", "memory", 100)]
    assert hub.deleted == []
    stats = await enforce_round(engine, client, policy, at + timedelta(minutes=10))
    assert hub.deleted == [("ada", "")] and stats.stopped == 1
    assert (await actions(engine))[-1] == ("stop", "ada", "", "memory", None, False)


async def test_back_under_quota_ends_the_episode_next_exhaustion_warns_anew(engine, policy):
    # 4 GiB for 15 h = 60 of 60 GiB-hours: used up, the 100 % warning, the grace starts
    await insert(engine, [segment("ada", NOW - timedelta(hours=15), None, memory_gib=4)])
    hub = FakeHubApi({"ada": {"groups": ["regular"], "servers": [""]}})
    client = hub.client()
    await enforce_round(engine, client, policy, NOW)
    async with engine.begin() as conn:  # an admin grants 8 GiB-hours within the grace
        await grants.add_grant(
            conn, username="ada", resource="memory", amount_hours=Decimal(8), starts_at=NOW,
            ends_at=NOW + timedelta(days=30), reason="r", granted_by="admin",
            created_at=NOW + timedelta(minutes=4),
        )  # fmt: skip
    await enforce_round(engine, client, policy, NOW + timedelta(minutes=5))  # 60.3 of 68
    await enforce_round(engine, client, policy, NOW + timedelta(minutes=15))
    assert hub.deleted == []
    # 2 h later the grant is used up (68 of 68): a new 100 % warning and a fresh grace
    at = NOW + timedelta(hours=2, minutes=1)
    await enforce_round(engine, client, policy, at)
    await enforce_round(engine, client, policy, at + timedelta(minutes=9))
    assert hub.deleted == [], "stopped with no new warning and no grace"
    await enforce_round(engine, client, policy, at + timedelta(minutes=10))
    assert hub.deleted == [("ada", "")]
    assert [a[0:5] for a in await actions(engine)] == [
        ("warn", "ada", "", "memory", 100),
        ("under_quota", "ada", "", "memory", None),  # seen under: the episode ended
        ("warn", "ada", "", "memory", 100),
        ("stop", "ada", "", "memory", None),
    ]  # fmt: skip


async def test_an_episode_ends_while_its_user_runs_nothing(engine, policy):
    """A user who stops their own server in the grace, then gets room (a grant), is seen
    back under the limit by a round although the hub lists them as inactive; so their next
    exhaustion gets a new warning and a fresh grace, not an immediate stop on the old
    over-quota-since."""
    # 4 GiB from NOW - 15 h to NOW + 2 min, when she stops it herself
    await insert(engine, [segment("ada", NOW - timedelta(hours=15), 15 + 2 / 60, memory_gib=4)])
    hub = FakeHubApi({"ada": {"groups": ["regular"], "servers": [""]}})
    client = hub.client()
    await enforce_round(engine, client, policy, NOW)  # 60 of 60 GiB-hours: used up
    hub.users["ada"]["servers"] = []  # she stopped it herself at NOW + 2 min
    async with engine.begin() as conn:
        await grants.add_grant(
            conn, username="ada", resource="memory", amount_hours=Decimal(8), starts_at=NOW,
            ends_at=NOW + timedelta(days=30), reason="r", granted_by="admin",
            created_at=NOW + timedelta(minutes=4),
        )  # fmt: skip
    await enforce_round(engine, client, policy, NOW + timedelta(minutes=20))
    # she starts a 32 GiB server at NOW + 1 h: ~7.9 GiB-hours of room last ~15 minutes, and
    # the first round that sees it running finds the grant used up
    start = NOW + timedelta(hours=1)
    await insert(engine, [segment("ada", start, None, memory_gib=32)])
    hub.users["ada"]["servers"] = [""]
    await enforce_round(engine, client, policy, start + timedelta(minutes=20))
    assert hub.deleted == [], "stopped with no new warning and no grace"
    await enforce_round(engine, client, policy, start + timedelta(minutes=30))
    assert hub.deleted == [("ada", "")]
    assert [a[0:5] for a in await actions(engine)] == [
        ("warn", "ada", "", "memory", 100),
        ("under_quota", "ada", "", "memory", None),  # seen by the round with nothing running
        ("warn", "ada", "", "memory", 100),
        ("stop", "ada", "", "memory", None),
    ]  # fmt: skip
    # an ended episode is not planned again while she runs nothing
    hub.users["ada"]["servers"] = []
    before = len(await actions(engine))
    await enforce_round(engine, client, policy, start + timedelta(hours=2))
    assert len(await actions(engine)) == before


async def test_named_servers_all_stopped_and_groups_refreshed(engine, policy):
    start = NOW - timedelta(days=2)
    await insert(
        engine,
        [
            segment("bob", start, None, memory_gib=1, servername="a"),
            segment("bob", start, None, memory_gib=1, servername="b"),
        ],
    )  # fmt: skip  (2 × 48 GiB-hours = 96 > 60)
    hub = FakeHubApi({"bob": {"groups": ["regular"], "servers": ["a", "b"]},
                      "cyd": {"groups": ["power"], "servers": [""]}})  # fmt: skip
    client = hub.client()
    await enforce_round(engine, client, policy, NOW)
    await enforce_round(engine, client, policy, NOW + timedelta(minutes=11))
    assert sorted(hub.deleted) == [("bob", "a"), ("bob", "b")]
    async with engine.connect() as conn:
        groups = dict(
            (await conn.execute(text("SELECT username, group_name FROM user_groups"))).all()
        )
    assert groups == {"bob": "regular", "cyd": "power"}


async def test_group_change_applies_at_once(engine, policy):
    await insert(engine, [segment("dee", NOW - timedelta(days=2), None, memory_gib=2)])  # 96
    hub = FakeHubApi({"dee": {"groups": ["regular"], "servers": [""]}})
    client = hub.client()
    await enforce_round(engine, client, policy, NOW)
    assert [a[0] for a in await actions(engine)] == ["warn"]
    hub.users["dee"]["groups"] = ["power"]  # the admin moved her: 96 of 240, under again
    await enforce_round(engine, client, policy, NOW + timedelta(minutes=20))
    assert hub.deleted == [] and [a[0] for a in await actions(engine)] == ["warn", "under_quota"]


async def test_gpu_budget_stops_only_gpu_servers_when_blocks_requested(engine, tmp_path):
    text_ = write_policy(tmp_path / "p.yaml").read_text()
    policy = parse_policy("exhausted_budget_blocks: requested\n" + text_, "p.yaml")
    assert policy.exhausted_budget_blocks == "requested"
    await insert(
        engine,
        [
            segment("eve", NOW - timedelta(days=7), None, memory_gib=1, gpu=1, servername="gpu"),
            segment("eve", NOW - timedelta(hours=1), None, memory_gib=1, servername="cpu"),
        ],
    )  # fmt: skip  (168 GPU-hours > 160)
    hub = FakeHubApi({"eve": {"groups": ["gpu-dev"], "servers": ["cpu", "gpu"]}})
    client = hub.client()
    await enforce_round(engine, client, policy, NOW)
    await enforce_round(engine, client, policy, NOW + timedelta(minutes=10))
    assert hub.deleted == [("eve", "gpu")]


async def test_dry_run_records_but_stops_nothing(engine, policy):
    await insert(engine, [segment("fay", NOW - timedelta(days=2), None, memory_gib=2)])
    hub = FakeHubApi({"fay": {"groups": ["regular"], "servers": [""]}})
    client = hub.client()
    await enforce_round(engine, client, policy, NOW, dry_run=True)
    await enforce_round(engine, client, policy, NOW + timedelta(minutes=10), dry_run=True)
    assert hub.deleted == []
    assert await actions(engine) == [
        ("warn", "fay", "", "memory", 100, True),
        ("stop", "fay", "", "memory", None, True),
    ]


async def test_a_stop_the_hub_refuses_fails_and_is_retried_next_round(engine, policy):
    await insert(engine, [segment("fay", NOW - timedelta(days=2), None, memory_gib=2)])
    hub = FakeHubApi({"fay": {"groups": ["regular"], "servers": [""]}})
    client = hub.client()
    await enforce_round(engine, client, policy, NOW)
    # JupyterHub's 400 is a refusal, never "already stopped" (that is a 204)
    message = "Cannot stop a server while it is being renamed"
    hub.stop_answer = httpx.Response(400, json={"status": 400, "message": message})
    stats = await enforce_round(engine, client, policy, NOW + timedelta(minutes=10))
    assert (stats.stopped, stats.stop_failures) == (0, 1)
    hub.stop_answer = None
    stats = await enforce_round(engine, client, policy, NOW + timedelta(minutes=11))
    assert (stats.stopped, stats.stop_failures) == (1, 0)
    assert hub.deleted == [("fay", ""), ("fay", "")]
    assert [a[0] for a in await actions(engine)] == ["warn", "stop_failed", "stop"]
    async with engine.connect() as conn:
        error = await conn.scalar(text(
            "SELECT detail->>'error' FROM enforcement_actions WHERE action = 'stop_failed'"))  # fmt: skip
    assert error == f"DELETE users/fay/server: HTTP 400: {message}"


async def test_a_server_the_hub_no_longer_has_is_recorded_as_gone(engine, policy):
    await insert(engine, [segment("fay", NOW - timedelta(days=2), None, memory_gib=2)])
    hub = FakeHubApi({"fay": {"groups": ["regular"], "servers": [""]}})
    client = hub.client()
    await enforce_round(engine, client, policy, NOW)
    hub.stop_answer = httpx.Response(404, json={"status": 404, "message": "Not Found"})
    stats = await enforce_round(engine, client, policy, NOW + timedelta(minutes=10))
    assert (stats.stopped, stats.stop_failures) == (1, 0)
    async with engine.connect() as conn:
        outcome = await conn.scalar(text(
            "SELECT detail->>'hub' FROM enforcement_actions WHERE action = 'stop'"))  # fmt: skip
    assert outcome == "gone"


async def test_hub_down_raises_hub_error_and_nothing_is_recorded(engine, policy):
    hub = FakeHubApi({"gus": {"groups": [], "servers": [""]}})
    hub.down = True
    with pytest.raises(HubError):
        await enforce_round(engine, hub.client(), policy, NOW)
    assert await actions(engine) == []


async def test_one_users_failure_does_not_stop_the_others(engine, policy, monkeypatch):
    await insert(engine, [segment("ivy", NOW - timedelta(days=2), None, memory_gib=2)])
    hub = FakeHubApi({"hal": {"groups": ["regular"], "servers": [""]},
                      "ivy": {"groups": ["regular"], "servers": [""]}})  # fmt: skip
    import ledger.enforcer.enforcer as enforcer

    real = enforcer.user_status

    async def flaky(engine_, policy_, username, *args):
        if username == "hal":
            raise RuntimeError("boom")
        return await real(engine_, policy_, username, *args)

    monkeypatch.setattr(enforcer, "user_status", flaky)
    stats = await enforce_round(engine, hub.client(), policy, NOW)
    assert stats.user_errors == 1 and [a[1] for a in await actions(engine)] == ["ivy"]


async def test_cli_once_against_an_unreachable_hub_exits_2(fresh_db_url, tmp_path, monkeypatch):
    from ledger.cli import main

    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "secret")
    policy_path = write_policy(Path(tmp_path) / "p.yaml")
    argv = ["enforce", "--db", fresh_db_url, "--config", str(policy_path), "--once",
            "--hub-url", "http://127.0.0.1:9/hub/api", "--at", "2026-11-01T12:00:00Z"]  # fmt: skip
    import asyncio

    code = await asyncio.to_thread(main, argv)
    assert code == 2
    without_once = [a for a in argv if a != "--once"]
    assert await asyncio.to_thread(main, without_once) == 2  # --at needs --once
