"""``grant --group``, ``credit --group``, ``grants --group`` and ``revoke`` for a group's pool,
through the CLI: the pool budget in ``check`` moves with them, a spent pool says when it frees
(``retry_at``: allowed at that second, refused one second before), and bad input exits 2
saying what would be valid."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
from test_cli import AT, ROWS

from ledger.cli import main

POLICY = "window: 30d\ngroups:\n  lab: {memory: 100000 GiB-hours, pool: {memory: 50 GiB-hours}}\n"


@pytest.fixture
def loaded(fresh_db_url, tmp_path):
    path = tmp_path / "usage.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    assert main(["import", str(path), "--db", fresh_db_url]) == 0
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    return fresh_db_url, str(policy)


def run_json(capsys, *argv):
    code = main([*argv, "--format", "json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def check(capsys, loaded, at=AT):
    db, policy = loaded
    code = main(["check", "bob", "--group", "lab", "--memory", "4Gi", "--db", db,
                 "--config", policy, "--at", at, "--format", "json"])  # fmt: skip
    return code, json.loads(capsys.readouterr().out)


def pool_check(out):
    return next(c for c in out["shared"]["checks"] if c["kind"] == "budget")


def test_a_spent_pool_says_when_it_frees_and_a_pool_grant_lifts_it(loaded, capsys):
    db = ["--db", loaded[0], "--config", loaded[1]]
    code, out = check(capsys, loaded)  # bob's 64 GiB-hours fill lab's pool of 50
    assert code == 1 and out["reasons"] == ["pool:lab_used_up:memory"]
    # 14 GiB-hours must leave the window at 16 GiB: 52.5 minutes into bob's server, 30 days on
    assert out["retry_at"] == "2026-11-19T00:52:31Z" == pool_check(out)["retry_at"]
    assert "it has room again at 2026-11-19 00:52:31 UTC" in out["message"]
    assert check(capsys, loaded, "2026-11-19T00:52:31Z")[0] == 0
    assert check(capsys, loaded, "2026-11-19T00:52:30Z")[0] == 1

    made = run_json(
        capsys, "grant", "--group", "lab", "--memory", "100 GiB-hours", "--until", "2026-11-10",
        "--reason", "paper deadline", "--by", "admin", "--at", "2026-10-31T00:00:00Z", *db,
    )["grants"]  # fmt: skip
    (grant,) = made
    assert grant["group"] == "lab" and grant["username"] is None and grant["state"] == "active"
    code, out = check(capsys, loaded)
    assert code == 0 and pool_check(out)["limit"] == 150 and pool_check(out)["granted"] == 100
    assert pool_check(out)["grant_ids"] == [grant["id"]]
    assert out["resources"]["memory"]["granted"] == 0  # bob's own limit is untouched
    listed = run_json(capsys, "grants", "--group", "lab", "--at", AT, *db)
    assert [g["id"] for g in listed["grants"]] == [grant["id"]]
    assert run_json(capsys, "grants", "bob", "--at", AT, *db)["grants"] == []
    assert main(["grants", "--at", AT, *db]) == 0
    assert "the lab pool" in capsys.readouterr().out

    assert main(["revoke", str(grant["id"]), "--reason", "done", "--by", "admin", "--at", AT,
                 *db]) == 0  # fmt: skip
    assert "for the lab pool" in capsys.readouterr().out
    assert check(capsys, loaded)[0] == 1

    credit = run_json(
        capsys, "credit", "--group", "lab", "--memory", "20 GiB-hours", "--at", AT,
        "--reason", "outage", "--by", "admin", *db,
    )["credits"][0]  # fmt: skip
    assert credit["group"] == "lab"
    later = (datetime.fromisoformat(AT) + timedelta(seconds=1)).isoformat()
    code, out = check(capsys, loaded, later)
    assert code == 0 and pool_check(out)["in_use"] == 44 and pool_check(out)["credited"] == 20


@pytest.mark.parametrize(
    "argv, says",
    [
        (["grant", "bob", "--group", "lab"], "either USER or --group"),
        (["grant"], "either USER or --group"),
        (["grant", "--group", " lab"], "leading or trailing white space"),
        (["credit", "--group", ""], "empty"),
    ],
)
def test_pool_grant_input_errors_say_what_is_valid(capsys, argv, says):
    # refused before any connection: a database that does not exist is never asked
    nowhere = "postgresql+asyncpg://nobody@127.0.0.1:9/none"
    extra = ["--memory", "1 GiB-hours", "--reason", "x", "--by", "admin", "--db", nowhere]
    extra += ["--until", "30d"] if argv[0] == "grant" else ["--at", "now"]
    assert main([*argv, *extra]) == 2
    assert says in capsys.readouterr().err
    assert main(["grants", "bob", "--group", "lab", "--db", nowhere]) == 2


POOLS = (
    "groups:\n"
    "  lab: {memory: 100 GiB-hours, pool: {memory: 50 GiB-hours, gpu: 10 GPU-hours}}\n"
    "  gpu-dev: {pool: {running: {gpu: 4}}}\n"
    "  regular: {memory: 60 GiB-hours}\n"
    "  power: {pool: {cpu: 100 CPU-hours}}\n"
)


@pytest.mark.parametrize("command", ["grant", "credit"])
@pytest.mark.parametrize(
    "group, amount, says",
    [
        ("regular", "--memory", "group 'regular' has no pool: budget in the policy {policy}"),
        ("nobody", "--memory", "group 'nobody' has no pool: budget in the policy {policy}"),
        ("gpu-dev", "--gpu", "group 'gpu-dev' has only concurrent caps (running:) in its pool"),
        (
            "lab",
            "--cpu",
            "the lab pool in the policy {policy} has no cpu budget (only gpu, memory)",
        ),
    ],
)
def test_a_pool_grant_or_credit_that_would_count_for_nothing_is_refused(
    fresh_db_url, tmp_path, capsys, command, group, amount, says
):
    policy = tmp_path / "policy.yaml"
    policy.write_text(POOLS)
    when = ["--until", "30d"] if command == "grant" else ["--at", "now"]
    argv = [command, "--group", group, amount, "1 GPU-hours" if amount == "--gpu" else
            f"1 {'CPU' if amount == '--cpu' else 'GiB'}-hours", *when, "--reason", "x",
            "--by", "admin", "--db", fresh_db_url, "--config", str(policy)]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert says.format(policy=policy) in err and "count for nothing" in err
    if group != "lab":  # the groups that could take it, with their budgets
        assert "groups whose pool has a budget: lab (gpu, memory), power (cpu)" in err
    # nothing was written
    assert main(["grants", "--all", "--db", fresh_db_url, "--format", "json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["grants"] == [] and listed["credits"] == []


def test_a_pool_grant_without_a_policy_is_refused(fresh_db_url, capsys, monkeypatch):
    monkeypatch.delenv("QUOTA_LEDGER_CONFIG", raising=False)
    argv = ["grant", "--group", "lab", "--memory", "1 GiB-hours", "--until", "30d",
            "--reason", "x", "--by", "admin", "--db", fresh_db_url]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--group lab: no quota policy" in err and "--config FILE" in err
