"""`--at` and import times: a time zone is required, and a bare date is refused with advice;
a span's bound (`grant --until`) reads a bare date as that day's start."""

from datetime import UTC, datetime

import pytest

from ledger.core.times import TimeError, parse_at, parse_day_or_time, parse_iso


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2026-10-01T00:00:00Z", datetime(2026, 10, 1, tzinfo=UTC)),
        ("2026-10-01T12:00z", datetime(2026, 10, 1, 12, tzinfo=UTC)),
        ("2026-10-01 13:00+01:00", datetime(2026, 10, 1, 12, tzinfo=UTC)),
    ],
)
def test_times_with_a_zone_are_read_in_utc(text, expected):
    assert parse_at(text) == expected


@pytest.mark.parametrize("text", ["2026-10-01", "2026-10-01Z", "2026-10-01+01:00", "2026-10-01-05"])
def test_a_bare_date_is_refused_with_a_time_that_works(text):
    # fromisoformat reads "2026-10-01+01:00" as 01:00 without a zone; it must not get that far.
    with pytest.raises(TimeError) as error:
        parse_at(text)
    message = str(error.value)
    assert "date without a time" in message
    advice = "2026-10-01T00:00:00Z"
    assert advice in message
    assert parse_at(advice) == datetime(2026, 10, 1, tzinfo=UTC)


def test_no_zone_and_not_a_time_say_what_is_valid():
    with pytest.raises(TimeError, match="no time zone; add one, e.g. 2026-10-01T12:00Z"):
        parse_iso("2026-10-01T12:00", what="started_at")
    with pytest.raises(TimeError, match="not an ISO 8601 time; write e.g."):
        parse_iso("yesterday", what="started_at")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-31", datetime(2026, 12, 31, tzinfo=UTC)),
        ("2026-12-31Z", datetime(2026, 12, 31, tzinfo=UTC)),
        ("2026-12-31+01:00", datetime(2026, 12, 30, 23, tzinfo=UTC)),
        ("2026-12-31+01", datetime(2026, 12, 30, 23, tzinfo=UTC)),
        ("2026-12-31T06:00:00Z", datetime(2026, 12, 31, 6, tzinfo=UTC)),
    ],
)
def test_a_span_bound_reads_a_bare_date_as_that_days_start(text, expected):
    assert parse_day_or_time(text, what="--until:") == expected


def test_a_span_bound_still_refuses_a_time_without_a_zone():
    with pytest.raises(TimeError, match="no time zone"):
        parse_day_or_time("2026-12-31T06:00:00", what="--until:")
