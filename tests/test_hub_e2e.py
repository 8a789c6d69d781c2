"""End to end: a real ``jupyterhub`` process (real proxy, real single-user server), the quota
hook, a real browser, and ``quota-ledger enforce`` stopping a server through the Hub API.

One hub for the whole story (starting one takes seconds): alice is over her budget and is
refused (REST, then the browser page); bob is allowed and sees the quota line in the spawn
progress stream; then bob's budget runs out and the enforcer stops his server.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from hub_support.ledger_data import insert, segment, write_policy
from requirements import CHROMIUM, require
from sqlalchemy import text

from ledger.core.times import iso, utcnow
from quota_ledger_demo.hub import free_port, start_hub, stop_hub, write_hub_config

pytestmark = pytest.mark.e2e

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]  # fmt: skip
PASSWORD = "e2e-password"


@pytest.fixture
async def hub(tmp_path, fresh_db_url):
    port = free_port()
    admin_token, enforcer_token = secrets.token_hex(16), secrets.token_hex(16)
    policy = write_policy(tmp_path / "policy.yaml")
    config = write_hub_config(
        tmp_path / "hub", db_url=fresh_db_url, policy_path=policy, fake_api_url=None,
        port=port, password=PASSWORD, users={"alice": ["regular"], "bob": ["power"]},
        admin_token=admin_token, enforcer_token=enforcer_token,
        # a refusal comes back within the second (403); bob's 3 s start returns 202, so
        # his spawn is still pending when the progress stream is read
        extra_config='c.JupyterHub.tornado_settings = {"slow_spawn_timeout": 1}\n'
        "c.DemoSpawner.start_delay_seconds = 3",
    )  # fmt: skip
    process = await asyncio.to_thread(start_hub, config)
    try:
        yield {
            "url": f"http://127.0.0.1:{port}",
            "api": f"http://127.0.0.1:{port}/hub/api",
            "admin": {"Authorization": f"token {admin_token}"},
            "enforcer_token": enforcer_token,
            "policy": policy,
            "db_url": fresh_db_url,
            "log": config.parent / "jupyterhub.log",
        }
    finally:
        await asyncio.to_thread(stop_hub, process)


async def progress_events(client: httpx.AsyncClient, api: str, user: str, headers) -> list[dict]:
    events = []
    url = f"{api}/users/{user}/server/progress"
    async with client.stream("GET", url, headers=headers, timeout=60) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                event = json.loads(line[5:])
                events.append(event)
                if event.get("ready") or event.get("failed"):
                    break
    return events


def enforce(hub, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "JUPYTERHUB_API_TOKEN": hub["enforcer_token"]}
    command = [str(Path(sys.executable).parent / "quota-ledger"), "enforce", "--once",
               "--db", hub["db_url"], "--config", str(hub["policy"]), "--hub-url", hub["api"],
               "--log-level", "info", *extra]  # fmt: skip
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)


async def test_refused_shown_progress_and_enforced(hub, engine):
    now = utcnow()
    # alice (regular, 60 GiB-hours) used 64 in the last days
    await insert(engine, [segment("alice", now - timedelta(days=3), 16, memory_gib=4)])
    async with httpx.AsyncClient(headers=hub["admin"], timeout=30) as client:
        # 1. refused over REST with the quota message
        r = await client.post(f"{hub['api']}/users/alice/server")
        assert r.status_code == 403, r.text
        assert "You have used 64 GiB-hours of your 60 GiB-hours of memory" in r.json()["message"]

        # 2. the denial as a person sees it in a real browser
        await browser_sees_denial(hub["url"])

        # 3. bob is allowed, and the spawn progress stream carries the quota line
        r = await client.post(f"{hub['api']}/users/bob/server")
        assert r.status_code in (201, 202), r.text
        events = await progress_events(client, hub["api"], "bob", hub["admin"])
        messages = [e.get("message", "") for e in events]
        assert any(m.startswith("Quota: ") and "240 GiB-hours" in m for m in messages), messages
        assert events[-1].get("ready"), events

        # 4. bob runs out (an older 250 GiB-hours run); the enforcer warns, then stops
        await insert(engine, [segment("bob", now - timedelta(days=5), 62.5, memory_gib=4)])
        first = enforce(hub)
        assert first.returncode == 0, first.stderr
        later = iso(utcnow() + timedelta(minutes=11))  # past the 10 minute grace period
        second = enforce(hub, "--at", later)
        assert second.returncode == 0, second.stderr
        for _ in range(100):
            model = (await client.get(f"{hub['api']}/users/bob")).json()
            if not model["servers"]:
                break
            await asyncio.sleep(0.2)
        assert model["servers"] == {}, model
    async with engine.connect() as conn:
        rows = (await conn.execute(text(
            "SELECT action, username, resource, threshold_percent FROM enforcement_actions "
            "ORDER BY id"))).all()  # fmt: skip
    assert [tuple(r) for r in rows] == [("warn", "bob", "memory", 100),
                                        ("stop", "bob", "memory", None)]  # fmt: skip


async def browser_sees_denial(hub_url: str) -> None:
    require("chromium")
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(timezone_id="Asia/Tokyo", locale="en-US")
            page = await context.new_page()
            await page.goto(f"{hub_url}/hub/login")
            await page.fill("input[name=username]", "alice")
            await page.fill("input[name=password]", PASSWORD)
            await page.click("input[type=submit], button[type=submit]")
            await page.goto(f"{hub_url}/hub/spawn")
            await page.select_option("select[name=size]", "medium")
            await page.click("input[type=submit], button[type=submit]")
            denial = page.locator(".quota-denial")
            try:
                await denial.wait_for(timeout=15000)
            except Exception as exc:  # show what the page said instead
                raise AssertionError(page.url + "\n" + await page.inner_text("body")) from exc
            shown = await denial.inner_text()
            assert "You have used 64 GiB-hours of your 60 GiB-hours of memory" in shown
            # the restart time is rewritten into the browser's local time (no "UTC" left)
            local = await page.locator("time").inner_text()
            assert "UTC" not in local and local.strip(), local
            body = await page.inner_text("body")
            assert "Ask <b>hub admins</b> for more quota." in body  # escaped, shown as text
            assert await page.locator("a[href='/services/quota/']").count() == 1
        finally:
            await browser.close()
