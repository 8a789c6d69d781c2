"""A month of realistic usage for the demo's hub, deterministic for a seed. Pure.

Users are people in the four groups of examples/policy.yaml with habits: a regular user opens a 2–4 GiB
server for an afternoon and lets the culler take it; power users run 8–16 GiB for days;
gpu-dev users hold GPUs. Times are relative to ``now`` so the window is always full.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from ledger.core.resources import GIB


@dataclass(frozen=True)
class Persona:
    group: str
    sessions_per_week: tuple[float, float]
    memory_gib: tuple[int, ...]
    hours: tuple[float, float]  # log-uniform session length
    gpus: tuple[int, ...] = (0,)


PERSONAS = {
    # tuned so a typical member uses 60-90 % of their group's budget in examples/policy.yaml, and a few run out
    "regular": Persona("regular", (0.5, 3), (1, 2, 4), (0.3, 4)),
    "power": Persona("power", (1, 4), (2, 4, 8), (1, 8)),
    "dev": Persona("dev", (1, 3.5), (4, 8, 16), (2, 12)),
    "gpu-dev": Persona("gpu-dev", (1, 3), (8, 16), (1, 10), gpus=(1, 1, 2)),
}
NAMES = (
    "ada", "ben", "chen", "dara", "eli", "femi", "gia", "hugo", "ines", "jon", "kai", "lena",
    "mo", "nia", "oli", "pat", "quin", "rosa", "sol", "tess", "uma", "vik", "wen", "xia",
    "yuki", "zoe", "amir", "bea", "cleo", "dev",
)  # fmt: skip
GROUP_SIZES = {"regular": 14, "power": 8, "dev": 5, "gpu-dev": 3}


def demo_users() -> dict[str, list[str]]:
    """username → [group], stable."""
    users, names = {}, iter(NAMES)
    for group, size in GROUP_SIZES.items():
        for _ in range(size):
            users[next(names)] = [group]
    return users


def generate(now: datetime, seed: int = 7, days: int = 35) -> list[dict]:
    """Segments in the importer's row shape (base units), ending before ``now``."""
    rng = random.Random(seed)
    rows = []
    for username, (group,) in demo_users().items():
        persona = PERSONAS[group]
        per_week = rng.uniform(*persona.sessions_per_week)
        t = now - timedelta(days=days) + timedelta(hours=rng.uniform(0, 24))
        index = 0
        while True:
            t += timedelta(hours=rng.expovariate(per_week / (7 * 24)))
            low, high = persona.hours
            hours = low * (high / low) ** rng.random()
            end = t + timedelta(hours=hours, minutes=60)  # the idle culler's hour, charged
            if end >= now - timedelta(hours=1):
                break
            memory = rng.choice(persona.memory_gib)
            rows.append(
                {
                    "pod_uid": f"demo-{seed}-{username}-{index}",
                    "namespace": "jhub",
                    "pod_name": f"jupyter-{username}",
                    "username": username,
                    "servername": "" if rng.random() < 0.8 else "analysis",
                    "cpu_millicores": min(4000, memory * 250),
                    "memory_bytes": memory * GIB,
                    "gpu_count": rng.choice(persona.gpus),
                    "started_at": t,
                    "ended_at": end,
                }
            )
            t, index = end, index + 1
    return rows
