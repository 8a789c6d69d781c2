"""The rolling-window chart: its curve is exactly the usage integral (ledger.core.usage)."""

from __future__ import annotations

import random

from ledger.core import usage
from ledger.core.resources import GIB, MICROSECONDS_PER_HOUR
from ledger.web.chart import build_chart, render_svg, usage_curve

H = MICROSECONDS_PER_HOUR
DAY = 24 * H
WINDOW = 30 * DAY
NOW = 1_800_000_000 * 1_000_000


def random_intervals(rng: random.Random, n: int, *, running: bool):
    out = []
    for _ in range(n):
        start = NOW - rng.randrange(0, 40 * DAY)
        end = start + rng.randrange(1, 30 * H)
        out.append((start, min(end, NOW), rng.choice([GIB, 4 * GIB, 8 * GIB])))
    if running:
        out.append((NOW - 3 * H, None, 4 * GIB))
    return out


def test_curve_vertices_and_midpoints_are_exact():
    rng = random.Random(7)
    for trial in range(30):
        intervals = random_intervals(rng, rng.randrange(1, 25), running=trial % 2 == 0)
        points = usage_curve(intervals, NOW, WINDOW, NOW + WINDOW)
        assert points[0][0] == NOW and points[-1][0] == NOW + WINDOW
        for t, u in points:
            assert u == usage.window_usage(intervals, t, WINDOW)
        for (t0, u0), (t1, u1) in zip(points, points[1:], strict=False):
            mid = (t0 + t1) // 2
            if (t1 - t0) % 2 == 0:  # U is linear between vertices
                assert usage.window_usage(intervals, mid, WINDOW) * 2 == u0 + u1


def test_stopped_future_falls_to_zero_and_marks_retry():
    intervals = [(NOW - 25 * DAY, NOW - 25 * DAY + 31 * H, 8 * GIB), (NOW - H, None, 4 * GIB)]
    limit = 240 * GIB * H
    retry = usage.first_below(usage.stopped_at(intervals, NOW), NOW, WINDOW, limit)
    chart = build_chart("memory", intervals, NOW, WINDOW, limit, retry)
    assert chart.stopped[-1][1] == 0
    assert all(b[1] <= a[1] for a, b in zip(chart.stopped, chart.stopped[1:], strict=False))
    # keeping the 4 GiB server running: already over, so that future ends at once
    assert chart.runs_out_us == NOW and chart.continuing[-1] == (NOW, limit)
    svg = render_svg(chart)
    assert svg.startswith("<svg") and "can start again" in svg and "limit 240 GiB-hours" in svg
    assert 'role="img"' in svg and "<title>" in svg


def test_keep_running_curve_ends_where_the_budget_runs_out():
    intervals = [(NOW - 2 * DAY, NOW - 2 * DAY + 4 * H, 4 * GIB), (NOW - H, None, 4 * GIB)]
    limit = 60 * GIB * H
    chart = build_chart("memory", intervals, NOW, WINDOW, limit, None)
    assert chart.runs_out_us == usage.first_reaching(intervals, NOW, WINDOW, limit)
    assert chart.continuing[-1] == (chart.runs_out_us, limit)
    assert "can start again" not in render_svg(chart)


def test_many_segments_are_thinned():
    rng = random.Random(1)
    intervals = random_intervals(rng, 2000, running=False)
    svg = render_svg(build_chart("memory", intervals, NOW, WINDOW, 10**30, None))
    assert svg.count(",") < 5000
