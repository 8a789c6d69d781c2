"""The Docker source against the real engine and a real PostgreSQL: seed-002 limits, NanoCpus,
stop, kill, restart, update, OOM kill, removal while the collector is down — and the ledger's
integral equals one computed from the engine's own StartedAt / FinishedAt."""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta
from pathlib import Path

import pytest
from docker_support import Containers, docker_client
from sqlalchemy import text
from test_collector_support import FAST, kill, rows, running, settled, wait_until

from collector import daemon
from collector.containers import parse_time
from collector.daemon import Collector
from collector.settings import parse_settings
from collector.sources.docker import DockerSource
from ledger.core.times import utcnow
from ledger.store import queries

GiB = 2**30
MiB = 2**20
DOCKER_URL = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
POLICY = Path(__file__).resolve().parent.parent / "ledger" / "data" / "example-policy.yaml"


@pytest.fixture(scope="module")
def client():
    return docker_client()


@pytest.fixture
def containers(client):
    made = Containers(client)
    yield made
    made.remove_all()


def make_collector(engine, containers: Containers, **settings) -> Collector:
    merged = {**FAST, "source": "docker", "docker_label_selector": containers.selector, **settings}
    return Collector(
        parse_settings(merged),
        engine,
        source=DockerSource(DOCKER_URL),
        collector_id="docker-test",
    )


def run_times(inspected: dict):
    state = inspected["State"]
    return parse_time(state["StartedAt"]), parse_time(state["FinishedAt"])


async def segments_of(engine, name: str):
    return [s for s in await rows(engine) if s["pod_name"] == name]


async def wait_segments(engine, name, predicate, what):
    async def ok():
        found = await segments_of(engine, name)
        return found if predicate(found) else None

    return await wait_until(ok, timeout=20, what=what)


async def test_lifecycle_matches_the_engine(engine, containers):
    collector = make_collector(engine, containers)
    async with running(collector):
        # seed 002: extra_host_config mem_limit='1g' and cpu_period/cpu_quota (2.5 CPUs)
        seed = await containers.run(
            "desrozis", mem_limit="1g", cpu_period=100_000, cpu_quota=250_000, servername="gpu"
        )
        nano = await containers.run("nina", mem_limit="512m", nano_cpus=1_500_000_000)
        again = await containers.run("rita", mem_limit="256m")
        resized = await containers.run("ursula", mem_limit="256m")
        oom = await containers.run(
            "otto",
            command=("python", "-c", "b = bytearray(512 * 2**20); import time; time.sleep(60)"),
            mem_limit="64m",
            memswap_limit="64m",
        )
        ignored = await containers.run(None, mem_limit="2g")  # no identity label: never charged
        for c in (seed, nano, again, resized):
            await wait_segments(engine, c.name, lambda s: len(s) == 1, f"{c.name} opened")

        await containers.call(seed.stop, timeout=1)
        await containers.call(nano.kill)
        await containers.call(again.stop, timeout=1)
        await containers.call(again.start)  # a second run: a second segment
        before_update = utcnow()
        await containers.call(resized.update, mem_limit="768m", memswap_limit="1536m")
        after_update = utcnow()
        await wait_segments(engine, again.name, lambda s: len(s) == 2, "restart segment")
        await wait_segments(engine, resized.name, lambda s: len(s) == 2, "update segment")
        await wait_segments(engine, oom.name, lambda s: s and s[0]["ended_at"], "oom closed")
        await wait_until(lambda: collector.metrics.oom_kills._value.get() == 1, what="oom kill")
        await containers.call(again.stop, timeout=1)
        await wait_segments(engine, again.name, lambda s: all(x["ended_at"] for x in s), "stop")
        await settled(engine, collector)

    by_name = {}
    for s in await rows(engine):
        by_name.setdefault(s["pod_name"], []).append(s)
    assert ignored.name not in by_name

    (s,) = by_name[seed.name]
    started, finished = run_times(await containers.inspect(seed))
    assert (s["username"], s["servername"], s["source"]) == ("desrozis", "gpu", "docker")
    assert (s["cpu_millicores"], s["memory_bytes"]) == (2500, GiB)
    assert (s["started_at"], s["ended_at"], s["end_reason"]) == (started, finished, "terminated")

    (s,) = by_name[nano.name]
    started, finished = run_times(await containers.inspect(nano))
    assert (s["cpu_millicores"], s["memory_bytes"]) == (1500, 512 * MiB)
    assert (s["started_at"], s["ended_at"]) == (started, finished)

    first, second = by_name[again.name]
    started, finished = run_times(await containers.inspect(again))
    assert first["ended_at"] < second["started_at"] == started
    assert second["ended_at"] == finished

    old, new = by_name[resized.name]
    assert (old["memory_bytes"], new["memory_bytes"]) == (256 * MiB, 768 * MiB)
    assert before_update <= old["ended_at"] == new["started_at"] <= after_update
    assert old["end_reason"] == "resized" and new["ended_at"] is None

    (s,) = by_name[oom.name]
    inspected = await containers.inspect(oom)
    assert inspected["State"]["OOMKilled"] is True
    started, finished = run_times(inspected)
    assert (s["started_at"], s["ended_at"]) == (started, finished)
    (kill_row,) = await rows(engine, "oom_kills", "id")
    assert (kill_row["username"], kill_row["pod_name"]) == ("otto", oom.name)
    assert kill_row["killed_at"] == finished and kill_row["memory_limit_bytes"] == 64 * MiB

    # The ledger's integral is the engine's: Σ size × (FinishedAt − StartedAt) per run.
    at = utcnow() + timedelta(seconds=1)
    async with engine.connect() as conn:
        usage = {u["username"]: u for u in await queries.usage_report(conn, at, 86400)}
    for c, cpu_millicores, memory_bytes in (
        (seed, 2500, GiB),
        (nano, 1500, 512 * MiB),
        (oom, 0, 64 * MiB),
    ):
        started, finished = run_times(await containers.inspect(c))
        seconds = (finished - started).total_seconds()
        user = usage[c.labels["hub.jupyter.org/username"]]
        assert float(user["memory_byte_seconds"]) == pytest.approx(memory_bytes * seconds, abs=1)
        assert float(user["cpu_millicore_seconds"]) == pytest.approx(
            cpu_millicores * seconds, abs=1
        )


