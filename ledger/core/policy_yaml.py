"""Reading the policy file: YAML with line numbers, strict keys, and the value syntax.

PyYAML's ``safe_load`` forgets where values came from, and an admin fixing a policy needs
"policy.yaml:7: groups.regular.memory: ...". So the document is composed into PyYAML's node
tree and walked into ``YNode``s that keep the 1-based line of each mapping key and the scalar
text exactly as written. The text matters: YAML 1.1 reads ``010`` as octal 8 and ``on`` as
true, while an admin means ten and a group called "on".

Parsers here raise ``Invalid(message)``; the caller knows the node and dotted key and turns
it into a ``PolicyIssue``, so every problem in a file is reported in one go.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Context, Decimal
from typing import Any

import yaml

from ledger.core.quantities import QuantityError, cpu_millicores, device_count, memory_bytes
from ledger.core.resources import DEFAULT_EXTENDED_RESOURCES, GIB, SERVERS, resource

__all__ = [
    "Invalid",
    "Issues",
    "PolicyError",
    "PolicyIssue",
    "YNode",
    "budget_hours",
    "check_keys",
    "child_path",
    "choice",
    "compose",
    "duration_seconds",
    "named_entries",
    "number",
    "read_field",
    "resources_section",
    "running_caps",
    "scalar_text",
]


@dataclass(frozen=True)
class PolicyIssue:
    """One problem in a policy file. ``line`` is 1-based; None when no line applies."""

    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class PolicyError(ValueError):
    """A policy that cannot be used; ``errors`` lists every problem found."""

    def __init__(self, errors: Iterable[PolicyIssue]):
        self.errors: list[PolicyIssue] = list(errors)
        super().__init__("\n".join(str(issue) for issue in self.errors))


class Invalid(ValueError):
    """A value that does not parse; the message says what would be valid."""


class Issues:
    """Collects the problems of one file, so an admin sees all of them at once."""

    def __init__(self, file: str):
        self.file = file
        self.errors: list[PolicyIssue] = []

    def add(self, line: int | None, key: str, message: str) -> None:
        self.errors.append(PolicyIssue(self.file, line, key, message))

    def raise_if_any(self) -> None:
        if self.errors:  # in file order: the way an admin fixes them
            raise PolicyError(sorted(self.errors, key=lambda issue: issue.line or 0))


@dataclass
class YNode:
    """A YAML value with where it was written.

    ``value`` is ``dict[str, YNode]``, ``list[YNode]`` or a scalar as YAML constructs it
    (None, bool, int, float, str, date); ``raw`` is a scalar's text as written.
    """

    value: Any
    line: int
    raw: str | None = None

    def is_mapping(self) -> bool:
        return isinstance(self.value, dict)


class _Loader(yaml.SafeLoader):
    """SafeLoader: no arbitrary Python objects from an admin-edited file."""


def compose(text: str, issues: Issues) -> YNode | None:
    """The document as YNodes (None for an empty file); syntax errors go to ``issues``."""
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        return _walk(loader, root, root.start_mark.line + 1, "", set(), issues)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark else None
        problem = error.problem or "cannot parse"
        hint = " (YAML indents with spaces, not tabs)" if "\\t" in problem else ""
        context = f" ({error.context})" if error.context else ""
        issues.add(line, "", f"YAML syntax error: {problem}{hint}{context}")
    except yaml.YAMLError as error:  # not marked: e.g. a non-UTF-8 stream
        issues.add(None, "", f"YAML error: {error}")
    finally:
        loader.dispose()
    return None


def child_path(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _walk(
    loader: _Loader, node: yaml.Node, line: int, path: str, active: set[int], issues: Issues
) -> YNode:
    if id(node) in active:  # an alias inside its own anchor would recurse forever
        issues.add(line, path, "refers to itself through a YAML alias")
        return YNode(None, line)
    if isinstance(node, yaml.ScalarNode):
        return YNode(loader.construct_object(node), line, node.value)
    active = active | {id(node)}
    if isinstance(node, yaml.SequenceNode):
        items = [
            _walk(loader, item, item.start_mark.line + 1, f"{path}[{i}]", active, issues)
            for i, item in enumerate(node.value)
        ]
        return YNode(items, line)
    first_line: dict[str, int] = {}
    for key_node, _ in node.value:  # duplicates among the keys written here, before merges
        if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
            key_line = key_node.start_mark.line + 1
            if key_node.value in first_line:
                issues.add(
                    key_line,
                    child_path(path, key_node.value),
                    f"duplicate key (first written on line {first_line[key_node.value]})",
                )
            first_line.setdefault(key_node.value, key_line)
    loader.flatten_mapping(node)  # resolves "<<: *defaults" merge keys
    mapping: dict[str, YNode] = {}
    for key_node, value_node in node.value:
        key_line = key_node.start_mark.line + 1
        if not isinstance(key_node, yaml.ScalarNode):
            issues.add(key_line, path, "keys must be plain names, not lists or mappings")
            continue
        key = key_node.value  # as written: a group named 007 or "on" keeps its name
        mapping[key] = _walk(loader, value_node, key_line, child_path(path, key), active, issues)
    return YNode(mapping, line)


def check_keys(
    node: YNode, path: str, valid: Iterable[str], issues: Issues, hint: str = ""
) -> dict[str, YNode]:
    """The entries of a mapping whose keys are all in ``valid``; the rest become issues.

    An absent or null section is an empty mapping: ``groups:`` with nothing under it is fine.
    """
    valid = list(valid)
    if node.value is None:
        return {}
    if not node.is_mapping():
        keys = ", ".join(valid)
        issues.add(node.line, path, f"must be a mapping with keys {keys}; got {_shown(node)}")
        return {}
    known = {}
    for key, child in node.value.items():
        if key in valid:
            known[key] = child
            continue
        close = difflib.get_close_matches(key, valid, n=1)
        guess = f"did you mean '{close[0]}'? " if close else ""
        issues.add(
            child.line,
            child_path(path, key),
            f"unknown key '{key}'; {guess}valid keys here: {', '.join(valid)}{hint}",
        )
    return known


def _shown(node: YNode) -> str:
    if node.is_mapping():
        return "a mapping"
    if isinstance(node.value, list):
        return "a list"
    return repr(node.raw if node.raw is not None else node.value)


_SHORT_NAME_RE = re.compile(r"[a-z][a-z0-9_-]*")
_EXTENDED_NAME_RE = re.compile(
    r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
)
EXTENDED_HINT = " (other extended resources need a short name under resources:)"
_NUMBER_RE = re.compile(r"\+?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def number(text: str) -> Decimal:
    """A plain non-negative decimal number, exactly."""
    cleaned = text.strip().replace("_", "")
    if not _NUMBER_RE.fullmatch(cleaned):
        raise Invalid(f"{text!r} is not a non-negative number")
    return Decimal(cleaned)


# --- durations -------------------------------------------------------------------------------

_DURATION_RE = re.compile(r"(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_DURATION_UNIT_SECONDS = (7 * 86400, 86400, 3600, 60, 1)
DURATION_EXAMPLES = "30d, 12h, 90m, 45s, 1w, 1d12h"


def duration_seconds(node: YNode) -> int:
    """``30d``, ``12h``, ``90m``, ``45s``, ``1w`` or combinations (``1d12h``) → seconds > 0."""
    value = node.value
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise Invalid(f"{_shown(node)} is not a duration; write e.g. {DURATION_EXAMPLES}")
    text = "".join((node.raw or "").split())
    if isinstance(value, int | float) or _NUMBER_RE.fullmatch(text):
        raise Invalid(f"{node.raw!r} has no unit; durations need one, e.g. {text}d or {text}h")
    match = _DURATION_RE.fullmatch(text)
    if not text or match is None:
        hint = " (whole numbers only)" if "." in text else ""
        raise Invalid(f"{node.raw!r} is not a duration{hint}; write e.g. {DURATION_EXAMPLES}")
    seconds = sum(
        int(n or 0) * s for n, s in zip(match.groups(), _DURATION_UNIT_SECONDS, strict=True)
    )
    if seconds <= 0:
        raise Invalid(f"{node.raw!r} is zero; a duration must be longer than that, e.g. 30d")
    return seconds


# --- budgets: "<number> <unit>-hours" ---------------------------------------------------------

_EXACT = Context(prec=80)  # decimal/binary size ratios terminate within ~30 digits


def _memory_units() -> dict[str, Decimal]:
    """Memory budget units (lower case) → GiB per unit, exactly."""
    units: dict[str, Decimal] = {}
    for power, letter in enumerate("kmgtp", start=1):
        units[f"{letter}ib"] = units[f"{letter}i"] = _EXACT.divide(Decimal(2 ** (10 * power)), GIB)
        units[f"{letter}b"] = _EXACT.divide(Decimal(10 ** (3 * power)), GIB)
    return units


_MEMORY_UNITS = _memory_units()
_CPU_UNITS = ("cpu", "cpus", "core", "cores")
_HOURS_RE = re.compile(r"(?P<unit>.*?)[- ]?(?:hours|hour|hrs|hr|h)", re.IGNORECASE)


def unit_help(resource_name: str) -> str:
    """The units a budget of ``resource_name`` may be written in, for messages."""
    if resource_name == "memory":
        return "GiB-hours (or MiB-, TiB-, GB-hours)"
    if resource_name == "cpu":
        return "CPU-hours (or core-hours)"
    return resource(resource_name).hours_unit


def _unit_factor(unit: str, resource_name: str) -> Decimal | None:
    """Display units per written unit, or None if ``unit`` is not one of the resource's."""
    if resource_name == "memory":
        return _MEMORY_UNITS.get(unit)
    if resource_name == "cpu":
        return Decimal(1) if unit in _CPU_UNITS else None
    names = {resource_name.lower(), resource(resource_name).display_unit.lower()}
    return Decimal(1) if unit in names | {f"{n}s" for n in names} else None


