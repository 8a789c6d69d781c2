"""What the usage model costs the all-users report: the run-out and retry times.

    .venv/bin/python benchmarks/report_model_bench.py                  # 10,000 users, 3 M segments
    .venv/bin/python benchmarks/report_model_bench.py --users 2000 --segments 600000

``ledger.store.report.build_report`` gives every user the usage model's records. Usage and
what runs now come from the ``quota_usage`` aggregate, as before; run-out and retry times
need a user's segments, which the report reads (one more query) only for users that have
one — running something limited, or at or over a limit. This script loads the ledger
benchmark's data (benchmarks/datagen.py, the same loader as benchmarks/ledger_bench.py),
then times, ``--reps`` times each: the whole report; the aggregate SQL alone; and the extra
segments query for the users that need times. Prints a Markdown section for
benchmarks/RESULTS.md (it does not write the file).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import datagen  # noqa: E402
from benchmarks.ledger_bench import database, machine, prepare  # noqa: E402
from ledger.core.policy import parse_policy  # noqa: E402
from ledger.store import db, queries  # noqa: E402
from ledger.store import report as report_module  # noqa: E402


def _ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.0f} ms (min {min(values) * 1000:.0f})"


async def run(args) -> str:
    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    mach = machine()
    policy = parse_policy((REPO / "examples" / "policy.yaml").read_text(), "examples/policy.yaml")
    at = datagen.EVAL_AT
    with database(args.db) as (url, _server):
        await prepare(url, args, log)
        engine = db.create_engine(url)
        try:
            lines = await report_module.build_report(engine, policy, at)  # warm up
            timed = [
                line.username
                for line in lines
                if any(r.runs_out_at or r.retry_at for r in line.resources.values())
            ]
            full, aggregate, extra = [], [], []
            for _ in range(args.reps):
                t0 = time.perf_counter()
                await report_module.build_report(engine, policy, at)
                full.append(time.perf_counter() - t0)
            since = at - timedelta(seconds=policy.max_window_seconds())
            async with engine.connect() as conn:
                for _ in range(args.reps):
                    t0 = time.perf_counter()
                    await queries.usage_report(conn, at, policy.window_seconds)
                    aggregate.append(time.perf_counter() - t0)
                for _ in range(args.reps):
                    t0 = time.perf_counter()
                    rows = await report_module._segments_of(conn, timed, since, at)
                    extra.append(time.perf_counter() - t0)
        finally:
            await engine.dispose()
    segments = sum(len(v) for v in rows.values())
    return "\n".join(
        [
            "## Report with the usage model (run-out and retry times)",
            "",
            f"`{' '.join(['.venv/bin/python', 'benchmarks/report_model_bench.py', *sys.argv[1:]])}`",
            "",
            f"- Machine: {mach['cpu']}, {mach['cores']} cores; load average at start "
            f"{mach['load']}. Data: benchmarks/datagen.py seed {args.seed}, {args.users:,} "
            f"users, {args.segments:,} segments; examples/policy.yaml; at {at.isoformat()}.",
            f"- {len(lines):,} users in the report; {len(timed):,} have a run-out or retry "
            f"time (their {segments:,} segments in the window are read by the extra query).",
            "",
            "| measurement (median of " + str(args.reps) + ") | time |",
            "|---|---|",
            f"| whole report (`build_report`) | {_ms(full)} |",
            f"| `quota_usage` aggregate alone | {_ms(aggregate)} |",
            f"| extra segments query for the users with times | {_ms(extra)} |",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--segments", type=int, default=3_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--db", help="an empty PostgreSQL database (default: embedded, temporary)")
    parser.add_argument("--reuse", action="store_true", help="--db already loaded by this script")
    parser.add_argument("--reps", type=int, default=5)
    print(asyncio.run(run(parser.parse_args(argv))))


if __name__ == "__main__":
    main()
