"""The quota policy: budgets per group over a rolling window, read from YAML admins edit.

A budget is resource-hours over a window (``memory: 60 GiB-hours``, or
``{limit: 60 GiB-hours, window: 7d}``); ``running:`` caps what a user may hold at once. A
resource a group does not name is unlimited for that group; a limit of 0 forbids it.

How a user's limits are worked out (``Policy.limits_for``), per resource:

1. The groups that count are the user's groups that the policy lists; others are ignored.
2. Several groups combine per ``combine``:

   - ``max`` (default): the most generous. A group that leaves the resource unlimited makes
     it unlimited. Otherwise the largest limit wins, with its own window; between equal
     limits the longer window wins (the same hours over a longer window is stricter).
   - ``min``: the strictest. Any group's limit applies; the smallest wins, ties again going
     to the longer window.
   - ``sum``: limits add up, over the longest window among them; unlimited if any group
     leaves it unlimited.

   Running caps combine the same way (max: any uncapped group → uncapped; min: smallest;
   sum: total, uncapped if any group is uncapped).
3. A user in none of the listed groups gets ``unlisted_users``: a group's limits (source
   ``unlisted:<group>``), ``unlimited`` (the default, so a first install denies no one), or
   ``deny`` (every request refused). A user named under ``users:`` is never denied as
   unlisted: their entry is their whole policy, and what it does not name is unlimited.
4. ``users:`` entries override, per resource, whatever the groups gave (``null`` there means
   unlimited for that user); resources the entry does not name still come from the groups.

A budget without its own window uses the policy's ``window`` (default 30d). Every error in a
file is reported at once, each with file, line, dotted key and what would be valid.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from ledger.core.policy_yaml import (
    EXTENDED_HINT,
    Issues,
    PolicyError,
    PolicyIssue,
    YNode,
    budget_hours,
    check_keys,
    child_path,
    choice,
    compose,
    duration_seconds,
    named_entries,
    read_field,
    resources_section,
    running_caps,
    scalar_text,
)
from ledger.core.resources import DEFAULT_EXTENDED_RESOURCES, display_order

__all__ = [
    "Budget",
    "BudgetSpec",
    "EffectiveLimits",
    "Enforcement",
    "GroupLimits",
    "Messages",
    "Policy",
    "PolicyError",
    "PolicyIssue",
    "PolicyWatcher",
    "load_policy",
    "parse_policy",
]

log = logging.getLogger(__name__)

DEFAULT_WINDOW_SECONDS = 30 * 86400
COMBINE_CHOICES = ("max", "min", "sum")
UNLISTED_KEYWORDS = ("deny", "unlimited")
LEDGER_ERROR_CHOICES = ("deny", "allow")
TOP_KEYS = ("window", "combine", "unlisted_users", "on_ledger_error", "resources", "groups")
TOP_KEYS += ("users", "messages", "enforcement", "exhausted_budget_blocks")
EXHAUSTED_CHOICES = ("any", "requested")


@dataclass(frozen=True)
class BudgetSpec:
    """A budget as written in a group or user entry."""

    limit_hours: Decimal  # in the resource's hours unit (CPU-hours, GiB-hours, GPU-hours)
    window_seconds: int | None  # None: the policy's window


@dataclass(frozen=True)
class GroupLimits:
    """One ``groups:`` or ``users:`` entry. A None value: explicitly unlimited."""

    budgets: dict[str, BudgetSpec | None] = field(default_factory=dict)
    running: dict[str, int | None] = field(default_factory=dict)  # base units; servers: count


@dataclass(frozen=True)
class Budget:
    resource: str  # "cpu" | "memory" | "gpu" | extended short name
    limit_hours: Decimal  # in the resource's hours unit
    window_seconds: int
    source: str  # "group:power" | "user:alice" | "unlisted:regular" | "sum:dev+gpu-dev"


@dataclass(frozen=True)
class EffectiveLimits:
    budgets: dict[str, Budget]  # resources absent here are unlimited
    running: dict[str, int]  # concurrent caps in base units; keys cpu/memory/gpu/<ext>/servers
    groups: tuple[str, ...]  # the policy groups that applied (sorted), () if none
    unlisted: str | None  # None, or "deny"/"unlimited"/<group> when unlisted_users applied
    denied_all: bool  # True when unlisted_users == deny applied


@dataclass(frozen=True)
class Messages:
    contact: str = "Ask your hub admins for more quota."
    contact_url: str | None = None
    quota_page_url: str = "/services/quota/"


@dataclass(frozen=True)
class Enforcement:
    enabled: bool = True
    warn_at_percent: tuple[int, ...] = (80, 95)
    grace_seconds: int = 600
    interval_seconds: int = 60


@dataclass(frozen=True)
class Policy:
    window_seconds: int = DEFAULT_WINDOW_SECONDS
    combine: str = "max"
    unlisted_users: str = "unlimited"
    on_ledger_error: str = "deny"
    # any: a spent budget blocks every new server (the rule as written in the issue);
    # requested: only servers asking for that resource (spent GPU-hours, CPU server still ok)
    exhausted_budget_blocks: str = "any"
    resources: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_EXTENDED_RESOURCES))
    groups: dict[str, GroupLimits] = field(default_factory=dict)
    users: dict[str, GroupLimits] = field(default_factory=dict)
    messages: Messages = field(default_factory=Messages)
    enforcement: Enforcement = field(default_factory=Enforcement)
    source: str = "<string>"

    def limits_for(self, username: str, groups: Iterable[str]) -> EffectiveLimits:
        """The budgets and running caps that apply to ``username`` in ``groups``."""
        listed = sorted({g for g in groups if g in self.groups})
        override = self.users.get(username)
        unlisted: str | None = None
        if listed:
            base = [(f"group:{g}", self.groups[g]) for g in listed]
        elif self.unlisted_users == "unlimited" or (
            self.unlisted_users == "deny" and override is not None
        ):
            base, unlisted = [], None if override is not None else "unlimited"
        elif self.unlisted_users == "deny":
            return EffectiveLimits({}, {}, (), "deny", True)
        else:
            listed, unlisted = [self.unlisted_users], self.unlisted_users
            base = [(f"unlisted:{unlisted}", self.groups[unlisted])]
        budgets = self._combine_budgets(base)
        running = self._combine_running(base)
        if override is not None:
            for name, spec in override.budgets.items():
                if spec is None:
                    budgets.pop(name, None)
                else:
                    window = spec.window_seconds or self.window_seconds
                    budgets[name] = Budget(name, spec.limit_hours, window, f"user:{username}")
            for name, cap in override.running.items():
                if cap is None:
                    running.pop(name, None)
                else:
                    running[name] = cap
        return EffectiveLimits(budgets, running, tuple(listed), unlisted, False)

    def _combine_budgets(self, base: list[tuple[str, GroupLimits]]) -> dict[str, Budget]:
        combined: dict[str, Budget] = {}
        for name in display_order({n for _, limits in base for n in limits.budgets}):
            specs = [(source, limits.budgets.get(name)) for source, limits in base]
            found = [
                Budget(name, spec.limit_hours, spec.window_seconds or self.window_seconds, source)
                for source, spec in specs
                if spec is not None
            ]
            if not found or (self.combine != "min" and len(found) < len(specs)):
                continue  # max and sum: a group that does not limit it makes it unlimited
            if self.combine == "sum" and len(found) > 1:
                groups = "+".join(b.source.split(":", 1)[1] for b in found)
                total = sum((b.limit_hours for b in found), Decimal(0))
                window = max(b.window_seconds for b in found)
                combined[name] = Budget(name, total, window, f"sum:{groups}")
            elif self.combine == "min":  # smallest limit; same limit: the longer window
                combined[name] = min(found, key=lambda b: (b.limit_hours, -b.window_seconds))
            else:  # max (or a single group under sum): largest; same limit: longer window
                combined[name] = max(found, key=lambda b: (b.limit_hours, b.window_seconds))
        return combined

    def _combine_running(self, base: list[tuple[str, GroupLimits]]) -> dict[str, int]:
        combined: dict[str, int] = {}
        for name in display_order({n for _, limits in base for n in limits.running}):
            # Unlike budgets, a group that sets no cap does not lift another group's cap:
            # caps guard shared capacity (seed 001), so regular + gpu-dev keeps gpu-dev's
            # `running: {gpu: 2}`. Only the groups that set a cap are combined.
            found = [cap for _, limits in base if (cap := limits.running.get(name)) is not None]
            if not found:
                continue
            pick = {"max": max, "min": min, "sum": sum}[self.combine]
            combined[name] = pick(found)
        return combined

    def max_window_seconds(self) -> int:
        """The longest window any budget uses: how far back the one usage query must read."""
        windows = [self.window_seconds]
        for limits in (*self.groups.values(), *self.users.values()):
            windows += [s.window_seconds for s in limits.budgets.values() if s and s.window_seconds]
        return max(windows)

    def resource_names(self) -> list[str]:
        """cpu, memory, then the extended resources' short names (gpu first)."""
        return display_order(["cpu", "memory", *self.resources])


