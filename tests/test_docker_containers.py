"""The pure container parser on a container the real engine inspected.

GPUs: the engine refuses to start a container with a GPU device request on a machine without
one, so the GPU cases take a real inspect JSON and set ``HostConfig.DeviceRequests`` to what
``docker run --gpus 2`` / ``--gpus '"device=0,2"'`` write there (that part is not the
engine's own output)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

import pytest
from docker_support import Containers, docker_client

from collector.containers import Observation, parse_container, parse_time
from collector.pods import Identity, PodSkipped
from ledger.core.accounting import Accounting

GiB = 2**30
IDENTITY = Identity(
    "jupyterhub", "hub.jupyter.org/username", True, "hub.jupyter.org/servername", True
)
NOW = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def inspected():
    made = Containers(docker_client())
    try:
        container = made.client.containers.create(
            "local/python:3.11-slim-bookworm",
            ["sleep", "1"],
            labels=made.labels("alice", "big"),
            mem_limit="2g",
            mem_reservation="1g",
            cpu_shares=512,
            nano_cpus=1_500_000_000,
        )
        yield made.client.api.inspect_container(container.id)
    finally:
        made.remove_all()


def parse(container, basis="requests", **kwargs):
    return parse_container(
        Observation(container),
        IDENTITY,
        accounting=Accounting(charge_basis=basis),
        observed_at=NOW,
        **kwargs,
    )


@pytest.mark.parametrize(
    ("basis", "cpu_millicores", "memory_bytes"),
    [("requests", 500, GiB), ("limits", 1500, 2 * GiB), ("max", 1500, 2 * GiB)],
)
def test_reservation_and_shares_are_the_requests(inspected, basis, cpu_millicores, memory_bytes):
    view = parse(inspected, basis)
    assert view.resources == (cpu_millicores, memory_bytes, 0, ())
    assert (view.username, view.servername, view.started_at) == ("alice", "big", None)


def test_limits_only_is_charged_limits_under_every_basis(inspected):
    container = copy.deepcopy(inspected)
    container["HostConfig"].update(MemoryReservation=0, CpuShares=0, NanoCpus=0)
    container["HostConfig"].update(CpuQuota=250_000, CpuPeriod=0)  # period unset: 100000 µs
    for basis in ("requests", "limits", "max"):
        assert parse(container, basis).resources == (2500, 2 * GiB, 0, ())


@pytest.mark.parametrize(
    ("requests", "gpus"),
    [
        ([{"Driver": "", "Count": 2, "DeviceIDs": None, "Capabilities": [["gpu"]]}], 2),
        ([{"Driver": "nvidia", "Count": 0, "DeviceIDs": ["0", "2"], "Capabilities": None}], 2),
        ([{"Driver": "", "Count": 1, "DeviceIDs": None, "Capabilities": [["compute"]]}], 0),
    ],
)
def test_gpus_from_device_requests(inspected, requests, gpus):
    container = copy.deepcopy(inspected)
    container["HostConfig"]["DeviceRequests"] = requests
    assert parse(container).resources[2] == gpus


def test_all_gpus_is_refused_with_what_to_do(inspected):
    container = copy.deepcopy(inspected)
    container["HostConfig"]["DeviceRequests"] = [
        {"Driver": "", "Count": -1, "DeviceIDs": None, "Capabilities": [["gpu"]]}
    ]
    with pytest.raises(PodSkipped, match=r"--gpus 2.*accounting: \{docker_all_gpus: 4\}"):
        parse(container)


def test_all_gpus_is_what_the_policy_says_the_host_has(inspected):
    container = copy.deepcopy(inspected)
    container["HostConfig"]["DeviceRequests"] = [
        {"Driver": "", "Count": -1, "DeviceIDs": None, "Capabilities": [["gpu"]]}
    ]
    view = parse_container(
        Observation(container), IDENTITY, accounting=Accounting(docker_all_gpus=4),
        observed_at=datetime(2026, 12, 1, tzinfo=UTC),
    )  # fmt: skip
    assert view.resources[2] == 4


def test_missing_label_and_times(inspected):
    container = copy.deepcopy(inspected)
    del container["Config"]["Labels"]["hub.jupyter.org/username"]
    with pytest.raises(PodSkipped, match="no hub.jupyter.org/username label"):
        parse(container)
    assert parse_time("0001-01-01T00:00:00Z") is None
    assert parse_time("2026-12-01T20:21:41.123456789Z") == datetime(
        2026, 12, 1, 20, 21, 41, 123456, tzinfo=UTC
    )
    container = copy.deepcopy(inspected)
    container["State"]["StartedAt"] = "yesterday"
    with pytest.raises(PodSkipped, match="not an RFC 3339 time"):
        parse(container)


async def test_a_run_with_one_oom_flag_is_recorded_once(inspected, engine):
    """The OOM killer took a process at 12:00 and the container lived on (the ``oom`` event);
    it exits at 13:00 with Docker's per-run OOMKilled flag still set. That is one kill: the
    exit (or a re-list after a collector restart) must not record a second. A new run's
    flag is a new kill."""
    from sqlalchemy import text

    from ledger.core.segment_plan import RecordOom
    from ledger.store import segment_writes

    started = "2026-12-01T11:00:00.000000000Z"
    container = copy.deepcopy(inspected)
    container["State"].update(
        Status="running", Running=True, OOMKilled=True, StartedAt=started,
        FinishedAt="0001-01-01T00:00:00Z",
    )  # fmt: skip
    live_at = datetime(2026, 12, 1, 12, tzinfo=UTC)
    survived = parse_container(
        Observation(container, "oom", live_at), IDENTITY, accounting=Accounting(),
        observed_at=live_at,
    )  # fmt: skip
    exited = copy.deepcopy(container)
    exited["State"].update(Status="exited", Running=False, FinishedAt="2026-12-01T13:00:00Z")
    died = parse_container(
        Observation(exited, "die", None), IDENTITY, accounting=Accounting(), observed_at=NOW
    )
    rerun = copy.deepcopy(exited)
    rerun["State"].update(StartedAt="2026-12-01T14:00:00Z", FinishedAt="2026-12-01T15:00:00Z")
    second = parse_container(
        Observation(rerun, "die", None), IDENTITY, accounting=Accounting(), observed_at=NOW
    )
    assert [k.killed_at.hour for v in (survived, died, second) for k in v.oom_kills] == [12, 13, 15]
    for view in (survived, died, died, second):
        await segment_writes.apply_ops(engine, [RecordOom(view, k) for k in view.oom_kills])
    async with engine.connect() as conn:
        kills = (await conn.execute(text("SELECT killed_at FROM oom_kills ORDER BY 1"))).all()
    assert [k.killed_at.hour for k in kills] == [12, 15]
