"""The collector's pure core: pod parsing and segment planning (no I/O, no clock)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from collector.pods import Identity, PodSkipped, parse_pod
from collector.settings import SettingsError, parse_settings
from ledger.core.accounting import Accounting
from ledger.core.segment_plan import CloseSegment, OpenSegment, RecordOom, ResizeSegment, plan
from quota_ledger_demo import simulator

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
NOW = T0 + timedelta(hours=5)
HUB = Identity(
    "jupyterhub", "hub.jupyter.org/username", servername_key="hub.jupyter.org/servername"
)
GPU = {"gpu": "nvidia.com/gpu"}
GiB = 2**30


def view(pod, *, basis="requests", deleted=False, at=NOW):
    accounting = Accounting(basis, GPU)
    return parse_pod(pod, HUB, accounting=accounting, deleted=deleted, observed_at=at)


def running(**size):
    pod = simulator.spawn("Alice@Example.org", "gpu box", at=T0, **size)
    pod["metadata"]["uid"] = "uid-1"
    pod = simulator.schedule(pod, T0 + timedelta(seconds=2))
    return simulator.run(pod, T0 + timedelta(seconds=9))


def test_identity_is_the_exact_annotation_and_start_is_scheduling():
    v = view(running(cpu="2", memory="4Gi", gpu=1))
    assert (v.username, v.servername) == ("Alice@Example.org", "gpu box")
    assert v.resources == (2000, 4 * GiB, 1, ())
    assert v.started_at == T0 + timedelta(seconds=2)
    assert v.ended_at is None


def test_pending_pod_is_not_charged():
    pod = simulator.spawn("u", at=T0)
    pod["metadata"]["uid"] = "p"
    assert view(pod).started_at is None
    ops, _ = plan(None, view(pod), NOW)
    assert ops == []


def test_effective_requests_init_containers_sidecars_and_overhead():
    pod = running(cpu="500m", memory="1Gi", overhead={"cpu": "250m", "memory": "120Mi"})
    pod["spec"]["initContainers"] = [
        {"name": "big-init", "resources": {"requests": {"cpu": "3", "memory": "512Mi"}}},
        {"name": "sidecar", "restartPolicy": "Always", "resources": {"requests": {"cpu": "100m"}}},
    ]
    # cpu: max(500m + 100m sidecar, 3000m init) + 250m; memory: max(1Gi, 512Mi) + 120Mi
    assert view(pod).resources == (3250, GiB + 120 * 2**20, 0, ())


@pytest.mark.parametrize(
    ("basis", "expected"),
    [("requests", (1000, 2 * GiB)), ("limits", (4000, 3 * GiB)), ("max", (4000, 3 * GiB))],
)
def test_charge_basis(basis, expected):
    pod = running(cpu="1", memory="2Gi", cpu_limit="4", memory_limit="3Gi")
    assert view(pod, basis=basis).resources[:2] == expected


def test_limits_basis_without_a_limit_charges_the_request():
    pod = running(cpu="1", memory="2Gi")  # no cpu limit
    assert view(pod, basis="limits").resources[:2] == (1000, 2 * GiB)


def test_extended_resources_other_than_gpu_go_to_extended():
    pod = running()
    pod["spec"]["containers"][0]["resources"]["requests"]["example.com/fpga"] = "2"
    pod["status"]["containerStatuses"][0]["resources"]["requests"]["example.com/fpga"] = "2"
    accounting = Accounting(resources={**GPU, "fpga": "example.com/fpga"})
    v = parse_pod(pod, HUB, accounting=accounting, observed_at=NOW)
    assert v.resources[3] == (("fpga", 2),)


def test_end_is_last_container_finish_and_deletion_bounds_it():
    pod = running()
    stopped = simulator.succeed(
        simulator.delete(pod, T0 + timedelta(hours=1), grace_period_seconds=30),
        T0 + timedelta(hours=1, seconds=3),
    )
    v = view(stopped, deleted=True)
    assert (v.ended_at, v.end_reason) == (T0 + timedelta(hours=1, seconds=3), "terminated")
    # deleted while still running: gone by the deletionTimestamp (request + grace period)
    v = view(simulator.delete(pod, T0 + timedelta(hours=2), grace_period_seconds=1), deleted=True)
    assert (v.ended_at, v.end_reason) == (T0 + timedelta(hours=2, seconds=1), "deleted")
    # deletion observed before the grace period ends: the observation wins
    v = view(pod, deleted=True, at=T0 + timedelta(hours=3))
    assert (v.ended_at, v.end_reason) == (T0 + timedelta(hours=3), "deleted")


def test_oom_kills_from_last_state():
    pod = simulator.oom_kill(running(memory="1Gi"), T0 + timedelta(minutes=30))
    (kill,) = view(pod).oom_kills
    assert (kill.container_name, kill.killed_at, kill.restart_count) == (
        "notebook",
        T0 + timedelta(minutes=30),
        1,
    )
    assert kill.memory_limit_bytes == GiB


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (
            lambda p: p["metadata"]["annotations"].pop("hub.jupyter.org/username"),
            "missing_username",
        ),
        (
            lambda p: p["spec"]["containers"][0]["resources"]["requests"].update(cpu="lots"),
            "bad_quantity",
        ),
        (lambda p: p["metadata"].pop("uid"), "missing_uid"),
    ],
)
def test_malformed_pods_are_skipped_with_a_reason(change, reason):
    pod = running()
    pod["status"]["containerStatuses"][0].pop("resources")
    change(pod)
    with pytest.raises(PodSkipped) as info:
        view(pod)
    assert info.value.reason == reason


def test_plan_open_resize_close_and_oom_once():
    pod = running(cpu="1", memory="2Gi")
    ops, state = plan(None, view(pod), NOW)
    assert [type(o) for o in ops] == [OpenSegment]
    assert plan(state, view(pod), NOW)[0] == []  # same state again: nothing to write
    resize_at = T0 + timedelta(minutes=10)
    requested = simulator.resize(pod, at=resize_at, memory="8Gi", in_progress=True)
    assert plan(state, view(requested), NOW)[0] == []  # not actuated yet
    done = simulator.resize(requested, at=resize_at, memory="8Gi")
    ops, state = plan(state, view(done), NOW)
    assert [type(o) for o in ops] == [ResizeSegment]
    assert ops[0].row.started_at == resize_at and ops[0].row.resources[1] == 8 * GiB
    killed = simulator.oom_kill(done, T0 + timedelta(minutes=20))
    ops, state = plan(state, view(killed), NOW)
    assert [type(o) for o in ops] == [RecordOom]
    assert plan(state, view(killed), NOW)[0] == []
    ops, state = plan(state, view(killed, deleted=True, at=T0 + timedelta(hours=1)), NOW)
    assert ops == [CloseSegment("uid-1", T0 + timedelta(hours=1), "deleted")]
    assert plan(state, view(killed), NOW)[0] == []  # closed is final


def test_settings_are_strict_and_name_the_key():
    settings = parse_settings(
        {
            "namespaces": ["jhub"],
            "heartbeat_interval": "200ms",
            "retention": "400d",
            "workloads": [
                {"name": "dask", "label_selector": "app.kubernetes.io/name=dask-worker",
                 "username_label": "gateway.dask.org/user"},
            ],
        }
    )  # fmt: skip
    assert settings.heartbeat_interval == 0.2
    assert settings.retention == 400 * 86400
    assert [w.name for w in settings.all_workloads()] == ["jupyterhub", "dask"]
    assert parse_settings({"retention": 0}).retention is None
    with pytest.raises(SettingsError) as info:
        parse_settings({"relist_interval": "10 minutes", "heartbeat_intervl": 3}, "c.yaml")
    text = str(info.value)
    assert (
        "c.yaml" in text
        and "relist_interval: '10 minutes' is not a duration; write e.g. 30d" in text
    )
    assert "heartbeat_intervl: unknown key; valid keys here:" in text
    with pytest.raises(SettingsError, match="cannot be negative|is negative"):
        parse_settings({"backoff_max": -1})
    with pytest.raises(SettingsError, match="exactly one of username_annotation"):
        parse_settings({"workloads": [{"name": "x", "label_selector": "a=b"}]})


def test_settings_durations_share_the_policy_syntax_and_keep_bare_seconds():
    settings = parse_settings({"heartbeat_interval": 30, "relist_interval": "1h30m",
                               "watch_timeout": "1.5m", "backoff_max": "2"})  # fmt: skip
    assert settings.heartbeat_interval == 30 and settings.relist_interval == 5400
    assert settings.watch_timeout == 90 and settings.backoff_max == 2


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (
            {"charge_basis": "limits"},
            "c.yaml: invalid collector settings:\n  charge_basis: moved to the quota policy (the "
            "file of --config / $QUOTA_LEDGER_CONFIG), where the hub hook reads it too; write it "
            "there as accounting: {charge_basis: limits} and remove it here",
        ),
        (
            {"resources": {"gpu": "amd.com/gpu"}},
            "c.yaml: invalid collector settings:\n  resources: moved to the quota policy (the "
            "file of --config / $QUOTA_LEDGER_CONFIG), where the hub hook reads it too; write it "
            "there as accounting: {resources: {gpu: amd.com/gpu}} and remove it here",
        ),
    ],
)
def test_accounting_keys_in_settings_say_where_they_moved(settings, expected):
    with pytest.raises(SettingsError) as info:
        parse_settings(settings, "c.yaml")
    assert str(info.value) == expected
