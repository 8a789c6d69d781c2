"""Web service performance at hub scale: the user page and the admins' report page.

    .venv/bin/python benchmarks/web_bench.py                       # 10k users, 3M segments
    .venv/bin/python benchmarks/web_bench.py --users 1000 --segments 300000   # scaled down

What it does (goals: user page ≤ 100 ms, report page ≤ 300 ms):

1. The same database as benchmarks/ledger_bench.py: an embedded PostgreSQL in a temporary
   directory (or ``--db URL``), migrated, loaded with benchmarks/datagen.py's segments by COPY
   in start-time order, ``VACUUM ANALYZE`` (``ledger_bench.prepare``).
2. The real tornado app (``ledger.web.app.make_app``) on a local port in this process, with
   the evaluation time frozen at the data's end (2026-11-01). The hub's identify call is the
   one thing replaced (``get_current_user`` returns a hub-shaped model, groups from datagen),
   as in the handler tests.
3. Server time per request (tornado's ``request_time()``: from the request's arrival to
   the end of the response, template rendering and the SQL included), and the client's round
   trip on loopback, for:
   - ``GET /`` (user page with the SVG charts, sessions, OOM kills, warnings) and
     ``GET /api/v1/me`` for ``--page-users`` random users and the 1 % busiest;
   - ``GET /admin/`` with a cold report (``?refresh=1``: the all-users aggregate is rebuilt)
     and warm (the snapshot the page keeps for 30 s), other pages, sorts, a group filter, and
     the CSV export of all users.
4. Prints a table and rewrites the ``## Web service`` section of benchmarks/RESULTS.md.
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

import httpx  # noqa: E402
from sqlalchemy import text  # noqa: E402
from tornado.httpserver import HTTPServer  # noqa: E402
from tornado.netutil import bind_sockets  # noqa: E402

from benchmarks import datagen  # noqa: E402
from benchmarks.common import add_loaded_ledger_options, command_line, machine, write_section  # noqa: E402
from benchmarks.ledger_bench import database, prepare, summary_ms  # noqa: E402
from ledger.core.policy_yaml import parse_policy  # noqa: E402
from ledger.store import db  # noqa: E402
from ledger.web.app import make_app  # noqa: E402
from ledger.web.auth import log_request  # noqa: E402
from ledger.web.config import WebConfig  # noqa: E402

RESULTS = REPO / "benchmarks" / "RESULTS.md"
SECTION = "## Web service"
GOALS_MS = {"user page": 100.0, "report page": 300.0}
PREFIX = "/services/quota/"

GROUPS: dict[str, list[str]] = {}
SERVER_TIMES: dict[str, list[float]] = {}


class BenchUser:
    """Identify the request from ``X-Bench-User`` (the hub's answer, as in the tests)."""

    def get_current_user(self):
        name = self.request.headers.get("X-Bench-User")
        if not name:
            return None
        scopes = ["custom:quota:admin"] if name == "bench-admin" else []
        return {"kind": "user", "name": name, "groups": GROUPS.get(name, []), "scopes": scopes}


def record(handler) -> None:
    log_request(handler)
    label = handler.request.headers.get("X-Bench-Label")
    if label:
        SERVER_TIMES.setdefault(label, []).append(handler.request.request_time())


SIZES: dict[str, int] = {}


async def timed(client: httpx.AsyncClient, label: str, path: str, user: str, rt: dict) -> int:
    started = time.perf_counter()
    r = await client.get(path, headers={"X-Bench-User": user, "X-Bench-Label": label})
    rt.setdefault(label, []).append(time.perf_counter() - started)
    if r.status_code != 200:
        raise SystemExit(f"{label}: {path} as {user} → {r.status_code}")
    SIZES[label] = max(SIZES.get(label, 0), len(r.content))
    return len(r.content)


async def run_requests(url: str, users: list[str], busy: list[str], reps: int) -> tuple[dict, dict]:
    round_trips: dict[str, list[float]] = {}
    sizes: dict[str, int] = {}
    async with httpx.AsyncClient(base_url=url, timeout=120) as c:
        for user in users[:20]:  # warm up: connection pool, template compilation
            await timed(c, "warm-up", "", user, round_trips)
        for user in users:
            sizes["user page"] = await timed(c, "user page", "", user, round_trips)
            await timed(c, "api/v1/me", "api/v1/me", user, round_trips)
        for user in busy:
            sizes["user page, 1 % busiest"] = await timed(
                c, "user page, 1 % busiest", "", user, round_trips
            )
        admin = "bench-admin"
        for _ in range(reps):
            await timed(c, "report page, cold (?refresh=1)", "admin/?refresh=1", admin, round_trips)
        for i in range(reps * 4):
            sizes["report page"] = await timed(c, "report page", "admin/", admin, round_trips)
            await timed(
                c,
                "report page 100, by user",
                f"admin/?sort=user&order=asc&page={100 + i}",
                admin,
                round_trips,
            )
            await timed(
                c,
                "report page, group dev, by memory",
                "admin/?group=dev&sort=memory",
                admin,
                round_trips,
            )
            await timed(c, "api/v1/report", "api/v1/report?per_page=50&page=3", admin, round_trips)
        for _ in range(reps):
            sizes["CSV export, all users"] = await timed(
                c, "CSV export, all users", "admin/report.csv", admin, round_trips
            )
    round_trips.pop("warm-up", None)
    SERVER_TIMES.pop("warm-up", None)
    return round_trips, SIZES


def render(args, mach, info, rows, window_segments, users_with_usage) -> str:
    lines = [
        SECTION,
        "",
        f"Command: `{args.command}`",
        "",
        f"Machine: {mach.get('cpu', '?')}, {mach.get('cores', '?')} cores, "
        f"{mach.get('ram', '?')} RAM, {mach.get('os', '?')}, Python {mach.get('python', '?')}; "
        f"PostgreSQL {info.get('server_version')} (embedded unless --db).",
        "",
        f"Data: {args.users:,} users, {args.segments:,} segments over 90 days (benchmarks/datagen.py, "
        f"seed {args.seed}); {window_segments:,} segments and {users_with_usage:,} users with usage "
        "in the 30-day window at 2026-11-01. In process: the real tornado app on a loopback port, "
        "the hub's identify step replaced (as in the handler tests).",
        "",
        "| request | n | server p50 ms | server p90 ms | server p99 ms | round trip p50 ms | response | goal |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, server, client, size in rows:
        goal = ""
        for key, goal_ms in GOALS_MS.items():
            if label.startswith(key) and "cold" not in label:
                goal = f"≤ {goal_ms:.0f} ms p90: {'met' if server['p90'] <= goal_ms else 'NOT met'}"
        lines.append(
            f"| {label} | {server['n']} | {server['p50']:.1f} | {server['p90']:.1f} | "
            f"{server['p99']:.1f} | {client['p50']:.1f} | {size / 1024:.0f} KiB | {goal} |"
        )
    lines += [
        "",
        "- *report page, cold* rebuilds the all-users aggregate (`ledger.store.report.build_report`, "
        "the `quota_usage` SQL function over every segment in the window); the page keeps that "
        "snapshot for 30 s (`--report-cache-seconds`) and every page, sort, filter and the CSV "
        "are cut from it in memory (*report page* rows). It is served stale-while-revalidate "
        "(an older snapshot answers at once while a new one builds in the background) and "
        "built once at start-up, so an admin waits for the cold build only when pressing "
        "Refresh. The page states the snapshot's age. The cold build is "
        "`ledger.store.report.build_report` itself (see the Ledger section).",
        "- The user page runs one indexed query for the user's segments (as `decide()`), the "
        "typical-server decision on the same rows, three small indexed reads (sessions, OOM "
        "kills, warnings) and draws the exact SVG curve.",
    ]
    return "\n".join(lines) + "\n"


async def run(args) -> None:
    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    mach = machine()
    policy = parse_policy((REPO / "examples" / "policy.yaml").read_text(), "examples/policy.yaml")
    GROUPS.update(datagen.generate_groups(args.users, seed=args.seed))
    with database(args.db) as (url, _server):
        info = await prepare(url, args, log)
        engine = db.create_engine(url)
        try:
            async with engine.connect() as conn:
                counts = dict(
                    (
                        await conn.execute(
                            text(
                                "SELECT username, count(*) FROM segments WHERE "
                                "COALESCE(ended_at, 'infinity') > :since AND started_at < :at "
                                "GROUP BY username"
                            ),
                            {
                                "since": datagen.EVAL_AT.replace(month=10, day=2),
                                "at": datagen.EVAL_AT,
                            },
                        )
                    ).all()
                )
            config = WebConfig(engine=engine, policy=lambda: policy, frozen_at=datagen.EVAL_AT)
            app = make_app(config, prefix=PREFIX, handler_mixin=BenchUser)
            app.settings["log_function"] = record
            sockets = bind_sockets(0, "127.0.0.1")
            server = HTTPServer(app)
            server.add_sockets(sockets)
            url_base = f"http://127.0.0.1:{sockets[0].getsockname()[1]}{PREFIX}"
            rng = random.Random(args.seed)
            active = sorted(counts)
            users = rng.sample(active, min(args.page_users, len(active)))
            busy = sorted(active, key=counts.get)[-max(1, len(active) // 100) :][-args.page_users :]
            log(f"timing pages for {len(users)} users, {len(busy)} busiest, report × {args.reps} …")
            round_trips, sizes = await run_requests(url_base, users, busy, args.reps)
            server.stop()
            await server.close_all_connections()
        finally:
            await engine.dispose()
    rows = []
    for label, client_times in round_trips.items():
        size = sizes.get(label, 0)
        rows.append((label, summary_ms(SERVER_TIMES[label]), summary_ms(client_times), size))
    section = render(args, mach, info, rows, sum(counts.values()), len(counts))
    print(section)
    if not args.no_results:
        write_section(section, SECTION, RESULTS)
        log(f"wrote the {SECTION} section of {RESULTS.relative_to(REPO)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_loaded_ledger_options(parser, reuse_help="--db already loaded by a benchmark")
    parser.add_argument("--page-users", type=int, default=200, help="users whose page is timed")
    parser.add_argument("--reps", type=int, default=5, help="cold report builds (warm: 4×)")
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    args.command = command_line("web_bench.py", argv)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
