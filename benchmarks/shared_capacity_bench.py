"""Shared capacity at ledger-benchmark scale: decide() with group pools and hub caps vs
without, and lease throughput (concurrent spawn checks per second).

    .venv/bin/python benchmarks/shared_capacity_bench.py --users 10000 --segments 300000

1. The ledger benchmark's data (benchmarks/ledger_bench.py ``prepare``: datagen users and
   segments, rollups rebuilt, VACUUM ANALYZE) plus each user's group in ``user_groups`` (what
   the hub hook keeps), in an embedded PostgreSQL (or ``--db``).
2. ``decide`` for ``--decide-users`` random users with examples/policy.yaml, then with the
   same policy plus a pool on every group (a memory budget and a GPU/servers cap) and hub
   caps — interleaved per user, so machine noise falls on both alike; and with every pool's
   memory budget spent (1 GiB-hour), so each decide is a pool refusal (the pool's retry time
   is searched, ledger/store/pool_history.py, only for pools of at most
   ``shared_reads.POOL_RETRY_MAX_MEMBERS``: at 10,000 users every pool here is bigger).
3. ``leases.take``: ``--concurrency`` checks at once, each on its own connection, under a
   hub GPU cap, ``--rounds`` times: checks per second, and that exactly the free GPUs were
   leased each round.
Writes the ``## Shared capacity`` section of benchmarks/RESULTS.md unless ``--no-results``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from sqlalchemy import text  # noqa: E402

from benchmarks import datagen  # noqa: E402
from benchmarks.common import (  # noqa: E402
    add_after_seconds_option,
    add_loaded_ledger_options,
    machine,
    write_section,
)
from benchmarks.ledger_bench import database, prepare, summary_ms  # noqa: E402
from benchmarks.open_scan_reference import (  # noqa: E402
    POOL_USED_SCAN_SQL,
    SCOPED_SCAN_SQL,
    normal,
)
from benchmarks.pool_sum_reference import MEMBERS_SUM_SQL  # noqa: E402
from benchmarks.shared_statement_reference import with_pool_reads  # noqa: E402
from ledger.core.decision import ServerRequest  # noqa: E402
from ledger.core.policy_yaml import parse_policy  # noqa: E402
from ledger.store import db, leases, shared_reads  # noqa: E402
from ledger.store.decide import decide  # noqa: E402

RESULTS = REPO / "benchmarks" / "RESULTS.md"
SECTION = "## Shared capacity"
REQUEST = ServerRequest({"cpu": 2000, "memory": 4 * datagen.GIB, "gpu": 0})
GPU = {"cpu": 1000, "memory": 4 * datagen.GIB, "gpu": 1}
SHARED = """
hub:
  running: {gpu: 10000, memory: 100Ti, servers: 100000}
