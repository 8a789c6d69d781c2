"""DockerSpawner: the identity labels on each container, and the request read from what
Docker will enforce.

DockerSpawner ``create_object`` (jupyterhub/dockerspawner ``dockerspawner/dockerspawner.py``)
builds docker-py ``create_host_config`` keyword arguments from ``mem_limit`` and ``cpu_limit``
(``cpu_quota = cpu_limit × cpu_period``, period 100000 µs unless ``extra_host_config`` sets
it), then merges ``extra_host_config`` over them; ``extra_create_kwargs`` is merged into the
container's create arguments. ``mem_guarantee`` / ``cpu_guarantee`` are not enforced by
Docker and are not read. Both dictionaries may be callables (sync or async) of the spawner.

The labels are ``hub.jupyter.org/username`` and ``hub.jupyter.org/servername`` (KubeSpawner's
annotation keys), which the collector's Docker source reads. No docker import: only the
spawner's traits are read.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping

from ledger.core.accounting import Accounting
from ledger.core.decision import ServerRequest
from ledger.core.docker_resources import docker_bytes, gpu_count, host_amounts
from ledger.core.quantities import QuantityError

USERNAME_LABEL = "hub.jupyter.org/username"
SERVERNAME_LABEL = "hub.jupyter.org/servername"
_RESOLVED = "_quota_ledger_host_config"


def is_docker_spawner(spawner) -> bool:
    """A DockerSpawner (or subclass) that makes containers; SwarmSpawner makes services."""
    names = {cls.__name__ for cls in type(spawner).__mro__}
    return "DockerSpawner" in names and getattr(spawner, "object_type", None) == "container"


def _escaped(value: str) -> str:
    # DockerSpawner formats every string of extra_create_kwargs with str.format
    # (``_render_templates``): braces in a name must survive it literally.
    return value.replace("{", "{{").replace("}", "}}")


def identity_labels(spawner) -> dict[str, str]:
    return {
        USERNAME_LABEL: _escaped(spawner.user.name),
        SERVERNAME_LABEL: _escaped(getattr(spawner, "name", "") or ""),
    }


def with_labels(create_kwargs: Mapping | None, labels: Mapping[str, str]) -> dict:
    """The operator's create arguments with our labels merged into theirs (ours win for our
    two keys; docker-py also accepts ``labels`` as a list of names)."""
    out = dict(create_kwargs or {})
    operator = out.get("labels") or {}
    if isinstance(operator, list | tuple):
        operator = dict.fromkeys(operator, "")
    out["labels"] = {**dict(operator), **labels}
    return out


async def _evaluated(value, spawner):
    if callable(value):
        value = value(spawner)
        if inspect.isawaitable(value):
            value = await value
    return dict(value or {})


class _LabelledCreateKwargs:
    """Wraps an operator's callable ``extra_create_kwargs``: its result, plus our labels."""

    def __init__(self, original):
        self.original = original

    async def __call__(self, spawner) -> dict:
        return with_labels(await _evaluated(self.original, spawner), identity_labels(spawner))


async def prepare_docker_spawn(spawner) -> None:
    """Label this spawn's container and resolve a callable ``extra_host_config`` once, for
    ``docker_spawner_request``. Runs in the pre-spawn hook, after the operator's hook."""
    current = spawner.extra_create_kwargs
    if callable(current):
        if not isinstance(current, _LabelledCreateKwargs):
            spawner.extra_create_kwargs = _LabelledCreateKwargs(current)
    else:
        spawner.extra_create_kwargs = with_labels(current, identity_labels(spawner))
    setattr(spawner, _RESOLVED, await _evaluated(spawner.extra_host_config, spawner))


def host_config_of(spawner) -> dict:
    """create_host_config's memory and CPU arguments as DockerSpawner will pass them."""
    extra = getattr(spawner, _RESOLVED, None)
    if extra is None:
        extra = spawner.extra_host_config if not callable(spawner.extra_host_config) else {}
    host: dict = {}
    if getattr(spawner, "mem_limit", None) is not None:
        host["mem_limit"] = spawner.mem_limit
    if getattr(spawner, "cpu_limit", None) is not None:
        period = host["cpu_period"] = extra.get("cpu_period", 100_000)
        host["cpu_quota"] = int(spawner.cpu_limit * period)
    host.update(extra)
    return host


def _int(host: Mapping, key: str) -> int:
    value = host.get(key)
    if value is None:
        return 0
    try:
        return int(value)
    except (TypeError, ValueError):
        raise QuantityError(f"extra_host_config[{key!r}]: {value!r} is not an integer") from None


def docker_spawner_request(spawner, accounting: Accounting) -> ServerRequest:
    """The ServerRequest of a DockerSpawner spawn, charged by the collector's rule
    (``Accounting.charged``, the policy's charge basis)."""
    host = host_config_of(spawner)
    memory = host.get("mem_limit", host.get("memory"))
    reservation = host.get("mem_reservation")
    amounts = host_amounts(
        memory_bytes=0 if memory is None else docker_bytes(memory, "mem_limit"),
        memory_reservation_bytes=(
            0 if reservation is None else docker_bytes(reservation, "mem_reservation")
        ),
        nano_cpus=_int(host, "nano_cpus"),
        cpu_quota=_int(host, "cpu_quota"),
        cpu_period=_int(host, "cpu_period"),
        cpu_shares=_int(host, "cpu_shares"),
        gpus=gpu_count(
            host.get("device_requests"),
            "extra_host_config['device_requests']",
            accounting.docker_all_gpus,
        ),
    )
    # other extended resources: Docker has no such limit, charged 0
    chosen = {
        short: accounting.charged(*amounts.get(short, (None, None))) for short in accounting.names()
    }
    return ServerRequest(amounts=chosen, servername=getattr(spawner, "name", "") or "")
