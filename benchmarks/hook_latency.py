"""Added latency of the JupyterHub pre-spawn quota hook, at the ledger benchmark's scale.

    .venv/bin/python benchmarks/hook_latency.py                      # 10,000 users, 3M segments
    .venv/bin/python benchmarks/hook_latency.py --users 1000 --segments 300000 --spawns 500

Loads the ledger exactly as benchmarks/ledger_bench.py does (its embedded PostgreSQL,
benchmarks/datagen.py data, VACUUM ANALYZE), then calls the installed hook — what
``install_quota_hook(c)`` puts in ``c.Spawner.pre_spawn_hook`` — in a loop on a spawner-like
object for random users with their generated groups and a 2 CPU / 4 GiB request, at
datagen's evaluation time. The time is the whole hook: policy check, reading the traits,
the one-query decision, the progress line or the denial exception. The decision-log write
runs in the background off the spawn's path; it is drained between spawns (outside the
timing) so spawns do not queue behind each other's writes. Goal: p99 ≤ 10 ms. Writes the
``## Hub hook`` section of benchmarks/RESULTS.md unless ``--no-results``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import datagen  # noqa: E402
from benchmarks.common import add_loaded_ledger_options, command_line, machine, write_section  # noqa: E402
from benchmarks.ledger_bench import database, prepare, summary_ms  # noqa: E402
from ledger.hub import QuotaHook  # noqa: E402

GOAL_P99_MS = 10.0
RESULTS = REPO / "benchmarks" / "RESULTS.md"
SECTION = "## Hub hook"


def fake_spawner(username: str, groups: list[str]):
    async def progress():
        yield {"progress": 50, "message": "Spawning server..."}

    return SimpleNamespace(
        user=SimpleNamespace(name=username, groups=[SimpleNamespace(name=g) for g in groups]),
        name="",
        mem_guarantee=4 * datagen.GIB,
        mem_limit=None,
        cpu_guarantee=2.0,
        cpu_limit=None,
        extra_resource_guarantees={},
        extra_resource_limits={},
        progress=progress,
        log=logging.getLogger("bench.spawner"),
    )


async def bench(hook: QuotaHook, users: list[str], groups: dict[str, list[str]]):
    seconds, outcomes = [], {"allowed": 0, "denied": 0}
    for user in users:
        spawner = fake_spawner(user, groups.get(user, []))
        started = time.perf_counter()
        try:
            await hook(spawner)
            outcome = "allowed"
        except Exception as exc:  # noqa: BLE001 - a denial is a SpawnException
            if getattr(exc, "reason", None) != "quota":
                raise
            outcome = "denied"
        seconds.append(time.perf_counter() - started)
        outcomes[outcome] += 1
        await hook.drain()
    return summary_ms(seconds), outcomes


async def bench_decide_only(hook: QuotaHook, users: list[str], groups: dict[str, list[str]]):
    """The same users through ``ledger.store.decide.decide`` alone: what the ledger costs."""
    from ledger.hub.request import spawner_request
    from ledger.store.decide import decide

    policy = hook.watcher.current()
    seconds = []
    for user in users:
        request = spawner_request(fake_spawner(user, []), policy)
        started = time.perf_counter()
        await decide(hook.engine, policy, user, groups.get(user, []), request, datagen.EVAL_AT)
        seconds.append(time.perf_counter() - started)
    return summary_ms(seconds)


def render(args, mach, info, result, outcomes, command: str, alone: dict) -> str:
    ok = result["p99"] <= GOAL_P99_MS
    return "\n".join([
        SECTION,
        "",
        "Added latency of `install_quota_hook`'s pre-spawn hook per spawn (benchmarks/hook_latency.py):"
        " the whole hook called directly on a spawner-like object (user, groups, 2 CPU / 4 GiB"
        " guarantees), warm engine, decision-log write in the background (drained between"
        " spawns, outside the timing).",
        "",
        f"Machine: {mach['cpu']}, {mach['cores']} cores, {mach['ram']} RAM, {mach['os']},"
        f" Python {mach['python']}; load average {mach['load']} at the start (shared machine).",
        "",
        f"Command: `{command}`",
        "",
        f"Ledger: PostgreSQL {info['server_version']} (embedded), {args.segments:,} segments of"
        f" {args.users:,} users (benchmarks/datagen.py, seed {args.seed}), loaded in"
        f" {info['load_s'] or 0:.0f} s; segments {info['segments_size']}, indexes"
        f" {info['indexes_size']}.",
        "",
        "| spawns | allowed | denied | p50 ms | p90 ms | p99 ms | max ms | goal p99 |",
        "|---|---|---|---|---|---|---|---|",
        f"| {result['n']} | {outcomes['allowed']} | {outcomes['denied']} | {result['p50']:.2f} |"
        f" {result['p90']:.2f} | {result['p99']:.2f} | {result['max']:.2f} |"
        f" ≤ {GOAL_P99_MS:g} ms: {'met' if ok else 'NOT met'} |",
        f"| same users, `decide()` alone | | | {alone['p50']:.2f} | {alone['p90']:.2f} |"
        f" {alone['p99']:.2f} | {alone['max']:.2f} | |",
    ])  # fmt: skip


async def run(args) -> None:
    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    mach = machine()
    groups = datagen.generate_groups(args.users, seed=args.seed)
    policy_path = REPO / "examples" / "policy.yaml"
    with database(args.db) as (url, _server), tempfile.TemporaryDirectory():
        info = await prepare(url, args, log)
        hook = QuotaHook(db_url=url, policy_path=str(policy_path), clock=lambda: datagen.EVAL_AT)
        try:
            users = random.Random(args.seed).choices(sorted(groups), k=args.spawns)
            log(f"warming up, then {len(users)} spawns …")
            await bench(hook, users[: min(100, len(users))], groups)
            result, outcomes = await bench(hook, users, groups)
            alone = await bench_decide_only(hook, users, groups)
        finally:
            await hook.close()
    command = command_line("hook_latency.py", args.argv)
    section = render(args, mach, info, result, outcomes, command.strip(), alone)
    print(section)
    if not args.no_results:
        write_section(section, SECTION, RESULTS)
        log(f"wrote the {SECTION} section of benchmarks/RESULTS.md")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_loaded_ledger_options(parser, reuse_help="--db already loaded by ledger_bench")
    parser.add_argument("--spawns", type=int, default=2_000)
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("bench.spawner").setLevel(logging.WARNING)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
