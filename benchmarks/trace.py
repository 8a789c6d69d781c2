"""A seeded, realistic JupyterHub usage trace, its exact ground truth, and the scrape model.

Pure Python, so the smoke test can exercise all of it quickly (``write_import_jsonl`` is the
one function that touches a file):

* ``generate_trace`` — pods of several sizes (1–16 GiB, 0.5–4 CPU, some with 1–2 GPUs),
  many short-lived pods (a few seconds to 10 minutes), some long ones (hours to days), named
  servers running side by side, and quiet days.
* ``ground_truth`` — resource × time over the rolling window, integrated exactly in integers.
* ``ScrapeModel`` — the instants a 60 s Prometheus scrape of kube-state-metrics would see a
  pod (with a few outages in which Prometheus scraped nothing), and what the peer's
  ``[30d:]`` subquery then counts (``sampled_usage``).
* ``error_stats`` — how far a method's per-user numbers are from the ground truth.

Times are integer epoch milliseconds (``*_ms``) so the integration stays exact.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path

# A fixed evaluation time keeps runs comparable; it is a minute boundary, as the peer's
# subquery steps are (Prometheus aligns subquery steps to multiples of the resolution).
EVAL_AT = datetime(2026, 11, 15, 0, 0, tzinfo=UTC)
EVAL_AT_MS = int(EVAL_AT.timestamp() * 1000)
DAY_MS = 86_400_000
WINDOW_MS = 30 * DAY_MS
# The trace starts before the window so pods straddling its left edge are exercised.
TRACE_SPAN_MS = 35 * DAY_MS
SCRAPE_INTERVAL_MS = 60_000
NAMESPACE = "hub"

GIB = 1024**3
MS_PER_HOUR = 3_600_000

# (cpu_millicores, memory_bytes, gpu_count): KubeSpawner profile sizes a hub typically offers.
CPU_PROFILES = [
    (500, 1 * GIB, 0),
    (1000, 2 * GIB, 0),
    (2000, 4 * GIB, 0),
    (2000, 8 * GIB, 0),
    (4000, 16 * GIB, 0),
]
GPU_PROFILES = [(4000, 16 * GIB, 1), (4000, 16 * GIB, 2)]

_WORDS = (
    "ana kim lee sam alex jo max eva noor ravi mia leo ines yuki omar lena tom zoe ivan "
    "aya ben chen dana eli fatima gus hana igor jana kai luis maya nils olga pia quinn rosa "
    "sven tara uma vic wen xena yara zack"
).split()


@dataclass(frozen=True, slots=True)
class Pod:
    """One user server pod as the collector (and kube-state-metrics) would see it."""

    username: str
    servername: str
    pod_uid: str
    namespace: str
    pod_name: str
    node: str
    started_at_ms: int
    ended_at_ms: int | None  # None: still running at the evaluation time
    cpu_millicores: int
    memory_bytes: int
    gpu_count: int

    def duration_ms(self, at_ms: int) -> int:
        return (at_ms if self.ended_at_ms is None else self.ended_at_ms) - self.started_at_ms


def make_usernames(rng: random.Random, n_users: int) -> list[str]:
    """Distinct usernames; about 5 % are another user's name plus a digit ("kim", "kim7").

    Such pairs are common on real hubs, and they matter: the peer selects a user's pods by the
    regex ``jupyter-<user>.*``, which for "kim" also matches "jupyter-kim7".
    """
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < n_users:
        if names and rng.random() < 0.05:
            name = f"{rng.choice(names)}{rng.randrange(10)}"
        else:
            name = f"{rng.choice(_WORDS)}{rng.randrange(100_000)}"
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


def pod_name_for(username: str, servername: str) -> str:
    # KubeSpawner's default pod_name_template "jupyter-{user_server}": "{username}" for the
    # default server, "{username}--{servername}" for a named one. Our usernames are already
    # safe slugs (lowercase alphanumerics), so slugging leaves them unchanged.
    return f"jupyter-{username}--{servername}" if servername else f"jupyter-{username}"


def _session_duration_ms(rng: random.Random) -> int:
    """Mixture: failed/abandoned spawns, short pods, working sessions, long-running servers."""
    roll = rng.random()
    if roll < 0.12:  # seconds: spawn failures, immediate stops — shorter than a scrape interval
        return rng.randint(3_000, 59_000)
    if roll < 0.45:  # 1–10 minutes: quick checks, culled idle servers
        return rng.randint(60_000, 600_000)
    if roll < 0.93:  # 30 minutes – 4 hours: a working session
        return rng.randint(1_800_000, 4 * MS_PER_HOUR)
    return rng.randint(8 * MS_PER_HOUR, 2 * DAY_MS)  # left running for hours to days


def generate_trace(
    seed: int,
    n_users: int,
    *,
    eval_at_ms: int = EVAL_AT_MS,
    span_ms: int = TRACE_SPAN_MS,
    n_nodes: int = 40,
) -> list[Pod]:
    """Pods of ``n_users`` users over ``span_ms`` before ``eval_at_ms``, reproducible from ``seed``."""
    rng = random.Random(seed)
    trace_start_ms = eval_at_ms - span_ms
    n_days = max(1, span_ms // DAY_MS)
    pods: list[Pod] = []
    for username in make_usernames(rng, n_users):
        is_gpu_user = rng.random() < 0.08
        # Activity varies a lot between users: most come a few days a month, some daily.
        active_day_share = min(1.0, rng.lognormvariate(-1.6, 0.8))
        servernames = [""] + [f"srv{i}" for i in range(rng.choice((0, 0, 0, 1, 2, 3)))]
        busy_until_ms: dict[str, int] = defaultdict(int)  # a server runs one pod at a time
        for day in range(n_days):
            if rng.random() >= active_day_share:
                continue  # a gap: the user did not come that day
            for _ in range(rng.choice((1, 1, 1, 2, 3))):
                servername = rng.choice(servernames)
                start_ms = trace_start_ms + day * DAY_MS + rng.randrange(DAY_MS)
                start_ms = max(start_ms, busy_until_ms[servername] + rng.randint(5_000, 900_000))
                if start_ms >= eval_at_ms:
                    continue
                end_ms = start_ms + _session_duration_ms(rng)
                busy_until_ms[servername] = end_ms
                profiles = GPU_PROFILES if is_gpu_user and rng.random() < 0.5 else CPU_PROFILES
                cpu_millicores, memory_bytes, gpu_count = rng.choice(profiles)
                pods.append(
                    Pod(
                        username=username,
                        servername=servername,
                        pod_uid=f"{rng.getrandbits(128):032x}",
                        namespace=NAMESPACE,
                        pod_name=pod_name_for(username, servername),
                        node=f"node-{rng.randrange(n_nodes)}",
                        started_at_ms=start_ms,
                        ended_at_ms=None if end_ms > eval_at_ms else end_ms,
                        cpu_millicores=cpu_millicores,
                        memory_bytes=memory_bytes,
                        gpu_count=gpu_count,
                    )
                )
    return pods


@dataclass(frozen=True, slots=True)
class Usage:
    """Exact usage in base units × milliseconds; properties give resource-hours as Fractions."""

    memory_byte_ms: int = 0
    cpu_millicore_ms: int = 0
    gpu_ms: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.memory_byte_ms + other.memory_byte_ms,
            self.cpu_millicore_ms + other.cpu_millicore_ms,
            self.gpu_ms + other.gpu_ms,
        )

    @property
    def memory_gib_hours(self) -> Fraction:
        return Fraction(self.memory_byte_ms, GIB * MS_PER_HOUR)

    @property
    def cpu_hours(self) -> Fraction:
        return Fraction(self.cpu_millicore_ms, 1000 * MS_PER_HOUR)

    @property
    def gpu_hours(self) -> Fraction:
        return Fraction(self.gpu_ms, MS_PER_HOUR)

    def hours(self) -> dict[str, Fraction]:
        return {"memory": self.memory_gib_hours, "cpu": self.cpu_hours, "gpu": self.gpu_hours}


def overlap_ms(pod: Pod, window_start_ms: int, at_ms: int) -> int:
    """|[start, end ∧ at) ∩ [window_start, at)| — an open pod runs to ``at``."""
    end_ms = at_ms if pod.ended_at_ms is None else min(pod.ended_at_ms, at_ms)
    return max(0, end_ms - max(pod.started_at_ms, window_start_ms))


def ground_truth(
    pods: list[Pod], *, eval_at_ms: int = EVAL_AT_MS, window_ms: int = WINDOW_MS
) -> dict[str, Usage]:
    """Every user's exact usage over ``[eval_at - window, eval_at)``; users with none included."""
    usage: dict[str, Usage] = {}
    for pod in pods:
        held_ms = overlap_ms(pod, eval_at_ms - window_ms, eval_at_ms)
        usage[pod.username] = usage.get(pod.username, Usage()) + Usage(
            pod.memory_bytes * held_ms, pod.cpu_millicores * held_ms, pod.gpu_count * held_ms
        )
    return usage


