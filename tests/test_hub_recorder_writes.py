"""The hub recorder's writes (``install_quota_hook(record_usage=True)``): a spawn's start and
a stop never wait on the ledger, and what a ledger that does not answer could not take is
written later at the instants it happened. The recorder against a real hub is
tests/test_hub_recorder.py; here it runs on its own, with a real PostgreSQL and a port that
accepts connections and never answers (a hung database)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from hub_support.ledger_data import GIB, silent_port
from sqlalchemy import text

from ledger.core.decision import ServerRequest
from ledger.hub import recorder as recorder_module
from ledger.hub.recorder import HubRecorder
from ledger.store import db

T = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def spawner_of(username: str, servername: str = "") -> SimpleNamespace:
    async def start():
        return ("127.0.0.1", 8888)

    return SimpleNamespace(user=SimpleNamespace(name=username), name=servername, start=start)


async def segments(engine) -> list[dict]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT username, servername, started_at, ended_at, end_reason, memory_bytes "
                "FROM segments ORDER BY started_at"
            )  # fmt: skip
        )
        return [dict(r._mapping) for r in rows]


async def test_start_and_stop_return_while_a_hung_ledger_holds_their_writes(engine, monkeypatch):
    monkeypatch.setattr(recorder_module, "WRITE_TIMEOUT_SECONDS", 0.5)
    clock = Clock(T)
    async with silent_port() as port:
        hung = db.create_engine(f"postgresql+asyncpg://quota@127.0.0.1:{port}/ledger")
        hook = SimpleNamespace(engine=hung)
        recorder = HubRecorder(hook, clock=clock)
        spawner = spawner_of("alice")
        recorder.track(spawner, ServerRequest({"cpu": 1000, "memory": 2 * GIB}))
        try:
            assert await spawner.start() == ("127.0.0.1", 8888)
            await asyncio.sleep(0)  # one turn of the loop: the background write begins
            # start() returned, and the open's write is still in flight to the hung ledger
            assert recorder._writing.locked()
            clock.now = T + timedelta(hours=1)
            woken = asyncio.Event()
            recorder.stopped(spawner, then=woken.set)  # returns at once: nothing to await
            await woken.wait()  # the line is woken once the write has been tried
            assert [type(op).__name__ for op in recorder._pending] == [
                "OpenSegment",
                "CloseSegment",
            ]
            assert await segments(engine) == []
            # the ledger is back: the next heartbeat writes both, at their own instants
            hook.engine = engine
            clock.now = T + timedelta(hours=5)
            await recorder.heartbeat()
        finally:
            recorder._task.cancel()
            await hung.dispose()
    assert recorder._pending == []
    assert await segments(engine) == [
        dict(
            username="alice",
            servername="",
            started_at=T,
            ended_at=T + timedelta(hours=1),
            end_reason="terminated",
            memory_bytes=2 * GIB,
        )  # fmt: skip
    ]


async def test_the_waiting_line_is_woken_after_the_close_is_written(engine):
    clock = Clock(T)
    recorder = HubRecorder(SimpleNamespace(engine=engine), clock=clock)
    spawner = spawner_of("bob", "gpu")
    recorder.track(spawner, ServerRequest({"gpu": 1}, "gpu"))
    seen_when_woken = []
    try:
        await spawner.start()
        assert await recorder.flush(5)
        clock.now = T + timedelta(minutes=30)
        woken = asyncio.Event()

        def wake() -> None:  # what the waiting line re-checks must see the capacity free
            seen_when_woken.append(list(recorder._pending))
            woken.set()

        recorder.stopped(spawner, then=wake)
        await woken.wait()
    finally:
        recorder._task.cancel()
    assert seen_when_woken == [[]]
    (row,) = await segments(engine)
    assert (row["servername"], row["ended_at"]) == ("gpu", T + timedelta(minutes=30))


async def test_a_restart_while_a_stopped_servers_segment_is_looked_up_keeps_the_new_one(
    engine, monkeypatch
):
    """A server this recorder never saw open (it stopped during the hub's start-up check)
    is looked up to be closed; a restart of it meanwhile opens a new segment, which the
    lookup's close must leave running."""
    from ledger.store import segment_writes

    clock = Clock(T)
    before_restart = HubRecorder(SimpleNamespace(engine=engine), clock=clock)
    first = spawner_of("alice")
    before_restart.track(first, ServerRequest({"memory": GIB}))
    await first.start()
    assert await before_restart.flush(5)
    before_restart._task.cancel()

    recorder = HubRecorder(SimpleNamespace(engine=engine), clock=clock)
    answer, real = asyncio.Event(), segment_writes.load_open_server_segments

    async def slow_ledger(*args, **kwargs):  # the lookup answers after the restart's write
        await answer.wait()
        return await real(*args, **kwargs)

    monkeypatch.setattr(recorder_module.segment_writes, "load_open_server_segments", slow_ledger)
    spawner = spawner_of("alice")
    woken = asyncio.Event()
    try:
        clock.now = T + timedelta(hours=1)
        recorder.stopped(spawner, then=woken.set)
        clock.now = T + timedelta(hours=1, minutes=1)
        recorder.track(spawner, ServerRequest({"memory": 2 * GIB}))
        await spawner.start()
        assert await recorder.flush(5)
        answer.set()
        await woken.wait()
    finally:
        recorder._task.cancel()
    old, new = await segments(engine)
    assert (old["memory_bytes"], old["ended_at"], old["end_reason"]) == (GIB, T, "vanished")
    assert (new["memory_bytes"], new["started_at"], new["ended_at"]) == (
        2 * GIB, T + timedelta(hours=1, minutes=1), None
    )  # fmt: skip
