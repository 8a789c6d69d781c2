"""Same-run A/B of shared capacity's read: migration 0016's ``quota_shared_open`` and
``quota_pool_used`` against the installed ones (head: 0017 reads the open totals alone when
no server needs correcting, 0018 probes pool membership per edge event).

    .venv/bin/python benchmarks/shared_open_ab.py --db URL [--users 1000] [--rounds 3] \
        [--after-seconds 49401.5]

The ledger must be loaded by benchmarks/ledger_bench.py or shared_capacity_bench.py (which
fill ``user_groups``) and migrated to head. 0016's functions are created for this session
only, in ``pg_temp``, so nothing is left in the database. Both read what decide with pools
and hub caps reads for a user of one group: the hub's and the group's running totals, the
group's grants-or-credits flag and its 30-day pool usage, at benchmarks/datagen.py's
EVAL_AT (plus ``--after-seconds``). Per user the two calls alternate (A/B, then B/A), on one
connection, so both see the same moment of a shared machine; the rows must be equal or the
script stops. Timed: the round trip (``fetch``), and the time the server spent inside the
function (its pool reads included; wall time, not CPU), from ``pg_stat_user_functions``
before and after the timed rounds (``track_functions = 'pl'``, set for this session), and
of that the part spent in ``quota_pool_used``.
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

from benchmarks import datagen  # noqa: E402
from benchmarks.common import (  # noqa: E402
    add_after_seconds_option,
    add_loaded_ab_options,
    load_average,
    machine,
    percentile,
)

WINDOW_SECONDS = 30 * 86_400
CALL = "SELECT kind, scope, resource, amount FROM {schema}quota_shared_open({args})"


def _0016_functions() -> list[str]:
    """0016's ``quota_pool_used`` and ``quota_shared_open`` as this session's ``pg_temp``
    copies, the second calling the first (functions are never looked up in ``pg_temp``
    unless named so: https://www.postgresql.org/docs/current/runtime-config-client.html#GUC-SEARCH-PATH)."""
    path = REPO / "migrations" / "versions" / "0016_shared_generic_plans.py"
    spec = importlib.util.spec_from_file_location("quota_ledger_0016", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("alembic", type(sys)("alembic")).op = None  # only its constants
    spec.loader.exec_module(module)
    pool_used = module._POOL_USED.replace(
        "CREATE FUNCTION quota_pool_used(", "CREATE FUNCTION pg_temp.quota_pool_used(", 1
    )
    shared_open = module._SHARED_OPEN.replace(
        "CREATE FUNCTION quota_shared_open(", "CREATE FUNCTION pg_temp.quota_shared_open(", 1
    ).replace("FROM quota_pool_used(", "FROM pg_temp.quota_pool_used(")
    return [pool_used, shared_open]


async def _main(args) -> None:
    import asyncpg

    dsn = args.db.replace("postgresql+asyncpg://", "postgresql://", 1)
    conn = await asyncpg.connect(dsn)
    try:
        for statement in _0016_functions():
            await conn.execute(statement)
        await conn.execute("SET track_functions = 'pl'")
        users = await conn.fetch(
            "SELECT username, min(group_name) AS g FROM user_groups GROUP BY 1"
        )
        rng = random.Random(args.seed)
        picked = rng.sample(list(users), min(args.users, len(users)))
        at = datagen.EVAL_AT + timedelta(seconds=args.after_seconds)
        since = at - timedelta(seconds=WINDOW_SECONDS)
        args_sql = ", ".join(f"${n}" for n in range(1, 12))
        calls = {
            "0016": CALL.format(schema="pg_temp.", args=args_sql),
            "head": CALL.format(schema="public.", args=args_sql),
        }
        running = {
            r[0]
            for r in await conn.fetch(
                "SELECT DISTINCT username FROM segments WHERE COALESCE(ended_at, "
                "'infinity'::timestamptz) > $1",
                at,
            )
        }
        times = {side: [] for side in calls}

        async def function_ms() -> dict[tuple[str, str], float]:
            # this backend's function statistics, flushed: pending ones reach the cumulative
            # view only when the backend goes idle, at most once a second unless forced
            # (https://www.postgresql.org/docs/current/monitoring-stats.html#MONITORING-STATS-FUNCS)
            await conn.execute("SELECT pg_stat_force_next_flush()")
            await conn.execute("SELECT 1")
            await asyncio.sleep(0.2)
            rows = await conn.fetch(
                "SELECT schemaname, funcname, total_time FROM pg_stat_user_functions "
                "WHERE funcname IN ('quota_shared_open', 'quota_pool_used')"
            )
            return {("head" if r[0] == "public" else "0016", r[1]): r[2] for r in rows}

        for round_number in range(args.rounds + 1):  # round 0 warms both plans up
            if round_number == 1:
                before = await function_ms()
            for i, user in enumerate(picked):
                params = (
                    at, user["username"], "", True, [user["g"]], [user["g"]], [user["g"]],
                    since, [user["g"]], [True], [float(WINDOW_SECONDS)],
                )  # fmt: skip
                order = ("0016", "head") if (i + round_number) % 2 else ("head", "0016")
                got = {}
                for side in order:
                    started = time.perf_counter()
                    got[side] = sorted(map(tuple, await conn.fetch(calls[side], *params)))
                    if round_number:
                        times[side].append(time.perf_counter() - started)
                if got["0016"] != got["head"]:
                    raise SystemExit(
                        f"{user['username']}: 0016 {got['0016']} != head {got['head']}"
                    )
        after = await function_ms()
        inside_ms = {key: value - before.get(key, 0.0) for key, value in after.items()}
        m = machine()
        calls_per_side = len(times["0016"])
        print(
            f"Machine: {m['cpu']}, {m['cores']} cores; load {load_average()}; "
            f"{len(picked)} users ({sum(u['username'] in running for u in picked)} running a "
            f"server at {at.isoformat()}: both sides take 0016's query for them), "
            f"{args.rounds} rounds, {calls_per_side} calls per side"
        )
        print(
            "| read | round trip p50 / p90 / p99 | time inside the function per call "
            "(server, wall) | … of which its pool read |"
        )
        print("|---|---|---|---|")
        for side in calls:
            ms = [t * 1000 for t in times[side]]
            whole, pool = (
                inside_ms.get((side, name), 0.0) / calls_per_side
                for name in ("quota_shared_open", "quota_pool_used")
            )
            print(
                f"| {side} | {percentile(ms, 50):.3f} / {percentile(ms, 90):.3f} / "
                f"{percentile(ms, 99):.3f} ms | {whole:.3f} ms | {pool:.3f} ms |"
            )
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_loaded_ab_options(parser, users=1000, rounds=3, users_in_ledger=False)
    add_after_seconds_option(parser)
    asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
