"""``quota-ledger``: the command line. Other tools script against it, so keep it stable.

Exit status: 0 success (``check``: allowed), 1 ``check`` denied (``db status``: not
running), 2 a usage, configuration or database error (with a message that says what to do).

Each sub-command lives in its own module exposing ``add_parser(subparsers, common)`` and an
``async def run(args) -> int``. The CLI is the composition root: it names the modules of
``ledger``'s own roles, and finds the commands that live outside ``ledger`` (``collect``,
``demo``) through the ``quota_ledger.commands`` entry-point group (pyproject.toml), so
``ledger`` never imports ``collector`` or the demo tooling.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import sys
from importlib.metadata import entry_points

from ledger import __version__
from ledger.cli.common import CommandError, common_parser

COMMANDS: dict[str, str] = {
    "migrate": "ledger.cli.admin_commands",
    "import": "ledger.cli.admin_commands",
    "db": "ledger.cli.admin_commands",
    "check": "ledger.cli.query_commands",
    "usage": "ledger.cli.query_commands",
    "report": "ledger.cli.query_commands",
    "decisions": "ledger.cli.query_commands",
    "enforce": "ledger.cli.enforce",
    "serve": "ledger.cli.serve",
    "rollups": "ledger.cli.rollups",
    "policy": "ledger.cli.policy_command",
    "grant": "ledger.cli.grant_commands",
    "credit": "ledger.cli.grant_commands",
    "grants": "ledger.cli.grant_commands",
    "revoke": "ledger.cli.grant_commands",
}
ENTRY_POINT_GROUP = "quota_ledger.commands"


def command_modules() -> dict[str, str]:
    """Sub-command name → module: ledger's own, then those other packages register."""
    modules = dict(COMMANDS)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        modules.setdefault(ep.name, ep.value)
    return modules


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="quota-ledger",
        description="Compute-usage quotas for JupyterHub, measured exactly from a PostgreSQL ledger.",
    )
    parser.add_argument("--version", action="version", version=f"quota-ledger {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    common = common_parser()
    registered: set[str] = set()
    for name, module_name in command_modules().items():
        if name in registered:
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue  # that part is not installed in this build
            raise
        registered.update(module.add_parser(subparsers, common))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return asyncio.run(args.run(args))
    except CommandError as exc:
        print(f"quota-ledger {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
