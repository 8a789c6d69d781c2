"""The waiting line inside the quota check, on a real PostgreSQL: who queues behind whom, what
a waiter's deadline gives, and the leases and decision-log rows it leaves.

The spawners are plain objects carrying the traits the check reads (no JupyterHub: the
hub-level flows are tests/test_waiting_line_e2e.py and tests/test_hub_hook.py). GPUs cannot
run here: a "GPU server" is ``extra_resource_guarantees = {"nvidia.com/gpu": "1"}``, what a
KubeSpawner profile sets.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import timedelta
from types import SimpleNamespace

import asyncpg
import pytest

from ledger.core.resources import GIB
from ledger.core.times import utcnow
from ledger.hub import QuotaHook, waiting_line
from ledger.store import db, leases, queries, shared_reads

HUB_CAP = """
on_ledger_error: deny
unlisted_users: lab
groups:
  lab: {memory: 10000 GiB-hours, gpu: 1000 GPU-hours}
hub: {running: {gpu: 2}}
"""


def spawner(name, gpu=1, start_timeout=60, groups=()):
    return SimpleNamespace(
        user=SimpleNamespace(name=name, groups=[SimpleNamespace(name=g) for g in groups]),
        name="", start_timeout=start_timeout, http_timeout=30,
        mem_guarantee=4 * GIB, cpu_guarantee=1.0, mem_limit=None, cpu_limit=None,
        extra_resource_guarantees={"nvidia.com/gpu": str(gpu)} if gpu else {},
        extra_resource_limits={}, extra_container_config=None, extra_containers=None,
        init_containers=None, extra_pod_config=None, log=None, handler=None,
    )  # fmt: skip


async def running_gpu(engine, username, gpu=1):
    async with engine.begin() as conn:
        await queries.upsert_segments(
            conn,
            [{"pod_uid": f"{username}-pod", "username": username, "servername": "",
              "cpu_millicores": 1000, "memory_bytes": 4 * GIB, "gpu_count": gpu,
              "started_at": utcnow() - timedelta(hours=1), "ended_at": None}],
        )  # fmt: skip


@pytest.fixture
async def make_hook(tmp_path, fresh_db_url, monkeypatch):
    monkeypatch.setattr(waiting_line, "POLL_SECONDS", 0.1)
    hooks = []

    def make(policy: str, **kwargs) -> QuotaHook:
        path = tmp_path / f"policy-{len(hooks)}.yaml"
        path.write_text(policy, encoding="utf-8")
        hook = QuotaHook(db_url=fresh_db_url, policy_path=str(path), **kwargs)
        hook.watcher.check_interval_seconds = 0
        hooks.append(hook)
        return hook

    yield make
    for hook in hooks:
        await hook.close()


async def until(predicate, seconds=5.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return False


async def finish(task):
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


async def live_users(engine):
    return sorted(lease["username"] for lease in await leases.live_leases(engine, utcnow()))


async def test_a_spawn_queued_behind_a_waiter_starts_at_its_deadline_only_with_a_lease(
    make_hook, engine
):
    """Dave (1 GPU) queues behind Wendy (2 GPUs, refused: 1 of 2 in use). At his deadline he
    asks under lock like any waiter: the free GPU is his, with a lease, so Erin, next, is
    refused. Before, the allowed decision he queued with (taken without a lease) let him
    start unleased and Erin got a lease too: 3 GPUs under a cap of 2."""
    await running_gpu(engine, "old")
    hook = make_hook(HUB_CAP)
    wendy = asyncio.create_task(hook.check(spawner("wendy", gpu=2, start_timeout=30)))
    try:
        assert await until(lambda: hook.line.snapshot())
        dave = await hook.check(spawner("dave", gpu=1, start_timeout=1))
        assert dave.allowed
        assert await live_users(engine) == ["dave"]
        await finish(wendy)
        with pytest.raises(Exception, match="2 of 2 GPUs in use on this hub"):
            await hook.check(spawner("erin", gpu=1, start_timeout=0.5))
        assert await live_users(engine) == ["dave"]
    finally:
        await finish(wendy)


async def test_a_queued_spawn_whose_last_ask_fails_takes_the_fail_mode(make_hook, engine):
    """The ledger goes away while Dave waits behind Wendy; with ``on_ledger_error: deny`` his
    deadline refuses him as an outage (503), not an allowed start without a lease."""
    from ledger.store.decide import decide as real_decide

    await running_gpu(engine, "old")
    down = {"now": False}

    async def decide(*args):
        if down["now"]:
            raise OSError("connection refused (the ledger is down)")
        return await real_decide(*args)

    hook = make_hook(HUB_CAP, decide=decide)
    wendy = asyncio.create_task(hook.check(spawner("wendy", gpu=2, start_timeout=2)))
    try:
        assert await until(lambda: hook.line.snapshot())
        dave = asyncio.create_task(hook.check(spawner("dave", gpu=1, start_timeout=1)))
        assert await until(lambda: len(sum(hook.line.snapshot().values(), [])) == 2)
        down["now"] = True
        with pytest.raises(Exception) as refused:
            await dave
        assert getattr(refused.value, "status_code", None) == 503
        assert await live_users(engine) == []
    finally:
        await finish(wendy)


async def test_a_pools_line_does_not_hold_up_a_user_outside_that_pool(make_hook, engine):
    """Wendy waits for lab's pool GPU; Oscar (group ``other``: no pool, no hub cap) asks for
    a GPU and starts at once instead of queueing behind a line that is not his."""
    async with engine.begin() as conn:
        await queries.record_groups(conn, "old", ["lab"], utcnow())
    await running_gpu(engine, "old")
    hook = make_hook("""
