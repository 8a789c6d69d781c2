"""Quota requests on the web service, route by route, with two users and an admin: a user
files requests only as themself and sees only their own; only admins approve (a grant, as
asked or changed) or decline (with a message); every form and cookie-authenticated API POST
needs the xsrf token; bad amounts and dates get 400 with what is valid; everything rendered
is escaped; every action is recorded."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import text
from web_support import NOW, client, seed, serve, web_config

from ledger.core.decision import ServerRequest
from ledger.core.resources import GIB
from ledger.store.decide import decide

XSS = "<script>alert(1)</script>"


def xsrf_of(html: str) -> str:
    found = re.search(r'name="_xsrf" value="([^"]+)"', html)
    assert found, "no xsrf field in the form"
    return found[1]


async def form_token(c) -> str:
    page = await c.get("")
    assert page.status_code == 200, page.text
    return xsrf_of(page.text)


async def file(c, token, **fields):
    data = {"resource": "memory", "amount": "100 GiB-hours", "until": "30d",
            "reason": "thesis deadline", **fields}  # fmt: skip
    if token is not None:
        data["_xsrf"] = token
    return await c.post("request", data=data)


@pytest.fixture
async def service(engine):
    await seed(engine)
    config = web_config(engine)
    async with serve(config) as url:
        yield url, engine, config


async def test_request_approve_and_the_grant_counts(service):
    url, engine, config = service
    async with (
        client(url, "dana") as dana,
        client(url, "bob") as bob,
        client(url, "admin") as admin,
    ):
        token = await form_token(dana)
        r = await file(dana, token, reason=f"deadline {XSS}")
        assert r.status_code == 303 and r.headers["location"].endswith("#requests")
        page = (await dana.get("")).text
        assert "deadline &lt;script&gt;" in page and XSS not in page
        assert "pending" in page
        mine = (await dana.get("api/v1/requests")).json()["requests"]
        assert [q["state"] for q in mine] == ["pending"] and mine[0]["amount"] == 100.0
        request_id = mine[0]["id"]
        # bob sees none of it, on his page or the API, and cannot answer it
        assert (await bob.get("api/v1/requests")).json()["requests"] == []
        assert "deadline &lt;script" not in (await bob.get("")).text
        bob_token = await form_token(bob)
        for who, tok in ((bob, bob_token), (dana, token)):
            r = await who.post(
                f"admin/requests/{request_id}", data={"action": "approve", "_xsrf": tok}
            )
            assert r.status_code == 403
            r = await who.get("admin/requests")
            assert r.status_code == 403
            r = await who.get("api/v1/requests", params={"all": "1"})
            assert r.status_code == 403

        # the admin's inbox: the request, the user's usage and groups, escaped
        inbox = await admin.get("admin/requests")
        assert inbox.status_code == 200
        assert f"#{request_id}" in inbox.text and "deadline &lt;script&gt;" in inbox.text
        assert XSS not in inbox.text and "regular" in inbox.text and "GiB-hours" in inbox.text
        admin_token = xsrf_of(inbox.text)
        # approve with a changed amount
        r = await admin.post(f"admin/requests/{request_id}", data={
            "action": "approve", "amount": "50 GiB-hours", "until": "2026-12-20T00:00:00Z",
            "message": "half now", "_xsrf": admin_token})  # fmt: skip
        assert r.status_code == 303, r.text
        again = await admin.post(f"admin/requests/{request_id}", data={
            "action": "decline", "message": "no", "_xsrf": admin_token})  # fmt: skip
        assert again.status_code == 400 and "already approved" in again.text

        mine = (await dana.get("api/v1/requests")).json()["requests"]
        assert mine[0]["state"] == "approved" and mine[0]["decided_by"] == "admin"
        assert mine[0]["message"] == "half now" and mine[0]["grant_id"]
        me = (await dana.get("api/v1/me")).json()
        assert me["resources"]["memory"]["granted"] == 50
        assert me["resources"]["memory"]["limit"] == 110
        page = (await dana.get("")).text
        assert "was <strong>approved</strong> by admin" in page
    decision = await decide(
        engine, config.policy(), "dana", ["regular"], ServerRequest({"memory": 4 * GIB}), NOW
    )
    assert decision.budgets["memory"].limit_hours == 110
    async with engine.connect() as conn:
        actions = (await conn.execute(text(
            "SELECT actor, action FROM quota_request_events WHERE request_id = :id ORDER BY id"
        ), {"id": request_id})).all()  # fmt: skip
    assert [tuple(a) for a in actions] == [("dana", "requested"), ("admin", "approved")]


async def test_decline_needs_a_message_and_the_user_reads_it(service):
    url, engine, _ = service
    async with client(url, "dana") as dana, client(url, "admin") as admin:
        await file(dana, await form_token(dana))
        request_id = (await dana.get("api/v1/requests")).json()["requests"][0]["id"]
        token = await form_token(admin)
        r = await admin.post(
            f"admin/requests/{request_id}", data={"action": "decline", "_xsrf": token}
        )
        assert r.status_code == 400 and "say why it is declined" in r.text
        r = await admin.post(f"admin/requests/{request_id}", data={
            "action": "decline", "message": f"not now {XSS}", "_xsrf": token})  # fmt: skip
        assert r.status_code == 303
        page = (await dana.get("")).text
        assert "declined" in page and "not now &lt;script&gt;" in page and XSS not in page


async def test_forms_and_cookie_api_posts_need_the_xsrf_token(service):
    url, _, _ = service
    async with client(url, "dana") as dana, client(url, "admin") as admin:
        await dana.get("")  # has the xsrf cookie, sends no token
        assert (await file(dana, None)).status_code == 403
        assert (await file(dana, "forged")).status_code == 403
        r = await dana.post("api/v1/requests", json={"resource": "memory", "amount": "1 GiB-hours",
                                                     "until": "30d", "reason": "x"})  # fmt: skip
        assert r.status_code in (401, 403)
        assert (await dana.get("api/v1/requests")).json()["requests"] == []
        r = await admin.post("api/v1/requests/1/approve", json={})
        assert r.status_code in (401, 403)
    # with the token in a header (what a page script would send) it is accepted
    async with client(url, "dana") as dana:
        token = await form_token(dana)
        r = await dana.post(
            "api/v1/requests",
            json={"resource": "memory", "amount": "2 GiB-hours", "until": "30d", "reason": "x"},
            headers={"X-XSRFToken": token},
        )
        assert r.status_code == 201, r.text


async def test_token_authenticated_api_requests_and_answers(service):
    url, _, _ = service
    token = {"X-Test-Token": "1"}
    async with (
        client(url, "dana") as dana,
        client(url, "bob") as bob,
        client(url, "admin") as admin,
    ):
        r = await dana.post("api/v1/requests", headers=token, json={
            "resource": "memory", "amount": "20 GiB-hours", "until": "2026-12-31",
            "reason": "workshop"})  # fmt: skip
        assert r.status_code == 201, r.text
        made = r.json()["request"]
        assert made["username"] == "dana" and made["until"] == "2026-12-31T00:00:00Z"
        # a user cannot file for someone else: the body's username is not read
        r = await bob.post("api/v1/requests", headers=token, json={
            "username": "dana", "resource": "memory", "amount": "1 GiB-hours", "until": "30d",
            "reason": "x"})  # fmt: skip
        assert r.status_code == 201 and r.json()["request"]["username"] == "bob"
        assert len((await dana.get("api/v1/requests")).json()["requests"]) == 1
        r = await bob.post(f"api/v1/requests/{made['id']}/approve", headers=token, json={})
        assert r.status_code == 403
        pending = (await admin.get("api/v1/requests", params={"all": "1"})).json()["requests"]
        assert {q["username"] for q in pending} == {"dana", "bob"}
        r = await admin.post(f"api/v1/requests/{made['id']}/approve", headers=token, json={})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["request"]["state"] == "approved" and body["grant"]["amount"] == 20.0
        assert body["grant"]["request_id"] == made["id"]
        r = await admin.post(f"api/v1/requests/{made['id']}/decline", headers=token,
                             json={"message": "late"})  # fmt: skip
        assert r.status_code == 400 and "already approved" in r.json()["message"]
        r = await admin.post("api/v1/requests/99999/approve", headers=token, json={})
        assert r.status_code == 400 and "no request 99999" in r.json()["message"]


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"amount": "100 GB"}, "amount: &#x27;100 GB&#x27; is not a budget"),
        ({"amount": "0 GiB-hours"}, "not more than 0"),
        ({"amount": "5 CPU-hours"}, "memory budgets are in GiB-hours"),
        ({"until": "2026-01-01"}, "is not after"),
        ({"until": "next week"}, "is not an ISO 8601 time"),
        ({"reason": "  "}, "why: say why"),
        ({"resource": "cpu"}, "&#x27;cpu&#x27; is not one of your limits (memory, gpu)"),
        ({"resource": "<b>x</b>"}, "&#x27;&lt;b&gt;x&lt;/b&gt;&#x27; is not one of your limits"),
    ],
)
async def test_bad_requests_get_400_saying_what_is_valid(service, fields, says):
    url, _, _ = service
    async with client(url, "dana") as dana:
        r = await file(dana, await form_token(dana), **fields)
        assert r.status_code == 400
        assert says in r.text, r.text[:3000]
        assert (await dana.get("api/v1/requests")).json()["requests"] == []


async def test_anonymous_and_services_cannot_use_requests(service):
    url, _, _ = service
    async with client(url) as anon, client(url, "service") as svc:
        assert (await anon.get("api/v1/requests")).status_code == 401
        assert (await anon.get("admin/requests")).status_code == 302  # to the hub's login
        assert (await svc.get("api/v1/requests")).status_code == 403
        r = await svc.post("api/v1/requests", headers={"X-Test-Token": "1"}, json={})
        assert r.status_code == 403


async def test_the_denial_pages_fields_prefill_the_confirm_form(service):
    url, _, _ = service
    async with client(url, "dana") as dana:
        r = await dana.get("request", params={"resource": "memory", "amount": "40 GiB-hours",
                                              "until": "7d", "reason": f"exam {XSS}"})  # fmt: skip
        assert r.status_code == 200
        assert "Send this request" in r.text and 'value="40 GiB-hours"' in r.text
        assert "exam &lt;script&gt;" in r.text and XSS not in r.text
        assert (await dana.get("api/v1/requests")).json()["requests"] == []  # GET files nothing
