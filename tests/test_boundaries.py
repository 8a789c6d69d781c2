"""The one-way layers of docs/architecture.md hold, and the check that guards them can fail.

`lint-imports` (import-linter, contracts in pyproject.toml) runs in `make test`; these tests
show it catches an import planted inside a function, and cover what it cannot see: modules
named in strings, cycles across the three top-level packages, and Kubernetes code loaded at
run time.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("ledger", "collector", "quota_ledger_demo")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

PROBE = """
import importlib, pkgutil, sys
import ledger
for info in pkgutil.walk_packages(ledger.__path__, "ledger."):
    if info.name.startswith("ledger.migrations") or info.name == "ledger.__main__":
        continue  # alembic scripts, loaded by alembic only
    importlib.import_module(info.name)
from ledger.cli import build_parser
build_parser()  # registering every sub-command (collect included) must not import it either
bad = sorted(m for m in sys.modules if m.split(".")[0] in ("kubernetes_asyncio", "kubernetes"))
print(",".join(bad))
"""


def test_ledger_never_imports_kubernetes():
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"ledger imported: {result.stdout}"


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    # cwd comes first on lint-imports' sys.path, ahead of the editable install's finder;
    # wide COLUMNS keeps each contract's name on one line of the report
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo"],
        cwd=cwd,
        env={**os.environ, "COLUMNS": "400"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_contracts_hold():
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def checkout_copy(tmp_path_factory) -> Path:
    """The packages and the contracts, copied so a test can plant an import in them."""
    copy = tmp_path_factory.mktemp("checkout")
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, copy / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    return copy


PLANTED = [
    # (module that gets a function, the import inside it, the contract that must break)
    ("ledger.core.times", "import sqlalchemy", "The core is pure"),
    ("ledger.core.usage", "from ledger.store import db", "Layers"),
    ("ledger.hub.request", "from ledger.web import app", "Layers"),
    ("ledger.store.queries", "import tornado", "The store holds the SQL"),
    ("ledger.cli.common", "import collector.daemon", "ledger never imports the collector"),
    ("ledger.web.chart", "import kubernetes_asyncio", "ledger never imports the collector"),
    ("ledger.enforcer.hub_api", "import docker", "ledger never imports the collector"),
    ("ledger.core.resources", "import aiodocker", "The core is pure"),
    ("collector.daemon", "import quota_ledger_demo.fake_store", "No product module imports"),
    ("ledger.store.status", "from ledger.store import page_reads", "No import cycles"),
]


@pytest.mark.parametrize(("module", "statement", "contract"), PLANTED)
def test_an_import_planted_inside_a_function_breaks_a_contract(
    checkout_copy, module, statement, contract
):
    path = checkout_copy / (module.replace(".", "/") + ".py")
    original = path.read_text(encoding="utf-8")
    planted = original + f"\n\ndef _planted():\n    {statement}  # noqa\n"
    if contract == "No import cycles":  # the other half of the cycle
        other = checkout_copy / "ledger/store/page_reads.py"
        other_original = other.read_text(encoding="utf-8")
        other.write_text(
            other_original + "\n\ndef _planted():\n    from ledger.store import status\n"
        )
    path.write_text(planted, encoding="utf-8")
    try:
        result = _lint_imports(checkout_copy)
    finally:
        path.write_text(original, encoding="utf-8")
        if contract == "No import cycles":
            other.write_text(other_original, encoding="utf-8")
    assert result.returncode != 0, result.stdout
    broken = [line for line in result.stdout.splitlines() if " BROKEN" in line]
    assert any(line.startswith(contract) for line in broken), result.stdout
    assert module.rsplit(".", 1)[-1] in result.stdout  # the report names the culprit


FORBIDDEN_ROOTS = ("collector", "kubernetes_asyncio", "kubernetes", "quota_ledger_demo")
MODULE_NAME = re.compile(r"^(" + "|".join(FORBIDDEN_ROOTS) + r")(\.[A-Za-z_][\w.]*)?$")
# "collector" alone is also a value (segments.source); alone it counts only in an import call
PLAIN_WORDS = {"collector", "kubernetes"}
IMPORT_CALLS = {"import_module", "__import__", "find_spec", "import_string", "load_module"}


def _import_call_prefix(node: ast.Call) -> str | None:
    """The module name (or its constant prefix) an import call is given, else None."""
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    if name not in IMPORT_CALLS or not node.args:
        return None
    arg = node.args[0]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    if isinstance(arg, ast.JoinedStr):
        text = "".join(p.value if isinstance(p, ast.Constant) else "{}" for p in arg.values)
        return text.split("{}")[0].rstrip(".")
    return None


def _modules_named_in_strings(tree: ast.AST) -> list[tuple[int, str]]:
    """Forbidden module names in string constants and in import calls' arguments."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and (prefix := _import_call_prefix(node)) is not None:
            if MODULE_NAME.match(prefix.strip()):
                found.append((node.lineno, prefix))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            value = node.value.strip()
            if MODULE_NAME.match(value) and value not in PLAIN_WORDS:
                found.append((node.lineno, value))
    return sorted(set(found))


