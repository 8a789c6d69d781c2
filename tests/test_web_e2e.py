"""End to end: a real JupyterHub (DummyAuthenticator, the npm proxy) runs the quota page as
a hub-managed service (quota_ledger_demo.web.apply); a real Chromium logs in through the hub's
login page and OAuth, and screenshots the pages.

Screenshots land in test-artifacts/screenshots/ (printed). Skipped without /usr/bin/chromium.
"""

from __future__ import annotations

import signal
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from hub_support.process_hub import HUB_PREAMBLE, hub_process
from requirements import CHROMIUM, CHROMIUM_ARGS, require
from web_support import NOW, POLICY_TEXT, seed, segment

from ledger.core.times import iso
from ledger.store import queries
from quota_ledger_demo.hub import free_port, streaming_proxy

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"


HUB_CONFIG = (
    HUB_PREAMBLE
    + """
from quota_ledger_demo.web import apply
c.ConfigurableHTTPProxy.command = [{proxy!r}]
c.JupyterHub.load_groups = {{
    "regular": {{"users": ["dana", "erin"]}},
    "power": {{"users": ["bob"]}},
    "dev": {{"users": ["admin"]}},
}}
apply(c, {db_url!r}, {policy!r}, port={service_port}, admin_users=["admin"], at={at!r},
      python={python!r})
"""
)


@pytest.fixture
async def hub(fresh_db_url, engine, tmp_path):
    require("chromium")
    require("configurable-http-proxy")
    await seed(engine)
    d = timedelta(days=1)
    async with engine.begin() as conn:  # erin: a normal month, a third of the budget
        await queries.upsert_segments(
            conn,
            [
                segment("erin", NOW - k * d, NOW - k * d + timedelta(hours=1), memory_gib=4)
                for k in (3, 6, 9, 12, 15)
            ],
        )
        await queries.record_groups(conn, "erin", ["regular"], NOW)
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY_TEXT)
    ports = {k: free_port() for k in ("hub_port", "api_port", "proxy_api_port", "service_port")}
    config = tmp_path / "jupyterhub_config.py"
    config.write_text(
        HUB_CONFIG.format(
            tmp=tmp_path,
            db_url=fresh_db_url,
            policy=str(policy),
            at=iso(NOW),
            python=sys.executable,
            proxy=streaming_proxy(),
            **ports,
        )  # fmt: skip
    )
    base = f"http://127.0.0.1:{ports['hub_port']}"
    health = [(f"{base}/hub/health", 45), (f"{base}/services/quota/healthz", 30)]
    async with hub_process(config, health) as proc:
        yield {"url": base, "proc": proc, "log": tmp_path / "hub.log"}


async def login_and_open(browser, base: str, user: str, path: str = "/services/quota/"):
    context = await browser.new_context(viewport={"width": 1200, "height": 900})
    page = await context.new_page()
    await page.goto(base + path)
    await page.fill("input[name=username]", user)
    await page.fill("input[name=password]", "any")
    await page.click("input[type=submit], button[type=submit]")
    await page.wait_for_url(f"**{path.rstrip('/')}**", timeout=20000)
    return context, page


async def test_user_and_admin_pages_behind_a_real_hub_login(hub):
    from playwright.async_api import async_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots: {SCREENSHOTS}")
    started = time.monotonic()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for user, shot, expect in [
                ("erin", "user-normal.png", "of 60 GiB-hours"),
                ("dana", "user-near-limit.png", "More than 80 %"),
                ("bob", "user-over-limit.png", "out of quota for a typical server"),
            ]:
                context, page = await login_and_open(browser, hub["url"], user)
                body = await page.content()
                assert expect in body, user
                assert "Your compute quota" in body and user in body
                await page.screenshot(path=str(SCREENSHOTS / shot), full_page=True)
                # the same browser session cannot read the admin pages or someone else
                r = await page.goto(hub["url"] + "/services/quota/admin/")
                assert r.status == 403
                r = await page.goto(hub["url"] + "/services/quota/api/v1/users/admin")
                assert r.status == 403
                await context.close()
            context, page = await login_and_open(
                browser, hub["url"], "admin", "/services/quota/admin/"
            )
            body = await page.content()
            assert "Quota report" in body and "bob" in body and "dana" in body
            await page.screenshot(path=str(SCREENSHOTS / "admin-report.png"), full_page=True)
            await page.goto(hub["url"] + "/services/quota/admin/groups")
            await page.screenshot(path=str(SCREENSHOTS / "admin-groups.png"), full_page=True)
            r = await page.goto(hub["url"] + "/services/quota/api/v1/users/bob")
            assert r.status == 200 and '"username": "bob"' in await r.text()
            await context.close()
        finally:
            await browser.close()
    print(f"browser part: {time.monotonic() - started:.1f} s")
    # Hub shutdown must not wait for the service: the hub's first signal (SIGINT) stops it;
    # ignoring it would cost the hub its interrupt_timeout before a SIGTERM.
    hub["proc"].send_signal(signal.SIGTERM)
    assert hub["proc"].wait(60) == 0
    log = hub["log"].read_text(errors="replace")
    assert "quota web service stopping on SIGINT" in log, log[-2000:]
    assert "postgres@" not in log  # the DB URL is in the service's environment, not logs
    assert "quota web service stopped" in log
