"""Reading a policy document: YAML text → ``Policy``, every problem reported at once.

Each top-level section has its reader here; the value syntax (budgets, caps, durations) is
in ``ledger.core.policy_values`` and the YAML-with-lines machinery in
``ledger.core.yaml_lines``. Reading the file itself (and re-reading it when it changes) is
``ledger.store.policy_file``: this module is pure.
"""

from __future__ import annotations

import re

from ledger.core.accounting import CHARGE_BASES, DEFAULT_EXTENDED_RESOURCES, Accounting
from ledger.core.policy import (
    COMBINE_CHOICES,
    DEFAULT_WINDOW_SECONDS,
    EXHAUSTED_CHOICES,
    LEDGER_ERROR_CHOICES,
    UNLISTED_KEYWORDS,
    BudgetSpec,
    Enforcement,
    GroupLimits,
    Messages,
    Policy,
)
from ledger.core.policy_values import EXTENDED_HINT, budget_hours, running_caps, whole_seconds
from ledger.core.quantities import device_count, format_duration
from ledger.core.resources import SERVERS
from ledger.core.shared_capacity import (
    DEFAULT_WAIT,
    POOL_BUDGET_RESOURCES,
    PoolBudget,
    SharedLimits,
)
from ledger.core.yaml_lines import (
    Invalid,
    Issues,
    PolicyError,
    PolicyIssue,
    YNode,
    check_keys,
    child_path,
    choice,
    compose,
    named_entries,
    read_field,
    scalar_text,
    shown,
)

__all__ = ["PolicyError", "PolicyIssue", "parse_policy"]

TOP_KEYS = ("window", "combine", "unlisted_users", "on_ledger_error", "accounting", "groups")
TOP_KEYS += ("users", "messages", "enforcement", "exhausted_budget_blocks", "hub")
# Keys that moved under accounting: (a policy file is refused with where to put them, rather
# than read in two places that could disagree).
MOVED_TO_ACCOUNTING = ("resources", "charge_basis")
_SHORT_NAME_RE = re.compile(r"[a-z][a-z0-9_-]*")
_EXTENDED_NAME_RE = re.compile(
    r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
)


def parse_policy(text: str, source: str = "<string>") -> Policy:
    """A Policy from YAML text; raises PolicyError listing every problem."""
    issues = Issues(source)
    root = compose(text, issues)
    if root is None:
        issues.raise_if_any()  # a syntax error leaves nothing to check further
        return Policy(source=source)  # an empty file: everything unlimited
    _report_moved_keys(root, issues)
    top = check_keys(root, "", TOP_KEYS, issues)
    accounting = _accounting(top.get("accounting"), issues)
    extended = list(accounting.resources)
    groups, pools = {}, {}
    for name, node in named_entries(top.get("groups"), "groups", issues).items():
        pool = node.value.pop("pool", None) if node.is_mapping() else None
        if pool is not None:
            pools[name] = _shared(pool, f"groups.{name}.pool", extended, issues, budgets=True)
        groups[name] = _limits(node, f"groups.{name}", extended, issues, pool_hint=True)
    hub = top.get("hub")
    users = {
        name: _limits(node, f"users.{name}", extended, issues)
        for name, node in named_entries(top.get("users"), "users", issues).items()
    }
    unlisted = scalar_text(top.get("unlisted_users"), "unlisted_users", issues, "unlimited")
    if unlisted not in UNLISTED_KEYWORDS and unlisted not in groups:
        choices = [*UNLISTED_KEYWORDS, *groups]
        issues.add(
            top["unlisted_users"].line,
            "unlisted_users",
            f"{unlisted!r} is not a group in groups:; valid: {', '.join(choices)}",
        )
    policy = Policy(
        window_seconds=read_field(top.get("window"), "window", whole_seconds, issues)
        or DEFAULT_WINDOW_SECONDS,
        combine=choice(top.get("combine"), "combine", COMBINE_CHOICES, issues),
        unlisted_users=unlisted,
        on_ledger_error=choice(
            top.get("on_ledger_error"), "on_ledger_error", LEDGER_ERROR_CHOICES, issues
        ),
        exhausted_budget_blocks=choice(
            top.get("exhausted_budget_blocks"), "exhausted_budget_blocks", EXHAUSTED_CHOICES, issues
        ),
        accounting=accounting,
        groups=groups,
        users=users,
        messages=_messages(top.get("messages"), issues),
        enforcement=_enforcement(top.get("enforcement"), issues),
        pools=pools,
        hub=SharedLimits() if hub is None else _shared(hub, "hub", extended, issues, budgets=False),
        source=source,
    )
    _check_grace(policy, top.get("enforcement"), issues)
    issues.raise_if_any()
    return policy


