"""decide() with group pools and hub caps on a real ledger: pool budgets sum the members'
usage exactly (the per-day rollups and the edge days' raw segments), caps count running
segments and live leases, the multi-group rule, and the bottleneck in the decision log."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from ledger.core.decision import ServerRequest
from ledger.core.policy_yaml import parse_policy
from ledger.core.resources import GIB
from ledger.store import leases, queries
from ledger.store.decide import decide, record

NOW = datetime(2026, 11, 1, 12, 0, 7, 123456, tzinfo=UTC)
POLICY = parse_policy(
    """
window: 30d
groups:
  lab: {memory: 10000 GiB-hours, pool: {memory: 300 GiB-hours, gpu: 50 GPU-hours,
                                        running: {gpu: 3}}}
  bio: {memory: 10000 GiB-hours, pool: {memory: {limit: 100 GiB-hours, window: 2d}}}
  plain: {memory: 10000 GiB-hours}
hub: {running: {gpu: 4, servers: 10}}
"""
)


def gpu_server(name=""):
    return ServerRequest({"cpu": 1000, "memory": 4 * GIB, "gpu": 1}, servername=name)


async def add(engine, user, start, end, memory_gib=4, gpu=0, name=""):
    async with engine.begin() as conn:
        await queries.upsert_segments(
            conn,
            [{"pod_uid": f"{user}-{name}-{start.isoformat()}", "username": user,
              "servername": name, "cpu_millicores": 500, "memory_bytes": memory_gib * GIB,
              "gpu_count": gpu, "started_at": start, "ended_at": end}],
        )  # fmt: skip


async def groups(engine, user, names):
    async with engine.begin() as conn:
        await queries.record_groups(conn, user, names, NOW)


async def test_pool_budget_is_the_exact_sum_of_its_members_usage(engine):
    rng = random.Random(15)
    members = ["m1", "m2", "m3"]
    for user in members:
        await groups(engine, user, ["lab"])
        for _ in range(12):  # closed segments across the window's edges and inside it
            start = NOW - timedelta(seconds=rng.randrange(0, 33 * 86400))
            end = start + timedelta(seconds=rng.randrange(1, 3 * 86400))
            await add(
                engine, user, start, min(end, NOW - timedelta(seconds=1)), rng.randrange(1, 9)
            )
    await add(engine, "m1", NOW - timedelta(hours=5, microseconds=7), None, 3, name="open")
    await groups(engine, "outsider", ["plain"])
    await add(engine, "outsider", NOW - timedelta(days=2), NOW - timedelta(days=1), 64)
    expected = 0
    for user in members:
        own = await decide(engine, POLICY, user, ["lab"], ServerRequest({}), NOW)
        expected += own.budgets["memory"].used_hours
    d = await decide(engine, POLICY, "m2", ["lab"], gpu_server(), NOW)
    check = next(c for c in d.shared.checks if c.scope == "lab" and c.resource == "memory")
    from ledger.core.resources import resource

    assert resource("memory").to_hours(check.in_use) == expected
    assert d.shared.pools == ("lab",)


async def test_pool_budget_counts_each_edge_day_segment_once(engine):
    # the window's first and last UTC days: segments that start in the day, that start
    # before it and end in it, that do both, and one that spans the day (rollup cover rate)
    since = NOW - timedelta(days=30)
    first = since.replace(hour=0, minute=0, second=0, microsecond=0)
    last = NOW.replace(hour=0, minute=0, second=0, microsecond=0)
    hour = timedelta(hours=1)
    spans = []
    for day in (first, last):
        spans += [
            (day - 3 * hour, day + 2 * hour),  # started before the day, ended in it
            (day + hour, day + 2 * hour + timedelta(seconds=36)),  # both in the day
            (day + 3 * hour, day + 30 * hour),  # started in the day, ended after it
            (day - 2 * hour, day + 25 * hour),  # covers the whole day
        ]
    for i, user in enumerate(["e1", "e2"]):
        await groups(engine, user, ["lab"])
        for start, end in spans:
            if start < since - 4 * hour or end >= NOW:
                end = min(end, NOW - timedelta(seconds=1))
            await add(engine, user, start, end, memory_gib=1 + i)
    expected = 0
    for user in ["e1", "e2"]:
        own = await decide(engine, POLICY, user, ["lab"], ServerRequest({}), NOW)
        expected += own.budgets["memory"].used_hours
    d = await decide(engine, POLICY, "e1", ["lab"], gpu_server(), NOW)
    check = next(c for c in d.shared.checks if c.scope == "lab" and c.resource == "memory")
    from ledger.core.resources import resource

    # Decimal hours round at 28 digits; one GiB-microsecond is ~3e-10 GiB-hours
    assert expected > 0 and abs(resource("memory").to_hours(check.in_use) - expected) < 1e-18


async def test_a_spent_pool_budget_refuses_and_never_waits(engine):
    await groups(engine, "m1", ["lab"])
    await add(engine, "m1", NOW - timedelta(days=3), NOW - timedelta(days=1), 8)  # 384 GiB-h
    d = await decide(engine, POLICY, "m2", ["lab"], gpu_server(), NOW)
    assert not d.allowed and "pool:lab_used_up:memory" in d.reasons
    assert not d.shared.may_wait
    assert "the lab group's pool has used 384 GiB-hours of its 300 GiB-hours" in d.message
    # a user outside the pool is untouched by it
    assert (await decide(engine, POLICY, "x", ["plain"], gpu_server(), NOW)).allowed


async def test_every_pool_of_every_group_must_allow_and_usage_counts_toward_each(engine):
    await groups(engine, "both", ["lab", "bio"])
    await add(engine, "both", NOW - timedelta(hours=30), NOW - timedelta(hours=1), 4)  # 116 GiB-h
    # counted in bio's pool (100 over 2 days: spent) and in lab's (300: fine)
    d = await decide(engine, POLICY, "labonly", ["lab"], gpu_server(), NOW)
    assert d.allowed
    d = await decide(engine, POLICY, "bioonly", ["bio"], gpu_server(), NOW)
    assert not d.allowed and d.reasons == ["pool:bio_used_up:memory"]
    d = await decide(engine, POLICY, "both", ["lab", "bio"], gpu_server(), NOW)
    assert d.reasons == ["pool:bio_used_up:memory"] and d.shared.pools == ("bio", "lab")


async def test_caps_count_running_segments_and_live_leases(engine):
    await add(engine, "a", NOW - timedelta(hours=1), None, gpu=2, name="x")  # 2 of 4 on the hub
    limits = POLICY.limits_for("b", ["plain"])
    taken = await leases.take(engine, POLICY, limits, "b", ["plain"], gpu_server().amounts, "",
                              NOW, 300)  # fmt: skip
    assert taken.granted
    d = await decide(engine, POLICY, "c", ["plain"], gpu_server(), NOW)
    assert d.allowed and "3 of 4 GPUs in use on this hub" in d.message
    await leases.take(engine, POLICY, POLICY.limits_for("c", []), "c", [], gpu_server().amounts,
                      "", NOW, 300)  # fmt: skip
    d = await decide(engine, POLICY, "e", ["plain"], gpu_server(), NOW)
    assert not d.allowed and d.reasons == ["hub_running:gpu"]
    assert d.shared.may_wait and d.shared.bottleneck.level == "hub"
    assert "Not enough gpu free: 4 of 4 GPUs in use on this hub" in d.message
    # a restart of a's own server does not count that server twice
    restart = ServerRequest({"gpu": 2}, servername="x")
    assert (await decide(engine, POLICY, "a", ["plain"], restart, NOW)).allowed
    # the rejection log carries the bottleneck in its own columns
    await record(engine, d, source="spawn")
    async with engine.connect() as conn:
        row = (await conn.execute(text(
            "SELECT bottleneck_level, bottleneck_scope, bottleneck_resource FROM decisions"
        ))).one()  # fmt: skip
    assert tuple(row) == ("hub", "hub", "gpu")


async def test_no_shared_limits_reads_nothing_extra(engine, monkeypatch):
    from ledger.store import shared_reads

    async def no_read(*args, **kwargs):
        raise AssertionError("a shared-capacity query for a policy without pools/hub caps")

    monkeypatch.setattr(shared_reads, "read_usage", no_read)
    policy = parse_policy("groups:\n  a: {memory: 10 GiB-hours}\n")
    d = await decide(engine, policy, "u", ["a"], gpu_server(), NOW)
    assert d.allowed and d.shared is None and d.to_json()["shared"] is None
    # a pool on a group the user is not in, and no hub caps: nothing to read either
    other = parse_policy(
        "groups:\n  a: {memory: 10 GiB-hours}\n  b: {pool: {memory: 5 GiB-hours}}\n"
    )
    d = await decide(engine, other, "u", ["a"], gpu_server(), NOW)
    assert d.allowed and d.shared is None


async def test_pools_named_hub_or_user_count_apart_from_the_hub_and_the_user(engine):
    # JupyterHub group names are free text: a pool named "hub" or "user" is its own scope
    policy = parse_policy(
        "window: 30d\ngroups:\n  hub: {pool: {running: {gpu: 1}}}\n"
        "  user: {pool: {running: {gpu: 5}}}\nhub: {running: {gpu: 10}}\n"
    )
    await groups(engine, "a", ["hub"])
    await add(engine, "a", NOW - timedelta(hours=1), None, gpu=1, name="x")
    await add(engine, "other", NOW - timedelta(hours=1), None, gpu=3, name="y")
    await add(engine, "c", NOW - timedelta(hours=1), None, gpu=2, name="z")
    await groups(engine, "m", ["user"])
    await add(engine, "m", NOW - timedelta(hours=1), None, gpu=1, name="w")

    def in_use(decision):
        return {(c.level, c.scope): c.in_use for c in decision.shared.checks}

    d = await decide(engine, policy, "b", ["hub"], gpu_server(), NOW)
    assert in_use(d) == {("pool", "hub"): 1, ("hub", "hub"): 7}
    assert not d.allowed and d.reasons == ["pool:hub_running:gpu"]
    d = await decide(engine, policy, "c", ["user"], gpu_server(), NOW)
    assert in_use(d) == {("pool", "user"): 3, ("hub", "hub"): 7}
    assert d.allowed
    # the user's own cap counts the user's servers, not the "user" pool's
    capped = parse_policy(
        "window: 30d\nusers:\n  c: {running: {gpu: 3}}\ngroups:\n"
        "  user: {pool: {running: {gpu: 5}}}\n"
    )
    taken = await leases.take(engine, capped, capped.limits_for("c", ["user"]), "c", ["user"],
                              gpu_server().amounts, "second", NOW, 300)  # fmt: skip
    assert taken.granted, taken
    d = await decide(engine, capped, "c", ["user"], gpu_server(), NOW)
    assert in_use(d) == {("user", "c"): 3, ("pool", "user"): 4}  # its 2 GPUs and its lease
