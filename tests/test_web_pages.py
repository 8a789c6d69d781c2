"""The quota web service's pages and API on a real PostgreSQL (user injected; see
tests/web_support)."""

from __future__ import annotations

import csv
import io

import pytest
from web_support import client, seed, serve, web_config


@pytest.fixture
async def base_url(engine):
    await seed(engine)
    async with serve(web_config(engine)) as url:
        yield url


async def test_user_page_shows_own_numbers(base_url):
    async with client(base_url, "dana") as c:
        r = await c.get("")
    assert r.status_code == 200, r.text
    page = r.text
    assert "Your compute quota" in page
    assert "52.0" in page and "of 60 GiB-hours" in page  # 48 closed + 1 h of the 4 GiB server
    assert "87 %" in page  # 52 / 60
    assert "burns 4 GiB-hours per hour" in page
    assert "if they keep running" in page
    assert "<svg" in page and "can start again" not in page  # not out: no retry marker
    assert "ran out of memory" in page and "Choose a larger server" in page
    assert "secret-warning-of-dana" in page
    assert "How is this counted?" in page and "rolling window" in page
    assert "bob" not in page


async def test_over_limit_user_sees_when_they_can_start_again(base_url):
    async with client(base_url, "bob") as c:
        r = await c.get("")
    assert r.status_code == 200
    assert "out of quota for a typical server" in r.text
    assert 'class="retry-at"' in r.text
    assert "can start again" in r.text  # the chart's marker


async def test_me_api(base_url):
    async with client(base_url, "bob") as c:
        r = await c.get("api/v1/me")
    assert r.status_code == 200
    data = r.json()
    assert data["username"] == "bob"
    assert data["groups"] == ["power"]
    memory = data["resources"]["memory"]
    assert memory["used"] == pytest.approx(248.0)
    assert memory["limit"] == 240.0 and memory["state"] == "over"
    assert data["typical_server"]["allowed"] is False
    # 8 GiB × 31 h from now − 25 d: it leaves the window from now + 5 d on; 8 GiB-hours
    # must leave, i.e. 1 hour's worth, so room again 5 d 1 h from now (first second below).
    assert data["typical_server"]["retry_at"].startswith("2026-11-25T13:00:0")
    assert data["recent_sessions"][0]["cost_hours"]["memory"] == pytest.approx(248.0)


async def test_admin_report_sorted_filtered_paged_and_csv(base_url):
    async with client(base_url, "admin") as c:
        r = await c.get("admin/")
        assert r.status_code == 200
        assert r.text.index(">bob<") < r.text.index(">dana<")  # highest percent first
        r = await c.get("admin/", params={"sort": "user", "order": "asc"})
        assert r.text.index(">admin<") < r.text.index(">bob<") < r.text.index(">dana<")
        r = await c.get("admin/", params={"group": "power"})
        assert ">bob<" in r.text and ">dana<" not in r.text
        r = await c.get(
            "api/v1/report", params={"per_page": 2, "page": 2, "sort": "user", "order": "asc"}
        )
        data = r.json()
        assert data["total"] == 5 and data["pages"] == 3 and data["page"] == 2
        assert [u["username"] for u in data["users"]] == ["admin", "bob"]
        r = await c.get("admin/report.csv", params={"sort": "user", "order": "asc"})
        assert r.headers["content-type"].startswith("text/csv")
        rows = list(csv.reader(io.StringIO(r.text)))
        assert rows[0][0] == "username" and len(rows) == 6
        assert [row[0] for row in rows[1:]][2:] == ["admin", "bob", "dana"]


async def test_admin_pages_render(base_url):
    async with client(base_url, "admin") as c:
        for path, expect in [
            ("admin/groups", "Who is in which group"),
            ("admin/running", ">big<"),
            ("admin/rejections", "secret-denial-of-bob"),
            ("admin/enforcement", "secret-warning-of-bob"),
            ("admin/collectors", "stale"),
            ("admin/users/bob", "Quota of"),
        ]:
            r = await c.get(path)
            assert r.status_code == 200, (path, r.status_code)
            assert expect in r.text, path
        r = await c.get("admin/running")
        assert "dana" in r.text and "4 GiB" in r.text and "1 hour" in r.text


async def test_the_logs_at_a_past_instant_show_what_had_happened_by_then(engine):
    """``serve --at``: the rejection and enforcement logs as they stood at that instant (the
    seed denies at NOW - 4 h and warns at NOW - 3 h)."""
    from datetime import timedelta

    from web_support import NOW

    await seed(engine)
    for hours_before, denial, warning in ((0, True, True), (3.5, True, False), (5, False, False)):
        config = web_config(engine, now=NOW - timedelta(hours=hours_before))
        async with serve(config) as url, client(url, "admin") as c:
            rejections = (await c.get("admin/rejections")).text
            actions = (await c.get("admin/enforcement")).text
        assert ("secret-denial-of-bob" in rejections) is denial, hours_before
        assert ("secret-warning-of-bob" in actions) is warning, hours_before


async def test_healthz_needs_no_login(base_url):
    async with client(base_url) as c:
        r = await c.get("healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_openapi_documents_every_api_route(engine):
    import re
    from pathlib import Path

    import yaml
    from web_support import PREFIX, web_config

    from ledger.web.app import make_app

    spec = yaml.safe_load(
        (Path(__file__).resolve().parents[1] / "docs" / "openapi.yaml").read_text()
    )
    assert spec["openapi"].startswith("3.1")
    documented = {
        re.sub(r"\{[^}]+\}", "([^/]+)", p): {m.upper() for m in ops}
        for p, ops in spec["paths"].items()
    }
    app = make_app(web_config(engine), prefix=PREFIX)
    answers_405 = set()
    for rule in app.wildcard_router.rules:
        pattern = rule.matcher.regex.pattern.removesuffix("$")
        if pattern.endswith("/api/.*"):
            continue  # the JSON 404 for every other api/ path
        if "/api/" in pattern:
            path = pattern.removeprefix(PREFIX.rstrip("/"))
            assert path in documented, pattern
            # the methods it answers (others: 405) are the ones documented
            # (HEAD, answered for every GET, is GET's documentation: OpenAPI lists no HEAD)
            methods = set(rule.target.SUPPORTED_METHODS) - {"HEAD"}
            assert methods == documented[path], (path, methods, documented[path])
            answers_405.add(path)
    assert answers_405 == {p for p in documented if p.startswith("/api/")}


async def test_report_cache_serves_stale_and_rebuilds_in_background(engine):
    from ledger.web.report_view import ReportCache

    await seed(engine)
    cache = ReportCache(web_config(engine, report_ttl_seconds=0))
    first = await cache.get()
    assert await cache.get() is first  # stale: served at once, rebuild started
    await cache._background
    rebuilt = await cache.get()
    assert rebuilt is not first and len(rebuilt.lines) == len(first.lines)
    forced = await cache.get(refresh=True)
    assert forced is not rebuilt
