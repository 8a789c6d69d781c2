"""A YAML file read the way an admin needs it checked: line numbers, strict keys, all errors.

PyYAML's ``safe_load`` forgets where values came from, and an admin fixing a policy needs
"policy.yaml:7: groups.regular.memory: ...". So the document is composed into PyYAML's node
tree and walked into ``YNode``s that keep the 1-based line of each mapping key and the scalar
text exactly as written. The text matters: YAML 1.1 reads ``010`` as octal 8 and ``on`` as
true, while an admin means ten and a group called "on".

Value parsers raise ``Invalid(message)`` (or QuantityError, DurationError); ``read_field``
knows the node and dotted key and turns it into a ``PolicyIssue``, so every problem in a
file is reported in one go. Pure: the caller passes the text.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import yaml

from ledger.core.durations import DurationError
from ledger.core.quantities import QuantityError

__all__ = [
    "Invalid",
    "Issues",
    "PolicyError",
    "PolicyIssue",
    "YNode",
    "check_keys",
    "child_path",
    "choice",
    "compose",
    "named_entries",
    "read_field",
    "scalar_text",
    "shown",
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
    except RecursionError:  # PyYAML composes and constructs recursively
        issues.add(None, "", "YAML nested too deeply to read; a policy is a few levels deep")
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
        try:
            return YNode(loader.construct_object(node), line, node.value)
        except (ValueError, yaml.YAMLError) as error:
            # a scalar YAML types but cannot build: 2026-02-30 is a timestamp with no such day
            # (https://yaml.org/type/timestamp.html), !!int x has no number
            issues.add(line, path, f"{node.value!r} cannot be read ({error}); quote it for text")
            return YNode(None, line)
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
        issues.add(node.line, path, f"must be a mapping with keys {keys}; got {shown(node)}")
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


def shown(node: YNode) -> str:
    if node.is_mapping():
        return "a mapping"
    if isinstance(node.value, list):
        return "a list"
    return repr(node.raw if node.raw is not None else node.value)


def read_field(node: YNode | None, path: str, parse: Callable, issues: Issues):
    if node is None:
        return None
    try:
        return parse(node)
    except (Invalid, QuantityError, DurationError) as error:
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