def _check_grace(policy: Policy, node: YNode | None, issues: Issues) -> None:
    """A grace as long as a budget's window never stops anyone: by the time it has passed,
    the 100 % warning that began it has left the window, and the user is warned anew."""
    grace = node.value.get("grace") if node is not None and node.is_mapping() else None
    shortest = policy.min_user_window_seconds()
    if grace is not None and policy.enforcement.grace_seconds >= shortest:
        issues.add(grace.line, "enforcement.grace",
                   f"{format_duration(policy.enforcement.grace_seconds)} is not shorter than "
                   f"the shortest budget window ({format_duration(shortest)}): a user over "
                   "quota would be warned anew each window and never stopped; give a grace "
                   "below it, e.g. 10m")  # fmt: skip


def _report_moved_keys(root: YNode, issues: Issues) -> None:
    """Report the keys that moved under ``accounting:``, saying what to write instead."""
    if not root.is_mapping():
        return
    for key in MOVED_TO_ACCOUNTING:
        node = root.value.get(key)
        if node is None:
            continue
        written = _flow(node)
        issues.add(
            node.line,
            key,
            f"moved under accounting: (read by the collector, the hub hook, the enforcer and "
            f"the web service alike); write it as accounting: {{{key}: {written}}}",
        )
        root.value.pop(key)  # reported once, not again as an unknown key


def _flow(node: YNode) -> str:
    """A node as one line of YAML flow style, for messages."""
    if node.is_mapping():
        return "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in node.value.items()) + "}"
    if isinstance(node.value, list):
        return "[" + ", ".join(_flow(v) for v in node.value) + "]"
    return node.raw if node.raw is not None else str(node.value)


def _accounting(node: YNode | None, issues: Issues) -> Accounting:
    keys = ("charge_basis", "resources", "docker_all_gpus")
    entries = check_keys(node, "accounting", keys, issues) if node is not None else {}
    basis = choice(entries.get("charge_basis"), "accounting.charge_basis", CHARGE_BASES, issues)
    all_gpus = read_field(
        entries.get("docker_all_gpus"), "accounting.docker_all_gpus", _host_gpus, issues
    )
    return Accounting(basis, _resources(entries.get("resources"), issues), all_gpus)


def _host_gpus(node: YNode) -> int:
    count = device_count(node.raw) if node.raw is not None else 0
    if count < 1:
        raise Invalid(f"{shown(node)} is not a number of GPUs; give 1 or more, e.g. 4")
    return count


def _resources(node: YNode | None, issues: Issues) -> dict[str, str]:
    if node is None:
        return dict(DEFAULT_EXTENDED_RESOURCES)
    resources: dict[str, str] = {}
    for short, child in named_entries(node, "accounting.resources", issues).items():
        path = child_path("accounting.resources", short)
        if short in ("cpu", "memory", SERVERS, "running") or not _SHORT_NAME_RE.fullmatch(short):
            issues.add(
                child.line,
                path,
                "short names are lower-case words other than cpu, "
                "memory, servers and running, e.g. gpu or fpga",
            )
        elif not (isinstance(child.raw, str) and _EXTENDED_NAME_RE.fullmatch(child.raw)):
            issues.add(
                child.line,
                path,
                f"{child.raw!r} is not an extended resource name; write one such as "
                "nvidia.com/gpu or amd.com/gpu",
            )
        elif child.raw in resources.values():
            issues.add(child.line, path, f"{child.raw} already has another short name")
        else:
            resources[short] = child.raw
    return resources


def _limits(
    node: YNode, path: str, extended: list[str], issues: Issues, *, pool_hint: bool = False
) -> GroupLimits:
    valid = ["cpu", "memory", *extended, "running", *(["pool"] if pool_hint else [])]
    entries = check_keys(node, path, valid, issues, EXTENDED_HINT)
    budgets: dict[str, BudgetSpec | None] = {}
    running: dict[str, int | None] = {}
    for name, child in entries.items():
        key = child_path(path, name)
        if name == "running":
            running = running_caps(child, key, extended, issues)
        elif (read := _budget(child, key, name, extended, issues)) is not False:
            budgets[name] = read
    return GroupLimits(budgets, running)