"""


# A pool budget no group's members reach: the generated data's busiest pool uses ~2.3 M
# GiB-hours in 30 days, so at 1 M (before 2026-12-02) every "with pools" decide was a refusal
# of a spent pool and measured what the spent row measures.
POOL_MEMORY = "1000000000 GiB-hours"


def shared_policy(base: str, pool_memory: str = POOL_MEMORY) -> str:
    """The policy with a pool on every group (its inline entry gets a ``pool:`` key)."""
    pool = f", pool: {{memory: {pool_memory}, running: {{gpu: 1000, servers: 100000}}}}}}"
    out, in_groups = [], False
    for line in base.splitlines():
        if not line.startswith(" "):
            in_groups = line.startswith("groups:")
        elif in_groups and line.rstrip().endswith("}"):
            line = line.rstrip()[:-1] + pool
        out.append(line)
    return "\n".join(out) + "\n" + SHARED


async def store_groups(engine, groups: dict[str, list[str]]) -> None:
    """Each user's group in ``user_groups``, changing only the rows that differ (a user's
    membership change moves their whole history in the pools' rollups, migration 0009; a
    ``--reuse`` run that finds them in place writes nothing)."""
    users = sorted(groups)
    pairs = {"u": users, "g": [groups[u][0] for u in users]}
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "DELETE FROM user_groups ug WHERE NOT EXISTS (SELECT 1 FROM unnest(CAST(:u "
                "AS text[]), CAST(:g AS text[])) AS w(u, g) "
                "WHERE w.u = ug.username AND w.g = ug.group_name)"
            ),
            pairs,
        )
        await conn.execute(
            text(
                "INSERT INTO user_groups (username, group_name, synced_at) "
                "SELECT u, g, now() FROM unnest(CAST(:u AS text[]), CAST(:g AS text[])) "
                "AS w(u, g) ON CONFLICT DO NOTHING"
            ),
            pairs,
        )
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("ANALYZE user_groups"))


async def _decide_then_shared(engine, plain, shared, username, groups, at):
    """decide as before migration 0016's change: the user's history read, then the shared
    capacity read in a round trip of its own, on one connection."""
    async with engine.connect() as conn:
        d = await decide(conn, plain, username, groups, REQUEST, at)
        limits = shared.limits_for(username, groups)
        (d,) = await shared_reads.attach_many(conn, shared, limits, groups, [d])
    return d


async def bench_decide(engine, plain, shared, spent, groups, users, at) -> dict:
    without, with_shared, with_spent, separate = [], [], [], []
    for username in users:
        g = groups.get(username, [])
        t0 = time.perf_counter()
        await decide(engine, plain, username, g, REQUEST, at)
        t1 = time.perf_counter()
        d = await decide(engine, shared, username, g, REQUEST, at)
        t2 = time.perf_counter()
        refused = await decide(engine, spent, username, g, REQUEST, at)
        t3 = time.perf_counter()
        apart = await _decide_then_shared(engine, plain, shared, username, g, at)
        t4 = time.perf_counter()
        assert d.shared is not None and d.shared.allowed, (username, d.reasons)
        assert apart.to_json() == d.to_json(), username
        if g:  # a user in a group meets its spent pool, which says when it frees
            assert any(r.startswith("pool:") for r in refused.reasons), refused.reasons
        without.append(t1 - t0)
        with_shared.append(t2 - t1)
        with_spent.append(t3 - t2)
        separate.append(t4 - t3)
    return {
        "without": summary_ms(without),
        "with": summary_ms(with_shared),
        "spent": summary_ms(with_spent),
        "separate": summary_ms(separate),
    }


async def bench_pool_reads(engine, policy, groups, users, at) -> dict:
    """One pool budget read per user (their group's pool, the policy's window): the
    per-group rollups (now) against summing every member's rollup days (before 0009),
    interleaved; both must give the same exact integrals."""
    window = float(policy.window_seconds)
    now_s, before_s = [], []
    async with engine.connect() as conn:
        raw = await shared_reads._raw(conn)
        for username in users:
            group = groups[username][0]
            t0 = time.perf_counter()
            new = await raw.fetchrow(shared_reads._POOL_USED, group, username, True, at, window)
            t1 = time.perf_counter()
            old = await raw.fetchrow(MEMBERS_SUM_SQL, group, username, True, at, window)
            t2 = time.perf_counter()
            assert tuple(new) == tuple(old), (username, group, new, old)
            now_s.append(t1 - t0)
            before_s.append(t2 - t1)
    return {"now": summary_ms(now_s), "before": summary_ms(before_s)}


async def bench_open_reads(engine, policy, groups, users, at) -> dict:
    """What runs per scope (the hub and the user's capped pool) and the pool budget read,
    from the open totals (now, migration 0011) against the scans of every open segment of the
    hub they replaced (benchmarks/open_scan_reference.py), interleaved per user; both must
    give the same exact figures. Server time from the client's wall time; client CPU apart."""
    window = float(policy.window_seconds)
    out = {k: [] for k in ("scoped_now", "scoped_scan", "pool_now", "pool_scan", "fn", "stmt")}
    async with engine.connect() as conn:
        raw = await shared_reads._raw(conn)
        for username in users:
            g = groups[username]
            capped = [x for x in g if x in policy.pools and policy.pools[x].running]
            t0 = time.perf_counter()
            new, _, _ = await shared_reads.open_scoped(raw, at, username, "", True, capped, g)
            t1 = time.perf_counter()
            old = await raw.fetch(SCOPED_SCAN_SQL, at, username, "", True, capped, g, False)
            t2 = time.perf_counter()
            assert normal(new) == normal(old), username
            args = (g[0], username, True, at, window)
            t3 = time.perf_counter()
            pool_new = await raw.fetchrow(shared_reads._POOL_USED, *args)
            t4 = time.perf_counter()
            pool_old = await raw.fetchrow(POOL_USED_SCAN_SQL, *args)
            t5 = time.perf_counter()
            assert tuple(pool_new) == tuple(pool_old), (username, pool_new, pool_old)
            # the whole shared read: quota_shared_open (migration 0016) against the statement
            # sent before it (benchmarks/shared_statement_reference.py), same rows
            read = shared_reads.UsageRead.of(policy, username, g, "", at)
            args = read.arguments()
            flat = [x for r in read.reads for x in (r[0], r[1], float(r[2]))]
            t6 = time.perf_counter()
            fn_rows = await raw.fetch(shared_reads._OPEN_SCOPED, *args)
            t7 = time.perf_counter()
            stmt_rows = await raw.fetch(with_pool_reads(len(read.reads)), *args[:8], *flat)
            t8 = time.perf_counter()
            assert _rows(fn_rows) == _rows(stmt_rows), username
            out["fn"].append(t7 - t6)
            out["stmt"].append(t8 - t7)
            out["scoped_now"].append(t1 - t0)
            out["scoped_scan"].append(t2 - t1)
            out["pool_now"].append(t4 - t3)
            out["pool_scan"].append(t5 - t4)
    return {k: summary_ms(v) for k, v in out.items()}


def _rows(records) -> list[tuple]:
    return sorted((k, s, r, int(Decimal(a))) for k, s, r, a in records)


async def bench_leases(url, concurrency: int, rounds: int, free: int) -> dict:
    at = datagen.EVAL_AT
    engine = db.create_engine(url)
    async with engine.connect() as conn:  # GPUs the generated data runs at ``at``
        busy = await conn.scalar(
            text("SELECT COALESCE(sum(gpu_count), 0) FROM segments "
                 "WHERE COALESCE(ended_at, 'infinity') > :at AND started_at <= :at"),
            {"at": at},
        )  # fmt: skip
    await engine.dispose()
    policy = parse_policy(f"hub: {{running: {{gpu: {int(busy) + free}}}}}")
    limits = policy.limits_for("x", [])
    engines = [db.create_engine(url, pool_size=1) for _ in range(concurrency)]
    seconds, exact = [], 0
    try:
        for e in engines:
            async with e.connect():
                pass
        for r in range(rounds):
            t0 = time.perf_counter()
            results = await asyncio.gather(
                *(leases.take(e, policy, limits, f"lease-{r}-{i}", [], GPU, "", at, 300)
                  for i, e in enumerate(engines))
            )  # fmt: skip
            seconds.append(time.perf_counter() - t0)
            exact += sum(x.granted for x in results) == free
            async with engines[0].begin() as conn:
                await conn.execute(text("DELETE FROM leases"))
    finally:
        await asyncio.gather(*(e.dispose() for e in engines))
    # the rounds leave their leases dead in one narrow expiry range, which the next run's
    # decides (live-lease checks) would wade through until autovacuum came by
    engine = db.create_engine(url)
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("VACUUM leases"))
    await engine.dispose()
    total = sum(seconds)
    return {"rounds": rounds, "checks_per_s": concurrency * rounds / total, "exact": exact,
            "round": summary_ms(seconds)}  # fmt: skip


