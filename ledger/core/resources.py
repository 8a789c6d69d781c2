"""The resources the ledger charges, their base units and the units people read.

Everything inside the ledger is an integer in a base unit (millicores, bytes, devices) so
sums are exact. People read resource-hours: CPU-hours, GiB-hours, GPU-hours. This module is
the one place that knows how the two relate.

A *resource vector* is a plain ``dict[str, int]`` from resource name to base units, e.g.
``{"cpu": 2000, "memory": 4 * 2**30, "gpu": 1}``. Missing names mean zero.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from decimal import Decimal

SECONDS_PER_HOUR = 3600
MICROSECONDS_PER_SECOND = 1_000_000
MICROSECONDS_PER_HOUR = SECONDS_PER_HOUR * MICROSECONDS_PER_SECOND
GIB = 2**30


@dataclass(frozen=True)
class Resource:
    """One chargeable resource.

    ``base_per_unit`` converts the display unit into base units: one CPU is 1000
    millicores, one GiB is 2**30 bytes, one GPU is one device.
    """

    name: str
    base_unit: str
    display_unit: str
    base_per_unit: int
    column: str | None  # segment column holding it; None = in the ``extended`` JSON column

    @property
    def hours_unit(self) -> str:
        return f"{self.display_unit}-hours"

    def to_hours(self, base_unit_microseconds: int | Decimal) -> Decimal:
        """Base-unit × microseconds → resource-hours (exact Decimal)."""
        return Decimal(base_unit_microseconds) / self._base_us_per_hour

    @functools.cached_property
    def _base_us_per_hour(self) -> Decimal:
        # the divisor as a Decimal once: dividing by the int converts it on every call, and
        # the all-users report converts ~26k integrals (the same exact quotient either way)
        return Decimal(self.base_per_unit * MICROSECONDS_PER_HOUR)

    def from_hours(self, hours: Decimal) -> int:
        """Resource-hours → base-unit × microseconds, rounded down (limits lose < 1 unit·µs)."""
        return int(Decimal(hours) * self.base_per_unit * MICROSECONDS_PER_HOUR)

    def to_display(self, base_units: int | Decimal) -> Decimal:
        """Base units → display units (millicores → CPUs, bytes → GiB)."""
        return Decimal(base_units) / self.base_per_unit


CPU = Resource("cpu", "millicore", "CPU", 1000, "cpu_millicores")
MEMORY = Resource("memory", "byte", "GiB", GIB, "memory_bytes")
GPU = Resource("gpu", "device", "GPU", 1, "gpu_count")

CORE_RESOURCES: dict[str, Resource] = {r.name: r for r in (CPU, MEMORY, GPU)}

# Which extended resources are charged, under which runtime names, is configured
# (``ledger.core.accounting``: the policy's ``accounting.resources``).

# Resources that can carry a concurrent cap but are not integrated over time.
SERVERS = "servers"


def resource(name: str) -> Resource:
    """The Resource for ``name``; unknown names are extended resources counted in devices."""
    found = CORE_RESOURCES.get(name)
    if found is not None:
        return found
    return Resource(name, "device", name, 1, None)


def display_order(names) -> list[str]:
    """cpu, memory, gpu first, then extended resources alphabetically."""
    core = [n for n in CORE_RESOURCES if n in names]
    return core + sorted(n for n in names if n not in CORE_RESOURCES)
