"""``quota-ledger import``: read a file, validate it (ledger/core/import_rows.py), write it.

All or nothing and idempotent: a row's identity is ``(pod_uid, started_at)`` (see
ledger/core/import_rows.py), and the whole import is one transaction, committed only after
the last line validated.

:class:`ImportFile` opens the file and validates its first chunk before anything touches
the database (a bad or unreadable small file never connects). :func:`write_file` then
streams: while a worker thread parses the next chunk, the server writes the previous one,
set-based, from a temporary staging table:

1. the month partitions the chunk covers are made (``partitions.ensure_on``), once each;
2. one UPDATE closes the ledger's open segments the chunk gives an end;
3. one INSERT … ON CONFLICT DO NOTHING adds the chunk's new closed segments.

Open segments of the file (rows without an end: at most one per pod) wait in a second
staging table until every closed row is written. Then every row of the file is checked
against the other segments of its pod in the ledger (``_OVERLAPS``): one that overlaps
would charge that time twice, and is refused with its line; else the open rows are
inserted.

The rollups follow from the statement-level triggers on ``segments`` (migration 0004): one
aggregate per statement over the rows it wrote, so they are exact when the transaction
commits.

Where the server's time goes (benchmarks/RESULTS.md, "Ledger"): the index entries of every
new row, and the full-page images the first change of each page after a checkpoint writes
to the WAL. A server with ``wal_compression = pglz`` compresses each such 8 kB image with
pglz, which cost more than the rest of the insert together; the import's transaction
turns it off for itself when the role may (``SET LOCAL``: the images are then written
whole, the WAL is as complete and as safe, only larger; lz4/zstd, when the server has them,
are kept). The embedded server is tuned to lz4 or off (ledger/store/embedded.py TUNING), so
this is for a PostgreSQL an operator runs with pglz (``on`` is pglz too).
https://www.postgresql.org/docs/current/runtime-config-wal.html#GUC-WAL-COMPRESSION
``synchronous_commit`` is left alone: the import commits once, so waiting for that one
flush costs milliseconds, and not waiting could lose an import the command reported done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ledger.core.import_rows import (
    OVERLAP_RULE,
    ImportError_,
    difference,
    format_of,
    interval,
    parse_chunks,
    parse_record_chunks,
    record_of,
)
from ledger.store import partitions

CHUNK_ROWS = 50_000


# How many rows that differ from the ledger's segment of the same (pod_uid, started_at) an
# import names (it counts them all).
DIFFERING_SHOWN = 10


@dataclass
class ImportResult:
    rows: int
    inserted: int
    closed: int  # open segments given their end by this file
    # rows the ledger already held under their (pod_uid, started_at), differently: the
    # ledger's segment was kept (it is the record; `quota-ledger credit` corrects usage)
    differing: int = 0
    differing_lines: list[tuple[int, str]] = field(default_factory=list)  # the first few

    @property
    def unchanged(self) -> int:
        return self.rows - self.inserted - self.closed


def _open(path: str | Path, fmt: str | None, stream):
    source = "<stdin>" if str(path) == "-" else str(path)
    fmt = format_of(source, fmt)
    if stream is None:
        try:
            # utf-8-sig: a spreadsheet's CSV starts with a byte-order mark, which would
            # otherwise be part of the first column's name
            stream = open(path, encoding="utf-8-sig", newline="")  # noqa: SIM115
        except OSError as exc:
            raise ImportError_(source, [(0, f"cannot read: {exc.strerror}")]) from None
    return stream, fmt, source


def read_rows(path: str | Path, fmt: str | None = None, stream=None) -> tuple[list[dict], str]:
    """Read and validate a whole file ("-" with ``stream``: standard input).

    Returns (segments, source) or raises ImportError_."""
    stream, fmt, source = _open(path, fmt, stream)
    with stream:
        return [r for chunk in parse_chunks(stream, fmt, source) for r in chunk], source


# The staging tables' columns: ledger/core/import_rows.py RECORD_FIELDS, in that order. The
# rest of a segment's columns follow from these in the INSERT (fewer columns to encode and
# COPY per row).
_RECORD_COLUMNS = (
    "pod_uid", "namespace", "pod_name", "username", "servername",
    "cpu_millicores", "memory_bytes", "gpu_count", "started_at", "ended_at", "line",
)  # fmt: skip
_STAGING = """
    CREATE TEMPORARY TABLE {name} (
        pod_uid text, namespace text, pod_name text, username text, servername text,
        cpu_millicores bigint, memory_bytes bigint, gpu_count bigint,
        started_at timestamptz, ended_at timestamptz, line integer
    ) ON COMMIT DROP
