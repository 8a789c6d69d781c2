"""The security boundary: nobody reads another user's data, admin routes refuse non-admins,
everything rendered is escaped, no secrets in pages or logs, headers on every response.

The identified user is injected (tests/web_support: the one mocked step); the admin-scope
check, routing, SQL and templates are the real ones.
"""

from __future__ import annotations

import logging

import pytest
from web_support import (
    PREFIX,
    QUOTE_NAME,
    XSS_NAME,
    client,
    seeded_database,
    serve,
    web_config,
)

from ledger.store import db
from ledger.web.app import make_app
from ledger.web.auth import redacted_uri

# Every route with the data of users other than the viewer it could leak.
USER_ROUTES = ["", "api/v1/me", "request"]
ADMIN_ROUTES = [
    "admin/",
    "admin",
    "admin/report.csv",
    "admin/groups",
    "admin/running",
    "admin/rejections",
    "admin/enforcement",
    "admin/collectors",
    "admin/users/bob",
    "api/v1/report",
    "admin/requests",
    "api/v1/shared",  # who holds the shared caps (tests/test_web_shared.py: its figures)
]
SELF_OR_ADMIN_ROUTES = ["api/v1/users/bob"]
# the viewer's own summary and choice notes (tests/test_quota_notes.py checks their figures)
SUMMARY_ROUTES = ["api/v1/me/summary", "api/v1/me/choices"]
ALL_ROUTES = [*USER_ROUTES, *ADMIN_ROUTES, *SELF_OR_ADMIN_ROUTES, *SUMMARY_ROUTES, "healthz",
              "readyz", "oauth_callback", "api/v1/requests", "api/v1/requests/1/approve"]  # fmt: skip
# (the request routes' own matrix, POSTs included: tests/test_web_requests.py)
SECRETS_OF_OTHERS = ["bob", "secret-warning-of-bob", "secret-denial-of-bob", "power"]


@pytest.fixture(scope="module")
async def base_url(pg_server_url, template_url):
    # read-only tests: one seeded database for the whole matrix
    async with seeded_database(pg_server_url, template_url) as engine:
        async with serve(web_config(engine)) as url:
            yield url


def test_every_route_is_in_the_matrix(engine):
    app = make_app(web_config(engine), prefix=PREFIX)
    patterns = [rule.matcher.regex for rule in app.wildcard_router.rules]
    for regex in patterns:
        static = ("static/", "(robots\\.txt)", "(favicon\\.ico)")  # tornado's static files
        if any(part in regex.pattern for part in static) or regex.pattern in (
            "/healthz$",
            "/readyz$",
        ):
            continue
        if regex.fullmatch(PREFIX.rstrip("/")):
            continue  # only redirects to the prefix with its slash (tests/test_web_routes.py)
        assert any(regex.fullmatch(PREFIX + path) for path in ALL_ROUTES), regex.pattern


@pytest.mark.parametrize("path", ADMIN_ROUTES)
@pytest.mark.parametrize("user", ["dana", "carol", "filtered", "xss", "service"])
async def test_admin_routes_refuse_non_admins_without_data(base_url, path, user):
    async with client(base_url, user) as c:
        r = await c.get(path)
    assert r.status_code == 403, (path, user, r.status_code)
    for secret in SECRETS_OF_OTHERS:
        assert secret not in r.text, (path, user, secret)


@pytest.mark.parametrize(
    "path", ["admin/", "api/v1/report", "admin/users/dana", "api/v1/users/dana"]
)
@pytest.mark.parametrize("user", ["admin", "hubadmin"])
async def test_admins_by_custom_scope_or_admin_users(base_url, path, user):
    async with client(base_url, user) as c:
        r = await c.get(path)
    assert r.status_code == 200, (path, user)
    assert "dana" in r.text


@pytest.mark.parametrize("path", ["api/v1/users/bob", "api/v1/users/nobody-at-all"])
async def test_users_api_does_not_say_whether_someone_exists(base_url, path):
    async with client(base_url, "dana") as c:
        r = await c.get(path)
    assert r.status_code == 403  # the same answer for both: existence is not revealed
    assert r.json() == {
        "status": 403,
        "message": "Forbidden: only quota admins can read other users",
    }


async def test_own_routes_show_only_the_viewer(base_url):
    async with client(base_url, "dana") as c:
        for path in [*USER_ROUTES, "api/v1/users/dana"]:
            r = await c.get(path)
            assert r.status_code == 200, path
            assert "dana" in r.text
            for secret in SECRETS_OF_OTHERS:
                assert secret not in r.text, (path, secret)
            assert "secret-warning-of-dana" in r.text, path