def render(args, mach, info, dec, lease) -> str:
    w, s, sp, pr = dec["without"], dec["with"], dec["spent"], dec["pool_reads"]
    o = dec["open_reads"]
    delta = s["p99"] - w["p99"]
    return f"""{SECTION}

`decide` with group pools and hub caps vs without, and lease throughput. Reproduce:

```
.venv/bin/python benchmarks/shared_capacity_bench.py --users {args.users} --segments {args.segments} --decide-users {args.decide_users} --after-seconds {args.after_seconds:g}
```

Every decide and read at {datagen.EVAL_AT + timedelta(seconds=args.after_seconds):%Y-%m-%d %H:%M:%S.%f} UTC
(`--after-seconds` past the generated ledger's present).

(or `--db URL --reuse` on a database this script or benchmarks/ledger_bench.py loaded, after
`quota-ledger migrate --db URL`).

- Machine: {mach["cpu"]}, {mach["cores"]} cores (shared), {mach["ram"]} RAM, {mach["os"]}; Python {mach["python"]}. Load average when the run started: {mach["load"]} (other sessions share these 2 cores; latencies include their noise).
- Data: benchmarks/datagen.py seed {args.seed}, {args.users:,} users in examples/policy.yaml's four groups (each user's group in `user_groups`), {args.segments:,} segments over 90 days (load {info.get("load_s") or 0:.0f} s, rollup rebuild {info.get("rebuild_s") or 0:.0f} s). PostgreSQL {info.get("server_version")}.
- Policies: examples/policy.yaml; and the same with `pool: {{memory: {POOL_MEMORY}, running: {{gpu: 1000, servers: 100000}}}}` on every group plus `hub: {{running: {{gpu, memory, servers}}}}` — every decide then sums its group's pool (thousands of members' rollup days) and counts the hub's running servers and leases. Request 2 CPU / 4 GiB; the two decides run back to back per user.

| measurement | result | goal | |
|---|---|---|---|
| `decide` without pools/hub caps p50 / p99, {w["n"]} users | {w["p50"]:.2f} / {w["p99"]:.2f} ms | | |
| `decide` with pools and hub caps p50 / p99 | {s["p50"]:.2f} / {s["p99"]:.2f} ms | p99 within 1 ms of without | {"met" if delta <= 1 else "**missed**"} (+{delta:.2f} ms) |
| … the shared read in a round trip of its own after the history's (before migration 0016's change), same decisions | {dec["separate"]["p50"]:.2f} / {dec["separate"]["p99"]:.2f} ms | | |
| the shared read alone: `quota_shared_open` (migration 0016) p50 / p99 | {o["fn"]["p50"]:.2f} / {o["fn"]["p99"]:.2f} ms | | |
| the same, the statement sent before 0016 (benchmarks/shared_statement_reference.py), interleaved, same rows | {o["stmt"]["p50"]:.2f} / {o["stmt"]["p99"]:.2f} ms | | |
| `decide` refused by a spent pool p50 / p99 (its retry time is searched only for a pool of ≤ POOL_RETRY_MAX_MEMBERS; these have thousands) | {sp["p50"]:.2f} / {sp["p99"]:.2f} ms | | |
| one pool budget read (the user's group, 30 days): `pool_rollups` p50 / p99 | {pr["now"]["p50"]:.2f} / {pr["now"]["p99"]:.2f} ms | | |
| the same read summing every member's rollup days (before migration 0009), interleaved, same exact result, first {pr["before"]["n"]} users | {pr["before"]["p50"]:.2f} / {pr["before"]["p99"]:.2f} ms | | |
| what runs per scope (hub + the user's pool), open totals (migration 0011) p50 / p99, {o["scoped_now"]["n"]} users | {o["scoped_now"]["p50"]:.2f} / {o["scoped_now"]["p99"]:.2f} ms | | |
| the same, scanning every open segment of the hub (before 0011), interleaved, same figures | {o["scoped_scan"]["p50"]:.2f} / {o["scoped_scan"]["p99"]:.2f} ms | | |
| one pool budget read, open part from the open totals p50 / p99 | {o["pool_now"]["p50"]:.2f} / {o["pool_now"]["p99"]:.2f} ms | | |
| the same, open part scanned (before 0011), interleaved, same exact result | {o["pool_scan"]["p50"]:.2f} / {o["pool_scan"]["p99"]:.2f} ms | | |
| lease checks, {args.concurrency} at once on separate connections, {lease["rounds"]} rounds | {lease["checks_per_s"]:.0f} checks/s (round p50 {lease["round"]["p50"]:.0f} ms) | | |
| rounds that leased exactly the {args.free} free GPUs | {lease["exact"]} of {lease["rounds"]} | all | {"met" if lease["exact"] == lease["rounds"] else "**missed**"} |

Where the time goes: a pool budget is read from the per-group rollups (`pool_rollups`,
migration 0009: ≤ 31 day rows, ≤ 164 hour and minute rows and a minute of raw starts and
ends per window, whatever the pool's size; ledger/store/shared_reads.py `_POOL_USED`) plus
its members' open segments from the open totals (migration 0011: at·Σrate − Σrate·start,
less the open segments that start after `at` or before the window); before 0009 it summed
every member's rollup days (thousands of members × 30 days: the "before" row,
benchmarks/pool_sum_reference.py). The hub and pool caps read what runs from the same
per-scope totals (`_OPEN_SCOPED`), corrected server by server for the few whose segments
differ between "open now" and "running at `at`", the requesting user's and the leased
ones; before 0011 both scanned every open segment of the hub per decide (the "scan" rows,
benchmarks/open_scan_reference.py), which grew with the servers running on the hub.
Lease checks serialise on the bottleneck's advisory lock: throughput is one short
transaction (lock, prune, count, insert) at a time per bottleneck.
"""


