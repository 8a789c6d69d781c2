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
from ledger.core.quantities import QuantityError, format_amount, format_duration, format_hours
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
    p.add_argument("--group", action="append", default=None, metavar="G")
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
    from ledger.store.decide import decide, record

    user = _user(args.user)
    policy = policy_of(args)
    request = request_of(args)
    at = at_of(args)
    async with engine_of(args, allow_embedded=True) as engine:
        groups = await _groups(engine, args)
        decision = await decide(engine, policy, user, groups, request, at)
        if args.record:
            await record(engine, decision, source="cli")
    if args.format == "json":
        print_json(decision.to_json())
    else:
        _print_decision(decision)
    return 0 if decision.allowed else 1


def _print_decision(decision) -> None:
    from rich.table import Table

    out = console()
    verdict = "[bold green]ALLOWED[/]" if decision.allowed else "[bold red]DENIED[/]"
    groups = ", ".join(decision.groups) or "none"
    out.print(f"{verdict}  {decision.username} (groups: {groups}) at {iso(decision.at)}")
    out.print(f"request: {decision.request.describe()}")
    if decision.budgets:
        table = Table("resource", "used", "limit", "left", "window", "running now",
                      "this server could run", "can start again")  # fmt: skip
        for b in decision.budgets.values():
            table.add_row(
                b.resource + (" [red](blocks)[/]" if b.blocks else ""),
                format_hours(b.resource, b.used_hours),
                format_hours(b.resource, b.limit_hours),
                format_hours(b.resource, b.remaining_hours),
                format_duration(b.window_seconds),
                f"{b.burn_per_hour.normalize():f} {resource(b.resource).display_unit}",
                ""
                if b.blocks
                else ("no limit" if b.run_seconds is None else format_duration(b.run_seconds)),
                iso(b.retry_at) or "",
            )
        out.print(table)
    for c in decision.caps.values():

        def shown(v: int, name: str = c.resource) -> str:
            return str(v) if name == "servers" else format_amount(name, v)

        out.print(
            f"running cap {c.resource}: {shown(c.running)} running + {shown(c.requested)} "
            f"requested, cap {shown(c.cap)}" + (" [red](blocks)[/]" if c.blocks else "")
        )
    out.print(decision.message, markup=False)


async def run_usage(args) -> int:
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
    from rich.table import Table

    out = console()
    out.print(f"{user} (groups: {', '.join(status.groups) or 'none'}) at {iso(at)}", markup=False)
    table = Table("resource", "used", "limit", "remaining", "% used", "window", "running now")
    for r in status.resources.values():
        table.add_row(
            r.resource,
            format_hours(r.resource, r.used_hours),
            "unlimited" if r.limit_hours is None else format_hours(r.resource, r.limit_hours),
            "" if r.remaining_hours is None else format_hours(r.resource, r.remaining_hours),
            "" if r.percent_used is None else f"{r.percent_used:.1f}%",
            format_duration(r.window_seconds),
            format_amount(r.resource, r.running),
        )
    out.print(table)
    for server in status.running_servers:
        out.print(f"running: {server['servername'] or '(default server)'}", markup=False)
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
    from ledger.store.report import build_report

    policy = policy_of(args, required=False)
    at = at_of(args)
    groups = load_groups_file(args.groups_file) if args.groups_file else None
    async with engine_of(args, allow_embedded=True) as engine:
        lines = await build_report(engine, policy, at, groups)
    if args.sort == "percent":
        lines.sort(key=lambda line: (-line.max_percent, line.username))
    if args.format == "json":
        print_json([line.to_json() for line in lines])
        return 0
    names = display_order({n for line in lines for n in line.resources}) or ["cpu", "memory", "gpu"]
    if args.format == "csv":
        header = ["username", "groups", "running_servers"]
        for n in names:
            header += [f"{n}_used_{resource(n).hours_unit}", f"{n}_limit", f"{n}_percent_used"]
        rows = []
        for line in lines:
            row = [line.username, " ".join(line.groups), line.running_servers]
            for n in names:
                r = line.resources[n]
                row += [
                    f"{r.used_hours:.6f}",
                    "" if r.limit_hours is None else f"{r.limit_hours}",
                    "" if r.percent_used is None else f"{r.percent_used:.2f}",
                ]
            rows.append(row)
        print_csv(header, rows)
        return 0
    from rich.table import Table

    table = Table("user", "groups", "servers", *[f"{n} ({resource(n).hours_unit})" for n in names],
                  title=f"usage at {iso(at)}")  # fmt: skip
    for line in lines:
        cells = []
        for n in names:
            r = line.resources[n]
            cell = f"{r.used_hours:.1f}"
            if r.limit_hours is not None:
                cell += f" / {r.limit_hours.normalize():f} ({r.percent_used:.0f}%)"
            cells.append(cell)
        table.add_row(
            _plain(line.username), _plain(", ".join(line.groups)), str(line.running_servers), *cells
        )
    out = console()
    out.print(table)
    out.print(f"{len(lines)} users with usage in the window")
    return 0


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
