"""What every sub-command shares: options, the database, the policy, ``--at``, output."""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.core.times import TimeError, parse_at, utcnow
from ledger.store import db
from ledger.store.policy_file import CONFIG_ENV

if TYPE_CHECKING:
    from ledger.core.policy import Policy


class CommandError(Exception):
    """A usage, configuration or database error: printed, exit status 2."""


def common_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--db",
        metavar="URL",
        help=f"PostgreSQL URL (default: ${db.DB_URL_ENV}; without either, the commands you run "
        "by hand use the embedded PostgreSQL in $QUOTA_LEDGER_HOME, collect, serve and "
        "enforce refuse to start)",
    )
    common.add_argument(
        "--config",
        metavar="FILE",
        help=f"quota policy YAML (default: ${CONFIG_ENV})",
    )
    common.add_argument(
        "--log-level", default=os.environ.get("QUOTA_LEDGER_LOG_LEVEL", "warning"),
        choices=["debug", "info", "warning", "error"], help="log verbosity (default: warning)",
    )  # fmt: skip
    return common


def add_at(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--at",
        metavar="TIME",
        help="evaluate at this time, ISO 8601 with a time zone (default: now)",
    )


def add_format(parser: argparse.ArgumentParser, choices: Sequence[str]) -> None:
    parser.add_argument("--format", choices=list(choices), default=choices[0], help="output format")


def at_of(args) -> datetime:
    if not getattr(args, "at", None):
        return utcnow()
    try:
        return parse_at(args.at)
    except TimeError as exc:
        raise CommandError(str(exc)) from None


def policy_source(args, *, required: bool = True, watch: bool = False) -> Callable[[], Policy]:
    """The policy of ``--config FILE``, else ``$QUOTA_LEDGER_CONFIG``: the one way every
    command gets it. ``watch``: re-read when the file changes (long-running services);
    without a file and not ``required``, everything is unlimited."""
    from ledger.core.policy_yaml import parse_policy
    from ledger.store.policy_file import PolicyError, PolicyWatcher, load_policy, policy_path

    path = policy_path(getattr(args, "config", None))
    if not path:
        if required:
            raise CommandError(
                f"no quota policy: pass --config FILE or set ${CONFIG_ENV} "
                "(see examples/policy.yaml)"
            )
        unlimited = parse_policy("{}", source="<no policy: everything unlimited>")
        return lambda: unlimited
    try:
        if watch:
            return PolicyWatcher(path).current  # edits apply without a restart
        policy = load_policy(path)
    except PolicyError as exc:
        raise CommandError(f"invalid policy:\n{exc}") from None
    return lambda: policy


def policy_of(args, *, required: bool = True) -> Policy:
    return policy_source(args, required=required)()


def database_url(args, *, allow_embedded: bool = False) -> str:
    """``--db``, else ``$QUOTA_LEDGER_DB_URL``; else the embedded server if ``allow_embedded``
    (the commands a person runs by hand), else an error naming both."""
    try:
        return db.resolve_url(getattr(args, "db", None), allow_embedded=allow_embedded)
    except db.DatabaseNotConfigured as exc:
        raise CommandError(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - the embedded server can fail in many ways
        raise CommandError(f"cannot start the embedded PostgreSQL: {exc}") from exc


@contextlib.asynccontextmanager
async def engine_of(
    args, *, check_schema: bool = True, allow_embedded: bool = False
) -> AsyncIterator[AsyncEngine]:
    """The database engine; refuses a schema that is behind unless ``check_schema=False``.

    Only ``allow_embedded=True`` may start the embedded server (see :func:`database_url`).
    """
    from asyncpg import InterfaceError as DriverInterfaceError
    from asyncpg import PostgresError

    url = database_url(args, allow_embedded=allow_embedded)
    try:
        engine = db.create_engine(url)
    except (SQLAlchemyError, ImportError, ValueError) as exc:  # notaurl, mysql://…
        raise CommandError(
            f"{db.redact(url)} is not a PostgreSQL URL ({_short(exc)}); write e.g. "
            "postgresql+asyncpg://user@host:5432/dbname or postgresql://user@host/dbname"
        ) from None
    # a connect the server refuses (no such database, unknown role, bad password) comes as
    # asyncpg's own error, not wrapped in SQLAlchemy's DBAPIError
    reached_errors = (OSError, DBAPIError, PostgresError, DriverInterfaceError)
    try:
        if check_schema:
            try:
                await db.check_schema(engine)
            except db.DatabaseError as exc:
                raise CommandError(str(exc)) from None
            except reached_errors as exc:
                raise CommandError(
                    f"cannot use the database at {db.redact(url)}: {_short(exc)}"
                ) from None
        try:
            yield engine
        except reached_errors as exc:
            raise CommandError(f"database error at {db.redact(url)}: {_short(exc)}") from None
        except SQLAlchemyError as exc:
            raise CommandError(f"database error: {_short(exc)}") from None
    finally:
        await engine.dispose()


def _short(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return text.splitlines()[0] if text else type(exc).__name__


def print_json(value) -> None:
    json.dump(value, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def print_csv(header: Sequence[str], rows: Sequence[Sequence]) -> None:
    writer = csv.writer(sys.stdout)
    writer.writerow(header)
    writer.writerows(rows)


def console():
    from rich.console import Console

    # Piped output (scripts, CI logs) gets a fixed width instead of rich's narrow 80 columns.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 120)
