"""``quota-ledger demo --docker``'s live part on the real engine: real containers come and go,
the collector charges them, and every demo container is removed at the end."""

from __future__ import annotations

import io

from docker_support import docker_client
from rich.console import Console
from test_collector_support import rows

from quota_ledger_demo import docker_live


async def test_live_docker_demo_charges_and_cleans_up(engine, monkeypatch):
    client = docker_client()
    monkeypatch.setattr(docker_live, "STEP_SECONDS", 0.5)
    monkeypatch.setattr(docker_live, "REFRESH_SECONDS", 4.0)
    out = Console(file=io.StringIO(), width=120)
    assert await docker_live.run_live_docker(engine, out, 8.0, seed=3) == 0
    segments = [s for s in await rows(engine) if s["source"] == "docker"]
    assert segments, out.file.getvalue()
    assert {s["username"] for s in segments} <= set(docker_live.LIVE_USERS)
    assert all(s["ended_at"] is not None for s in segments)  # removed at the end: all closed
    assert "latest container segments" in out.file.getvalue()
    left = client.containers.list(all=True, filters={"label": docker_live.DEMO_LABEL})
    assert not [c for c in left if c.name.startswith("jupyter-demo-")], left
