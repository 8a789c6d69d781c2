"""The decision library never imports Kubernetes code; only `collector` does."""

from __future__ import annotations

import subprocess
import sys

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
