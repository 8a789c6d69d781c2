"""Pod objects and lifecycles as a Zero-to-JupyterHub hub (KubeSpawner 7) produces them.

The lifecycle helpers are pure: each takes a pod dict and an explicit time `at` (tz-aware UTC)
and returns a new pod dict; nothing here reads the clock except `spawn`'s default. Apply them
to a `FakeApiServer` with `SimulatedHub` (one call = the API writes a real cluster makes), or by
hand: `server.update_pod(ns, name, lambda pod: run(pod, at))`.

Object shapes follow https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/ and
KubeSpawner's pod template (names, labels, annotations, `restartPolicy: OnFailure`,
`delete_grace_period = 1`).
"""

from __future__ import annotations

import copy
import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

from quota_ledger_demo.fake_store import Pod, format_time
from quota_ledger_demo.kubespawner_names import pod_name, safe_slug

NOTEBOOK = "notebook"
IMAGE = "quay.io/jupyterhub/k8s-singleuser-sample:4.3.1"
# KubeSpawner deletes pods with gracePeriodSeconds=1 (KubeSpawner.delete_grace_period).
KUBESPAWNER_GRACE_PERIOD_SECONDS = 1

# --- building pods ------------------------------------------------------------------------


def _resources(
    cpu: str, memory: str, gpu: int, cpu_limit: str | None, memory_limit: str | None
) -> dict[str, Any]:
    requests: dict[str, str] = {"cpu": cpu, "memory": memory}
    limits: dict[str, str] = {"memory": memory_limit or memory}
    if cpu_limit:
        limits["cpu"] = cpu_limit
    if gpu:
        # Extended resources must have request == limit.
        requests["nvidia.com/gpu"] = limits["nvidia.com/gpu"] = str(gpu)
    return {"requests": requests, "limits": limits}


def spawn(
    user: str,
    server: str = "",
    *,
    cpu: str = "500m",
    memory: str = "1Gi",
    gpu: int = 0,
    cpu_limit: str | None = None,
    memory_limit: str | None = None,
    namespace: str = "default",
    init_containers: bool = True,
    overhead: dict[str, str] | None = None,
    at: datetime | None = None,
) -> Pod:
    """A freshly created, unscheduled singleuser pod (phase Pending)."""
    created_at = at or datetime.now(UTC)
    labels = {
        "app": "jupyterhub",
        "component": "singleuser-server",
        "heritage": "jupyterhub",
        "release": "jupyterhub",
        "chart": "jupyterhub-4.3.1",
        "hub.jupyter.org/network-access-hub": "true",
        "hub.jupyter.org/username": safe_slug(user, label=True),
        "hub.jupyter.org/servername": safe_slug(server, label=True) if server else "",
    }
    spec: dict[str, Any] = {
        "containers": [
            {
                "name": NOTEBOOK,
                "image": IMAGE,
                "args": ["jupyterhub-singleuser"],
                "ports": [{"containerPort": 8888, "name": "notebook-port", "protocol": "TCP"}],
                "resources": _resources(cpu, memory, gpu, cpu_limit, memory_limit),
            }
        ],
        "restartPolicy": "OnFailure",
        "schedulerName": "jupyterhub-user-scheduler",
        "serviceAccountName": "default",
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": 30,
        "enableServiceLinks": False,
    }
    if init_containers:
        # Z2JH's default init container that blocks the cloud metadata server.
        spec["initContainers"] = [
            {
                "name": "block-cloud-metadata",
                "image": "quay.io/jupyterhub/k8s-network-tools:4.3.1",
                "command": [
                    "iptables",
                    "--append",
                    "OUTPUT",
                    "--destination",
                    "169.254.169.254",
                    "--jump",
                    "DROP",
                ],
                "resources": {},
            }
        ]
    if overhead:
        # Set by the RuntimeClass admission controller; counts towards the pod's footprint.
        # https://kubernetes.io/docs/concepts/scheduling-eviction/pod-overhead/
        spec["runtimeClassName"] = "kata"
        spec["overhead"] = dict(overhead)
    limits = spec["containers"][0]["resources"]["limits"]
    qos = "Guaranteed" if limits.get("cpu") == cpu and limits["memory"] == memory else "Burstable"
    return {
        "metadata": {
            "name": pod_name(user, server),
            "namespace": namespace,
            "creationTimestamp": format_time(created_at),
            "labels": labels,
            "annotations": {"hub.jupyter.org/username": user, "hub.jupyter.org/servername": server},
        },
        "spec": spec,
        "status": {"phase": "Pending", "qosClass": qos},
    }


