"""``check``, ``usage``, ``report``, ``decisions``: commands that read the ledger."""

from __future__ import annotations

from pathlib import Path

from ledger.cli.common import (
    CommandError,
    add_at,
    add_format,
    at_of,
    console,
    engine_of,
    policy_of,
    print_csv,
    print_json,
)
from ledger.core.quantities import QuantityError, format_duration
from ledger.core.resources import display_order, resource
from ledger.core.times import iso
from ledger.core.usernames import UsernameError, check_username


def _plain(value) -> object:
    # user-provided text must never be read as rich markup
    from rich.text import Text

    return Text(str(value))


def add_parser(subparsers, common) -> list[str]:
    p = subparsers.add_parser(
        "check",
        parents=[common],
        help="may USER start a server of this size? exit 0 allowed, 1 denied, 2 error",
    )
    p.add_argument("user")
    p.add_argument(
        "--group",
        action="append",
        default=None,
        metavar="G",
        help="a group the user is in (repeat; default: groups the hub last reported)",
    )
    p.add_argument("--cpu", metavar="Q", help="CPU of the requested server, e.g. 2 or 500m")
    p.add_argument("--memory", metavar="Q", help="memory of the requested server, e.g. 4Gi")
    p.add_argument("--gpu", metavar="N", help="GPUs of the requested server")
    p.add_argument("--server", default="", metavar="NAME", help="server name (named servers)")
    p.add_argument("--record", action="store_true", help="write the decision to the decision log")
    add_at(p)
    add_format(p, ["table", "json"])
    p.set_defaults(run=run_check)

    p = subparsers.add_parser(
        "usage", parents=[common], help="USER's usage, limits and running servers"
    )
    p.add_argument("user")
    p.add_argument(
        "--group",
        action="append",
        default=None,
        metavar="G",
        help="a group the user is in (repeat; default: groups the hub last reported)",
    )
    add_at(p)
    add_format(p, ["table", "json"])
    p.set_defaults(run=run_usage)

    p = subparsers.add_parser(
        "report", parents=[common], help="every user with usage in the window, limits, percent used"
    )
    p.add_argument(
        "--groups-file",
        metavar="FILE",
        help="JSON or YAML mapping username -> [groups] (default: groups the hub reported)",
    )
    p.add_argument("--sort", choices=["percent", "user"], default="percent")
    times = p.add_mutually_exclusive_group()
    times.add_argument(
        "--times",
        action="store_true",
        help="also compute run-out and retry times: they read the raw segments of every user "
        "running something limited or at a limit (minutes at 10k users; "
        "benchmarks/RESULTS.md, Report with the usage model)",
    )
    times.add_argument(
        "--no-times", action="store_true", help="leave run-out and retry times null (default)"
    )
    add_at(p)
    add_format(p, ["table", "csv", "json"])
    p.set_defaults(run=run_report)

    p = subparsers.add_parser(
        "decisions", parents=[common], help="the decision log (denials first)"
    )
    p.add_argument("--user", help="only this user")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--all", action="store_true", help="allowed decisions too, not only denials")
    add_format(p, ["table", "json"])
    p.set_defaults(run=run_decisions)
    return ["check", "usage", "report", "decisions"]  # fmt: skip


def _user(value: str) -> str:
    try:
        return check_username(value, what="USER")
    except UsernameError as exc:
        raise CommandError(str(exc)) from None


def request_of(args):
    from ledger.core.decision import ServerRequest

    quantities = {name: getattr(args, name) for name in ("cpu", "memory", "gpu")}
    try:
        return ServerRequest.from_quantities(quantities, args.server, where="--{name}")
    except QuantityError as exc:
        raise CommandError(str(exc)) from None


async def _groups(engine, args) -> list[str]:
    if args.group is not None:
        return args.group
    from ledger.store import queries

    async with engine.connect() as conn:
        return (await queries.groups_by_user(conn)).get(args.user, [])


async def run_check(args) -> int:
    from ledger.store.decide import record
    from ledger.store.status import user_status

    user = _user(args.user)
    policy = policy_of(args)
    request = request_of(args)
    at = at_of(args)
    async with engine_of(args, allow_embedded=True) as engine:
        groups = await _groups(engine, args)
        # the CLI is an admin's tool (it holds the database): it shows who holds shared caps
        status = await user_status(engine, policy, user, groups, at, request, who=True)
        if args.record:
            await record(engine, status.decision, source="cli")
    if args.format == "json":
        print_json(status.check_json(admin=True))
    else:
        _print_decision(status)
    return 0 if status.decision.allowed else 1


def _print_resources(out, status) -> None:
    from rich.table import Column, Table

    from ledger.core import usage_text

    # fold, never cut: a truncated time ("2026-11-…") is worse than a wrapped one
    table = Table(*(Column(title, overflow="fold") for title in usage_text.TABLE_COLUMNS.values()))
    for r in status.resources.values():
        table.add_row(*(_plain(cell) for cell in usage_text.table_row(r, status.at)))
    out.print(table)


