"""``quota-ledger serve`` as a process: starts, redirects to the hub's login, stops at once
on SIGTERM (the hub would otherwise wait for it at shutdown), refuses to start without
the hub's environment."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hub_env(**extra) -> dict:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("JUPYTERHUB_", "QUOTA_LEDGER_"))
    }
    env.update(
        JUPYTERHUB_API_TOKEN="not-a-real-token",
        JUPYTERHUB_CLIENT_ID="service-quota",
        JUPYTERHUB_SERVICE_PREFIX="/services/quota/",
        JUPYTERHUB_API_URL="http://127.0.0.1:9/hub/api",
        QUOTA_LEDGER_CONFIG=str(ROOT / "examples" / "policy.yaml"),
    )
    env.update(extra)
    return env


def test_serve_redirects_to_hub_login_and_stops_promptly_on_sigterm(fresh_db_url, tmp_path):
    port = free_port()
    env = hub_env(
        JUPYTERHUB_SERVICE_URL=f"http://127.0.0.1:{port}", QUOTA_LEDGER_DB_URL=fresh_db_url
    )
    out = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "ledger", "serve", "--log-level", "info"],
        env=env, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                if r.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "serve did not come up"
            time.sleep(0.1)
        r = httpx.get(f"http://127.0.0.1:{port}/services/quota/", timeout=5)
        assert r.status_code == 302
        assert "/hub/api/oauth2/authorize" in r.headers["location"]
        assert "client_id=service-quota" in r.headers["location"]
        # a body larger than any form or JSON it takes is refused before it is read whole
        # (tornado's default would buffer 100 MiB from anyone, before authentication)
        # (tornado closes such a connection unread; before, this was read and answered 403)
        try:
            big = httpx.post(f"http://127.0.0.1:{port}/services/quota/api/v1/requests",
                             content=b"x" * (2 * 1024 * 1024), timeout=10)  # fmt: skip
        except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError):
            pass
        else:
            assert big.status_code == 413, big.status_code
        # exit status 0, not -SIGTERM: its own handler stopped it (closing open connections
        # rather than waiting for them); the log line below says the same
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        out.close()
    log = (tmp_path / "serve.log").read_text()
    assert "quota web service stopping on SIGTERM" in log
    assert "quota web service stopped" in log
    assert "postgres@" not in log and "not-a-real-token" not in log


def test_serve_refuses_to_start_outside_a_hub(fresh_db_url):
    env = hub_env(QUOTA_LEDGER_DB_URL=fresh_db_url)
    del env["JUPYTERHUB_API_TOKEN"]
    r = subprocess.run(
        [sys.executable, "-m", "ledger", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert "JUPYTERHUB_API_TOKEN" in r.stderr and "docs/web.md" in r.stderr


def test_demo_config_applies_to_a_hub_config():
    from traitlets.config import Config

    from quota_ledger_demo.web import apply

    c = Config()
    c.JupyterHub.services = [{"name": "other"}]
    cfg = apply(c, "postgresql://u:pw@db/x", "/etc/policy.yaml", 10101, admin_users=["root"])
    assert [s["name"] for s in c.JupyterHub.services] == ["other", "quota"]
    service = cfg["service"]
    assert "pw" not in " ".join(service["command"])  # the URL travels in the environment
    assert service["environment"]["QUOTA_LEDGER_DB_URL"] == "postgresql://u:pw@db/x"
    assert {r["name"] for r in c.JupyterHub.load_roles} == {"user", "quota-admin"}
    assert "custom:quota:admin" in c.JupyterHub.custom_scopes


async def _get_json(url: str):
    async with httpx.AsyncClient(timeout=2) as c:
        try:
            r = await c.get(url)
        except httpx.HTTPError:
            return None, None
    try:
        return r.status_code, r.json()
    except ValueError:
        return r.status_code, r.text


async def _until(check, what: str, timeout_seconds: float = 60.0):
    import asyncio

    deadline = time.monotonic() + timeout_seconds
    while True:
        result = await check()
        if result:
            return result
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.25)


@pytest.mark.parametrize("command", ["serve", "enforce"])
async def test_starts_with_the_database_down_and_recovers_by_itself(fresh_db_url, tmp_path,
                                                                    command):  # fmt: skip
    from hub_support.db_switch import DatabaseSwitch

    switch = DatabaseSwitch(fresh_db_url)  # down
    port = free_port()
    env = hub_env(JUPYTERHUB_SERVICE_URL=f"http://127.0.0.1:{port}", QUOTA_LEDGER_DB_URL=switch.url)
    args = [sys.executable, "-m", "ledger", command, "--log-level", "info"]
    if command == "enforce":
        args += ["--hub-url", "http://127.0.0.1:9/hub/api", "--health-port", str(port)]
    out = open(tmp_path / "out.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
    health, ready = f"http://127.0.0.1:{port}/healthz", f"http://127.0.0.1:{port}/readyz"
    try:

        async def answers():
            assert proc.poll() is None, (tmp_path / "out.log").read_text()
            status, body = await _get_json(health)
            return body if status == 200 else None

        body = await _until(answers, f"{command} answers /healthz with the database down")
        assert body["status"] == "ledger unavailable" and body["attempts"] >= 1, body
        assert (await _get_json(ready))[0] == 503
        await switch.up()

        async def recovered():
            assert proc.poll() is None, (tmp_path / "out.log").read_text()
            return (await _get_json(health))[1] == {"status": "ok"}

        await _until(recovered, f"{command} sees the database again without a restart")
        assert (await _get_json(ready))[0] == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        out.close()
        await switch.down()
    log = (tmp_path / "out.log").read_text()
    assert "ledger unavailable" in log and "retrying in" in log
    assert "Traceback" not in log
