"""Server time the quota adds to the hub's pages, at the ledger benchmark's scale.

    .venv/bin/python benchmarks/hub_pages_bench.py                   # 10,000 users, 3M segments
    .venv/bin/python benchmarks/hub_pages_bench.py --users 1000 --segments 300000 --views 500

Loads the ledger exactly as benchmarks/ledger_bench.py does, then, for random users at
datagen's evaluation time, times what ``install_quota_hook`` adds to a page view, rendered
with JupyterHub's own template loader (our directory after JupyterHub's, as
``ledger.hub.pages`` composes it) in an async Jinja environment as the hub renders pages:

- home page: the ``quota_summary`` template variable (called with the user, as
  JupyterHub's ``template_namespace`` calls it), the header and home-page summary macros —
  cached (the cache filled by a first view) and cold (one ledger query);
- options form: the notes of a 6-profile ``profile_list`` (sizing each profile by the
  hook's rule, ``decide_many``, the notes' macro), never cached.

Goals: home page p99 ≤ 5 ms (cached), options form p99 ≤ 20 ms. Writes the ``## Hub pages``
section of benchmarks/RESULTS.md unless ``--no-results``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import sys
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
from ledger.hub.pages import TEMPLATE_DIR, _jupyterhub_templates  # noqa: E402
from ledger.hub.summary import HubQuotaPages  # noqa: E402

HOME_GOAL_P99_MS = 5.0
FORM_GOAL_P99_MS = 20.0
RESULTS = REPO / "benchmarks" / "RESULTS.md"
SECTION = "## Hub pages"
GIB = datagen.GIB

HOME_ADDITION = (
    '{% from "quota_summary.html" import quota_header, quota_home, quota_style %}'
    "{{ quota_style() }}{{ quota_header(quota_summary.view()) }}"
    "{{ quota_home(quota_summary.view()) }}"
)
FORM_ADDITION = (
    '{% from "quota_choices.html" import quota_choices %}'
    "{{ quota_choices(quota_summary.choices(for_user, spawner)) }}"
)
PROFILES = [
    {"display_name": f"{cpu} CPU, {memory} GiB" + (", 1 GPU" if gpu else ""),
     "slug": f"p{i}",
     "kubespawner_override": {"cpu_guarantee": cpu, "mem_guarantee": memory * GIB,
                              "extra_resource_guarantees": {"nvidia.com/gpu": "1"} if gpu else {}}}
    for i, (cpu, memory, gpu) in enumerate(
        [(0.5, 1, 0), (1, 2, 0), (2, 4, 0), (4, 16, 0), (8, 64, 0), (4, 32, 1)]
    )
]  # fmt: skip


def environment():
    """JupyterHub's template environment (``JupyterHub.init_tornado_settings``)."""
    from jinja2 import ChoiceLoader, Environment, FileSystemLoader, PrefixLoader

    base = _jupyterhub_templates()
    loader = ChoiceLoader([
        PrefixLoader({"templates": FileSystemLoader([base])}, "/"),
        FileSystemLoader([str(TEMPLATE_DIR), base]),
    ])  # fmt: skip
    return Environment(loader=loader, autoescape=True, enable_async=True)


def hub_user(name: str, groups: list[str]):
    return SimpleNamespace(name=name, groups=[SimpleNamespace(name=g) for g in groups])


def spawner_of(user):
    return SimpleNamespace(user=user, name="", mem_guarantee=None, mem_limit=None,
                           cpu_guarantee=None, cpu_limit=None, extra_resource_guarantees={},
                           extra_resource_limits={}, profile_list=PROFILES)  # fmt: skip


async def time_views(template, pages: HubQuotaPages, users, groups, *, form: bool):
    seconds, cpu_seconds, sizes = [], [], []
    for name in users:
        user = hub_user(name, groups.get(name, []))
        started, cpu_started = time.perf_counter(), time.thread_time()
        namespace = {"quota_summary": pages(user)}  # JupyterHub calls it with the user
        if form:
            namespace |= {"for_user": user, "spawner": spawner_of(user)}
        html = await template.render_async(**namespace)
        seconds.append(time.perf_counter() - started)
        cpu_seconds.append(time.thread_time() - cpu_started)
        sizes.append(len(html))
    return {**summary_ms(seconds), "cpu": summary_ms(cpu_seconds)}, sizes


