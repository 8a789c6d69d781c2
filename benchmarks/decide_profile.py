"""Where one ``decide()`` spends its time, on a ledger benchmarks/ledger_bench.py loaded.

    .venv/bin/python benchmarks/decide_profile.py --db URL [--users 500] [--html out.html]

Runs ``decide`` for random users (the ledger benchmark's policy, request and evaluation
time) under pyinstrument (``pip install pyinstrument``) and prints its call tree.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import datagen  # noqa: E402
from benchmarks.ledger_bench import REQUEST  # noqa: E402
from ledger.core.policy_yaml import parse_policy  # noqa: E402
from ledger.store import db  # noqa: E402
from ledger.store.decide import decide  # noqa: E402


async def run(args) -> None:
    from pyinstrument import Profiler

    policy = parse_policy((REPO / "examples" / "policy.yaml").read_text(), "examples/policy.yaml")
    groups = datagen.generate_groups(args.users_total, seed=0)
    users = random.Random(1).sample(sorted(groups), args.users)
    engine = db.create_engine(args.db)
    try:
        for username in users[:50]:  # warm up
            await decide(engine, policy, username, groups[username], REQUEST, datagen.EVAL_AT)
        profiler = Profiler(interval=0.0001, async_mode="enabled")
        with profiler:
            for username in users:
                await decide(engine, policy, username, groups[username], REQUEST, datagen.EVAL_AT)
    finally:
        await engine.dispose()
    print(profiler.output_text(unicode=True, show_all=False))
    if args.html:
        Path(args.html).write_text(profiler.output_html())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--users-total", type=int, default=10_000)
    parser.add_argument("--html")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
