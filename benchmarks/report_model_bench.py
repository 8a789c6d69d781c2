"""What the usage model's run-out and retry times cost the all-users report.

    .venv/bin/python benchmarks/report_model_bench.py                  # 10,000 users, 3 M segments
    .venv/bin/python benchmarks/report_model_bench.py --users 2000 --segments 600000

``ledger.store.report.build_report`` reads the ``quota_usage`` aggregate (usage and what
runs now, every user); ``ledger.store.report.add_times`` then reads the segments of the
users whose records can have a run-out or retry time (running something limited, or at a
limit) and recomputes those records with the times. ``quota-ledger report`` adds them for
every line; the admin page and ``/api/v1/report`` for the page shown. This script loads the
ledger benchmark's data (benchmarks/datagen.py, the loader of benchmarks/ledger_bench.py),
then times, ``--reps`` times each: ``build_report``; ``add_times`` for every line; and
``add_times`` for one page of 50 lines, the 50 highest percentages (the worst page). Prints a
Markdown section for benchmarks/RESULTS.md (it does not write the file).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import datagen  # noqa: E402
from benchmarks.common import add_loaded_ledger_options, machine  # noqa: E402
from benchmarks.ledger_bench import database, prepare  # noqa: E402
from ledger.core.policy_yaml import parse_policy  # noqa: E402
from ledger.core.usage_model import needs_times  # noqa: E402
from ledger.store import db  # noqa: E402
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
            await report_module.build_report(engine, policy, at)  # warm up
            build, every, page = [], [], []
            for _ in range(args.reps):
                t0 = time.perf_counter()
                lines = await report_module.build_report(engine, policy, at)
                build.append(time.perf_counter() - t0)
                worst = sorted(lines, key=lambda line: -line.max_percent)[:50]
                t0 = time.perf_counter()
                await report_module.add_times(engine, policy, worst)
                page.append(time.perf_counter() - t0)
                lines = await report_module.build_report(engine, policy, at)
                t0 = time.perf_counter()
                await report_module.add_times(engine, policy, lines)
                every.append(time.perf_counter() - t0)
        finally:
            await engine.dispose()
    timed = [line for line in lines if any(needs_times(r) for r in line.resources.values())]
    with_times = [
        line for line in lines if any(r.runs_out_at or r.retry_at for r in line.resources.values())
    ]
    return "\n".join(
        [
            "## Report with the usage model (run-out and retry times)",
            "",
            f"`{' '.join(['.venv/bin/python', 'benchmarks/report_model_bench.py', *sys.argv[1:]])}`",
            "",
            f"- Machine: {mach['cpu']}, {mach['cores']} cores; load average at start "
            f"{mach['load']}. Data: benchmarks/datagen.py seed {args.seed}, {args.users:,} "
            f"users, {args.segments:,} segments; examples/policy.yaml; at {at.isoformat()}.",
            f"- {len(lines):,} users in the report; {len(timed):,} of them run something "
            f"limited or are at a limit (their segments are read); {len(with_times):,} have "
            "a run-out or retry time.",
            "",
            "| measurement (median of " + str(args.reps) + ") | time |",
            "|---|---|",
            f"| `build_report` (the aggregate, every user) | {_ms(build)} |",
            f"| `add_times`, every line (`quota-ledger report`) | {_ms(every)} |",
            f"| `add_times`, the worst page of 50 (admin page, API) | {_ms(page)} |",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_loaded_ledger_options(parser, results=False)
    parser.add_argument("--reps", type=int, default=5)
    print(asyncio.run(run(parser.parse_args(argv))))


if __name__ == "__main__":
    main()