def _owner(unit: str, extended: Iterable[str]) -> str | None:
    """Which resource a unit belongs to, to explain a mismatch."""
    for name in ("memory", "cpu", *extended):
        if _unit_factor(unit, name) is not None:
            return name
    return None


def budget_hours(node: YNode, resource_name: str, extended: Iterable[str]) -> Decimal | None:
    """A budget scalar → limit in the resource's hours unit (GiB-hours...); None = unlimited.

    Accepts ``"60 GiB-hours"`` (any unit of the resource, case-insensitive, ``-h`` for hours)
    or a bare number meaning hours in the resource's display unit.
    """
    value = node.value
    hours_unit = resource(resource_name).hours_unit
    example = f"'60 {hours_unit}' (or {{limit: 60 {hours_unit}, window: 7d}})"
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise Invalid(f"{_shown(node)} is not a budget; write resource-hours such as {example}")
    text = (node.raw or "").strip()
    match = re.fullmatch(r"(?P<number>[-+]?[\d._]*\d[\d._]*(?:[eE][+-]?\d+)?)\s*(?P<rest>.*)", text)
    if match is None:
        raise Invalid(f"{text!r} is not a budget; write resource-hours such as {example}")
    if match["number"].startswith("-"):
        raise Invalid(f"{text!r} is negative; a budget is 0 (forbidden) or more")
    amount = number(match["number"])
    rest = match["rest"]
    if not rest:
        return amount  # a bare number: hours of the display unit
    hours = _HOURS_RE.fullmatch(rest)
    if hours is None:
        raise Invalid(f"{text!r} is not a budget; write resource-hours such as {example}")
    unit = hours["unit"].strip().lower()
    if not unit:
        raise Invalid(f"{text!r} does not say hours of what; write e.g. '{amount} {hours_unit}'")
    extended = list(extended)
    factor = _unit_factor(unit, resource_name)
    if factor is None:
        owner = _owner(unit, extended)
        written = f"'{hours['unit'].strip()}-hours'"
        why = f"{written} is for {owner} budgets" if owner else f"{written} is not a unit"
        raise Invalid(f"{resource_name} budgets are in {unit_help(resource_name)}; {why}")
    return _EXACT.multiply(amount, factor)


