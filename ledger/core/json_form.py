"""The one rounding rule for amounts in JSON output (CLI ``--format json``, the JSON API,
the decision log). Pure.

Resource-hours and display-unit amounts (CPUs, GiB, GPUs) are rounded half-even to
:data:`JSON_PLACES` decimals: exact sums in the ledger, stable numbers for scripts.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_HALF_EVEN, Context, Decimal

from ledger.core.resources import resource

JSON_PLACES = 6
# Enough digits to round any value a JSON float can carry to JSON_PLACES: the default
# context's 28 would raise InvalidOperation from 10**22 on
# (https://docs.python.org/3/library/decimal.html#decimal.Decimal.quantize).
_WIDE = Context(prec=340)


def json_number(value: Decimal | int | None) -> float | None:
    if value is None:
        return None
    return float(
        Decimal(value).quantize(Decimal(1).scaleb(-JSON_PLACES), ROUND_HALF_EVEN, context=_WIDE)
    )


def json_amounts(amounts: Mapping[str, int]) -> dict[str, float]:
    """A resource vector in base units as display units: ``{"cpu": 2.0, "memory": 4.0}``."""
    return {n: json_number(resource(n).to_display(v)) for n, v in amounts.items()}
