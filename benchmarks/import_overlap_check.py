"""What an import's overlap check costs: every row of the file against the segments of its
pod in the ledger (ledger/store/importer.py ``_OVERLAPS``), next to the writes it guards.

    .venv/bin/python benchmarks/import_overlap_check.py [--db URL] [--users 10000]
        [--segments 1000000] [--days 90] [--import-segments 100000] [--repeat 3]

Without ``--db`` it starts an embedded server (tuned as ``quota-ledger`` tunes its own) and
loads ``--segments`` generated segments over ``--days`` (benchmarks/datagen.py); with ``--db``
the database must already be a loaded ledger. Then, in one transaction that is rolled back,
it writes ``--import-segments`` new segments the way ``quota-ledger import`` does (the
importer's chunked writes, as in benchmarks/ledger_bench.py's import: seed + 1, last 30
days, every row new, so the check finds nothing and visits every row) and times the writes,
then the check ``--repeat`` times, and c9b1aa2's check (every month's index probed per row)
as many times. Prints wall times with the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import text  # noqa: E402

from benchmarks import datagen  # noqa: E402
from benchmarks.common import load_average, machine  # noqa: E402
from benchmarks.ledger_bench import database  # noqa: E402
from ledger.store import db, importer, partitions  # noqa: E402

# The check as c9b1aa2 had it: one backward probe of every month's index per row (no
# month bound, no import_crossing). The same rows found; the reference for the cost.
EVERY_MONTH = text(
    """
    SELECT i.line, i.pod_uid, i.started_at, i.ended_at, s.started_at, s.ended_at
    FROM (SELECT line, pod_uid, started_at, ended_at FROM import_closed
          UNION ALL SELECT line, pod_uid, started_at, ended_at FROM import_open) i
    CROSS JOIN LATERAL (
        SELECT started_at, ended_at FROM segments s
        WHERE s.pod_uid = i.pod_uid AND s.started_at <> i.started_at
          AND s.started_at < COALESCE(i.ended_at, 'infinity')
        ORDER BY s.started_at DESC LIMIT 1
    ) s
    WHERE i.started_at < COALESCE(s.ended_at, 'infinity')
    ORDER BY i.line LIMIT 200
    """
)


async def _plan(conn, query, **params) -> str:
    plan = await conn.execute(text("EXPLAIN (ANALYZE, BUFFERS) " + query.text), params)
    return "\n".join(r[0] for r in plan)


async def _nothing(*_args) -> None:
    return None


async def run(url: str, args) -> None:
    if not args.db:
        await db.migrate(url)
        # the data's month partitions first, as benchmarks/ledger_bench.py makes them
        # (else the history lands in the default partition)
        made = db.create_engine(url)
        await partitions.ensure(made, datagen.EVAL_AT - timedelta(days=args.days + 1),
                                datagen.EVAL_AT + timedelta(days=31))  # fmt: skip
        await made.dispose()
        await datagen.load_into(url, users=args.users, n_segments=args.segments, days=args.days)
    rows = [
        (
            s.pod_uid,
            s.namespace,
            s.pod_name,
            s.username,
            s.servername,
            s.cpu_millicores,
            s.memory_bytes,
            s.gpu_count,
            s.started_at,
            s.ended_at,
            line,
        )  # fmt: skip
        for line, s in enumerate(
            datagen.generate_segments(args.users, args.import_segments, seed=1, days=30), 1
        )
    ]
    engine = db.create_engine(url)
    try:
        async with engine.connect() as conn:
            transaction = await conn.begin()
            segments = (await conn.execute(text("SELECT count(*) FROM segments"))).scalar()
            print(f"machine: {machine()}")
            writer = importer._Writer(conn, "bench")
            await writer.begin()
            started, load = time.perf_counter(), load_average()
            for at in range(0, len(rows), importer.CHUNK_ROWS):
                await writer.write(rows[at : at + importer.CHUNK_ROWS])
            write_seconds = time.perf_counter() - started
            checks = []
            for _ in range(args.repeat):
                await conn.execute(text("TRUNCATE import_crossing"))
                started = time.perf_counter()
                found = await writer.overlaps()
                checks.append(time.perf_counter() - started)
                assert not found, found[:3]
            reference = []
            for _ in range(args.repeat):
                started = time.perf_counter()
                found = (await conn.execute(EVERY_MONTH)).all()
                reference.append(time.perf_counter() - started)
                assert not found, found[:3]
            if args.explain:
                await conn.execute(text("TRUNCATE import_crossing"))
                for month_at in sorted(writer._row_months):
                    print(await _plan(conn, importer._CROSSING, month_at=month_at))
                print(await _plan(conn, importer._OVERLAPS))
            # the same rows again: the staging path (every row conflicts), with and without
            # the note of rows the ledger holds differently (importer._DIFFERING)
            again = {}
            for name in ("with the differing note", "without it", "with it, again"):
                # the same writer (its staging tables); instance attribute shadows the method
                writer.__dict__.pop("_note_differing", None)
                if name == "without it":
                    writer._note_differing = _nothing
                started = time.perf_counter()
                for at in range(0, len(rows), importer.CHUNK_ROWS):
                    await writer.write(rows[at : at + importer.CHUNK_ROWS])
                again[name] = time.perf_counter() - started
            if args.explain:
                plan = await conn.execute(
                    text("EXPLAIN (ANALYZE, BUFFERS) " + importer._DIFFERING_STAGED.text),
                    {"shown": importer.DIFFERING_SHOWN},
                )
                print("\n".join(r[0] for r in plan))
            await transaction.rollback()
    finally:
        await engine.dispose()
    for name, seconds in again.items():
        print(f"  re-import, {name}: {seconds:.2f} s ({len(rows) / seconds:,.0f} /s)")
    every = statistics.median(reference)
    print(
        f"  (c9b1aa2's check, every month probed per row: median {every * 1e3:.0f} ms, "
        f"{every / len(rows) * 1e6:.1f} µs a row, {every / write_seconds:.1%} of the writes)"
    )
    check = statistics.median(checks)
    print(f"ledger {segments:,} segments; import {len(rows):,} rows (load {load}):")
    print(f"  writes {write_seconds:.2f} s ({len(rows) / write_seconds:,.0f} /s)")
    print(f"  overlap check median {check * 1e3:.0f} ms, best {min(checks) * 1e3:.0f} ms "
          f"({check / len(rows) * 1e6:.1f} µs a row, {check / write_seconds:.1%} of the writes)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", help="a loaded ledger (else an embedded one is made and loaded)")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--segments", type=int, default=1_000_000)
    parser.add_argument("--import-segments", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=datagen.DAYS,
                        help="the loaded history's span (the collector keeps 400 by default)")  # fmt: skip
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--explain", action="store_true", help="print the check's plan")
    args = parser.parse_args()
    with database(args.db) as (url, _server):
        asyncio.run(run(url, args))


if __name__ == "__main__":
    main()
