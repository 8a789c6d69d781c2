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
