"""``grant``, ``credit``, ``grants``, ``revoke``: quota as ledger entries (docs/cli.md).

A grant adds resource-hours to one user's limit until a time; a credit takes usage back at a
date (it leaves the rolling window like usage). With ``--group NAME`` either goes to that
group's ``pool:`` budget instead (the members share it); the policy must give that pool a
budget of the resource, or the entry would count for nothing, so it is refused. Neither edits
segments or the policy; both record who and why. The arithmetic is ledger/core/grants.py.
"""

from __future__ import annotations

import getpass
import os

from ledger.cli.common import (
    CommandError,
    add_at,
    add_format,
    at_of,
    console,
    engine_of,
    policy_of,
    print_json,
)
from ledger.core.grant_input import (
    GrantInputError,
    amount_hours,
    check_pool_budgets,
    reason_of,
    time_of,
    until_of,
)
from ledger.core.quantities import format_hours
from ledger.core.times import iso, utcnow
from ledger.core.usernames import UsernameError, check_username

RESOURCE_FLAGS = ("cpu", "memory", "gpu")
EXAMPLES = {"cpu": "10 CPU-hours", "memory": "100 GiB-hours", "gpu": "5 GPU-hours"}


def _amount_flags(p) -> None:
    for name in RESOURCE_FLAGS:
        p.add_argument(f"--{name}", metavar="AMOUNT", help=f"e.g. '{EXAMPLES[name]}'")


def _holder(p, what: str) -> None:
    p.add_argument("user", nargs="?", help="the user (or give --group)")
    p.add_argument(
        "--group", metavar="NAME", help=f"{what} the pool of group NAME (its pool: budget)"
    )


def _by(p) -> None:
    p.add_argument(
        "--by",
        metavar="NAME",
        help="who does this, recorded with the entry (default: your login name)",
    )


def add_parser(subparsers, common) -> list[str]:
    p = subparsers.add_parser(
        "grant",
        parents=[common],
        help="add resource-hours to USER's limit (or a group's pool) until a time (a ledger "
        "entry, with a reason)",
    )
    _holder(p, "add to")
    _amount_flags(p)
    p.add_argument(
        "--until",
        required=True,
        metavar="TIME",
        help="when it stops counting: ISO 8601 with a zone, a date (its UTC midnight), or a "
        "duration from the start such as 30d",
    )
    p.add_argument("--reason", required=True, metavar="TEXT", help="why (recorded)")
    _by(p)
    p.add_argument(
        "--at", metavar="TIME", help="when it starts counting, ISO 8601 with a zone (default: now)"
    )
    add_format(p, ["table", "json"])
    p.set_defaults(run=run_grant)

    p = subparsers.add_parser(
        "credit",
        parents=[common],
        help="credit usage back to USER (or a group's pool), dated: it counts inside the "
        "rolling window like usage",
    )
    _holder(p, "credit")
    _amount_flags(p)
    p.add_argument(
        "--at",
        required=True,
        metavar="TIME",
        help="when it counts (e.g. the outage), ISO 8601 with a zone, or now",
    )
    p.add_argument("--reason", required=True, metavar="TEXT", help="why (recorded)")
    _by(p)
    add_format(p, ["table", "json"])
    p.set_defaults(run=run_credit)

    p = subparsers.add_parser(
        "grants",
        parents=[common],
        help="grants and credits (of USER or a group's pool): active and scheduled",
    )
    p.add_argument("user", nargs="?")
    p.add_argument("--group", metavar="NAME", help="the grants and credits of group NAME's pool")
    p.add_argument("--all", action="store_true", help="also grants that ended or were revoked")
    add_at(p)
    add_format(p, ["table", "json"])
    p.set_defaults(run=run_grants)

    p = subparsers.add_parser(
        "revoke", parents=[common], help="stop a grant from counting (kept, with who and why)"
    )
    p.add_argument("grant_id", metavar="GRANT_ID", help="the id `quota-ledger grants` shows")
    p.add_argument("--reason", required=True, metavar="TEXT", help="why (recorded)")
    _by(p)
    add_at(p)
    add_format(p, ["table", "json"])
    p.set_defaults(run=run_revoke)
    return ["grant", "credit", "grants", "revoke"]


