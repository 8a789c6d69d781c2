"""Small builders shared by the hub hook and enforcer tests."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from datetime import datetime, timedelta
from pathlib import Path

from ledger.store import queries

GIB = 2**30
_uids = itertools.count()

POLICY = """
window: 30d
combine: max
unlisted_users: regular
on_ledger_error: {on_error}
groups:
  regular: {{memory: 60 GiB-hours, gpu: 0 GPU-hours}}
  power:   {{memory: 240 GiB-hours, gpu: 0 GPU-hours}}
  gpu-dev: {{memory: 640 GiB-hours, gpu: 160 GPU-hours, running: {{gpu: 1}}}}
users:
  vip: {{memory: 1000 GiB-hours}}
{users}messages:
  contact: "Ask <b>hub admins</b> for more quota."
  contact_url: https://example.org/quota-request
  quota_page_url: /services/quota/
enforcement:
  warn_at_percent: [80, 95]
  grace: 10m
  interval: 1m
"""


def write_policy(path: Path, on_error: str = "deny", users: str = "") -> Path:
    """The test policy; ``users`` adds lines under ``users:``."""
    path.write_text(POLICY.format(on_error=on_error, users=users), encoding="utf-8")
    return path


def segment(user: str, start: datetime, hours: float | None, *, memory_gib: float = 4,
            gpu: int = 0, servername: str = "", cpu_millicores: int = 1000) -> dict:  # fmt: skip
    """One segment of ``memory_gib`` for ``hours`` from ``start`` (None: still running)."""
    return dict(
        pod_uid=f"pod-{next(_uids)}",
        username=user,
        servername=servername,
        cpu_millicores=cpu_millicores,
        memory_bytes=int(memory_gib * GIB),
        gpu_count=gpu,
        started_at=start,
        ended_at=None if hours is None else start + timedelta(hours=hours),
    )


async def insert(engine, rows: list[dict]) -> None:
    async with engine.begin() as conn:
        await queries.upsert_segments(conn, rows)


@contextlib.asynccontextmanager
async def silent_port():
    """A TCP port that accepts connections and never says a word (a hung database)."""
    writers = []

    async def hold(reader, writer):
        writers.append(writer)
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await reader.read()  # until the client gives up

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for w in writers:
            w.close()