async def test_query_parameters_cannot_switch_user(base_url):
    async with client(base_url, "dana") as c:
        for params in [{"user": "bob"}, {"username": "bob"}, {"name": "bob"}]:
            for path in [*USER_ROUTES, *SUMMARY_ROUTES]:
                r = await c.get(path, params=params)
                assert "secret-warning-of-bob" not in r.text and "bob" not in r.text


@pytest.mark.parametrize(
    "path", [*USER_ROUTES, *ADMIN_ROUTES, *SELF_OR_ADMIN_ROUTES, *SUMMARY_ROUTES]
)
async def test_anonymous_gets_login_redirect_or_401(base_url, path):
    async with client(base_url) as c:
        r = await c.get(path)
    if path.startswith("api/"):
        assert r.status_code == 401
        assert r.json()["status"] == 401
    else:
        assert r.status_code == 302
        assert "/hub/api/oauth2/authorize" in r.headers["location"]
    assert "dana" not in r.text and "bob" not in r.text


@pytest.mark.parametrize("path", ALL_ROUTES + ["no/such/page", "static/quota.css"])
async def test_security_headers_everywhere(base_url, path):
    async with client(base_url, "dana") as c:
        r = await c.get(path)
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'none'" in csp
    assert "frame-ancestors 'none'" in csp
    assert r.headers["x-content-type-options"] == "nosniff"


async def test_markup_in_names_is_escaped_everywhere(base_url):
    raw = [XSS_NAME, "<b>grp</b>", QUOTE_NAME, "onerror=alert(1)>"]
    async with client(base_url, "xss") as c:
        r = await c.get("")
    assert r.status_code == 200
    assert "&lt;img src=x onerror=alert(1)&gt;" in r.text
    assert "&lt;b&gt;grp&lt;/b&gt;" in r.text
    for text in raw:
        assert text not in r.text
    async with client(base_url, "quote") as c:
        r = await c.get("")
    assert "a&amp;b&quot;&#x27;" in r.text and QUOTE_NAME not in r.text
    async with client(base_url, "admin") as c:
        for path in [
            "admin/",
            "admin/?sort=user&order=asc",
            "admin/groups",
            "admin/running",
            "admin/rejections",
            "admin/enforcement",
            "admin/users/%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E",
            "admin/users/a%26b%22'",
            f"admin/?group=%3Cb%3Egrp%3C/b%3E&q={QUOTE_NAME}",
        ]:
            r = await c.get(path)
            assert r.status_code == 200, path
            for text in raw:
                assert text not in r.text, (path, text)
        r = await c.get("admin/users/%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E")
        assert (
            "&lt;img src=x onerror=alert(1)&gt;" in r.text and "secret-warning-of-&lt;img" in r.text
        )
        r = await c.get("api/v1/report", params={"group": "<b>grp</b>"})
        assert [u["username"] for u in r.json()["users"]] == [XSS_NAME]  # JSON, not HTML
        assert r.headers["content-type"].startswith("application/json")


async def test_csv_export_neutralises_formulas(engine):
    from ledger.web.report_view import _csv_safe

    assert _csv_safe("=HYPERLINK(1)") == "'=HYPERLINK(1)"
    assert _csv_safe("+1") == "'+1" and _csv_safe("dana") == "dana"


async def test_no_database_url_or_traceback_in_error_pages_or_logs(pg_server_url, caplog):
    url = db.normalize_url(pg_server_url).replace("postgres@", "postgres:hunter2-secret@")
    url = url.replace("/postgres?", "/no_such_database_xyz?")
    engine = db.create_engine(url)
    caplog.set_level(logging.DEBUG)
    try:
        async with serve(web_config(engine)) as base_url:
            async with client(base_url, "admin") as c:
                for path in ["", "api/v1/me", "admin/", "admin/running"]:
                    r = await c.get(path)
                    assert r.status_code == 500, path
                    assert "hunter2" not in r.text and "no_such_database" not in r.text
                    assert "Traceback" not in r.text and "asyncpg" not in r.text
    finally:
        await engine.dispose()
    assert "hunter2" not in caplog.text


async def test_oauth_code_and_tokens_never_reach_the_access_log(base_url, caplog):
    caplog.set_level(logging.INFO, logger="ledger.web.access")
    async with client(base_url) as c:
        await c.get("oauth_callback", params={"code": "sekrit-code", "state": "sekrit-state"})
        await c.get("", params={"token": "sekrit-token"})
    assert "oauth_callback" in caplog.text
    assert "sekrit-code" not in caplog.text and "sekrit-token" not in caplog.text
    # (JupyterHub's own callback logs a *mismatched* state nonce; a valid one is never logged)
    access = [r.getMessage() for r in caplog.records if r.name == "ledger.web.access"]
    assert access and not any("sekrit" in line for line in access)
    assert redacted_uri("/x?code=a&next=/y") == "/x?code=%5Bsecret%5D&next=%2Fy"