@dataclass(frozen=True, slots=True)
class ScrapeModel:
    """When Prometheus scraped kube-state-metrics: every ``interval_ms`` from a random phase.

    ``outages_ms`` are [start, end) periods in which Prometheus was down (a restart, an OOM,
    an upgrade): nothing was scraped, and nothing can recover those samples later.
    """

    phase_ms: int
    interval_ms: int = SCRAPE_INTERVAL_MS
    outages_ms: tuple[tuple[int, int], ...] = ()

    @classmethod
    def random(
        cls, seed: int, *, eval_at_ms: int = EVAL_AT_MS, span_ms: int = TRACE_SPAN_MS
    ) -> ScrapeModel:
        rng = random.Random(seed ^ 0x5EED)
        # Never 0: a scrape exactly on a subquery step would be seen by two steps.
        phase_ms = rng.randint(1, SCRAPE_INTERVAL_MS - 1)
        outages = []
        for _ in range(3):  # a few outages of 10–45 minutes over the month
            start_ms = eval_at_ms - rng.randrange(span_ms)
            outages.append((start_ms, start_ms + rng.randint(600_000, 2_700_000)))
        return cls(phase_ms, SCRAPE_INTERVAL_MS, tuple(sorted(outages)))

    def scrapes_ms(self, start_ms: int, end_ms: int) -> list[int]:
        """Scrape instants in [start_ms, end_ms) that actually happened."""
        step = self.interval_ms
        first = start_ms + (self.phase_ms - start_ms) % step
        # Whole ranges between outages, not a test per instant: at 5,000 users this runs for
        # tens of millions of instants.
        kept: list[int] = []
        t = first
        for a, b in self.outages_ms:  # sorted by start; they may overlap
            if t >= end_ms:
                break
            if b > t:
                kept.extend(range(t, min(a, end_ms), step))
                t = max(t, b + (first - b) % step)  # the first instant at or after b
        kept.extend(range(t, end_ms, step))
        return kept

    def pod_scrapes_ms(self, pod: Pod, at_ms: int) -> list[int]:
        """Instants at which a scrape saw ``pod`` alive (it exists in [started_at, ended_at))."""
        end_ms = at_ms + 1 if pod.ended_at_ms is None else min(pod.ended_at_ms, at_ms + 1)
        return self.scrapes_ms(pod.started_at_ms, end_ms)


