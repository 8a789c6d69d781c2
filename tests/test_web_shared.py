"""The quota page and /api/v1/me show the user's group pools and the hub's caps (never who
else holds what)."""

from __future__ import annotations

from web_support import NOW, POLICY_TEXT, client, seed, serve

from ledger.core.policy_yaml import parse_policy
from ledger.web.config import WebConfig

SHARED = (
    POLICY_TEXT.replace(
        "  regular: {memory: 60 GiB-hours, gpu: 0 GPU-hours}",
        "  regular: {memory: 60 GiB-hours, gpu: 0 GPU-hours,\n"
        "            pool: {memory: 500 GiB-hours, running: {servers: 5}}}",
    )
    + "hub:\n  running: {memory: 1Ti, servers: 100}\n"
)


async def test_quota_page_and_api_show_pools_and_hub_caps(engine):
    await seed(engine)
    policy = parse_policy(SHARED, "policy.yaml")
    config = WebConfig(engine=engine, policy=lambda: policy, frozen_at=NOW)
    async with serve(config) as url, client(url, "dana") as c:
        page = (await c.get("")).text
        me = (await c.get("api/v1/me")).json()
    assert "Shared capacity" in page
    # dana (52 GiB-hours) and the quote user (4 GiB × 1 h) are in regular
    assert "the regular group&#x27;s pool has used 56 GiB-hours of its 500 GiB-hours" in page
    assert "1 of 5 servers in use in the regular group&#x27;s pool" in page
    assert "4 GiB of 1 TiB in use on this hub" in page  # dana's running server
    assert "bob" not in page
    shared = me["shared"]
    assert shared["pools"] == ["regular"]
    hub = [c for c in shared["checks"] if c["level"] == "hub"]
    assert {c["resource"] for c in hub} == {"memory", "servers"}
    assert all("holders" not in c for c in shared["checks"])


async def test_admin_rejections_page_shows_the_waiting_line(engine):
    from datetime import timedelta

    from ledger.store import queries

    await seed(engine)
    deadline = (NOW + timedelta(minutes=5)).isoformat()
    async with engine.begin() as conn:
        for i, user in enumerate(("<w1>", "w2")):
            await queries.record_decision(
                conn, decided_at=NOW - timedelta(seconds=30 - i), username=user, source="spawn",
                outcome="waiting", reason="hub_running:gpu", message=f"Waiting {user}",
                detail={"wait_deadline": deadline,
                        "shared": {"bottleneck": {"level": "hub", "scope": "hub",
                                                  "resource": "gpu"}}},
            )  # fmt: skip
        # w3 waited, then woke: no longer in line
        for outcome in ("waiting", "woke"):
            await queries.record_decision(
                conn, decided_at=NOW - timedelta(seconds=20), username="w3", source="spawn",
                outcome=outcome, reason="hub_running:gpu", detail={"wait_deadline": deadline},
            )  # fmt: skip
    policy = parse_policy(SHARED, "policy.yaml")
    config = WebConfig(engine=engine, policy=lambda: policy, frozen_at=NOW)
    async with serve(config) as url, client(url, "admin") as c:
        page = (await c.get("admin/rejections")).text
    line = page.split("Waiting line")[1].split("</section>")[0]
    assert "&lt;w1&gt;" in line and "<w1>" not in line  # escaped
    assert line.index("&lt;w1&gt;") < line.index("w2") and "w3" not in line
    assert "gpu (hub)" in line and "<td>2</td>" in line


async def test_admins_see_who_holds_shared_caps_others_get_403(engine):
    from datetime import timedelta

    from test_usage_model import openapi_validator
    from web_support import XSS_NAME, segment

    from ledger.store import queries

    await seed(engine)
    async with engine.begin() as conn:  # a running server of the XSS user, in regular's pool
        await queries.upsert_segments(
            conn, [segment(XSS_NAME, NOW - timedelta(hours=2), None, server="x")]
        )
        await queries.record_groups(conn, XSS_NAME, ["regular"], NOW)
    policy = parse_policy(SHARED, "policy.yaml")
    config = WebConfig(engine=engine, policy=lambda: policy, frozen_at=NOW)
    async with serve(config) as url:
        async with client(url, "dana") as c:
            assert (await c.get("api/v1/shared")).status_code == 403
            assert (await c.get("admin/running")).status_code == 403
        async with client(url, "admin") as c:
            response = await c.get("api/v1/shared")
            page = (await c.get("admin/running")).text
    assert response.status_code == 200
    body = response.json()
    openapi_validator("SharedTotals").validate(body)
    servers = next(
        c for c in body["shared"]["checks"]
        if c["scope"] == "regular" and c["resource"] == "servers"
    )  # fmt: skip
    assert servers["in_use"] == 2 and servers["holders"] == {"dana": 1, XSS_NAME: 1}
    hub = next(c for c in body["shared"]["checks"] if c["level"] == "hub" and c["resource"] == "memory")  # fmt: skip
    assert hub["holders"] == {"dana": 4, XSS_NAME: 4}
    section = page.split('id="shared-capacity"')[1].split("</section>")[0]
    assert "2 of 5 servers in use in the regular group&#x27;s pool" in section
    assert "&lt;img src=x onerror=alert(1)&gt;</a> 1" in section and XSS_NAME not in section
    assert ">dana</a> 1" in section
