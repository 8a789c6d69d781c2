"""End to end: the quota-ledger-jupyterlab extension in JupyterLab, in a real Chromium, on a
real single-user server that a real JupyterHub started, with the quota service running.

The hub (this venv's JupyterHub 6) runs the quota page as a hub-managed service and spawns
``jupyterhub-singleuser`` from ``.venv-jlab`` (JupyterLab 4 + the extension's wheel, built
from source by ``make jupyterlab``) with SimpleLocalProcessSpawner. The server role carries
``access:services!service=quota``: docs/jupyterlab.md's block, pasted into the hub config.

Checked: the status bar shows dana's numbers (never bob's), the popover opens, the
enforcer's warning for this server becomes a notification (an older one does not), the
server's own token reads ``/api/v1/me`` but gets 403 for another user's route and for the
hub's record of another user, bob cannot read dana's server extension, and a server token
without the grant (erin's) gets a 403 that says what to grant. Screenshots in
test-artifacts/screenshots/jupyterlab-*.png.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
from pathlib import Path

import httpx
import pytest
from docs_examples import tagged_blocks
from hub_support.process_hub import HUB_PREAMBLE, hub_process
from requirements import CHROMIUM, CHROMIUM_ARGS, require
from web_support import POLICY_TEXT, seed

from ledger.core.times import utcnow
from quota_ledger_demo.hub import free_port, streaming_proxy

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
ADMIN_TOKEN = "jlab-e2e-admin-token-0123456789"

HUB_CONFIG = (
    HUB_PREAMBLE
    + """
