"""Parsing and printing the times people give on the command line and read in reports.

``--at`` takes ISO 8601 with an explicit time zone (``2026-11-01T12:00:00Z``,
``2026-11-01 13:00+01:00``): a quota decision at a time without a zone is ambiguous, so it
is refused rather than guessed. ``now`` is the only place the CLI reads the clock.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# A bare date, with or without a zone. Python's fromisoformat reads "2026-10-01+01:00" as
# 01:00 local time on that day (the "+" taken as the date/time separator), so dates are
# caught before it: a decision at "a day" is ambiguous, and the error says how to write one.
_DATE_ONLY = re.compile(r"(\d{4}-\d{2}-\d{2})(?:[zZ]|[+-]\d{2}(?::?\d{2})?)?")


class TimeError(ValueError):
    pass


def utcnow() -> datetime:
    """The clock, read at the edges only (CLI, hub hook, enforcer, web handlers)."""
    return datetime.now(UTC)


def parse_iso(text: str, *, what: str) -> datetime:
    """ISO 8601 with a time zone → aware datetime in UTC; TimeError says what is valid."""
    raw = text.strip()
    date_only = _DATE_ONLY.fullmatch(raw)
    if date_only:
        day = date_only.group(1)
        raise TimeError(
            f"{what} {text!r} is a date without a time; write e.g. {day}T00:00:00Z for the "
            f"start of that day in UTC, or {day}T00:00:00+01:00"
        )
    if raw.endswith(("z", "Z")):
        raw = raw[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        raise TimeError(
            f"{what} {text!r} is not an ISO 8601 time; write e.g. 2026-11-01T12:00:00Z "
            "or 2026-11-01T13:00:00+01:00"
        ) from None
    if parsed.tzinfo is None:
        raise TimeError(
            f"{what} {text!r} has no time zone; add one, e.g. {text}Z for UTC or {text}+01:00"
        )
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+14:00 is before year 1 in UTC
        raise TimeError(
            f"{what} {text!r} is out of range; write a time between years 1 and 9999"
        ) from None


def parse_day_or_time(text: str, *, what: str) -> datetime:
    """An end or start people write as a day (``grant --until 2026-12-31``): a bare date is
    that day's start, in UTC unless it carries a zone; anything else as :func:`parse_iso`.
    Only a span's bound takes this reading; ``--at`` refuses a bare date (a decision at "a
    day" is ambiguous, a grant "until a day" is not)."""
    date_only = _DATE_ONLY.fullmatch(text.strip())
    if date_only:
        zone = text.strip()[len(date_only.group(1)) :] or "Z"
        if zone[0] in "+-" and len(zone) == 3:
            zone += ":00"
        text = f"{date_only.group(1)}T00:00:00{zone}"
    return parse_iso(text, what=what)


def parse_at(text: str, *, what: str = "--at:") -> datetime:
    """``--at``: ISO 8601 with a time zone, or ``now`` for the current time."""
    if text.strip().lower() == "now":
        return utcnow()
    return parse_iso(text, what=what)


def iso(at: datetime | None) -> str | None:
    return None if at is None else at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def to_us(at: datetime) -> int:
    """Microseconds since the epoch: the ledger's arithmetic is integer µs (exact)."""
    if at.tzinfo is None:
        raise ValueError(f"{at!r} has no time zone; ledger times are timezone-aware")
    delta = at - EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(at_us: int) -> datetime:
    return EPOCH + timedelta(microseconds=at_us)
