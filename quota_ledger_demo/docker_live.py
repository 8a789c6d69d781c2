"""The live part of ``quota-ledger demo --docker``: real containers on the local Docker engine,
the real collector's Docker source, usage accruing.

Simulated users start containers the way a DockerSpawner hub with the quota hook makes them
(the ``hub.jupyter.org/*`` labels, seed-002 style limits: ``--memory``, ``--cpus``), resize
one now and then (``docker update``), and stop and remove them; the collector follows the
engine's events into the demo's ledger. The containers only sleep. Every container carries
``quota-ledger-demo=<run>`` and is removed when the demo ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import uuid
from datetime import datetime

from sqlalchemy import text

from collector.daemon import Collector
from collector.settings import Settings

DEMO_LABEL = "quota-ledger-demo"
IMAGES = ("local/python:3.11-slim-bookworm", "python:3.11-slim-bookworm", "busybox:latest")
LIVE_USERS = ("ada", "ben", "chen", "kai", "mo", "tess")
SIZES = (("1g", "2.5"), ("512m", "1"), ("2g", "2"))  # (--memory, --cpus)
STEP_SECONDS = 5.0
REFRESH_SECONDS = 10.0

LIVE_SQL = text(
    """
    SELECT s.username, s.pod_name, s.memory_bytes, s.cpu_millicores, s.started_at, s.ended_at,
           s.end_reason
    FROM segments s WHERE s.source = 'docker' ORDER BY s.started_at DESC LIMIT 12
    """
)


async def docker(*args: str) -> str:
    """Run the docker CLI; its stdout, or RuntimeError with its stderr."""
    process = await asyncio.create_subprocess_exec(
        "docker", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"docker {args[0]}: {err.decode().strip()[:300]}")
    return out.decode().strip()


async def engine_image() -> str | None:
    """An image with ``sleep`` that is already on this engine (no pulls), or None."""
    for image in IMAGES:
        with contextlib.suppress(RuntimeError, FileNotFoundError):
            await docker("image", "inspect", "--format", "{{.Id}}", image)
            return image
    return None


async def simulate(run_id: str, image: str, rng: random.Random, stop: asyncio.Event) -> None:
    running: dict[str, str] = {}  # user → container id
    while not stop.is_set():
        for user in LIVE_USERS:
            try:
                if user not in running and rng.random() < 0.3:
                    memory, cpus = rng.choice(SIZES)
                    running[user] = await docker(
                        "run", "-d", "--network", "none", "--init", "--memory", memory,
                        "--cpus", cpus, "--label", f"hub.jupyter.org/username={user}",
                        "--label", "hub.jupyter.org/servername=", "--label",
                        f"{DEMO_LABEL}={run_id}", "--name", f"jupyter-demo-{run_id}-{user}",
                        image, "sleep", "infinity",
                    )  # fmt: skip
                elif user in running and rng.random() < 0.08:
                    await docker("rm", "-f", running.pop(user))
                elif user in running and rng.random() < 0.05:
                    memory = rng.choice(("768m", "1536m"))
                    await docker("update", "--memory", memory, "--memory-swap", "4g", running[user])
            except RuntimeError as exc:
                print(f"(demo: {exc})")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STEP_SECONDS):
                await stop.wait()


async def remove_all(run_id: str) -> None:
    with contextlib.suppress(RuntimeError):
        ids = (await docker("ps", "-aq", "--filter", f"label={DEMO_LABEL}={run_id}")).split()
        if ids:
            await docker("rm", "-f", *ids)


async def _print_live(engine, out, now: datetime) -> None:
    from rich.table import Table
    from rich.text import Text

    async with engine.connect() as conn:
        rows = (await conn.execute(LIVE_SQL)).all()
    table = Table(
        "user", "container", "size", "started", "ended",
        title=f"live at {now:%H:%M:%S} UTC — latest container segments (source docker)",
    )  # fmt: skip
    for user, name, memory, cpu, started, ended, reason in rows:
        size = f"{cpu / 1000:g} CPU, {memory / 2**30:g} GiB"
        end = "running" if ended is None else f"{ended:%H:%M:%S} ({reason})"
        table.add_row(Text(user), Text(name), size, f"{started:%H:%M:%S}", end)
    out.print(table)


async def run_live_docker(engine, out, live_seconds: float, *, seed: int = 11) -> int:
    """Run for ``live_seconds`` (inf: until Ctrl-C). 1 when no engine or image is usable."""
    from collector.sources.docker import DockerSource
    from ledger.core.times import utcnow

    out.rule("Live: real containers on the Docker engine, the real collector, usage accruing")
    image = await engine_image()
    if image is None:
        out.print(
            "(no Docker engine answers, or none of these images is on it: "
            + ", ".join(IMAGES) + " — the Docker demo needs one; nothing is pulled)",
            markup=False,
        )  # fmt: skip
        return 1
    run_id = uuid.uuid4().hex[:8]
    settings = Settings(
        source="docker",
        docker_label_selector=f"hub.jupyter.org/username,{DEMO_LABEL}={run_id}",
        heartbeat_interval=5,
        relist_interval=60,
    )
    collector = Collector(
        settings, engine, source=DockerSource(settings.docker_url), collector_id="demo-docker"
    )
    stop_collector, stop_users = asyncio.Event(), asyncio.Event()
    tasks = [
        asyncio.create_task(collector.run(stop_collector), name="collector"),
        asyncio.create_task(simulate(run_id, image, random.Random(seed), stop_users)),
    ]
    out.print(f"containers from {image}, labelled {DEMO_LABEL}={run_id}; they only sleep")
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
        stop_users.set()
        with contextlib.suppress(Exception):
            await tasks[1]
        await remove_all(run_id)
        await asyncio.sleep(1)  # let the collector see the removals
        stop_collector.set()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await tasks[0]
    return 0