"""
# no index, no default (no sequence value spent per row), not WAL-logged (temporary)
# The columns a straight COPY into segments writes: the record's, then what _INSERT_FROM
# derives from them.
_SEGMENT_COLUMNS = (*_RECORD_COLUMNS[:-1], "workload", "last_seen_at", "end_reason", "source")
_CREATE_STAGING = text(_STAGING.format(name="import_segments"))
_CREATE_OPEN_STAGING = text(_STAGING.format(name="import_open"))
_CLEAR_STAGING = text("TRUNCATE import_segments")

# Every row of the file, closed or open, against the segments of its pod in the ledger, once
# the file's closed rows are written (they may close the ledger's open segment): a row whose
# half-open span overlaps another segment of the pod would charge that time twice. Its own
# (pod_uid, started_at) is the same segment, not an overlap.
#
# Without a scan of the ledger, and without probing every month of raw history per row (400
# days by default; c9b1aa2 probed each month's index per row: 42 us a row at 400 days,
# RESULTS.md), a segment that overlaps a row either
# - starts in the row's month or later, before the row ends: a range of the pod's
#   (pod_uid, started_at) index in the months from the row's on, per row (LATERAL … LIMIT 1:
#   a plain join over the unanalysed staging tables hashed the whole ledger). The file's own
#   rows in that range never match (the parser keeps them apart), so every overlapping row
#   is named, also where the ledger held overlaps of its own; the range holds the pod's
#   other segments of those months (one or a few: a pod's resizes); or
# - started before the row's month, and so runs across its first instant: the ledger's
#   segments running at the start of each month the file's rows start in are few (the
#   servers running at midnight on the 1st), copied once per month (_CROSSING) into
#   import_crossing and joined by pod.
_OVERLAPS = text(
    """
    WITH rows AS (
        SELECT line, pod_uid, started_at, ended_at,
               date_trunc('month', started_at, 'UTC') AS month_at
        FROM import_closed
        UNION ALL
        SELECT line, pod_uid, started_at, ended_at, date_trunc('month', started_at, 'UTC')
        FROM import_open
    ),
    found AS (
        SELECT i.line, i.pod_uid, i.started_at, i.ended_at,
               s.started_at AS other_at, s.ended_at AS other_end
        FROM rows i
        CROSS JOIN LATERAL (
            SELECT started_at, ended_at FROM segments s
            WHERE s.pod_uid = i.pod_uid AND s.started_at <> i.started_at
              AND s.started_at >= i.month_at AND s.started_at < COALESCE(i.ended_at, 'infinity')
              AND i.started_at < COALESCE(s.ended_at, 'infinity')
            ORDER BY s.started_at LIMIT 1
        ) s
        UNION ALL
        SELECT i.line, i.pod_uid, i.started_at, i.ended_at, c.started_at, c.ended_at
        FROM rows i
        JOIN import_crossing c ON c.pod_uid = i.pod_uid AND c.month_at = i.month_at
        WHERE i.started_at < COALESCE(c.ended_at, 'infinity')
    )
    SELECT DISTINCT ON (line) line, pod_uid, started_at, ended_at, other_at, other_end
    FROM found ORDER BY line, other_at LIMIT 200
    """
)
# The ledger's segments running at the first instant of one month: started before it, and
# ending after it or open. With the month as a value (a custom plan, see _Writer.begin) the
# months from it on are pruned, and each earlier month is read through its ix_segments_end
# (COALESCE(ended_at, 'infinity')): the few that end after the 1st, not the whole month.
_CROSSING = text(
    """
    INSERT INTO import_crossing
    SELECT :month_at, pod_uid, started_at, ended_at FROM segments
    WHERE started_at < :month_at AND COALESCE(ended_at, 'infinity') > :month_at
    """
)
_CREATE_CROSSING_STAGING = text(
    """
    CREATE TEMPORARY TABLE import_crossing (
        month_at timestamptz, pod_uid text, started_at timestamptz, ended_at timestamptz
    ) ON COMMIT DROP
    """
)
_CREATE_CLOSED_STAGING = text(
    """
    CREATE TEMPORARY TABLE import_closed (
        pod_uid text, started_at timestamptz, ended_at timestamptz, line integer
    ) ON COMMIT DROP
    """
)
# The staged rows whose (pod_uid, started_at) the ledger holds with another end, size, user
# or server (ON CONFLICT DO NOTHING kept the ledger's), once the chunk is written: one probe of the
# row's own month's unique index each (LATERAL … LIMIT 1: a plain join hashed the whole
# ledger, 0.18 s a chunk at 300 k segments and growing with it), and only on the staging
# path (a chunk COPYed straight in held no row the ledger had).
_DIFFERING = """
    SELECT i.line, i.pod_uid, i.started_at, count(*) OVER (),
           s.ended_at, s.cpu_millicores, s.memory_bytes, s.gpu_count, s.username, s.servername,
           i.ended_at, i.cpu_millicores, i.memory_bytes, i.gpu_count, i.username, i.servername
    FROM {name} i
    CROSS JOIN LATERAL (
        SELECT ended_at, cpu_millicores, memory_bytes, gpu_count, username, servername
        FROM segments s
        WHERE s.pod_uid = i.pod_uid AND s.started_at = i.started_at LIMIT 1
    ) s
    WHERE (s.ended_at, s.cpu_millicores, s.memory_bytes, s.gpu_count, s.username, s.servername)
          IS DISTINCT FROM
          (i.ended_at, i.cpu_millicores, i.memory_bytes, i.gpu_count, i.username, i.servername)
    ORDER BY i.line LIMIT :shown
