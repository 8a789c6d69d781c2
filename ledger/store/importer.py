"""``quota-ledger import``: read a file, validate it (ledger/core/import_rows.py), write it.

All or nothing and idempotent: every row is validated before anything is written, and a
row's identity is ``(pod_uid, started_at)`` (see ledger/core/import_rows.py). The write is
one transaction: COPY into a temporary table, then one INSERT … ON CONFLICT.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.core.import_rows import ImportError_, format_of, parse_lines


@dataclass
class ImportResult:
    rows: int
    inserted: int
    closed: int  # open segments given their end by this file

    @property
    def unchanged(self) -> int:
        return self.rows - self.inserted - self.closed


def read_rows(path: str | Path, fmt: str | None = None, stream=None) -> tuple[list[dict], str]:
    """Read and validate a whole file ("-" with ``stream``: standard input).

    Returns (segments, source) or raises ImportError_."""
    source = "<stdin>" if str(path) == "-" else str(path)
    fmt = format_of(source, fmt)
    if stream is None:
        try:
            stream = open(path, encoding="utf-8", newline="")  # noqa: SIM115
        except OSError as exc:
            raise ImportError_(source, [(0, f"cannot read: {exc.strerror}")]) from None
    with stream:
        return parse_lines(stream, fmt, source), source


COLUMNS = (
    "pod_uid", "namespace", "pod_name", "username", "servername", "workload",
    "cpu_millicores", "memory_bytes", "gpu_count", "started_at", "ended_at",
    "last_seen_at", "end_reason", "source",
)  # fmt: skip


async def write_rows(engine: AsyncEngine, rows: list[dict]) -> ImportResult:
    """COPY into a temporary table, then one INSERT … ON CONFLICT: all or nothing."""
    records = [
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
        )  # fmt: skip
        for r in rows
    ]
    async with engine.begin() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        await conn.execute(
            text(
                "CREATE TEMPORARY TABLE import_segments "
                "(LIKE segments INCLUDING DEFAULTS) ON COMMIT DROP"
            )
        )
        await raw.copy_records_to_table("import_segments", records=records, columns=COLUMNS)
        cols = ", ".join(COLUMNS)
        result = await conn.execute(
            text(
                f"""
                WITH written AS (
                    INSERT INTO segments ({cols})
                    SELECT {cols} FROM import_segments
                    ON CONFLICT (pod_uid, started_at) DO UPDATE
                        SET ended_at = EXCLUDED.ended_at,
                            last_seen_at = GREATEST(segments.last_seen_at, EXCLUDED.last_seen_at),
                            end_reason = EXCLUDED.end_reason,
                            updated_at = now()
                        WHERE segments.ended_at IS NULL AND EXCLUDED.ended_at IS NOT NULL
                    RETURNING (xmax = 0) AS inserted
                )
                SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted)
                FROM written
                """  # noqa: S608 - constant column names
            )
        )
        inserted, closed = result.one()
    return ImportResult(rows=len(rows), inserted=int(inserted), closed=int(closed))
