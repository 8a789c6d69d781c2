"""Every fenced ``sql`` block of README.md and docs/*.md runs in the real ``psql`` client against
a migrated ledger holding the demo's data, and matches its stated result (tests/docs_examples.py
says how a doc states one).

All blocks run in one psql process, each inside BEGIN … ROLLBACK (so a GRANT or CREATE ROLE
example leaves nothing behind), separated by echoed markers; only when that run fails is each
block rerun alone, to say which one broke and why.
"""

from __future__ import annotations

import os
import re
import subprocess

import pytest
from docs_examples import Block, matches, sql_blocks
from requirements import require

from ledger.store import db

BLOCKS = [b for b in sql_blocks() if not b.tagged("skip")]
SEPARATOR = "@@docs-example "
# What Grafana's PostgreSQL data source substitutes before it runs a panel's query
# (https://grafana.com/docs/grafana/latest/datasources/postgres/#macros): the last 30 days.
GRAFANA_MACROS = {
    r"\$__timeFrom\(\)": "(now() - interval '30 days')",
    r"\$__timeTo\(\)": "now()",
    r"\$__timeFilter\((\w+)\)": r"\1 BETWEEN now() - interval '30 days' AND now()",
    r"\$__unixEpochFrom\(\)": "extract(epoch FROM now() - interval '30 days')",
    r"\$__unixEpochTo\(\)": "extract(epoch FROM now())",
}


def runnable(block: Block, database: str) -> str:
    sql = block.text
    for macro, value in GRAFANA_MACROS.items():
        sql = re.sub(macro, value, sql)
    # the docs name the chart's database; the test's has its own name
    sql = re.sub(r"\bDATABASE quota_ledger\b", f'DATABASE "{database}"', sql)
    return f"BEGIN;\n{sql.rstrip().rstrip(';')};\nROLLBACK;\n"


def psql(url: str, script: str) -> subprocess.CompletedProcess:
    params = db.asyncpg_params(url)
    env = {
        **os.environ,
        "PGHOST": str(params.get("host", "")),
        "PGPORT": str(params.get("port", 5432)),
        "PGUSER": params["user"],
        "PGDATABASE": params["database"],
        "PGPASSWORD": params.get("password", ""),
        "PGTZ": "UTC",
    }
    return subprocess.run(
        [require("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-P", "pager=off", "-f", "-"],
        input=script,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


@pytest.fixture(scope="module")
def outputs(demo_ledger) -> dict[str, str | subprocess.CompletedProcess]:
    """block.where -> its psql output, or the failed run of that block alone."""
    url, _ = demo_ledger
    database = db.asyncpg_params(url)["database"]
    script = "".join(f"\\echo '{SEPARATOR}{b.where}'\n{runnable(b, database)}" for b in BLOCKS)
    run = psql(url, script)
    if run.returncode == 0:
        chunks = run.stdout.split(SEPARATOR)[1:]
        return dict(chunk.split("\n", 1) for chunk in chunks)
    result = {}
    for b in BLOCKS:
        alone = psql(url, runnable(b, database))
        result[b.where] = alone.stdout if alone.returncode == 0 else alone
    return result


def test_the_docs_have_sql_examples():
    # a parser that finds nothing would pass every test below
    assert len(BLOCKS) >= 8 and any(b.result for b in BLOCKS)


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: f"{b.where} {b.heading[:40]}")
def test_sql_example_runs_in_psql(block, outputs):
    output = outputs[block.where]
    if isinstance(output, subprocess.CompletedProcess):
        pytest.fail(
            f"{block.where} ({block.heading}) fails in psql:\n{output.stderr}\n{block.text}"
        )
    if block.result is not None:
        assert matches(block.result, output), (
            f"{block.where}: psql printed\n{output}\nbut the doc states\n{block.result}"
        )


def test_a_stated_result_that_differs_fails():
    stated = " username | n\n----------+---\n sam      | 1\n(1 row)\n"
    assert matches(stated, " username |  n\n----------+----\n sam      |  1\n(1 row)\n")
    assert not matches(stated, " username | n\n----------+---\n sam      | 2\n(1 row)\n")
    assert matches(" a\n---\n...\n(3 rows)\n", " a\n---\n 1\n 2\n 3\n(3 rows)\n")
    assert not matches(" a\n---\n...\n(3 rows)\n", " a\n---\n 1\n(1 row)\n")
