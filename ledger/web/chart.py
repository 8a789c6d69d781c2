"""The picture of how a rolling window gives quota back: an SVG drawn on the server. Pure.

Usage U(t) over a window W is piecewise linear in t (``ledger.core.usage``): it only changes
slope where a segment starts or ends, or where a start or end leaves the window (+W). So
the curve is drawn *exactly* from those instants — no sampling — for two futures:

- the servers stop now (``usage.stopped_at``): U only falls, reaching 0 at now + W;
- they keep running: U first rises by what they burn, then falls as old usage leaves.

The limit is a horizontal line; where the first curve drops below it is when the user can
start again. Every piece of text is escaped (it holds numbers and dates, but still).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from html import escape

from ledger.core import usage
from ledger.core.decision import from_us
from ledger.core.quantities import format_hours
from ledger.core.resources import MICROSECONDS_PER_SECOND, resource

WIDTH, HEIGHT = 720, 260
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 16, 34
MAX_POINTS = 800


def _events(intervals: Sequence[usage.Interval], window_us: int) -> list[tuple[int, int]]:
    """(time, slope change) of U for these intervals (see ledger.core.usage's module docstring)."""
    events = []
    for start, end, rate in intervals:
        if not rate:
            continue
        if end is None:
            events += [(start, rate), (start + window_us, -rate)]
        elif end > start:
            events += [(start, rate), (min(end, start + window_us), -rate)]
            events += [(max(end, start + window_us), -rate), (end + window_us, rate)]
    events.sort()
    return events


def usage_curve(
    intervals: Sequence[usage.Interval], now_us: int, window_us: int, until_us: int
) -> list[tuple[int, int]]:
    """Exact (t, U(t)) vertices of the usage curve on [now, until]."""
    u = usage.window_usage(intervals, now_us, window_us)
    slope, t = 0, now_us
    points = [(now_us, u)]
    for time_us, delta in _events(intervals, window_us):
        if time_us <= now_us:
            slope += delta
            continue
        if time_us >= until_us:
            break
        u += slope * (time_us - t)
        t = time_us
        slope += delta
        if points[-1][0] == t:
            points[-1] = (t, u)
        else:
            points.append((t, u))
    points.append((until_us, u + slope * (until_us - t)))
    return points


@dataclass
class WindowChart:
    resource: str
    limit: int  # base-unit·µs
    now_us: int
    window_us: int
    stopped: list[tuple[int, int]]
    continuing: list[tuple[int, int]] | None  # None: nothing running
    retry_at_us: int | None  # when a typical server may start again (None: not out)
    runs_out_us: int | None = None  # when the budget is spent if running servers continue


def build_chart(
    resource_name: str,
    intervals: Sequence[usage.Interval],
    now_us: int,
    window_us: int,
    limit: int,
    retry_at_us: int | None,
    runs_out_us: int | None = None,
) -> WindowChart:
    """``runs_out_us``: ``usage.first_reaching`` of ``intervals`` if the caller has it."""
    until = now_us + window_us
    stopped = usage_curve(usage.stopped_at(intervals, now_us), now_us, window_us, until)
    continuing = runs_out = None
    if usage.burn_rate(intervals, now_us) > 0:
        runs_out = runs_out_us
        if runs_out is None:
            runs_out = usage.first_reaching(intervals, now_us, window_us, limit)
        # past the point where the budget runs out the curve is not drawn: stop there
        continuing = usage_curve(intervals, now_us, window_us, min(until, runs_out or until))
        if runs_out is not None:
            # the enforcer stops servers there: the "keep running" future ends at the limit
            continuing = [(t, u) for t, u in continuing if t < runs_out] + [(runs_out, limit)]
    return WindowChart(
        resource_name, limit, now_us, window_us, stopped, continuing, retry_at_us, runs_out
    )


def _hours(name: str, base_us: int | float) -> Decimal:
    return resource(name).to_hours(Decimal(int(base_us)))


def _thin(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    if len(points) <= MAX_POINTS:
        return points
    step = len(points) / MAX_POINTS
    kept = [points[int(i * step)] for i in range(MAX_POINTS)]
    return [*kept, points[-1]]


def _path(points: list[tuple[float, float]]) -> str:
    return " ".join(f"{x:.1f},{y:.1f}" for x, y in _thin(points))


def _day_ticks(start: datetime, end: datetime) -> list[datetime]:
    days = max(1, (end - start).days)
    every = max(1, -(-days // 7))
    first = (start + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    ticks, tick = [], first
    while tick < end:
        ticks.append(tick)
        tick += timedelta(days=every)
    return ticks


def render_svg(chart: WindowChart) -> str:
    """The chart as an inline SVG element (role=img, with a text description)."""
    name = chart.resource
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    start_us, end_us = chart.now_us, chart.now_us + chart.window_us
    top_value = max(
        [chart.limit, *(u for _, u in chart.stopped)]
        + ([min(u, chart.limit * 1.25) for _, u in chart.continuing] if chart.continuing else [])
    )
    y_max = max(1, top_value) * 1.1

    def x(t_us: int) -> float:
        return LEFT + (t_us - start_us) / (end_us - start_us) * plot_w

    def y(value: float) -> float:
        return TOP + plot_h - min(value, y_max) / y_max * plot_h

    parts = []
    now_dt, end_dt = from_us(start_us), from_us(end_us)
    for tick in _day_ticks(now_dt, end_dt):
        tx = x(int((tick - now_dt).total_seconds() * MICROSECONDS_PER_SECOND) + start_us)
        parts.append(
            f'<line class="grid" x1="{tx:.1f}" y1="{TOP}" x2="{tx:.1f}" y2="{TOP + plot_h}"/>'
        )
        parts.append(
            f'<text class="tick" x="{tx:.1f}" y="{HEIGHT - 12}" text-anchor="middle">'
            f"{escape(tick.strftime('%b %d'))}</text>"
        )
    for fraction in (0, 0.5, 1):
        value = chart.limit * fraction
        ty = y(value)
        parts.append(
            f'<line class="grid" x1="{LEFT}" y1="{ty:.1f}" x2="{LEFT + plot_w}" y2="{ty:.1f}"/>'
        )
        label = f"{_hours(name, value):.0f}" if chart.limit else "0"
        parts.append(
            f'<text class="tick" x="{LEFT - 6}" y="{ty + 4:.1f}" text-anchor="end">{escape(label)}</text>'
        )
    stopped = [(x(t), y(u)) for t, u in chart.stopped]
    area = [(stopped[0][0], y(0)), *stopped, (stopped[-1][0], y(0))]
    parts.append(f'<polygon class="area" points="{_path(area)}"/>')
    parts.append(f'<polyline class="stopped" points="{_path(stopped)}"/>')
    if chart.continuing:
        cont = [(x(t), y(u)) for t, u in chart.continuing]
        parts.append(f'<polyline class="continuing" points="{_path(cont)}"/>')
        if chart.runs_out_us is not None and chart.runs_out_us <= end_us:
            ox, oy = cont[-1]
            parts.append(f'<circle class="runs-out-dot" cx="{ox:.1f}" cy="{oy:.1f}" r="4"/>')
    ly = y(chart.limit)
    limit_text = f"limit {format_hours(name, _hours(name, chart.limit))}"
    parts.append(
        f'<line class="limit" x1="{LEFT}" y1="{ly:.1f}" x2="{LEFT + plot_w}" y2="{ly:.1f}"/>'
    )
    parts.append(
        f'<text class="limit-label" x="{LEFT + plot_w - 4}" y="{ly - 6:.1f}" text-anchor="end">{escape(limit_text)}</text>'
    )
    if chart.retry_at_us is not None and start_us <= chart.retry_at_us <= end_us:
        rx = x(chart.retry_at_us)
        when = from_us(chart.retry_at_us).strftime("%b %d %H:%M UTC")
        anchor = "start" if rx < LEFT + plot_w * 0.6 else "end"
        dx = 8 if anchor == "start" else -8
        parts.append(
            f'<line class="retry" x1="{rx:.1f}" y1="{TOP}" x2="{rx:.1f}" y2="{TOP + plot_h}"/>'
        )
        parts.append(f'<circle class="retry-dot" cx="{rx:.1f}" cy="{ly:.1f}" r="5"/>')
        parts.append(
            f'<text class="retry-label" x="{rx + dx:.1f}" y="{TOP + 14}" text-anchor="{anchor}">'
            f"{escape('can start again ' + when)}</text>"
        )
    parts.append(f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + plot_h}"/>')
    parts.append(
        f'<line class="axis" x1="{LEFT}" y1="{TOP + plot_h}" x2="{LEFT + plot_w}" y2="{TOP + plot_h}"/>'
    )
    unit = resource(name).hours_unit
    parts.append(
        f'<text class="tick" x="14" y="{TOP + plot_h / 2:.0f}" text-anchor="middle" '
        f'transform="rotate(-90 14 {TOP + plot_h / 2:.0f})">{escape(unit)}</text>'
    )
    description = describe(chart)
    return (
        f'<svg class="window-chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(description)}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{escape(description)}</title>{''.join(parts)}</svg>"
    )


def describe(chart: WindowChart) -> str:
    """The chart in one sentence, for screen readers and tests."""
    name = chart.resource
    now_value = chart.stopped[0][1]
    text = (
        f"{resource(name).display_unit} usage in the rolling window: "
        f"{format_hours(name, _hours(name, now_value))} now, falling to 0 by "
        f"{from_us(chart.now_us + chart.window_us):%b %d} if your servers stop now"
    )
    if chart.retry_at_us is not None:
        text += f"; below the limit again at {from_us(chart.retry_at_us):%b %d %H:%M} UTC"
    return text + "."
