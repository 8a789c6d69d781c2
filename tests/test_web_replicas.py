"""`web.replicas: 2`: a login made through one replica is accepted by the other.

A real JupyterHub routes /services/quota/ to replica A (an external service, as the chart
deploys it); a client logs in through the hub's login page and OAuth. Replica B — another
`quota-ledger serve` process, started with the environment the chart renders for the web
Deployment and the same cookie secret — accepts that cookie; a process with another secret
does not (it sends the browser back through OAuth).
"""

from __future__ import annotations

import os
import re
import secrets
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from hub_support.process_hub import HUB_PREAMBLE, start, wait_for

from quota_ledger_demo.hub import free_port, stop_hub

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "/services/quota/"

HUB_CONFIG = (
    HUB_PREAMBLE
    + """
c.JupyterHub.services = [{{
    "name": "quota", "url": "http://127.0.0.1:{port_a}", "api_token": {token!r},
    "oauth_no_confirm": True, "display": True,
}}]
c.JupyterHub.load_roles = [{{"name": "user", "scopes": ["self", "access:services!service=quota"]}}]
"""
)


def rendered_web_env(api_port: int) -> dict[str, str]:
    """The web container's plain environment as the chart renders it (secrets added below)."""
    import helm_python as helm

    values = {
        "image": {"repository": "r"},
        "postgresql": {"auth": {"password": "p"}},
        "web": {
            "replicas": 2,
            "hubApiUrl": f"http://127.0.0.1:{api_port}/hub/api",
            "cookieSecret": {"value": "00" * 32},
        },
    }
    with helm.Chart.load(ROOT / "charts" / "quota-ledger") as chart:
        out = chart.render(values, name="quota-ledger", namespace="jhub", is_install=True)
    docs = [d for p, t in out.items() if p.endswith(".yaml") for d in yaml.safe_load_all(t) if d]
    web = next(
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-web")
    )
    assert web["spec"]["replicas"] == 2
    (container,) = web["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert "QUOTA_LEDGER_COOKIE_SECRET" in env  # from the Secret; every replica the same
    return {k: v for k, v in env.items() if v is not None}


async def test_two_replicas_with_the_same_secret_share_a_login(fresh_db_url, tmp_path):
    ports = {k: free_port() for k in ("hub_port", "api_port", "proxy_api_port")}
    port_a, port_b, port_c = free_port(), free_port(), free_port()
    token = secrets.token_hex(16)
    config = tmp_path / "jupyterhub_config.py"
    config.write_text(HUB_CONFIG.format(tmp=tmp_path, port_a=port_a, token=token, **ports))
    policy = tmp_path / "policy.yaml"
    policy.write_text("window: 30d\ngroups:\n  regular: {memory: 60 GiB-hours}\n")
    bin_dir = Path(sys.executable).parent
    path = f"{bin_dir}:{os.environ['PATH']}"

    shared = secrets.token_hex(32)
    base_env = {
        **os.environ,
        "PATH": path,
        **rendered_web_env(ports["api_port"]),
        "JUPYTERHUB_API_TOKEN": token,
        "QUOTA_LEDGER_DB_URL": fresh_db_url,
        "QUOTA_LEDGER_CONFIG": str(policy),
    }
    procs = [start([sys.executable, "-m", "jupyterhub", "-f", str(config)], tmp_path, "hub.log",
                   {**base_env})]  # fmt: skip
    for name, port, secret in (("a", port_a, shared), ("b", port_b, shared),
                               ("c", port_c, secrets.token_hex(32))):  # fmt: skip
        env = {**base_env, "QUOTA_LEDGER_COOKIE_SECRET": secret}
        cmd = [str(bin_dir / "quota-ledger"), "serve", "--port", str(port), "--ip", "127.0.0.1"]
        procs.append(start(cmd, tmp_path, f"{name}.log", env))
    hub = f"http://127.0.0.1:{ports['hub_port']}"
    try:
        await wait_for(f"{hub}/hub/health", 45, *procs)
        for port in (port_a, port_b, port_c):
            await wait_for(f"http://127.0.0.1:{port}{PREFIX}healthz", 45, *procs)
        async with httpx.AsyncClient(follow_redirects=True, timeout=20) as client:
            # through the proxy to replica A: the hub's login page, then OAuth back to A
            page = await client.get(f"{hub}{PREFIX}")
            assert "/hub/login" in str(page.url), page.url
            xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text)
            form = {"username": "alice", "password": "any"}
            if xsrf:
                form["_xsrf"] = xsrf.group(1)
            page = await client.post(str(page.url), data=form)
            assert page.status_code == 200 and str(page.url).startswith(f"{hub}{PREFIX}"), page.url
            assert "alice" in page.text
            # replica B: the same cookie is a valid login
            other = await client.get(f"http://127.0.0.1:{port_b}{PREFIX}", follow_redirects=False)
            assert other.status_code == 200, (other.status_code, other.headers.get("location"))
            assert "alice" in other.text
            # a process with another secret does not accept it: back through OAuth
            stranger = await client.get(
                f"http://127.0.0.1:{port_c}{PREFIX}", follow_redirects=False
            )
            assert stranger.status_code == 302
            assert "/hub/api/oauth2/authorize" in stranger.headers["location"]
    finally:
        for proc in procs:
            stop_hub(proc)
