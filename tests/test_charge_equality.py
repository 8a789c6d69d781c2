"""The hub hook charges a spawn what the collector will charge the pod KubeSpawner makes.

For every charge basis and for requests only, limits only, both, init containers (and
sidecars), extra containers and pod overhead: the request ``spawner_request`` reads from a
real ``kubespawner.KubeSpawner``'s traits equals what ``collector.pods.parse_pod`` charges
for the pod that same spawner's ``get_pod_manifest()`` (KubeSpawner's own ``make_pod``)
builds, serialized as the API server returns it. Only the Kubernetes API server is absent:
the pod is built and read, never created (no cluster here), so the KubeSpawner is made with
its ``_mock`` user and hub objects and a kubeconfig that points nowhere.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import kubespawner  # a test dependency (pyproject.toml): missing, the run fails, not skips
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes_asyncio import client as kubernetes_client

from collector.pods import Identity, as_resources, parse_pod
from ledger.core.accounting import CHARGE_BASES
from ledger.core.policy_yaml import parse_policy
from ledger.hub.request import spawner_request

GIB = 2**30
NOW = datetime(2026, 11, 1, tzinfo=UTC)
HUB = Identity("jupyterhub", "hub.jupyter.org/username")
KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "http://127.0.0.1:9"}}]
users: [{name: none, user: {token: unused}}]
contexts: [{name: none, context: {cluster: none, user: none, namespace: jhub}}]
current-context: none
"""


@pytest.fixture(scope="module", autouse=True)
def kubeconfig(tmp_path_factory):
    """KubeSpawner loads a Kubernetes configuration when it is made; give it one that no
    request ever uses (kubernetes_asyncio reads $KUBECONFIG once, at import)."""
    from kubernetes_asyncio.config import kube_config

    path = tmp_path_factory.mktemp("kube") / "config"
    path.write_text(KUBECONFIG)
    before = kube_config.KUBE_CONFIG_DEFAULT_LOCATION
    kube_config.KUBE_CONFIG_DEFAULT_LOCATION = str(path)
    yield
    kube_config.KUBE_CONFIG_DEFAULT_LOCATION = before


class _Loop:
    """One event loop and one ApiClient for the module: KubeSpawner caches its Kubernetes
    client per loop, and making one costs about 0.2 s."""

    loop: asyncio.AbstractEventLoop | None = None
    api = None


@pytest.fixture(scope="module", autouse=True)
def event_loop_and_client(kubeconfig):
    _Loop.loop = asyncio.new_event_loop()
    _Loop.api = _Loop.loop.run_until_complete(_make_api_client())
    yield
    _Loop.loop.run_until_complete(_Loop.api.close())
    # KubeSpawner closes its shared client when the task it left on the loop is cancelled,
    # as JupyterHub does at shutdown (kubespawner/clients.py, shared_client)
    pending = asyncio.all_tasks(_Loop.loop)
    for task in pending:
        task.cancel()
    _Loop.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    _Loop.loop.close()


async def _make_api_client():
    return kubernetes_client.ApiClient()


