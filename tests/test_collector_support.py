"""Shared helpers for the collector tests: run a Collector against a FakeApiServer."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime, timedelta

from kubernetes_asyncio import client
from sqlalchemy import text

from collector.daemon import Collector
from collector.settings import parse_settings

FAST = {
    "heartbeat_interval": 0.2,
    "relist_interval": 60,
    "watch_timeout": 2,
    "backoff_max": 0.3,
    "shutdown_flush_timeout": 5,
}


def t0() -> datetime:
    """A start time an hour ago, whole seconds (pods carry second-precision times)."""
    return datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def make_collector(
    engine, server, collector_id="test", http_port=None, accounting=None, **settings
) -> Collector:
    def api_client():
        return client.ApiClient(client.Configuration(host=server.url))

    return Collector(
        parse_settings({**FAST, **settings}),
        engine,
        api_client,
        collector_id=collector_id,
        http_host="127.0.0.1",
        http_port=http_port,
        accounting=accounting,
    )


@contextlib.asynccontextmanager
async def running(collector: Collector):
    """Run until the block ends; then stop gracefully and check the exit code is 0."""
    stop = asyncio.Event()
    task = asyncio.create_task(collector.run(stop))
    try:
        await wait_until(lambda: collector.ready()[0] or task.done(), what="collector ready")
        yield collector
    finally:
        stop.set()
        code = await asyncio.wait_for(task, 20)
    assert code == 0


async def kill(collector_task: asyncio.Task) -> None:
    """A crash: no flush, no final heartbeat."""
    collector_task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await collector_task


async def wait_until(predicate, *, timeout=15.0, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def rows(engine, table="segments", order="pod_name, started_at"):
    async with engine.connect() as conn:
        result = await conn.execute(text(f"SELECT * FROM {table} ORDER BY {order}"))  # noqa: S608
        return [r._asdict() for r in result]


def shape(segments):
    """What the charge depends on, per segment."""
    return [
        (
            s["pod_name"],
            s["username"],
            s["cpu_millicores"],
            s["memory_bytes"],
            s["gpu_count"],
            s["started_at"],
            s["ended_at"],
            s["end_reason"],
        )
        for s in segments
    ]


async def settled(engine, collector, expected_count=None):
    """Wait until the buffer is empty (and, optionally, the row count is reached)."""
    await wait_until(lambda: collector.buffer.depth == 0, what="buffer empty")
    if expected_count is not None:

        async def enough():
            return len(await rows(engine)) >= expected_count

        await wait_until(enough, what=f"{expected_count} segments")
    await collector.buffer.wait_empty(10)
    return await rows(engine)
