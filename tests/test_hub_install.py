"""install_quota_hook on a traitlets Config, and reading a request from spawner traits."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
from hub_support.ledger_data import GIB, write_policy
from traitlets.config import Config

from ledger.core.accounting import Accounting
from ledger.core.policy_yaml import parse_policy
from ledger.core.quantities import QuantityError
from ledger.hub import ChainedHook, QuotaHook, install_quota_hook
from ledger.hub.request import request_from_traits, spawner_request


def test_wraps_hooks_on_spawner_class_sections_too(tmp_path):
    def mine(spawner):
        pass

    def kube(spawner):
        pass

    c = Config()
    c.Spawner.pre_spawn_hook = mine
    c.KubeSpawner.pre_spawn_hook = kube  # traitlets lets this one win for KubeSpawner
    hook = install_quota_hook(
        c, db_url="postgresql://x@/y", policy_path=str(write_policy(tmp_path / "p.yaml"))
    )
    assert c.Spawner.pre_spawn_hook is hook and hook.previous is mine
    chained = c.KubeSpawner.pre_spawn_hook
    assert isinstance(chained, ChainedHook) and chained.previous is kube and chained.hook is hook
    # traitlets deep-copies config into every spawner: all must share the one hook
    assert copy.deepcopy(hook) is hook and copy.deepcopy(chained) is chained


def test_settings_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("QUOTA_LEDGER_CONFIG", str(write_policy(tmp_path / "p.yaml")))
    monkeypatch.setenv("QUOTA_LEDGER_DB_URL", "postgresql://env@/db")
    hook = install_quota_hook(Config())
    assert isinstance(hook, QuotaHook) and hook.db_url == "postgresql://env@/db"
    monkeypatch.delenv("QUOTA_LEDGER_CONFIG")
    with pytest.raises(ValueError, match="QUOTA_LEDGER_CONFIG"):
        install_quota_hook(Config())


@pytest.mark.parametrize(
    ("basis", "expected_memory", "expected_cpu"),
    [("requests", 2 * GIB, 500), ("limits", 8 * GIB, 2000), ("max", 8 * GIB, 2000)],
)
def test_charge_basis_comes_from_the_policy(basis, expected_memory, expected_cpu):
    """The production path: the hook's spawner_request on a parsed policy's accounting block."""
    policy = parse_policy(f"accounting: {{charge_basis: {basis}}}\n")
    spawner = SimpleNamespace(mem_guarantee=2 * GIB, mem_limit=8 * GIB, cpu_guarantee=0.5,
                              cpu_limit=2.0, name="")  # fmt: skip
    request = spawner_request(spawner, policy)
    assert request.amounts["memory"] == expected_memory
    assert request.amounts["cpu"] == expected_cpu


def test_limit_counts_when_there_is_no_guarantee_and_gpus_come_from_extra_resources():
    request = request_from_traits(
        mem_limit=4 * GIB,
        extra_limits={"nvidia.com/gpu": "2"},
        accounting=Accounting(resources={"gpu": "nvidia.com/gpu"}),
        servername="big",
    )
    assert request.amounts == {"cpu": 0, "memory": 4 * GIB, "gpu": 2}
    assert request.servername == "big"


def test_a_fractional_gpu_is_refused_with_the_trait_named():
    with pytest.raises(QuantityError, match=r"extra_resource_guarantees\[nvidia.com/gpu\]"):
        request_from_traits(
            extra_guarantees={"nvidia.com/gpu": "0.5"},
            accounting=Accounting(resources={"gpu": "nvidia.com/gpu"}),
        )


async def test_an_unreadable_size_refuses_with_a_message(tmp_path):
    hook = QuotaHook(db_url="postgresql://x@/y", policy_path=str(write_policy(tmp_path / "p.yaml")))
    spawner = SimpleNamespace(user=SimpleNamespace(name="u", groups=[]), name="", log=None,
                              mem_guarantee="lots")  # fmt: skip
    with pytest.raises(Exception, match="size could not be read") as caught:
        await hook.check(spawner)
    assert caught.value.status_code == 400
