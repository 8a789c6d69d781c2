"""Same-run A/B of decide's Python alone: two checkouts in one process, one recording replayed.

    .venv/bin/python benchmarks/decide_python_ab.py --db URL --a /work/main --b . [--busy]

Both checkouts' ``ledger`` packages are imported side by side (``sys.modules`` holds one at a
time and is swapped before each pass), so both run on the same interpreter, the same
warm caches and, pass by pass, the same moment of a shared machine's speed. Each side first
decides for ``--users`` random users (benchmarks/datagen.py's ledger, seed 0) on a real
connection, recording what every statement returned; the decisions must be equal
(``to_json``), or the script stops. Then ``--passes`` passes per side, interleaved A/B then
B/A, replay the recorded rows in place of the round trips: what is timed (process CPU) is
everything decide does but the server's work and the socket. ``--busy`` takes the 100 users
with the most segments in the window instead.

The ledger must be loaded by benchmarks/ledger_bench.py; both sides must send the same
statements (a side whose SQL differs replays rows it did not ask for: the decisions then
differ and the script says so).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import random
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
POLICY = REPO / "examples" / "policy.yaml"


def _ledger_modules() -> list[str]:
    return [k for k in sys.modules if k == "ledger" or k.startswith("ledger.")]


def _load(tree: Path) -> dict:
    """Import ``tree``'s ledger (the modules decide uses) and return its modules."""
    for name in _ledger_modules():
        del sys.modules[name]
    sys.path.insert(0, str(tree))
    importlib.invalidate_caches()
    for name in ("ledger.store.decide", "ledger.core.policy_yaml", "ledger.core.decision"):
        importlib.import_module(name)
    sys.path.remove(str(tree))
    found = Path(sys.modules["ledger"].__file__).resolve()
    if not found.is_relative_to(tree):
        raise SystemExit(f"{tree}: imported the ledger of {found}")
    return {k: sys.modules[k] for k in _ledger_modules()}


def _use(modules: dict) -> None:
    """Make ``modules`` the ledger an import inside decide finds."""
    for name in _ledger_modules():
        del sys.modules[name]
    sys.modules.update(modules)


class _Recording:
    """An asyncpg connection's ``fetch`` that keeps what each statement returned."""

    def __init__(self, real, log: list):
        self._real, self._log = real, log

    async def fetch(self, sql, *args):
        rows = await self._real.fetch(sql, *args)
        self._log.append(rows)
        return rows


class _Replay:
    """``fetch`` answering each statement with the next recorded result."""

    def __init__(self, log: list):
        self._log, self._next = log, 0

    async def fetch(self, sql, *args):
        rows = self._log[self._next]
        self._next += 1
        return rows


class _Connection:
    """What decide's reads ask of a connection (``get_raw_connection().driver_connection``)."""

    def __init__(self, driver):
        self.driver_connection = driver

    async def get_raw_connection(self):
        return self


async def _busiest(real, at, count: int) -> list[str]:
    rows = await real.fetch(
        "SELECT username FROM segments WHERE COALESCE(ended_at, 'infinity') > $1 "
        "AND started_at < $2 GROUP BY username ORDER BY count(*) DESC, username LIMIT $3",
        at - timedelta(days=30),
        at,
        count,
    )
    return [r["username"] for r in rows]


async def _main(args) -> None:
    sys.path.insert(0, str(REPO))
    from benchmarks import datagen

    sides = {"a": _load(args.a.resolve()), "b": _load(args.b.resolve())}
    _use(sides["a"])
    db = importlib.import_module("ledger.store.db")
    import asyncpg

    real = await asyncpg.connect(**db.asyncpg_params(db.normalize_url(args.db)))
    groups = datagen.generate_groups(args.ledger_users, seed=args.seed)
    at = datagen.EVAL_AT
    if args.busy:
        users = await _busiest(real, at, 100)
    else:
        users = random.Random(args.seed).sample(sorted(groups), args.users)
    runs = {}
    for side, modules in sides.items():
        _use(modules)
        decision = modules["ledger.core.decision"]
        policy = modules["ledger.core.policy_yaml"].parse_policy(POLICY.read_text(), str(POLICY))
        request = decision.ServerRequest({"cpu": 2000, "memory": 4 * 2**30, "gpu": 0})
        decide_on = modules["ledger.store.decide"]._decide_on
        logs, answers = [], []
        for user in users:
            log: list = []
            conn = _Connection(_Recording(real, log))
            (got,) = await decide_on(conn, policy, user, groups.get(user, []), [request], at)
            logs.append((user, groups.get(user, []), log))
            answers.append(got.to_json())
        runs[side] = (decide_on, policy, request, logs, answers)
    await real.close()
    if runs["a"][4] != runs["b"][4]:
        raise SystemExit("the two checkouts' decisions differ")
    cpu_us: dict[str, list[float]] = {"a": [], "b": []}
    for i in range(args.passes):
        for side in ("a", "b") if i % 2 == 0 else ("b", "a"):
            _use(sides[side])
            decide_on, policy, request, logs, _ = runs[side]
            gc.collect()
            t0 = time.process_time()
            for user, user_groups, log in logs:
                await decide_on(_Connection(_Replay(log)), policy, user, user_groups, [request], at)
            cpu_us[side].append((time.process_time() - t0) / len(logs) * 1e6)
    print(
        f"decide's Python, {len(users)} {'busiest' if args.busy else 'random'} users, "
        f"{args.passes} interleaved passes per side (process CPU per decide)"
    )
    for side, tree in (("a", args.a), ("b", args.b)):
        values = cpu_us[side]
        print(
            f"{side} ({tree}): min {min(values):.1f} µs, median {statistics.median(values):.1f} µs"
        )
    ratios = [b / a for a, b in zip(cpu_us["a"], cpu_us["b"], strict=True)]
    print(
        f"b / a per pair of passes: median {statistics.median(ratios):.3f} "
        f"(min {min(ratios):.3f}, max {max(ratios):.3f})"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--a", type=Path, required=True, help="checkout A (e.g. /work/main)")
    parser.add_argument("--b", type=Path, required=True, help="checkout B (e.g. this one)")
    parser.add_argument("--users", type=int, default=1_500)
    parser.add_argument("--ledger-users", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--passes", type=int, default=20, help="timed passes per side")
    parser.add_argument("--busy", action="store_true", help="the 100 busiest users instead")
    asyncio.run(_main(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
