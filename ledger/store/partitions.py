"""Monthly partitions of ``segments`` (migrations/versions/0006): made ahead, dropped whole.

- :func:`ensure` creates the month partitions covering a time range (the collector calls it
  at start and on its retention schedule for ``now`` … ``now`` + :data:`MONTHS_AHEAD`; the
  import for the months its file covers; ``quota-ledger partitions ensure`` for anyone
  else). A row no month partition covers lands in ``segments_default`` and is moved into
  its month when that partition is made, so nothing is refused meanwhile.
- :func:`drop_before` drops the month partitions that end before a cutoff once every
  segment in them is closed, ended before the cutoff and counted in ``usage_rollups``;
  the rollups stay, so reports over those months keep working.
- :func:`retention_cutoff` is the one rule for how far back raw history must stay: the
  longest policy window plus :data:`RETENTION_MARGIN_SECONDS`, because a decision reads the
  raw segments of its window's first day.

The SQL functions are SECURITY DEFINER (they run as the ledger's owner), so the collector's
database role creates and drops partitions without owning the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

MONTHS_AHEAD = 2
RETENTION_MARGIN_SECONDS = 7 * 86_400


class RetentionError(ValueError):
    """A retention shorter than raw history must be kept."""


def retention_cutoff(now: datetime, retention_seconds: float, longest_window_seconds: float) -> datetime:  # fmt: skip
    """``now - retention``, refused when that would cut into the longest window + margin."""
    needed = longest_window_seconds + RETENTION_MARGIN_SECONDS
    if retention_seconds < needed:
        raise RetentionError(
            f"retention of {retention_seconds / 86400:g} days is shorter than the policy's "
            f"longest window ({longest_window_seconds / 86400:g} days) plus a margin of "
            f"{RETENTION_MARGIN_SECONDS / 86400:g} days; keep at least {needed / 86400:g} days "
            "(decisions read the raw segments of their window's first day)"
        )
    return now - timedelta(seconds=retention_seconds)


def month_starts(first: datetime, last: datetime) -> list[datetime]:
    """The first instant (UTC) of every month from ``first``'s to ``last``'s, inclusive."""
    first, last = first.astimezone(UTC), last.astimezone(UTC)
    year, month = first.year, first.month
    out = []
    while (year, month) <= (last.year, last.month):
        out.append(datetime(year, month, 1, tzinfo=UTC))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return out


def months_ahead(now: datetime, ahead: int = MONTHS_AHEAD) -> tuple[datetime, datetime]:
    """From this month to ``ahead`` months after it."""
    now = now.astimezone(UTC)
    index = now.year * 12 + now.month - 1 + ahead
    return now, datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


async def ensure_on(conn: AsyncConnection, first: datetime, last: datetime) -> list[str]:
    """Create the missing month partitions from ``first``'s month to ``last``'s, on ``conn``."""
    made = []
    for month in month_starts(first, last):
        name = await conn.scalar(text("SELECT quota_segment_partition_create(:m)"), {"m": month})
        if name:
            made.append(name)
    return made


async def ensure(engine: AsyncEngine, first: datetime, last: datetime) -> list[str]:
    """Create the missing month partitions; returns their names."""
    async with engine.begin() as conn:
        return await ensure_on(conn, first, last)


@dataclass(frozen=True)
class PartitionDrop:
    partition: str
    range_end: datetime
    segments: int
    dropped: bool
    reason: str | None  # why it was kept; None when dropped (or droppable, on a dry run)

    def to_json(self) -> dict:
        return {
            "partition": self.partition,
            "range_end": self.range_end.isoformat(),
            "segments": self.segments,
            "dropped": self.dropped,
            "kept_because": self.reason,
        }


async def drop_before_on(conn: AsyncConnection, cutoff: datetime, dry_run: bool = False) -> list[PartitionDrop]:  # fmt: skip
    rows = await conn.execute(
        text("SELECT * FROM quota_segment_partitions_drop(:cutoff, :dry_run)"),
        {"cutoff": cutoff, "dry_run": dry_run},
    )
    return [PartitionDrop(r.partition, r.range_end, r.segments, r.dropped, r.reason) for r in rows]


async def drop_before(engine: AsyncEngine, cutoff: datetime, dry_run: bool = False) -> list[PartitionDrop]:  # fmt: skip
    """Drop the month partitions wholly before ``cutoff`` whose history is rolled up."""
    async with engine.begin() as conn:
        return await drop_before_on(conn, cutoff, dry_run)


@dataclass(frozen=True)
class Partition:
    name: str
    range_start: datetime | None  # None: the default partition
    range_end: datetime | None
    segments: int  # the planner's estimate (pg_class.reltuples; -1 before the first ANALYZE)
    total_bytes: int


async def listing(engine: AsyncEngine) -> list[Partition]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT * FROM quota_segment_partitions ORDER BY range_start NULLS LAST, partition"
            )
        )
        return [
            Partition(r.partition, r.range_start, r.range_end, r.estimated_segments, r.total_bytes)
            for r in rows
        ]