def _budget(child: YNode, key: str, name: str, extended: list[str], issues: Issues):
    """A budget entry → BudgetSpec, None (unlimited) or False (an error was filed)."""
    if child.is_mapping():
        spec = check_keys(child, key, ["limit", "window"], issues)
        if "limit" not in spec:
            issues.add(child.line, key, "needs a limit, e.g. {limit: 60 GiB-hours, window: 7d}")
            return False
        limit_node, window_node = spec["limit"], spec.get("window")
    else:
        limit_node, window_node = child, None
    before = len(issues.errors)
    hours = read_field(limit_node, key, lambda n, r=name: budget_hours(n, r, extended), issues)
    window = read_field(window_node, f"{key}.window", whole_seconds, issues)
    if len(issues.errors) != before:
        return False
    return None if hours is None else BudgetSpec(hours, window)


def _shared(
    node: YNode, path: str, extended: list[str], issues: Issues, *, budgets: bool
) -> SharedLimits:
    """A group's ``pool:`` (budgets, running caps, wait) or the ``hub:`` (running, wait)."""
    valid = [*(POOL_BUDGET_RESOURCES if budgets else ()), "running", "wait"]
    hint = (
        f"; a pool's budgets cover {', '.join(POOL_BUDGET_RESOURCES)} (its running: caps "
        "cover every resource)"
        if budgets
        else "; the hub section caps what runs at once: hub: {running: {gpu: 8}}"
    )
    entries = check_keys(node, path, valid, issues, hint)
    pool_budgets: dict[str, PoolBudget] = {}
    running: dict[str, int] = {}
    for name, child in entries.items():
        key = child_path(path, name)
        if name == "running":
            caps = running_caps(child, key, extended, issues)
            running = {n: cap for n, cap in caps.items() if cap is not None}
        elif name != "wait":
            read = _budget(child, key, name, extended, issues)
            if read:
                pool_budgets[name] = PoolBudget(read.limit_hours, read.window_seconds)
    return SharedLimits(pool_budgets, running, _wait(entries.get("wait"), path, running, issues))


def _wait(node: YNode | None, path: str, running: dict[str, int], issues: Issues) -> frozenset:
    """``wait: {gpu: true, servers: false}``: which caps a refused spawn waits for."""
    key = child_path(path, "wait")
    if node is None:
        return DEFAULT_WAIT
    wait = set(DEFAULT_WAIT)
    for name, child in check_keys(node, key, [*running], issues,
                                  " (wait: names caps set under running:)").items():  # fmt: skip
        if not isinstance(child.value, bool):
            issues.add(child.line, child_path(key, name), "must be true or false")
        elif child.value:
            wait.add(name)
        else:
            wait.discard(name)
    return frozenset(wait)


def _messages(node: YNode | None, issues: Issues) -> Messages:
    keys = ("contact", "contact_url", "quota_page_url")
    entries = check_keys(node, "messages", keys, issues) if node is not None else {}
    default = Messages()
    contact = scalar_text(entries.get("contact"), "messages.contact", issues, default.contact)
    url = entries.get("contact_url")
    contact_url = scalar_text(url, "messages.contact_url", issues, "") or None
    page = scalar_text(entries.get("quota_page_url"), "messages.quota_page_url", issues, "")
    return Messages(contact, contact_url, page or default.quota_page_url)


def _enforcement(node: YNode | None, issues: Issues) -> Enforcement:
    keys = ("enabled", "warn_at_percent", "grace", "interval")
    entries = check_keys(node, "enforcement", keys, issues) if node is not None else {}
    default = Enforcement()
    enabled = entries.get("enabled")
    if enabled is not None and not isinstance(enabled.value, bool):
        issues.add(enabled.line, "enforcement.enabled", "must be true or false")
    warn = default.warn_at_percent
    warn_node = entries.get("warn_at_percent")
    if warn_node is not None and warn_node.value is not None:
        items = warn_node.value if isinstance(warn_node.value, list) else [warn_node]
        good = [n.value for n in items if type(n.value) is int and 1 <= n.value <= 100]
        if len(good) != len(items) or not isinstance(warn_node.value, list):
            issues.add(
                warn_node.line,
                "enforcement.warn_at_percent",
                "must be a list of whole percentages 1-100, e.g. [80, 95]",
            )
        warn = tuple(sorted(set(good)))
    grace = read_field(entries.get("grace"), "enforcement.grace",
                       lambda n: whole_seconds(n, zero_ok=True), issues)  # fmt: skip
    interval = read_field(entries.get("interval"), "enforcement.interval", whole_seconds, issues)
    return Enforcement(
        enabled=enabled.value if enabled is not None and isinstance(enabled.value, bool) else True,
        warn_at_percent=warn,
        grace_seconds=default.grace_seconds if grace is None else grace,
        interval_seconds=interval or default.interval_seconds,
    )
