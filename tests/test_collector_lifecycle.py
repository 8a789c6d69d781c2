"""Collector against the fake API server (real kubernetes_asyncio client) and real PostgreSQL:
every pod shape, against hand-computed segments."""

from __future__ import annotations

from datetime import timedelta

import aiohttp
import pytest
from test_collector_support import make_collector, rows, running, settled, shape, t0, wait_until

from ledger.core.accounting import Accounting
from quota_ledger_demo import simulator
from quota_ledger_demo.fake_apiserver import FakeApiServer
from quota_ledger_demo.simulated_hub import SimulatedHub

GiB = 2**30
S = timedelta(seconds=1)


@pytest.fixture
async def server():
    async with FakeApiServer(bookmark_interval_seconds=0.2) as fake:
        yield fake


async def test_lifecycles_pending_running_stopped_resized_oom(engine, server):
    T = t0()
    hub = SimulatedHub(server)
    collector = make_collector(engine, server, http_port=None)
    async with running(collector):
        # pending → running → stopped (KubeSpawner: delete, containers exit, gone)
        a = hub.start("alice", at=T, cpu="1", memory="2Gi")["metadata"]["name"]
        hub.stop(a, T + 600 * S)
        # still pending when deleted: never charged
        p = hub.spawn("pat", at=T)["metadata"]["name"]
        server.delete_pod("default", p)
        # resized in place, then OOM-killed and restarted, still running
        b = hub.start("bob", at=T, cpu="500m", memory="1Gi", gpu=1)["metadata"]["name"]
        hub.resize(b, at=T + 300 * S, memory="4Gi")
        hub.oom_kill(b, T + 400 * S)
        # completed but not deleted (a Job-like pod): closed at its containers' finish
        c = hub.start("carol", at=T, cpu="2", memory="1Gi")["metadata"]["name"]
        server.update_pod("default", c, lambda pod: simulator.succeed(pod, T + 100 * S))
        segments = await settled(engine, collector, expected_count=4)
        await wait_until(lambda: collector.metrics.oom_kills._value.get() == 1, what="oom")
        got = shape(segments)
    start = T + S  # PodScheduled is 1 s after spawn in SimulatedHub.start
    assert sorted(got) == sorted(
        [
            ("jupyter-alice", "alice", 1000, 2 * GiB, 0, start, T + 600 * S, "terminated"),
            ("jupyter-bob", "bob", 500, GiB, 1, start, T + 300 * S, "resized"),
            ("jupyter-bob", "bob", 500, 4 * GiB, 1, T + 300 * S, None, None),
            ("jupyter-carol", "carol", 2000, GiB, 0, start, T + 100 * S, "terminated"),
        ]
    )
    (oom,) = await rows(engine, "oom_kills", "id")
    assert (oom["username"], oom["container_name"], oom["killed_at"]) == (
        "bob",
        "notebook",
        T + 400 * S,
    )
    assert oom["memory_limit_bytes"] == 4 * GiB
    (beat,) = await rows(engine, "collector_heartbeats", "collector_id")
    assert beat["collector_id"] == "test" and beat["live_pods"] == 1


async def test_init_containers_overhead_and_limits_basis(engine, server):
    T = t0()
    hub = SimulatedHub(server)
    collector = make_collector(engine, server, accounting=Accounting("limits"), http_port=None)
    async with running(collector):
        name = hub.start(
            "dana", at=T, cpu="1", memory="2Gi", cpu_limit="3", memory_limit="6Gi",
            overhead={"cpu": "250m", "memory": "128Mi"},
        )["metadata"]["name"]  # fmt: skip
        server.delete_pod("default", name, grace=True, grace_period_seconds=0, at=T + 60 * S)
        segments = await settled(engine, collector, expected_count=1)
    assert shape(segments) == [
        ("jupyter-dana", "dana", 3250, 6 * GiB + 128 * 2**20, 0, T + S, T + 60 * S, "deleted")
    ]


async def test_an_edited_accounting_block_resizes_running_pods_from_then_on(engine, server):
    T = t0()
    hub = SimulatedHub(server)
    current = {"accounting": Accounting("requests")}
    collector = make_collector(engine, server, accounting=lambda: current["accounting"])
    async with running(collector):
        hub.start("erin", at=T, cpu="1", memory="2Gi", cpu_limit="2", memory_limit="8Gi")
        await settled(engine, collector, expected_count=1)
        current["accounting"] = Accounting("limits")
        await collector.check_accounting()  # what every heartbeat does
        segments = await settled(engine, collector, expected_count=2)
        beat = collector._heartbeat_row(collector.clock())
    first, second = sorted(segments, key=lambda r: r["started_at"])
    assert (first["memory_bytes"], first["end_reason"]) == (2 * GiB, "resized")
    assert (second["memory_bytes"], second["cpu_millicores"]) == (8 * GiB, 2000)
    assert second["ended_at"] is None and second["started_at"] == first["ended_at"]
    assert beat["detail"]["charge_basis"] == "limits"


async def test_malformed_pods_are_skipped_and_counted_and_ingest_continues(engine, server):
    T = t0()
    hub = SimulatedHub(server)
    bad = hub.start("mallory", at=T)
    server.update_pod(
        "default", bad["metadata"]["name"], lambda p: p["metadata"]["annotations"].clear()
    )
    ugly = hub.start("eve", at=T)
    server.update_pod(
        "default",
        ugly["metadata"]["name"],
        lambda p: p["status"]["containerStatuses"][0]["resources"]["requests"].update(
            memory="12 GB"
        ),
    )
    collector = make_collector(engine, server, http_port=0)
    async with running(collector):
        hub.start("good", at=T, cpu="1", memory="1Gi")
        segments = await settled(engine, collector, expected_count=1)
        port = collector.http_bound_port
        async with aiohttp.ClientSession() as session:
            for path, status in (("/healthz", 200), ("/readyz", 200)):
                async with session.get(f"http://127.0.0.1:{port}{path}") as response:
                    assert response.status == status
            async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                page = await response.text()
    assert [s["username"] for s in segments] == ["good"]
    assert 'quota_ledger_collector_pods_skipped_total{reason="missing_username"} 1.0' in page
    assert 'quota_ledger_collector_pods_skipped_total{reason="bad_quantity"} 1.0' in page
    assert "quota_ledger_collector_write_latency_seconds_bucket" in page


async def test_extra_workload_by_label_and_scope_isolation(engine, server):
    T = t0()
    hub = SimulatedHub(server)
    worker = hub.spawn("ignored", at=T)
    worker["metadata"].update(
        name="dask-worker-1", labels={"app": "dask", "gateway.dask.org/user": "erin"}
    )
    worker["metadata"].pop("uid", None)
    worker["metadata"]["annotations"] = {}
    server.delete_pod("default", "jupyter-ignored")
    server.create_pod(worker)
    hub.schedule("dask-worker-1", T + 5 * S)
    hub.run("dask-worker-1", T + 6 * S)
    collector = make_collector(
        engine, server, http_port=None,
        workloads=[{"name": "dask", "label_selector": "app=dask", "username_label": "gateway.dask.org/user"}],
    )  # fmt: skip
    async with running(collector):
        segments = await settled(engine, collector, expected_count=1)
    assert [(s["workload"], s["username"], s["started_at"]) for s in segments] == [
        ("dask", "erin", T + 5 * S)
    ]
    # a collector for JupyterHub only must not close the dask segment as vanished
    only_hub = make_collector(engine, server, collector_id="hub-only", http_port=None)
    assert await only_hub.run_once() == 0
    assert (await rows(engine))[0]["ended_at"] is None