# --- reading a document ------------------------------------------------------------------------


def parse_policy(text: str, source: str = "<string>") -> Policy:
    """A Policy from YAML text; raises PolicyError listing every problem."""
    issues = Issues(source)
    root = compose(text, issues)
    if root is None:
        issues.raise_if_any()  # a syntax error leaves nothing to check further
        return Policy(source=source)  # an empty file: everything unlimited
    top = check_keys(root, "", TOP_KEYS, issues)
    resources = resources_section(top.get("resources"), issues)
    extended = list(resources)
    groups = {
        name: _limits(node, f"groups.{name}", extended, issues)
        for name, node in named_entries(top.get("groups"), "groups", issues).items()
    }
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
        window_seconds=read_field(top.get("window"), "window", duration_seconds, issues)
        or DEFAULT_WINDOW_SECONDS,
        combine=choice(top.get("combine"), "combine", COMBINE_CHOICES, issues),
        unlisted_users=unlisted,
        on_ledger_error=choice(
            top.get("on_ledger_error"), "on_ledger_error", LEDGER_ERROR_CHOICES, issues
        ),
        exhausted_budget_blocks=choice(
            top.get("exhausted_budget_blocks"), "exhausted_budget_blocks", EXHAUSTED_CHOICES, issues
        ),
        resources=resources,
        groups=groups,
        users=users,
        messages=_messages(top.get("messages"), issues),
        enforcement=_enforcement(top.get("enforcement"), issues),
        source=source,
    )
    issues.raise_if_any()
    return policy


