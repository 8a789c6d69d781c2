"""Seeded, realistic JupyterHub usage for benchmarks, demos and tests: pure Python, no numpy.

    from benchmarks.datagen import generate_segments, generate_groups, load_into, write_jsonl

    segments = generate_segments(10_000, 3_000_000, seed=0)   # iterator of Segment tuples
    await load_into(url, users=10_000, segments=3_000_000, seed=0)  # COPY straight in
    write_jsonl("usage.jsonl", generate_segments(100, 5_000))  # the `quota-ledger import` format
    write_groups("groups.json", generate_groups(100))          # username -> [group]

The shape of the data (same seed → same rows, byte for byte):

* ``n_users`` users in the four groups of examples/policy.yaml (regular 70 %, power 18 %, dev 9 %, gpu-dev 3 %),
  named like ``ana.kim0042``.
* Exactly ``n_segments`` segments over the ``days`` (default 90) before ``at`` (default
  2026-11-01T00:00:00Z). Activity per user is heavy-tailed (log-normal weights, σ = 1.2: the
  busiest user of 10,000 has ~50× the mean, the 99th percentile ~8×); about a fifth of the
  users stopped being active some time before ``at``, some joined late.
* Each user has a default server and, the busier ones, 1–3 named servers. One server never
  runs twice at once: segments of a server are sequential (a segment ends at the latest when
  the next one starts). Durations are log-normal (median 40 min, σ = 1.5, clipped to
  1 min … 5 days): many short sessions, a long tail of servers left running for days.
* Sizes are KubeSpawner-style profiles: 1/2/4/8/16 GiB with 0.5–4 CPUs; gpu-dev users run
  1- or 2-GPU servers part of the time. Bigger groups pick bigger profiles.
* A segment still running at ``at`` has no end (``ended_at`` None): a few hundred per
  10,000 users, the last segment of servers that were busy at ``at``.

Times are whole seconds (UTC); amounts are base units (millicores, bytes, devices).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

EVAL_AT = datetime(2026, 11, 1, tzinfo=UTC)
DAYS = 90
NAMESPACE = "jhub"
GIB = 1024**3

GROUPS = ("regular", "power", "dev", "gpu-dev")
GROUP_WEIGHTS = (0.70, 0.18, 0.09, 0.03)
# how much busier than a regular user a member of the group is, on average
GROUP_ACTIVITY = {"regular": 1.0, "power": 1.6, "dev": 2.2, "gpu-dev": 2.2}

# (cpu_millicores, memory_bytes, gpu_count)
PROFILES = (
    (500, 1 * GIB, 0),
    (1000, 2 * GIB, 0),
    (2000, 4 * GIB, 0),
    (2000, 8 * GIB, 0),
    (4000, 16 * GIB, 0),
)
GPU_PROFILES = ((4000, 16 * GIB, 1), (4000, 16 * GIB, 2))
# relative weights of PROFILES for each group's members
PROFILE_WEIGHTS = {
    "regular": (40, 35, 20, 5, 0),
    "power": (15, 25, 35, 20, 5),
    "dev": (5, 15, 30, 30, 20),
    "gpu-dev": (5, 10, 25, 30, 30),
}
GPU_SHARE = 0.4  # of a gpu-dev user's segments

DURATION_MEDIAN_SECONDS = 40 * 60
DURATION_SIGMA = 1.5
DURATION_MIN_SECONDS = 60
DURATION_MAX_SECONDS = 5 * 86400
ACTIVITY_SIGMA = 1.2

SERVER_NAMES = ("gpu", "analysis", "dask", "teaching", "scratch", "big", "r", "julia")
_FIRST = (
    "ana kim lee sam alex jo max eva noor ravi mia leo ines yuki omar lena tom zoe ivan aya "
    "ben chen dana eli fatima gus hana igor jana kai luis maya nils olga pia quinn rosa sven "
    "tara uma vic wen xena yara zack"
).split()
_LAST = (
    "smith garcia kim nguyen patel mueller rossi sato silva ivanova cohen okafor larsen novak "
    "haddad tanaka jensen dubois moreau lopez"
).split()

# columns of the ``segments`` table that :func:`copy_records` fills, in order
COPY_COLUMNS = (
    "pod_uid", "namespace", "pod_name", "username", "servername", "workload",
    "cpu_millicores", "memory_bytes", "gpu_count", "started_at", "ended_at",
    "last_seen_at", "end_reason", "source",
)  # fmt: skip


class Segment(NamedTuple):
    """One generated segment, in the ledger's base units."""

    username: str
    servername: str
    pod_uid: str
    namespace: str
    pod_name: str
    started_at: datetime
    ended_at: datetime | None  # None: still running at the evaluation time
    cpu_millicores: int
    memory_bytes: int
    gpu_count: int


class User(NamedTuple):
    username: str
    group: str
    weight: float  # relative activity
    active_from: int  # seconds after the start of the span
    active_until: int
    servers: tuple[str, ...]  # "" = the default server
    profile_weights: tuple[int, ...]


