"""What a server is charged: the charge basis, the extended resources, and the one rule.

Every part that sizes a server reads this: the collector (a pod's containers, or a Docker
container's HostConfig), the hub hook (a spawner's traits, before the pod exists), the
enforcer and the web service (which resources there are). It comes from the policy file's
``accounting:`` block (docs/accounting.md), so the hook judges a spawn by the same numbers
the collector then charges.

- ``charge_basis``: ``requests`` (default: what the scheduler reserves and a cloud provisions
  nodes for), ``limits`` (what a container may use, e.g. DockerSpawner's ``mem_limit``), or
  ``max`` of the two, per resource.
- ``resources``: extended resources, short name → the runtime's name
  (``gpu: nvidia.com/gpu`` by default). ``gpu`` is stored in its own column, others in the
  segment's ``extended`` JSON.
  https://kubernetes.io/docs/concepts/configuration/manage-resources-containers/#extended-resources
- ``docker_all_gpus``: how many GPUs a Docker container started with ``--gpus all``
  (a device request with ``Count: -1``) holds; the Engine API does not say, so without it
  such a container cannot be charged.
  https://docs.docker.com/reference/api/engine/version/v1.41/#tag/Container/operation/ContainerCreate

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ledger.core.quantities import to_base_units

__all__ = [
    "CHARGE_BASES",
    "DEFAULT_CHARGE_BASIS",
    "DEFAULT_EXTENDED_RESOURCES",
    "Accounting",
    "charged_amount",
    "pod_amounts",
]

CHARGE_BASES = ("requests", "limits", "max")
DEFAULT_CHARGE_BASIS = "requests"
DEFAULT_EXTENDED_RESOURCES: dict[str, str] = {"gpu": "nvidia.com/gpu"}


def _default_resources() -> dict[str, str]:
    return dict(DEFAULT_EXTENDED_RESOURCES)


@dataclass(frozen=True)
class Accounting:
    """How servers are charged; one instance per policy (``Policy.accounting``)."""

    charge_basis: str = DEFAULT_CHARGE_BASIS
    resources: dict[str, str] = field(default_factory=_default_resources)
    docker_all_gpus: int | None = None

    def __post_init__(self) -> None:
        if self.charge_basis not in CHARGE_BASES:
            raise ValueError(
                f"charge_basis {self.charge_basis!r}: valid values are {', '.join(CHARGE_BASES)}"
            )
        if self.docker_all_gpus is not None and self.docker_all_gpus < 1:
            raise ValueError(f"docker_all_gpus {self.docker_all_gpus!r}: give 1 or more GPUs")

    def names(self) -> dict[str, str]:
        """Short name → runtime resource name of everything charged, cpu and memory first."""
        return {"cpu": "cpu", "memory": "memory", **self.resources}

    def charged(self, request: int | None, limit: int | None) -> int:
        return charged_amount(request, limit, self.charge_basis)


def charged_amount(request: int | None, limit: int | None, basis: str) -> int:
    """The one rule: what a container (or a server) is charged, from its request and limit.

    ``None`` means "not set". A missing request is the limit, as Kubernetes defaults it
    (https://kubernetes.io/docs/concepts/configuration/manage-resources-containers/#requests-and-limits);
    on ``limits`` a missing limit (unlimited) is charged the request, so a container is
    never charged nothing for holding a reservation; ``max`` takes the larger of the two.
    A container with neither is charged 0.
    """
    if request is None:
        request = limit
    if basis == "requests":
        return request or 0
    if basis == "limits":
        return limit if limit is not None else request or 0
    if basis == "max":
        return max(request or 0, limit or 0)
    raise ValueError(f"charge basis {basis!r}: valid values are {', '.join(CHARGE_BASES)}")


# --- a pod: its containers, init containers, sidecars and overhead ---------------------------


def container_amounts(
    resources: Mapping[str, Any] | None, accounting: Accounting, where: str
) -> dict[str, int]:
    """One Kubernetes container's ``resources`` (requests/limits) → charged amount per short name.

    Raises QuantityError naming ``where`` and the resource for a quantity that does not parse.
    """
    resources = resources or {}
    requests = resources.get("requests") or {}
    limits = resources.get("limits") or {}
    out: dict[str, int] = {}
    for short, name in accounting.names().items():
        request_q, limit_q = requests.get(name), limits.get(name)
        request = (
            None
            if request_q is None
            else to_base_units(short, request_q, where=f"{where} request {name}")
        )
        limit = (
            None
            if limit_q is None
            else to_base_units(short, limit_q, where=f"{where} limit {name}")
        )
        out[short] = accounting.charged(request, limit)
    return out


def pod_amounts(
    spec: Mapping[str, Any],
    accounting: Accounting,
    *,
    applied: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, int]:
    """A pod spec (Kubernetes JSON shape) → what it is charged, per short resource name.

    max(sum of app containers (+ sidecars), max of each init container (+ the sidecars
    started before it)) + pod overhead, per resource: the pod's effective request.
    https://kubernetes.io/docs/concepts/workloads/pods/init-containers/#resource-sharing-within-containers
    https://kubernetes.io/docs/concepts/workloads/pods/sidecar-containers/#resource-sharing-within-containers
    https://kubernetes.io/docs/concepts/scheduling-eviction/pod-overhead/

    ``applied``: container name → the resources the kubelet reports it applied
    (``status.containerStatuses[].resources``); after an in-place resize that is what holds,
    while the spec is only desired.
    https://kubernetes.io/docs/tasks/configure-pod-container/resize-container-resources/
    """
    names = accounting.names()
    applied = applied or {}
    app_sum = dict.fromkeys(names, 0)
    for container in spec.get("containers") or []:
        name = container.get("name")
        resources = applied.get(name, container.get("resources"))
        for short, value in container_amounts(resources, accounting, f"container {name}").items():
            app_sum[short] += value
    sidecars = dict.fromkeys(names, 0)
    init_max = dict.fromkeys(names, 0)
    for container in spec.get("initContainers") or []:
        name = container.get("name")
        amounts = container_amounts(
            container.get("resources"), accounting, f"init container {name}"
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
    for short, name in names.items():
        extra = (
            0
            if name not in overhead
            else to_base_units(short, overhead[name], where=f"overhead {name}")
        )
        out[short] = max(app_sum[short] + sidecars[short], init_max[short]) + extra
    return out