async def run(args) -> None:
    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    mach = machine()
    groups = datagen.generate_groups(args.users, seed=args.seed)
    policy_path = REPO / "examples" / "policy.yaml"
    env = environment()
    home, form = env.from_string(HOME_ADDITION), env.from_string(FORM_ADDITION)
    with database(args.db) as (url, _server):
        info = await prepare(url, args, log)
        hook = QuotaHook(db_url=url, policy_path=str(policy_path), clock=lambda: datagen.EVAL_AT)
        pages = HubQuotaPages(hook, cache_seconds=3600)
        try:
            users = random.Random(args.seed).sample(sorted(groups), k=args.views)
            log(f"{len(users)} home page views, cold then cached …")
            await time_views(home, pages, users[:50], groups, form=False)  # warm the pool
            pages.cache.entries.clear()
            cold, _ = await time_views(home, pages, users, groups, form=False)
            cached, sizes = await time_views(home, pages, users, groups, form=False)
            unavailable = sum(1 for e in pages.cache.entries.values() if not e[1]["available"])
            log(f"{len(users)} options forms of {len(PROFILES)} profiles …")
            await time_views(form, pages, users[:50], groups, form=True)
            forms, form_sizes = await time_views(form, pages, users, groups, form=True)
        finally:
            await hook.close()
    assert unavailable == 0, f"{unavailable} summaries were 'unavailable'"
    assert min(form_sizes) > 1000, "a form without notes"
    command = command_line("hub_pages_bench.py", args.argv)
    section = render(args, mach, info, command.strip(), cold, cached, forms, sizes)
    print(section)
    if not args.no_results:
        write_section(section, SECTION, RESULTS)
        log(f"wrote the {SECTION} section of benchmarks/RESULTS.md")


def _row(what: str, r: dict, goal: float | None) -> str:
    verdict = "" if goal is None else f"≤ {goal:g} ms: {'met' if r['p99'] <= goal else 'NOT met'}"
    cpu = r["cpu"]
    return (f"| {what} | {r['n']} | {r['p50']:.2f} | {r['p90']:.2f} | {r['p99']:.2f} |"
            f" {r['max']:.2f} | {cpu['p50']:.2f} / {cpu['p99']:.2f} | {verdict} |")  # fmt: skip


def render(args, mach, info, command, cold, cached, forms, sizes) -> str:
    return "\n".join([
        SECTION,
        "",
        "Server time `install_quota_hook(c)` adds to the hub's pages (benchmarks/hub_pages_bench.py):"
        " the `quota_summary` template variable and our macros rendered with JupyterHub's own"
        " template loader in an async Jinja environment, as the hub renders a page, for random"
        " users at datagen's evaluation time; warm engine. Home page = header + home-page"
        f" summary (about {sum(sizes) // len(sizes):,} bytes of HTML); options form = the notes"
        f" of a {len(PROFILES)}-profile `profile_list` (sizing, `decide_many`, the notes' macro;"
        " never cached). CPU = this process's CPU time for the view (the wall time minus"
        " waiting for the database and for the other processes on the shared cores).",
        "",
        f"Machine: {mach['cpu']}, {mach['cores']} cores, {mach['ram']} RAM, {mach['os']},"
        f" Python {mach['python']}; load average {mach['load']} at the start (shared machine).",
        "",
        f"Command: `{command}`",
        "",
        f"Ledger: PostgreSQL {info['server_version']} (embedded), {args.segments:,} segments of"
        f" {args.users:,} users (benchmarks/datagen.py, seed {args.seed}), loaded in"
        f" {info['load_s'] or 0:.0f} s.",
        "",
        "| page view | n | p50 ms | p90 ms | p99 ms | max ms | CPU p50 / p99 ms | goal p99 |",
        "|---|---|---|---|---|---|---|---|",
        _row("home page, summary cached", cached, HOME_GOAL_P99_MS),
        _row("home page, cold cache (one ledger query)", cold, None),
        _row(f"options form, {len(PROFILES)} profiles annotated", forms, FORM_GOAL_P99_MS),
    ])  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_loaded_ledger_options(parser, reuse_help="--db already loaded by ledger_bench")
    parser.add_argument("--views", type=int, default=2_000)
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