async def test_restart_safety_and_removal_while_down(engine, containers):
    """Killed collector: a container stopped meanwhile is closed at its FinishedAt, one removed
    meanwhile at the last heartbeat (vanished, the unknown window recorded), a running one
    continues its segment, and one that ran again meanwhile gets a second segment."""
    stays = await containers.run("sam", mem_limit="128m")
    stops = await containers.run("tom", mem_limit="128m")
    removed = await containers.run("rob", mem_limit="128m")
    rerun = await containers.run("ray", mem_limit="128m")
    first = make_collector(engine, containers)
    stop = asyncio.Event()
    task = asyncio.create_task(first.run(stop))
    await wait_until(lambda: first.ready()[0], what="ready")
    for c in (stays, stops, removed, rerun):
        await wait_segments(engine, c.name, lambda s: len(s) == 1, f"{c.name} opened")
    await wait_until(lambda: first.metrics.live_pods._value.get() == 4, what="heartbeat counted 4")
    await kill(task)  # a crash: no final heartbeat, no flush
    (removed_seg,) = await segments_of(engine, removed.name)
    last_seen_at = removed_seg["last_seen_at"]

    await containers.call(stops.stop, timeout=1)
    await containers.call(removed.remove, force=True)
    await containers.call(rerun.stop, timeout=1)
    await containers.call(rerun.start)

    second = make_collector(engine, containers)
    async with running(second):
        await wait_segments(engine, rerun.name, lambda s: len(s) == 2, "rerun segment")
        await settled(engine, second)
    by_name = {}
    for s in await rows(engine):
        by_name.setdefault(s["pod_name"], []).append(s)
    (s,) = by_name[stays.name]
    assert (
        s["ended_at"] is None and s["started_at"] == run_times(await containers.inspect(stays))[0]
    )
    (s,) = by_name[stops.name]
    assert (s["ended_at"], s["end_reason"]) == (
        run_times(await containers.inspect(stops))[1],
        "terminated",
    )
    (s,) = by_name[removed.name]
    assert s["end_reason"] == "vanished" and s["ended_at"] >= last_seen_at
    assert s["noticed_gone_at"] > s["ended_at"]
    old, new = by_name[rerun.name]
    started, _ = run_times(await containers.inspect(rerun))
    assert old["ended_at"] is not None and old["ended_at"] <= new["started_at"] == started
    async with engine.connect() as conn:
        sources = (await conn.execute(text("SELECT DISTINCT source FROM segments"))).scalars()
        assert list(sources) == ["docker"]


