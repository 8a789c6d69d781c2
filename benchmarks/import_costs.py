"""Where an import's server time goes, on a loaded ledger: COPY, insert, indexes, rollups, WAL.

    .venv/bin/python benchmarks/import_costs.py --db URL FILE.jsonl [--checkpoint]

Everything runs in one transaction that is rolled back (each step under its own savepoint),
so the ledger is unchanged (but for the dead index entries each step leaves until the next
VACUUM, which make later steps a little dearer: VACUUM ``segments`` before a run). The file is validated (the import's own parse), then each step
writes the same rows and prints its wall time, the server backend's CPU time (read from
/proc, so only when the server runs on this machine; wall time on a shared machine mostly
measures the queue for a core) and its WAL (``EXPLAIN (ANALYZE, WAL)``):

- COPY of the records into the importer's temporary staging table;
- the importer's staged INSERT … ON CONFLICT, rollup trigger on / off;
- COPY straight into ``segments`` (the importer's path for new rows), trigger on / off, and
  with every trigger off: the ceiling of any import that writes the ledger's table;
- the staged INSERT with the trigger off and each secondary index dropped in turn;
- the staged INSERT with ``wal_compression`` as the server has it and off.

``--checkpoint`` runs a CHECKPOINT before each step, so each pays the full-page images of
a first import after a checkpoint (the usual case: a checkpoint every 5 minutes). Prints
one line per step with the load average. Make the file with ``benchmarks/datagen.py``
(``write_jsonl``) and the ledger with ``benchmarks/ledger_bench.py --db URL``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg  # noqa: E402

from ledger.core.import_rows import parse_record_chunks  # noqa: E402
from ledger.store import db, importer  # noqa: E402

SECONDARY = ("ix_segments_user_end", "ix_segments_user_start", "ix_segments_started", "ix_segments_end")  # fmt: skip
TICK = os.sysconf("SC_CLK_TCK")


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _cpu_s(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None  # the server is on another machine
    return (int(fields[11]) + int(fields[12])) / TICK


class Steps:
    def __init__(self, conn: asyncpg.Connection, pid: int, rows: int, checkpoint: bool):
        self.conn, self.pid, self.rows, self.checkpoint = conn, pid, rows, checkpoint

    async def run(self, label: str, setup: list[str], action, keep: bool = False) -> None:
        savepoint = self.conn.transaction()
        await savepoint.start()
        try:
            if self.checkpoint:
                await self.conn.execute("CHECKPOINT")
            for statement in setup:
                await self.conn.execute(statement)
            cpu0, t0 = _cpu_s(self.pid), time.perf_counter()
            wal = await action()
            wall, cpu1 = time.perf_counter() - t0, _cpu_s(self.pid)
            cpu = f"backend CPU {cpu1 - cpu0:.2f} s ({(cpu1 - cpu0) / self.rows * 1e6:.1f} µs/row)" if cpu0 is not None else "backend CPU n/a"  # fmt: skip
            print(f"{label}: wall {wall:.1f} s, {cpu}; {wal} [load {_load()}]", flush=True)
        except BaseException:
            await savepoint.rollback()
            raise
        if keep:
            await savepoint.commit()  # a savepoint: released, the rows stay in the transaction
        else:
            await savepoint.rollback()

    def explain(self, sql: str):
        async def action() -> str:
            plan = await self.conn.fetch("EXPLAIN (ANALYZE, WAL, TIMING OFF) " + sql)
            return next((r[0].strip() for r in plan if "WAL:" in r[0]), "")

        return action

    def copy(self, table: str, records: list[tuple], columns) -> object:
        async def action() -> str:
            await self.conn.copy_records_to_table(table, records=records, columns=columns)
            return ""

        return action


async def run(url: str, path: str, checkpoint: bool) -> None:
    with open(path, encoding="utf-8") as lines:
        records = [r for chunk in parse_record_chunks(lines, "jsonl", path) for r in chunk]
    closed = [r for r in records if r[9] is not None]
    direct = [(*r[:10], "import", r[9], "imported", "import") for r in closed]
    conn = await asyncpg.connect(db.normalize_url(url).replace("postgresql+asyncpg", "postgresql"))
    try:
        pid = await conn.fetchval("SELECT pg_backend_pid()")
        wal_compression = await conn.fetchval("SHOW wal_compression")
        transaction = conn.transaction()
        await transaction.start()
        await conn.execute(importer._CREATE_STAGING.text)
        steps = Steps(conn, pid, len(closed), checkpoint)
        print(f"{len(closed):,} closed rows; wal_compression = {wal_compression}; checkpoint before each step: {checkpoint}")  # fmt: skip
        await steps.run("COPY into the staging table (kept)", [],
                        steps.copy("import_segments", closed, importer._RECORD_COLUMNS), keep=True)  # fmt: skip
        await conn.execute("ANALYZE import_segments")
        # first, before rolled-back steps leave their dead index entries behind: the ceiling
        # of any import that writes the ledger's table, PostgreSQL's own COPY into segments
        # and its indexes with no rollup, pool or open-totals trigger at all
        every = ["ALTER TABLE segments DISABLE TRIGGER USER"]
        await steps.run("COPY straight into segments, every trigger off (the COPY ceiling)",
                        every, steps.copy("segments", direct, importer._SEGMENT_COLUMNS))  # fmt: skip
        off = ["ALTER TABLE segments DISABLE TRIGGER quota_rollups_insert"]
        insert = importer._INSERT.text
        await steps.run("staged INSERT … ON CONFLICT, rollup trigger on", [], steps.explain(insert))
        await steps.run(
            "staged INSERT … ON CONFLICT, rollup trigger off", off, steps.explain(insert)
        )
        await steps.run("COPY straight into segments, trigger on", [],
                        steps.copy("segments", direct, importer._SEGMENT_COLUMNS))  # fmt: skip
        await steps.run("COPY straight into segments, trigger off", off,
                        steps.copy("segments", direct, importer._SEGMENT_COLUMNS))  # fmt: skip
        # of the rollup trigger's cost, what the blocks of migration 0012 take (their own
        # triggers on usage_rollups, fired by its upsert)
        blocks = ["ALTER TABLE usage_rollups DISABLE TRIGGER USER"]
        await steps.run("COPY straight into segments, usage_rollups' block triggers off",
                        blocks, steps.copy("segments", direct, importer._SEGMENT_COLUMNS))  # fmt: skip
        for index in SECONDARY:
            await steps.run(f"staged INSERT, trigger off, without {index}",
                            [*off, f"DROP INDEX {index}"], steps.explain(insert))  # fmt: skip
        if wal_compression not in ("off",):
            await steps.run("staged INSERT, trigger on, wal_compression = off",
                            ["SET LOCAL wal_compression = off"], steps.explain(insert))  # fmt: skip
        await transaction.rollback()
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", required=True, help="a loaded ledger (left unchanged)")
    parser.add_argument("--checkpoint", action="store_true", help="CHECKPOINT before each step")
    parser.add_argument("file", help="a JSONL import file")
    args = parser.parse_args()
    asyncio.run(run(args.db, args.file, args.checkpoint))


if __name__ == "__main__":
    main()
