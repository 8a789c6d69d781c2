"""The value syntax of the policy file: budgets, running caps, numbers, durations.

``60 GiB-hours`` (any unit of the resource), ``{limit: 60 GiB-hours, window: 7d}``, running
caps in Kubernetes quantities (``4``, ``500m``, ``32Gi``), durations in the one syntax of
``ledger.core.durations``. Each parser takes a ``YNode`` and raises ``Invalid`` with a
message that says what would be valid; ``read_field`` files it under the key's line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from decimal import Context, Decimal

from ledger.core.durations import DURATION_EXAMPLES, duration_seconds
from ledger.core.quantities import MAX_QUANTITY, cpu_millicores, device_count, memory_bytes
from ledger.core.resources import GIB, SERVERS, resource
from ledger.core.yaml_lines import Invalid, Issues, YNode, check_keys, child_path, read_field, shown

__all__ = [
    "EXTENDED_HINT",
    "budget_hours",
    "number",
    "running_caps",
    "unit_help",
    "whole_seconds",
]

EXTENDED_HINT = " (other extended resources need a short name under accounting.resources:)"
_NUMBER_RE = re.compile(r"\+?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def number(text: str) -> Decimal:
    """A plain non-negative decimal number, exactly."""
    cleaned = text.strip().replace("_", "")
    if not _NUMBER_RE.fullmatch(cleaned):
        raise Invalid(f"{text!r} is not a non-negative number")
    return Decimal(cleaned)


# Longer than any rolling window or interval a hub means; past it, `now - window` leaves the
# calendar (year 1) and every check would fail at run time instead of at load.
MAX_DURATION_SECONDS = 100 * 366 * 86_400  # "36600d"


def whole_seconds(node: YNode, *, zero_ok: bool = False) -> int:
    """A policy duration (``30d``, ``12h``, ``1d12h``...; a unit is required) → seconds > 0
    (or ≥ 0 with ``zero_ok``: ``enforcement.grace: 0s`` stops at once)."""
    if isinstance(node.value, dict | list):
        raise Invalid(f"{shown(node)} is not a duration; write e.g. {DURATION_EXAMPLES}")
    written = node.raw if node.raw is not None else node.value
    seconds = duration_seconds(written)
    if seconds < 0 or (seconds == 0 and not zero_ok):
        raise Invalid(f"{written!r} is zero; a duration must be longer than that, e.g. 30d")
    if seconds != seconds.to_integral_value():
        raise Invalid(f"{written!r} is not a whole number of seconds; write e.g. 90m or 45s")
    if seconds > MAX_DURATION_SECONDS:
        raise Invalid(f"{written!r} is longer than 100 years; write e.g. 30d")
    return int(seconds)


# --- budgets: "<number> <unit>-hours" ---------------------------------------------------------

_EXACT = Context(prec=80)  # decimal/binary size ratios terminate within ~30 digits


def _memory_units() -> dict[str, Decimal]:
    """Memory budget units (lower case) → GiB per unit, exactly."""
    units: dict[str, Decimal] = {}
    for power, letter in enumerate("kmgtp", start=1):
        units[f"{letter}ib"] = units[f"{letter}i"] = _EXACT.divide(Decimal(2 ** (10 * power)), GIB)
        units[f"{letter}b"] = _EXACT.divide(Decimal(10 ** (3 * power)), GIB)
    return units


_MEMORY_UNITS = _memory_units()
_CPU_UNITS = ("cpu", "cpus", "core", "cores")
_HOURS_RE = re.compile(r"(?P<unit>.*?)[- ]?(?:hours|hour|hrs|hr|h)", re.IGNORECASE)


def unit_help(resource_name: str) -> str:
    """The units a budget of ``resource_name`` may be written in, for messages."""
    if resource_name == "memory":
        return "GiB-hours (or MiB-, TiB-, GB-hours)"
    if resource_name == "cpu":
        return "CPU-hours (or core-hours)"
    return resource(resource_name).hours_unit


def _unit_factor(unit: str, resource_name: str) -> Decimal | None:
    """Display units per written unit, or None if ``unit`` is not one of the resource's."""
    if resource_name == "memory":
        return _MEMORY_UNITS.get(unit)
    if resource_name == "cpu":
        return Decimal(1) if unit in _CPU_UNITS else None
    names = {resource_name.lower(), resource(resource_name).display_unit.lower()}
    return Decimal(1) if unit in names | {f"{n}s" for n in names} else None


