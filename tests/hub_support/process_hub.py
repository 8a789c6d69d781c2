"""A real JupyterHub in its own process, for tests that write their own config (the quota
service's pages, the JupyterLab extension, web replicas): the config lines they share, a
wait for health URLs that fails fast when the hub exits, and a stop that leaves nothing
running (``quota_ledger_demo.hub.stop_hub``: single-user servers and services are in the
hub's process group)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx

from quota_ledger_demo.hub import stop_hub

# Placeholders: tmp (a directory for the hub's state), hub_port, api_port, proxy_api_port.
# Doubled braces in what callers append, as they go through str.format with these.
HUB_PREAMBLE = """
c = get_config()  # noqa
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {hub_port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {api_port}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api_port}"
c.JupyterHub.db_url = "sqlite:///{tmp}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "{tmp}/cookie_secret"
c.JupyterHub.pid_file = "{tmp}/jupyterhub.pid"
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
"""


async def wait_for(url: str, timeout_seconds: float, *procs: subprocess.Popen) -> None:
    """Until ``url`` answers 200; raises at once when one of ``procs`` has exited."""
    deadline = time.monotonic() + timeout_seconds
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            for proc in procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"{proc.args[:3]} exited with {proc.returncode}")
            try:
                if (await client.get(url)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.25)
    raise TimeoutError(url)


def start(cmd: list[str], directory: Path, log_name: str, env: dict | None = None):
    """``cmd`` in its own process group, output to ``directory/log_name``."""
    log = open(directory / log_name, "wb")  # noqa: SIM115 - closed by stop_hub()
    proc = subprocess.Popen(
        cmd, cwd=directory, env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    proc.log_file = log  # closed by stop_hub
    return proc


def hub_env() -> dict[str, str]:
    """This venv first on PATH: the hub finds its services' and spawners' commands there."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}


@asynccontextmanager
async def hub_process(
    config: Path, health: Iterable[tuple[str, float]], *, stop_seconds: float = 20
) -> AsyncIterator[subprocess.Popen]:
    """``jupyterhub -f config`` (log: hub.log beside it), answering every (url, timeout)."""
    proc = start([sys.executable, "-m", "jupyterhub", "-f", str(config)], config.parent,
                 "hub.log", hub_env())  # fmt: skip
    try:
        for url, timeout_seconds in health:
            await wait_for(url, timeout_seconds, proc)
        yield proc
    finally:
        stop_hub(proc, stop_seconds)
