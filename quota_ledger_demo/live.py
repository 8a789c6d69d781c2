"""The live part of ``quota-ledger demo``: a fake cluster, the real collector, usage accruing.

In one process: the protocol-faithful fake Kubernetes API server, simulated users starting,
resizing, OOM-killing and stopping servers in real time, and the real collector watching them
through the real kubernetes_asyncio client into the demo's ledger. When JupyterHub is
installed, a real hub runs beside them (quota_ledger_demo.hub), so a person can log in, spawn, see
the quota progress line, hit the quota and see the denial page, and open the quota page.

Its two queries (open collector segments with their 30-day usage) are the demo's own table,
so they live here rather than in ledger.store.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from datetime import datetime

from sqlalchemy import text

from collector.daemon import Collector
from collector.settings import Settings
from quota_ledger_demo.fake_apiserver import FakeApiServer
from quota_ledger_demo.simulated_hub import run_random_lifecycles

NAMESPACE = "jhub"
LIVE_USERS = ("ada", "ben", "chen", "kai", "mo", "tess", "yuki", "cleo")
REFRESH_SECONDS = 10.0

LIVE_USAGE_SQL = text(
    """
    SELECT s.username, s.servername, s.pod_name, s.memory_bytes, s.cpu_millicores, s.gpu_count,
           s.started_at, u.memory_gib_hours
    FROM segments s
    JOIN quota_usage(now(), interval '30 days') u USING (username)
    WHERE s.ended_at IS NULL AND s.source = 'collector'
    ORDER BY s.username, s.servername
    """
)


def _api_client_factory(url: str):
    def factory():
        from kubernetes_asyncio import client

        configuration = client.Configuration()
        configuration.host = url
        return client.ApiClient(configuration)

    return factory


async def _print_live(engine, out, now: datetime) -> None:
    from rich.table import Table
    from rich.text import Text

    async with engine.connect() as conn:
        rows = (await conn.execute(LIVE_USAGE_SQL)).all()
        seen = await conn.scalar(text("SELECT count(*) FROM segments WHERE source = 'collector'"))
    table = Table(
        "user", "server", "pod", "size", "running for", "30-day memory GiB-hours",
        title=f"live at {now:%H:%M:%S} UTC — {seen} pod segments recorded by the collector",
    )  # fmt: skip
    for user, server, pod, memory, cpu, gpu, started, used in rows:
        size = f"{cpu / 1000:g} CPU, {memory / 2**30:g} GiB" + (f", {gpu} GPU" if gpu else "")
        minutes = max(0, int((now - started).total_seconds() // 60))
        table.add_row(Text(user), Text(server or "-"), Text(pod), size, f"{minutes} min",
                      f"{used:.3f}")  # fmt: skip
    out.print(table)


HUB_PORT = 8000
QUOTA_PAGE_PORT = 10101


def stop_hub(process) -> None:
    from quota_ledger_demo.hub import stop_hub as stop

    stop(process)


async def _start_hub(server, url: str, policy, home, out):
    """A real JupyterHub whose spawner makes pods in the fake cluster, with the quota hook,
    the enforcer and the quota page. None when JupyterHub is not installed or cannot start."""
    try:
        from quota_ledger_demo import hub as hub_demo
    except ImportError:
        out.print("(JupyterHub is not installed: the live demo runs without a hub)")
        return None
    control_url, runner = await hub_demo.start_pod_control(server, namespace=NAMESPACE)
    extra = (
        "from quota_ledger_demo.web import apply\n"
        f"apply(c, {url!r}, {policy.source!r}, port={QUOTA_PAGE_PORT}, admin_users=['admin'])\n"
        "c.JupyterHub.load_groups.setdefault('regular', {'users': []})\n"
    )
    config = hub_demo.write_hub_config(
        home / "hub", db_url=url, policy_path=policy.source, fake_api_url=control_url,
        port=HUB_PORT, run_enforcer=True, extra_config=extra,
        users={"alice": ["regular"], "bob": ["power"], "carol": ["gpu-dev"], "admin": ["dev"]},
    )  # fmt: skip
    try:
        process = await asyncio.to_thread(hub_demo.start_hub, config)
    except Exception as exc:  # noqa: BLE001 - the cluster and collector demo go on
        out.print(f"(JupyterHub did not start: {exc})", markup=False)
        await runner.cleanup()
        return None
    out.print(
        f"JupyterHub at http://127.0.0.1:{HUB_PORT}/ — log in as alice (regular), bob (power), "
        "carol (gpu-dev) or admin, password quota-demo. Spawn a server, watch the quota line, "
        f"spawn until the quota is spent; the quota page is at "
        f"http://127.0.0.1:{HUB_PORT}/services/quota/ (admins see everyone).",
        markup=False,
    )
    return process, runner


async def run_live(engine, url: str, out, policy, home, live_seconds: float) -> None:
    """Run the live demo for ``live_seconds`` (inf: until Ctrl-C)."""
    from ledger.core.times import utcnow

    out.rule("Live: a fake cluster, the real collector, usage accruing")
    server = FakeApiServer(bookmark_interval_seconds=5.0)
    api_url = await server.start(host="127.0.0.1", port=0)
    out.print(f"fake Kubernetes API server at {api_url} (namespace {NAMESPACE})")
    settings = Settings(heartbeat_interval=5, relist_interval=60, namespaces=[NAMESPACE])
    collector = Collector(
        settings, engine, _api_client_factory(api_url), collector_id="demo",
        accounting=policy.accounting,  # the policy the demo hub checks spawns with
    )  # fmt: skip
    stop = asyncio.Event()
    tasks = [asyncio.create_task(collector.run(stop), name="collector")]
    tasks.append(
        asyncio.create_task(
            run_random_lifecycles(
                server, LIVE_USERS, seed=11, namespace=NAMESPACE, start_at=utcnow(),
                duration_seconds=None, step_seconds=5.0, speed=1.0, start_probability=0.25,
                stop_probability=0.03, resize_probability=0.02, oom_probability=0.01,
            ),
            name="simulated users",
        )
    )  # fmt: skip
    hub = await _start_hub(server, url, policy, home, out)
    deadline = asyncio.get_running_loop().time() + live_seconds
    out.print("Ctrl-C to stop." if math.isinf(live_seconds) else f"running for {live_seconds:g} s")
    try:
        while asyncio.get_running_loop().time() < deadline:
            remaining = deadline - asyncio.get_running_loop().time()
            await asyncio.sleep(min(REFRESH_SECONDS, max(0.0, remaining)))
            await _print_live(engine, out, utcnow())
    except (asyncio.CancelledError, KeyboardInterrupt):
        pass
    finally:
        stop.set()
        if hub is not None:
            process, runner = hub
            with contextlib.suppress(Exception):
                await asyncio.to_thread(stop_hub, process)
                await runner.cleanup()
        tasks[1].cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.gather(*tasks)
        await server.stop()
