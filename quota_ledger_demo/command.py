"""``quota-ledger demo``: a month of usage on the embedded PostgreSQL, the admins' report,
and a user's month (a 4 GiB server the idle culler stops, a budget running out, a move
to the power group) walked with real numbers — then, when the collector and hub
parts are installed, a live fake cluster, collector, JupyterHub and quota page.

The demo owns its database (``quota_ledger_demo`` in the embedded server) and resets it on
every run, so running it twice shows the same story.
"""

from __future__ import annotations

import sys
from importlib import resources as importlib_resources
from pathlib import Path

from ledger.cli.common import CommandError, console

DEMO_DATABASE = "quota_ledger_demo"
# ships inside the ledger package (ledger/data/), in a checkout and in an installed wheel alike
POLICY_FILE = Path(str(importlib_resources.files("ledger") / "data" / "example-policy.yaml"))


def add_parser(subparsers, common) -> list[str]:
    p = subparsers.add_parser(
        "demo",
        parents=[common],
        help="the whole system on the embedded PostgreSQL: usage, report, the seed's workflow",
    )
    p.add_argument("--seed", type=int, default=7, help="random seed for the generated month")
    p.add_argument(
        "--live-seconds",
        type=float,
        default=None,
        help="how long the live part runs (default: until Ctrl-C on a terminal, 60 s otherwise; "
        "0 skips it)",
    )
    p.set_defaults(run=run)
    return ["demo"]


async def run(args) -> int:
    from ledger.core.times import utcnow
    from ledger.store import db, embedded
    from ledger.store.policy_file import load_policy

    if args.db:
        raise CommandError("the demo always uses its own embedded database; drop --db")
    out = console()
    out.rule("[bold]quota-ledger demo")
    home = embedded.default_home()
    out.print(f"embedded PostgreSQL in {home} (database {DEMO_DATABASE}, reset on every run)")
    try:
        url = embedded.reset_database(DEMO_DATABASE, home)
    except embedded.EmbeddedNotInstalled as exc:
        raise CommandError(str(exc)) from None
    await db.migrate(url)
    policy = load_policy(args.config or POLICY_FILE)
    engine = db.create_engine(url)
    now = utcnow().replace(second=0, microsecond=0)
    try:
        from quota_ledger_demo.story import import_month, print_report, walk_user_workflow

        await import_month(engine, out, now, args.seed)
        await print_report(engine, out, policy, now)
        await walk_user_workflow(engine, out, policy, now)
        live_seconds = args.live_seconds
        if live_seconds is None:
            live_seconds = float("inf") if sys.stdin.isatty() else 60.0
        if live_seconds > 0:
            try:
                # quota_ledger_demo.live runs Kubernetes code: imported only here, never by ledger
                from quota_ledger_demo.live import run_live
            except ModuleNotFoundError:
                out.print("(live part not installed in this build)")
            else:
                await run_live(engine, url, out, policy, home, live_seconds)
    finally:
        await engine.dispose()
    out.rule("done")
    out.print(
        "Try it yourself (the demo database stays until the next run):\n"
        f"  export QUOTA_LEDGER_DB_URL='{url}'\n"
        f"  quota-ledger report --config {POLICY_FILE}\n"
        f"  quota-ledger check sam --group regular --memory 4Gi --config {POLICY_FILE}",
        markup=False,
    )
    return 0
