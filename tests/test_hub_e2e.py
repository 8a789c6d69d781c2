"""End to end on a real hub: a ``jupyterhub`` process (JupyterHub 6 in .venv, 5 in .venv-jh5),
the npm configurable-http-proxy, real single-user servers, the quota hook, the quota page and
the enforcer as hub-managed services, configured by the docs' own ``jupyterhub_config.py``
blocks (docs/hub.md, docs/web.md: ``install_quota_hook``, ``install_quota_services``), and a
real Chromium.

One hub for the whole story (starting one takes seconds), in order:

1. the hub starts with the database down and stays up; the quota page's health says
   "ledger unavailable"; spawns are refused with the fail-closed message;
2. the database comes back: the services recover without a restart, and the refusals made
   during the outage appear in the decision log;
3. alice is over her budget: the browser shows the friendly denial page (screenshot), whose
   button opens her quota page at the link users are given; she cannot read bob's data;
4. bob is allowed: the quota line arrives through the proxy while his spawn is still pending;
5. ``on_ledger_error: allow`` with a database that does not answer (the check times out):
   the progress stream says the quota could not be checked;
6. the enforcer stops bob's server once his budget runs out;
7. no refusal is logged at error level or counted as a spawn error.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import httpx
import jupyterhub
import pytest
from docs_examples import hub_config_source
from hub_support.db_switch import DatabaseSwitch
from hub_support.ledger_data import insert, segment, write_policy
from requirements import CHROMIUM, CHROMIUM_ARGS, require
from sqlalchemy import text

from ledger.core.times import iso, utcnow
from quota_ledger_demo.hub import free_port, start_hub, stop_hub, write_hub_config

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
JH_MAJOR = jupyterhub.__version__.split(".")[0]
PASSWORD = "e2e-password"


@pytest.fixture
async def hub(tmp_path, fresh_db_url):
    require("chromium")
    require("configurable-http-proxy")  # the npm one: the PyPI one buffers the progress stream
    switch = DatabaseSwitch(fresh_db_url)  # starts down
    port, web_port = free_port(), free_port()
    admin_token, enforcer_token = secrets.token_hex(16), secrets.token_hex(16)
    policy = write_policy(tmp_path / "policy.yaml")
    # The quota part of the config is the docs' tagged blocks, verbatim but for the web port
    # (docs/hub.md + docs/web.md, tests/docs_examples.py); the environment they expect is set
    # first, the test's own knobs after them.
    docs_config = hub_config_source().replace("10101", str(web_port))
    hub_env = {"QUOTA_LEDGER_DB_URL": switch.url, "QUOTA_LEDGER_CONFIG": str(policy)}
    extra = f"""
import os
os.environ.update({hub_env!r})  # the hub's environment, as docs/hub.md asks for it
{docs_config}
c.JupyterHub.tornado_settings = {{"slow_spawn_timeout": 1}}
c.DemoSpawner.start_delay_seconds = 3
c.Spawner.consecutive_failure_limit = 3  # as z2jh sets it: refusals must not count
for service in c.JupyterHub.services:  # the test runs its own enforcement rounds
    if service["name"] == "quota-enforcer":
        service["command"] += ["--interval", "600"]
    elif service["name"] == "quota":
        service["command"] += ["--log-level", "info"]
