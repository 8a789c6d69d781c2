"""Pure container parsing: a Docker container (its inspect JSON) → what the ledger charges.

The Docker counterpart of collector/pods.py, producing the same ``PodView`` so that one
planner (ledger/core/segment_plan.py) and one writer charge pods and containers alike. No I/O
and no clock. Field meanings: https://docs.docker.com/reference/api/engine/version/v1.41/#tag/Container/operation/ContainerInspect

What ``requests`` and ``limits`` mean for a container is ledger/core/docker_resources.py
(shared with the hub hook; docs/docker.md has the table). A missing request is the limit, as
in Kubernetes, so a container that sets only limits (the usual DockerSpawner hub) is charged
its limits under every charge basis.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from collector.pods import Identity, PodSkipped, as_resources
from ledger.core.accounting import Accounting
from ledger.core.docker_resources import gpu_count, host_amounts
from ledger.core.quantities import QuantityError
from ledger.core.segment_plan import OomKill, PodView

SOURCE = "docker"  # segments.source of rows this parser's views open
_HOLDING = {"running", "paused", "removing"}  # states in which the container holds resources
_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")


@dataclass(frozen=True, slots=True)
class Observation:
    """One container as the source saw it: the inspect JSON, and the event that made us look
    (its Engine API ``Action`` and time), if any."""

    container: dict[str, Any]
    action: str | None = None
    event_at: datetime | None = None


def parse_time(value: str | None) -> datetime | None:
    """Docker's RFC 3339 with nanoseconds → aware UTC datetime (microseconds); the zero
    time ``0001-01-01T00:00:00Z`` (never happened) → None."""
    if not value or value.startswith("0001-01-01"):
        return None
    m = _TIME.match(value)
    if m is None:
        raise ValueError(f"{value!r} is not an RFC 3339 time")
    fraction = (m[2] or "")[:6].ljust(6, "0")
    zone = "+00:00" if m[3] == "Z" else m[3]
    return datetime.fromisoformat(f"{m[1]}.{fraction}{zone}").astimezone(UTC)


def event_time(event: dict[str, Any]) -> datetime | None:
    """An Engine API event's time (``timeNano``, else ``time``)."""
    if event.get("timeNano"):
        return datetime.fromtimestamp(int(event["timeNano"]) / 1e9, UTC)
    if event.get("time"):
        return datetime.fromtimestamp(int(event["time"]), UTC)
    return None


def charged_amounts(host: dict, accounting: Accounting, where: str) -> dict[str, int]:
    """HostConfig → charged amount per short resource name, by the one charge-basis rule."""
    amounts = host_amounts(
        memory_bytes=int(host.get("Memory") or 0),
        memory_reservation_bytes=int(host.get("MemoryReservation") or 0),
        nano_cpus=int(host.get("NanoCpus") or 0),
        cpu_quota=int(host.get("CpuQuota") or 0),
        cpu_period=int(host.get("CpuPeriod") or 0),
        cpu_shares=int(host.get("CpuShares") or 0),
        gpus=gpu_count(
            host.get("DeviceRequests"), f"{where} DeviceRequests", accounting.docker_all_gpus
        ),
    )
    return {
        short: accounting.charged(*amounts.get(short, (None, None))) for short in accounting.names()
    }


def _name(container: dict) -> str:
    return (container.get("Name") or "").lstrip("/")


def parse_container(
    observation: Observation,
    identity: Identity,
    *,
    accounting: Accounting,
    deleted: bool = False,
    observed_at: datetime,
) -> PodView:
    """Everything the ledger needs from one container. Raises PodSkipped if it cannot be
    charged. ``deleted``: the container is gone (``destroy`` event) at ``observed_at``."""
    container = observation.container
    uid = container.get("Id")
    if not uid:
        raise PodSkipped("missing_uid", f"container {_name(container)!r} has no Id")
    where = f"container {_name(container)}"
    labels = (container.get("Config") or {}).get("Labels") or {}
    username = labels.get(identity.username_key)
    if not isinstance(username, str) or not username:
        raise PodSkipped("missing_username", f"{where}: no {identity.username_key} label")
    servername = labels.get(identity.servername_key or "", "") or ""
    host = container.get("HostConfig") or {}
    try:
        amounts = charged_amounts(host, accounting, where)
    except (QuantityError, TypeError, ValueError) as exc:
        raise PodSkipped("bad_quantity", f"{where}: {exc}") from None
    state = container.get("State") or {}
    try:
        started_at = parse_time(state.get("StartedAt"))
        finished_at = parse_time(state.get("FinishedAt"))
    except ValueError as exc:
        raise PodSkipped("bad_time", f"{where}: State: {exc}") from None
    status = state.get("Status") or ""
    ended_at = end_reason = previous_run_ended_at = None
    if started_at is not None:
        holding = status in _HOLDING
        if holding and finished_at is not None and finished_at <= started_at:
            previous_run_ended_at = finished_at  # the last run's end, kept while this one runs
        if not holding:
            ended_at, end_reason = max(finished_at or observed_at, started_at), "terminated"
        if deleted and (ended_at is None or observed_at < ended_at):
            ended_at, end_reason = max(observed_at, started_at), "deleted"
    kills: tuple[OomKill, ...] = ()
    if state.get("OOMKilled") and started_at is not None:
        # Docker keeps one flag per run; the kill time is the run's end once it exited, else
        # the ``oom`` event's time (the OOM killer took a process and the container lives on).
        live_kill_at = observation.event_at if observation.action == "oom" else None
        killed_at = ended_at if end_reason == "terminated" else live_kill_at
        if killed_at is not None:
            memory = int(host.get("Memory") or 0) or None
            restarts = int(container.get("RestartCount") or 0)
            kills = (OomKill(_name(container), killed_at, restarts, memory, started_at),)
    resized_at = observation.event_at if observation.action == "update" else None
    return PodView(
        uid=uid,
        namespace="",
        name=_name(container),
        workload=identity.workload,
        username=username,
        servername=servername,
        resources=as_resources(amounts),
        started_at=started_at,
        ended_at=ended_at,
        end_reason=end_reason,
        resize_requested_at=resized_at,
        oom_kills=kills,
        previous_run_ended_at=previous_run_ended_at,
        source=SOURCE,
    )