def load_policy(path: str | os.PathLike) -> Policy:
    """A Policy from a file; a missing or unreadable file is a PolicyError naming it."""
    source = os.fspath(path)
    try:
        with open(source, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        issue = PolicyIssue(source, None, "", f"cannot read the policy: {reason}")
        raise PolicyError([issue]) from None
    return parse_policy(text, source)


def _limits(node: YNode, path: str, extended: list[str], issues: Issues) -> GroupLimits:
    valid = ["cpu", "memory", *extended, "running"]
    entries = check_keys(node, path, valid, issues, EXTENDED_HINT)
    budgets: dict[str, BudgetSpec | None] = {}
    running: dict[str, int | None] = {}
    for name, child in entries.items():
        key = child_path(path, name)
        if name == "running":
            running = running_caps(child, key, extended, issues)
            continue
        if child.is_mapping():
            spec = check_keys(child, key, ["limit", "window"], issues)
            if "limit" not in spec:
                issues.add(child.line, key, "needs a limit, e.g. {limit: 60 GiB-hours, window: 7d}")
                continue
            limit_node, window_node = spec["limit"], spec.get("window")
        else:
            limit_node, window_node = child, None
        before = len(issues.errors)
        hours = read_field(limit_node, key, lambda n, r=name: budget_hours(n, r, extended), issues)
        window = read_field(window_node, f"{key}.window", duration_seconds, issues)
        if len(issues.errors) == before:
            budgets[name] = None if hours is None else BudgetSpec(hours, window)
    return GroupLimits(budgets, running)


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
    grace = read_field(entries.get("grace"), "enforcement.grace", duration_seconds, issues)
    interval = read_field(entries.get("interval"), "enforcement.interval", duration_seconds, issues)
    return Enforcement(
        enabled=enabled.value if enabled is not None and isinstance(enabled.value, bool) else True,
        warn_at_percent=warn,
        grace_seconds=grace or default.grace_seconds,
        interval_seconds=interval or default.interval_seconds,
    )


# --- reloading without restart -------------------------------------------------------------------


class PolicyWatcher:
    """The current policy from a file, re-read when the file changes.

    ``current()`` is cheap enough for every spawn: it stats the file at most once per
    ``check_interval_seconds`` and re-parses only when mtime, size or inode changed and the
    content hash differs. A bad edit is logged and kept in ``last_error`` while the last good
    policy stays in force: a typo must not lock everyone out (or let everyone in). The first
    load has no previous policy, so it raises.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        check_interval_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.path = os.fspath(path)
        self.check_interval_seconds = check_interval_seconds
        self.last_error: PolicyError | None = None
        self._clock = clock
        self._lock = threading.Lock()
        self._signature = self._stat()
        data, self._digest = self._read()
        self._policy = self._parse(data)
        self._checked_at = clock()

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _read(self) -> tuple[bytes, str]:
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except OSError as error:
            issue = PolicyIssue(self.path, None, "", f"cannot read the policy: {error.strerror}")
            raise PolicyError([issue]) from None
        return data, hashlib.sha256(data).hexdigest()

    def _parse(self, data: bytes) -> Policy:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as error:
            issue = PolicyIssue(self.path, None, "", f"cannot read the policy: {error}")
            raise PolicyError([issue]) from None
        return parse_policy(text, self.path)

    def current(self) -> Policy:
        """The latest valid policy."""
        with self._lock:
            now = self._clock()
            if now - self._checked_at < self.check_interval_seconds:
                return self._policy
            self._checked_at = now
            signature = self._stat()
            if signature == self._signature:
                return self._policy
            self._signature = signature  # a bad edit is reported once, not every second
            try:
                data, digest = self._read()
                # Touched but unchanged (or an edit undone): keep the parsed policy.
                policy = self._policy if digest == self._digest else self._parse(data)
            except PolicyError as error:
                self.last_error = error
                log.error("quota policy not reloaded, keeping the previous one:\n%s", error)
                return self._policy
            if digest != self._digest:
                log.info("quota policy reloaded from %s", self.path)
            self._digest, self._policy, self.last_error = digest, policy, None
            return self._policy