from quota_ledger_demo.web import apply
c.ConfigurableHTTPProxy.command = [{proxy!r}]
c.JupyterHub.load_groups = {{"regular": {{"users": ["dana", "erin"]}}, "power": {{"users": ["bob"]}}}}
apply(c, {db_url!r}, {policy!r}, port={service_port}, python={python!r})
c.JupyterHub.services.append({{"name": "test-admin", "api_token": {admin_token!r}}})
# docs/jupyterlab.md, pasted as an operator would: the server's token may use the service
{docs_block}
c.JupyterHub.load_roles = c.JupyterHub.load_roles + [
    {{"name": "test-admin", "scopes": ["admin:users", "admin:servers", "access:servers"],
      "services": ["test-admin"]}},
]
# erin's server token keeps the hub's default scopes (no quota access): an empty list
# means "the server role" (JupyterHub's User.spawn)
c.Spawner.server_token_scopes = lambda spawner: (
    ["users:activity!user", "access:servers!server"] if spawner.user.name == "erin" else []
)
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = "{tmp}/home/{{username}}"
c.Spawner.cmd = [{singleuser!r}]
c.Spawner.args = {args!r}
c.Spawner.default_url = "/lab"
c.Spawner.start_timeout = 90
c.Spawner.http_timeout = 90
c.Spawner.environment = {{
    "QUOTA_LEDGER_SERVICE_URL": "http://127.0.0.1:{hub_port}/services/quota/",
    "PATH": {path!r},
}}
"""
)


def grant_from_docs() -> str:
    (block,) = tagged_blocks("jupyterlab-config", "docs/jupyterlab.md")
    assert "access:services!service=quota" in block.text
    return block.text


@pytest.fixture
async def lab_hub(fresh_db_url, engine, tmp_path):
    require("chromium")
    require("configurable-http-proxy")
    singleuser = require("jupyterlab-singleuser")
    now = utcnow()
    await seed(engine, now)  # dana: 52 of 60 GiB-hours, a warning 3 h ago; bob: 248 of 240
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY_TEXT)
    ports = {k: free_port() for k in ("hub_port", "api_port", "proxy_api_port", "service_port")}
    (tmp_path / "home").mkdir()
    config = tmp_path / "jupyterhub_config.py"
    config.write_text(
        HUB_CONFIG.format(
            tmp=tmp_path,
            db_url=fresh_db_url,
            policy=str(policy),
            python=sys.executable,
            proxy=streaming_proxy(),
            admin_token=ADMIN_TOKEN,
            docs_block=grant_from_docs(),
            singleuser=singleuser,
            args=["--allow-root"] if os.getuid() == 0 else [],
            path=f"{Path(singleuser).parent}{os.pathsep}{os.environ['PATH']}",
            **ports,
        )  # fmt: skip
    )
    base = f"http://127.0.0.1:{ports['hub_port']}"
    health = [(f"{base}/hub/health", 120), (f"{base}/services/quota/healthz", 60)]  # load
    async with hub_process(config, health, stop_seconds=30) as proc:
        yield {"url": base, "proc": proc, "log": tmp_path / "hub.log", "engine": engine}


def server_token(user: str) -> str:
    """The running single-user server's own $JUPYTERHUB_API_TOKEN (local processes, as root:
    read from /proc, exactly what the server extension sends)."""
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            raw = environ.read_bytes()
        except OSError:
            continue
        variables = dict(v.split(b"=", 1) for v in raw.split(b"\0") if b"=" in v)
        if variables.get(b"JUPYTERHUB_USER") == user.encode() and b"JUPYTERHUB_API_TOKEN" in (
            variables
        ):
            if b"JUPYTERHUB_SERVER_NAME" in variables:  # the server, not the hub's services
                return variables[b"JUPYTERHUB_API_TOKEN"].decode()
    raise AssertionError(f"no single-user server process of {user} found")


async def login(browser, base: str, user: str):
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    page = await context.new_page()
    await page.goto(f"{base}/hub/login")
    await page.fill("input[name=username]", user)
    await page.fill("input[name=password]", "any")
    await page.click("input[type=submit], button[type=submit]")
    await page.wait_for_url("**/hub/**", timeout=30000)
    return context, page


async def record_warning(engine, username: str, message: str) -> None:
    from sqlalchemy import text

    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO enforcement_actions (acted_at, username, servername, action, "
                "resource, threshold_percent, used_hours, limit_hours, message) VALUES "
                "(:at, :u, '', 'warn', 'memory', 90, 54, 60, :msg)"
            ),
            {"at": utcnow(), "u": username, "msg": message},
        )


async def test_status_bar_popover_and_warning_in_jupyterlab(lab_hub):
    from playwright.async_api import async_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    base = lab_hub["url"]
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context, page = await login(browser, base, "dana")
            await page.goto(f"{base}/hub/spawn/dana", timeout=120000)
            await page.wait_for_url("**/user/dana/lab**", timeout=120000)
            item = page.locator(".jp-QuotaLedger-status")
            await item.wait_for(timeout=90000)
            try:
                await page.wait_for_function(
                    "() => document.querySelector('.jp-QuotaLedger-status')"
                    ".textContent.includes('GiB')",
                    timeout=30000,
                )
            except Exception:  # noqa: BLE001 - say what the item shows instead
                pass
            text = await item.text_content()
            if "GiB" not in text:
                await page.screenshot(path=str(SCREENSHOTS / "jupyterlab-failed.png"))
                log = lab_hub["log"].read_text(errors="replace")[-3000:]
                raise AssertionError(f"{text}: {await item.get_attribute('title')}\n{log}")
            # dana: 48 GiB-hours ended + 4 GiB running for 1 h = 52 of 60 ("near")
            assert text == "Memory: 52 / 60 GiB-h", text  # gpu: 0 GPU-hours is left out
            assert "248" not in text and "240" not in text  # bob's numbers
            assert "jp-mod-near" in (await item.get_attribute("class"))
            # the warning recorded 3 h ago, before this page was opened, is not notified
            await page.wait_for_timeout(1000)
            assert await page.locator("text=secret-warning-of-dana").count() == 0
            await page.screenshot(path=str(SCREENSHOTS / "jupyterlab-status-bar.png"))

            await item.click()
            popover = page.locator(".jp-QuotaLedger-popover")
            await popover.wait_for(timeout=10000)
            body = await popover.inner_text()
            assert "Memory: 52 / 60 GiB-hours (87 %)" in body, body
            assert re.search(r"\n[78](\.\d)? GiB-hours left\n", body), body  # still running
            assert "can keep running about" in body, body
            assert "window" in body, body
            assert "Not in your quota: GPU." in body, body
            assert "248" not in body and "bob" not in body
            link = popover.locator("a.jp-QuotaLedger-link")
            assert await link.get_attribute("href") == "/services/quota/"
            await page.screenshot(path=str(SCREENSHOTS / "jupyterlab-popover.png"))
            await item.click()  # closes it

            # the enforcer warns about this server: a notification at the next refresh
            # (opening the popover refreshes at once instead of waiting the minute)
            message = "Your memory quota is 90 % used: this server will be stopped at 100 %."
            await record_warning(lab_hub["engine"], "dana", message)
            await item.click()
            toast = page.locator(".Toastify__toast", has_text=message)
            await toast.wait_for(timeout=15000)
            await item.click()  # the popover closed again, the toast done sliding in
            await page.wait_for_timeout(1500)
            await page.screenshot(path=str(SCREENSHOTS / "jupyterlab-warning.png"))
            assert await page.locator("text=secret-warning-of-dana").count() == 0

            # the server extension answers its owner only: bob is refused at dana's server
            bob_context, bob_page = await login(browser, base, "bob")
            r = await bob_page.request.get(f"{base}/user/dana/quota-ledger/me")
            assert r.status == 403, r.status
            assert "GiB" not in await r.text()
            await bob_context.close()
            await context.close()
        finally:
            await browser.close()

    # the server's own token: its owner's numbers, 403 for anyone else's
    token = server_token("dana")
    headers = {"Authorization": f"token {token}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=20) as client:
        me = await client.get("/services/quota/api/v1/me")
        assert me.status_code == 200 and me.json()["username"] == "dana"
        other = await client.get("/services/quota/api/v1/users/bob")
        assert other.status_code == 403, other.text
        assert "248" not in other.text
        report = await client.get("/services/quota/api/v1/report")
        assert report.status_code == 403
        hub_record = await client.get("/hub/api/users/bob")
        assert hub_record.status_code in (403, 404), hub_record.text

    # without the grant (erin's server token has the hub's default server scopes only)
    # the server extension says what to grant, and shows no numbers
    admin = {"Authorization": f"token {ADMIN_TOKEN}"}
    async with httpx.AsyncClient(base_url=base, headers=admin, timeout=30) as client:
        r = await client.post("/hub/api/users/erin/server")
        assert r.status_code in (201, 202), r.text
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            model = (await client.get("/hub/api/users/erin")).json()
            if model["servers"].get("", {}).get("ready"):
                break
            await asyncio.sleep(1)
        r = await client.get("/user/erin/quota-ledger/me")
        assert r.status_code == 403, r.text
        assert "access:services!service=quota" in r.json()["message"]
        assert "GiB" not in r.text
        r = await client.get("/user/erin/quota-ledger/config")
        assert r.json()["quota_page_url"] == "/services/quota/"
