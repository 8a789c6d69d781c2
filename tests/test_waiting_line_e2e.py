"""The waiting line end to end: a real ``jupyterhub`` process, the npm proxy, real local
single-user servers recorded by the hub's recorder, and a real Chromium.

GPUs cannot run here: the "GPU" server size sets ``extra_resource_guarantees =
{"nvidia.com/gpu": "1"}`` on the spawner (quota_ledger_demo.hub.DemoSpawner's size form,
as a KubeSpawner profile would), which is what the quota check reads; no device exists.

Three users ask for GPU servers under ``hub: {running: {gpu: 2}}``: two start, the third
(in the browser) waits with its position on the spawn page and starts by itself when one of
the first two stops; then a waiter is woken by raising the cap in the policy file, without a
restart.
"""

from __future__ import annotations

import asyncio
import json
import secrets

import httpx
import pytest
from requirements import CHROMIUM, CHROMIUM_ARGS, require
from sqlalchemy import text
from test_hub_e2e import PASSWORD, eventually

from quota_ledger_demo.hub import free_port, start_hub, stop_hub, write_hub_config

pytestmark = pytest.mark.e2e

POLICY = """
groups:
  lab: {memory: 10000 GiB-hours, gpu: 1000 GPU-hours}
hub: {running: {gpu: 2}}
"""


@pytest.fixture
async def hub(tmp_path, fresh_db_url):
    require("chromium")
    require("configurable-http-proxy")
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    port, token = free_port(), secrets.token_hex(16)
    extra = """
c.JupyterHub.tornado_settings = {"slow_spawn_timeout": 1}
c.DemoSpawner.start_delay_seconds = 1
c.Spawner.start_timeout = 120
"""
    config = write_hub_config(
        tmp_path / "hub", db_url=fresh_db_url, policy_path=policy, fake_api_url=None,
        port=port, password=PASSWORD, users={u: ["lab"] for u in ("ann", "ben", "cat")},
        admin_token=token, extra_config=extra, hook_args=", record_usage=True",
    )  # fmt: skip
    process = await asyncio.to_thread(start_hub, config)
    try:
        yield {
            "url": f"http://127.0.0.1:{port}",
            "api": f"http://127.0.0.1:{port}/hub/api",
            "headers": {"Authorization": f"token {token}"},
            "policy": policy,
            "log": config.parent / "jupyterhub.log",
        }
    finally:
        await asyncio.to_thread(stop_hub, process)


async def ready(client, hub, user) -> bool:
    r = await client.get(f"{hub['api']}/users/{user}", headers=hub["headers"])
    server = r.json().get("servers", {}).get("")
    return bool(server and server.get("ready"))


async def spawn_gpu(client, hub, user) -> int:
    r = await client.post(f"{hub['api']}/users/{user}/server", headers=hub["headers"],
                          json={"size": "gpu"})  # fmt: skip
    assert r.status_code in (201, 202), r.text
    return r.status_code


async def first_waiting_line(client, hub, user) -> str:
    url = f"{hub['api']}/users/{user}/server/progress"
    async with client.stream("GET", url, headers=hub["headers"], timeout=60) as response:
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                message = json.loads(line[5:]).get("message", "")
                if message.startswith("Waiting for a GPU"):
                    return message
    return ""


async def test_third_gpu_waits_in_the_browser_and_starts_when_capacity_frees(hub, engine):
    from playwright.async_api import async_playwright

    async with httpx.AsyncClient(timeout=30) as client:
        for user in ("ann", "ben"):
            await spawn_gpu(client, hub, user)
        for user in ("ann", "ben"):
            await eventually(lambda u=user: ready(client, hub, u), f"{user} started")
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page()
                await page.goto(f"{hub['url']}/hub/login")
                await page.fill("input[name=username]", "cat")
                await page.fill("input[name=password]", PASSWORD)
                await page.click("input[type=submit], button[type=submit]")
                await page.goto(f"{hub['url']}/hub/spawn")
                await page.select_option("select[name=size]", "gpu")
                await page.click("input[type=submit], button[type=submit]")
                waiting = page.get_by_text("you are number 1 in line", exact=False)
                try:
                    await waiting.first.wait_for(timeout=60000)
                except Exception as exc:
                    raise AssertionError(page.url + "\n" + await page.inner_text("body")) from exc
                shown = await page.inner_text("body")
                assert "Waiting for a GPU: 2 of 2 GPUs in use on this hub" in shown
                # one of the first two stops: cat's spawn proceeds by itself
                r = await client.delete(f"{hub['api']}/users/ann/server", headers=hub["headers"])
                assert r.status_code in (202, 204)
                await eventually(lambda: ready(client, hub, "cat"), "cat started after ann stopped")
                await page.wait_for_url("**/user/cat/**", timeout=60000)
            finally:
                await browser.close()
        # ann asks again: ben and cat hold both GPUs, so she waits …
        await spawn_gpu(client, hub, "ann")
        line = await asyncio.wait_for(first_waiting_line(client, hub, "ann"), 60)
        assert line.startswith(
            "Waiting for a GPU: 2 of 2 GPUs in use on this hub; you are number 1"
        )
        # … until the cap is raised in the policy file: no restart
        hub["policy"].write_text(POLICY.replace("gpu: 2}", "gpu: 3}"), encoding="utf-8")
        await eventually(lambda: ready(client, hub, "ann"), "ann started after the cap rose")
    async with engine.connect() as conn:
        rows = (await conn.execute(text(
            "SELECT username, outcome, bottleneck_level, bottleneck_resource FROM decisions "
            "WHERE outcome IN ('waiting', 'woke') ORDER BY id"))).all()  # fmt: skip
    assert [tuple(r) for r in rows] == [
        ("cat", "waiting", "hub", "gpu"), ("cat", "woke", None, None),
        ("ann", "waiting", "hub", "gpu"), ("ann", "woke", None, None),
    ]  # fmt: skip
