"""One import file into one loaded ledger with the importer of two source trees, in turn.

    git worktree add /tmp/before <commit>   # or: git archive <commit> | tar -x -C /tmp/before
    .venv/bin/python benchmarks/import_compare.py --db URL --tree /tmp/before FILE.jsonl
    .venv/bin/python benchmarks/import_compare.py --db URL --tree . FILE.jsonl

Each run: ``importer.import_file`` of that tree end to end, the same file again
(idempotent), then the imported rows deleted (by the file's namespace, ``--namespace``), so
the next run meets the same ledger. Prints rows/s, the process's CPU time, the server's CPU
time (all processes of the postmaster whose data directory ``--pgdata`` names, when the
server runs on this machine) and the load average: on a shared machine, compare runs by CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _server_cpu_s(pgdata: str | None) -> float | None:
    if not pgdata:
        return None
    postmaster = int(Path(pgdata, "postmaster.pid").read_text().split()[0])
    total = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(pid) == postmaster or int(fields[1]) == postmaster:
            total += int(fields[11]) + int(fields[12])
    return total / TICK


async def run(args) -> None:
    sys.path.insert(0, str(Path(args.tree).resolve()))
    from sqlalchemy import text

    from ledger.store import db, importer

    engine = db.create_engine(args.db)
    rows = sum(1 for line in open(args.file, encoding="utf-8") if line.strip())
    try:
        server0, cpu0, t0 = _server_cpu_s(args.pgdata), time.process_time(), time.perf_counter()
        result = await importer.import_file(engine, args.file)
        wall = time.perf_counter() - t0
        server = _server_cpu_s(args.pgdata)
        server_text = f", server CPU {server - server0:.1f} s" if server is not None else ""
        print(f"{args.tree}: import {rows:,} rows: {rows / wall:,.0f} /s ({wall:.1f} s), "
              f"process CPU {time.process_time() - cpu0:.1f} s{server_text}, "
              f"{result.inserted:,} inserted [load {_load()}]", flush=True)  # fmt: skip
        t0 = time.perf_counter()
        again = await importer.import_file(engine, args.file)
        wall = time.perf_counter() - t0
        print(f"{args.tree}: same file again {rows / wall:,.0f} /s ({wall:.1f} s), "
              f"{again.inserted} inserted [load {_load()}]", flush=True)  # fmt: skip
    finally:
        async with engine.begin() as conn:
            await conn.execute(text("DELETE FROM segments WHERE namespace = :ns"), {"ns": args.namespace})  # fmt: skip
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", required=True, help="the loaded ledger")
    parser.add_argument("--tree", required=True, help="the source tree whose importer runs")
    parser.add_argument("--pgdata", help="the server's data directory, for its CPU time")
    parser.add_argument("--namespace", default="jhub-bench-import",
                        help="the file's namespace (ledger_bench.py's import file uses this)")  # fmt: skip
    parser.add_argument("file", help="a JSONL import file (benchmarks/datagen.py write_jsonl)")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
