"""``quota-ledger import``: read a file, validate it (ledger/core/import_rows.py), write it.

All or nothing and idempotent: a row's identity is ``(pod_uid, started_at)`` (see
ledger/core/import_rows.py), and the whole import is one transaction, committed only after
the last line validated. :func:`import_file` streams: the file is parsed in chunks in a
worker thread while the previous chunk is COPYed into a temporary staging table, so the
parse and the server's work overlap. Then, from the staging table, set-based:

1. open segments of the file whose pod already has another open segment in the ledger are
   refused, with their lines (one open segment per pod);
2. the month partitions the file covers are made (``partitions.ensure_on``);
3. one UPDATE closes the ledger's open segments the file gives an end;
4. one INSERT … ON CONFLICT DO NOTHING adds the new segments.

The rollups follow from the triggers on ``segments``: one aggregate per statement over the
rows it wrote (migration 0004), so they are exact when the transaction commits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ledger.core.import_rows import ImportError_, format_of, parse_chunks
from ledger.store import partitions

CHUNK_ROWS = 50_000


@dataclass
class ImportResult:
    rows: int
    inserted: int
    closed: int  # open segments given their end by this file

    @property
    def unchanged(self) -> int:
        return self.rows - self.inserted - self.closed


def _open(path: str | Path, fmt: str | None, stream):
    source = "<stdin>" if str(path) == "-" else str(path)
    fmt = format_of(source, fmt)
    if stream is None:
        try:
            stream = open(path, encoding="utf-8", newline="")  # noqa: SIM115
        except OSError as exc:
            raise ImportError_(source, [(0, f"cannot read: {exc.strerror}")]) from None
    return stream, fmt, source


def read_rows(path: str | Path, fmt: str | None = None, stream=None) -> tuple[list[dict], str]:
    """Read and validate a whole file ("-" with ``stream``: standard input).

    Returns (segments, source) or raises ImportError_."""
    stream, fmt, source = _open(path, fmt, stream)
    with stream:
        return [r for chunk in parse_chunks(stream, fmt, source) for r in chunk], source


COLUMNS = (
    "pod_uid", "namespace", "pod_name", "username", "servername", "workload",
    "cpu_millicores", "memory_bytes", "gpu_count", "started_at", "ended_at",
    "last_seen_at", "end_reason", "source",
)  # fmt: skip
_STAGING_COLUMNS = (*COLUMNS, "line")


def _records(rows: Iterable[dict]) -> list[tuple]:
    return [
        (
            r["pod_uid"],
            r["namespace"],
            r["pod_name"],
            r["username"],
            r["servername"],
            "import",
            r["cpu_millicores"],
            r["memory_bytes"],
            r["gpu_count"],
            r["started_at"],
            r["ended_at"],
            r["ended_at"] or r["started_at"],
            "imported" if r["ended_at"] else None,
            "import",
            r.get("_line", 0),
        )  # fmt: skip
        for r in rows
    ]


_CREATE_STAGING = text(
    # no index, no default (no sequence value spent per row), not WAL-logged (temporary)
    """
    CREATE TEMPORARY TABLE import_segments (
        pod_uid text, namespace text, pod_name text, username text, servername text,
        workload text, cpu_millicores bigint, memory_bytes bigint, gpu_count bigint,
        started_at timestamptz, ended_at timestamptz, last_seen_at timestamptz,
        end_reason text, source text, line integer
    ) ON COMMIT DROP
    """
)
_OPEN_CONFLICTS = text(
    """
    SELECT i.line, i.pod_uid, s.started_at
    FROM import_segments i
    JOIN segments s ON s.pod_uid = i.pod_uid AND s.ended_at IS NULL
                   AND s.started_at <> i.started_at
    WHERE i.ended_at IS NULL
    ORDER BY i.line LIMIT 200
    """
)
_COLS = ", ".join(COLUMNS)
_CLOSE = text(
    """
    UPDATE segments s
    SET ended_at = i.ended_at, last_seen_at = GREATEST(s.last_seen_at, i.last_seen_at),
        end_reason = i.end_reason, updated_at = now()
    FROM import_segments i
    WHERE s.ended_at IS NULL AND i.ended_at IS NOT NULL
      AND s.pod_uid = i.pod_uid AND s.started_at = i.started_at
    """
)
_INSERT = text(
    f"INSERT INTO segments ({_COLS}) SELECT {_COLS} FROM import_segments "  # noqa: S608 - constant columns
    "ON CONFLICT (pod_uid, started_at) DO NOTHING"
)


async def _finish(conn: AsyncConnection, source: str, rows: int) -> ImportResult:
    conflicts = (await conn.execute(_OPEN_CONFLICTS)).all()
    if conflicts:
        raise ImportError_(
            source,
            [
                (line, f"pod_uid {uid} already has an open segment in the ledger, started "
                       f"{started.isoformat()}; close it first (give it an ended_at)")
                for line, uid, started in conflicts
            ],
        )  # fmt: skip
    first, last = (await conn.execute(text("SELECT min(started_at), max(started_at) FROM import_segments"))).one()  # fmt: skip
    if first is not None:
        await partitions.ensure_on(conn, first, last)
    closed = (await conn.execute(_CLOSE)).rowcount
    inserted = (await conn.execute(_INSERT)).rowcount
    return ImportResult(rows=rows, inserted=inserted, closed=closed)


async def _copy(conn: AsyncConnection, records: list[tuple]) -> None:
    raw = (await conn.get_raw_connection()).driver_connection
    await raw.copy_records_to_table("import_segments", records=records, columns=_STAGING_COLUMNS)


async def write_rows(engine: AsyncEngine, rows: list[dict], source: str = "<rows>") -> ImportResult:
    """Write validated segments (from :func:`read_rows`): all or nothing."""
    async with engine.begin() as conn:
        await conn.execute(_CREATE_STAGING)
        for start in range(0, len(rows), CHUNK_ROWS):
            await _copy(conn, _records(rows[start : start + CHUNK_ROWS]))
        return await _finish(conn, source, len(rows))


async def import_file(
    engine: AsyncEngine,
    path: str | Path,
    fmt: str | None = None,
    stream=None,
    chunk_rows: int = CHUNK_ROWS,
) -> ImportResult:
    """Parse ``path`` in chunks and stream them to the database; commit only if every line
    is valid (else ImportError_ listing every bad line, and nothing is written)."""
    stream, fmt, source = _open(path, fmt, stream)
    chunks: Iterator[list[dict]] = parse_chunks(stream, fmt, source, chunk_rows)

    def next_records() -> tuple[list[tuple], int] | None:
        chunk = next(chunks, None)
        return None if chunk is None else (_records(chunk), len(chunk))

    rows = 0
    with stream:
        async with engine.begin() as conn:
            await conn.execute(_CREATE_STAGING)
            pending = asyncio.create_task(asyncio.to_thread(next_records))
            while (parsed := await pending) is not None:
                records, n = parsed
                rows += n
                # the next chunk parses in the worker thread while this one is COPYed
                pending = asyncio.create_task(asyncio.to_thread(next_records))
                try:
                    await _copy(conn, records)
                except BaseException:
                    await asyncio.gather(pending, return_exceptions=True)
                    raise
            return await _finish(conn, source, rows)