def _user(value: str) -> str:
    try:
        return check_username(value, what="USER")
    except UsernameError as exc:
        raise CommandError(str(exc)) from None


def _holder_of(args) -> tuple[str | None, str | None]:
    """(user, group): exactly one of USER and --group, each checked like a username (hub
    group names are arbitrary text too)."""
    if (args.user is None) == (args.group is None):
        raise CommandError("give either USER or --group NAME (a group's pool), not both or none")
    if args.group is not None:
        try:
            return None, check_username(args.group, what="--group")
        except UsernameError as exc:
            raise CommandError(str(exc)) from None
    return _user(args.user), None


def _owner(entry) -> str:
    """``bob`` or ``the lab pool``, for the table and the printed lines."""
    return entry.username if entry.group_name is None else f"the {entry.group_name} pool"


def _actor(args) -> str:
    if args.by is not None:
        try:
            return check_username(args.by, what="--by")
        except UsernameError as exc:
            raise CommandError(str(exc)) from None
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container's arbitrary uid)
        return os.environ.get("USER") or "cli"


def _amounts(args) -> dict:
    out = {}
    for name in RESOURCE_FLAGS:
        text = getattr(args, name)
        if text is not None:
            out[name] = amount_hours(text, name, (), where=f"--{name}")
    if not out:
        raise GrantInputError(
            "give at least one amount: --memory '100 GiB-hours', --cpu '10 CPU-hours' or "
            "--gpu '5 GPU-hours'"
        )
    return out


def _check_pool(args, group: str | None, amounts: dict) -> None:
    """A pool grant or credit must meet a pool budget the policy gives (``--config`` or
    $QUOTA_LEDGER_CONFIG, the file the hub and the service read), or it would count for
    nothing; refused before anything is written."""
    if group is None:
        return
    from ledger.store.policy_file import CONFIG_ENV, policy_path

    if not policy_path(getattr(args, "config", None)):
        raise CommandError(
            f"--group {group}: no quota policy to check that group {group!r} has a pool "
            f"budget: pass --config FILE or set ${CONFIG_ENV} (the policy the hub uses)"
        )
    try:
        check_pool_budgets(policy_of(args), group, amounts, where="--group")
    except GrantInputError as exc:
        raise CommandError(str(exc)) from None


async def run_grant(args) -> int:
    from ledger.store import grants

    user, group = _holder_of(args)
    by = _actor(args)
    try:
        amounts = _amounts(args)
        starts_at = time_of(args.at, where="--at") if args.at else utcnow()
        until = until_of(args.until, starts_at, where="--until")
        reason = reason_of(args.reason, where="--reason")
    except GrantInputError as exc:
        raise CommandError(str(exc)) from None
    _check_pool(args, group, amounts)
    created_at = utcnow()
    async with engine_of(args, allow_embedded=True) as engine, engine.begin() as conn:
        made = [
            await grants.add_grant(
                conn,
                username=user,
                resource=name,
                amount_hours=hours,
                starts_at=starts_at,
                ends_at=until,
                reason=reason,
                granted_by=by,
                created_at=created_at,
                group_name=group,
            )  # fmt: skip
            for name, hours in amounts.items()
        ]
    if args.format == "json":
        print_json({"grants": [g.to_json(starts_at) for g in made]})
    else:
        for g in made:
            print(
                f"grant {g.id}: +{format_hours(g.resource, g.amount_hours)} for {_owner(g)} "
                f"from {iso(g.starts_at)} until {iso(g.ends_at)} ({g.reason}; by {g.granted_by})"
            )
    return 0