# --- sections and fields ------------------------------------------------------------------


def read_field(node: YNode | None, path: str, parse: Callable, issues: Issues):
    if node is None:
        return None
    try:
        return parse(node)
    except (Invalid, QuantityError) as error:
        issues.add(node.line, path, str(error))
        return None


def scalar_text(node: YNode | None, path: str, issues: Issues, default: str) -> str:
    if node is None or node.value is None:
        return default
    if isinstance(node.value, dict | list) or node.raw is None:
        issues.add(node.line, path, "must be a single value, not a list or mapping")
        return default
    return node.raw


def choice(node: YNode | None, path: str, choices: tuple[str, ...], issues: Issues) -> str:
    value = scalar_text(node, path, issues, choices[0])
    if value not in choices:
        issues.add(node.line, path, f"{value!r} is not one of {', '.join(choices)}")
        return choices[0]
    return value


def named_entries(node: YNode | None, path: str, issues: Issues) -> dict[str, YNode]:
    """A mapping with free keys (group names, usernames)."""
    if node is None or node.value is None:
        return {}
    if not node.is_mapping():
        issues.add(node.line, path, "must be a mapping of names to limits")
        return {}
    return node.value


def resources_section(node: YNode | None, issues: Issues) -> dict[str, str]:
    if node is None:
        return dict(DEFAULT_EXTENDED_RESOURCES)
    resources: dict[str, str] = {}
    for short, child in named_entries(node, "resources", issues).items():
        path = child_path("resources", short)
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
                f"{child.raw!r} is not a Kubernetes extended resource "
                "name; write one such as nvidia.com/gpu or amd.com/gpu",
            )
        elif child.raw in resources.values():
            issues.add(child.line, path, f"{child.raw} already has another short name")
        else:
            resources[short] = child.raw
    return resources


def _cap(name: str, node: YNode) -> int:
    text = node.raw or ""
    if name == "cpu":
        return cpu_millicores(text)
    if name == "memory":
        if text.endswith("m"):  # Kubernetes reads 500m memory as half a byte
            raise Invalid(
                f"{text!r} is {text[:-1]} thousandths of a byte; did you mean "
                f"{text[:-1]}Mi or {text[:-1]}M?"
            )
        return memory_bytes(text)
    if name == SERVERS:
        count = number(text)
        if count != int(count):
            raise Invalid(f"{text!r} is not a whole number of servers")
        return int(count)
    return device_count(text)


def running_caps(
    node: YNode, path: str, extended: list[str], issues: Issues
) -> dict[str, int | None]:
    entries = check_keys(node, path, ["cpu", "memory", *extended, SERVERS], issues, EXTENDED_HINT)
    running: dict[str, int | None] = {}
    for name, child in entries.items():
        key = child_path(path, name)
        if child.value is None:
            running[name] = None
        elif isinstance(child.value, dict | list | bool):
            issues.add(child.line, key, "must be an amount such as 4, 500m, 32Gi or 2")
        else:
            cap = read_field(child, key, lambda n, r=name: _cap(r, n), issues)
            if cap is not None:
                running[name] = cap
    return running
