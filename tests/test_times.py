"""`--at` and import times: a time zone is required, and a bare date is refused with advice."""

from datetime import UTC, datetime

import pytest

from ledger.core.times import TimeError, parse_at, parse_iso


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
