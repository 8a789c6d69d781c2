"""Formatting helpers the templates call (tornado ``ui_methods``: first argument is the handler).

They return plain text; tornado's autoescape escapes it where it is inserted.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from urllib.parse import urlencode

from ledger.core.quantities import format_amount, format_duration, format_hours
from ledger.core.resources import resource


def hours(handler, name: str, value) -> str:
    return "—" if value is None else format_hours(name, Decimal(value))


def number(handler, value, places: int = 1) -> str:
    return "—" if value is None else f"{float(value):,.{places}f}"


def amount(handler, name: str, base_units: int) -> str:
    return format_amount(name, int(base_units))


def unit(handler, name: str) -> str:
    return resource(name).hours_unit


def when(handler, at: datetime | None) -> str:
    return "—" if at is None else at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def duration(handler, seconds, round_up: bool = False) -> str:
    return "—" if seconds is None else format_duration(seconds, round_up=round_up)


def until(handler, at: datetime | None, now: datetime) -> str:
    """'in 3 days 4 hours' (rounded up: a waiting time must not be understated)."""
    if at is None:
        return "—"
    return (
        "now" if at <= now else "in " + format_duration((at - now).total_seconds(), round_up=True)
    )


def age(handler, at: datetime | None, now: datetime) -> str:
    if at is None:
        return "never"
    return format_duration(max(0.0, (now - at).total_seconds())) + " ago"


def bar_width(handler, percent) -> str:
    """CSS width for a usage bar: 0–100 %, as a plain number (no user text ever reaches it)."""
    if percent is None:
        return "0"
    return f"{max(0.0, min(100.0, float(percent))):.1f}"


def qs(handler, values: dict) -> str:
    return urlencode(values)


LABELS = {"cpu": "CPU", "memory": "Memory", "gpu": "GPU"}


def label(handler, name: str) -> str:
    return LABELS.get(name, name)


def window(handler, seconds: int) -> str:
    days, rest = divmod(int(seconds), 86400)
    return f"{days} days" if days and not rest else format_duration(seconds)


def percent(handler, value) -> str:
    return "—" if value is None else f"{float(value):.0f} %"


def limit_sources(handler, decision, username: str) -> str:
    """Where the limits come from, as the policy says: groups, a per-user entry, the default.

    Budget sources are ``group:<name>``, ``user:<name>`` and ``unlisted:<group>``
    (``Policy.limits_for``); a per-user entry must not read as one of the user's groups.
    """
    names = []
    for budget in getattr(decision, "budgets", {}).values():
        kind, _, name = str(getattr(budget, "source", "")).partition(":")
        if kind == "user":
            text = "a per-user entry for " + username
        elif kind == "unlisted":
            text = f"{name} (the default for users in no listed group)"
        elif kind == "group":
            text = "group " + name.replace("+", " + ")
        else:
            continue
        if text not in names:
            names.append(text)
    return ", ".join(names)
