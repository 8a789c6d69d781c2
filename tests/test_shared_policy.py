"""Policy: group pools and hub caps, parsed and strictly validated (file:line:key errors)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from ledger.core.policy_yaml import PolicyError, parse_policy
from ledger.core.resources import GIB
from ledger.core.shared_capacity import PoolBudget, pools_for

GOOD = """
window: 30d
groups:
  gpu-dev:
    memory: 640 GiB-hours
    running: {gpu: 2}
    pool: {gpu: 500 GPU-hours, memory: {limit: 2000 GiB-hours, window: 7d},
           running: {gpu: 4, servers: 30}, wait: {servers: true}}
  regular: {memory: 60 GiB-hours}
hub: {running: {gpu: 8, memory: 2Ti, servers: 200}, wait: {gpu: false}}
"""


def errors(text: str) -> list[str]:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "policy.yaml")
    return str(info.value).splitlines()


def test_pools_and_hub_caps_are_read():
    policy = parse_policy(GOOD, "policy.yaml")
    pool = policy.pools["gpu-dev"]
    assert pool.budgets == {
        "gpu": PoolBudget(Decimal(500), None),
        "memory": PoolBudget(Decimal(2000), 7 * 86400),
    }
    assert pool.running == {"gpu": 4, "servers": 30}
    assert pool.wait == {"gpu", "servers"}  # gpu waits by default
    assert policy.hub.running == {"gpu": 8, "memory": 2 * 1024 * GIB, "servers": 200}
    assert policy.hub.wait == frozenset()
    # the group's own per-user limits are unchanged by its pool
    assert policy.groups["gpu-dev"].running == {"gpu": 2}
    assert "regular" not in policy.pools
    # every pool of every group the user is in applies
    assert pools_for(policy.pools, ["regular", "gpu-dev", "nope"]) == ["gpu-dev"]
    assert policy.max_window_seconds() == 30 * 86400


def test_no_pools_no_hub_by_default():
    policy = parse_policy("groups:\n  a: {memory: 1 GiB-hours}\n")
    assert policy.pools == {} and policy.hub.running == {}


def test_bad_pool_and_hub_entries_say_where_and_what_is_valid():
    found = errors(
        """groups:
  lab:
    pool:
      fpga: 3 GPU-hours
      gpu: 10 GiB-hours
      runing: {gpu: 1}
      running: {gpu: 2, cpu: -1, servers: 2.5}
      wait: {gpu: yes please}
hub: {running: {gpu: 8, memory: 500m}, wait: {cpu: true}, pool: 1}
users:
  bob: {pool: {gpu: 1}}
"""
    )
    text = "\n".join(found)
    for expected in (
        "policy.yaml:4: groups.lab.pool.fpga: unknown key 'fpga'; valid keys here: cpu, memory, "
        "gpu, running, wait; a pool's budgets cover cpu, memory, gpu",
        "policy.yaml:5: groups.lab.pool.gpu: gpu budgets are in GPU-hours",
        "policy.yaml:6: groups.lab.pool.runing: unknown key 'runing'; did you mean 'running'?",
        "policy.yaml:7: groups.lab.pool.running.cpu:",
        "policy.yaml:7: groups.lab.pool.running.servers: '2.5' is not a whole number of servers",
        "policy.yaml:8: groups.lab.pool.wait.gpu: must be true or false",
        "policy.yaml:9: hub.running.memory: '500m' is 500 thousandths of a byte",
        "policy.yaml:9: hub.wait.cpu: unknown key 'cpu'",
        "policy.yaml:9: hub.pool: unknown key 'pool'; valid keys here: running, wait",
        "policy.yaml:11: users.bob.pool: unknown key 'pool'",
    ):
        assert expected in text, (expected, text)


def test_the_documented_example_parses():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "accounting.md").read_text()
    block = doc.split("## Shared capacity")[1].split("```yaml")[1].split("```")[0]
    policy = parse_policy(block, "docs/accounting.md")
    assert policy.pools["gpu-dev"].running == {"gpu": 4, "servers": 30}
    assert policy.hub.running["servers"] == 200
