"""``migrate``, ``import`` and ``db``: commands that change or manage the database."""

from __future__ import annotations

import sys

from sqlalchemy.exc import IntegrityError

from ledger.cli.common import CommandError, add_format, database_url, engine_of, print_json
from ledger.store import db, embedded

DB_ACTIONS = {
    "start": "start the embedded PostgreSQL (if it is not running) and print its URL",
    "status": "say whether it runs, and its URL (exit 0 running, 1 not running)",
    "url": "print the URL of the configured database, else of the embedded one (started)",
    "stop": "stop the embedded PostgreSQL",
}


def add_parser(subparsers, common) -> list[str]:
    p = subparsers.add_parser(
        "migrate", parents=[common], help="create or upgrade the ledger schema (idempotent)"
    )
    p.add_argument("--revision", default="head", help="target alembic revision (default: head)")
    p.add_argument(
        "--wait",
        type=float,
        default=0,
        metavar="SECONDS",
        help="keep retrying this long while the database is not reachable yet (a fresh install)",
    )
    p.add_argument(
        "--no-roles",
        action="store_true",
        help="do not create the component roles (the migrating role lacks CREATEROLE)",
    )
    p.add_argument(
        "--print-roles-sql",
        action="store_true",
        help="print the SQL that creates and grants the component roles, and exit",
    )
    p.set_defaults(run=run_migrate)

    p = subparsers.add_parser(
        "import",
        parents=[common],
        help="import segments from JSON Lines or CSV (all or nothing, idempotent)",
        description="Columns: username, started_at, ended_at (empty = running), cpu, memory, "
        "gpu, and optionally servername, pod_uid, namespace, pod_name.",
    )
    p.add_argument("file", help="a .jsonl/.csv file, or - for standard input")
    p.add_argument("--input-format", choices=["jsonl", "csv"], help="default: by file extension")
    add_format(p, ["table", "json"])
    p.set_defaults(run=run_import)

    p = subparsers.add_parser(
        "db",
        parents=[common],
        help="the embedded PostgreSQL: start, status, url, stop",
        description="The embedded PostgreSQL in $QUOTA_LEDGER_HOME (pip install "
        "'quota-ledger[embedded]'), for trying quota-ledger on a laptop. "
        + " ".join(f"{name}: {text}." for name, text in DB_ACTIONS.items()),
    )
    p.add_argument("action", choices=list(DB_ACTIONS))
    p.set_defaults(run=run_db)
    return ["migrate", "import", "db"]


async def run_migrate(args) -> int:
    from ledger.store import roles

    if args.print_roles_sql:
        print(roles.ROLES_SQL.strip())
        return 0
    url = database_url(args, allow_embedded=True)
    await _wait_for_database(url, args.wait)
    try:
        await db.migrate(url, args.revision)
    except Exception as exc:  # noqa: BLE001 - alembic wraps driver errors many ways
        raise CommandError(f"migration failed on {db.redact(url)}: {exc}") from exc
    print(f"schema is at {args.revision} ({db.head_revision()}) on {db.redact(url)}")
    if args.no_roles:
        return 0
    try:
        for line in await roles.apply_roles(url, roles.login_urls_from_env()):
            print(line)
    except roles.RoleError as exc:
        raise CommandError(str(exc)) from None
    return 0


async def _wait_for_database(url: str, wait_seconds: float) -> None:
    """Retry connecting until the database answers (a bundled PostgreSQL still starting)."""
    import asyncio
    import time

    from ledger.store.queries import ping

    deadline = time.monotonic() + wait_seconds
    delay_seconds = 0.5
    while True:
        engine = db.create_engine(url)
        try:
            async with engine.connect() as conn:
                await ping(conn)
            return
        except Exception as exc:  # noqa: BLE001 - any failure to connect means "not yet"
            if time.monotonic() + delay_seconds > deadline:
                if wait_seconds:
                    raise CommandError(
                        f"the database at {db.redact(url)} did not answer within "
                        f"{wait_seconds:g} s: {str(exc).splitlines()[0] if str(exc) else exc!r}"
                    ) from None
                return  # no waiting asked for: let migrate report the error
            print(f"waiting for the database at {db.redact(url)} ...", file=sys.stderr)
            await asyncio.sleep(delay_seconds)
            delay_seconds = min(delay_seconds * 2, 5)
        finally:
            await engine.dispose()


