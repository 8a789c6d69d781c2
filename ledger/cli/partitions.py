"""``quota-ledger partitions list|ensure|drop``: the monthly partitions of ``segments``.

The collector makes partitions ahead and applies its ``retention`` on its own schedule;
these commands are for ledgers without a collector (imports only, a DockerSpawner hub's
recorder), for a cron job, and to see what retention would do (``drop --dry-run``).
"""

from __future__ import annotations

from datetime import timedelta

from ledger.cli.common import (
    CommandError,
    add_at,
    add_format,
    at_of,
    engine_of,
    policy_of,
    print_json,
)
from ledger.core.durations import DurationError, duration_seconds
from ledger.core.times import utcnow
from ledger.store import partitions


def add_parser(subparsers, common) -> list[str]:
    p = subparsers.add_parser(
        "partitions",
        parents=[common],
        help="list, make ahead or drop the monthly partitions of the segments",
        description="list: every partition, its months, size and estimated rows. ensure: make "
        "the partitions from this month to --months-ahead months after it. drop: drop the "
        "partitions wholly older than --keep (never less than the policy's longest window "
        "plus 7 days) whose segments are all closed and rolled up; their days stay in the "
        "rollups for reports.",
    )
    p.add_argument("action", choices=["list", "ensure", "drop"])
    p.add_argument("--months-ahead", type=int, default=partitions.MONTHS_AHEAD, metavar="N")
    p.add_argument(
        "--keep", metavar="DURATION", help="drop: raw history to keep, e.g. 400d (required)"
    )
    p.add_argument("--dry-run", action="store_true", help="drop: say what would go, drop nothing")
    add_at(p)
    add_format(p, ["table", "json"])
    p.set_defaults(run=run)
    return ["partitions"]


def _keep_seconds(args) -> float:
    if not args.keep:
        raise CommandError("partitions drop needs --keep DURATION (e.g. --keep 400d)")
    try:
        return float(duration_seconds(args.keep))
    except DurationError as exc:
        raise CommandError(f"--keep: {exc}") from None


async def run(args) -> int:
    at = at_of(args)
    if args.action == "drop":
        if not args.dry_run and args.at and at > utcnow() + timedelta(minutes=1):
            # the cutoff is --at minus the retention: a future --at would drop months the
            # windows still read, for good (a dry run may ask what that future would drop)
            raise CommandError(
                f"--at {at.isoformat()} is in the future; a drop happens now, so give a past "
                "--at or none (--dry-run shows what a future one would drop)"
            )
        keep = _keep_seconds(args)
        try:
            cutoff = partitions.retention_cutoff(at, keep, policy_of(args).max_window_seconds())
        except partitions.RetentionError as exc:
            raise CommandError(str(exc)) from None
    async with engine_of(args) as engine:
        if args.action == "list":
            rows = await partitions.listing(engine)
            if args.format == "json":
                print_json([
                    {"partition": r.name,
                     "range_start": r.range_start.isoformat() if r.range_start else None,
                     "range_end": r.range_end.isoformat() if r.range_end else None,
                     "estimated_segments": r.segments, "total_bytes": r.total_bytes}
                    for r in rows
                ])  # fmt: skip
            else:
                for r in rows:
                    months = f"{r.range_start:%Y-%m}" if r.range_start else "default"
                    print(f"{r.name:<22} {months:<8} ~{max(r.segments, 0):>12,} segments "
                          f"{r.total_bytes / 2**20:>10.1f} MiB")  # fmt: skip
            return 0
        if args.action == "ensure":
            made = await partitions.ensure(engine, *partitions.months_ahead(at, args.months_ahead))
            if args.format == "json":
                print_json({"created": made})
            else:
                print(f"created {', '.join(made)}" if made else "every partition exists already")
            return 0
        results = await partitions.drop_before(engine, cutoff, dry_run=args.dry_run)
    if args.format == "json":
        print_json({"cutoff": cutoff.isoformat(), "partitions": [r.to_json() for r in results]})
        return 0
    print(f"cutoff {cutoff.isoformat()}{' (dry run)' if args.dry_run else ''}")
    for r in results:
        if r.dropped:
            state = "dropped"
        elif r.reason is None:
            state = "would drop"
        else:
            state = f"kept: {r.reason}"
        print(f"{r.partition:<22} {r.segments:>12,} segments  {state}")
    return 0
