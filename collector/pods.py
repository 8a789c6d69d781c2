"""Pure pod parsing: a Kubernetes pod (its JSON dict shape) → what the ledger charges.

No I/O and no clock: the caller passes ``observed_at``. The rules are in docs/accounting.md ("What is
charged") and docs/collector.md; the Kubernetes references are linked where they apply.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ledger.core.quantities import QuantityError, cpu_millicores, device_count, memory_bytes
from ledger.core.segment_plan import OomKill, PodView, Resources

Pod = dict[str, Any]
CHARGE_BASES = ("requests", "limits", "max")


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


def _amount(short: str, quantity: Any, where: str) -> int:
    if short == "cpu":
        return cpu_millicores(quantity, where=where)
    if short == "memory":
        return memory_bytes(quantity, where=where)
    return device_count(quantity, where=where)


def _container_amounts(
    resources: dict | None, names: dict[str, str], basis: str, where: str
) -> dict[str, int]:
    """One container's chargeable amount per short resource name.

    Kubernetes defaults a missing request to the limit; with no limit, ``limits`` falls back
    to the request (an unlimited container is charged what it reserved).
    https://kubernetes.io/docs/concepts/configuration/manage-resources-containers/
    """
    resources = resources or {}
    requests = resources.get("requests") or {}
    limits = resources.get("limits") or {}
    out: dict[str, int] = {}
    for short, k8s_name in names.items():
        limit_q = limits.get(k8s_name)
        request_q = requests.get(k8s_name, limit_q)
        request = (
            0 if request_q is None else _amount(short, request_q, f"{where} request {k8s_name}")
        )
        limit = None if limit_q is None else _amount(short, limit_q, f"{where} limit {k8s_name}")
        if basis == "requests":
            out[short] = request
        elif basis == "limits":
            out[short] = request if limit is None else limit
        else:
            out[short] = request if limit is None else max(request, limit)
    return out


def effective_amounts(pod: Pod, names: dict[str, str], basis: str) -> dict[str, int]:
    """max(sum of app containers (+ sidecars), max of each init container (+ sidecars started
    before it)) + pod overhead, per resource.

    https://kubernetes.io/docs/concepts/workloads/pods/init-containers/#resource-sharing-within-containers
    https://kubernetes.io/docs/concepts/workloads/pods/sidecar-containers/#resource-sharing-within-containers
    https://kubernetes.io/docs/concepts/scheduling-eviction/pod-overhead/
    App containers use ``status.containerStatuses[].resources`` when present: after an
    in-place resize that is what the kubelet actually applied, while spec is only desired.
    https://kubernetes.io/docs/tasks/configure-pod-container/resize-container-resources/
    """
    spec = pod.get("spec") or {}
    actual = {
        s.get("name"): s["resources"]
        for s in (pod.get("status") or {}).get("containerStatuses") or []
        if s.get("resources")
    }
    app_sum = dict.fromkeys(names, 0)
    for container in spec.get("containers") or []:
        name = container.get("name")
        resources = actual.get(name, container.get("resources"))
        for short, value in _container_amounts(
            resources, names, basis, f"container {name}"
        ).items():
            app_sum[short] += value
    sidecars = dict.fromkeys(names, 0)
    init_max = dict.fromkeys(names, 0)
    for container in spec.get("initContainers") or []:
        name = container.get("name")
        amounts = _container_amounts(
            container.get("resources"), names, basis, f"init container {name}"
        )
        is_sidecar = container.get("restartPolicy") == "Always"
        for short, value in amounts.items():
            if is_sidecar:
                sidecars[short] += value
                init_max[short] = max(init_max[short], sidecars[short])
            else:
                init_max[short] = max(init_max[short], value + sidecars[short])
    overhead = spec.get("overhead") or {}
    out = {}
    for short, k8s_name in names.items():
        extra = (
            0
            if k8s_name not in overhead
            else _amount(short, overhead[k8s_name], f"overhead {k8s_name}")
        )
        out[short] = max(app_sum[short] + sidecars[short], init_max[short]) + extra
    return out


def resource_names(extended: dict[str, str]) -> dict[str, str]:
    """Short name → Kubernetes resource name, cpu and memory first."""
    return {"cpu": "cpu", "memory": "memory", **extended}


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


def oom_kills(pod: Pod, names: dict[str, str]) -> tuple[OomKill, ...]:
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
    extended: dict[str, str],
    charge_basis: str = "requests",
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
    names = resource_names(extended)
    try:
        amounts = effective_amounts(pod, names, charge_basis)
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
        oom_kills=oom_kills(pod, names),
    )
