"""Same-run A/B of ``decide()``: two checkouts of quota-ledger on one loaded ledger, interleaved.

    .venv/bin/python benchmarks/decide_ab.py --db URL --a /work/main --b . [--rounds 5]

Each side runs in its own process (``PYTHONPATH`` = that checkout, so each imports its own
``ledger``) with a warm engine from ``ledger.store.db.create_engine`` — the engine the hub
hook uses (not autocommit). The driver hands both the same batches of users in turn (A then
B, then B then A, …), so load on a shared machine falls on both alike, and reports p50 / p90
/ p99 per side for ``--users`` random users (benchmarks/datagen.py's ledger, seed
``--seed``) and for the 1 % busiest (most segments in the window), with the round trips each
side's decide made (counted with an asyncpg query logger on the pooled connections).

The ledger must be loaded by benchmarks/ledger_bench.py and migrated to the newer side's
head; a side whose SQL functions are older must find them there (``--install-0013`` puts
back migration 0013's ``quota_user_history`` next to 0014's, for a checkout before 0014).
Nothing here migrates.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

# Only the driver puts this checkout on sys.path (in main): a worker must import the ledger
# of its own tree (PYTHONPATH), and this one first on the path would shadow it.
REPO = Path(__file__).resolve().parents[1]
SIDES = ("a", "b")


# -- worker: one checkout's decide ---------------------------------------------------------------


async def _worker(url: str) -> None:
    from pathlib import Path as _Path

    from sqlalchemy import event

    import ledger
    from ledger.core.decision import ServerRequest
    from ledger.core.policy_yaml import parse_policy
    from ledger.store import db
    from ledger.store.decide import decide

    tree = Path.cwd().resolve()
    if not Path(ledger.__file__).resolve().is_relative_to(tree):
        raise SystemExit(f"worker for {tree} imported the ledger of {ledger.__file__}")
    policy_path = _Path(os.environ["AB_POLICY"])
    policy = parse_policy(policy_path.read_text(), str(policy_path))
    request = ServerRequest({"cpu": 2000, "memory": 4 * 2**30, "gpu": 0})
    engine = db.create_engine(url)
    statements = [0]

    @event.listens_for(engine.sync_engine, "connect")
    def _count(dbapi_connection, record) -> None:
        dbapi_connection.driver_connection.add_query_logger(
            lambda q: statements.__setitem__(0, statements[0] + 1)
        )

    from datetime import datetime

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        job = json.loads(line)
        at = datetime.fromisoformat(job["at"])
        times, trips = [], []
        for username, groups in job["users"]:
            before = statements[0]
            t0 = time.perf_counter()
            await decide(engine, policy, username, groups, request, at)
            times.append(time.perf_counter() - t0)
            await asyncio.sleep(0)  # asyncpg calls query loggers soon after, not at once
            trips.append(statements[0] - before)
        print(json.dumps({"times": times, "trips": trips}), flush=True)
    await engine.dispose()


# -- driver ----------------------------------------------------------------------------------------


def _summary(times: list[float]) -> str:
    from benchmarks.common import percentile

    ms = [t * 1000 for t in times]
    return f"{percentile(ms, 50):.2f} / {percentile(ms, 90):.2f} / {percentile(ms, 99):.2f} ms"


async def _busiest(url: str, at, window_seconds: int, share: float) -> list[str]:
    import asyncpg

    sys.path.insert(0, str(REPO))
    from ledger.store import db

    conn = await asyncpg.connect(**db.asyncpg_params(url))
    try:
        rows = await conn.fetch(
            "SELECT username, count(*) AS n FROM segments "
            "WHERE COALESCE(ended_at, 'infinity') > $1 AND started_at < $2 GROUP BY username",
            at.__class__.fromtimestamp(at.timestamp() - window_seconds, at.tzinfo),
            at,
        )
    finally:
        await conn.close()
    ordered = sorted(rows, key=lambda r: r["n"])
    return [r["username"] for r in ordered[-max(1, int(len(ordered) * share)) :]]


async def _install_0013(url: str) -> None:
    import importlib.util

    import asyncpg

    sys.path.insert(0, str(REPO))
    from ledger.store import db

    spec = importlib.util.spec_from_file_location(
        "quota_ledger_0013", REPO / "migrations" / "versions" / "0013_decide_generic_plans.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    conn = await asyncpg.connect(**db.asyncpg_params(url))
    try:
        exists = await conn.fetchval(
            "SELECT to_regprocedure('quota_user_history(text, timestamptz, timestamptz, "
            "bigint, timestamptz[])') IS NOT NULL"
        )
        if not exists:
            await conn.execute(module.UPGRADE[2])
    finally:
        await conn.close()


def _start(tree: Path, url: str, policy: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(tree), AB_POLICY=str(policy))
    return subprocess.Popen(
        [sys.executable, __file__, "--worker", "--db", url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        text=True,
        cwd=str(tree),
    )


def _ask(worker: subprocess.Popen, users, at) -> dict:
    worker.stdin.write(json.dumps({"users": users, "at": at.isoformat()}) + "\n")
    worker.stdin.flush()
    return json.loads(worker.stdout.readline())


def _interleave(workers, users, at, rounds: int, batch: int) -> dict:
    out = {side: {"times": [], "trips": []} for side in SIDES}
    for r in range(rounds):
        for i in range(0, len(users), batch):
            chunk = users[i : i + batch]
            order = SIDES if (r + i // batch) % 2 == 0 else SIDES[::-1]
            for side in order:
                got = _ask(workers[side], chunk, at)
                out[side]["times"] += got["times"]
                out[side]["trips"] += got["trips"]
    return out


def _report(label: str, results: dict, trees: dict) -> None:
    for side in SIDES:
        trips = results[side]["trips"]
        counts = {n: trips.count(n) for n in sorted(set(trips))}
        print(
            f"| {label} | {side} ({trees[side]}) | {_summary(results[side]['times'])} | {counts} |"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--a", type=Path, help="checkout A (e.g. /work/main)")
    parser.add_argument("--b", type=Path, help="checkout B (e.g. this one)")
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--ledger-users", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=5, help="passes over the users per side")
    parser.add_argument("--batch", type=int, default=100, help="users per turn")
    parser.add_argument("--policy", type=Path, default=REPO / "examples" / "policy.yaml")
    parser.add_argument("--install-0013", action="store_true")
    args = parser.parse_args(argv)
    if args.worker:
        asyncio.run(_worker(args.db))
        return

    sys.path.insert(0, str(REPO))
    from benchmarks import datagen
    from ledger.store import db

    url = db.normalize_url(args.db)
    if args.install_0013:
        asyncio.run(_install_0013(url))
    groups = datagen.generate_groups(args.ledger_users, seed=args.seed)
    everyone = sorted(groups)
    sample = random.Random(args.seed).sample(everyone, min(args.users, len(everyone)))
    at = datagen.EVAL_AT
    busy = asyncio.run(_busiest(url, at, 30 * 86400, 0.01))
    trees = {"a": args.a.resolve(), "b": args.b.resolve()}
    workers = {side: _start(trees[side], url, args.policy.resolve()) for side in SIDES}
    try:
        users = [(u, list(groups.get(u, []))) for u in sample]
        busy_users = [(u, list(groups.get(u, []))) for u in busy]
        _interleave(workers, users[:200], at, 1, args.batch)  # warm up both
        random_results = _interleave(workers, users, at, args.rounds, args.batch)
        busy_results = _interleave(workers, busy_users, at, args.rounds, args.batch)
    finally:
        for worker in workers.values():
            worker.stdin.close()
            worker.wait()
    print(f"decide A/B, {args.rounds} interleaved passes; p50 / p90 / p99; statements per decide")
    print("| users | side | p50 / p90 / p99 | statements per decide (decides) |")
    print("|---|---|---|---|")
    _report(f"{len(sample)} random", random_results, trees)
    _report(f"1 % busiest ({len(busy)})", busy_results, trees)


if __name__ == "__main__":
    main()
