"""A/B of the all-users report between two source trees on one ledger, interleaved.

Each round runs tree A then tree B (or B then A, alternating), each in a fresh Python process
importing that tree (``PYTHONPATH``), after migrating the ledger to the tree's schema head
with tree B's alembic (B's migrations include A's). A process warms up once, then times
``--reps`` calls of ``ledger.store.report.build_report`` at midnight (the figure (b) of
benchmarks/ledger_bench.py) and at 13:43 (``MIDDAY_OFFSET`` before it: the edge days'
partial segments are integrated too), and the aggregate alone as the tree's report reads it.
Prints p50 / p99 / min per tree and figure, over every round. ``--a-head`` must be a
revision tree B's migrations know (the branch point, before a merge). The "SQL" rows time
each tree's own read of the aggregate (``queries.usage_report_us`` where it exists, else
``queries.usage_report``, which also turns the rows into dicts, as that tree's report does).

    .venv/bin/python benchmarks/report_ab.py --db URL --a-tree /work/main --a-head 0012 \\
        --b-tree . --rounds 6 --reps 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

# Only the driver puts this checkout on sys.path (in main): a child must import the ledger
# of its own tree (PYTHONPATH), and this one first on the path would shadow it.
REPO_ROOT = Path(__file__).resolve().parents[1]

EVAL_AT = datetime(2026, 11, 1, tzinfo=UTC)  # benchmarks/datagen.py EVAL_AT
MIDDAY_OFFSET = timedelta(hours=10, minutes=17)  # benchmarks/ledger_bench.py


async def _child(url: str, reps: int) -> dict:
    import ledger
    from ledger.core.policy_yaml import parse_policy
    from ledger.store import db, queries
    from ledger.store.report import build_report

    tree = Path(os.environ["PYTHONPATH"]).resolve()
    if not Path(ledger.__file__).resolve().is_relative_to(tree):
        raise SystemExit(f"child for {tree} imported the ledger of {ledger.__file__}")
    policy_path = Path(__file__).resolve().parents[1] / "examples" / "policy.yaml"
    policy = parse_policy(policy_path.read_text(), "examples/policy.yaml")
    # the tree's own read of the aggregate: usage_report_us where it exists
    read = getattr(queries, "usage_report_us", None) or queries.usage_report
    engine = db.create_engine(url)
    out: dict[str, list[float]] = {}
    try:
        await build_report(engine, policy, EVAL_AT)  # warm up
        for label, at in (("midnight", EVAL_AT), ("13:43", EVAL_AT - MIDDAY_OFFSET)):
            full = out.setdefault(f"report {label}", [])
            for _ in range(reps):
                t0 = time.perf_counter()
                await build_report(engine, policy, at)
                full.append(time.perf_counter() - t0)
            sql = out.setdefault(f"SQL {label}", [])
            async with engine.connect() as conn:
                for _ in range(reps):
                    t0 = time.perf_counter()
                    await read(conn, at, policy.window_seconds)
                    sql.append(time.perf_counter() - t0)
    finally:
        await engine.dispose()
    return out


def _run_tree(tree: Path, url: str, reps: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    proc = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            "--db",
            url,
            "--reps",
            str(reps),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _migrate(b_tree: Path, url: str, revision: str) -> None:
    code = (
        "import asyncio, sys; from alembic import command; from ledger.store import db; "
        "command.upgrade(db.alembic_config(sys.argv[1]), sys.argv[2]) if sys.argv[2] == 'head' "
        "else command.downgrade(db.alembic_config(sys.argv[1]), sys.argv[2])"
    )
    env = {**os.environ, "PYTHONPATH": str(b_tree)}
    subprocess.run([sys.executable, "-c", code, url, revision], env=env, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--a-tree", type=Path)
    parser.add_argument("--a-head", help="schema revision tree A runs on (downgrade to it)")
    parser.add_argument("--b-tree", type=Path, default=Path("."))
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(_child(args.db, args.reps))))
        return
    sys.path.insert(0, str(REPO_ROOT))
    from benchmarks.common import percentile

    trees = {"A": (args.a_tree.resolve(), args.a_head), "B": (args.b_tree.resolve(), "head")}
    results: dict[str, dict[str, list[float]]] = {"A": {}, "B": {}}
    for i in range(args.rounds):
        for name in ("A", "B") if i % 2 == 0 else ("B", "A"):
            tree, head = trees[name]
            _migrate(trees["B"][0], args.db, head)
            load = os.getloadavg()[0]
            for figure, seconds in _run_tree(tree, args.db, args.reps).items():
                results[name].setdefault(figure, []).extend(seconds)
            print(f"round {i + 1} {name} done (load {load:.2f})", file=sys.stderr, flush=True)
    _migrate(trees["B"][0], args.db, "head")
    print("| figure | A p50 / p99 / min ms | B p50 / p99 / min ms | A/B (p50) |")
    print("|---|---|---|---|")
    for figure in results["A"]:
        a, b = (
            [1000 * s for s in results[n][figure]] for n in ("A", "B")
        )  # fmt: skip
        cells = [
            f"{percentile(v, 50):.1f} / {percentile(v, 99):.1f} / {min(v):.1f}" for v in (a, b)
        ]
        ratio = statistics.median(a) / statistics.median(b)
        print(f"| {figure} (n={len(a)}) | {cells[0]} | {cells[1]} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
