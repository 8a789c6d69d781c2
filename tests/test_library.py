"""The public library API (ledger/__init__.py, docs/library.md): its names, its cost, its example."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from hub_support.ledger_data import insert, segment
from sqlalchemy import text

import ledger
from ledger.core.times import utcnow

ROOT = Path(__file__).resolve().parent.parent
LIBRARY_DOC = ROOT / "docs" / "library.md"
PUBLIC = ["connect", "load_policy", "parse_policy", "decide", "record_decision", "ServerRequest",
          "Decision", "Policy", "PolicyError", "QuantityError", "DatabaseError",
          "DatabaseNotConfigured"]  # fmt: skip


def python_block(markdown: str) -> str:
    blocks = re.findall(r"^```python\n(.*?)^```$", markdown, flags=re.M | re.S)
    runnable = [b for b in blocks if "asyncio.run(" in b]
    assert len(runnable) == 1, "docs/library.md must hold exactly one runnable example"
    return runnable[0]


def test_the_public_names_resolve_and_are_listed():
    assert set(PUBLIC) <= set(ledger.__all__) and set(PUBLIC) <= set(dir(ledger))
    from ledger.core.decision import ServerRequest
    from ledger.store.decide import decide, record

    assert ledger.ServerRequest is ServerRequest
    assert ledger.decide is decide and ledger.record_decision is record
    for name in ledger.__all__:
        assert getattr(ledger, name) is not None
    with pytest.raises(AttributeError, match="no_such_name"):
        ledger.no_such_name  # noqa: B018


def test_import_ledger_stays_cheap():
    probe = "import sys, ledger; print(sorted(m for m in ('sqlalchemy', 'yaml', 'asyncpg') if m in sys.modules))"  # noqa: E501
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=60, check=True).stdout  # fmt: skip
    assert out.strip() == "[]"


def test_from_quantities_names_the_bad_one():
    request = ledger.ServerRequest.from_quantities({"cpu": "500m", "memory": "4Gi", "gpu": None})
    assert request.amounts == {"cpu": 500, "memory": 4 * 2**30}
    with pytest.raises(ledger.QuantityError, match="memory"):
        ledger.ServerRequest.from_quantities({"memory": "4 GB"})


async def test_connect_without_a_url_says_which_variable(monkeypatch):
    monkeypatch.delenv("QUOTA_LEDGER_DB_URL", raising=False)
    with pytest.raises(ledger.DatabaseNotConfigured, match="QUOTA_LEDGER_DB_URL"):
        await ledger.connect()


async def test_connect_refuses_a_database_without_the_schema(empty_db_url):
    with pytest.raises(ledger.DatabaseError, match="quota-ledger migrate"):
        await ledger.connect(empty_db_url)


async def test_docs_example_runs_verbatim(fresh_db_url, engine, tmp_path):
    now = utcnow()
    await insert(engine, [
        segment("bob", now - timedelta(days=3), 4, memory_gib=16),  # 64 GiB-hours
        segment("sam", now - timedelta(days=5), 5, memory_gib=4),  # 20 GiB-hours
    ])  # fmt: skip
    script = tmp_path / "example.py"
    script.write_text(python_block(LIBRARY_DOC.read_text()))
    env = {**os.environ, "QUOTA_LEDGER_DB_URL": fresh_db_url,
           "QUOTA_LEDGER_CONFIG": str(ROOT / "examples" / "policy.yaml")}  # fmt: skip
    result = subprocess.run([sys.executable, str(script)], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "sam: allowed=True retry_at=None"
    assert lines[1] == ("  Quota: 20 of 60 GiB-hours used in the last 30 days. "
                        "This 2 CPUs, 8 GiB server can run about 5 hours.")  # fmt: skip
    assert lines[2].startswith("bob: allowed=False retry_at=20")
    assert "You have used 64 GiB-hours of your 60 GiB-hours of memory" in lines[3]
    async with engine.connect() as conn:
        logged = (await conn.execute(text("SELECT username, source, outcome FROM decisions"))).all()
    assert [tuple(r) for r in logged] == [("bob", "script", "denied")]
