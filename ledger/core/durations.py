"""The one duration syntax of every file quota-ledger reads (the policy, collector settings).

A duration is one or more ``<number><unit>`` terms, largest unit first: ``30d``, ``12h``,
``90m``, ``45s``, ``200ms``, ``1w``, ``1d12h``, ``1.5h``. Units: ``w`` (7 days), ``d``, ``h``,
``m`` (minutes), ``s``, ``ms``; spaces between terms are ignored; units are lower case (``M``
is months or megabytes to too many readers). The result is exact (a Decimal of seconds).

A bare number has no unit and is refused (``window: 30`` could mean days or seconds),
unless the caller accepts bare seconds: collector settings do, so files written before
units existed keep working (docs/collector.md).
"""

from __future__ import annotations

import re
from decimal import Decimal

__all__ = ["DURATION_EXAMPLES", "DurationError", "duration_seconds"]

DURATION_EXAMPLES = "30d, 12h, 90m, 45s, 200ms, 1w, 1d12h"

_N = r"(\d+(?:\.\d+)?)"
_DURATION_RE = re.compile(rf"(?:{_N}w)?(?:{_N}d)?(?:{_N}h)?(?:{_N}m)?(?:{_N}s)?(?:{_N}ms)?")
_UNIT_SECONDS = (
    Decimal(7 * 86400),
    Decimal(86400),
    Decimal(3600),
    Decimal(60),
    1,
    Decimal("0.001"),
)
_NUMBER_RE = re.compile(r"\+?(?:\d+(?:\.\d*)?|\.\d+)")


class DurationError(ValueError):
    """Not a duration; the message quotes what was written and shows what would be valid."""


def duration_seconds(value: object, *, bare_seconds: bool = False) -> Decimal:
    """``value`` (text as written, or a YAML number) → seconds, >= 0.

    ``bare_seconds``: a number without a unit means seconds (collector settings); otherwise
    it is an error that suggests the units.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        shown = (
            "a list"
            if isinstance(value, list)
            else "a mapping"
            if isinstance(value, dict)
            else repr(value)
        )
        raise DurationError(f"{shown} is not a duration; write e.g. {DURATION_EXAMPLES}")
    written = str(value)
    text = "".join(written.split())
    if _NUMBER_RE.fullmatch(text):
        if bare_seconds:
            return Decimal(text)
        raise DurationError(f"{written!r} has no unit; durations need one, e.g. {text}d or {text}h")
    if text.startswith("-"):
        raise DurationError(f"{written!r} is negative; a duration is 0 or more, e.g. 30s")
    match = _DURATION_RE.fullmatch(text)
    if not text or match is None or not any(match.groups()):
        raise DurationError(f"{written!r} is not a duration; write e.g. {DURATION_EXAMPLES}")
    return sum(
        (Decimal(n) * unit for n, unit in zip(match.groups(), _UNIT_SECONDS, strict=True) if n),
        Decimal(0),
    )
