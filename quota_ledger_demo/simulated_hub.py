"""A simulated JupyterHub driving pods in a `FakeApiServer`: the writes a real cluster makes.

`SimulatedHub` turns one lifecycle step (start, resize, OOM kill, stop) into the sequence of
API writes Kubernetes would make, each stamped with explicit times. `run_random_lifecycles`
drives many users at random, in simulated time that can be paced to real time for the demo.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import random
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from quota_ledger_demo import simulator
from quota_ledger_demo.fake_store import Pod, PodChange, PodStore
from quota_ledger_demo.kubespawner_names import pod_name


class PodServer(Protocol):
    """What the simulation writes through: a `FakeApiServer` (named here, not imported, so
    the server's standalone runner can drive a simulation without an import cycle)."""

    store: PodStore

    def create_pod(self, pod: Pod) -> Pod: ...

    def update_pod(self, namespace: str, name: str, change: PodChange) -> Pod: ...

    def delete_pod(self, namespace: str, name: str) -> Pod: ...


class SimulatedHub:
    """Applies `quota_ledger_demo.simulator` lifecycles to pods stored in a `FakeApiServer`."""

    def __init__(self, server: PodServer, namespace: str = "default") -> None:
        self.server = server
        self.namespace = namespace

    def _update(self, name: str, change: Callable[[Pod], Pod]) -> Pod:
        return self.server.update_pod(self.namespace, name, change)

    def spawn(self, user: str, server_name: str = "", *, at: datetime, **size: Any) -> Pod:
        """Create the pending pod (size: cpu, memory, gpu, cpu_limit, memory_limit, ...)."""
        pod = simulator.spawn(user, server_name, namespace=self.namespace, at=at, **size)
        return self.server.create_pod(pod)

    def schedule(self, name: str, at: datetime, node: str = "node-1") -> Pod:
        return self._update(name, lambda pod: simulator.schedule(pod, at, node))

    def run(self, name: str, at: datetime) -> Pod:
        return self._update(name, lambda pod: simulator.run(pod, at))

    def start(
        self,
        user: str,
        server_name: str = "",
        *,
        at: datetime,
        scheduled_after_seconds: float = 1.0,
        running_after_seconds: float = 5.0,
        **size: Any,
    ) -> Pod:
        """spawn, schedule and run in one go (three events)."""
        name = self.spawn(user, server_name, at=at, **size)["metadata"]["name"]
        self.schedule(name, at + timedelta(seconds=scheduled_after_seconds))
        return self.run(name, at + timedelta(seconds=running_after_seconds))

    def resize(
        self, name: str, *, at: datetime, cpu: str | None = None, memory: str | None = None
    ) -> Pod:
        """Two events, as on a real node: resize requested (in progress), then actuated."""
        self._update(
            name, lambda p: simulator.resize(p, at=at, cpu=cpu, memory=memory, in_progress=True)
        )
        return self._update(name, lambda p: simulator.resize(p, at=at, cpu=cpu, memory=memory))

    def oom_kill(self, name: str, at: datetime, restart: bool = True) -> Pod:
        return self._update(name, lambda pod: simulator.oom_kill(pod, at, restart))

    def stop(
        self,
        name: str,
        at: datetime,
        *,
        grace_period_seconds: int = simulator.KUBESPAWNER_GRACE_PERIOD_SECONDS,
        exited_after_seconds: float = 0.0,
    ) -> Pod:
        """KubeSpawner's stop: delete (Terminating), containers exit, then the pod is gone.
        Events: MODIFIED (deletionTimestamp), MODIFIED (terminated), DELETED."""
        self._update(name, lambda pod: simulator.delete(pod, at, True, grace_period_seconds))
        exited_at = at + timedelta(seconds=exited_after_seconds)
        self._update(name, lambda pod: simulator.succeed(pod, exited_at))
        return self.server.delete_pod(self.namespace, name)


# Server sizes a hub's profile list might offer: (cpu, memory, gpu).
DEFAULT_SIZES: tuple[tuple[str, str, int], ...] = (
    ("500m", "1Gi", 0),
    ("1", "2Gi", 0),
    ("2", "4Gi", 0),
    ("4", "16Gi", 0),
    ("4", "16Gi", 1),
)


async def run_random_lifecycles(
    server: PodServer,
    users: Sequence[str],
    seed: int,
    *,
    namespace: str = "default",
    start_at: datetime | None = None,
    duration_seconds: float | None = 3600.0,
    step_seconds: float = 60.0,
    speed: float = math.inf,
    sizes: Sequence[tuple[str, str, int]] = DEFAULT_SIZES,
    start_probability: float = 0.3,
    stop_probability: float = 0.1,
    resize_probability: float = 0.05,
    oom_probability: float = 0.02,
) -> Counter[str]:
    """Start, resize, OOM-kill and stop users' servers at random in simulated time.

    Every `step_seconds` of simulated time each user may act; pod steps that follow (schedule
    after ~2 s, run after ~8 s) are queued at their own simulated times. `speed` is simulated
    seconds per real second (inf: as fast as possible; 1: real time, the demo). Runs for
    `duration_seconds` of simulated time (None: forever). Same seed, same story.
    Returns how many times each action happened.
    """
    rng = random.Random(seed)
    hub = SimulatedHub(server, namespace)
    begin_at = start_at or datetime.now(UTC)
    sim_now = begin_at
    counts: Counter[str] = Counter()
    running: dict[str, tuple[str, str]] = {}  # pod name -> (user, server name)
    queue: list[tuple[datetime, int, Callable[[datetime], None]]] = []
    order = itertools.count()

    def later(at: datetime, action: Callable[[datetime], None]) -> None:
        heapq.heappush(queue, (at, next(order), action))

    def tick(at: datetime) -> None:
        for user in users:
            for server_name in ("", "gpu"):
                name = pod_name(user, server_name)
                if name in running:
                    act_on_running(name, at)
                elif rng.random() < start_probability * (1.0 if server_name == "" else 0.2):
                    start(user, server_name, at)
        if (
            duration_seconds is None
            or (at - begin_at).total_seconds() + step_seconds < duration_seconds
        ):
            later(at + timedelta(seconds=step_seconds), tick)

    def start(user: str, server_name: str, at: datetime) -> None:
        cpu, memory, gpu = rng.choice(sizes)
        name = hub.spawn(user, server_name, at=at, cpu=cpu, memory=memory, gpu=gpu)["metadata"][
            "name"
        ]
        running[name] = (user, server_name)
        counts["spawn"] += 1
        later(at + timedelta(seconds=rng.uniform(1, 3)), lambda t: hub.schedule(name, t))
        later(at + timedelta(seconds=rng.uniform(5, 15)), lambda t: hub.run(name, t))

    def act_on_running(name: str, at: datetime) -> None:
        pod = server.store.get(namespace, name)
        if pod is None or pod["status"].get("phase") != "Running":
            return  # still starting
        roll = rng.random()
        if roll < stop_probability:
            hub.stop(name, at)
            del running[name]
            counts["stop"] += 1
        elif roll < stop_probability + resize_probability:
            cpu, memory, _ = rng.choice(sizes)
            hub.resize(name, at=at, cpu=cpu, memory=memory)
            counts["resize"] += 1
        elif roll < stop_probability + resize_probability + oom_probability:
            hub.oom_kill(name, at)
            counts["oom_kill"] += 1

    later(begin_at, tick)
    while queue:
        at, _, action = heapq.heappop(queue)
        wait_seconds = (at - sim_now).total_seconds() / speed
        await asyncio.sleep(max(0.0, wait_seconds))  # also yields to the server's streams
        sim_now = at
        action(at)
    return counts
