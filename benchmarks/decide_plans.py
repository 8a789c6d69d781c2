"""decide's first read on fresh connections: the statement sent as a client-side prepared
statement (before migration 0013, PostgreSQL's ``plan_cache_mode = auto`` picks custom or
generic plans per connection) vs the ``quota_user_history`` function, which always runs its
generic plan (migrations/versions/0013).

    .venv/bin/python benchmarks/decide_plans.py --db URL [--connections 20] [--users 100]

On a ledger benchmarks/ledger_bench.py loaded and ``quota-ledger migrate``d to head. Each
connection pair is new, as a hub's pool makes them; per user the two reads run back to back
(same data, same noise), and both must return the same rows. Prints a RESULTS.md table and
how many of the old statement's connections ended up on custom plans
(``pg_prepared_statements.custom_plans``, PostgreSQL ≥ 14).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import asyncpg  # noqa: E402

from benchmarks import datagen  # noqa: E402
from benchmarks.common import command_line, machine, percentile  # noqa: E402
from ledger.core import times  # noqa: E402
from ledger.core.decision import from_us, to_us  # noqa: E402
from ledger.store import db, rollups  # noqa: E402

WINDOW_SECONDS = 30 * 86_400  # examples/policy.yaml's budgets

# The statement decide sent before migration 0013 (ledger/store/rollups.py at 4ab5a75), kept
# verbatim as the reference this benchmark compares with.
_SEGMENT_COLUMNS = (
    "quota_epoch_us(started_at), quota_epoch_us(ended_at), {name}, cpu_millicores, "
    "memory_bytes, gpu_count, NULLIF(extended, '{{}}'), NULL, NULL, NULL, NULL::jsonb"
)
_BEFORE_PREFIX = f"""
    WITH days AS (
        SELECT bucket_start, cpu_cover, memory_cover, gpu_cover, extended_cover, cpu_used,
               memory_used, gpu_used, extended_used, segments_started, segments_covering
        FROM usage_rollups
        WHERE username = $1 AND bucket_start >= $2 AND bucket_start <= $3
    ), whole AS (
        SELECT COALESCE(SUM(segments_started), 0) + COALESCE(MAX(segments_covering), 0) <= $4
               AS whole
        FROM days
    )
    SELECT 2 AS kind, quota_epoch_us(bucket_start) AS a, NULL::bigint AS b, '' AS servername,
           cpu_cover AS cpu, memory_cover AS memory, gpu_cover AS gpu,
           NULLIF(extended_cover, '{{}}') AS ext,
           cpu_used::text AS cpu_used, memory_used::text AS memory_used,
           gpu_used::text AS gpu_used, NULLIF(extended_used, '{{}}') AS ext_used
    FROM days
    UNION ALL
    SELECT 3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
    WHERE (SELECT whole FROM whole)
    UNION ALL
    SELECT 4, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
    WHERE EXISTS (SELECT 1 FROM quota_grants g WHERE g.username = $1 AND g.ends_at > $3
                  AND (g.revoked_at IS NULL OR g.revoked_at > $3))
       OR EXISTS (SELECT 1 FROM quota_credits c WHERE c.username = $1 AND c.credited_at >= $2)
    UNION ALL
    SELECT 0, {_SEGMENT_COLUMNS.format(name="servername")}
    FROM segments
    WHERE username = $1 AND COALESCE(ended_at, 'infinity'::timestamptz) > $3 AND started_at < $3
    UNION ALL
    SELECT 1, {_SEGMENT_COLUMNS.format(name="NULL")}
    FROM segments
    WHERE username = $1 AND ended_at IS NOT NULL
      AND COALESCE(ended_at, 'infinity'::timestamptz) > $2 AND started_at < $3
      AND (SELECT whole FROM whole)
