"""End to end on the real Docker engine: a real JupyterHub with DockerSpawner 14 configured as
seed 002 (``extra_host_config`` mem_limit '1g', cpu_period 100000 / cpu_quota 250000), real
single-user containers, the collector's Docker source, the quota hook refusing a spawn over
quota, and ``quota-ledger enforce`` stopping a container that ran out.

One hub for the story. Host networking (no bridge traffic is needed on the test machine), so
the spawner subclass only says where the server listens; everything else is DockerSpawner's.
"""

from __future__ import annotations

import asyncio
import secrets
from datetime import timedelta

import httpx
import pytest
from docker_support import TEST_LABEL, Containers, docker_client, singleuser_image
from hub_support.ledger_data import GIB, insert, segment, write_policy
from sqlalchemy import text
from test_collector_support import FAST, rows, running, wait_until
from test_hub_e2e import enforce

from collector.containers import parse_time
from collector.daemon import Collector
from collector.settings import parse_settings
from collector.sources.docker import DockerSource
from ledger.core.times import iso, utcnow
from quota_ledger_demo.hub import free_port, start_hub, stop_hub, write_hub_config

pytestmark = pytest.mark.e2e

SEED_002 = "{'mem_limit': '1g', 'cpu_period': 100000, 'cpu_quota': 250000}"


@pytest.fixture
async def docker_hub(tmp_path, fresh_db_url):
    client = await asyncio.to_thread(docker_client)
    image = await asyncio.to_thread(singleuser_image, client)
    containers = Containers(client)
    port, admin_token = free_port(), secrets.token_hex(16)
    enforcer_token = secrets.token_hex(16)
    policy = write_policy(tmp_path / "policy.yaml")
    extra = f"""
from dockerspawner import DockerSpawner

class HostNetworkDockerSpawner(DockerSpawner):
    # with network_mode host, DockerSpawner's docs say to give the address yourself
    async def get_ip_and_port(self):
        return "127.0.0.1", self.port

c.JupyterHub.spawner_class = HostNetworkDockerSpawner
c.JupyterHub.hub_connect_ip = "127.0.0.1"
c.DockerSpawner.image = {image!r}
c.DockerSpawner.network_name = "host"
c.DockerSpawner.use_internal_ip = True  # no port_bindings: host mode forbids them
c.DockerSpawner.port = {free_port()}
c.DockerSpawner.remove = True
c.DockerSpawner.name_template = "ql-{containers.run_id}-{{username}}"
c.DockerSpawner.cmd = ["jupyterhub-singleuser"]
c.DockerSpawner.args = ["--allow-root"]
c.DockerSpawner.notebook_dir = "/tmp"
c.DockerSpawner.environment = {{}}
c.DockerSpawner.extra_create_kwargs = {{"labels": {{{TEST_LABEL!r}: {containers.run_id!r}}}}}
c.DockerSpawner.extra_host_config = {SEED_002}
"""
    config = write_hub_config(
        tmp_path / "hub", db_url=fresh_db_url, policy_path=policy, fake_api_url=None,
        port=port, users={"alice": ["regular"], "bob": ["power"]}, admin_token=admin_token,
        enforcer_token=enforcer_token, extra_config=extra,
    )  # fmt: skip
    process = await asyncio.to_thread(start_hub, config)
    try:
        yield {
            "api": f"http://127.0.0.1:{port}/hub/api",
            "admin": {"Authorization": f"token {admin_token}"},
            "enforcer_token": enforcer_token,
            "policy": policy,
            "db_url": fresh_db_url,
            "containers": containers,
            "log": config.parent / "jupyterhub.log",
        }
    finally:
        await asyncio.to_thread(stop_hub, process)
        await asyncio.to_thread(containers.remove_all)


async def test_seed_002_refused_charged_and_stopped(docker_hub, engine):
    hub, containers = docker_hub, docker_hub["containers"]
    settings = {**FAST, "source": "docker", "docker_label_selector": containers.selector}
    collector = Collector(
        parse_settings(settings), engine, source=DockerSource("unix:///var/run/docker.sock")
    )
    now = utcnow()
    await insert(engine, [segment("alice", now - timedelta(days=3), 16, memory_gib=4)])
    async with running(collector), httpx.AsyncClient(headers=hub["admin"], timeout=60) as http:
        # alice is over her 60 GiB-hours: refused, and no container is made
        r = await http.post(f"{hub['api']}/users/alice/server")
        assert r.status_code == 403, r.text
        assert "60 GiB-hours" in r.json()["message"]

        # bob starts a real container, labelled with his identity beside the operator's label
        r = await http.post(f"{hub['api']}/users/bob/server")
        assert r.status_code in (201, 202), r.text

        async def bob_ready():
            model = (await http.get(f"{hub['api']}/users/bob")).json()
            return (model["servers"].get("") or {}).get("ready")

        await wait_until(bob_ready, timeout=90, what="bob's container ready")
        (container,) = await containers.call(
            containers.client.containers.list,
            filters={"label": f"{TEST_LABEL}={containers.run_id}"},
        )
        inspected = await containers.inspect(container)
        labels = inspected["Config"]["Labels"]
        assert labels["hub.jupyter.org/username"] == "bob"
        assert labels["hub.jupyter.org/servername"] == ""
        assert labels[TEST_LABEL] == containers.run_id  # the operator's label is kept
        host = inspected["HostConfig"]
        assert (host["Memory"], host["CpuPeriod"], host["CpuQuota"]) == (GIB, 100_000, 250_000)

        async def bob_segment():
            return [s for s in await rows(engine) if s["username"] == "bob"]

        (seg,) = await wait_until(bob_segment, what="bob's segment")
        assert (seg["cpu_millicores"], seg["memory_bytes"], seg["source"]) == (2500, GIB, "docker")
        assert seg["started_at"] == parse_time(inspected["State"]["StartedAt"])
        async with engine.connect() as conn:
            (request,) = (
                await conn.execute(
                    text(
                        "SELECT request FROM decisions WHERE username = 'bob' AND outcome = 'allowed'"
                    )
                )
            ).scalars()
        assert request == {"cpu": 2500, "memory": GIB, "gpu": 0}  # what Docker enforces

        # bob runs out (an older 250 GiB-hours run): warned, then his container is stopped
        await insert(engine, [segment("bob", now - timedelta(days=5), 62.5, memory_gib=4)])
        first = await asyncio.to_thread(enforce, hub)
        assert first.returncode == 0, first.stderr
        later = iso(utcnow() + timedelta(minutes=11))
        second = await asyncio.to_thread(enforce, hub, "--at", later)
        assert second.returncode == 0, second.stderr

        async def closed():
            found = [s for s in await bob_segment() if s["pod_uid"] == seg["pod_uid"]]
            return found[0] if found and found[0]["ended_at"] else None

        ended = await wait_until(closed, timeout=60, what="bob's container stopped and charged")
        assert ended["end_reason"] in ("terminated", "deleted")
        assert ended["ended_at"] > ended["started_at"]
