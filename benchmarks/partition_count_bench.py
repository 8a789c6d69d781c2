"""What each month partition of ``segments`` adds to a decide, on one loaded ledger: blocks of
decides with the ledger's partitions alone and with ``--extra`` empty months before them,
alternating.

    .venv/bin/python benchmarks/partition_count_bench.py --db URL [--extra 12] [--users 1000] \
        [--rounds 3]

A hub at the default 400-day retention keeps ~14 months plus the two made ahead and the
default partition (docs/scaling.md "Partitions and retention"); the benchmark ledger holds
90 days, 8 partitions. decide's reads are cached generic plans (migration 0013), and
PostgreSQL locks every partition a generic plan names before pruning them
(https://www.postgresql.org/docs/current/ddl-partitioning.html#DDL-PARTITION-PRUNING), so
the partition count is a per-read cost whatever the rows. The extra months are empty
(old months' rows are pruned by ``started_at``, or meet an index probe that finds nothing),
made by the ledger's ``quota_segment_partition_create`` and dropped after each block, also on failure; a
month that already exists is refused. Timed: decide's wall time (the ledger benchmark's
policy and request, no pools), and the server's time inside ``quota_user_history`` per call
(``pg_stat_user_functions``, ``track_functions = 'pl'`` on the benchmark's connections).
Run it on a benchmark ledger, never on a hub's.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import datagen  # noqa: E402
from benchmarks.common import add_loaded_ab_options, load_average, machine, percentile  # noqa: E402
from benchmarks.ledger_bench import REQUEST  # noqa: E402
from ledger.core.policy_yaml import parse_policy  # noqa: E402
from ledger.store import db  # noqa: E402
from ledger.store.decide import decide  # noqa: E402
from ledger.store.partitions import month_starts, months_ahead  # noqa: E402

WARM_UP_USERS = 50


async def _function_ms(raw) -> tuple[int, float]:
    # this backend's function statistics, flushed first
    # (https://www.postgresql.org/docs/current/monitoring-stats.html#MONITORING-STATS-FUNCS)
    await raw.execute("SELECT pg_stat_force_next_flush()")
    await raw.execute("SELECT 1")
    await asyncio.sleep(0.2)
    row = await raw.fetchrow(
        "SELECT calls, total_time FROM pg_stat_user_functions WHERE funcname = 'quota_user_history'"
    )
    return (row[0], row[1]) if row else (0, 0.0)


async def _block(url: str, policy, groups, users) -> tuple[list[float], float]:
    # one connection, so its function statistics are the block's calls
    engine = db.create_engine(
        url, pool_size=1, connect_args={"server_settings": {"track_functions": "pl"}}
    )
    try:
        for username in users[:WARM_UP_USERS]:
            await decide(engine, policy, username, groups[username], REQUEST, datagen.EVAL_AT)
        async with engine.connect() as conn:
            raw = (await conn.get_raw_connection()).driver_connection
            calls_before, ms_before = await _function_ms(raw)
        wall = []
        for username in users:
            started = time.perf_counter()
            await decide(engine, policy, username, groups[username], REQUEST, datagen.EVAL_AT)
            wall.append((time.perf_counter() - started) * 1000)
        async with engine.connect() as conn:
            raw = (await conn.get_raw_connection()).driver_connection
            calls_after, ms_after = await _function_ms(raw)
    finally:
        await engine.dispose()
    return wall, (ms_after - ms_before) / max(1, calls_after - calls_before)


async def _main(args) -> None:
    import asyncpg

    policy = parse_policy((REPO / "examples" / "policy.yaml").read_text(), "examples/policy.yaml")
    groups = datagen.generate_groups(args.users_in_ledger, seed=args.seed)
    users = random.Random(args.seed).sample(sorted(groups), args.users)
    owner = await asyncpg.connect(args.db.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        first = await owner.fetchval("SELECT min(range_start) FROM quota_segment_partitions")
        _, earliest = months_ahead(first, -args.extra)
        months = month_starts(earliest, first - timedelta(days=1))
        existing = await owner.fetchval(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'segments'::regclass"
        )
        rows, loads = [], [load_average(1)]
        for round_number in range(1, args.rounds + 1):
            for extra in (0, args.extra):
                made = []
                try:
                    for month in months[:extra]:
                        # the ledger's own DDL (ledger/store/partitions.py); None: it exists
                        name = await owner.fetchval(
                            "SELECT quota_segment_partition_create($1)", month
                        )
                        if name is None:
                            raise SystemExit(f"a partition for {month:%Y-%m} exists already")
                        made.append(name)
                    wall, fn_ms = await _block(args.db, policy, groups, users)
                finally:
                    for name in made:
                        await owner.execute(f'DROP TABLE "{name}"')
                loads.append(load_average(1))
                rows.append((round_number, existing + extra, wall, fn_ms))
    finally:
        await owner.close()
    m = machine()
    print(
        f"Machine: {m['cpu']}, {m['cores']} cores; 1-minute load {' → '.join(loads)}; "
        f"{len(users)} users per block, decide at {datagen.EVAL_AT.isoformat()}"
    )
    print(
        "| round | partitions of segments | decide p50 / p90 / p99 | inside quota_user_history per call |"
    )
    print("|---|---|---|---|")
    for round_number, partitions, wall, fn_ms in rows:
        print(
            f"| {round_number} | {partitions} | {percentile(wall, 50):.2f} / "
            f"{percentile(wall, 90):.2f} / {percentile(wall, 99):.2f} ms | {fn_ms:.3f} ms |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_loaded_ab_options(parser, users=1000, rounds=3)
    parser.add_argument("--extra", type=int, default=12, help="empty months added before")
    asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
