"""The whole decide with pools, a shared-read function as a migration found it against as it
left it, in alternating blocks on one loaded ledger: ``--migration 0018`` (0016's
``quota_pool_used`` against 0018's, membership probed per edge event) or ``0019`` (0018's
``quota_shared_open`` against 0019's, the touched servers' segments probed per server).

    .venv/bin/python benchmarks/pool_probe_decide_ab.py --db URL [--migration 0019] \
        [--users 300] [--rounds 2] [--after-seconds 49401.5]

benchmarks/shared_open_ab.py times the shared read alone; this times what a spawn pays,
``decide`` with and without the pools and hub caps of benchmarks/shared_capacity_bench.py,
for the same random users in every block. A function cannot differ per call, so each block
installs one version (``CREATE OR REPLACE``) and opens new connections (new generic plans),
warms them up on 30 users, then times every user; the blocks alternate before, head,
before, head… and head's function is installed again at the end, also on failure. It
rewrites a function of the database it is given: run it on a benchmark ledger
(ledger_bench.py or shared_capacity_bench.py loaded, which fill ``user_groups``), never on a
hub's.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import random
import sys
import time
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from sqlalchemy import text  # noqa: E402

from benchmarks import datagen  # noqa: E402
from benchmarks.common import (  # noqa: E402
    add_after_seconds_option,
    add_loaded_ab_options,
    load_average,
    machine,
    percentile,
)
from benchmarks.shared_capacity_bench import REQUEST, shared_policy  # noqa: E402
from ledger.core.policy_yaml import parse_policy  # noqa: E402
from ledger.store import db  # noqa: E402
from ledger.store.decide import decide  # noqa: E402

WARM_UP_USERS = 30


MIGRATIONS = {
    "0018": "0018_pool_edge_member_probes.py",
    "0019": "0019_shared_open_touched_probes.py",
}


def _functions(migration: str) -> dict[str, str]:
    """The function as ``migration`` found it (its downgrade) and left it (its upgrade)."""
    path = REPO / "migrations" / "versions" / MIGRATIONS[migration]
    spec = importlib.util.spec_from_file_location(f"quota_ledger_{migration}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    (before,) = module.DOWNGRADE
    (after,) = module.UPGRADE
    return {"before": before, "head": after}


async def _main(args) -> None:
    functions = _functions(args.migration)
    base = (REPO / "examples" / "policy.yaml").read_text()
    plain = parse_policy(base, "examples/policy.yaml")
    shared = parse_policy(shared_policy(base), "shared")
    groups = datagen.generate_groups(args.users_in_ledger, seed=args.seed)
    users = random.Random(args.seed).sample(sorted(groups), args.users)
    at = datagen.EVAL_AT + timedelta(seconds=args.after_seconds)
    engine = db.create_engine(args.db)
    loads = [load_average(1)]

    async def install(version: str) -> None:
        async with engine.begin() as conn:
            await conn.execute(text(functions[version]))
        await engine.dispose()  # the next checkout connects anew and plans anew

    rows = []
    try:
        for round_number in range(args.rounds):
            for version in ("before", "head"):
                await install(version)
                for username in users[:WARM_UP_USERS]:
                    await decide(engine, shared, username, groups[username], REQUEST, at)
                without, with_pools = [], []
                for username in users:
                    g = groups[username]
                    t0 = time.perf_counter()
                    await decide(engine, plain, username, g, REQUEST, at)
                    t1 = time.perf_counter()
                    await decide(engine, shared, username, g, REQUEST, at)
                    t2 = time.perf_counter()
                    without.append((t1 - t0) * 1000)
                    with_pools.append((t2 - t1) * 1000)
                loads.append(load_average(1))
                rows.append((round_number + 1, version, without, with_pools))
    finally:
        await install("head")
        await engine.dispose()
    m = machine()
    print(
        f"Machine: {m['cpu']}, {m['cores']} cores; 1-minute load {' → '.join(loads)}; "
        f"{len(users)} users, decide at {at.isoformat()}; migration {args.migration}'s function"
    )
    print(
        "| round | function | without pools p50 / p99 | with pools p50 / p99 "
        "| difference p50 / p99 |"
    )
    print("|---|---|---|---|---|")
    for round_number, version, without, with_pools in rows:
        w0, w1 = percentile(without, 50), percentile(with_pools, 50)
        q0, q1 = percentile(without, 99), percentile(with_pools, 99)
        print(
            f"| {round_number} | {version} | {w0:.2f} / {q0:.2f} ms | {w1:.2f} / {q1:.2f} ms "
            f"| +{w1 - w0:.2f} / +{q1 - q0:.2f} ms |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_loaded_ab_options(parser, users=300, rounds=2)
    add_after_seconds_option(parser)
    parser.add_argument("--migration", choices=sorted(MIGRATIONS), default="0019",
                        help="whose before and after to compare (default: 0019)")  # fmt: skip
    asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
