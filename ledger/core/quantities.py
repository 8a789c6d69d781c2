"""Kubernetes quantities, parsed exactly, and amounts formatted for people. Pure, no I/O.

Parsing follows the Kubernetes quantity grammar
(https://kubernetes.io/docs/reference/kubernetes-api/common-definitions/quantity/)::

    <quantity> ::= <number><suffix>     (an optional leading "+"; negatives are refused here)
    <number>   ::= <digits> | <digits>.<digits> | <digits>. | .<digits>
    <suffix>   ::= "" | n | u | m | k | M | G | T | P | E        decimal SI
                 | Ki | Mi | Gi | Ti | Pi | Ei                    binary SI
                 | e<signed integer> | E<signed integer>          decimal exponent

Everything is Decimal arithmetic, never float, so ``0.1`` is one tenth and ``1Gi`` is exactly
2**30. Kubernetes caps quantities at 2**63 - 1 and so do we (also to keep ``1e999999999`` from
turning into a billion-digit integer). CPU is rounded up to whole millicores and memory to
whole bytes, as the API server does when it canonicalises a quantity.
"""

from __future__ import annotations

import re
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Context, Decimal

from ledger.core.resources import GIB, resource

__all__ = [
    "QuantityError",
    "cpu_millicores",
    "device_count",
    "format_amount",
    "format_cpu",
    "format_duration",
    "format_hours",
    "format_memory",
    "memory_bytes",
    "parse_quantity",
    "to_base_units",
]

MAX_QUANTITY = Decimal(2**63 - 1)

_DECIMAL_SUFFIXES = {
    "n": -9,
    "u": -6,
    "m": -3,
    "": 0,
    "k": 3,
    "M": 6,
    "G": 9,
    "T": 12,
    "P": 15,
    "E": 18,
}
_BINARY_SUFFIXES = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}

_QUANTITY_RE = re.compile(
    r"(?P<number>\+?(?:\d+(?:\.\d*)?|\.\d+))"
    r"(?:(?P<exponent>[eE][+-]?\d+)|(?P<suffix>[KMGTPE]i|[numkMGTPE])?)"
)
# Same shape, but anything after the number: to say what was wrong and suggest a fix.
_LOOSE_RE = re.compile(r"(?P<number>[+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*(?P<rest>.*)")

# For rounding display values: enough digits that quantize never runs out of precision.
_WIDE = Context(prec=100)

GENERIC_EXAMPLES = "500m, 1.5, 2, 4Gi, 512Mi, 4G, 1e3"
CPU_EXAMPLES = "500m, 0.5, 1, 2.5"
MEMORY_EXAMPLES = "512Mi, 4Gi, 1.5Gi, 4G"
DEVICE_EXAMPLES = "0, 1, 2"


class QuantityError(ValueError):
    """A value that is not a (non-negative, finite) Kubernetes quantity."""


def _fail(value: object, where: str, problem: str, examples: str) -> QuantityError:
    prefix = f"{where}: " if where else ""
    return QuantityError(f"{prefix}{value!r} {problem}; valid quantities look like {examples}")


def _suggest(text: str) -> str:
    """A likely intended spelling of a near-miss such as ``4GB``, ``4 Gi`` or ``4g``."""
    stripped = text.strip()
    match = _LOOSE_RE.fullmatch(stripped)
    if match is None or match["number"].startswith("-"):
        return ""
    squeezed = "".join(stripped.split())
    if squeezed != text and _QUANTITY_RE.fullmatch(squeezed):
        return f"did you mean {squeezed}? Kubernetes allows no spaces"
    number, unit = match["number"], "".join(match["rest"].split()).lower()
    letter = unit[:1].upper()
    if not letter or letter not in "KMGTPE":
        return ""
    binary = f"{number}{letter}i"
    decimal = f"{number}{'k' if letter == 'K' else letter}"
    if unit[1:] in ("i", "ib"):  # gi, GiB: the case or a trailing B
        return f"did you mean {binary}?"
    if unit[1:] in ("", "b"):  # GB, g, K: bytes spelled the way people write them
        return f"did you mean {decimal} or {binary}?"
    return ""


def _shift(number: Decimal, places: int) -> Decimal:
    """number × 10**places, exactly (only the exponent changes)."""
    sign, digits, exponent = number.as_tuple()
    return Decimal((sign, digits, exponent + places))


