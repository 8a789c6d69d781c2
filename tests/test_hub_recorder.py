"""The any-spawner recorder with a real JupyterHub and a real local-process spawner: usage is
recorded while a server runs (kept alive by the hub's heartbeat), closed on stop, and when the
hub crashed and the server died while it was down, reconciled at the next hub start (vanished
at the last heartbeat, the unknown window recorded)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import sqlite3

import httpx
import pytest
from hub_support.ledger_data import GIB, write_policy
from test_collector_support import rows, wait_until

from quota_ledger_demo.hub import _setting, free_port, start_hub, stop_hub, write_hub_config

pytestmark = pytest.mark.e2e


def hub_config(tmp_path, db_url, start_delay_seconds=0):
    admin_token = secrets.token_hex(16)
    policy = write_policy(tmp_path / "policy.yaml")
    extra = (
        f"c.DemoSpawner.start_delay_seconds = {start_delay_seconds}\n"
        f"install_quota_hook(c, db_url={db_url!r}, policy_path={str(policy)!r},\n"
        "                   record_usage=True, record_usage_heartbeat_seconds=0.5)\n"
    )
    config = write_hub_config(
        tmp_path / "hub", db_url=db_url, policy_path=policy, fake_api_url=None,
        port=free_port(), users={"bob": ["power"]}, admin_token=admin_token, extra_config=extra,
    )  # fmt: skip
    port = _setting(config, "port")
    return config, f"http://127.0.0.1:{port}/hub/api", {"Authorization": f"token {admin_token}"}


async def hub_segments(engine):
    return [s for s in await rows(engine) if s["source"] == "hub"]


def kill_hub_and_servers(process, config) -> None:
    """A crash of the hub; then its single-user servers die too while it is down (the local
    process spawner starts them in sessions of their own; their pids are in the hub's state)."""
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.log_file.close()
    with sqlite3.connect(config.parent / "jupyterhub.sqlite") as db:
        states = [json.loads(s) for (s,) in db.execute("SELECT state FROM spawners") if s]
    for state in states:
        if state.get("pid"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(state["pid"], signal.SIGKILL)


async def test_recorded_closed_and_reconciled_after_a_hub_restart(tmp_path, fresh_db_url, engine):
    config, api, admin = hub_config(tmp_path, fresh_db_url)
    process = await asyncio.to_thread(start_hub, config)
    try:
        async with httpx.AsyncClient(headers=admin, timeout=60) as http:

            async def ready():
                model = (await http.get(f"{api}/users/bob")).json()
                return (model["servers"].get("") or {}).get("ready")

            r = await http.post(f"{api}/users/bob/server")
            assert r.status_code in (201, 202), r.text
            await wait_until(ready, timeout=60, what="bob's server ready")
            (first,) = await wait_until(lambda: hub_segments(engine), what="segment opened")
            assert (first["username"], first["cpu_millicores"], first["memory_bytes"]) == (
                "bob",
                1000,
                GIB,
            )  # the demo spawner's default size: 1 CPU, 1G
            assert first["ended_at"] is None

            async def heartbeat_moved():
                (s,) = [x for x in await hub_segments(engine) if x["id"] == first["id"]]
                return s["last_seen_at"] > first["last_seen_at"]

            await wait_until(heartbeat_moved, what="the hub's heartbeat")

            r = await http.delete(f"{api}/users/bob/server")
            assert r.status_code in (202, 204), r.text

            async def closed():
                (s,) = [x for x in await hub_segments(engine) if x["id"] == first["id"]]
                return s if s["ended_at"] else None

            stopped = await wait_until(closed, what="segment closed on stop")
            assert stopped["end_reason"] == "terminated"

            r = await http.post(f"{api}/users/bob/server")
            assert r.status_code in (201, 202), r.text
            await wait_until(ready, timeout=60, what="bob's second server ready")
            await wait_until(lambda: _count_open(engine), what="second segment opened")
    finally:
        await asyncio.to_thread(kill_hub_and_servers, process, config)

    process = await asyncio.to_thread(start_hub, config)
    try:

        async def reconciled():
            found = await hub_segments(engine)
            return found if len(found) == 2 and all(s["ended_at"] for s in found) else None

        found = await wait_until(reconciled, timeout=30, what="reconcile at hub start")
        second = max(found, key=lambda s: s["started_at"])
        assert second["end_reason"] == "vanished"
        assert second["ended_at"] == max(second["last_seen_at"], second["started_at"])
        assert second["noticed_gone_at"] > second["ended_at"]
    finally:
        await asyncio.to_thread(stop_hub, process)


async def _count_open(engine):
    return [s for s in await hub_segments(engine) if s["ended_at"] is None]


async def test_a_first_spawn_still_starting_when_the_recorder_starts_is_recorded_once(
    tmp_path, fresh_db_url, engine
):
    # The recorder's task starts with the hub's first spawn and reconciles at once; that spawn
    # already has its orm Server while start() runs (3 s here), and used to get a second
    # segment from the reconcile, so the server was charged twice and one segment never closed.
    config, api, admin = hub_config(tmp_path, fresh_db_url, start_delay_seconds=3)
    process = await asyncio.to_thread(start_hub, config)
    try:
        async with httpx.AsyncClient(headers=admin, timeout=60) as http:

            async def ready():
                model = (await http.get(f"{api}/users/bob")).json()
                return (model["servers"].get("") or {}).get("ready")

            r = await http.post(f"{api}/users/bob/server")
            assert r.status_code in (201, 202), r.text
            await wait_until(ready, timeout=60, what="bob's server ready")
            await wait_until(lambda: _count_open(engine), what="segment opened")
            await asyncio.sleep(1.5)  # three heartbeats: a late second write would show now
            assert len(await hub_segments(engine)) == 1
            r = await http.delete(f"{api}/users/bob/server")
            assert r.status_code in (202, 204), r.text

            async def all_closed():
                found = await hub_segments(engine)
                return found if found and all(s["ended_at"] for s in found) else None

            (closed,) = await wait_until(all_closed, what="the segment closed on stop")
            assert closed["end_reason"] == "terminated"
    finally:
        await asyncio.to_thread(stop_hub, process)