def test_ledger_names_no_collector_or_kubernetes_module_in_a_string():
    """import-linter sees import statements only; ``importlib.import_module("collector.x")``
    would slip past it. The CLI finds ``collect`` and ``demo`` by entry point instead."""
    offenders = []
    for path in sorted((ROOT / "ledger").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for lineno, value in _modules_named_in_strings(tree):
            offenders.append(f"{path.relative_to(ROOT)}:{lineno}: {value!r}")
    assert offenders == []


def test_the_string_check_catches_an_import_by_name():
    source = (
        "import importlib\n"
        "def f(name):\n"
        "    importlib.import_module('collector')\n"
        "    importlib.import_module(f'quota_ledger_demo.{name}')\n"
        "    __import__('kubernetes_asyncio')\n"
        "    modules = {'x': 'collector.daemon'}\n"
        "    return {'source': 'collector', 'command': 'collect'}\n"  # values, not modules
    )
    found = [value for _, value in _modules_named_in_strings(ast.parse(source))]
    assert sorted(found) == [
        "collector",
        "collector.daemon",
        "kubernetes_asyncio",
        "quota_ledger_demo",
    ]


SQL_BUILDERS = {"text", "select", "insert", "update", "delete", "func", "bindparam", "literal"}
SQL_STATEMENT = re.compile(
    r"\b(SELECT\b.+\bFROM|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|SELECT\s+\d)\b",
    re.DOTALL,
)


def _sql_in(tree: ast.AST) -> list[tuple[int, str]]:
    """SQL statement builders imported from SQLAlchemy, and string constants holding SQL."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy"):
            found += [(node.lineno, a.name) for a in node.names if a.name in SQL_BUILDERS]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if SQL_STATEMENT.search(node.value):
                found.append((node.lineno, node.value.strip().splitlines()[0][:60]))
    return found


def test_sql_lives_in_the_store():
    """Every SQL statement of the product is in ledger/store (the demo's live table aside)."""
    offenders = []
    for package in ("ledger", "collector"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.is_relative_to(ROOT / "ledger" / "store"):
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            offenders += [f"{path.relative_to(ROOT)}:{n}: {what}" for n, what in _sql_in(tree)]
    assert offenders == []


def test_the_sql_check_finds_sql():
    source = (
        "from sqlalchemy import text\n"
        "Q = 'SELECT username FROM segments WHERE x = :x'\n"
        "async def ping(conn):\n"
        "    await conn.execute(text('SELECT 1'))\n"
        "HELP = 'select a user from the list'\n"  # prose, not SQL
    )
    assert [n for n, _ in _sql_in(ast.parse(source))] == [1, 2, 4]


def _cycles(graph: grimp.ImportGraph, modules: set[str]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    edges = {m: sorted(graph.find_modules_directly_imported_by(m) & modules) for m in modules}
    for start in sorted(modules):
        if start in index:
            continue
        work = [(start, 0)]
        while work:
            node, child_index = work.pop()
            if child_index == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            children = edges[node]
            if child_index < len(children):
                work.append((node, child_index + 1))
                child = children[child_index]
                if child not in index:
                    work.append((child, 0))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return components


def test_no_import_cycles_across_the_packages():
    """The acyclic_siblings contract checks siblings; this checks every module pair, across
    ledger, collector and the demo tooling, imports inside functions included."""
    graph = grimp.build_graph(*PACKAGES)
    modules = {m for m in graph.modules if m.split(".")[0] in PACKAGES}
    assert _cycles(graph, modules) == []


def test_the_cycle_check_finds_a_cycle():
    graph = grimp.ImportGraph()
    for name in ("a", "a.x", "a.y", "a.z"):
        graph.add_module(name)
    graph.add_import(importer="a.x", imported="a.y")
    graph.add_import(importer="a.y", imported="a.z")
    graph.add_import(importer="a.z", imported="a.x")
    graph.add_import(importer="a", imported="a.x")
    assert _cycles(graph, set(graph.modules)) == [["a.x", "a.y", "a.z"]]