async def run_import(args) -> int:
    from ledger.core.import_rows import ImportError_
    from ledger.store.importer import ImportFile, write_file

    source = "<stdin>" if args.file == "-" else args.file
    try:
        # the file is opened and its first chunk validated before the database is reached
        # (or the embedded one started): a bad small file is refused without either
        stream = sys.stdin if args.file == "-" else None
        file = ImportFile(args.file, args.input_format, stream=stream)
    except ImportError_ as exc:
        raise CommandError(str(exc)) from None
    try:
        async with engine_of(args, allow_embedded=True) as engine:
            try:
                result = await write_file(engine, file)
            except ImportError_ as exc:
                raise CommandError(str(exc)) from None
            except IntegrityError as exc:
                raise CommandError(
                    f"{source}: nothing was imported: a row conflicts with the ledger: "
                    f"{str(exc.orig).splitlines()[0]}"
                ) from None
    finally:
        file.close()
    if args.format == "json":
        print_json(
            {
                "source": source,
                "rows": result.rows,
                "inserted": result.inserted,
                "closed": result.closed,
                "unchanged": result.unchanged,
                "differing": result.differing,
                "differing_lines": [
                    {"line": line, "message": message} for line, message in result.differing_lines
                ],
            }
        )
    else:
        differing = f" ({result.differing} of them differently)" if result.differing else ""
        print(
            f"{source}: {result.rows} rows, {result.inserted} new segments, "
            f"{result.closed} open segments closed, {result.unchanged} already recorded"
            f"{differing}"
        )
    if result.differing:
        # the ledger is the record: a file that disagrees with it changes nothing, and
        # saying so is the only way the operator learns the correction did not happen
        for line, message in result.differing_lines:
            print(f"warning: {source}:{line}: {message}", file=sys.stderr)
        more = result.differing - len(result.differing_lines)
        print(f"warning: {source}: {result.differing} row(s) differ from the ledger's segment "
              f"of the same pod_uid and started_at{f' ({more} more not shown)' if more else ''}; "
              "the ledger keeps its own; to change usage, use `quota-ledger credit`",
              file=sys.stderr)  # fmt: skip
    return 0


async def run_db(args) -> int:
    if args.action == "url":
        print(db.redact(database_url(args, allow_embedded=True)))
        return 0
    if args.db:
        raise CommandError(
            f"db {args.action} manages the embedded PostgreSQL only; drop --db "
            "(your own server is started and stopped by its own tools)"
        )
    if args.action == "start":
        try:
            url = embedded.ensure_running()
        except Exception as exc:  # noqa: BLE001 - the embedded server can fail in many ways
            raise CommandError(f"cannot start the embedded PostgreSQL: {exc}") from exc
        print(db.redact(url))  # the same spelling as `db url`
        if db.configured_url():
            print(f"note: ${db.DB_URL_ENV} is set: commands use that database, not this one",
                  file=sys.stderr)  # fmt: skip
        return 0
    if args.action == "status":
        state = embedded.status()
        if not state.running:
            print(f"embedded PostgreSQL in {state.home} is not running (quota-ledger db start)")
            return 1
        print(f"embedded PostgreSQL in {state.home} is running: {db.redact(state.url)}")
        return 0
    try:
        stopped = embedded.stop()
    except embedded.EmbeddedNotInstalled as exc:
        raise CommandError(str(exc)) from None
    print("embedded PostgreSQL stopped" if stopped else "embedded PostgreSQL was not running")
    return 0
