"""The usage model as people read it: one wording for the CLI tables and the web pages. Pure.

Every table cell and page figure of a :class:`~ledger.core.usage_model.ResourceUsage` comes
from here, so ``check``, ``usage``, ``report`` and the pages say the same thing the same way:
resource-hours through ``format_hours`` ("42.5 GiB-hours"), what running servers hold in the
display unit ("4 GiB", "0 GiB", "2 CPUs"), whole percent (99.7 % reads "99 %": "100 %"
means used up), times in UTC to the minute with waiting times rounded up and run-out
times rounded down.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from ledger.core.grants import adjustment_text
from ledger.core.quantities import format_amount, format_duration, format_hours
from ledger.core.resources import resource
from ledger.core.usage_model import LimitSource, Membership, ResourceUsage

LABELS = {"cpu": "CPU", "memory": "Memory", "gpu": "GPU"}


def label(name: str) -> str:
    return LABELS.get(name, name)


def window_text(seconds: int) -> str:
    """``"30 days"``, ``"12 hours"``."""
    days, rest = divmod(int(seconds), 86400)
    return f"{days} days" if days and not rest else format_duration(seconds)


def percent_text(percent: float | None) -> str:
    """Whole percent, half up; below 100 never reads "100 %" (that means used up)."""
    if percent is None:
        return "—"
    shown = math.floor(percent + 0.5)
    return f"{99 if percent < 100 <= shown else shown} %"


def held_text(name: str, base_units: int) -> str:
    """What running servers hold: ``"4 GiB"``, ``"2 CPUs"``; nothing reads ``"0 GiB"``."""
    if base_units == 0 and name == "memory":
        return f"0 {resource(name).display_unit}"  # not "0 bytes": the unit people read
    return format_amount(name, base_units)


def time_text(at: datetime | None, *, round_up: bool = False) -> str:
    """``"2026-11-19 13:01 UTC"``; ``round_up`` for times a person waits for."""
    if at is None:
        return "—"
    at = at.astimezone(UTC)
    if round_up and (at.second or at.microsecond):
        at = at.replace(second=0, microsecond=0) + timedelta(minutes=1)
    return at.strftime("%Y-%m-%d %H:%M UTC")


def until_text(at: datetime | None, now: datetime) -> str:
    """``"in 3 days 4 hours"`` (rounded up: a waiting time must not be understated)."""
    if at is None:
        return "—"
    if at <= now:
        return "now"
    return "in " + format_duration((at - now).total_seconds(), round_up=True)


def source_text(source: LimitSource) -> str:
    if source.kind == "user":
        return f"own limit (users: {source.user})"
    if source.kind == "unlisted":
        return f"{', '.join(source.groups)} (default for users in no listed group)"
    if source.kind == "group":
        return ("groups " if len(source.groups) > 1 else "group ") + " + ".join(source.groups)
    return "no limit"


def limits_text(m: Membership, resources: Mapping[str, ResourceUsage] | None = None) -> str:
    """``"limits from regular (default for users in no listed group)"``; with ``resources``,
    the ones whose limit is the user's own entry under ``users:`` are named too
    (``"limits from regular; memory set for this user"``)."""
    if m.denied_all:
        return "no limits: users in no listed group may not start servers"
    own = [n for n, r in (resources or {}).items() if r.source.kind == "user"]
    from_groups = [
        n for n, r in (resources or {}).items() if r.source.kind in ("group", "unlisted")
    ]
    if own and not from_groups:
        return "limits set for this user only"
    if m.unlisted == "unlimited":
        text = "no limits (users in no listed group are unlimited)"
    elif m.unlisted:
        text = f"limits from {m.unlisted} (default for users in no listed group)"
    elif m.policy_groups:
        text = "limits from " + ", ".join(m.policy_groups)
    else:
        return "limits set for this user only"
    if own:
        text += f"; {', '.join(own)} set for this user"
    return text


def membership_text(m: Membership, resources: Mapping[str, ResourceUsage] | None = None) -> str:
    """``"groups: none; limits from regular (default for users in no listed group)"``."""
    return f"groups: {', '.join(m.groups) or 'none'}; {limits_text(m, resources)}"


def cells(r: ResourceUsage, now: datetime) -> dict[str, str]:
    """Every figure of one record as text, keyed like its JSON."""
    unlimited = r.limit_hours is None
    return {
        "resource": r.resource,
        "used": format_hours(r.resource, r.used_hours),
        "limit": "unlimited" if unlimited else _limit_text(r),
        "remaining": "—" if unlimited else format_hours(r.resource, r.remaining_hours),
        "percent_used": percent_text(r.percent_used),
        "window": window_text(r.window_seconds),
        "running": held_text(r.resource, r.running),
        "burn_per_hour": f"{format_hours(r.resource, r.burn_per_hour)} per hour",
        "runs_out_at": time_text(r.runs_out_at),
        "runs_out_in": until_text(r.runs_out_at, now),
        "retry_at": time_text(r.retry_at, round_up=True),
        "retry_in": until_text(r.retry_at, now),
        "limit_source": source_text(r.source),
        "adjustments": adjustment_text(r.resource, r.grants, r.credited_hours),
    }


def _limit_text(r: ResourceUsage) -> str:
    """``"160 GiB-hours"``; with active grants ``"160 GiB-hours (60 + 100 granted)"``."""
    text = format_hours(r.resource, r.limit_hours)
    if r.granted_hours:
        policy = format_hours(r.resource, r.policy_limit_hours).rsplit(" ", 1)[0]
        granted = format_hours(r.resource, r.granted_hours).rsplit(" ", 1)[0]
        text += f" ({policy} + {granted} granted)"
    return text


# Column titles of the per-resource table (``check`` and ``usage``).
TABLE_COLUMNS = {
    "resource": "resource",
    "used": "used",
    "limit": "limit",
    "remaining": "remaining",
    "percent_used": "% used",
    "window": "window",
    "running": "running now",
    "runs_out_at": "runs out",
    "retry_at": "room again",
    "limit_source": "limit from",
}


def table_row(r: ResourceUsage, now: datetime) -> list[str]:
    text = cells(r, now)
    return [text[key] for key in TABLE_COLUMNS]


def short_figure(r: ResourceUsage) -> str:
    """``"20 / 60 (33 %)"`` for a report cell; the column header carries the unit."""
    used = format_hours(r.resource, r.used_hours).rsplit(" ", 1)[0]
    if r.limit_hours is None:
        return used
    limit = format_hours(r.resource, r.limit_hours).rsplit(" ", 1)[0]
    return f"{used} / {limit} ({percent_text(r.percent_used)})"


def used_of_limit_text(r: ResourceUsage) -> str:
    """``"42 / 60 GiB-hours"`` (the hub's summary and the JupyterLab status bar)."""
    if r.limit_hours is None:
        return format_hours(r.resource, r.used_hours)

    def number(hours) -> str:
        return format_hours(r.resource, hours).rsplit(" ", 1)[0]

    return f"{number(r.used_hours)} / {number(r.limit_hours)} {resource(r.resource).hours_unit}"