"""  # noqa: S608 - constant table names
_CLOSE = text(
    """
    UPDATE segments s
    SET ended_at = i.ended_at, last_seen_at = GREATEST(s.last_seen_at, i.ended_at),
        end_reason = 'imported', updated_at = now()
    FROM import_segments i
    WHERE s.ended_at IS NULL AND s.pod_uid = i.pod_uid AND s.started_at = i.started_at
      AND (s.cpu_millicores, s.memory_bytes, s.gpu_count, s.username, s.servername)
          = (i.cpu_millicores, i.memory_bytes, i.gpu_count, i.username, i.servername)
    """
)
# Only a row that agrees with the open segment on everything but its end closes it: one that
# names another size or user describes something else, and is reported (_DIFFERING) with the
# segment left open, as the ledger has it.
_INSERT_FROM = """
    INSERT INTO segments (pod_uid, namespace, pod_name, username, servername, workload,
                          cpu_millicores, memory_bytes, gpu_count, started_at, ended_at,
                          last_seen_at, end_reason, source)
    SELECT pod_uid, namespace, pod_name, username, servername, 'import',
           cpu_millicores, memory_bytes, gpu_count, started_at, ended_at,
           COALESCE(ended_at, started_at),
           CASE WHEN ended_at IS NOT NULL THEN 'imported' END, 'import'
    FROM {name}
    ON CONFLICT (pod_uid, started_at) DO NOTHING
