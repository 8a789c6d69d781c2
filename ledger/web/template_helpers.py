"""Formatting helpers the templates call (tornado ``ui_methods``: first argument is the handler).

They return plain text; tornado's autoescape escapes it where it is inserted.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from urllib.parse import urlencode

from ledger.core import usage_text
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


def when(handler, at: datetime | None, round_up: bool = False) -> str:
    return usage_text.time_text(at, round_up=round_up)


def duration(handler, seconds, round_up: bool = False) -> str:
    return "—" if seconds is None else format_duration(seconds, round_up=round_up)


def until(handler, at: datetime | None, now: datetime) -> str:
    """'in 3 days 4 hours' (rounded up: a waiting time must not be understated)."""
    return usage_text.until_text(at, now)


def cells(handler, record, now: datetime) -> dict[str, str]:
    """Every figure of a usage-model record as text (``ledger.core.usage_text``)."""
    return usage_text.cells(record, now)


def held(handler, name: str, base_units: int) -> str:
    """What running servers hold: ``"4 GiB"``, ``"2 CPUs"``, ``"0 GPUs"``."""
    return usage_text.held_text(name, int(base_units))


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


def label(handler, name: str) -> str:
    return usage_text.label(name)


def window(handler, seconds: int) -> str:
    return usage_text.window_text(seconds)


def percent(handler, value) -> str:
    return usage_text.percent_text(None if value is None else float(value))


def membership(handler, m) -> str:
    """Whose limits apply: ``"limits from power"`` (``ledger.core.usage_text``)."""
    return usage_text.limits_text(m)
