"""``quota-ledger rollups rebuild|verify``: the per-day usage rollups, for operators.

Triggers keep the rollups exact with every write to ``segments``; these commands are for
after a restore, a bulk edit with triggers disabled, or to prove they still agree.
"""

from __future__ import annotations

from ledger.cli.common import CommandError, add_format, engine_of, print_json
from ledger.core.times import TimeError, parse_at
from ledger.store import rollups


def add_parser(subparsers, common) -> list[str]:
    p = subparsers.add_parser(
        "rollups",
        parents=[common],
        help="rebuild or verify the per-day usage rollups (users' and group pools') from the raw segments",
        description="rebuild: recompute the days from --since (default: all raw history; "
        "writers wait meanwhile) and the multi-day blocks holding them. verify: compare stored "
        "days with the raw segments and the blocks with their days; exit status 1 if any differ.",
    )
    p.add_argument("action", choices=["rebuild", "verify"])
    p.add_argument(
        "--since",
        metavar="TIME",
        help="first day to rebuild or verify (ISO 8601 with a time zone, e.g. 2026-11-01T00:00Z)",
    )
    p.add_argument(
        "--limit", type=int, default=100, help="verify: show at most this many differing days"
    )
    add_format(p, ["table", "json"])
    p.set_defaults(run=run)
    return ["rollups"]


async def run(args) -> int:
    since = None
    if args.since:
        try:
            since = parse_at(args.since)
        except TimeError as exc:
            raise CommandError(f"--since: {exc}") from None
    async with engine_of(args) as engine:
        if args.action == "rebuild":
            first_day, written, pool_written = await rollups.rebuild(engine, since)
            if args.format == "json":
                print_json(
                    {"rebuilt_from": first_day.isoformat(), "rows": written,
                     "pool_rows": pool_written}
                )  # fmt: skip
            else:
                print(
                    f"rebuilt {written} user-days and {pool_written} pool buckets from "
                    f"{first_day:%Y-%m-%d} (UTC) on"
                )
            return 0
        mismatches = await rollups.verify(engine, since, limit=args.limit)
    if args.format == "json":
        print_json({"ok": not mismatches, "mismatches": [m.to_json() for m in mismatches]})
    elif not mismatches:
        print("rollups agree with the raw segments")
    else:
        for m in mismatches:
            print(m.describe())
        print(
            f"{len(mismatches)} user-day(s), user block(s), pool bucket(s) or open total(s) "
            "differ; `quota-ledger rollups rebuild --since DAY` recomputes them (open totals: "
            "all)"
        )
    return 1 if mismatches else 0
