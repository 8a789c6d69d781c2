"""Kubernetes quantity parsing (exact, Decimal) and formatting for people. No database."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from ledger.core.quantities import (
    MAX_QUANTITY,
    QuantityError,
    cpu_millicores,
    device_count,
    format_amount,
    format_cpu,
    format_duration,
    format_hours,
    format_memory,
    memory_bytes,
    parse_quantity,
    to_base_units,
)

GI = 2**30


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.5", Decimal("1.5")),
        ("2", Decimal(2)),
        ("0", Decimal(0)),
        ("+1", Decimal(1)),
        (".5", Decimal("0.5")),
        ("1.", Decimal(1)),
        ("1e3", Decimal(1000)),
        ("1E3", Decimal(1000)),
        ("1E-3", Decimal("0.001")),
        ("2e+2", Decimal(200)),
        ("1.5e2", Decimal(150)),
        ("100n", Decimal("1E-7")),
        ("5u", Decimal("0.000005")),
        ("500m", Decimal("0.5")),
        ("1k", Decimal(1000)),
        ("4M", Decimal(4_000_000)),
        ("4G", Decimal(4_000_000_000)),
        ("2T", Decimal(2 * 10**12)),
        ("1P", Decimal(10**15)),
        ("1E", Decimal(10**18)),  # a bare E is exa, not an exponent
        ("1Ki", Decimal(1024)),
        ("512Mi", Decimal(512 * 2**20)),
        ("4Gi", Decimal(4 * GI)),
        ("1.5Gi", Decimal(3 * 2**29)),
        ("1Ti", Decimal(2**40)),
        ("1Pi", Decimal(2**50)),
        ("1Ei", Decimal(2**60)),
        ("0.1", Decimal("0.1")),
        ("9223372036854775807", MAX_QUANTITY),
    ],
)
def test_parse_quantity_strings(text, expected):
    assert parse_quantity(text) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (3, Decimal(3)),
        (0, Decimal(0)),
        (0.1, Decimal("0.1")),  # via repr: exactly one tenth, not 0.1000000000000000055…
        (1.5, Decimal("1.5")),
        (Decimal("2.50"), Decimal("2.5")),
        (-0.0, Decimal(0)),
    ],
)
def test_parse_quantity_numbers(value, expected):
    result = parse_quantity(value)
    assert result == expected
    assert isinstance(result, Decimal)
    assert not result.is_signed()


def test_binary_suffix_is_exact_for_long_digit_strings():
    # More digits than the default Decimal context keeps (28) must still be exact.
    digits = "1234567890.1234567890123456789"
    assert Fraction(parse_quantity(digits + "Ki")) == Fraction(digits) * 1024
    assert Fraction(parse_quantity(digits + "e-5")) == Fraction(digits) / 10**5


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("4GB", "did you mean 4G or 4Gi?"),
        ("4 Gi", "did you mean 4Gi? Kubernetes allows no spaces"),
        ("4 GB", "did you mean 4G or 4Gi?"),
        ("4g", "did you mean 4G or 4Gi?"),
        ("4K", "did you mean 4k or 4Ki?"),
        ("4kb", "did you mean 4k or 4Ki?"),
        ("4mb", "did you mean 4M or 4Mi?"),
        ("4GiB", "did you mean 4Gi?"),
        ("4gi", "did you mean 4Gi?"),
        (" 4Gi", "did you mean 4Gi? Kubernetes allows no spaces"),
        ("2 ", "did you mean 2?"),
        ("-1", "is negative"),
        ("-1Gi", "is negative"),
        (-1, "is negative"),
        (-0.5, "is negative"),
        (Decimal("-2"), "is negative"),
        ("", "is empty"),
        ("abc", "is not a Kubernetes quantity"),
        ("1e", "is not a Kubernetes quantity"),
        ("1.2.3", "is not a Kubernetes quantity"),
        ("1Zi", "is not a Kubernetes quantity"),
        ("0x10", "is not a Kubernetes quantity"),
        ("1e101", "exponent"),
        (True, "is a boolean"),
        (False, "is a boolean"),
        (float("nan"), "not a finite number"),
        (float("inf"), "not a finite number"),
        (Decimal("NaN"), "not a finite number"),
        (Decimal("Infinity"), "not a finite number"),
        (None, "is a NoneType"),
        ([1], "is a list"),
        ("10E", "larger than Kubernetes allows"),
        ("9223372036854775808", "larger than Kubernetes allows"),
    ],
)
def test_parse_quantity_errors(value, fragment):
    with pytest.raises(QuantityError) as caught:
        parse_quantity(value, where="line 7, key groups.regular.running.memory")
    message = str(caught.value)
    assert fragment in message
    assert message.startswith("line 7, key groups.regular.running.memory: ")
    assert repr(value) in message  # names the bad value
    assert "valid quantities look like" in message  # and what would be valid


def test_quantity_error_is_a_value_error_and_where_is_optional():
    with pytest.raises(ValueError, match=r"^'4GB' is not a Kubernetes quantity"):
        parse_quantity("4GB")


def test_resource_specific_examples_in_errors():
    where = "pod ns/name container 'notebook' resources.requests.cpu"
    with pytest.raises(QuantityError, match=r"^pod ns/name .*requests.cpu: .*500m, 0.5, 1, 2.5"):
        cpu_millicores("two", where=where)
    with pytest.raises(QuantityError, match="512Mi, 4Gi"):
        memory_bytes("4GB")
    with pytest.raises(QuantityError, match="whole number of devices; valid .* 0, 1, 2"):
        device_count("500m")


@pytest.mark.parametrize(
    ("value", "millicores"),
    [
        ("1", 1000),
        ("1.5", 1500),
        ("500m", 500),
        ("0.1m", 1),  # rounded up to 1m, as Kubernetes does
        ("1.0001", 1001),
        ("100n", 1),
        ("0", 0),
        (2, 2000),
        (0.1, 100),
        ("1e-3", 1),
        ("1k", 1_000_000),
    ],
)
def test_cpu_millicores(value, millicores):
    assert cpu_millicores(value) == millicores
    assert to_base_units("cpu", value) == millicores


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("4Gi", 4 * GI),
        ("4G", 4 * 10**9),
        ("1.5Gi", 3 * 2**29),
        ("500m", 1),  # half a byte rounds up to one
        ("1.1", 2),
        ("128974848", 128974848),
        ("129e6", 129_000_000),
        ("123Mi", 123 * 2**20),
        (1024, 1024),
    ],
)
def test_memory_bytes(value, expected):
    assert memory_bytes(value) == expected
    assert to_base_units("memory", value) == expected


@pytest.mark.parametrize(("value", "count"), [("1", 1), ("2", 2), (0, 0), ("1.0", 1), ("1k", 1000)])
def test_device_count(value, count):
    assert device_count(value) == count
    assert to_base_units("gpu", value) == count
    assert to_base_units("example.com/fpga", value) == count


@pytest.mark.parametrize("value", ["0.5", "1500m", 1.5, "1e-3"])
def test_device_count_must_be_whole(value):
    with pytest.raises(QuantityError, match="whole number of devices"):
        to_base_units("gpu", value, where="pod ns/p")


# --- properties ------------------------------------------------------------------------------

SUFFIX_MULTIPLIERS = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(sorted(SUFFIX_MULTIPLIERS)))
def test_integer_times_suffix_is_exact(n, suffix):
    assume(n * SUFFIX_MULTIPLIERS[suffix] <= MAX_QUANTITY)
    value = parse_quantity(f"{n}{suffix}")
    assert value == n * SUFFIX_MULTIPLIERS[suffix]
    assert memory_bytes(f"{n}{suffix}") == n * SUFFIX_MULTIPLIERS[suffix]


@given(st.integers(min_value=0, max_value=10**9), st.sampled_from(["m", "u", "n"]))
def test_small_suffixes_are_exact(n, suffix):
    scale = {"m": Decimal("1e-3"), "u": Decimal("1e-6"), "n": Decimal("1e-9")}[suffix]
    assert parse_quantity(f"{n}{suffix}") == n * scale


@given(
    st.decimals(
        min_value=0, max_value=Decimal(2**62), allow_nan=False, allow_infinity=False, places=None
    )
)
def test_str_of_decimal_round_trips(number):
    # str(Decimal) may use exponents ("1E+3", "1E-7"): the grammar's exponent form covers it.
    assert parse_quantity(str(number)) == number
    assert parse_quantity(number) == number


@given(st.floats(min_value=0, max_value=1e15, allow_nan=False, allow_infinity=False))
def test_floats_go_through_their_shortest_repr(number):
    assert parse_quantity(number) == Decimal(repr(number))


@given(st.integers(min_value=0, max_value=10**12))
def test_cpu_millicores_of_millicore_strings(millicores):
    assert cpu_millicores(f"{millicores}m") == millicores
    assert Decimal(format_cpu(millicores).split()[0]) * 1000 == millicores


# --- formatting ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("millicores", "text"),
    [
        (500, "0.5 CPU"),
        (1000, "1 CPU"),
        (2500, "2.5 CPUs"),
        (2000, "2 CPUs"),
        (1, "0.001 CPU"),
        (0, "0 CPUs"),
        (125, "0.125 CPU"),
    ],
)
def test_format_cpu(millicores, text):
    assert format_cpu(millicores) == text
    assert format_amount("cpu", millicores) == text


@pytest.mark.parametrize(
    ("memory", "text"),
    [
        (4 * GI, "4 GiB"),
        (512 * 2**20, "512 MiB"),
        (3 * 2**29, "1.5 GiB"),
        (GI - 1, "1 GiB"),  # 1023.999… MiB reads as 1 GiB, not "1024 MiB"
        (2**40, "1 TiB"),
        (2**50 * 3, "3 PiB"),
        (1536, "1.5 KiB"),
        (100, "100 bytes"),
        (1, "1 byte"),
        (0, "0 bytes"),
        (int(GI * 1.333), "1.33 GiB"),
    ],
)
def test_format_memory(memory, text):
    assert format_memory(memory) == text
    assert format_amount("memory", memory) == text


def test_format_amount_devices_and_servers():
    assert format_amount("gpu", 1) == "1 GPU"
    assert format_amount("gpu", 2) == "2 GPUs"
    assert format_amount("gpu", 0) == "0 GPUs"
    assert format_amount("fpga", 2) == "2 fpga"
    assert format_amount("servers", 1) == "1 server"
    assert format_amount("servers", 3) == "3 servers"


@pytest.mark.parametrize(
    ("resource_name", "hours", "text"),
    [
        ("memory", Decimal("42.5"), "42.5 GiB-hours"),
        ("memory", Decimal("42.54"), "42.5 GiB-hours"),
        ("memory", Decimal("42.55"), "42.6 GiB-hours"),
        ("memory", Decimal(60), "60 GiB-hours"),
        ("memory", Decimal("60.000"), "60 GiB-hours"),
        ("memory", Decimal(1), "1 GiB-hour"),
        ("cpu", Decimal("3.14159"), "3.14 CPU-hours"),
        ("cpu", Decimal("0.5"), "0.5 CPU-hours"),
        ("cpu", 0, "0 CPU-hours"),
        ("gpu", Decimal("0.001"), "< 0.01 GPU-hours"),
        ("gpu", Decimal("160"), "160 GPU-hours"),
        ("fpga", Decimal("2.25"), "2.25 fpga-hours"),
        ("memory", Decimal("-3.5"), "-3.5 GiB-hours"),
        ("memory", Decimal("1234.56"), "1234.6 GiB-hours"),
    ],
)
def test_format_hours(resource_name, hours, text):
    assert format_hours(resource_name, hours) == text


@pytest.mark.parametrize(
    ("seconds", "down", "up"),
    [
        (0, "0 seconds", "0 seconds"),
        (0.4, "0 seconds", "1 second"),
        (1, "1 second", "1 second"),
        (45, "45 seconds", "45 seconds"),
        (60, "1 minute", "1 minute"),
        (45 * 60, "45 minutes", "45 minutes"),
        (45 * 60 + 30, "45 minutes 30 seconds", "45 minutes 30 seconds"),
        (3 * 3600 + 20 * 60, "3 hours 20 minutes", "3 hours 20 minutes"),
        (3 * 3600 + 20 * 60 + 30, "3 hours 20 minutes", "3 hours 21 minutes"),
        (3600, "1 hour", "1 hour"),
        (2 * 86400 + 4 * 3600 + 59, "2 days 4 hours", "2 days 5 hours"),
        (2 * 86400 + 5 * 60, "2 days", "2 days 1 hour"),
        (86399, "23 hours 59 minutes", "1 day"),  # rounding up carries into the next unit
        (59.5, "59 seconds", "1 minute"),
        (45 * 86400, "45 days", "45 days"),
        (-5, "0 seconds", "0 seconds"),
        (Decimal("90.5"), "1 minute 30 seconds", "1 minute 31 seconds"),
    ],
)
def test_format_duration(seconds, down, up):
    assert format_duration(seconds) == down
    assert format_duration(seconds, round_up=True) == up