"""
    config = write_hub_config(
        tmp_path / "hub", db_url=switch.url, policy_path=policy, fake_api_url=None,
        port=port, password=PASSWORD, users={"alice": ["regular"], "bob": ["power"],
                                            "carol": ["regular"], "dora": ["quota-admins"]},
        admin_token=admin_token, enforcer_token=enforcer_token, extra_config=extra,
        quota_hook=False, enforcer_service="quota-enforcer-test",
    )  # fmt: skip
    process = await asyncio.to_thread(start_hub, config)
    try:
        yield {
            "url": f"http://127.0.0.1:{port}",
            "api": f"http://127.0.0.1:{port}/hub/api",
            "admin": {"Authorization": f"token {admin_token}"},
            "enforcer_token": enforcer_token,
            "policy": policy,
            "switch": switch,
            "process": process,
            "log": config.parent / "jupyterhub.log",
        }
    finally:
        await asyncio.to_thread(stop_hub, process)
        await switch.down()


async def progress_events(client, api: str, user: str, headers, *, on_event=None) -> list[dict]:
    events = []
    url = f"{api}/users/{user}/server/progress"
    async with client.stream("GET", url, headers=headers, timeout=60) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                event = json.loads(line[5:])
                events.append(event)
                if on_event is not None:
                    await on_event(event)
                if event.get("ready") or event.get("failed"):
                    break
    return events


async def eventually(check, what: str, timeout_seconds: float = 90.0):
    deadline = asyncio.get_running_loop().time() + timeout_seconds
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {timeout_seconds:g} s: {what}")
        await asyncio.sleep(0.5)


def enforce(hub, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "JUPYTERHUB_API_TOKEN": hub["enforcer_token"]}
    # this file's hub reaches the ledger through its outage switch; others give the URL
    db_url = hub["switch"].url if "switch" in hub else hub["db_url"]
    command = [str(Path(sys.executable).parent / "quota-ledger"), "enforce", "--once",
               "--db", db_url, "--config", str(hub["policy"]), "--hub-url",
               hub["api"], "--log-level", "info", *extra]  # fmt: skip
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)


async def test_real_hub_story(hub, engine):
    switch, api = hub["switch"], hub["api"]
    async with httpx.AsyncClient(headers=hub["admin"], timeout=30) as client:
        # 1. database down at hub start: the hub is up, the services say so, fail closed
        health = f"{hub['url']}/services/quota/healthz"

        async def web_health():
            try:
                r = await client.get(health)
            except httpx.HTTPError:
                return None
            return r.json() if r.status_code == 200 else None

        body = await eventually(web_health, "the quota page answers its health check")
        assert body["status"] == "ledger unavailable", body
        for _ in range(2):
            r = await client.post(f"{api}/users/alice/server")
            assert r.status_code == 503, r.text
            message = r.json()["message"]
            assert "could not be checked just now" in message
            assert "hub admins</b> for more quota" not in message  # not out of quota
        assert hub["process"].poll() is None

        # 2. the database returns: recovery without a restart, outage decisions written
        await switch.up()

        async def recovered():
            body = await web_health()
            return body and body["status"] == "ok"

        await eventually(recovered, "the quota page sees the ledger again")

        async def outage_rows():
            async with engine.connect() as conn:
                rows = (await conn.execute(text(
                    "SELECT outcome, reason FROM decisions WHERE username='alice'"))).all()  # fmt: skip
            return rows if len(rows) >= 2 else None

        rows = await eventually(outage_rows, "the outage decisions reach the log")
        assert [tuple(r) for r in rows] == [("error_denied", "ledger_error")] * 2

        # 3. alice is over her budget: the friendly page, her quota page, nobody else's data
        now = utcnow()
        await insert(engine, [segment("alice", now - timedelta(days=3), 16, memory_gib=4)])
        r = await client.post(f"{api}/users/alice/server")
        assert r.status_code == 403, r.text
        assert "You have used 64 GiB-hours of your 60 GiB-hours of memory" in r.json()["message"]
        await browser_story(hub["url"])

        # 4. bob is allowed; the quota line streams through the proxy before the spawn ends
        r = await client.post(f"{api}/users/bob/server")
        assert r.status_code in (201, 202), r.text
        pending_when_quota_arrived = []

        async def on_event(event):
            if event.get("message", "").startswith("Quota: "):
                model = (await client.get(f"{api}/users/bob")).json()
                pending_when_quota_arrived.append(model["servers"][""]["pending"])

        public_api = f"{hub['url']}/hub/api"  # through configurable-http-proxy
        events = await progress_events(client, public_api, "bob", hub["admin"],
                                       on_event=on_event)  # fmt: skip
        messages = [e.get("message", "") for e in events]
        assert any(m.startswith("Quota: ") and "240 GiB-hours" in m for m in messages), messages
        assert pending_when_quota_arrived == ["spawn"], (pending_when_quota_arrived, messages)
        assert events[-1].get("ready"), events

        # 5. on_ledger_error: allow, and a database that does not answer (the check times out)
        write_policy(hub["policy"], on_error="allow")
        await asyncio.sleep(1.1)  # the policy file's mtime must move on (PolicyWatcher)
        await switch.hang()
        r = await client.post(f"{api}/users/carol/server")
        assert r.status_code in (201, 202), r.text
        events = await progress_events(client, public_api, "carol", hub["admin"])
        messages = [e.get("message", "") for e in events]
        assert any("could not be checked just now; this server is starting anyway" in m
                   for m in messages), messages  # fmt: skip
        await switch.up()

        # 6. bob runs out (an older 250 GiB-hours run); the enforcer warns, then stops
        write_policy(hub["policy"])
        await insert(engine, [segment("bob", now - timedelta(days=5), 62.5, memory_gib=4)])
        first = await asyncio.to_thread(enforce, hub)  # the switch runs in this loop
        assert first.returncode == 0, first.stderr
        second = await asyncio.to_thread(
            enforce, hub, "--at", iso(utcnow() + timedelta(minutes=11))
        )
        assert second.returncode == 0, second.stderr

        async def bob_stopped():
            return (await client.get(f"{api}/users/bob")).json()["servers"] == {}

        await eventually(bob_stopped, "the enforcer stops bob's server", 30)

        # 7. refusals are neither spawn errors in the metrics nor errors in the log
        metrics = (await client.get(f"{hub['url']}/hub/metrics")).text
        assert 'quota_ledger_spawn_decisions_total{outcome="denied"}' in metrics
        if JH_MAJOR != "5":  # JupyterHub 5 has no reason label: every refusal is a "failure"
            assert re.search(r'spawn_duration_seconds_count\{reason="quota",status="failure"\}',
                             metrics), metrics  # fmt: skip
        assert hub["process"].poll() is None  # three refusals did not reach the failure limit
    async with engine.connect() as conn:
        actions = (await conn.execute(text(
            "SELECT action FROM enforcement_actions WHERE username='bob' ORDER BY id"))).all()  # fmt: skip
    assert [a for (a,) in actions] == ["warn", "stop"]
    log = hub["log"].read_text(errors="replace")
    assert "exited with status" not in log, log  # both services lived through the outage
    # the outage refusals (503) are errors: someone must look at the ledger; quota ones are not
    error_lines = [line for line in log.splitlines() if line.startswith("[E") and "alice" in line
                   and "could not be checked" not in line and "cannot check" not in line
                   and " 503 " not in line]  # fmt: skip
    assert error_lines == [], "\n".join(error_lines)
    assert "denial.QuotaRefusal:" not in log  # no traceback of a refusal (JupyterHub 5 logs one)


async def browser_story(hub_url: str) -> None:
    from playwright.async_api import async_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(timezone_id="Asia/Tokyo", locale="en-US",
                                                viewport={"width": 1100, "height": 900})  # fmt: skip
            page = await context.new_page()
            await page.goto(f"{hub_url}/hub/login")
            await page.fill("input[name=username]", "alice")
            await page.fill("input[name=password]", PASSWORD)
            await page.click("input[type=submit], button[type=submit]")
            await page.goto(f"{hub_url}/hub/spawn")
            await page.select_option("select[name=size]", "medium")
            await page.click("input[type=submit], button[type=submit]")
            denial = page.locator(".quota-denial-page")
            try:
                await denial.wait_for(timeout=20000)
            except Exception as exc:  # show what the page said instead
                raise AssertionError(page.url + "\n" + await page.inner_text("body")) from exc
            await page.screenshot(path=str(SCREENSHOTS / f"denial-jh{JH_MAJOR}.png"),
                                  full_page=True)  # fmt: skip
            headline = await page.locator("h1.quota-headline").inner_text()
            assert headline.strip() == "You have used your memory quota"
            shown = await denial.inner_text()
            assert "You have used 64 GiB-hours of your 60 GiB-hours of memory" in shown
            assert "403" not in shown and "Forbidden" not in shown
            assert "Ask <b>hub admins</b> for more quota." in shown  # escaped, shown as text
            assert "https://example.org/quota-request" in shown
            # the restart time in the browser's zone, with the zone named
            local = await page.locator("time.quota-local-time").inner_text()
            assert "GMT+9" in local and "UTC" not in local, local
            # the button opens the quota page at the link users are given
            await page.click("a.quota-page-button")
            await page.wait_for_url("**/services/quota/", timeout=20000)
            assert "Your compute quota" in await page.content()
            # the same session cannot read anyone else's data through any route
            for path in ("api/v1/users/bob", "admin/users/bob", "admin/", "api/v1/report"):
                r = await page.goto(f"{hub_url}/services/quota/{path}")
                assert r.status == 403, (path, r.status)
            # the link without its slash (JupyterHub 5's own links) lands there too
            r = await page.goto(f"{hub_url}/services/quota")
            assert r.status == 200 and page.url.endswith("/services/quota/"), page.url
        finally:
            await browser.close()
