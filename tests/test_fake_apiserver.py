"""The fake API server and the simulator, exercised with the real kubernetes_asyncio client.

What the client does at the edges (the collector must handle each):
* stream dropped mid-way (TCP reset, no final chunk): `Watch.stream` raises
  `aiohttp.ClientPayloadError` — with or without `timeout_seconds`; it does not reconnect.
* server ends the stream cleanly (timeoutSeconds): iteration stops normally when the client
  passed `timeout_seconds`.
* 410 Expired: `ApiException(status=410)` (immediately when `timeout_seconds` is passed).
* connection reset while "unreachable": `aiohttp.ClientError`; 503 mode: `ApiException(503)`.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

from quota_ledger_demo import simulator
from quota_ledger_demo.fake_apiserver import FakeApiServer, write_kubeconfig
from quota_ledger_demo.fake_store import SelectorError, parse_label_selector
from quota_ledger_demo.simulated_hub import SimulatedHub, run_random_lifecycles

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
REQUEST_TIMEOUT = 5  # never hang a test on a broken fake


def bare_pod(name: str, namespace: str = "ns", **labels: str) -> dict:
    return {
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        "status": {"phase": "Pending"},
    }


@pytest.fixture
async def server():
    async with FakeApiServer(bookmark_interval_seconds=0.2) as fake:
        yield fake


@pytest.fixture
async def api(server):
    api_client = client.ApiClient(client.Configuration(host=server.url))
    try:
        yield client.CoreV1Api(api_client)
    finally:
        await api_client.close()


async def collect(func, *args, stop_after: int | None = None, **kwargs) -> list[dict]:
    """Run a real Watch to its end (or `stop_after` events), always closing it."""
    kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT)
    events: list[dict] = []
    stream = watch.Watch()
    try:
        async for event in stream.stream(func, *args, **kwargs):
            events.append(event)
            if stop_after is not None and len(events) >= stop_after:
                break
    finally:
        await stream.close()
    return events


def names(events: list[dict]) -> list[tuple[str, str]]:
    return [(e["type"], e["raw_object"]["metadata"].get("name", "")) for e in events]


async def test_list_returns_typed_pods_with_resource_versions(server, api):
    server.create_pod(bare_pod("a"))
    server.create_pod(bare_pod("b", namespace="other"))
    everything = await api.list_pod_for_all_namespaces()
    assert isinstance(everything.items[0], client.V1Pod)
    assert everything.metadata.resource_version == server.resource_version
    assert [p.metadata.name for p in everything.items] == ["a", "b"]
    assert all(p.metadata.uid and p.metadata.creation_timestamp for p in everything.items)
    assert int(everything.items[0].metadata.resource_version) < int(server.resource_version)
    in_ns = await api.list_namespaced_pod("ns")
    assert [p.metadata.name for p in in_ns.items] == ["a"]
    assert (await api.read_namespaced_pod("a", "ns")).metadata.name == "a"
    with pytest.raises(ApiException) as missing:
        await api.read_namespaced_pod("nope", "ns")
    assert missing.value.status == 404
    assert server.list_requests == 2 and server.get_requests == 2


async def test_watch_from_list_version_sees_changes_in_order(server, api):
    server.create_pod(bare_pod("old"))
    listed = await api.list_namespaced_pod("ns")
    server.create_pod(bare_pod("a"))
    server.update_pod("ns", "a", lambda pod: pod["status"].update(phase="Running"))
    server.delete_pod("ns", "a", grace=True, at=T0)
    server.delete_pod("ns", "old")
    events = await collect(
        api.list_namespaced_pod,
        "ns",
        resource_version=listed.metadata.resource_version,
        timeout_seconds=1,
        stop_after=5,
    )
    assert names(events) == [
        ("ADDED", "a"),
        ("MODIFIED", "a"),
        ("MODIFIED", "a"),
        ("DELETED", "a"),
        ("DELETED", "old"),
    ]
    versions = [int(e["object"].metadata.resource_version) for e in events]
    assert versions == sorted(versions) and len(set(versions)) == 5
    assert events[1]["object"].status.phase == "Running"
    # Graceful delete: deletionTimestamp = request time + grace period (30 s by default).
    assert events[2]["object"].metadata.deletion_timestamp == T0 + timedelta(seconds=30)
    assert server.watch_requests == 1


async def test_watch_without_version_starts_with_synthetic_added(server, api):
    server.create_pod(bare_pod("a"))
    server.create_pod(bare_pod("b"))

    async def later() -> None:
        await asyncio.sleep(0.1)
        server.create_pod(bare_pod("c"))

    task = asyncio.create_task(later())
    events = await collect(api.list_namespaced_pod, "ns", timeout_seconds=2, stop_after=3)
    await task
    assert names(events) == [("ADDED", "a"), ("ADDED", "b"), ("ADDED", "c")]


async def test_bookmarks_carry_the_current_version_as_raw_dict(server, api):
    server.create_pod(bare_pod("a"))
    events = await collect(
        api.list_pod_for_all_namespaces,
        resource_version=server.resource_version,
        timeout_seconds=1,
        allow_watch_bookmarks=True,
        stop_after=2,
    )
    assert [e["type"] for e in events] == ["BOOKMARK", "BOOKMARK"]
    assert isinstance(events[0]["object"], dict)
    assert events[0]["object"]["metadata"]["resourceVersion"] == server.resource_version


async def test_compaction_gives_410_from_the_client(server, api):
    listed = await api.list_pod_for_all_namespaces()
    server.create_pod(bare_pod("a"))
    server.compact()
    with pytest.raises(ApiException) as expired:
        await collect(
            api.list_pod_for_all_namespaces,
            resource_version=listed.metadata.resource_version,
            timeout_seconds=2,
        )
    assert expired.value.status == 410
    assert "too old resource version" in expired.value.reason
    # The current version still works after compaction.
    assert (
        await collect(
            api.list_pod_for_all_namespaces,
            resource_version=server.resource_version,
            timeout_seconds=0.3,
        )
        == []
    )


async def test_410_wire_format_is_an_error_event_on_200(server):
    server.create_pod(bare_pod("a"))
    server.compact()
    url = f"{server.url}/api/v1/pods?watch=True&resourceVersion=5&timeoutSeconds=5"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        lines = (await response.text()).splitlines()
    assert [json.loads(line) for line in lines] == [
        {
            "type": "ERROR",
            "object": {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": f"too old resource version: 5 ({server.resource_version})",
                "reason": "Expired",
                "code": 410,
            },
        }
    ]


async def test_bounded_history_expires_old_versions(api):
    async with FakeApiServer(history_limit=2) as small:
        start = small.resource_version
        for name in ("a", "b", "c"):
            small.create_pod(bare_pod(name))
        small_api_client = client.ApiClient(client.Configuration(host=small.url))
        small_api = client.CoreV1Api(small_api_client)
        try:
            with pytest.raises(ApiException) as expired:
                await collect(
                    small_api.list_pod_for_all_namespaces, resource_version=start, timeout_seconds=1
                )
            assert expired.value.status == 410
            kept = await collect(
                small_api.list_pod_for_all_namespaces,
                resource_version=str(int(start) + 1),
                timeout_seconds=1,
                stop_after=2,
            )
            assert names(kept) == [("ADDED", "b"), ("ADDED", "c")]
        finally:
            await small_api_client.close()


async def test_dropped_streams_raise_payload_error_in_the_client(server, api):
    server.create_pod(bare_pod("a"))
    seen: list[str] = []

    async def drop_soon() -> None:
        while server.open_watch_streams == 0:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        server.drop_streams()

    task = asyncio.create_task(drop_soon())
    stream = watch.Watch()
    with pytest.raises(aiohttp.ClientPayloadError):
        # No timeout_seconds: even the "watch forever" mode does not survive a broken stream.
        async for event in stream.stream(
            api.list_pod_for_all_namespaces, _request_timeout=REQUEST_TIMEOUT
        ):
            seen.append(event["type"])
    await stream.close()
    await task
    assert seen == ["ADDED"]


async def test_drop_after_events_cuts_each_stream(server, api):
    for name in ("a", "b", "c"):
        server.create_pod(bare_pod(name))
    server.drop_after_events(2)
    seen: list[dict] = []
    stream = watch.Watch()
    with pytest.raises(aiohttp.ClientPayloadError):
        async for event in stream.stream(
            api.list_pod_for_all_namespaces, timeout_seconds=5, _request_timeout=REQUEST_TIMEOUT
        ):
            seen.append(event)
    await stream.close()
    assert names(seen) == [("ADDED", "a"), ("ADDED", "b")]
    # Resuming from the last delivered version gets the rest.
    server.drop_after_events(None)
    rest = await collect(
        api.list_pod_for_all_namespaces,
        resource_version=seen[-1]["object"].metadata.resource_version,
        timeout_seconds=1,
        stop_after=1,
    )
    assert names(rest) == [("ADDED", "c")]


async def test_timeout_seconds_ends_the_stream_cleanly(server, api):
    watching = asyncio.create_task(
        collect(
            api.list_pod_for_all_namespaces,
            resource_version=server.resource_version,
            timeout_seconds=1,
        )
    )
    # the server holds the stream open (not an immediate end) …
    while server.open_watch_streams == 0:
        assert not watching.done(), watching.result()
        await asyncio.sleep(0.01)
    # … until its timeoutSeconds, then ends it cleanly: iteration stops with no error
    assert await watching == []
    assert server.open_watch_streams == 0


async def test_pagination_is_consistent_across_pages(server, api):
    for index in range(5):
        server.create_pod(bare_pod(f"p{index}"))
    first = await api.list_pod_for_all_namespaces(limit=2)
    assert [p.metadata.name for p in first.items] == ["p0", "p1"]
    assert first.metadata.remaining_item_count == 3
    server.delete_pod("ns", "p3")  # after the first page: must not show in later pages
    server.create_pod(bare_pod("p9"))
    pages = [first]
    while pages[-1].metadata._continue:
        pages.append(
            await api.list_pod_for_all_namespaces(limit=2, _continue=pages[-1].metadata._continue)
        )
    assert [p.metadata.name for page in pages for p in page.items] == [f"p{i}" for i in range(5)]
    assert {page.metadata.resource_version for page in pages} == {first.metadata.resource_version}
    server.compact()
    with pytest.raises(ApiException) as expired:
        await api.list_pod_for_all_namespaces(limit=2, _continue=first.metadata._continue)
    assert expired.value.status == 410


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("component=singleuser-server", ["a", "b"]),
        ("component==singleuser-server,tier=gpu", ["b"]),
        ("tier!=gpu", ["a", "c"]),
        ("tier", ["b", "c"]),
        ("!tier", ["a"]),
        ("tier in (gpu, cpu)", ["b", "c"]),
        ("tier notin (gpu),component", ["a"]),
        ("", ["a", "b", "c"]),
    ],
)
async def test_label_selectors(server, api, selector, expected):
    server.create_pod(bare_pod("a", component="singleuser-server"))
    server.create_pod(bare_pod("b", component="singleuser-server", tier="gpu"))
    server.create_pod(bare_pod("c", tier="cpu"))
    listed = await api.list_pod_for_all_namespaces(label_selector=selector)
    assert [p.metadata.name for p in listed.items] == expected


async def test_field_selector_and_bad_selectors(server, api):
    server.create_pod(bare_pod("a"))
    server.create_pod(bare_pod("b"))
    server.update_pod("ns", "b", lambda pod: pod["status"].update(phase="Running"))
    running = await api.list_pod_for_all_namespaces(field_selector="status.phase=Running")
    assert [p.metadata.name for p in running.items] == ["b"]
    named = await api.list_pod_for_all_namespaces(field_selector="metadata.name!=b")
    assert [p.metadata.name for p in named.items] == ["a"]
    with pytest.raises(ApiException) as bad:
        await api.list_pod_for_all_namespaces(field_selector="spec.bogus=1")
    assert bad.value.status == 400
    with pytest.raises(SelectorError):
        parse_label_selector("a in b")


async def test_watch_with_selector_turns_transitions_into_added_and_deleted(server, api):
    rv = server.resource_version
    server.create_pod(bare_pod("a", component="other"))
    server.update_pod("ns", "a", lambda pod: pod["metadata"]["labels"].update(component="x"))
    server.update_pod("ns", "a", lambda pod: pod["metadata"]["labels"].update(component="y"))
    events = await collect(
        api.list_pod_for_all_namespaces,
        resource_version=rv,
        label_selector="component=x",
        timeout_seconds=1,
        stop_after=2,
    )
    assert names(events) == [("ADDED", "a"), ("DELETED", "a")]


async def test_unreachable_then_back(server, api):
    server.create_pod(bare_pod("a"))
    await api.list_pod_for_all_namespaces()  # leaves a pooled keep-alive connection
    server.set_unreachable(60)
    with pytest.raises(aiohttp.ClientError):
        await api.list_pod_for_all_namespaces(_request_timeout=REQUEST_TIMEOUT)
    server.set_unreachable(60, mode="503")
    with pytest.raises(ApiException) as unavailable:
        await api.list_pod_for_all_namespaces(_request_timeout=REQUEST_TIMEOUT)
    assert unavailable.value.status == 503
    server.set_unreachable(0.2)
    await asyncio.sleep(0.25)  # expires by itself
    assert len((await api.list_pod_for_all_namespaces()).items) == 1
    server.set_unreachable(60)
    server.set_unreachable(None)
    assert len((await api.list_pod_for_all_namespaces()).items) == 1


async def test_delay_trips_the_client_request_timeout(server, api):
    server.set_delay(0.5)
    with pytest.raises(asyncio.TimeoutError):
        await api.list_pod_for_all_namespaces(_request_timeout=0.1)
    server.set_delay(0)
    assert (await api.list_pod_for_all_namespaces(_request_timeout=1)).items == []


async def test_discovery_and_kubeconfig(server, tmp_path):
    path = tmp_path / "kubeconfig"
    write_kubeconfig(str(path), server.url)
    configuration = client.Configuration()
    await config.load_kube_config(config_file=str(path), client_configuration=configuration)
    async with client.ApiClient(configuration) as api_client:
        version = await client.VersionApi(api_client).get_code()
        assert version.major == "1"
        versions = await client.CoreApi(api_client).get_api_versions()
        assert versions.versions == ["v1"]
        resources = await client.CoreV1Api(api_client).get_api_resources()
        assert resources.resources[0].name == "pods"


def test_standalone_server_writes_a_usable_kubeconfig(tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    command = [sys.executable, "-m", "quota_ledger_demo.fake_apiserver", "--port", "0"]
    command += ["--kubeconfig-out", str(kubeconfig), "--users", "3", "--seed", "1"]
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    try:
        banner = process.stdout.readline()
        assert "http://127.0.0.1:" in banner

        async def listed() -> int:
            configuration = client.Configuration()
            await config.load_kube_config(str(kubeconfig), client_configuration=configuration)
            async with client.ApiClient(configuration) as api_client:
                pods = await client.CoreV1Api(api_client).list_pod_for_all_namespaces()
                return len(pods.items)

        assert asyncio.run(listed()) >= 0
    finally:
        process.terminate()
        assert process.wait(timeout=5) == 0


async def test_simulated_lifecycle_parses_in_the_client(server, api):
    hub = SimulatedHub(server, namespace="jhub")
    rv = server.resource_version
    pod = hub.start("Ann.Lee@uni.edu", "gpu-box", at=T0, cpu="2", memory="4Gi", gpu=1)
    name = pod["metadata"]["name"]
    hub.resize(name, at=T0 + timedelta(minutes=10), memory="8Gi")
    hub.oom_kill(name, T0 + timedelta(minutes=20))
    hub.stop(name, T0 + timedelta(minutes=30))
    events = await collect(
        api.list_namespaced_pod, "jhub", resource_version=rv, timeout_seconds=1, stop_after=9
    )
    assert [e["type"] for e in events] == ["ADDED"] + ["MODIFIED"] * 7 + ["DELETED"]
    pods = [e["object"] for e in events]
    spawned, running, resized, oomed, final = pods[0], pods[2], pods[4], pods[5], pods[8]
    assert name.startswith("jupyter-ann-lee-uni-edu---") and name.endswith("--gpu-box")
    assert spawned.metadata.annotations == {
        "hub.jupyter.org/username": "Ann.Lee@uni.edu",
        "hub.jupyter.org/servername": "gpu-box",
    }
    assert spawned.metadata.labels["component"] == "singleuser-server"
    assert spawned.metadata.labels["hub.jupyter.org/username"] != "Ann.Lee@uni.edu"  # lossy
    notebook = spawned.spec.containers[0]
    assert notebook.name == "notebook"
    assert notebook.resources.requests == {"cpu": "2", "memory": "4Gi", "nvidia.com/gpu": "1"}
    assert spawned.spec.init_containers[0].name == "block-cloud-metadata"
    assert spawned.status.phase == "Pending"
    scheduled = {c.type: c for c in running.status.conditions}["PodScheduled"]
    assert scheduled.last_transition_time == T0 + timedelta(seconds=1)
    assert running.status.start_time == T0 + timedelta(seconds=1)
    assert running.status.container_statuses[0].state.running.started_at == T0 + timedelta(
        seconds=5
    )
    assert any(c.type == "PodResizeInProgress" for c in pods[3].status.conditions)
    assert resized.spec.containers[0].resources.requests["memory"] == "8Gi"
    assert resized.status.container_statuses[0].resources.requests["memory"] == "8Gi"
    oom = oomed.status.container_statuses[0]
    assert oom.restart_count == 1 and oom.last_state.terminated.reason == "OOMKilled"
    assert oom.last_state.terminated.finished_at == T0 + timedelta(minutes=20)
    assert final.metadata.deletion_timestamp == T0 + timedelta(minutes=30, seconds=1)
    assert final.status.container_statuses[0].state.terminated.finished_at == T0 + timedelta(
        minutes=30
    )


def test_simulator_helpers_are_pure_and_named_like_kubespawner():
    pod = simulator.spawn("alice", at=T0, overhead={"cpu": "250m", "memory": "120Mi"})
    assert pod["metadata"]["name"] == "jupyter-alice"
    assert pod["spec"]["overhead"] == {"cpu": "250m", "memory": "120Mi"}
    assert simulator.pod_name("alice", "dev") == "jupyter-alice--dev"
    scheduled = simulator.schedule(pod, T0)
    assert "nodeName" not in pod["spec"] and scheduled["spec"]["nodeName"] == "node-1"
    done = simulator.succeed(simulator.run(scheduled, T0), T0 + timedelta(hours=1))
    assert done["status"]["phase"] == "Succeeded"
    failed = simulator.oom_kill(simulator.run(scheduled, T0), T0, restart=False)
    assert failed["status"]["phase"] == "Failed"
    assert simulator.delete(done, T0, grace=False)["metadata"]["deletionTimestamp"] == (
        "2026-11-01T09:00:00Z"
    )


async def test_random_lifecycles_are_reproducible():
    outcomes = []
    for _ in range(2):
        async with FakeApiServer() as fake:
            counts = await run_random_lifecycles(
                fake, ["u1", "u2", "u3"], seed=7, start_at=T0, duration_seconds=3 * 3600
            )
            outcomes.append((counts, fake.resource_version, [p["status"] for p in fake.pods()]))
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][0]["spawn"] > 0 and outcomes[0][0]["stop"] > 0


async def test_closing_the_client_ends_the_server_side_stream(server, api):
    server.create_pod(bare_pod("a"))
    events = await collect(api.list_pod_for_all_namespaces, timeout_seconds=60, stop_after=1)
    assert names(events) == [("ADDED", "a")]
    for _ in range(50):
        if server.open_watch_streams == 0:
            break
        await asyncio.sleep(0.02)
    assert server.open_watch_streams == 0
