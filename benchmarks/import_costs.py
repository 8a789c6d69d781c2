"""Where an import's write time goes, on a loaded ledger: COPY, insert, indexes, rollup trigger.

    .venv/bin/python benchmarks/import_costs.py --db URL FILE.jsonl

Everything runs in one transaction that is rolled back, so the ledger is unchanged: the
file is validated and COPYed into the importer's temporary table, then ``EXPLAIN (ANALYZE,
WAL)`` of the importer's INSERT with the rollup trigger on, with it off, and with the
secondary indexes dropped one after another (cumulative). Prints one line per step with the
load average (the machine may be shared). Make the file with ``benchmarks/datagen.py``
(``write_jsonl``) and the ledger with ``benchmarks/ledger_bench.py --db URL``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import text  # noqa: E402

from ledger.store import db, importer  # noqa: E402

SECONDARY = ("ix_segments_user_end", "ix_segments_user_start", "ix_segments_started", "ix_segments_end")  # fmt: skip


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


async def _explain(conn, label: str) -> None:
    savepoint = await conn.begin_nested()
    t = time.perf_counter()
    plan = await conn.execute(text("EXPLAIN (ANALYZE, WAL, TIMING OFF) " + importer._INSERT.text))
    wal = next((line.strip() for line in plan.scalars() if "WAL:" in line), "")
    print(f"{label}: {time.perf_counter() - t:.1f} s; {wal} [load {_load()}]", flush=True)
    await savepoint.rollback()


async def run(url: str, path: str) -> None:
    rows, _ = importer.read_rows(path)
    engine = db.create_engine(url)
    try:
        async with engine.connect() as conn:
            transaction = await conn.begin()
            await conn.execute(importer._CREATE_STAGING)
            t = time.perf_counter()
            await importer._copy(conn, importer._records(rows))
            print(f"COPY {len(rows):,} rows: {time.perf_counter() - t:.1f} s [load {_load()}]")
            await _explain(conn, "INSERT, rollup trigger on")
            await conn.execute(text("ALTER TABLE segments DISABLE TRIGGER quota_rollups_insert"))
            await _explain(conn, "INSERT, rollup trigger off")
            for index in SECONDARY:
                await conn.execute(text(f"DROP INDEX IF EXISTS {index}"))
                await _explain(conn, f"  ... and without {index}")
            await transaction.rollback()
    finally:
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", required=True, help="a loaded ledger (left unchanged)")
    parser.add_argument("file", help="a JSONL import file")
    args = parser.parse_args()
    asyncio.run(run(db.normalize_url(args.db), args.file))


if __name__ == "__main__":
    main()