"""  # noqa: S608 - constants only


def before_sql(days: int) -> str:
    arms = [
        f"(started_at >= ${i} AND started_at < ${i} + interval '24 hours') OR "
        f"(COALESCE(ended_at, 'infinity'::timestamptz) > ${i} AND "
        f"COALESCE(ended_at, 'infinity'::timestamptz) < ${i} + interval '24 hours')"
        for i in range(5, 5 + days)
    ]
    return f"""{_BEFORE_PREFIX} UNION ALL
    SELECT 1, {_SEGMENT_COLUMNS.format(name="id::text")}
    FROM segments
    WHERE username = $1 AND ended_at IS NOT NULL AND ({" OR ".join(arms)})
      AND NOT (SELECT whole FROM whole)
    """  # noqa: S608 - constants and placeholders only


def _rows(records) -> list[tuple]:
    return sorted((tuple(r) for r in records), key=repr)


async def run(args) -> None:
    params = db.asyncpg_params(args.db)
    at = times.parse_at(args.at) if args.at else datagen.EVAL_AT
    now_us = to_us(at)
    first_day = from_us(rollups._bucket_of(now_us - WINDOW_SECONDS * 1_000_000))
    edges = sorted(
        {rollups._bucket_of(now_us), rollups._bucket_of(now_us - WINDOW_SECONDS * 1_000_000)}
    )
    old_sql = before_sql(len(edges))
    probe = await asyncpg.connect(**params)
    users = [r[0] for r in await probe.fetch("SELECT DISTINCT username FROM usage_rollups")]
    await probe.close()
    rng = random.Random(args.seed)
    before, after, custom_connections, differ = [], [], 0, 0
    started = machine()
    for _ in range(args.connections):
        old, new = await asyncpg.connect(**params), await asyncpg.connect(**params)
        for username in rng.sample(users, args.users):
            t0 = time.perf_counter()
            a = await old.fetch(old_sql, username, first_day, at, rollups.WHOLE_WINDOW_SEGMENTS,
                                *(from_us(z) for z in edges))  # fmt: skip
            t1 = time.perf_counter()
            b = await new.fetch(rollups._HISTORY_SQL, username, first_day, at,
                                rollups.WHOLE_WINDOW_SEGMENTS, [from_us(z) for z in edges])  # fmt: skip
            t2 = time.perf_counter()
            before.append(t1 - t0)
            after.append(t2 - t1)
            differ += _rows(a) != _rows(b)
        plans = await old.fetchrow(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
            "WHERE statement LIKE '%WITH days AS%' ORDER BY custom_plans DESC LIMIT 1"
        )
        custom_connections += bool(plans and plans["custom_plans"] > 5)
        await old.close()
        await new.close()
    ended = machine()["load"]

    def ms(values: list[float], p: float) -> str:
        return f"{percentile(values, p) * 1000:.2f}"

    print(f"Command: `{command_line('decide_plans.py', sys.argv[1:])}`\n")
    print(
        f"Machine: {started['cpu']}, {started['cores']} cores, {started['ram']}, {started['os']}; "
        f"Python {started['python']}; load average {started['load']} at the start, {ended} at the end.\n"
    )
    print(
        "| first read of decide, "
        f"{args.connections} fresh connections × {args.users} users | p50 | p90 | p99 | max |"
    )
    print("|---|---|---|---|---|")
    for label, values in (("prepared statement, `plan_cache_mode = auto` (before 0013)", before),
                          ("`quota_user_history`, always its generic plan (0013)", after)):  # fmt: skip
        print(
            f"| {label} | {ms(values, 50)} ms | {ms(values, 90)} ms | {ms(values, 99)} ms | {max(values) * 1000:.2f} ms |"
        )
    print(
        f"\nConnections whose statement stayed on custom plans after its first five runs: "
        f"{custom_connections} of {args.connections}. Users whose rows differed: {differ}."
    )
    if differ:
        raise SystemExit("the function's rows differ from the statement's")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="a ledger benchmarks/ledger_bench.py loaded")
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--users", type=int, default=100, help="users per connection")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--at", help="evaluation time (default: benchmarks/datagen.py EVAL_AT)")
    asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
