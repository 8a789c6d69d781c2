"""Every ``quota-ledger …`` line in a shell block of README.md and docs/cli.md runs, as typed (``ledger.cli.main``, the script's entry point),
against a copy of the demo's ledger, and exits with the status the doc gives it.

A line exits 0 unless its comment says ``exit N`` (``quota-ledger check … # exit 1: …``).
The files the docs' lines name (usage.jsonl, groups.yaml, pools.yaml) are written, in the formats the
README describes, into the directory the commands run in. A line with ``--format json`` must
print JSON, and the keys docs/cli.md's tables list for that command must be in it.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import asyncpg
import pytest
from docs_examples import ROOT, blocks, command_lines
from sqlalchemy.engine import make_url

from ledger.cli import main
from ledger.store import db
from quota_ledger_demo.command import POLICY_FILE

DOCS = ("README.md", "docs/cli.md")
LINES = [
    (block, command, comment)
    for doc in DOCS
    if (ROOT / doc).exists()
    for block in blocks(ROOT / doc)
    if block.lang in ("sh", "bash", "console", "shell")
    for command, comment in command_lines(block)
]
FILES = {
    "usage.jsonl": json.dumps(
        {
            "username": "ivy",
            "started_at": "2026-11-20T09:00:00Z",
            "ended_at": "2026-11-20T13:00:00Z",
            "cpu": "1",
            "memory": "4Gi",
            "gpu": 0,
        }
    )
    + "\n",
    "groups.yaml": "sam: [power]\nivy: [regular]\n",
    # docs/cli.md's pool grants: a policy whose gpu-dev group has a pool budget
    "pools.yaml": "groups:\n  gpu-dev: {gpu: 160 GPU-hours, pool: {gpu: 500 GPU-hours}}\n",
}


def expected_status(comment: str) -> int:
    found = re.search(r"\bexit (\d)\b", comment)
    return int(found[1]) if found else 0


def documented_keys() -> dict[str, set[str]]:
    """docs/cli.md's key tables: ``### title`` -> the backticked keys of its first column;
    ``commands`` -> the commands named by the ``## JSON of …`` heading the tables belong to."""
    path = ROOT / "docs/cli.md"
    tables: dict[str, set[str]] = {}
    title = None
    for line in path.read_text().splitlines() if path.exists() else []:
        if line.startswith("## "):
            title = None
            if line.startswith("## JSON of"):
                tables["commands"] = set(re.findall(r"`(\w+)`", line))
        elif line.startswith("### "):
            title = line[4:].strip()
        elif title and line.startswith("| `"):
            tables.setdefault(title, set()).update(re.findall(r"`(\w+)`", line.split("|")[1]))
    return tables


def missing_keys(command: str, printed) -> list[str]:
    """The keys docs/cli.md lists for ``command``'s JSON that ``printed`` lacks."""
    tables = documented_keys()
    if command not in tables.get("commands", set()):
        return []
    own = next((keys for title, keys in tables.items() if title.startswith(f"`{command} ")), set())
    users = printed if isinstance(printed, list) else [printed]
    missing = set()
    for user in users:
        missing |= (tables.get("Per user", set()) | own) - set(user)
        for name, record in user.get("resources", {}).items():
            missing |= {
                f"resources.{name}.{k}" for k in tables.get("Per resource", set()) - set(record)
            }
    return sorted(missing)


@pytest.fixture(scope="module")
async def ledger_copy(demo_ledger, pg_server_url):
    """The demo's ledger copied (CREATE DATABASE … TEMPLATE): `import` lines write to it."""
    url, _ = demo_ledger
    source = db.asyncpg_params(url)["database"]
    name = f"{source}_cli"
    conn = await asyncpg.connect(**db.asyncpg_params(pg_server_url))
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{source}"')
        yield make_url(url).set(database=name).render_as_string(hide_password=False)
    finally:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("docs-cli")
    for name, content in FILES.items():
        (path / name).write_text(content)
    return path


def test_the_docs_have_command_lines():
    assert len(LINES) >= 6, LINES


@pytest.mark.parametrize(
    "block,command,comment", LINES, ids=[f"{b.where} {c[13:50]}" for b, c, _ in LINES]
)
def test_command_line_runs(block, command, comment, ledger_copy, workdir, monkeypatch, capsys):
    # in-process (the `quota-ledger` script is `ledger.cli:main`): a Python start per line
    # would make this the slowest test file for nothing the CLI tests do not cover
    monkeypatch.setenv("QUOTA_LEDGER_DB_URL", ledger_copy)
    monkeypatch.setenv("QUOTA_LEDGER_CONFIG", str(POLICY_FILE))
    monkeypatch.setenv("QUOTA_LEDGER_HOME", str(workdir / "no-embedded-server"))
    monkeypatch.chdir(workdir)
    argv = shlex.split(command)
    assert argv[0] == "quota-ledger"
    try:
        returncode = main(argv[1:])
    except SystemExit as exc:  # argparse: a usage error
        returncode = exc.code
    run = capsys.readouterr()
    want = expected_status(comment)
    assert returncode == want, (
        f"{block.where}: `{command}` exited {returncode}, the doc implies {want}\n"
        f"stdout:\n{run.out}\nstderr:\n{run.err}"
    )
    if "--format json" in command or "--format=json" in command:
        missing = missing_keys(argv[1], json.loads(run.out))
        assert not missing, (
            f"{block.where}: `{command}` lacks the keys docs/cli.md lists: {missing}"
        )