def _rng(seed: int, stream: str) -> random.Random:
    # str seeds are hashed with SHA-512: stable across runs and Python versions
    return random.Random(f"quota-ledger-datagen/{seed}/{stream}")


def generate_users(n_users: int = 10_000, *, seed: int = 0, days: int = DAYS) -> list[User]:
    """The users, their group, how busy they are and when they were active."""
    rng = _rng(seed, "users")
    span = days * 86400
    users = []
    for index in range(n_users):
        name = f"{rng.choice(_FIRST)}.{rng.choice(_LAST)}{index:04d}"
        group = rng.choices(GROUPS, weights=GROUP_WEIGHTS)[0]
        weight = rng.lognormvariate(0.0, ACTIVITY_SIGMA) * GROUP_ACTIVITY[group]
        active_from = 0 if rng.random() < 0.7 else rng.randrange(0, span * 2 // 3)
        if rng.random() < 0.8:
            active_until = span
        else:  # left (or went quiet) before the evaluation time
            active_until = rng.randrange(active_from + 86400, span + 1)
        # busier users keep more named servers
        named = min(3, int(math.log2(1 + weight)) + (rng.random() < 0.15))
        servers = ("", *rng.sample(SERVER_NAMES, named))
        users.append(
            User(name, group, weight, active_from, active_until, servers, PROFILE_WEIGHTS[group])
        )
    return users


def generate_groups(n_users: int = 10_000, *, seed: int = 0) -> dict[str, list[str]]:
    """username → [group], the ``--groups-file`` mapping for ``quota-ledger report``."""
    return {u.username: [u.group] for u in generate_users(n_users, seed=seed)}


def _allocate(users: list[User], n_segments: int, rng: random.Random) -> list[int]:
    """Segments per user: at least one each, the rest in proportion to activity."""
    n = len(users)
    if n_segments < n:
        raise ValueError(f"need at least one segment per user: {n_segments} < {n} users")
    # weight by activity × active time, so a user active for a week is not as busy as one
    # active all quarter
    weights = [u.weight * (u.active_until - u.active_from) for u in users]
    counts = [1] * n
    for index in rng.choices(range(n), weights=weights, k=n_segments - n):
        counts[index] += 1
    return counts


_LOG_MEDIAN = math.log(DURATION_MEDIAN_SECONDS)


def _duration(gauss) -> int:
    seconds = math.exp(_LOG_MEDIAN + DURATION_SIGMA * gauss())
    return int(min(DURATION_MAX_SECONDS, max(DURATION_MIN_SECONDS, seconds)))


def _uid(bits: int) -> str:
    """A version-4-shaped UUID string from 128 random bits (cheaper than uuid.UUID)."""
    h = f"{bits:032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{h[16:20]}-{h[20:]}"


def generate_segments(
    n_users: int = 10_000,
    n_segments: int = 3_000_000,
    *,
    seed: int = 0,
    at: datetime = EVAL_AT,
    days: int = DAYS,
) -> Iterator[Segment]:
    """Exactly ``n_segments`` segments of ``n_users`` users over ``days`` before ``at``.

    Streams user by user (memory stays small); deterministic for a given seed.
    """
    if at.tzinfo is None:
        raise ValueError("at must be timezone-aware")
    users = generate_users(n_users, seed=seed, days=days)
    rng = _rng(seed, "segments")
    counts = _allocate(users, n_segments, rng)
    span = days * 86400
    origin = at - timedelta(seconds=span)
    gauss = rng.gauss
    for user, count in zip(users, counts, strict=True):
        # the default server gets the most use; named servers share the rest
        server_weights = [3.0] + [1.0] * (len(user.servers) - 1)
        per_server = [0] * len(user.servers)
        for index in rng.choices(range(len(user.servers)), weights=server_weights, k=count):
            per_server[index] += 1
        favourite = rng.choices(range(len(PROFILES)), weights=user.profile_weights)[0]
        gpu_user = user.group == "gpu-dev"
        for servername, k in zip(user.servers, per_server, strict=True):
            if not k:
                continue
            lo, hi = user.active_from, user.active_until
            # distinct start seconds (a server starts at most once a second)
            starts = (
                sorted(rng.sample(range(lo, hi), k)) if hi - lo >= k else list(range(lo, lo + k))
            )
            pod_name = f"jupyter-{user.username}" + (f"--{servername}" if servername else "")
            for i, start in enumerate(starts):
                end = start + _duration(gauss)
                if i + 1 < len(starts):
                    end = min(end, starts[i + 1])
                if gpu_user and rng.random() < GPU_SHARE:
                    cpu, memory, gpu = rng.choice(GPU_PROFILES)
                elif rng.random() < 0.8:
                    cpu, memory, gpu = PROFILES[favourite]
                else:
                    cpu, memory, gpu = rng.choice(PROFILES)
                yield Segment(
                    username=user.username,
                    servername=servername,
                    pod_uid=_uid(rng.getrandbits(128)),
                    namespace=NAMESPACE,
                    pod_name=pod_name,
                    started_at=origin + timedelta(seconds=start),
                    ended_at=None if end >= span else origin + timedelta(seconds=end),
                    cpu_millicores=cpu,
                    memory_bytes=memory,
                    gpu_count=gpu,
                )


# -- the import format (`quota-ledger import FILE`) -------------------------------------------


def _iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def _cpu_text(millicores: int) -> str:
    return str(millicores // 1000) if millicores % 1000 == 0 else f"{millicores}m"


def _memory_text(n: int) -> str:
    return f"{n // GIB}Gi" if n % GIB == 0 else str(n)


def to_import_row(segment: Segment) -> dict:
    """The JSON-Lines / CSV row ``quota-ledger import`` reads (quantities as strings)."""
    return {
        "username": segment.username,
        "started_at": _iso(segment.started_at),
        "ended_at": None if segment.ended_at is None else _iso(segment.ended_at),
        "cpu": _cpu_text(segment.cpu_millicores),
        "memory": _memory_text(segment.memory_bytes),
        "gpu": segment.gpu_count,
        "servername": segment.servername,
        "pod_uid": segment.pod_uid,
        "namespace": segment.namespace,
    }


def write_jsonl(path: str | Path, segments: Iterable[Segment]) -> int:
    """Write segments as JSON Lines in the import format; returns the number of lines."""
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    n = 0
    with open(path, "w", encoding="utf-8") as out:
        batch = []
        for segment in segments:
            batch.append(dumps(to_import_row(segment)))
            n += 1
            if len(batch) >= 10_000:
                out.write("\n".join(batch) + "\n")
                batch.clear()
        if batch:
            out.write("\n".join(batch) + "\n")
    return n


def write_groups(path: str | Path, groups: Mapping[str, list[str]]) -> None:
    """The username → [group] mapping as JSON (``quota-ledger report --groups-file``)."""
    Path(path).write_text(json.dumps(groups, indent=0, sort_keys=True) + "\n", encoding="utf-8")


# -- straight into a database -----------------------------------------------------------------


def copy_records(segments: Iterable[Segment]) -> Iterator[tuple]:
    """Tuples for ``COPY segments (COPY_COLUMNS)``, as the importer would write them."""
    for s in segments:
        yield (
            s.pod_uid, s.namespace, s.pod_name, s.username, s.servername, "import",
            s.cpu_millicores, s.memory_bytes, s.gpu_count, s.started_at, s.ended_at,
            s.ended_at or s.started_at, None if s.ended_at is None else "imported", "import",
        )  # fmt: skip


async def load_into(
    engine_url: str,
    segments: Iterable[Segment] | None = None,
    *,
    users: int = 10_000,
    n_segments: int = 3_000_000,
    seed: int = 0,
    at: datetime = EVAL_AT,
    days: int = DAYS,
    batch: int = 200_000,
    order: str = "time",
    groups: bool = True,
    analyze: bool = True,
) -> int:
    """COPY segments (generated from the arguments unless given) into a migrated database.

    ``order="time"`` (default) writes them in start order, as a collector would: one user's
    rows end up spread over the table as in production, which matters for any query that
    visits the heap (the generator yields user by user; ``order="generated"`` keeps that, and
    streams instead of holding every segment in memory, ~0.6 GB per million).

    Also fills ``user_groups`` with each user's group (``groups=True``), then runs
    ``VACUUM ANALYZE`` on both tables (``analyze=True``) so the planner has statistics and
    index-only scans have a visibility map, as autovacuum would after a while in production.
    Returns the number of segments written. Not idempotent: load into an empty ledger.
    """
    import asyncpg

    from ledger.store.db import asyncpg_params

    if order not in ("time", "generated"):
        raise ValueError(f"order must be 'time' or 'generated', not {order!r}")
    if segments is None:
        segments = generate_segments(users, n_segments, seed=seed, at=at, days=days)
    if order == "time":
        segments = sorted(segments, key=lambda s: s.started_at)
    conn = await asyncpg.connect(**asyncpg_params(engine_url))
    written = 0
    try:
        if groups:  # first, as on a hub: the segments' triggers add them to the group pools
            rows = [(u.username, u.group, at) for u in generate_users(users, seed=seed, days=days)]
            await conn.copy_records_to_table(
                "user_groups", records=rows, columns=("username", "group_name", "synced_at")
            )
        chunk: list[tuple] = []
        for record in copy_records(segments):
            chunk.append(record)
            if len(chunk) >= batch:
                await conn.copy_records_to_table("segments", records=chunk, columns=COPY_COLUMNS)
                written += len(chunk)
                chunk = []
        if chunk:
            await conn.copy_records_to_table("segments", records=chunk, columns=COPY_COLUMNS)
            written += len(chunk)
        if analyze:
            await conn.execute("VACUUM ANALYZE segments")
            await conn.execute("VACUUM ANALYZE user_groups")
    finally:
        await conn.close()
    return written
