"""``quota-ledger policy check FILE``: validate a policy file without touching any database.

Exit 0 when every file is valid, 2 with one ``file:line: key: problem`` line per error on
standard error otherwise. The Helm chart runs it over the rendered policy in each component's
init containers, so a typo fails the rollout instead of the hub's next restart.
"""

from __future__ import annotations

import sys


def add_parser(subparsers, common) -> list[str]:
    p = subparsers.add_parser("policy", parents=[common], help="work with quota policy files")
    actions = p.add_subparsers(dest="policy_action", metavar="ACTION", required=True)
    check = actions.add_parser(
        "check",
        parents=[common],
        help="validate policy files (exit 0: valid, 2: errors listed as file:line: key)",
    )
    check.add_argument("files", nargs="+", metavar="FILE", help="policy YAML file(s)")
    check.set_defaults(run=run_check)
    return ["policy"]


async def run_check(args) -> int:
    from ledger.core.policy_yaml import PolicyError
    from ledger.store.policy_file import load_policy

    failed = False
    for path in args.files:
        try:
            policy = load_policy(path)
        except PolicyError as exc:
            failed = True
            for issue in exc.errors:
                print(issue, file=sys.stderr)
            continue
        groups = ", ".join(sorted(policy.groups)) or "none"
        print(f"{path}: valid (groups: {groups})")
    return 2 if failed else 0
