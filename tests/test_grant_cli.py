"""The CLI contract of ``grant``, ``credit``, ``grants`` and ``revoke``: JSON, exit codes, and
errors that say what would be valid; a grant lifts a denial in ``check`` until it ends or
is revoked, a credit lowers usage inside the window."""

from __future__ import annotations

import json

import pytest
from test_cli import AT, POLICY, ROWS

from ledger.cli import main


@pytest.fixture
def loaded(fresh_db_url, tmp_path):
    path = tmp_path / "usage.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    assert main(["import", str(path), "--db", fresh_db_url]) == 0
    return fresh_db_url


def run_json(capsys, *argv):
    code = main([*argv, "--format", "json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def check(capsys, db, at=AT):
    code = main(["check", "bob", "--group", "regular", "--memory", "4Gi", "--db", db,
                 "--config", str(POLICY), "--at", at, "--format", "json"])  # fmt: skip
    return code, json.loads(capsys.readouterr().out)


def test_grant_lifts_a_denial_until_it_ends_or_is_revoked(loaded, capsys):
    db = ["--db", loaded]
    code, out = check(capsys, loaded)
    assert code == 1 and out["resources"]["memory"]["limit"] == 60.0  # bob: 64 of 60
    made = run_json(
        capsys, "grant", "bob", "--memory", "100 GiB-hours", "--until", "2026-11-10",
        "--reason", "thesis deadline", "--by", "admin", "--at", "2026-10-31T00:00:00Z", *db,
    )["grants"]  # fmt: skip
    assert len(made) == 1
    grant = made[0]
    assert grant["amount"] == 100.0 and grant["unit"] == "GiB-hours"
    assert grant["ends_at"] == "2026-11-10T00:00:00Z" and grant["granted_by"] == "admin"
    assert grant["reason"] == "thesis deadline" and grant["state"] == "active"

    code, out = check(capsys, loaded)
    memory = out["resources"]["memory"]
    assert code == 0 and memory["limit"] == 160.0 and memory["policy_limit"] == 60.0
    assert [g["id"] for g in memory["grants"]] == [grant["id"]]
    assert out["budgets"]["memory"]["grant_ids"] == [grant["id"]]
    # after it ends the policy's 60 apply again (bob's 64 GiB-hours are still in the window)
    code, out = check(capsys, loaded, "2026-11-10T00:00:00Z")
    assert code == 1 and out["resources"]["memory"]["granted"] == 0

    listed = run_json(capsys, "grants", "bob", "--at", AT, *db)
    assert [g["id"] for g in listed["grants"]] == [grant["id"]]
    assert run_json(capsys, "grants", "sam", "--at", AT, *db)["grants"] == []

    revoked = run_json(capsys, "revoke", str(grant["id"]), "--reason", "done early",
                       "--by", "admin", "--at", AT, *db)["grant"]  # fmt: skip
    assert revoked["state"] == "revoked" and revoked["revoke_reason"] == "done early"
    assert revoked["revoked_at"] == AT
    code, out = check(capsys, loaded)
    assert code == 1 and out["resources"]["memory"]["limit"] == 60.0
    assert run_json(capsys, "grants", "--at", AT, *db)["grants"] == []
    assert [g["state"] for g in run_json(capsys, "grants", "--all", "--at", AT, *db)["grants"]] == [
        "revoked"
    ]
    # the table names it too
    assert main(["grants", "--all", "--at", AT, *db]) == 0
    table = capsys.readouterr().out
    assert "thesis deadline" in table and "revoked" in table


def test_credit_counts_inside_the_window(loaded, capsys):
    db = ["--db", loaded]
    made = run_json(
        capsys, "credit", "bob", "--memory", "10 GiB-hours", "--at", "2026-10-21T00:00:00Z",
        "--reason", "cluster outage on 2026-10-20", "--by", "admin", *db,
    )["credits"]  # fmt: skip
    assert made[0]["amount"] == 10.0 and made[0]["credited_at"] == "2026-10-21T00:00:00Z"
    code, out = check(capsys, loaded)
    memory = out["resources"]["memory"]
    assert code == 0 and memory["used"] == 54.0 and memory["credited"] == 10.0
    # 30 days after the credit it has left the window with bob's usage (both gone)
    code, out = check(capsys, loaded, "2026-11-20T00:00:01Z")
    assert out["resources"]["memory"]["credited"] == 0
    assert run_json(capsys, "grants", "bob", *db)["credits"][0]["reason"].startswith("cluster")


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["grant", "bob", "--memory", "100 GB", "--until", "2027-06-01", "--reason", "x"],
         "--memory: '100 GB' is not a budget"),
        (["grant", "bob", "--memory", "0 GiB-hours", "--until", "2027-06-01", "--reason", "x"],
         "not more than 0"),
        (["grant", "bob", "--memory", "5 CPU-hours", "--until", "2027-06-01", "--reason", "x"],
         "memory budgets are in GiB-hours"),
        (["grant", "bob", "--until", "2027-06-01", "--reason", "x"], "give at least one amount"),
        (["grant", "bob", "--memory", "1 GiB-hours", "--until", "2027-06-01T00:00",
          "--reason", "x"], "has no time zone"),
        (["grant", "bob", "--memory", "1 GiB-hours", "--until", "tomorrow", "--reason", "x"],
         "is not an ISO 8601 time"),
        (["grant", "bob", "--memory", "1 GiB-hours", "--until", "2026-10-01", "--reason", "x",
          "--at", "2026-11-01T00:00:00Z"], "is not after"),
        (["grant", "bob", "--memory", "1 GiB-hours", "--until", "2027-06-01", "--reason", " "],
         "--reason: say why"),
        (["grant", " bob", "--memory", "1 GiB-hours", "--until", "2027-06-01", "--reason", "x"],
         "USER ' bob' has leading or trailing white space"),
        (["credit", "bob", "--gpu", "-1", "--at", "2026-10-01Z", "--reason", "x"], "--gpu"),
        (["revoke", "abc", "--reason", "x"], "GRANT_ID 'abc' is not a grant id"),
        (["revoke", "999", "--reason", "x"], "there is no grant 999"),
    ],
)  # fmt: skip
def test_bad_input_exits_2_and_says_what_is_valid(loaded, capsys, argv, says):
    assert main([*argv, "--db", loaded]) == 2
    err = capsys.readouterr().err
    assert says in err, err


def test_revoking_twice_is_refused(loaded, capsys):
    db = ["--db", loaded]
    g = run_json(capsys, "grant", "sam", "--gpu", "2 GPU-hours", "--until", "2027-01-01",
                 "--reason", "workshop", *db)["grants"][0]  # fmt: skip
    assert main(["revoke", str(g["id"]), "--reason", "over", *db]) == 0
    capsys.readouterr()
    assert main(["revoke", str(g["id"]), "--reason", "again", *db]) == 2
    assert "already revoked" in capsys.readouterr().err
