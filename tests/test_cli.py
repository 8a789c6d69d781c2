"""The CLI contract other tools script against: formats, units, exit codes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ledger.cli import main

ROOT = Path(__file__).resolve().parent.parent
POLICY = ROOT / "examples" / "policy.yaml"
ROWS = [
    # bob: 16 GiB for 4 h = 64 GiB-hours, over regular's 60
    {"username": "bob", "started_at": "2026-10-20T00:00:00Z", "ended_at": "2026-10-20T04:00:00Z",
     "cpu": "2", "memory": "16Gi"},
    # sam: 4 GiB for 5 h = 20 GiB-hours
    {"username": "sam", "started_at": "2026-10-25T10:00:00Z", "ended_at": "2026-10-25T15:00:00Z",
     "cpu": "1", "memory": "4Gi"},
]  # fmt: skip
AT = "2026-11-01T00:00:00Z"


@pytest.fixture
def loaded(fresh_db_url, tmp_path):
    path = tmp_path / "usage.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    assert main(["import", str(path), "--db", fresh_db_url]) == 0
    return fresh_db_url


def run_json(capsys, *argv):
    code = main([*argv, "--format", "json"])
    return code, json.loads(capsys.readouterr().out)


def test_check_exit_codes_and_json(loaded, capsys):
    args = ["--db", loaded, "--config", str(POLICY), "--at", AT]
    code, out = run_json(capsys, "check", "sam", "--group", "regular", "--memory", "4Gi", *args)
    assert code == 0 and out["allowed"] is True and out["retry_at"] is None
    assert out["resources"]["memory"]["used"] == 20.0
    assert out["resources"]["memory"]["limit"] == 60.0
    assert out["resources"]["memory"]["remaining"] == 40.0
    code, out = run_json(capsys, "check", "bob", "--group", "regular", "--memory", "4Gi", *args)
    assert code == 1 and out["allowed"] is False and out["retry_at"].startswith("2026-11-19")
    code = main(["check", "bob", "--memory", "4 GB", *args])
    assert code == 2 and "4Gi" in capsys.readouterr().err


def test_usage_and_report_json(loaded, capsys, tmp_path):
    args = ["--db", loaded, "--config", str(POLICY), "--at", AT]
    code, out = run_json(capsys, "usage", "sam", *args)
    assert code == 0 and out["resources"]["memory"]["used"] == 20.0
    assert out["resources"]["cpu"]["used"] == 5.0
    groups = tmp_path / "groups.yaml"
    groups.write_text("bob: [power]\nsam: regular\n")
    code, out = run_json(capsys, "report", "--groups-file", str(groups), *args)
    assert code == 0
    by_user = {u["username"]: u for u in out}
    assert by_user["bob"]["resources"]["memory"]["used"] == 64.0
    assert by_user["bob"]["resources"]["memory"]["limit"] == 240.0
    assert by_user["sam"]["resources"]["memory"]["percent_used"] == pytest.approx(33.33)
    assert main(["report", "--format", "csv", *args]) == 0
    csv_out = capsys.readouterr().out.splitlines()
    assert csv_out[0].startswith("username,groups,running_servers,cpu_used_CPU-hours")
    assert len(csv_out) == 3


def test_decisions_lists_denials_newest_first(loaded, capsys):
    args = ["--db", loaded, "--config", str(POLICY), "--record", "--format", "json"]
    for user, at in (("sam", "2026-11-01T00:00:00Z"), ("bob", "2026-11-01T01:00:00Z"),
                     ("bob", "2026-11-01T02:00:00Z")):  # fmt: skip
        main(["check", user, "--group", "regular", "--memory", "4Gi", "--at", at, *args])
    capsys.readouterr()
    code, out = run_json(capsys, "decisions", "--db", loaded)
    assert code == 0
    assert [(d["username"], d["outcome"]) for d in out] == [("bob", "denied")] * 2
    assert out[0]["decided_at"] > out[1]["decided_at"]
    code, out = run_json(capsys, "decisions", "--db", loaded, "--all", "--user", "sam")
    assert [(d["username"], d["outcome"]) for d in out] == [("sam", "allowed")]
    code, out = run_json(capsys, "decisions", "--db", loaded, "--all", "--limit", "1")
    assert len(out) == 1 and out[0]["username"] == "bob"


def test_bad_at_and_bad_config_exit_2(loaded, capsys, tmp_path):
    assert main(["usage", "sam", "--db", loaded, "--at", "2026-11-01T00:00:00"]) == 2
    assert "no time zone" in capsys.readouterr().err
    bad = tmp_path / "policy.yaml"
    bad.write_text("groups:\n  regular: {memory: 60 GiB}\n")
    assert main(["check", "sam", "--db", loaded, "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:2" in err and "GiB-hours" in err
    assert main(["check", "sam", "--db", loaded]) == 2
    assert "--config" in capsys.readouterr().err


def test_schema_behind_is_refused(empty_db_url, capsys):
    assert main(["usage", "sam", "--db", empty_db_url]) == 2
    assert "quota-ledger migrate" in capsys.readouterr().err
    assert main(["migrate", "--db", empty_db_url]) == 0
    assert main(["usage", "sam", "--db", empty_db_url]) == 0


def test_unreachable_database_exit_2(capsys, tmp_path):
    url = f"postgresql+asyncpg://nobody:secret@/x?host={tmp_path}&port=1"
    assert main(["usage", "sam", "--db", url]) == 2
    err = capsys.readouterr().err
    assert "cannot reach the database" in err and "secret" not in err


def test_import_bad_file_exit_2_and_nothing_written(loaded, capsys, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "username,started_at,memory\ncarol,2026-10-01T00:00:00Z,4Gi\n,2026-10-01T00:00:00Z,x\n"
    )
    assert main(["import", str(bad), "--db", loaded]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:3" in err and "nothing was imported" in err
    code, out = run_json(capsys, "report", "--db", loaded, "--at", AT)
    assert "carol" not in {u["username"] for u in out}


def test_import_warns_of_rows_the_ledger_holds_differently(loaded, capsys, tmp_path):
    first = tmp_path / "one.csv"
    first.write_text("username,started_at,ended_at,memory,pod_uid\n"
                     "carol,2026-10-01T00:00:00Z,2026-10-01T02:00:00Z,4Gi,c1\n")  # fmt: skip
    assert main(["import", str(first), "--db", loaded]) == 0
    capsys.readouterr()
    later = tmp_path / "two.csv"
    later.write_text("username,started_at,ended_at,memory,pod_uid\n"
                     "carol,2026-10-01T00:00:00Z,2026-10-01T05:00:00Z,4Gi,c1\n")  # fmt: skip
    assert main(["import", str(later), "--db", loaded]) == 0
    captured = capsys.readouterr()
    assert "1 already recorded (1 of them differently)" in captured.out
    assert f"warning: {later}:2: pod_uid c1 started_at 2026-10-01T00:00:00+00:00" in captured.err
    assert "the ledger keeps its own; to change usage, use `quota-ledger credit`" in captured.err
    code, out = run_json(capsys, "import", str(later), "--db", loaded)
    assert code == 0 and out["differing"] == 1
    assert out["differing_lines"][0]["line"] == 2


def test_import_validates_before_it_reaches_the_database(capsys, tmp_path):
    # an unreachable database: the file's own errors are what the operator needs first
    url = f"postgresql+asyncpg://nobody@/x?host={tmp_path}&port=1"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"username": "carol", "started_at": "2026-10-01"}\n')
    assert main(["import", str(bad), "--db", url]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:1: started_at" in err and "cannot reach the database" not in err
    assert main(["import", str(tmp_path / "missing.jsonl"), "--db", url]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_console_script_runs():
    exe = Path(sys.executable).parent / "quota-ledger"
    result = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60,
                            env={**os.environ})  # fmt: skip
    assert result.returncode == 0
    for command in ("migrate", "import", "check", "usage", "report"):
        assert command in result.stdout


def test_migrate_wait_gives_up_with_a_clear_message(capsys, tmp_path):
    url = f"postgresql+asyncpg://nobody@/x?host={tmp_path}&port=1"
    assert main(["migrate", "--db", url, "--wait", "1"]) == 2
    assert "did not answer within 1 s" in capsys.readouterr().err


def test_rollups_verify_and_rebuild(loaded, capsys):
    import asyncio

    from sqlalchemy import text

    from ledger.store import db

    code, out = run_json(capsys, "rollups", "verify", "--db", loaded)
    assert code == 0 and out == {"ok": True, "mismatches": []}

    async def corrupt():
        engine = db.create_engine(loaded)
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE usage_rollups SET cpu_used = cpu_used * 2"))
        await engine.dispose()

    asyncio.run(corrupt())
    code, out = run_json(capsys, "rollups", "verify", "--db", loaded)
    assert code == 1 and {m["username"] for m in out["mismatches"]} == {"bob", "sam"}
    assert main(["rollups", "verify", "--db", loaded]) == 1
    assert "rollups rebuild" in capsys.readouterr().out
    code, out = run_json(
        capsys, "rollups", "rebuild", "--since", "2026-10-01T00:00Z", "--db", loaded
    )
    assert code == 0 and out["rows"] == 2 and out["rebuilt_from"].startswith("2026-10-01")
    assert main(["rollups", "verify", "--db", loaded]) == 0
    assert main(["rollups", "verify", "--since", "not a time", "--db", loaded]) == 2


def test_check_and_report_show_pools_and_hub_caps(loaded, capsys, tmp_path):
    policy = tmp_path / "shared.yaml"
    policy.write_text(
        POLICY.read_text().replace(
            "  regular: {memory: 60 GiB-hours, gpu: 0 GPU-hours}",
            "  regular: {memory: 60 GiB-hours, gpu: 0 GPU-hours,\n"
            "            pool: {memory: 80 GiB-hours, running: {servers: 3}}}",
        )
        + "hub:\n  running: {memory: 64Gi}\n"
    )
    args = ["--db", loaded, "--config", str(policy), "--at", AT]

    async def members():  # the group cache the hub hook keeps
        from ledger.core.times import parse_at
        from ledger.store import db, queries

        engine = db.create_engine(loaded)
        async with engine.begin() as conn:
            for user in ("bob", "sam"):
                await queries.record_groups(conn, user, ["regular"], parse_at(AT))
            # bob runs a 16 GiB server since an hour ago: 16 GiB-hours more, and he holds it
            await queries.upsert_segments(conn, [{
                "pod_uid": "bob-running", "username": "bob", "servername": "",
                "cpu_millicores": 1000, "memory_bytes": 16 * 2**30, "gpu_count": 0,
                "started_at": parse_at("2026-10-31T23:00:00Z"), "ended_at": None}])  # fmt: skip
        await engine.dispose()

    asyncio.run(members())
    # the pool counts every member's usage: bob's 64 + 16 + sam's 20 GiB-hours > 80
    code, out = run_json(capsys, "check", "sam", "--group", "regular", "--memory", "4Gi", *args)
    assert code == 1 and out["reasons"] == ["pool:regular_used_up:memory"]
    assert out["shared"]["bottleneck"]["level"] == "pool"
    # the CLI is an admin's: who holds each cap is in its JSON
    hub = next(c for c in out["shared"]["checks"] if c["level"] == "hub")
    assert hub["in_use"] == 16 and hub["holders"] == {"bob": 16}
    assert main(["check", "sam", "--group", "regular", "--memory", "4Gi", *args]) == 1
    text = " ".join(capsys.readouterr().out.split())  # the console wraps long lines
    assert "pool regular memory: the regular group's pool has used 100 GiB-hours of its 80" in text
    assert "hub memory: 16 GiB of 64 GiB in use on this hub; held by bob 16" in text
    assert "pool regular servers: 1 of 3 servers in use in the regular group's pool; held by bob 1" in text  # fmt: skip
    assert main(["report", *args]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "shared capacity" in text and "pool regular" in text and "100" in text
    assert "held by" in text and "bob 16" in text


def _with(url: str, **parts) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(**parts).render_as_string(hide_password=False)


@pytest.mark.parametrize(
    ("make_url", "said"),
    [
        (lambda server: _with(server, database="no_such_db"),
         'database "no_such_db" does not exist'),
        (lambda server: _with(server, username="nobody_here", password=None),
         'role "nobody_here" does not exist'),
        (lambda server: "notaurl", "is not a PostgreSQL URL"),
        (lambda server: "mysql://x@y/z", "is not a PostgreSQL URL"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("command", [["usage", "alice"], ["report"], ["rollups", "verify"]])
def test_a_wrong_database_url_is_one_line_and_exit_2(pg_server_url, capsys, make_url, said,
                                                     command):  # fmt: skip
    """Before, a database or role the server does not know (asyncpg's own errors, not
    wrapped by SQLAlchemy) and a URL SQLAlchemy cannot use were tracebacks with exit 1."""
    url = make_url(pg_server_url)
    assert main([*command, "--db", url]) == 2
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
