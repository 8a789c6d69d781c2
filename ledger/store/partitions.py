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

import dataclasses
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


# The start of a kept partition's reason when its rollups disagree with its segments: no
# retention may then remove raw history (segment_writes.delete_older_than checks it).
ROLLUPS_DIFFER = "unsafe"


def rollups_differ(results: list[PartitionDrop]) -> bool:
    return any((r.reason or "").startswith(ROLLUPS_DIFFER) for r in results)


# Per partition before a cutoff, the span its segments cover (an open one: to now): each
# user day in it may hold some of their usage. Reads only those partitions.
_SPANS_SQL = text(
    """SELECT tableoid::regclass::text AS partition, min(started_at) AS first_at,
              max(COALESCE(ended_at, now())) AS last_at
       FROM segments WHERE started_at < :cutoff GROUP BY 1"""
)


async def drop_before(engine: AsyncEngine, cutoff: datetime, dry_run: bool = False) -> list[PartitionDrop]:  # fmt: skip
    """Drop the month partitions wholly before ``cutoff`` whose history is rolled up.

    The SQL function checks that their users' days have rollup rows; a drop is forever, so
    first the rollups are compared with the segments (``quota-ledger rollups verify``'s
    comparison): a partition whose segments cover a day that differs (a write with the
    triggers off, a restore of one table) is kept, saying why and how to repair it."""
    from ledger.store import rollups

    async with engine.begin() as conn:
        await conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
        candidates = await drop_before_on(conn, cutoff, dry_run=True)
        if not any(c.reason is None for c in candidates):
            return candidates
        spans = {r.partition: r for r in await conn.execute(_SPANS_SQL, {"cutoff": cutoff})}
        until = max((r.last_at for r in spans.values()), default=cutoff) + timedelta(days=1)
        differ = await rollups.day_mismatches_before(conn, until, limit=10**6)
        kept = {}
        for c in candidates:
            span = spans.get(c.partition)
            if c.reason is not None or span is None:
                continue
            first_day = span.first_at - timedelta(days=1)
            hit = [m for m in differ if first_day <= m.bucket_start <= span.last_at]
            if hit:
                kept[c.partition] = (
                    f"{ROLLUPS_DIFFER}: rollups differ from its raw segments ({hit[0].username} on "
                    f"{hit[0].bucket_start:%Y-%m-%d}, {len(hit)} user-day(s)): dropping would "
                    f"lose that usage; run quota-ledger rollups rebuild --since "
                    f"{hit[0].bucket_start:%Y-%m-%d}, then drop again"
                )
        if kept:
            # none goes: a drop of the others would move the rollup horizon past the kept
            # ones, and verify and rebuild no longer look before it
            wait = f"{ROLLUPS_DIFFER}: not dropped until {min(kept)} is repaired (see its reason)"
            return [
                dataclasses.replace(c, reason=kept.get(c.partition, wait))
                if c.reason is None
                else c
                for c in candidates
            ]
        if dry_run:
            return candidates
        return await drop_before_on(conn, cutoff, dry_run=False)


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
