"""Bad input to the web service gets a 4xx that says what would be valid — never a 500, nor
a 503 "ledger unavailable" that would make an operator look for a database outage — and a
grant too large to show cannot be stored. Real PostgreSQL, the real tornado app."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import text
from web_support import NOW, client, seed, serve, web_config

from ledger.core.json_form import json_number

TOKEN = {"X-Test-Token": "1"}
REQUEST = {"resource": "memory", "amount": "10 GiB-hours", "until": "30d", "reason": "thesis"}


@pytest.fixture
async def service(engine):
    await seed(engine)
    async with serve(web_config(engine)) as url:
        yield url, engine


def xsrf(page: str) -> str:
    return re.search(r'name="_xsrf" value="([^"]+)"', page)[1]


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"amount": "10000000000000000000000 GiB-hours"}, "is more than 1,000,000,000,000 hours"),
        ({"amount": "1e999999 GiB-hours"}, "is more than"),
        ({"until": "99999999999d"}, "ends after the year 9999"),
        ({"until": "0001-01-01T00:00:00+14:00"}, "out of range"),
        ({"reason": ["thesis"]}, "reason: give a string"),
        ({"reason": True}, "reason: give a string"),
    ],
)
async def test_a_request_with_an_impossible_field_is_a_400_saying_which(service, change, said):
    url, _ = service
    async with client(url, "dana") as dana:
        r = await dana.post("api/v1/requests", headers=TOKEN, json={**REQUEST, **change})
        assert r.status_code == 400, r.text
        assert said in r.text


@pytest.mark.parametrize("request_id", ["%C2%B2", "9223372036854775808", "99999999999999999999"])
async def test_a_request_id_that_names_nothing_is_a_4xx(service, request_id):
    url, _ = service
    async with client(url, "admin") as admin:
        r = await admin.post(f"api/v1/requests/{request_id}/approve", headers=TOKEN, json={})
        assert r.status_code in (400, 404), r.text
        page = await admin.get(f"admin/requests/{request_id}")
        assert page.status_code in (200, 404), page.text[:300]


@pytest.mark.parametrize("path", ["admin/running", "admin/rejections", "admin/enforcement"])
async def test_a_huge_page_number_is_an_empty_page(service, path):
    url, _ = service
    async with client(url, "admin") as admin:
        r = await admin.get(f"{path}?page=999999999999999999999")
        assert r.status_code == 200, r.text[:300]


async def test_an_approval_too_large_to_show_is_refused_and_the_apis_keep_working(service):
    url, _ = service
    async with client(url, "dana") as dana, client(url, "admin") as admin:
        filed = await dana.post("api/v1/requests", headers=TOKEN, json=REQUEST)
        request_id = filed.json()["request"]["id"]
        page = (await admin.get("admin/requests")).text
        r = await admin.post(
            f"admin/requests/{request_id}",
            data={"_xsrf": xsrf(page), "action": "approve",
                  "amount": "10000000000000000000000 GiB-hours"},
        )  # fmt: skip
        assert r.status_code == 400 and "is more than" in r.text  # the form, with the error
        for who, path in [(dana, "api/v1/me"), (dana, "api/v1/me/summary"),
                          (admin, "api/v1/report"), (admin, "api/v1/users/dana")]:  # fmt: skip
            assert (await who.get(path)).status_code == 200, path


def test_json_numbers_round_any_size():
    from decimal import Decimal

    assert json_number(Decimal(10) ** 22) == 1e22
    assert json_number(Decimal("1e300")) == 1e300


async def test_the_inbox_links_a_username_with_a_space_to_that_user(service):
    url, engine = service
    async with engine.begin() as conn:
        await conn.execute(
            text("INSERT INTO quota_requests (username, resource, amount_hours, until_at, "
                 "reason, created_at) VALUES ('john doe', 'memory', 5, :until, 'r', :now)"),
            {"until": NOW.replace(year=NOW.year + 1), "now": NOW},
        )  # fmt: skip
    async with client(url, "admin") as admin:
        page = (await admin.get("admin/requests")).text
    assert "admin/users/john%20doe" in page and "admin/users/john+doe" not in page


def test_a_value_the_database_refuses_is_not_an_outage():
    from sqlalchemy.exc import DataError, IntegrityError, OperationalError

    from ledger.web.auth import is_ledger_unavailable

    assert not is_ledger_unavailable(DataError("SELECT", {}, ValueError("out of range")))
    assert not is_ledger_unavailable(IntegrityError("INSERT", {}, ValueError("duplicate")))
    assert is_ledger_unavailable(OperationalError("SELECT", {}, OSError("connection refused")))
    assert is_ledger_unavailable(ConnectionRefusedError())
