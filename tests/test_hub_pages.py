"""The quota on the hub's own pages, on a real hub (JupyterHub 6 in .venv, 5 in .venv-jh5)
with ``install_quota_hook`` as the docs configure it and a real Chromium:

1. the home page and the header show each logged-in user their own numbers only (two
   users, different numbers; one near the limit, one over it);
2. the server-options form of a KubeSpawner-style ``profile_list`` carries a note on every
   profile and ``profile_options`` choice: runs N hours / refused, computed for each size;
3. the ledger down: the home page says "quota unavailable", the form still renders (without
   notes), error pages render; nothing fails.

The spawner is ``quota_ledger_demo.hub.ProfilesDemoSpawner`` (KubeSpawner's form field
names and override rules; KubeSpawner itself needs a cluster).
"""

from __future__ import annotations

import asyncio
import secrets
from datetime import timedelta
from pathlib import Path

import jupyterhub
import pytest
from hub_support.db_switch import DatabaseSwitch
from hub_support.ledger_data import insert, segment, write_policy
from requirements import CHROMIUM, CHROMIUM_ARGS, require

from ledger.core.times import utcnow
from quota_ledger_demo.hub import free_port, start_hub, stop_hub, write_hub_config

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
JH_MAJOR = jupyterhub.__version__.split(".")[0]
PASSWORD = "pages-password"

PROFILES = """
c.JupyterHub.spawner_class = "quota_ledger_demo.hub.ProfilesDemoSpawner"
c.ProfilesDemoSpawner.profile_list = [
    {"display_name": "Small", "description": "2 GiB",
     "kubespawner_override": {"mem_guarantee": "2G", "cpu_guarantee": 0.5},
     "profile_options": {"memory": {"display_name": "Memory", "choices": {
         "2g": {"display_name": "2 GiB", "kubespawner_override": {"mem_guarantee": "2G"}},
         "6g": {"display_name": "6 GiB", "kubespawner_override": {"mem_guarantee": "6G"}},
     }}}},
    {"display_name": "Large", "slug": "large",
     "kubespawner_override": {"mem_guarantee": "16G", "cpu_guarantee": 4}},
    {"display_name": "GPU", "slug": "gpu",
     "kubespawner_override": {"mem_guarantee": "8G",
                              "extra_resource_guarantees": {"nvidia.com/gpu": "1"}}},
]
"""


@pytest.fixture
async def hub(tmp_path, fresh_db_url, engine):
    require("chromium")
    require("configurable-http-proxy")
    switch = DatabaseSwitch(fresh_db_url)
    await switch.up()
    now = utcnow()
    await insert(engine, [
        segment("alice", now - timedelta(days=3), 12, memory_gib=4),  # 48 of 60 GiB-hours
        segment("bob", now - timedelta(days=5), 62.5, memory_gib=4),  # 250 of 240: over
    ])  # fmt: skip
    policy = write_policy(tmp_path / "policy.yaml")
    port = free_port()
    config = write_hub_config(
        tmp_path / "hub", db_url=switch.url, policy_path=policy, fake_api_url=None,
        port=port, password=PASSWORD, users={"alice": ["regular"], "bob": ["power"]},
        admin_token=secrets.token_hex(16), extra_config=PROFILES,
        hook_args=", summary_cache_seconds=1",
    )  # fmt: skip
    process = await asyncio.to_thread(start_hub, config)
    try:
        yield {"url": f"http://127.0.0.1:{port}", "switch": switch, "process": process,
               "log": config.parent / "jupyterhub.log"}  # fmt: skip
    finally:
        await asyncio.to_thread(stop_hub, process)
        await switch.down()


async def login(browser, hub_url: str, user: str):
    context = await browser.new_context(viewport={"width": 1100, "height": 900})
    page = await context.new_page()
    await page.goto(f"{hub_url}/hub/login")
    await page.fill("input[name=username]", user)
    await page.fill("input[name=password]", PASSWORD)
    await page.click("input[type=submit], button[type=submit]")
    await page.wait_for_url("**/hub/**")
    return page


