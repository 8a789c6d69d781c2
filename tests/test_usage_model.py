"""One usage model everywhere: ``check``, ``usage``, ``report`` (the real CLI, as a
subprocess) and ``/api/v1/*`` (the real web app; only the hub's identify answer is injected,
tests/web_support) give the same numbers and keys for the same user and time, on a real
PostgreSQL. Plus the record's own rules (rounding, limit sources, wording)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from web_support import NOW, client, seed, segment, serve, web_config

from ledger.core.policy_yaml import parse_policy
from ledger.core.times import iso
from ledger.core.usage_model import LimitSource, Membership, ResourceUsage
from ledger.core.usage_text import cells, membership_text, percent_text
from ledger.store import grants, queries

ROOT = Path(__file__).resolve().parent.parent
POLICY = ROOT / "examples" / "policy.yaml"
CLI = Path(sys.executable).parent / "quota-ledger"
# What every per-user object carries, in every surface (docs/cli.md, docs/openapi.yaml).
USER_KEYS = {"username", "at", "groups", "policy_groups", "unlisted_users",
             "running_servers", "max_percent_used", "resources"}  # fmt: skip
RESOURCE_KEYS = {"resource", "unit", "used", "limit", "remaining", "percent_used", "state",
                 "window_seconds", "running", "running_unit", "burn_per_hour", "runs_out_at",
                 "retry_at", "limit_source", "policy_limit", "granted", "credited",
                 "grants"}  # fmt: skip


def cli(db_url: str, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CLI), *argv, "--db", db_url, "--config", str(POLICY), "--at", iso(NOW)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


async def cli_json(db_url: str, *argv: str) -> tuple[int, object]:
    result = await asyncio.to_thread(cli, db_url, *argv, "--format", "json")
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


def common(obj: dict) -> dict:
    return {k: obj[k] for k in USER_KEYS}


def openapi_validator(component: str):
    """A JSON Schema validator for one component of docs/openapi.yaml (OpenAPI 3.1 schemas
    are JSON Schema 2020-12)."""
    import yaml
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    spec = yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text())
    registry = Registry().with_resource("openapi.yaml", Resource.from_contents(spec, DRAFT202012))
    schema = {"$ref": f"openapi.yaml#/components/schemas/{component}"}
    return Draft202012Validator(schema, registry=registry)


async def test_check_usage_report_and_api_agree(fresh_db_url, engine):
    await seed(engine)
    d, h = timedelta(days=1), timedelta(hours=1)
    async with engine.begin() as conn:
        # erin: in no hub group (none recorded) -> the unlisted default, regular (60 GiB-h)
        # alice: also in none, with her own users: entry for memory (1000 GiB-h)
        await queries.upsert_segments(
            conn,
            [
                segment("erin", NOW - 3 * d, NOW - 3 * d + 5 * h, cpu=1500, memory_gib=3),
                segment("alice", NOW - 2 * d, None, memory_gib=16),  # running for 48 h
            ],
        )
        # erin: a grant and a credit (ledger entries) that every surface must show alike
        await grants.add_grant(
            conn, username="erin", resource="memory", amount_hours=Decimal(100),
            starts_at=NOW - d, ends_at=NOW + 10 * d, reason="thesis", granted_by="admin",
            created_at=NOW - d,
        )  # fmt: skip
        await grants.add_credit(
            conn, username="erin", resource="memory", amount_hours=Decimal("2.5"),
            credited_at=NOW - 2 * d, reason="outage", credited_by="admin", created_at=NOW,
        )  # fmt: skip
    users = ["dana", "bob", "erin", "alice"]
    surfaces: dict[str, dict[str, dict]] = {u: {} for u in users}
    for user in users:
        code, out = await cli_json(fresh_db_url, "check", user, "--cpu", "2", "--memory", "4Gi")
        assert {"allowed", "retry_at"} <= out.keys() and (code == 0) == out["allowed"]
        surfaces[user]["check"] = out
        _, surfaces[user]["usage"] = await cli_json(fresh_db_url, "usage", user)
    _, report = await cli_json(fresh_db_url, "report", "--times")
    _, quick = await cli_json(fresh_db_url, "report")
    for line, fast in zip(report, quick, strict=True):  # the same figures, times left null
        for name, record in line["resources"].items():
            assert fast["resources"][name]["runs_out_at"] is None
            assert fast["resources"][name]["retry_at"] is None
            times = {"runs_out_at": None, "retry_at": None}
            assert {**record, **times} == fast["resources"][name]
    for line in report:
        if line["username"] in surfaces:
            surfaces[line["username"]]["report"] = line
    async with serve(web_config(engine)) as url, client(url, "admin") as admin:
        api_report = (await admin.get("api/v1/report", params={"per_page": 500})).json()
        for line in api_report["users"]:
            if line["username"] in surfaces:
                surfaces[line["username"]]["api report"] = line
        for user in users:
            r = await admin.get(f"api/v1/users/{user}")
            assert r.status_code == 200, r.text
            surfaces[user]["api user"] = r.json()
        for user in ("dana", "bob"):
            async with client(url, user) as own:
                surfaces[user]["api me"] = (await own.get("api/v1/me")).json()

    user_usage, user_status = openapi_validator("UserUsage"), openapi_validator("UserStatus")
    user_status.validate(surfaces["dana"]["api me"])
    openapi_validator("ReportPage").validate(api_report)
    erin = surfaces["erin"]["usage"]["resources"]
    assert erin["memory"]["granted"] == 100 and erin["memory"]["limit"] == 160
    assert [g["reason"] for g in erin["memory"]["grants"]] == ["thesis"]
    assert erin["memory"]["credited"] == 2.5
    for user, by_surface in surfaces.items():
        for obj in by_surface.values():
            user_usage.validate(obj)  # every surface: the documented component
        user_status.validate(by_surface["usage"])
        assert len(by_surface) == (6 if user in ("dana", "bob") else 5), (user, by_surface.keys())
        reference = common(by_surface["usage"])
        assert set(reference["resources"]) == {"cpu", "memory", "gpu"}
        for name, record in reference["resources"].items():
            assert set(record) == RESOURCE_KEYS, (user, name)
        for surface, obj in by_surface.items():
            assert common(obj) == reference, (user, surface)
        check = by_surface["check"]
        for key in ("used", "limit", "remaining"):  # the CLI contract
            assert key in check["resources"]["memory"]
        assert check["retry_at"] == by_surface["usage"]["retry_at"] or check["allowed"]

    dana = surfaces["dana"]["usage"]
    memory = dana["resources"]["memory"]
    assert memory["used"] == 52.0 and memory["limit"] == 60.0 and memory["remaining"] == 8.0
    assert memory["percent_used"] == 86.67 and memory["state"] == "near"
    assert memory["running"] == 4.0 and memory["running_unit"] == "GiB"
    assert memory["burn_per_hour"] == 4.0
    assert memory["runs_out_at"] == iso(NOW + 2 * h)  # 8 GiB-hours left at 4 per hour
    assert memory["limit_source"] == {"kind": "group", "groups": ["regular"], "user": None}
    assert dana["resources"]["cpu"]["limit"] is None
    assert dana["resources"]["cpu"]["limit_source"]["kind"] == "unlimited"

    bob = surfaces["bob"]["usage"]["resources"]["memory"]
    assert bob["state"] == "over" and bob["retry_at"] == "2026-11-25T13:00:01Z"
    assert surfaces["bob"]["check"]["retry_at"] == "2026-11-25T13:00:01Z"

    erin = surfaces["erin"]["usage"]
    assert erin["groups"] == [] and erin["policy_groups"] == ["regular"]
    assert erin["unlisted_users"] == "regular"
    assert erin["resources"]["memory"]["used"] == 15.0 - 2.5  # net of the credit
    assert erin["resources"]["memory"]["limit_source"]["kind"] == "unlisted"
    assert erin["resources"]["cpu"]["used"] == 7.5

    alice = surfaces["alice"]["usage"]["resources"]
    assert alice["memory"]["limit_source"] == {"kind": "user", "groups": [], "user": "alice"}
    assert alice["memory"]["used"] == 768.0 and alice["memory"]["limit"] == 1000.0
    assert alice["gpu"]["limit_source"]["kind"] == "unlisted"


def test_tables_say_the_same_groups_and_units(fresh_db_url):
    """``usage`` and ``check`` tables: one membership line, one unit rule ("0 GiB")."""
    outputs = [cli(fresh_db_url, "usage", "nobody"), cli(fresh_db_url, "check", "nobody")]
    expected = "nobody (groups: none; limits from regular (default for users in no listed group))"
    for result in outputs:
        assert result.returncode == 0, result.stderr
        assert expected in result.stdout
        assert "0 GiB" in result.stdout and "bytes" not in result.stdout
        assert "group regular" not in result.stdout  # the unlisted default says so
        assert "regular (default for users in no listed group)" in result.stdout


def test_record_rounding_and_wording():
    policy = parse_policy(POLICY.read_text())
    limits = policy.limits_for("erin", [])
    membership = Membership.of([], limits)
    assert membership_text(membership).startswith("groups: none; limits from regular")
    record = ResourceUsage(
        resource="memory",
        used_hours=Decimal("59.9999999"),
        limit_hours=Decimal(60),
        window_seconds=30 * 86400,
        running=0,
        source=LimitSource.of_budget(limits.budgets["memory"].source, limits.groups),
    )
    data = record.to_json()
    assert data["used"] == 60.0 and data["remaining"] == 0.0  # 6 decimals, half-even
    assert data["state"] == "near" and percent_text(record.percent_used) == "99 %"
    text = cells(record, NOW)
    assert text["running"] == "0 GiB" and text["limit"] == "60 GiB-hours"
    assert text["limit_source"] == "regular (default for users in no listed group)"
    summed = LimitSource.of_budget("sum:a+b+c", ("a+b", "c"))
    assert summed.groups == ("a+b", "c")  # a "+" inside a group name survives


def test_a_per_user_limit_is_named_as_the_users_own(fresh_db_url):
    """alice is in `regular` but her memory limit is her own entry under `users:`: the
    membership line must not say her memory limit comes from regular."""
    result = cli(fresh_db_url, "usage", "alice", "--group", "regular")
    assert result.returncode == 0, result.stderr
    assert "limits from regular; memory set for this user" in result.stdout


def test_record_terms_make_the_same_record_as_the_dataclass():
    """The all-users report builds records through RecordTerms.record (all fields at once);
    they must be the dataclass's records, field for field, with grants and without."""
    import dataclasses
    from datetime import UTC, datetime

    from ledger.core.grants import Adjustments
    from ledger.core.usage_model import RecordTerms, resource_usage

    policy = parse_policy(POLICY.read_text(), str(POLICY))
    limits = policy.limits_for("someone", [])
    now = datetime(2026, 11, 1, 12, tzinfo=UTC)
    for name in ("cpu", "memory", "gpu"):
        budget = limits.budgets.get(name)
        window = budget.window_seconds if budget else policy.window_seconds
        for adjustments in (None, Adjustments()):
            got = resource_usage(
                name, budget, window, now, used_base_us=7 * 10**15 + 3, running=1500,
                intervals=None, policy_groups=limits.groups, adjustments=adjustments,
            )  # fmt: skip
            terms = RecordTerms.of(name, budget, window, now, limits.groups)
            fields = {f.name: getattr(got, f.name) for f in dataclasses.fields(ResourceUsage)}
            assert ResourceUsage(**fields) == got == terms.record(7 * 10**15 + 3, 1500)
            assert set(vars(got)) == set(fields)  # every field set, nothing else
            assert got.to_json() == ResourceUsage(**fields).to_json()