async def run(args) -> None:
    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    mach = machine()
    base = (REPO / "examples" / "policy.yaml").read_text()
    plain = parse_policy(base, "examples/policy.yaml")
    shared = parse_policy(shared_policy(base), "shared")
    spent = parse_policy(shared_policy(base, "1 GiB-hours"), "spent")
    assert shared.pools and shared.hub.running
    groups = datagen.generate_groups(args.users, seed=args.seed)
    at = datagen.EVAL_AT + timedelta(seconds=args.after_seconds)
    with database(args.db) as (url, _server):
        info = await prepare(url, args, log)
        engine = db.create_engine(url)
        try:
            await store_groups(engine, groups)
            sample = random.Random(args.seed).sample(sorted(groups), args.decide_users)
            log("decide, warm-up …")
            await bench_decide(engine, plain, shared, spent, groups, sample[:50], at)
            log(f"decide for {len(sample)} users, with and without …")
            dec = await bench_decide(engine, plain, shared, spent, groups, sample, at)
            log("pool budget reads, per-group rollups vs members' sum …")
            dec["pool_reads"] = await bench_pool_reads(
                engine, shared, groups, sample[: args.compare_users], at
            )
            log("open totals vs the scans, interleaved …")
            dec["open_reads"] = await bench_open_reads(engine, shared, groups, sample, at)
        finally:
            await engine.dispose()
        log("lease throughput …")
        lease = await bench_leases(url, args.concurrency, args.rounds, args.free)
    section = render(args, mach, info, dec, lease)
    print(section)
    if not args.no_results:
        write_section(section, SECTION, RESULTS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_loaded_ledger_options(parser)
    parser.add_argument("--decide-users", type=int, default=500)
    parser.add_argument(
        "--compare-users", type=int, default=50,
        help="users whose pool read is also timed the way it was before migration 0009",
    )  # fmt: skip
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--free", type=int, default=2)
    add_after_seconds_option(parser)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