async def test_hub_pages_show_own_quota_and_annotate_choices(hub):
    from playwright.async_api import async_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    url = hub["url"]
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            alice, bob = await login(browser, url, "alice"), await login(browser, url, "bob")

            # 1. each sees their own numbers, in the home page and in the header
            r = await alice.goto(f"{url}/hub/home")
            assert r.status == 200
            summary = await alice.locator("#quota-summary").inner_text()
            assert "48 / 60 GiB-hours" in summary and "in the last 30 days" in summary
            assert "nearly used up" in summary  # 80 %: the policy's first warn_at_percent
            assert "250" not in summary and "240" not in summary
            line = alice.locator('#quota-summary .quota-line[data-resource="memory"]')
            assert "quota-warn" in (await line.get_attribute("class"))
            header = await alice.locator("#quota-header").inner_text()
            assert "Memory 48 / 60 GiB-hours" in header
            link = alice.locator("#quota-summary a.quota-page-link")
            assert await link.get_attribute("href") == "/services/quota/"
            await alice.screenshot(path=str(SCREENSHOTS / f"hub-home-jh{JH_MAJOR}.png"))

            await bob.goto(f"{url}/hub/home")
            summary = await bob.locator("#quota-summary").inner_text()
            assert "250 / 240 GiB-hours" in summary and "used up" in summary
            assert "48 / 60" not in summary
            assert "250 / 240" in await bob.locator("#quota-header").inner_text()

            # 2. every choice of the profile form carries its note
            await alice.goto(f"{url}/hub/spawn")
            notes = alice.locator(".quota-choice-note")
            await notes.first.wait_for(timeout=10000)
            small = await alice.locator(
                'label[for="profile-item-small"] .quota-choice-note').inner_text()  # fmt: skip
            assert small == "can run about 6 hours"  # 12 GiB-hours left, 2 GiB
            large = await alice.locator(
                'label[for="profile-item-large"] .quota-choice-note').inner_text()  # fmt: skip
            assert large == "can run about 45 minutes"  # 12 / 16 GiB
            gpu = alice.locator('label[for="profile-item-gpu"] .quota-choice-note')
            assert await gpu.inner_text() == "GPU not included in your quota"
            assert "quota-refused" in await gpu.get_attribute("class")
            radio = alice.locator("#profile-item-gpu")
            assert await radio.get_attribute("data-quota-outcome") == "refused"
            assert await radio.is_enabled()  # marked, not hidden or disabled by default
            option = alice.locator('select[name="profile-option-small--memory"] option[value="6g"]')
            assert (await option.inner_text()).endswith("6 GiB \u2014 can run about 2 hours")
            await alice.screenshot(path=str(SCREENSHOTS / f"hub-spawn-form-jh{JH_MAJOR}.png"),
                                   full_page=True)  # fmt: skip

            await bob.goto(f"{url}/hub/spawn")
            await bob.locator(".quota-choice-note").first.wait_for(timeout=10000)
            small = await bob.locator(
                'label[for="profile-item-small"] .quota-choice-note').inner_text()  # fmt: skip
            assert small.startswith("over your memory budget until ") and small.endswith("UTC")

            # 3. the ledger goes down: every page still renders, the summary says so
            await hub["switch"].down()
            await asyncio.sleep(1.2)  # the cached summaries expire
            r = await alice.goto(f"{url}/hub/home")
            assert r.status == 200
            assert "quota unavailable" in await alice.locator("#quota-summary").inner_text()
            assert "quota unavailable" in await alice.locator("#quota-header").inner_text()
            r = await alice.goto(f"{url}/hub/spawn")
            assert r.status == 200
            assert await alice.locator("#profile-item-large").count() == 1  # the form is there
            assert await alice.locator(".quota-choice-note").count() == 0
            r = await alice.goto(f"{url}/hub/no-such-page")
            assert r.status == 404 and "404" in await alice.content()
            r = await alice.goto(f"{url}/hub/token")
            assert r.status == 200
            await alice.screenshot(path=str(SCREENSHOTS / f"hub-home-down-jh{JH_MAJOR}.png"))
        finally:
            await browser.close()
    assert hub["process"].poll() is None
    log = hub["log"].read_text(errors="replace")
    assert "Traceback" not in log, log


async def test_choice_notes_script_marks_disables_and_never_parses_html():
    """The notes' script alone in Chromium: a refused choice is disabled when the operator
    asks for it, a note is text (markup in it is shown, not run), other fields untouched."""
    from jinja2 import Environment, FileSystemLoader
    from playwright.async_api import async_playwright

    from ledger.hub.pages import TEMPLATE_DIR

    require("chromium")
    env = Environment(loader=FileSystemLoader(str(TEMPLATE_DIR)), autoescape=True)
    macro = env.from_string('{% from "quota_choices.html" import quota_choices %}'
                            "{{ quota_choices(notes) }}")  # fmt: skip

    def choice(field, value, outcome, note):
        return {"field": field, "value": value, "label": value, "outcome": outcome,
                "level": "refused" if outcome == "refused" else "ok", "note": note,
                "request": {}, "run_seconds": None, "retry_at": None, "reasons": [],
                "message": note}  # fmt: skip

    notes = {"username": "u", "at": "2026-12-01T00:00:00Z", "disable_refused": True,
             "choices": [choice("size", "small", "allowed", "can run about 6 hours"),
                         choice("size", "gpu", "refused", "<img src=x onerror=alert(1)>"),
                         choice("profile", "big", "refused", "over your memory budget")]}  # fmt: skip
    form = ('<form id="spawn_form"><select name="size"><option value="small">Small</option>'
            '<option value="gpu">GPU</option></select>'
            '<label><input type="radio" name="profile" value="big"><h3>Big</h3></label>'
            '<select name="other"><option value="gpu">GPU</option></select></form>')  # fmt: skip
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            dialogs = []
            page.on("dialog", lambda d: dialogs.append(d.message))
            await page.set_content(form + macro.render(notes=notes))
            small = page.locator('select[name=size] option[value="small"]')
            assert await small.inner_text() == "Small \u2014 can run about 6 hours"
            assert await small.get_attribute("disabled") is None
            gpu = page.locator('select[name=size] option[value="gpu"]')
            assert await gpu.inner_text() == "GPU \u2014 <img src=x onerror=alert(1)>"
            assert await gpu.get_attribute("disabled") is not None
            assert await page.locator("img").count() == 0 and dialogs == []
            assert await page.locator("input[value=big]").is_disabled()
            note = page.locator("label .quota-choice-note")
            assert await note.inner_text() == "over your memory budget"
            assert await page.locator("select[name=other] option").inner_text() == "GPU"
        finally:
            await browser.close()