"""  # noqa: S608 - constant table names
_INSERT = text(_INSERT_FROM.format(name="import_segments"))
_INSERT_OPEN = text(_INSERT_FROM.format(name="import_open"))
_DIFFERING_STAGED = text(_DIFFERING.format(name="import_segments"))
_DIFFERING_OPEN = text(_DIFFERING.format(name="import_open"))
# Only pglz is replaced: it is the one that costs more than the write it compresses.
_WAL_COMPRESSION_OFF = text(
    "SELECT set_config('wal_compression', 'off', true) "
    "WHERE current_setting('wal_compression') IN ('pglz', 'on')"
)


class ImportFile:
    """A file being validated in chunks of records; the first chunk is read and validated
    on construction, before any database work."""

    def __init__(self, path: str | Path, fmt: str | None = None, stream=None,
                 chunk_rows: int = CHUNK_ROWS):  # fmt: skip
        self._stream, fmt, self.source = _open(path, fmt, stream)
        self._chunks = parse_record_chunks(self._stream, fmt, self.source, chunk_rows)
        try:
            self._first: list[tuple] | None = next(self._chunks, None)
        except BaseException:
            self.close()
            raise

    def next_chunk(self) -> list[tuple] | None:
        if self._first is not None:
            chunk, self._first = self._first, None
            return chunk
        return next(self._chunks, None)

    def close(self) -> None:
        self._stream.close()


class _Writer:
    """The set-based writes of one import, chunk by chunk, in one transaction."""

    def __init__(self, conn: AsyncConnection, source: str):
        self.conn, self.source = conn, source
        self.rows = self.inserted = self.closed = 0
        self._months: set[datetime] = set()  # the partitions made so far
        self._row_months: set[datetime] = set()  # the months the rows start in (or more)
        self._has_open = False
        self._overlaps = False  # a chunk had rows the ledger holds: stage the rest
        self.differing = 0
        self.differing_lines: list[tuple[int, str]] = []

    async def begin(self) -> None:
        conn = self.conn
        await conn.execute(_CREATE_STAGING)
        await conn.execute(_CREATE_OPEN_STAGING)
        await conn.execute(_CREATE_CLOSED_STAGING)
        await conn.execute(_CREATE_CROSSING_STAGING)
        # _CROSSING runs once per month with the month as a bound value: after five runs
        # PostgreSQL may switch a prepared statement to its generic plan, which cannot prune
        # months or see that few segments end after the 1st. The import's other statements
        # take none but a LIMIT, for which a custom plan is as good.
        # https://www.postgresql.org/docs/current/runtime-config-query.html#GUC-PLAN-CACHE-MODE
        await conn.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
        savepoint = await conn.begin_nested()
        try:
            await conn.execute(_WAL_COMPRESSION_OFF)
        except Exception:  # noqa: BLE001 - a role that may not set it imports all the same
            await savepoint.rollback()
        else:
            await savepoint.commit()

    async def _copy(self, table: str, records: list[tuple], columns=_RECORD_COLUMNS) -> None:
        raw = (await self.conn.get_raw_connection()).driver_connection
        await raw.copy_records_to_table(table, records=records, columns=columns)

    async def _ensure_months(self, records: Iterable[tuple]) -> None:
        starts = [r[8] for r in records]
        if not starts:
            return
        first, last = min(starts), max(starts)
        months = set(partitions.month_starts(first, last))
        if not months <= self._months:
            await partitions.ensure_on(self.conn, first, last)
            self._months |= months

    async def write(self, records: list[tuple]) -> None:
        """Write one chunk's closed segments; keep its open ones for :meth:`finish`."""
        self.rows += len(records)
        if records:
            starts = [r[8] for r in records]
            self._row_months.update(partitions.month_starts(min(starts), max(starts)))
        closed = [r for r in records if r[9] is not None]
        if len(closed) < len(records):
            await self._copy("import_open", [r for r in records if r[9] is None])
            self._has_open = True
        if not closed:
            return
        await self._ensure_months(closed)
        # kept for finish()'s overlap check, which must wait for the whole file: a later
        # chunk may close the ledger's open segment a row of this one follows
        await self._copy("import_closed", [(r[0], r[8], r[9], r[10]) for r in closed],
                         ("pod_uid", "started_at", "ended_at", "line"))  # fmt: skip
        if not self._overlaps and await self._copy_new(closed):
            self.inserted += len(closed)
            return
        await self.conn.execute(_CLEAR_STAGING)
        await self._copy("import_segments", closed)
        self.closed += (await self.conn.execute(_CLOSE)).rowcount
        self.inserted += (await self.conn.execute(_INSERT)).rowcount
        await self._note_differing(_DIFFERING_STAGED)

    async def _note_differing(self, query) -> None:
        rows = (await self.conn.execute(query, {"shown": DIFFERING_SHOWN})).all()
        if not rows:
            return
        self.differing += rows[0][3]
        for line, uid, started, _, *values in rows[: DIFFERING_SHOWN - len(self.differing_lines)]:
            ledger, file = tuple(values[:6]), tuple(values[6:])
            self.differing_lines.append((line, f"pod_uid {uid} started_at {started.isoformat()} "
                                               f"is in the ledger already, differently (the ledger's then this "
                                               f"file's: {difference(ledger, file)}); the ledger's was kept"))  # fmt: skip

    async def _copy_new(self, closed: list[tuple]) -> bool:
        """COPY the chunk straight into ``segments``, as new rows: no staging, no conflict
        arbitration per row. False (and nothing written) when a row is already in the
        ledger: then this chunk and the rest of the file take the staging path."""
        savepoint = await self.conn.begin_nested()
        try:
            raw = (await self.conn.get_raw_connection()).driver_connection
            await raw.copy_records_to_table(
                "segments", records=[(*r[:10], "import", r[9], "imported", "import") for r in closed],
                columns=_SEGMENT_COLUMNS,
            )  # fmt: skip
        except asyncpg.UniqueViolationError:
            await savepoint.rollback()
            self._overlaps = True
            return False
        except BaseException:
            await savepoint.rollback()
            raise
        await savepoint.commit()
        return True

    async def overlaps(self) -> list:
        """The file's rows that overlap another segment of their pod in the ledger (_OVERLAPS),
        with the first such segment each, once every closed row is written."""
        for month_at in sorted(self._row_months):
            await self.conn.execute(_CROSSING, {"month_at": month_at})
        return (await self.conn.execute(_OVERLAPS)).all()

    async def finish(self) -> ImportResult:
        conn = self.conn
        overlaps = await self.overlaps()
        if overlaps:
            raise ImportError_(self.source, [_overlap(*o) for o in overlaps])
        if self._has_open:
            first, last = (await conn.execute(text("SELECT min(started_at), max(started_at) FROM import_open"))).one()  # fmt: skip
            await partitions.ensure_on(conn, first, last)
            self.inserted += (await conn.execute(_INSERT_OPEN)).rowcount
            await self._note_differing(_DIFFERING_OPEN)
        return ImportResult(rows=self.rows, inserted=self.inserted, closed=self.closed,
                            differing=self.differing, differing_lines=sorted(self.differing_lines))  # fmt: skip