def counted_by_subquery(scrape_ms: int, *, eval_at_ms: int, window_ms: int, step_ms: int) -> bool:
    """Does a ``[window:step]`` subquery at ``eval_at`` count this sample (once)?

    Steps are the multiples of ``step_ms`` in [eval_at - window, eval_at] (both ends
    included in Prometheus 2.x); each step takes the latest sample no older than the lookback,
    which we set to the scrape interval — what staleness markers give a live server. So a
    sample is counted by the step at or just after it, if that step lies in the range.
    """
    step_at_ms = -(-scrape_ms // step_ms) * step_ms  # ceil to the next step
    return eval_at_ms - window_ms <= step_at_ms <= eval_at_ms


def sampled_usage(
    pods: list[Pod],
    model: ScrapeModel,
    *,
    eval_at_ms: int = EVAL_AT_MS,
    window_ms: int = WINDOW_MS,
    step_ms: int = SCRAPE_INTERVAL_MS,
) -> tuple[dict[str, Usage], set[str]]:
    """What summing the ``[30d:]`` subquery's samples × scrape interval yields, per user.

    Returns the usage (each counted sample stands for ``model.interval_ms``) and the uids of
    pods that held resources in the window but contributed no sample at all.
    """
    usage: dict[str, Usage] = {}
    missed: set[str] = set()
    for pod in pods:
        if overlap_ms(pod, eval_at_ms - window_ms, eval_at_ms) == 0:
            continue
        n = sum(
            counted_by_subquery(t, eval_at_ms=eval_at_ms, window_ms=window_ms, step_ms=step_ms)
            for t in model.pod_scrapes_ms(pod, eval_at_ms)
        )
        if n == 0:
            missed.add(pod.pod_uid)
        held_ms = n * model.interval_ms
        usage[pod.username] = usage.get(pod.username, Usage()) + Usage(
            pod.memory_bytes * held_ms, pod.cpu_millicores * held_ms, pod.gpu_count * held_ms
        )
    return usage, missed


def short_pods_in_window(
    pods: list[Pod],
    *,
    eval_at_ms: int = EVAL_AT_MS,
    window_ms: int = WINDOW_MS,
    shorter_than_ms: int = SCRAPE_INTERVAL_MS,
) -> list[Pod]:
    """Pods that held resources inside the window for less than one scrape interval in total."""
    return [
        p
        for p in pods
        if p.duration_ms(eval_at_ms) < shorter_than_ms
        and overlap_ms(p, eval_at_ms - window_ms, eval_at_ms) > 0
    ]


def write_import_jsonl(pods: list[Pod], path: Path) -> None:
    """The import format: quantities as Kubernetes strings, times ISO 8601 with offset."""
    with path.open("w") as f:
        for p in pods:
            row = {
                "username": p.username,
                "servername": p.servername,
                "pod_uid": p.pod_uid,
                "namespace": p.namespace,
                "pod_name": p.pod_name,
                "started_at": iso(p.started_at_ms),
                "ended_at": None if p.ended_at_ms is None else iso(p.ended_at_ms),
                "cpu": f"{p.cpu_millicores}m",
                "memory": f"{p.memory_bytes // GIB}Gi",
                "gpu": p.gpu_count,
            }
            f.write(json.dumps(row) + "\n")


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True, slots=True)
class ErrorStats:
    """How far one method's per-user numbers are from the ground truth, for one resource."""

    users: int  # users with non-zero true usage (percentages are relative to it)
    mean_abs_percent: float
    worst_abs_percent: float
    mean_abs_hours: float
    worst_abs_hours: float
    exact_users: int  # |error| below a micro-hour: what float arithmetic can call exact


def error_stats(
    measured: dict[str, dict[str, float | Fraction]],
    truth: dict[str, dict[str, Fraction]],
    resource: str,
) -> ErrorStats:
    """Compare ``measured[user][resource]`` (missing = 0) with the truth over all true users."""
    abs_hours, abs_percent = [], []
    for user, hours in truth.items():
        true = hours[resource]
        if true == 0:
            continue
        error = abs(Fraction(measured.get(user, {}).get(resource, 0)) - true)
        abs_hours.append(float(error))
        abs_percent.append(float(error / true * 100))
    if not abs_hours:
        return ErrorStats(0, 0.0, 0.0, 0.0, 0.0, 0)
    return ErrorStats(
        users=len(abs_hours),
        mean_abs_percent=sum(abs_percent) / len(abs_percent),
        worst_abs_percent=max(abs_percent),
        mean_abs_hours=sum(abs_hours) / len(abs_hours),
        worst_abs_hours=max(abs_hours),
        exact_users=sum(e < 1e-6 for e in abs_hours),
    )