def _as_api_server_returns(value):
    """Quantities come back from the API server as strings (``resource.Quantity``)."""
    if isinstance(value, dict):
        return {k: _as_api_server_returns(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_api_server_returns(v) for v in value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return repr(value)
    return value


async def _both(basis: str, traits: dict):
    policy = parse_policy(
        f"accounting: {{charge_basis: {basis}, resources: {{gpu: nvidia.com/gpu}}}}\n"
    )
    spawner = kubespawner.KubeSpawner(_mock=True, **traits)
    hook = spawner_request(spawner, policy)
    manifest = await spawner.get_pod_manifest()
    pod = json.loads(json.dumps(_Loop.api.sanitize_for_serialization(manifest)))
    pod["spec"] = _as_api_server_returns(pod["spec"])
    pod["metadata"]["uid"] = "uid-1"
    collector = parse_pod(pod, HUB, accounting=policy.accounting, observed_at=NOW)
    return as_resources(hook.amounts), collector.resources, pod


def both(basis: str, traits: dict):
    return _Loop.loop.run_until_complete(_both(basis, traits))


INIT = {"name": "fetch", "image": "busybox",
        "resources": {"requests": {"cpu": "3", "memory": "12Gi"}, "limits": {"memory": "16Gi"}}}  # fmt: skip
SIDECAR = {"name": "proxy", "image": "busybox", "restartPolicy": "Always",
           "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}}}  # fmt: skip
CASES = {
    "requests only": {"mem_guarantee": GIB, "cpu_guarantee": 0.5},
    "limits only": {
        "mem_limit": 8 * GIB,
        "cpu_limit": 2.0,
        "extra_resource_limits": {"nvidia.com/gpu": "1"},
    },  # fmt: skip
    "both": {
        "mem_guarantee": GIB,
        "mem_limit": 8 * GIB,
        "cpu_guarantee": 0.5,
        "cpu_limit": 2.0,
        "extra_resource_guarantees": {"nvidia.com/gpu": "1"},
        "extra_resource_limits": {"nvidia.com/gpu": "1"},
    },  # fmt: skip
    "init containers": {
        "mem_guarantee": GIB,
        "mem_limit": 8 * GIB,
        "cpu_guarantee": 1.0,
        "init_containers": [SIDECAR, INIT],
    },  # fmt: skip
    "extra containers": {
        "mem_guarantee": "2G",
        "cpu_limit": 1.0,
        "extra_containers": [
            {"name": "crond", "image": "busybox", "resources": {"limits": {"memory": "1Gi"}}}
        ],
    },  # fmt: skip
    "overhead": {
        "mem_guarantee": GIB,
        "mem_limit": 4 * GIB,
        "extra_pod_config": {"overhead": {"cpu": "250m", "memory": "160Mi"}},
    },  # fmt: skip
}


@pytest.mark.parametrize("basis", CHARGE_BASES)
@pytest.mark.parametrize("case", CASES)
def test_the_hook_charges_what_the_collector_charges(basis, case):
    hook, collector, pod = both(basis, CASES[case])
    assert hook == collector, json.dumps(pod["spec"], indent=1)
    assert collector[1] > 0  # the case charges memory: the comparison is not 0 == 0


@pytest.mark.parametrize(
    ("basis", "memory"), [("requests", GIB), ("limits", 8 * GIB), ("max", 8 * GIB)]
)
def test_a_1_gib_guarantee_8_gib_limit_server_is_judged_as_charged(basis, memory):
    hook, collector, _ = both(basis, {"mem_guarantee": GIB, "mem_limit": 8 * GIB})
    assert hook[1] == collector[1] == memory


def test_init_containers_and_overhead_count_on_both_sides():
    hook, collector, _ = both("requests", CASES["init containers"])
    # the init container (3 CPU, 12 GiB) + the sidecar started before it outweigh the app
    assert hook[:2] == collector[:2] == (3250, 12 * GIB + 256 * 2**20)
    hook, collector, _ = both("requests", CASES["overhead"])
    assert hook[:2] == collector[:2] == (250, GIB + 160 * 2**20)


_memory = st.one_of(st.none(), st.integers(1, 64).map(lambda n: n * 2**28),
                    st.sampled_from(["512M", "1G", "2.5G", "8G"]))  # fmt: skip
_cpu = st.one_of(st.none(), st.sampled_from([0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 4.0, 0.3333]))
_gpu = st.one_of(st.none(), st.sampled_from(["1", "2", 1, 4]))
_quantities = st.fixed_dictionaries(
    {},
    optional={
        "cpu": st.sampled_from(["100m", "1", "2500m"]),
        "memory": st.sampled_from(["64Mi", "1Gi", "3G"]),
        "nvidia.com/gpu": st.sampled_from(["1", "2"]),
    },
)
_container = st.builds(
    lambda i, requests, limits, sidecar: {
        "name": f"c{i}",
        "image": "busybox",
        "resources": {"requests": requests, "limits": limits},
        **({"restartPolicy": "Always"} if sidecar else {}),
    },
    st.integers(0, 10**6),
    _quantities,
    _quantities,
    st.booleans(),
)


def _unique_names(containers):
    return [{**c, "name": f"{c['name']}-{i}"} for i, c in enumerate(containers)]


@st.composite
def _traits(draw):
    traits = {
        "mem_guarantee": draw(_memory),
        "mem_limit": draw(_memory),
        "cpu_guarantee": draw(_cpu),
        "cpu_limit": draw(_cpu),
    }
    traits = {k: v for k, v in traits.items() if v is not None}
    if (gpu := draw(_gpu)) is not None:
        traits["extra_resource_guarantees"] = {"nvidia.com/gpu": gpu}
    if (gpu := draw(_gpu)) is not None:
        traits["extra_resource_limits"] = {"nvidia.com/gpu": gpu}
    if init := draw(st.lists(_container, max_size=3)):
        traits["init_containers"] = _unique_names(init)
    if extra := draw(st.lists(_container, max_size=2)):
        extra = [{k: v for k, v in c.items() if k != "restartPolicy"} for c in extra]
        traits["extra_containers"] = _unique_names(extra)
    if draw(st.booleans()):
        traits["extra_pod_config"] = {"overhead": draw(_quantities)}
    return traits


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(basis=st.sampled_from(CHARGE_BASES), traits=_traits())
def test_any_spawner_traits_are_charged_alike(basis, traits):
    hook, collector, pod = both(basis, traits)
    assert hook == collector, json.dumps(pod["spec"], indent=1)