def _condition(pod: Pod, kind: str, status: bool, at: datetime, reason: str | None = None) -> None:
    conditions = pod["status"].setdefault("conditions", [])
    value = "True" if status else "False"
    condition = next((c for c in conditions if c["type"] == kind), None)
    if condition is None:
        condition = {"type": kind, "status": value, "lastProbeTime": None}
        condition["lastTransitionTime"] = format_time(at)
        conditions.append(condition)
    elif condition["status"] != value:
        # lastTransitionTime moves only when the status flips.
        condition.update(status=value, lastTransitionTime=format_time(at))
    condition.pop("reason", None)
    if reason and not status:
        condition["reason"] = reason


def _container_id(pod: Pod, name: str, restart_count: int) -> str:
    seed = f"{pod['metadata']['name']}/{name}/{restart_count}".encode()
    return "containerd://" + hashlib.sha256(seed).hexdigest()


def _status_of(
    pod: Pod, container: dict[str, Any], state: dict[str, Any], *, ready: bool
) -> dict[str, Any]:
    resources = copy.deepcopy(container.get("resources", {}))
    return {
        "name": container["name"],
        "image": container["image"],
        "imageID": container["image"] + "@sha256:" + "0" * 64,
        "containerID": _container_id(pod, container["name"], 0),
        "ready": ready,
        "started": "running" in state,
        "restartCount": 0,
        "state": state,
        "lastState": {},
        # Actual and allocated resources, reported since in-place resize (K8s 1.33 beta).
        "resources": resources,
        "allocatedResources": dict(resources.get("requests", {})),
    }


def schedule(pod: Pod, at: datetime, node: str = "node-1") -> Pod:
    """The scheduler binds the pod; the kubelet accepts it (startTime) and starts init."""
    pod = copy.deepcopy(pod)
    pod["spec"]["nodeName"] = node
    status = pod["status"]
    status.update(hostIP="10.0.0.1", startTime=format_time(at))
    _condition(pod, "PodScheduled", True, at)
    _condition(pod, "PodReadyToStartContainers", True, at)
    _condition(pod, "Initialized", not pod["spec"].get("initContainers"), at)
    for kind in ("Ready", "ContainersReady"):
        _condition(pod, kind, False, at, reason="ContainersNotReady")
    waiting = {"waiting": {"reason": "PodInitializing"}}
    status["initContainerStatuses"] = [
        _status_of(pod, c, {"waiting": {"reason": "ContainerCreating"}}, ready=False)
        for c in pod["spec"].get("initContainers", [])
    ]
    status["containerStatuses"] = [
        _status_of(pod, c, waiting, ready=False) for c in pod["spec"]["containers"]
    ]
    return pod


def run(pod: Pod, at: datetime) -> Pod:
    """Init containers completed, app containers running since `at`: phase Running."""
    pod = copy.deepcopy(pod)
    status = pod["status"]
    started = format_time(at)
    for init_status in status.get("initContainerStatuses", []):
        init_status.update(
            ready=True,
            started=False,
            state={
                "terminated": {
                    "exitCode": 0,
                    "reason": "Completed",
                    "startedAt": started,
                    "finishedAt": started,
                    "containerID": init_status["containerID"],
                }
            },
        )
    for container_status in status.get("containerStatuses", []):
        container_status.update(ready=True, started=True, state={"running": {"startedAt": started}})
    status.update(phase="Running", podIP="10.1.0.17", podIPs=[{"ip": "10.1.0.17"}])
    for kind in ("Initialized", "ContainersReady", "Ready"):
        _condition(pod, kind, True, at)
    return pod


def _set_resources(resources: dict[str, Any], cpu: str | None, memory: str | None) -> None:
    for key, value in (("cpu", cpu), ("memory", memory)):
        if value is None:
            continue
        resources.setdefault("requests", {})[key] = value
        if key in resources.get("limits", {}):
            resources["limits"][key] = value