def _parse(value: object, where: str, examples: str) -> Decimal:
    if isinstance(value, bool):  # bool is an int subclass; True is not "1 CPU"
        raise _fail(value, where, "is a boolean, not a quantity", examples)
    if isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise _fail(value, where, "is not a finite number", examples)
        number = Decimal(repr(value))  # repr is the shortest round-trip form: 0.1 stays 0.1
    elif isinstance(value, Decimal):
        if not value.is_finite():
            raise _fail(value, where, "is not a finite number", examples)
        number = value
    elif isinstance(value, str):
        number = _parse_text(value, where, examples)
    else:
        raise _fail(value, where, f"is a {type(value).__name__}, not a quantity", examples)
    if number < 0:
        raise _fail(value, where, "is negative; resource amounts are 0 or more", examples)
    if number > MAX_QUANTITY:
        raise _fail(value, where, "is larger than Kubernetes allows (2**63 - 1)", examples)
    return number + Decimal(0) if number.is_zero() else number  # -0 → 0


def _parse_text(text: str, where: str, examples: str) -> Decimal:
    if not text:
        raise _fail(text, where, "is empty", examples)
    match = _QUANTITY_RE.fullmatch(text)
    if match is None:
        if text.lstrip().startswith("-") and _LOOSE_RE.fullmatch(text.strip()):
            raise _fail(text, where, "is negative; resource amounts are 0 or more", examples)
        hint = _suggest(text)
        problem = "is not a Kubernetes quantity" + (f" ({hint})" if hint else "")
        raise _fail(text, where, problem, examples)
    number = Decimal(match["number"])
    if match["exponent"]:
        exponent = int(match["exponent"][1:])
        if abs(exponent) > 100:  # far outside 2**63 either way; refuse before computing
            raise _fail(
                text,
                where,
                "has an exponent beyond ±100, far outside what Kubernetes allows",
                examples,
            )
        return _shift(number, exponent)
    suffix = match["suffix"] or ""
    if suffix in _BINARY_SUFFIXES:
        # 2**60 has 19 digits, so this precision keeps the product exact.
        exact = Context(prec=len(number.as_tuple().digits) + 20)
        return exact.multiply(number, Decimal(2 ** _BINARY_SUFFIXES[suffix]))
    return _shift(number, _DECIMAL_SUFFIXES[suffix])


def parse_quantity(value: str | int | float | Decimal, *, where: str = "") -> Decimal:
    """The exact value of a Kubernetes quantity (``"1.5"``, ``"500m"``, ``"4Gi"``, ``"1e3"``).

    Raises QuantityError naming the value, ``where`` it came from and valid examples.
    """
    return _parse(value, where, GENERIC_EXAMPLES)


def cpu_millicores(value: str | int | float | Decimal, *, where: str = "") -> int:
    """A CPU quantity in millicores, rounded up to 1m as Kubernetes does (``"0.1m"`` → 1)."""
    cores = _parse(value, where, CPU_EXAMPLES)
    millicores = _shift(cores, 3).to_integral_value(ROUND_CEILING)
    if millicores > MAX_QUANTITY:  # cores within the cap can still overflow it ×1000
        raise _fail(value, where, "is more than any server holds (2**63 - 1 millicores)",
                    CPU_EXAMPLES)  # fmt: skip
    return int(millicores)


def memory_bytes(value: str | int | float | Decimal, *, where: str = "") -> int:
    """A memory quantity in bytes, rounded up to a whole byte."""
    return int(_parse(value, where, MEMORY_EXAMPLES).to_integral_value(ROUND_CEILING))


def device_count(value: str | int | float | Decimal, *, where: str = "") -> int:
    """An extended-resource quantity (GPUs): Kubernetes requires a whole number of devices."""
    count = _parse(value, where, DEVICE_EXAMPLES)
    if count != count.to_integral_value(ROUND_FLOOR):
        raise _fail(value, where, "is not a whole number of devices", DEVICE_EXAMPLES)
    return int(count)


def to_base_units(
    resource_name: str, value: str | int | float | Decimal, *, where: str = ""
) -> int:
    """A quantity of ``resource_name`` in its base unit: millicores, bytes or devices."""
    if resource_name == "cpu":
        return cpu_millicores(value, where=where)
    if resource_name == "memory":
        return memory_bytes(value, where=where)
    return device_count(value, where=where)