def test_record_terms_share_the_unused_record_and_subtract_credits():
    """Users of the same terms with no usage and nothing running share one (frozen) record;
    any other usage gets its own, ``used_hours`` being the exact quotient minus the credits in
    the window, as the dataclass formula gives it."""
    from datetime import UTC, datetime, timedelta
    from decimal import Decimal

    from ledger.core.grants import Adjustments, Credit
    from ledger.core.resources import MICROSECONDS_PER_HOUR, resource
    from ledger.core.usage_model import RecordTerms, resource_usage

    policy = parse_policy(POLICY.read_text(), str(POLICY))
    limits = policy.limits_for("someone", [])
    now = datetime(2026, 11, 1, 12, tzinfo=UTC)
    budget = limits.budgets["memory"]
    terms = RecordTerms.of("memory", budget, budget.window_seconds, now, limits.groups)
    unused = terms.record(0, 0)
    assert terms.record(0, 0) is unused
    assert unused.used_hours == 0 and unused.running == 0
    assert terms.record(0, 1) is not unused and terms.record(0, 1).running == 1
    assert terms.record(1, 0).used_hours > 0
    credit = Credit(
        1, "someone", "memory", Decimal("2.5"), now - timedelta(days=1), "r", "admin", now
    )
    adjustments = Adjustments((), (credit,))
    for used in (0, 3, 11 * 2**30 * MICROSECONDS_PER_HOUR + 7):
        got = resource_usage(
            "memory", budget, budget.window_seconds, now, used_base_us=used, running=0,
            intervals=None, policy_groups=limits.groups, adjustments=adjustments,
        )  # fmt: skip
        exact = Decimal(used) / (resource("memory").base_per_unit * MICROSECONDS_PER_HOUR)
        assert got.used_hours == exact - Decimal("2.5")
        assert got.credited_hours == Decimal("2.5")
        assert got is not unused