def resize(
    pod: Pod,
    *,
    at: datetime,
    cpu: str | None = None,
    memory: str | None = None,
    in_progress: bool = False,
) -> Pod:
    """In-place resize of the notebook container (requests, and limits that were set).
    https://kubernetes.io/docs/tasks/configure-pod-container/resize-container-resources/

    `in_progress=True`: the `resize` subresource was written (spec, allocatedResources,
    condition PodResizeInProgress at `at`) but the kubelet has not actuated it yet.
    Otherwise the resize is complete: status `resources` match and the condition is gone —
    note a completed resize carries no timestamp of its own on the object."""
    pod = copy.deepcopy(pod)
    pod["metadata"]["generation"] = pod["metadata"].get("generation", 1) + 1
    container = next(c for c in pod["spec"]["containers"] if c["name"] == NOTEBOOK)
    _set_resources(container.setdefault("resources", {}), cpu, memory)
    status = pod["status"]
    for container_status in status.get("containerStatuses", []):
        if container_status["name"] == NOTEBOOK:
            container_status["allocatedResources"] = dict(
                container["resources"].get("requests", {})
            )
            if not in_progress:
                container_status["resources"] = copy.deepcopy(container["resources"])
    conditions = [c for c in status.get("conditions", []) if c["type"] != "PodResizeInProgress"]
    status["conditions"] = conditions
    if in_progress:
        _condition(pod, "PodResizeInProgress", True, at)
    return pod


def oom_kill(pod: Pod, at: datetime, restart: bool = True) -> Pod:
    """The notebook container is OOMKilled at `at`; with `restart` (restartPolicy OnFailure)
    the kubelet restarts it at once (lastState.terminated, restartCount + 1), else the pod
    ends in phase Failed."""
    pod = copy.deepcopy(pod)
    status = pod["status"]
    for container_status in status.get("containerStatuses", []):
        if container_status["name"] != NOTEBOOK:
            continue
        previous = container_status["state"].get("running", {})
        terminated = {
            "exitCode": 137,
            "reason": "OOMKilled",
            "startedAt": previous.get("startedAt", format_time(at)),
            "finishedAt": format_time(at),
            "containerID": container_status["containerID"],
        }
        if restart:
            count = container_status["restartCount"] + 1
            container_status.update(
                restartCount=count,
                lastState={"terminated": terminated},
                state={"running": {"startedAt": format_time(at)}},
                containerID=_container_id(pod, NOTEBOOK, count),
            )
        else:
            container_status.update(state={"terminated": terminated}, ready=False, started=False)
    if not restart:
        status["phase"] = "Failed"
        for kind in ("Ready", "ContainersReady"):
            _condition(pod, kind, False, at)
    return pod


def succeed(pod: Pod, at: datetime) -> Pod:
    """Every still-running container exits 0 at `at`: phase Succeeded."""
    pod = copy.deepcopy(pod)
    status = pod["status"]
    for container_status in status.get("containerStatuses", []):
        state = container_status["state"]
        if "terminated" in state:
            continue
        container_status.update(
            ready=False,
            started=False,
            state={
                "terminated": {
                    "exitCode": 0,
                    "reason": "Completed",
                    "startedAt": state.get("running", {}).get("startedAt", format_time(at)),
                    "finishedAt": format_time(at),
                    "containerID": container_status["containerID"],
                }
            },
        )
    status["phase"] = "Succeeded"
    for kind in ("Ready", "ContainersReady"):
        _condition(pod, kind, False, at, reason="PodCompleted")
    return pod


def delete(
    pod: Pod,
    at: datetime,
    grace: bool = True,
    grace_period_seconds: int = KUBESPAWNER_GRACE_PERIOD_SECONDS,
) -> Pod:
    """A delete request at `at`: the pod becomes Terminating. The API server sets
    deletionTimestamp = at + grace period (the time it *will* be gone), not `at`.
    https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#pod-termination"""
    pod = copy.deepcopy(pod)
    seconds = grace_period_seconds if grace else 0
    pod["metadata"]["deletionTimestamp"] = format_time(at + timedelta(seconds=seconds))
    pod["metadata"]["deletionGracePeriodSeconds"] = seconds
    return pod