# --- formatting for people -------------------------------------------------------------------


def _trim(number: Decimal, places: int) -> str:
    """``number`` rounded half-up to at most ``places`` decimals, without trailing zeros."""
    rounded = number.quantize(Decimal(1).scaleb(-places), ROUND_HALF_UP, _WIDE)
    text = f"{rounded:f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _plural(amount: str, unit: str) -> str:
    """``1 CPU``, ``0.5 CPU``, ``2 CPUs``, ``0 CPUs``: singular for a part of one or one."""
    return f"{amount} {unit}" if 0 < Decimal(amount) <= 1 else f"{amount} {unit}s"


def format_cpu(millicores: int) -> str:
    """``"0.5 CPU"``, ``"1 CPU"``, ``"2.5 CPUs"`` (exact to the millicore)."""
    return _plural(_trim(Decimal(millicores).scaleb(-3), 3), "CPU")


_MEMORY_UNITS = [("PiB", 2**50), ("TiB", 2**40), ("GiB", GIB), ("MiB", 2**20), ("KiB", 2**10)]


def format_memory(memory_bytes: int) -> str:
    """``"4 GiB"``, ``"512 MiB"``, ``"1.5 GiB"``: the largest binary unit, up to 2 decimals."""
    for unit, size in _MEMORY_UNITS:
        if 2 * memory_bytes < size:  # under half a unit rounds below 1: skip the division
            continue
        shown = _trim(Decimal(memory_bytes) / size, 2)
        if Decimal(shown) >= 1:  # compare after rounding: 1023.999 MiB reads "1 GiB"
            return f"{shown} {unit}"
    return f"{memory_bytes} bytes" if memory_bytes != 1 else "1 byte"


def format_amount(resource_name: str, base_units: int) -> str:
    """An amount in base units as a person reads it: ``"2.5 CPUs"``, ``"4 GiB"``, ``"1 GPU"``."""
    if resource_name == "cpu":
        return format_cpu(base_units)
    if resource_name == "memory":
        return format_memory(base_units)
    if resource_name == "servers":
        return f"{base_units} server" + ("" if base_units == 1 else "s")
    unit = resource(resource_name).display_unit
    if resource_name == "gpu":
        return f"{base_units} {unit}" + ("" if base_units == 1 else "s")
    return f"{base_units} {unit}"  # an arbitrary short name does not pluralise safely


def format_hours(resource_name: str, hours: Decimal | int) -> str:
    """``"42.5 GiB-hours"``: 2 decimals below 10, 1 decimal from 10 on, zeros trimmed.

    A small positive amount never shows as 0 (``"< 0.01 GPU-hours"``): people read a zero as
    "nothing used" and a tiny charge as a bug.
    """
    unit = resource(resource_name).hours_unit
    hours = Decimal(hours)
    places = 2 if abs(hours) < 10 else 1
    text = _trim(hours, places)
    if text == "0" and hours > 0:
        return f"< 0.01 {unit}"
    if text == "1":
        return f"1 {unit.removesuffix('s')}"
    return f"{text} {unit}"


_DURATION_UNITS = [("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)]


def format_duration(seconds: int | float | Decimal, *, round_up: bool = False) -> str:
    """``"3 hours 20 minutes"``, ``"45 minutes"``, ``"2 days 4 hours"``: two largest units.

    The smaller unit shown is rounded down by default (how long something can still run must
    not be overstated); pass ``round_up=True`` for waiting times (when a user may start again
    must not be understated). Negative durations read as ``"0 seconds"``.
    """
    total = max(
        Decimal(0), Decimal(repr(seconds)) if isinstance(seconds, float) else Decimal(seconds)
    )
    rounding = ROUND_CEILING if round_up else ROUND_FLOOR
    top = next((i for i, (_, size) in enumerate(_DURATION_UNITS) if total >= size), 3)
    step = _DURATION_UNITS[min(top + 1, 3)][1]  # the smallest unit that will be shown
    total = int((total / step).to_integral_value(rounding)) * step
    parts = []
    for name, size in _DURATION_UNITS:
        count, total = divmod(total, size)
        if count or parts:
            parts.append((count, name))
        if len(parts) == 2:
            break
    shown = [f"{count} {name}" + ("" if count == 1 else "s") for count, name in parts if count]
    return " ".join(shown) if shown else "0 seconds"
