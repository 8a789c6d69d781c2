"""What a Docker container holds, from its host configuration: one reading for the collector
(``HostConfig`` of an inspected container) and the hub hook (docker-py's
``create_host_config`` keyword arguments, as DockerSpawner passes them). Pure: no I/O.

Per resource a (request, limit) pair, integers in base units; which one is charged is the
charge-basis rule, applied by each side's existing helper:

* limit: memory ``Memory`` / ``mem_limit``; CPUs ``NanoCpus`` / ``nano_cpus``, else
  ``CpuQuota / CpuPeriod`` (period 100000 µs when unset,
  https://docs.docker.com/engine/containers/resource_constraints/#configure-the-default-cfs-scheduler);
  GPUs the device requests with the ``gpu`` capability (their count, or their device IDs).
* request: ``MemoryReservation`` / ``mem_reservation``, and ``CpuShares`` / ``cpu_shares`` read
  back the way the kubelet writes them, 1024 shares per CPU
  (https://kubernetes.io/docs/concepts/configuration/manage-resources-containers/#how-pods-with-resource-limits-are-run).
  GPUs have no separate request.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from ledger.core.quantities import QuantityError

DEFAULT_CPU_PERIOD_MICROSECONDS = 100_000
SHARES_PER_CPU = 1024
_BYTES = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([bkmg]?)b?\s*$", re.IGNORECASE)
_BYTE_UNITS = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30}

Pair = tuple[int | None, int | None]  # (request, limit)


def docker_bytes(value: object, where: str) -> int:
    """docker-py's size syntax (``parse_bytes``): an integer of bytes, or a number with
    b / k / m / g (powers of 1024, ``'1g'`` = 1 GiB)."""
    if isinstance(value, bool):
        raise QuantityError(f"{where}: {value!r} is not a size")
    if isinstance(value, int | float):
        return int(value)
    m = _BYTES.match(str(value))
    if m is None:
        raise QuantityError(
            f"{where}: {value!r} is not a Docker size; write bytes or e.g. 512m, 1g"
        )
    return int(float(m[1]) * _BYTE_UNITS[m[2].lower()])


def _field(request: Mapping, camel: str, snake: str):
    return request.get(camel, request.get(snake))


def gpu_count(device_requests, where: str, all_gpus: int | None = None) -> int:
    """GPUs granted by device requests (HostConfig.DeviceRequests, or docker-py
    ``DeviceRequest`` / its snake_case dict form): those with the ``gpu`` capability or the
    nvidia driver. ``all_gpus``: what ``--gpus all`` (``Count: -1``) holds on this host
    (the policy's ``accounting.docker_all_gpus``), else such a request is refused."""
    total = 0
    for request in device_requests or []:
        if not isinstance(request, Mapping):
            raise QuantityError(f"{where}: {request!r} is not a device request")
        groups = _field(request, "Capabilities", "capabilities") or []
        capabilities = {c for group in groups for c in group}
        if "gpu" not in capabilities and _field(request, "Driver", "driver") != "nvidia":
            continue
        ids = _field(request, "DeviceIDs", "device_ids") or []
        count = int(_field(request, "Count", "count") or 0)
        if ids:
            total += len(ids)
        elif count > 0:
            total += count
        elif count < 0 and all_gpus:
            total += all_gpus
        elif count < 0:
            raise QuantityError(
                f"{where}: a device request for all GPUs (count -1, --gpus all) does not say "
                "how many it holds; give a count (--gpus 2) or device IDs, or set how many "
                "the host has in the quota policy: accounting: {docker_all_gpus: 4}"
            )
    return total


def host_amounts(
    *,
    memory_bytes: int = 0,
    memory_reservation_bytes: int = 0,
    nano_cpus: int = 0,
    cpu_quota: int = 0,
    cpu_period: int = 0,
    cpu_shares: int = 0,
    gpus: int = 0,
) -> dict[str, Pair]:
    """(request, limit) per short resource name; None where the container sets nothing."""
    cpu_limit = None
    if nano_cpus > 0:
        cpu_limit = nano_cpus // 1_000_000
    elif cpu_quota > 0:
        cpu_limit = cpu_quota * 1000 // (cpu_period or DEFAULT_CPU_PERIOD_MICROSECONDS)
    return {
        "cpu": (cpu_shares * 1000 // SHARES_PER_CPU if cpu_shares > 0 else None, cpu_limit),
        "memory": (
            memory_reservation_bytes if memory_reservation_bytes > 0 else None,
            memory_bytes if memory_bytes > 0 else None,
        ),
        "gpu": (None, gpus or None),
    }
