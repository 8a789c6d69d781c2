"""Pure pod parsing: a Kubernetes pod (its JSON dict shape) → what the ledger charges.

No I/O and no clock: the caller passes ``observed_at``. The rules are in docs/collector.md and
docs/accounting.md; what a pod's containers are charged is ``ledger.core.accounting``, the
rule the hub hook applies to a spawner's traits too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ledger.core.accounting import Accounting, pod_amounts
from ledger.core.quantities import QuantityError, memory_bytes
from ledger.core.segment_plan import OomKill, PodView, Resources

Pod = dict[str, Any]


class PodSkipped(ValueError):
    """The pod cannot be charged; ``reason`` is a low-cardinality label for the metric."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Identity:
    """Where a workload's owner comes from: (annotation or label key) per field."""

    workload: str
    username_key: str
    username_from_label: bool = False
    servername_key: str | None = None
    servername_from_label: bool = False


def parse_time(value: str | None) -> datetime | None:
    """metav1.Time (RFC 3339, ``Z``) → aware UTC datetime."""
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def _identity_value(meta: dict, key: str, from_label: bool) -> str | None:
    source = meta.get("labels" if from_label else "annotations") or {}
    value = source.get(key)
    return value if isinstance(value, str) else None


def as_resources(amounts: dict[str, int]) -> Resources:
    extended = tuple(
        sorted((k, v) for k, v in amounts.items() if k not in {"cpu", "memory", "gpu"} and v)
    )
    return (amounts.get("cpu", 0), amounts.get("memory", 0), amounts.get("gpu", 0), extended)


def _condition_since(status: dict, kinds: tuple[str, ...]) -> datetime | None:
    for condition in status.get("conditions") or []:
        if condition.get("type") in kinds and condition.get("status") == "True":
            return parse_time(condition.get("lastTransitionTime"))
    return None


def start_time(pod: Pod) -> datetime | None:
    """When the pod got a node: the PodScheduled condition, else status.startTime.
    https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#pod-conditions"""
    status = pod.get("status") or {}
    return _condition_since(status, ("PodScheduled",)) or parse_time(status.get("startTime"))


def terminated_at(pod: Pod) -> datetime | None:
    """The latest finishedAt when *every* app container has terminated, else None."""
    spec_names = {c.get("name") for c in (pod.get("spec") or {}).get("containers") or []}
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    finished: list[datetime] = []
    for status in statuses:
        done = (status.get("state") or {}).get("terminated")
        if not done or not done.get("finishedAt"):
            return None
        finished.append(parse_time(done["finishedAt"]))
    if not finished or {s.get("name") for s in statuses} != spec_names:
        return None
    return max(finished)


def effective_amounts(pod: Pod, accounting: Accounting) -> dict[str, int]:
    """What the pod is charged per short resource name (``ledger.core.accounting.pod_amounts``),
    with the resources the kubelet reports it applied to app containers where present."""
    applied = {
        s.get("name"): s["resources"]
        for s in (pod.get("status") or {}).get("containerStatuses") or []
        if s.get("resources")
    }
    return pod_amounts(pod.get("spec") or {}, accounting, applied=applied)


def oom_kills(pod: Pod) -> tuple[OomKill, ...]:
    """Terminations with reason OOMKilled, from state and lastState of every container."""
    kills = []
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    limits = {
        c.get("name"): ((c.get("resources") or {}).get("limits") or {}).get("memory")
        for c in (spec.get("containers") or []) + (spec.get("initContainers") or [])
    }
    statuses = (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or [])
    for container in statuses:
        for state in (container.get("state") or {}, container.get("lastState") or {}):
            done = state.get("terminated") or {}
            killed_at = parse_time(done.get("finishedAt"))
            if done.get("reason") != "OOMKilled" or killed_at is None:
                continue
            name = container.get("name") or ""
            limit_q = ((container.get("resources") or {}).get("limits") or {}).get("memory")
            limit_q = limit_q or limits.get(name)
            try:
                limit = None if limit_q is None else memory_bytes(limit_q)
            except QuantityError:
                limit = None
            restarts = int(container.get("restartCount") or 0)
            kills.append(OomKill(name, killed_at, restarts, limit))
    return tuple(dict.fromkeys(kills))


def parse_pod(
    pod: Pod,
    identity: Identity,
    *,
    accounting: Accounting,
    deleted: bool = False,
    observed_at: datetime,
) -> PodView:
    """Everything the ledger needs from one pod object. Raises PodSkipped if it cannot be
    charged (missing identity, bad quantity, no uid). ``deleted``: the object came with a
    DELETED watch event (or is gone from a list) at ``observed_at``."""
    meta = pod.get("metadata") or {}
    uid = meta.get("uid")
    if not uid:
        raise PodSkipped(
            "missing_uid", f"pod {meta.get('namespace')}/{meta.get('name')} has no uid"
        )
    where = f"pod {meta.get('namespace')}/{meta.get('name')}"
    username = _identity_value(meta, identity.username_key, identity.username_from_label)
    if not username:
        kind = "label" if identity.username_from_label else "annotation"
        raise PodSkipped("missing_username", f"{where}: no {identity.username_key} {kind}")
    servername = ""
    if identity.servername_key:
        servername = (
            _identity_value(meta, identity.servername_key, identity.servername_from_label) or ""
        )
    try:
        amounts = effective_amounts(pod, accounting)
    except QuantityError as exc:
        raise PodSkipped("bad_quantity", f"{where}: {exc}") from None
    started_at = start_time(pod)
    ended_at, end_reason = None, None
    if started_at is not None:
        ended_at = terminated_at(pod)
        end_reason = "terminated" if ended_at else None
        if ended_at is None and (pod.get("status") or {}).get("phase") in {"Succeeded", "Failed"}:
            ended_at, end_reason = observed_at, "terminated"  # no finishedAt: the best we know
        if deleted:
            # The pod is gone by the deletionTimestamp (grace period end) at the latest.
            deletion = [observed_at, parse_time(meta.get("deletionTimestamp")) or observed_at]
            gone_at = min(deletion)
            if ended_at is None or gone_at < ended_at:
                ended_at, end_reason = gone_at, "deleted"
        if ended_at is not None and ended_at < started_at:
            ended_at = started_at
    status = pod.get("status") or {}
    return PodView(
        uid=uid,
        namespace=meta.get("namespace") or "",
        name=meta.get("name") or "",
        workload=identity.workload,
        username=username,
        servername=servername,
        resources=as_resources(amounts),
        started_at=started_at,
        ended_at=ended_at,
        end_reason=end_reason,
        resize_requested_at=_condition_since(status, ("PodResizeInProgress",)),
        oom_kills=oom_kills(pod),
    )
