# ruff: noqa: F811 - the hub fixture is imported by name and requested as an argument
"""End to end in a real browser against a real hub (the fixture of tests/test_hub_e2e.py: a
``jupyterhub`` process, the npm proxy, the quota page and hook configured by the docs'
blocks): alice is over quota; on the denial page she asks for more; she confirms on her
quota page; dora (a quota admin through the ``quota-admins`` group) approves in the inbox;
alice's page says so, and her next spawn is allowed, its progress line saying the request
was approved. Screenshots of the form, the inbox and the approved state land in
test-artifacts/screenshots/.
"""

from __future__ import annotations

import re
from datetime import timedelta

import httpx
import pytest
from hub_support.ledger_data import insert, segment
from requirements import CHROMIUM, CHROMIUM_ARGS
from sqlalchemy import text
from test_hub_e2e import PASSWORD, SCREENSHOTS, eventually, hub  # noqa: F401

from ledger.core.times import utcnow

pytestmark = pytest.mark.e2e


async def login(browser, hub_url: str, user: str):
    context = await browser.new_context(viewport={"width": 1100, "height": 900})
    page = await context.new_page()
    await page.goto(f"{hub_url}/hub/login")
    await page.fill("input[name=username]", user)
    await page.fill("input[name=password]", PASSWORD)
    await page.click("input[type=submit], button[type=submit]")
    await page.wait_for_url(re.compile(r".*/(hub|user)/.*"), timeout=20000)
    return page


async def spawn_medium(page, hub_url: str) -> None:
    await page.goto(f"{hub_url}/hub/spawn")
    await page.select_option("select[name=size]", "medium")
    await page.click("input[type=submit], button[type=submit]")


async def test_request_approve_then_spawn_in_a_browser(hub, engine):
    from playwright.async_api import async_playwright

    await hub["switch"].up()
    url, api = hub["url"], hub["api"]
    async with httpx.AsyncClient(headers=hub["admin"], timeout=30) as client:

        async def ledger_up():
            try:
                r = await client.get(f"{url}/services/quota/healthz")
            except httpx.HTTPError:
                return None
            return r.status_code == 200 and r.json()["status"] == "ok"

        await eventually(ledger_up, "the quota page sees the ledger")
        await insert(engine, [segment("alice", utcnow() - timedelta(days=3), 16, memory_gib=4)])

        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                alice = await login(browser, url, "alice")
                await spawn_medium(alice, url)
                form = alice.locator("form.quota-request-form")
                try:
                    await alice.locator(".quota-denial-page").wait_for(timeout=60000)
                    await form.wait_for(timeout=5000)
                except Exception as exc:  # show what the page said instead
                    body = alice.url + "\n" + await alice.content()
                    at = body.find("quota-denial-page")
                    raise AssertionError(
                        body[at - 200 : at + 3000] if at >= 0 else body[:3000]
                    ) from exc
                await form.locator("input[name=amount]").fill("100 GiB-hours")
                await form.locator("input[name=until]").fill("30d")
                await form.locator("input[name=reason]").fill("thesis deadline <b>soon</b>")
                await alice.screenshot(path=str(SCREENSHOTS / "request-form-denial.png"),
                                       full_page=True)  # fmt: skip
                await form.locator("button[type=submit]").click()
                # the quota page asks to confirm (its POST carries the service's xsrf token)
                confirm = alice.locator("form.request-form")
                await confirm.wait_for(timeout=20000)
                assert "Send this request" in await confirm.inner_text()
                await alice.screenshot(path=str(SCREENSHOTS / "request-form-confirm.png"),
                                       full_page=True)  # fmt: skip
                await confirm.locator("button[type=submit]").click()
                await alice.wait_for_url("**/services/quota/#requests", timeout=20000)
                row = alice.locator("tr.request").first
                assert "pending" in await row.inner_text()
                assert "thesis deadline <b>soon</b>" in await row.inner_text()  # text, escaped

                dora = await login(browser, url, "dora")
                await dora.goto(f"{url}/services/quota/admin/requests")
                pending = dora.locator("article.request.pending").first
                await pending.wait_for(timeout=20000)
                shown = await pending.inner_text()
                assert "alice asks for 100 GiB-hours of Memory" in shown
                assert "regular" in shown and "64 GiB-hours" in shown  # groups and usage
                await dora.screenshot(path=str(SCREENSHOTS / "request-inbox.png"), full_page=True)
                await pending.locator("form.approve input[name=message]").fill("good luck")
                await pending.locator("form.approve button[type=submit]").click()
                await dora.wait_for_url("**/services/quota/admin/requests", timeout=20000)
                assert "approved" in await dora.locator("table.decided").inner_text()

                await alice.goto(f"{url}/services/quota/")
                banner = alice.locator(".request-decision")
                assert "was approved by dora" in await banner.inner_text()
                memory = await alice.locator("#resource-memory").inner_text()
                assert "160 GiB-hours (60 + 100 granted)" in memory
                await alice.screenshot(path=str(SCREENSHOTS / "request-approved.png"),
                                       full_page=True)  # fmt: skip

                # the next spawn is allowed, and its progress says the request was approved
                await spawn_medium(alice, url)
                await alice.wait_for_url(re.compile(r".*/(spawn-pending|user)/alice.*"),
                                         timeout=30000)  # fmt: skip
                if "spawn-pending" in alice.url:
                    log = alice.locator("#progress-log, .progress-log, #progress-message")
                    await log.first.wait_for(timeout=20000)
                    await alice.screenshot(path=str(SCREENSHOTS / "request-spawn-allowed.png"),
                                           full_page=True)  # fmt: skip
            finally:
                await browser.close()

        async def alice_running():
            model = (await client.get(f"{api}/users/alice")).json()
            return model["servers"].get("", {}).get("ready") or None

        await eventually(alice_running, "alice's server starts after the approval")
    async with engine.connect() as conn:
        rows = (await conn.execute(text(
            "SELECT outcome FROM decisions WHERE username = 'alice' ORDER BY decided_at"
        ))).all()  # fmt: skip
        told = await conn.scalar(text("SELECT seen_at FROM quota_requests WHERE username='alice'"))
    assert rows[0][0] == "denied"
    assert told is not None  # the spawn's progress line told her
