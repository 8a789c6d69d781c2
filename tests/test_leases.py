"""Leases on a real PostgreSQL: concurrent cap checks cannot over-commit a hub cap, a group
pool or a user's own cap; a lease counts until its server's segment appears, is released on
a failed spawn, and expires after its TTL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from ledger.core.policy_yaml import parse_policy
from ledger.core.resources import GIB
from ledger.store import db, leases, queries

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
GPU_SERVER = {"cpu": 1000, "memory": 4 * GIB, "gpu": 1}

HUB_POLICY = parse_policy("hub: {running: {gpu: 4}}")
POOL_POLICY = parse_policy("groups:\n  lab: {pool: {running: {gpu: 3}}}")


async def running_gpu(engine, username, servername, gpu=1, start=NOW - timedelta(hours=1)):
    async with engine.begin() as conn:
        await queries.upsert_segments(
            conn,
            [{"pod_uid": f"{username}-{servername}-{start.isoformat()}", "username": username,
              "servername": servername, "cpu_millicores": 1000, "memory_bytes": 4 * GIB,
              "gpu_count": gpu, "started_at": start, "ended_at": None}],
        )  # fmt: skip


async def take(engine, policy, user, groups=(), server="", now=NOW, ttl=300, amounts=None):
    limits = policy.limits_for(user, groups)
    return await leases.take(engine, policy, limits, user, groups, amounts or GPU_SERVER,
                             server, now, ttl)  # fmt: skip


async def race(url, policy, users_groups):
    """One check per user, each on its own engine (its own connection), all at once."""
    engines = [db.create_engine(url, pool_size=1) for _ in users_groups]
    try:
        for e in engines:  # connect first so the checks, not the connects, race
            async with e.connect():
                pass
        return await asyncio.gather(
            *(take(e, policy, u, g) for e, (u, g) in zip(engines, users_groups, strict=True))
        )
    finally:
        await asyncio.gather(*(e.dispose() for e in engines))


async def test_fifty_concurrent_checks_for_two_free_gpus_under_a_hub_cap(engine, fresh_db_url):
    await running_gpu(engine, "old1", "")
    await running_gpu(engine, "old2", "")  # 2 of 4 GPUs in use: 2 free
    results = await race(fresh_db_url, HUB_POLICY, [(f"u{i}", ()) for i in range(50)])
    granted = [r for r in results if r.granted]
    assert len(granted) == 2 and all(r.lease_id for r in granted)
    assert len(await leases.live_leases(engine, NOW)) == 2
    refused = [r for r in results if not r.granted]
    assert len(refused) == 48
    neck = refused[0].status.bottleneck
    assert (neck.level, neck.scope, neck.resource, neck.in_use, neck.limit) == (
        "hub", "hub", "gpu", 4, 4)  # fmt: skip
    assert refused[0].status.may_wait  # gpu waits by default
    assert "4 of 4 GPUs in use on this hub" in refused[0].status.message()


async def test_fifty_concurrent_checks_for_a_group_pool(engine, fresh_db_url):
    async with engine.begin() as conn:
        await queries.record_groups(conn, "member", ["lab"], NOW)
        await queries.record_groups(conn, "outsider", ["other"], NOW)
    await running_gpu(engine, "member", "")  # counts toward lab's pool: 2 of 3 free
    await running_gpu(engine, "outsider", "")  # does not
    users = [(f"u{i}", ("lab",)) for i in range(50)]
    results = await race(fresh_db_url, POOL_POLICY, users)
    assert sum(r.granted for r in results) == 2
    refused = next(r for r in results if not r.granted)
    assert refused.status.bottleneck.reason == "pool:lab_running:gpu"
    assert "the lab group's pool" in refused.status.message()
    # someone outside the pool is not limited by it
    assert (await take(engine, POOL_POLICY, "outsider2", ("other",))).granted


async def test_a_lease_counts_until_its_segment_appears(engine):
    first = await take(engine, parse_policy("hub: {running: {gpu: 1}}"), "ann", server="a")
    assert first.granted
    later = NOW + timedelta(seconds=30)
    policy = parse_policy("hub: {running: {gpu: 1}}")
    assert not (await take(engine, policy, "bob", now=later)).granted
    await running_gpu(engine, "ann", "a", start=NOW + timedelta(seconds=20))  # collector saw it
    assert await leases.live_leases(engine, later) == []
    # the segment counts now, not the lease as well: still refused, 1 of 1 in use
    again = await take(engine, policy, "bob", now=later)
    assert not again.granted and again.status.bottleneck.in_use == 1


async def test_release_on_failure_and_expiry_after_ttl(engine):
    policy = parse_policy("hub: {running: {gpu: 1, servers: 5}}")
    held = await take(engine, policy, "ann", ttl=120)
    assert not (await take(engine, policy, "bob")).granted
    assert await leases.release(engine, held.lease_id)  # the spawn failed
    assert not await leases.release(engine, held.lease_id)
    bob = await take(engine, policy, "bob", ttl=120)
    assert bob.granted
    assert not (await take(engine, policy, "cat", now=NOW + timedelta(seconds=119))).granted
    assert (await take(engine, policy, "cat", now=NOW + timedelta(seconds=120))).granted


async def test_a_restart_replaces_its_own_lease_and_users_own_cap_counts_leases(engine):
    policy = parse_policy("groups:\n  g: {running: {gpu: 1}}")
    assert (await take(engine, policy, "ann", ("g",), server="a")).granted
    assert (await take(engine, policy, "ann", ("g",), server="a")).granted  # same server
    second = await take(engine, policy, "ann", ("g",), server="b")
    assert not second.granted
    assert second.status.bottleneck.reason == "user_running:gpu"
    assert len(await leases.live_leases(engine, NOW)) == 1


@pytest.mark.parametrize("n", [3])
async def test_cpu_only_server_under_a_gpu_cap_needs_no_gpu(engine, n):
    policy = parse_policy("hub: {running: {gpu: 0}}")
    for i in range(n):
        assert (await take(engine, policy, f"c{i}", amounts={"cpu": 500, "memory": GIB})).granted