async def run_credit(args) -> int:
    from ledger.store import grants

    user, group = _holder_of(args)
    by = _actor(args)
    try:
        amounts = _amounts(args)
        credited_at = at_of(args)  # ISO 8601 with a zone, or now
        reason = reason_of(args.reason, where="--reason")
    except GrantInputError as exc:
        raise CommandError(str(exc)) from None
    _check_pool(args, group, amounts)
    created_at = utcnow()
    async with engine_of(args, allow_embedded=True) as engine, engine.begin() as conn:
        made = [
            await grants.add_credit(
                conn,
                username=user,
                resource=name,
                amount_hours=hours,
                credited_at=credited_at,
                reason=reason,
                credited_by=by,
                created_at=created_at,
                group_name=group,
            )  # fmt: skip
            for name, hours in amounts.items()
        ]
    if args.format == "json":
        print_json({"credits": [c.to_json() for c in made]})
    else:
        for c in made:
            print(
                f"credit {c.id}: -{format_hours(c.resource, c.amount_hours)} of usage for "
                f"{_owner(c)} at {iso(c.credited_at)} ({c.reason}; by {c.credited_by})"
            )
    return 0


async def run_grants(args) -> int:
    from ledger.store import grants

    if args.user is not None and args.group is not None:
        raise CommandError("give either USER or --group NAME (a group's pool), not both")
    users = None if args.user is None else [_user(args.user)]
    pools = None if args.group is None else [_holder_of(args)[1]]
    at = at_of(args)
    async with engine_of(args, allow_embedded=True) as engine, engine.connect() as conn:
        found = await grants.list_grants(conn, users, since=None if args.all else at, groups=pools)
        credits = await grants.list_credits(conn, users, groups=pools)
    if not args.all:
        found = [g for g in found if g.state(at) in ("active", "scheduled")]
    if args.format == "json":
        print_json(
            {
                "at": iso(at),
                "grants": [g.to_json(at) for g in found],
                "credits": [c.to_json() for c in credits],
            }
        )
        return 0
    from rich.table import Table
    from rich.text import Text

    table = Table(title="grants", title_justify="left")
    for column in ("id", "for", "amount", "from", "until", "state", "reason", "by"):
        table.add_column(column)
    for g in found:
        table.add_row(
            str(g.id), Text(_owner(g)), format_hours(g.resource, g.amount_hours),
            iso(g.starts_at), iso(g.effective_end), g.state(at), Text(g.reason),
            Text(g.granted_by),
        )  # fmt: skip
    out = console()
    out.print(table if found else "no grants" + ("" if args.all else " active or scheduled"))
    if credits:
        table = Table(title="credits", title_justify="left")
        for column in ("id", "for", "amount", "at", "reason", "by"):
            table.add_column(column)
        for c in credits:
            table.add_row(
                str(c.id), Text(_owner(c)), format_hours(c.resource, c.amount_hours),
                iso(c.credited_at), Text(c.reason), Text(c.credited_by),
            )  # fmt: skip
        out.print(table)
    return 0


async def run_revoke(args) -> int:
    from ledger.store import grants

    try:
        grant_id = int(args.grant_id)
        if grant_id <= 0:
            raise ValueError
    except ValueError:
        raise CommandError(
            f"GRANT_ID {args.grant_id!r} is not a grant id; `quota-ledger grants` lists them"
        ) from None
    by = _actor(args)
    try:
        reason = reason_of(args.reason, where="--reason")
    except GrantInputError as exc:
        raise CommandError(str(exc)) from None
    at = at_of(args)
    async with engine_of(args, allow_embedded=True) as engine, engine.begin() as conn:
        try:
            g = await grants.revoke_grant(conn, grant_id, by=by, reason=reason, at=at)
        except grants.GrantError as exc:
            raise CommandError(str(exc)) from None
    if args.format == "json":
        print_json({"grant": g.to_json(at)})
    else:
        print(
            f"grant {g.id} revoked at {iso(g.revoked_at)}: "
            f"{format_hours(g.resource, g.amount_hours)} for {_owner(g)} ({reason}; by {by})"
        )
    return 0