async def test_a_run_while_down_is_its_own_segment_even_if_the_first_seed_fails(
    engine, containers, monkeypatch
):
    """A container run again while no collector ran (a restart policy after a reboot), and
    the database too slow when the next collector starts (begin_list times out): the list is
    retried once the ledger's open segments are loaded, so the previous run is closed at its
    FinishedAt and the new run charged from its StartedAt — not one segment across the gap."""
    rerun = await containers.run("ray", mem_limit="128m")
    first = make_collector(engine, containers)
    async with running(first):
        await wait_segments(engine, rerun.name, lambda s: len(s) == 1, "opened")
    await containers.call(rerun.stop, timeout=1)
    await containers.call(rerun.start)
    previous_end = parse_time((await containers.inspect(rerun))["State"]["FinishedAt"])
    real, calls = daemon.ledger_writer.load_open_segments, []

    async def slow_once(*args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise TimeoutError  # what asyncio.timeout raises in begin_list
        return await real(*args, **kwargs)

    monkeypatch.setattr(daemon.ledger_writer, "load_open_segments", slow_once)
    second = make_collector(engine, containers)
    async with running(second):
        await containers.call(rerun.stop, timeout=1)
        await wait_segments(
            engine, rerun.name, lambda s: s and all(x["ended_at"] for x in s), "stopped"
        )
        await settled(engine, second)
    started, finished = run_times(await containers.inspect(rerun))
    segments = [(s["started_at"], s["ended_at"]) for s in await segments_of(engine, rerun.name)]
    assert len(segments) == 2, segments
    assert segments[0][1] == previous_end <= started
    assert segments[1] == (started, finished)
    assert len(calls) >= 2  # the seed was retried


async def test_engine_unreachable_then_back(engine, containers, tmp_path):
    """A socket that refuses: the collector backs off without dying and reports not ready."""
    settings = parse_settings(
        {**FAST, "source": "docker", "docker_label_selector": containers.selector}
    )
    collector = Collector(
        settings,
        engine,
        source=DockerSource(f"unix://{tmp_path}/nothing.sock"),
        collector_id="docker-down",
    )
    stop = asyncio.Event()
    task = asyncio.create_task(collector.run(stop))
    await wait_until(lambda: collector.metrics.reconnects._value.get() >= 2, what="retries")
    assert not task.done() and collector.ready() == (False, "initial list not done")
    stop.set()
    assert await asyncio.wait_for(task, 20) == 0


def test_collect_command_once_and_a_bad_url(tmp_path, containers, fresh_db_url):
    """``quota-ledger collect --source docker`` as an operator runs it."""
    import subprocess
    import sys

    cli = str(Path(sys.executable).parent / "quota-ledger")
    bad = subprocess.run(
        [cli, "collect", "--source", "docker", "--docker-url", "ftp://engine", "--db", fresh_db_url,
         "--config", str(POLICY)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode == 2 and "unix:///var/run/docker.sock" in bad.stderr, bad.stderr
    asyncio.run(containers.run("cli-user", mem_limit="64m"))
    settings = tmp_path / "collector.yaml"
    settings.write_text(f"docker_label_selector: '{containers.selector}'\n")
    ok = subprocess.run(
        [cli, "collect", "--source", "docker", "--docker-url", DOCKER_URL, "--once",
         "--settings", str(settings), "--db", fresh_db_url, "--http-port", "-1",
         "--config", str(POLICY)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    check = subprocess.run(
        [cli, "usage", "cli-user", "--db", fresh_db_url, "--format", "json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert check.returncode == 0 and "cli-user" in check.stdout, check.stderr