def _owner(unit: str, extended: Iterable[str]) -> str | None:
    """Which resource a unit belongs to, to explain a mismatch."""
    for name in ("memory", "cpu", *extended):
        if _unit_factor(unit, name) is not None:
            return name
    return None


# No hub budgets a trillion resource-hours; above it a number is a typo (or a probe), and
# one stored grant of 10**22 hours broke every JSON answer that showed it.
MAX_BUDGET_HOURS = Decimal(10**12)


def budget_hours(node: YNode, resource_name: str, extended: Iterable[str]) -> Decimal | None:
    """A budget scalar → limit in the resource's hours unit (GiB-hours...); None = unlimited.

    Accepts ``"60 GiB-hours"`` (any unit of the resource, case-insensitive, ``-h`` for hours)
    or a bare number meaning hours in the resource's display unit.
    """
    value = node.value
    hours_unit = resource(resource_name).hours_unit
    example = f"'60 {hours_unit}' (or {{limit: 60 {hours_unit}, window: 7d}})"
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise Invalid(f"{shown(node)} is not a budget; write resource-hours such as {example}")
    text = (node.raw or "").strip()
    match = re.fullmatch(r"(?P<number>[-+]?[\d._]*\d[\d._]*(?:[eE][+-]?\d+)?)\s*(?P<rest>.*)", text)
    if match is None:
        raise Invalid(f"{text!r} is not a budget; write resource-hours such as {example}")
    if match["number"].startswith("-"):
        raise Invalid(f"{text!r} is negative; a budget is 0 (forbidden) or more")
    amount = number(match["number"])
    rest = match["rest"]
    if not rest:
        return _at_most_max(amount, text)  # a bare number: hours of the display unit
    hours = _HOURS_RE.fullmatch(rest)
    if hours is None:
        raise Invalid(f"{text!r} is not a budget; write resource-hours such as {example}")
    unit = hours["unit"].strip().lower()
    if not unit:
        raise Invalid(f"{text!r} does not say hours of what; write e.g. '{amount} {hours_unit}'")
    extended = list(extended)
    factor = _unit_factor(unit, resource_name)
    if factor is None:
        owner = _owner(unit, extended)
        written = f"'{hours['unit'].strip()}-hours'"
        why = f"{written} is for {owner} budgets" if owner else f"{written} is not a unit"
        raise Invalid(f"{resource_name} budgets are in {unit_help(resource_name)}; {why}")
    return _at_most_max(_EXACT.multiply(amount, factor), text)


def _at_most_max(hours: Decimal, text: str) -> Decimal:
    if hours > MAX_BUDGET_HOURS:
        raise Invalid(f"{text!r} is more than {MAX_BUDGET_HOURS:,} hours; give a smaller budget")
    return hours


def _cap(name: str, node: YNode) -> int:
    text = node.raw or ""
    if name == "cpu":
        return cpu_millicores(text)
    if name == "memory":
        if text.endswith("m"):  # Kubernetes reads 500m memory as half a byte
            raise Invalid(
                f"{text!r} is {text[:-1]} thousandths of a byte; did you mean "
                f"{text[:-1]}Mi or {text[:-1]}M?"
            )
        return memory_bytes(text)
    if name == SERVERS:
        count = number(text)
        if count != int(count):
            raise Invalid(f"{text!r} is not a whole number of servers")
        if count > MAX_QUANTITY:  # the other caps are quantities, bounded where they parse
            raise Invalid(f"{text!r} is more than any server could hold; give a smaller cap")
        return int(count)
    return device_count(text)


def running_caps(
    node: YNode, path: str, extended: list[str], issues: Issues
) -> dict[str, int | None]:
    entries = check_keys(node, path, ["cpu", "memory", *extended, SERVERS], issues, EXTENDED_HINT)
    running: dict[str, int | None] = {}
    for name, child in entries.items():
        key = child_path(path, name)
        if child.value is None:
            running[name] = None
        elif isinstance(child.value, dict | list | bool):
            issues.add(child.line, key, "must be an amount such as 4, 500m, 32Gi or 2")
        else:
            cap = read_field(child, key, lambda n, r=name: _cap(r, n), issues)
            if cap is not None:
                running[name] = cap
    return running