def _overlap(line: int, uid: str, started: datetime, ended: datetime | None, other: datetime,
             other_end: datetime | None) -> tuple[int, str]:  # fmt: skip
    row = interval(started, ended)
    if other_end is None:
        return (line, f"pod_uid {uid} already has an open segment in the ledger, started "
                      f"{other.isoformat()}, and this row ({row}) overlaps it; close it first "
                      "(a row with its start, user, server and sizes and an ended_at, in this file or "
                      "before: one that differs in any of them does not close it), or leave "
                      "this row out")  # fmt: skip
    return (line, f"pod_uid {uid}: {row} overlaps its segment in the ledger "
                  f"({interval(other, other_end)}), {OVERLAP_RULE}; leave out or trim "
                  "what the ledger already holds")  # fmt: skip


async def write_rows(engine: AsyncEngine, rows: list[dict], source: str = "<rows>") -> ImportResult:
    """Write validated segments (from :func:`read_rows`): all or nothing."""
    async with engine.begin() as conn:
        writer = _Writer(conn, source)
        await writer.begin()
        for start in range(0, len(rows), CHUNK_ROWS):
            chunk = rows[start : start + CHUNK_ROWS]
            await writer.write([record_of(r, r.get("_line", 0)) for r in chunk])
        return await writer.finish()


async def write_file(engine: AsyncEngine, file: ImportFile) -> ImportResult:
    """Stream an :class:`ImportFile` to the database; commit only if every line is valid
    (else ImportError_ listing every bad line, and nothing is written). Closes the file."""
    try:
        async with engine.begin() as conn:
            writer = _Writer(conn, file.source)
            await writer.begin()
            pending = asyncio.create_task(asyncio.to_thread(file.next_chunk))
            while (records := await pending) is not None:
                # the next chunk parses in the worker thread while the server writes this one
                pending = asyncio.create_task(asyncio.to_thread(file.next_chunk))
                try:
                    await writer.write(records)
                except BaseException:
                    await asyncio.gather(pending, return_exceptions=True)
                    raise
            return await writer.finish()
    finally:
        file.close()


async def import_file(
    engine: AsyncEngine,
    path: str | Path,
    fmt: str | None = None,
    stream=None,
    chunk_rows: int = CHUNK_ROWS,
) -> ImportResult:
    """Validate and write ``path`` (:class:`ImportFile`, then :func:`write_file`)."""
    return await write_file(engine, ImportFile(path, fmt, stream, chunk_rows))