groups:
  lab: {memory: 10000 GiB-hours, gpu: 1000 GPU-hours, pool: {running: {gpu: 1}}}
  other: {memory: 10000 GiB-hours, gpu: 1000 GPU-hours}
""")  # fmt: skip
    wendy = asyncio.create_task(hook.check(spawner("wendy", groups=["lab"], start_timeout=30)))
    try:
        assert await until(lambda: hook.line.snapshot())
        assert list(hook.line.snapshot()) == ["pool:lab_running:gpu"]
        started = time.monotonic()
        oscar = await hook.check(spawner("oscar", groups=["other"], start_timeout=30))
        assert oscar.allowed and time.monotonic() - started < 2
        # a member still queues behind the pool's line (FIFO for that bottleneck)
        assert hook.line.busy_keys({"gpu": 1}, waiting_line.line_scopes(
            hook.watcher.current(), ["lab"])) == ["pool:lab_running:gpu"]  # fmt: skip
    finally:
        await finish(wendy)


def test_lines_apply_by_scope_and_resource():
    line = waiting_line.WaitingLine()
    line.join("hub_running:gpu", "a", "")
    line.join("pool:my_lab_running:gpu", "b", "")
    line.join("pool:hub_running:servers", "c", "")  # a group named "hub"
    scopes_of_lab = {"hub", "pool:my_lab"}
    assert line.busy_keys({"gpu": 1}, scopes_of_lab) == [
        "hub_running:gpu", "pool:my_lab_running:gpu"]  # fmt: skip
    assert line.busy_keys({"cpu": 1000}, scopes_of_lab) == []
    assert line.busy_keys({"cpu": 1000}, {"hub", "pool:hub"}) == ["pool:hub_running:servers"]
    assert waiting_line.scope_of("pool:a:b_running:gpu") == "pool:a:b"


def test_a_waiter_whose_bottleneck_moves_keeps_its_turn():
    line = waiting_line.WaitingLine()
    first = line.join("hub_running:gpu", "first", "")
    later = line.join("pool:lab_running:gpu", "later", "")
    line.move(first, "pool:lab_running:gpu")  # a policy change: now the pool is the limit
    assert line.snapshot() == {"pool:lab_running:gpu": [("first", ""), ("later", "")]}
    assert line.position(first) == 1 and line.position(later) == 2


async def test_a_cancelled_waiter_leaves_the_admin_pages_line(make_hook, engine):
    await running_gpu(engine, "old", gpu=2)
    hook = make_hook(HUB_CAP)
    wendy = asyncio.create_task(hook.check(spawner("wendy", start_timeout=300)))
    assert await until(lambda: hook.line.snapshot())
    await hook.drain()
    async with engine.connect() as conn:
        line = await shared_reads.waiting_line(conn, utcnow())
    assert [(r["username"], r["reason"]) for r in line] == [("wendy", "hub_running:gpu")]
    await finish(wendy)
    await hook.drain()
    async with engine.connect() as conn:
        assert await shared_reads.waiting_line(conn, utcnow()) == []
        outcomes = (await conn.exec_driver_sql(
            "SELECT outcome FROM decisions WHERE username = 'wendy' ORDER BY id")).scalars().all()  # fmt: skip
    assert outcomes == ["waiting", "left"]


async def test_a_late_release_of_a_replaced_lease_keeps_the_new_one(engine):
    """A spawn's release arriving after the same server's next spawn took its lease (a
    cancelled check's, a failed spawn's) deletes nothing: the new take has a new id."""
    from ledger.core.policy_yaml import parse_policy

    policy = parse_policy("hub: {running: {gpu: 1}}")
    limits = policy.limits_for("ann", ())
    now = utcnow()
    amounts = {"cpu": 1000, "memory": 4 * GIB, "gpu": 1}
    first = await leases.take(engine, policy, limits, "ann", (), amounts, "", now, 300)
    second = await leases.take(engine, policy, limits, "ann", (), amounts, "", now, 300)
    assert first.granted and second.granted and first.lease_id != second.lease_id
    assert not await leases.release(engine, first.lease_id)
    assert await live_users(engine) == ["ann"]
    bob = await leases.take(engine, policy, policy.limits_for("bob", ()), "bob", (), amounts,
                            "", now, 300)  # fmt: skip
    assert not bob.granted


async def test_a_take_stuck_on_a_lock_gives_up_and_frees_its_connection(
    make_hook, engine, fresh_db_url
):
    """A transaction holding the hub's lease lock (a stuck session) must not pin one pooled
    connection per spawn attempt: each take gives up after the check's timeout, the
    spawns take the fail mode (503), and the pool is whole again."""
    hook = make_hook("hub: {running: {gpu: 8}}\non_ledger_error: deny", timeout_seconds=0.5)
    stuck = await asyncpg.connect(**db.asyncpg_params(fresh_db_url))
    try:
        async with stuck.transaction():
            await stuck.execute(leases._LOCK_SQL, leases.LOCK_CLASS, leases.lock_keys(["hub"]))

            async def one(i):
                with contextlib.suppress(Exception):
                    await hook.check(spawner(f"u{i}"))
                    return "allowed"
                return "refused"

            assert set(await asyncio.gather(*(one(i) for i in range(6)))) == {"refused"}
            assert await until(lambda: hook.engine.pool.checkedout() == 0, seconds=5)
    finally:
        await stuck.close()
    assert (await hook.check(spawner("after"))).allowed
