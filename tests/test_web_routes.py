"""The quota page's routes as JupyterHub 5 and 6 reach them, and what its error pages say.

Runs in both test environments (.venv with JupyterHub 6, .venv-jh5 with 5): the routes are
built with JupyterHub's own helpers, whose behaviour differs between the two.
"""

from __future__ import annotations

import httpx
import pytest
from hub_support.ledger_data import silent_port
from web_support import PREFIX, client, seed, serve, web_config

from ledger.store import db
from ledger.store.availability import LedgerAvailability


@pytest.fixture
async def base_url(engine):
    await seed(engine)
    async with serve(web_config(engine)) as url:
        yield url


async def test_the_prefix_without_its_slash_redirects_to_the_page(base_url):
    root = base_url.rstrip("/")  # http://…/services/quota
    async with httpx.AsyncClient(headers={"X-Test-User": "dana"}) as c:
        r = await c.get(root + "?from=menu")
        assert r.status_code == 301
        assert r.headers["location"] == PREFIX + "?from=menu"  # the cookie's Path
        r = await c.get(root, follow_redirects=True)
        assert r.status_code == 200 and "Your compute quota" in r.text


async def test_a_non_admin_is_told_why_an_admin_page_is_closed(base_url):
    async with client(base_url, "dana") as c:
        r = await c.get("admin/")
        assert r.status_code == 403
        assert "This page is for quota admins" in r.text and "custom:quota:admin" in r.text
        r = await c.get("api/v1/report")
        assert r.status_code == 403 and "quota admins" in r.json()["message"]
        r = await c.get("no/such/page")
        assert r.status_code == 404 and "no such page" in r.text


@pytest.mark.parametrize("user", ["uiadmin", "hubadmin", "admin"])
async def test_hub_admins_and_the_custom_scope_see_the_admin_pages(base_url, user):
    async with client(base_url, user) as c:
        r = await c.get("admin/")
    assert r.status_code == 200 and "Quota report" in r.text


async def test_custom_scope_only_when_configured(engine):
    config = web_config(engine, admin_scopes=("custom:quota:admin",))
    async with serve(config) as url, client(url, "uiadmin") as c:
        r = await c.get("admin/")
    assert r.status_code == 403


async def test_an_admin_looking_at_someone_else_reads_about_them(base_url):
    async with client(base_url, "admin") as c:
        r = await c.get("admin/users/dana")
    assert r.status_code == 200
    assert 'class="active">My usage' not in r.text
    assert "How your" not in r.text and "Your quota is" not in r.text
    assert "This user&#x27;s quota is a" in r.text


async def test_database_down_gives_a_reason_and_health_says_so():
    async with silent_port() as port:
        engine = db.create_engine(f"postgresql+asyncpg://quota@127.0.0.1:{port}/ledger",
                                  connect_args={"timeout": 1})  # fmt: skip
        try:
            config = web_config(engine)
            availability = LedgerAvailability(engine)
            assert not await availability.check()
            async with serve(config) as url:
                from tornado.web import Application  # noqa: F401 - settings below

                async with client(url, "dana") as c:
                    r = await c.get("")
                    assert r.status_code == 503
                    assert "quota ledger is unavailable" in r.text
                    assert "127.0.0.1" not in r.text and "Traceback" not in r.text
                    r = await c.get("api/v1/me")
                    assert r.status_code == 503 and "unavailable" in r.json()["message"]
        finally:
            await engine.dispose()


async def test_health_reports_the_ledger_state(engine):
    from web_support import InjectedUser

    from ledger.web.app import make_app

    availability = LedgerAvailability(engine)
    app = make_app(web_config(engine), prefix=PREFIX, handler_mixin=InjectedUser)
    app.settings["quota_availability"] = availability
    from tornado.httpserver import HTTPServer
    from tornado.netutil import bind_sockets

    sockets = bind_sockets(0, "127.0.0.1")
    server = HTTPServer(app)
    server.add_sockets(sockets)
    url = f"http://127.0.0.1:{sockets[0].getsockname()[1]}{PREFIX}"
    try:
        async with httpx.AsyncClient(base_url=url) as c:
            r = await c.get("healthz")
            assert r.status_code == 200 and r.json()["status"] == "ledger unavailable"
            assert (await c.get("readyz")).status_code == 503
            assert await availability.check()
            assert (await c.get("healthz")).json() == {"status": "ok"}
            assert (await c.get("readyz")).status_code == 200
    finally:
        server.stop()


async def test_unknown_api_paths_and_methods_answer_in_json_with_what_exists(base_url):
    """An API client gets JSON it can read: 404 naming the routes for a path that is not
    one, 405 with Allow for a method a route does not take (before, a PUT was a 403 about
    the xsrf token, and an unknown api/ path the HTML page)."""
    async with client(base_url, "dana") as c:
        for path in ("api/v1/nope", "api/v2/me", "api/v1/me/extra/x"):
            r = await c.get(path)
            assert r.status_code == 404, (path, r.text)
            assert r.headers["content-type"].startswith("application/json")
            assert (
                "no such API route" in r.json()["message"] and "me/summary" in r.json()["message"]
            )
        r = await c.post("api/v1/nope", json={})
        assert r.status_code == 404 and r.json()["status"] == 404
        for method, path, allow in (
            ("PUT", "api/v1/me", "GET, HEAD"),
            ("DELETE", "api/v1/report", "GET, HEAD"),
            ("POST", "api/v1/me", "GET, HEAD"),
            ("PATCH", "api/v1/requests", "GET, HEAD, POST"),
            ("GET", "api/v1/requests/1/approve", "POST"),
        ):
            r = await c.request(method, path, json={})
            assert r.status_code == 405, (method, path, r.text)
            assert r.headers["allow"] == allow
            assert r.json() == {"status": 405, "message": "Method Not Allowed"}
        r = await c.post("no/such/page", data={})
        assert r.status_code == 404 and "no such page" in r.text
        # pages too: 405 with Allow, not an xsrf 403
        r = await c.put("admin/", content=b"")
        assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"
        assert "text/html" in r.headers["content-type"]
        r = await c.put("healthz", content=b"")
        assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"
        # and what exists still works
        assert (await c.get("api/v1/me")).status_code == 200


async def test_head_answers_as_get_without_the_body(base_url):
    """HEAD is GET without the body (RFC 9110 §9.3.2): uptime checks and ``curl -I`` get the
    GET's status and headers; a route that takes no GET takes no HEAD either."""
    async with client(base_url, "dana") as c:
        for path in ("healthz", "api/v1/me", "api/v1/report", "admin/", ""):
            got, head = await c.get(path), await c.head(path)
            assert head.status_code == got.status_code, (path, head.status_code, got.text)
            assert head.content == b"", path
            assert head.headers["content-type"] == got.headers["content-type"], path
            assert head.headers["cache-control"] == "no-store", path
        head = await c.head("api/v1/users/someone-else")  # dana is no admin: same refusal
        assert head.status_code == (await c.get("api/v1/users/someone-else")).status_code
        assert head.status_code == 403
        r = await c.head("api/v1/requests/1/approve")
        assert r.status_code == 405 and r.headers["allow"] == "POST"
        # the OAuth callback's GET redeems a one-time code: a link scanner's HEAD must not
        r = await c.head("oauth_callback?code=x&state=y")
        assert r.status_code == 405 and r.headers["allow"] == "GET"
