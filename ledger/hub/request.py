"""The server a spawner is about to ask for, charged the way the collector will charge it.

JupyterHub runs ``pre_spawn_hook`` after group overrides and user options (KubeSpawner
profiles) are applied (``User.spawn`` in jupyterhub/user.py), so the traits read here are the
final request: https://jupyterhub.readthedocs.io/en/stable/reference/api/spawner.html

The traits are laid out as the pod KubeSpawner makes from them (``make_pod`` in
https://github.com/jupyterhub/kubespawner/blob/main/kubespawner/objects.py): a trait that is
unset or 0 is left out, ``mem_guarantee``/``cpu_guarantee``/``extra_resource_guarantees``
become the notebook container's requests and ``mem_limit``/``cpu_limit``/
``extra_resource_limits`` its limits (``extra_container_config.resources`` replaces both), and
``extra_containers``, ``init_containers`` and ``extra_pod_config.overhead`` join the pod. That
pod is then charged by ``ledger.core.accounting.pod_amounts`` on the policy's charge basis —
the very rule the collector applies to the pod it later sees, so the hook judges a spawn by
what it will be charged. Overhead that a RuntimeClass adds at admission is not in the
spawner's traits and so is not in the hook's number (docs/accounting.md). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ledger.core.accounting import Accounting, pod_amounts
from ledger.core.decision import ServerRequest
from ledger.core.quantities import QuantityError, cpu_millicores, device_count, memory_bytes

NOTEBOOK_CONTAINER = "notebook"  # KubeSpawner's name for the server's container


def _base_units(value, parse: Callable[..., int], where: str) -> int | None:
    """A trait value in base units; None when unset (or 0: KubeSpawner omits falsy values)."""
    if value is None or value == "" or value == 0:
        return None
    try:
        amount = parse(value, where=where)
    except QuantityError:
        raise
    except (TypeError, ValueError) as exc:
        raise QuantityError(f"{where}: {value!r} is not a quantity ({exc})") from None
    return amount or None


def _quantities(
    cpu, memory, extra: Mapping[str, object] | None, accounting: Accounting, trait: str
) -> dict[str, str]:
    """One side (requests or limits) as Kubernetes quantities, each trait checked by name."""
    out: dict[str, str] = {}
    cpu_m = _base_units(cpu, cpu_millicores, f"cpu_{trait}")
    if cpu_m is not None:
        out["cpu"] = f"{cpu_m}m"
    memory_b = _base_units(memory, memory_bytes, f"mem_{trait}")
    if memory_b is not None:
        out["memory"] = str(memory_b)
    wanted = set(accounting.resources.values())
    for name, value in (extra or {}).items():
        if name in wanted:
            count = _base_units(value, device_count, f"extra_resource_{trait}s[{name}]")
            if count is not None:
                out[name] = str(count)
    return out


def _listed(value) -> list:
    """KubeSpawner accepts a list, or a dict whose values are taken in key order; container
    keys may be snake_case (``get_k8s_model`` maps both), the pod JSON is camelCase."""
    if isinstance(value, Mapping):
        value = [value[key] for key in sorted(value)]
    containers = []
    for container in value or []:
        container = dict(container)
        if "restart_policy" in container:  # a sidecar (init container restartPolicy: Always)
            container["restartPolicy"] = container.pop("restart_policy")
        containers.append(container)
    return containers


def pod_spec_from_traits(
    *,
    mem_guarantee=None,
    mem_limit=None,
    cpu_guarantee=None,
    cpu_limit=None,
    extra_guarantees: Mapping[str, object] | None = None,
    extra_limits: Mapping[str, object] | None = None,
    extra_container_config: Mapping[str, Any] | None = None,
    extra_containers=None,
    init_containers=None,
    extra_pod_config: Mapping[str, Any] | None = None,
    accounting: Accounting,
) -> dict[str, Any]:
    """The resource-bearing part of the pod spec KubeSpawner makes from these traits."""
    resources = {
        "requests": _quantities(
            cpu_guarantee, mem_guarantee, extra_guarantees, accounting, "guarantee"
        ),
        "limits": _quantities(cpu_limit, mem_limit, extra_limits, accounting, "limit"),
    }
    if extra_container_config and "resources" in extra_container_config:
        resources = extra_container_config["resources"] or {}
    spec: dict[str, Any] = {
        "containers": [
            {"name": NOTEBOOK_CONTAINER, "resources": resources},
            *_listed(extra_containers),
        ],
        "initContainers": _listed(init_containers),
    }
    overhead = (extra_pod_config or {}).get("overhead")
    if overhead:
        spec["overhead"] = overhead
    return spec


def request_from_traits(
    *, accounting: Accounting | None = None, servername: str = "", **traits
) -> ServerRequest:
    """A ServerRequest from trait values, charged per ``accounting`` (default: requests, gpu)."""
    accounting = accounting or Accounting()
    spec = pod_spec_from_traits(accounting=accounting, **traits)
    return ServerRequest(amounts=pod_amounts(spec, accounting), servername=servername or "")


# The spawner traits a server's size is read from (KubeSpawner's names; any spawner with
# the standard traits), and the keyword of ``request_from_traits`` each one goes to.
REQUEST_TRAITS = {
    "mem_guarantee": "mem_guarantee",
    "mem_limit": "mem_limit",
    "cpu_guarantee": "cpu_guarantee",
    "cpu_limit": "cpu_limit",
    "extra_resource_guarantees": "extra_guarantees",
    "extra_resource_limits": "extra_limits",
    "extra_container_config": "extra_container_config",
    "extra_containers": "extra_containers",
    "init_containers": "init_containers",
    "extra_pod_config": "extra_pod_config",
}


def spawner_request(spawner, policy) -> ServerRequest:
    """The request of a JupyterHub spawner (any class with the standard traits)."""
    return request_from_traits(
        **{keyword: getattr(spawner, trait, None) for trait, keyword in REQUEST_TRAITS.items()},
        accounting=policy.accounting,
        servername=getattr(spawner, "name", "") or "",
    )


def spawner_groups(spawner) -> list[str]:
    """Group names of the spawner's user (``User.groups`` is a list of orm.Group)."""
    return user_groups(getattr(spawner, "user", None))


def user_groups(user) -> list[str]:
    """Group names of a hub user (``User.groups`` is a list of orm.Group)."""
    return sorted({getattr(g, "name", g) for g in (getattr(user, "groups", None) or [])})