def _print_decision(status) -> None:
    from ledger.core import usage_text

    decision = status.decision
    out = console()
    verdict = "[bold green]ALLOWED[/]" if decision.allowed else "[bold red]DENIED[/]"
    out.print(verdict, end="  ")
    out.print(
        f"{decision.username} ({usage_text.membership_text(status.membership, status.resources)}) "
        f"at {iso(decision.at)}",
        markup=False,
    )
    out.print(f"request: {decision.request.describe()}", markup=False)
    _print_resources(out, status)
    for b in decision.budgets.values():
        if b.blocks:
            out.print(f"blocks: {b.resource} ({b.blocks.replace('_', ' ')})", markup=False)
    for c in decision.caps.values():

        def shown(v: int, name: str = c.resource) -> str:
            return str(v) if name == "servers" else usage_text.held_text(name, v)

        out.print(
            f"running cap {c.resource}: {shown(c.running)} running + {shown(c.requested)} "
            f"requested, cap {shown(c.cap)}" + (" [red](blocks)[/]" if c.blocks else "")
        )
    if decision.allowed and decision.run_seconds is not None and decision.request.sized:
        out.print(f"this server could run {format_duration(decision.run_seconds)}")
    if decision.shared is not None:  # group pools and hub caps (docs/accounting.md)
        for c in decision.shared.checks:
            blocks = " (blocks)" if c.blocks else ""
            where = c.level if c.level != "pool" else f"pool {c.scope}"
            held = f"; held by {_holders_text(c)}" if c.holders and c.level != "user" else ""
            out.print(f"{where} {c.resource}: {c.describe()}{blocks}{held}", markup=False)
    out.print(decision.message, markup=False)


async def run_usage(args) -> int:
    from ledger.core import usage_text
    from ledger.store.status import user_status

    user = _user(args.user)
    policy = policy_of(args, required=False)
    at = at_of(args)
    async with engine_of(args, allow_embedded=True) as engine:
        groups = await _groups(engine, args)
        status = await user_status(engine, policy, user, groups, at)
    if args.format == "json":
        print_json(status.to_json())
        return 0
    out = console()
    out.print(
        f"{user} ({usage_text.membership_text(status.membership, status.resources)}) at {iso(at)}",
        markup=False,
    )
    _print_resources(out, status)
    for server in status.running_servers:
        held = ", ".join(usage_text.held_text(n, v) for n, v in server.items() if n != "servername")
        out.print(f"running: {server['servername'] or '(default server)'} ({held})", markup=False)
    if not status.decision.allowed:
        out.print(status.decision.message, markup=False)
    return 0


def load_groups_file(path: str) -> dict[str, list[str]]:
    import json

    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CommandError(f"--groups-file {path}: {exc.strerror}") from None
    try:
        data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise CommandError(f"--groups-file {path}: not valid JSON/YAML: {exc}") from None
    if not isinstance(data, dict):
        raise CommandError(f"--groups-file {path}: expected a mapping username -> [groups]")
    out = {}
    for user, groups in data.items():
        if isinstance(groups, str):
            groups = [groups]
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            raise CommandError(f"--groups-file {path}: {user}: expected a list of group names")
        out[str(user)] = groups
    return out


async def run_report(args) -> int:
    from ledger.core import usage_csv, usage_text
    from ledger.store import shared_reads
    from ledger.store.report import add_times, build_report

    policy = policy_of(args, required=False)
    at = at_of(args)
    groups = load_groups_file(args.groups_file) if args.groups_file else None
    async with engine_of(args, allow_embedded=True) as engine:
        lines = await build_report(engine, policy, at, groups)
        shared = await shared_reads.totals(engine, policy, at, who=True)
        if args.times:
            await add_times(engine, policy, lines)
    if args.sort == "percent":
        lines.sort(key=lambda line: (-line.max_percent, line.username))
    if args.format == "json":
        print_json([line.to_json() for line in lines])
        return 0
    names = display_order({n for line in lines for n in line.resources}) or ["cpu", "memory", "gpu"]
    if args.format == "csv":
        print_csv(
            usage_csv.header(names),
            [
                usage_csv.row(line.username, line.membership, line.running_servers,
                              line.resources, names)
                for line in lines
            ],
        )  # fmt: skip
        return 0
    from rich.table import Table

    table = Table("user", "groups", "servers", *[f"{n} ({resource(n).hours_unit})" for n in names],
                  title=f"usage at {iso(at)}")  # fmt: skip
    for line in lines:
        cells = [usage_text.short_figure(line.resources[n]) for n in names]
        table.add_row(
            _plain(line.username), _plain(", ".join(line.groups)), str(line.running_servers), *cells
        )
    out = console()
    out.print(table)
    out.print(f"{len(lines)} users with usage in the window")
    if shared.checks:  # group pools and hub caps (docs/accounting.md)
        pools = Table("scope", "resource", "limit", "in use", "held by", title="shared capacity")
        for c in shared.checks:
            where = "hub" if c.level == "hub" else f"pool {c.scope}"
            if c.retry_at is not None:
                where += f" (room again {iso(c.retry_at)})"
            pools.add_row(
                _plain(where), c.resource, str(c.show(c.limit)), str(c.show(c.in_use)),
                _plain(_holders_text(c)),
            )  # fmt: skip
        out.print(pools)
    return 0


def _holders_text(check) -> str:
    """``alice 2, bob 1``: who holds a shared cap, most first (admins only)."""
    return ", ".join(f"{user} {amount}" for user, amount in check.ranked_holders())


async def run_decisions(args) -> int:
    from ledger.store.queries import recent_decisions

    async with engine_of(args, allow_embedded=True) as engine, engine.connect() as conn:
        rows = await recent_decisions(
            conn, limit=args.limit, username=args.user or None, include_allowed=args.all
        )
    if args.format == "json":
        print_json(rows)
        return 0
    from rich.table import Table

    table = Table("time", "user", "server", "source", "outcome", "reason", "message")
    for r in rows:
        table.add_row(iso(r["decided_at"]), _plain(r["username"]), _plain(r["servername"]),
                      r["source"], r["outcome"], r["reason"], _plain(r["message"]))  # fmt: skip
    console().print(table)
    return 0
