"""The hook's reading of a real DockerSpawner (not started): the identity labels merged into
``extra_create_kwargs`` and the request from what Docker will enforce, for every charge basis."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from dockerspawner import DockerSpawner

from ledger.core.accounting import Accounting
from ledger.core.quantities import QuantityError
from ledger.hub.docker_request import (
    docker_spawner_request,
    is_docker_spawner,
    prepare_docker_spawn,
)
from ledger.hub.recorder import HubRecorder

GiB = 2**30


def spawner(**traits) -> DockerSpawner:
    s = DockerSpawner(**traits)
    s.user = SimpleNamespace(name="al{ice}")
    return s


async def request_of(s, basis="requests"):
    await prepare_docker_spawn(s)
    return dict(docker_spawner_request(s, Accounting(charge_basis=basis)).amounts)


async def test_seed_002_host_config():
    s = spawner(extra_host_config={"mem_limit": "1g", "cpu_period": 100000, "cpu_quota": 250000})
    for basis in ("requests", "limits", "max"):  # limits only: the limits under every basis
        assert await request_of(s, basis) == {"cpu": 2500, "memory": GiB, "gpu": 0}
    assert is_docker_spawner(s) and not HubRecorder.covers(s)


async def test_traits_then_extra_host_config_wins_as_in_create_object():
    s = spawner(mem_limit="2G", cpu_limit=1.5)
    assert await request_of(s) == {"cpu": 1500, "memory": 2 * GiB, "gpu": 0}
    s = spawner(cpu_limit=2.0, extra_host_config={"cpu_period": 50000})  # quota = 2 × period
    assert (await request_of(s))["cpu"] == 2000
    s = spawner(mem_limit="2G", extra_host_config={"mem_limit": "512m", "nano_cpus": 500_000_000})
    assert await request_of(s) == {"cpu": 500, "memory": 512 * 2**20, "gpu": 0}


async def test_reservations_are_requests_and_gpus_from_device_requests():
    host = {
        "mem_limit": "4g", "mem_reservation": "1g", "nano_cpus": 2_000_000_000,
        "cpu_shares": 512,
        "device_requests": [{"count": 2, "capabilities": [["gpu"]]}],
    }  # fmt: skip
    s = spawner(extra_host_config=host)
    assert await request_of(s, "requests") == {"cpu": 500, "memory": GiB, "gpu": 2}
    assert await request_of(s, "limits") == {"cpu": 2000, "memory": 4 * GiB, "gpu": 2}


async def test_gpus_all_is_charged_what_the_policy_says_the_host_has():
    s = spawner(extra_host_config={"device_requests": [{"count": -1, "capabilities": [["gpu"]]}]})
    await prepare_docker_spawn(s)
    assert docker_spawner_request(s, Accounting(docker_all_gpus=8)).amounts["gpu"] == 8
    with pytest.raises(QuantityError, match="docker_all_gpus"):
        docker_spawner_request(s, Accounting())


async def test_async_callable_host_config_and_bad_sizes():
    async def per_user(s):
        return {"mem_limit": "3g"}

    s = spawner(extra_host_config=per_user)
    assert (await request_of(s))["memory"] == 3 * GiB
    s = spawner(extra_host_config={"mem_limit": "lots"})
    with pytest.raises(QuantityError, match="not a Docker size"):
        await request_of(s)


async def test_labels_merged_with_the_operators_and_escaped_for_templates():
    s = spawner(extra_create_kwargs={"labels": {"team": "geo"}, "user": "1000"})
    await prepare_docker_spawn(s)
    assert s.extra_create_kwargs == {
        "user": "1000",
        "labels": {
            "team": "geo",
            "hub.jupyter.org/username": "al{{ice}}",  # DockerSpawner str.format()s it back
            "hub.jupyter.org/servername": "",
        },
    }
    assert s._render_templates(s.extra_create_kwargs)["labels"]["hub.jupyter.org/username"] == (
        "al{ice}"
    )

    def operator(spawner):
        return {"labels": ["plain"]}

    s = spawner_with = spawner(extra_create_kwargs=operator)
    await prepare_docker_spawn(s)
    await prepare_docker_spawn(s)  # a second spawn wraps once
    labels = (await s.extra_create_kwargs(spawner_with))["labels"]
    assert labels == {"plain": "", "hub.jupyter.org/username": "al{{ice}}",
                      "hub.jupyter.org/servername": ""}  # fmt: skip
