"""A spawn the hub cancels while it waits in line is cancelled, even when the cancel lands
in the same turn of the event loop as a wake (the one ahead left the line).

Python 3.11's ``asyncio.wait_for`` returns the awaited result in that case and drops the
cancel (https://github.com/python/cpython/issues/86296): the waiter would then ask, could be
allowed, and the spawn the user or an admin cancelled would start. JupyterHub cancels a
pending spawn's task and, a second later, refuses the stop with a 500 if it still runs
(jupyterhub/apihandlers/users.py, ``delete``). No database: the line is the hub process's."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from ledger.hub import waiting_line
from ledger.hub.waiting_line import WaitingLine, wait_for_capacity


class _Neck:
    resource = "gpu"
    reason = "hub_running:gpu"

    def describe(self) -> str:
        return "1 of 1 GPU in use on this hub"


def _decision(allowed: bool):
    return SimpleNamespace(
        allowed=allowed,
        username="second",
        request=SimpleNamespace(servername=""),
        shared=SimpleNamespace(bottleneck=_Neck(), may_wait=True),
        message="",
    )


async def _waiting(line: WaitingLine, asked: list):
    async def ask(at):
        asked.append(at)
        return _decision(True)

    kept = []
    task = asyncio.create_task(
        wait_for_capacity(
            line, "hub_running:gpu", _decision(False), SimpleNamespace(start_timeout=60),
            SimpleNamespace(update=lambda event: None), ask,
            lambda d, outcome, limit: kept.append(outcome), lambda: "now",
        )
    )  # fmt: skip
    for _ in range(20):  # until it waits, second in line
        await asyncio.sleep(0)
    return task, kept


async def test_a_cancel_with_a_wake_in_the_same_turn_still_cancels(monkeypatch):
    monkeypatch.setattr(waiting_line, "POLL_SECONDS", 30.0)  # only a wake ends the wait
    line = WaitingLine()
    first = line.join("hub_running:gpu", "first", "")
    asked: list = []
    task, kept = await _waiting(line, asked)
    assert kept == ["waiting"]
    assert line.snapshot() == {"hub_running:gpu": [("first", ""), ("second", "")]}
    line.leave(first)  # the one ahead starts: the second is woken ...
    task.cancel()  # ... and, in the same turn, the hub cancels the second's spawn
    done, _ = await asyncio.wait([task], timeout=5)
    assert done and task.cancelled(), "the cancelled spawn went on waiting or started"
    assert asked == []  # it never asked again, so it never took a lease
    assert line.snapshot() == {}  # and it left the line


async def test_a_woken_waiter_that_is_not_cancelled_asks_and_starts(monkeypatch):
    monkeypatch.setattr(waiting_line, "POLL_SECONDS", 30.0)
    line = WaitingLine()
    first = line.join("hub_running:gpu", "first", "")
    asked: list = []
    task, kept = await _waiting(line, asked)
    line.leave(first)
    decision = await asyncio.wait_for(task, 5)
    assert decision.allowed and asked == ["now"]
    assert kept == ["waiting", "woke"]
    assert line.snapshot() == {}


async def test_a_wake_that_lands_while_the_first_asks_is_not_lost(monkeypatch):
    """The first in line asks; a server's release commits just after the ask read the
    leases, and its wake lands while the ask runs. The ask is refused; the wake must still
    count (before, the wait cleared it and slept a whole poll: 5.2 s with a 5 s poll)."""
    monkeypatch.setattr(waiting_line, "POLL_SECONDS", 30.0)  # only a wake ends the wait
    line = WaitingLine()
    asks: list = []

    async def ask(at):
        asks.append(at)
        if len(asks) == 1:
            await asyncio.sleep(0.01)
            line.wake_firsts()  # the release commits meanwhile
            return _decision(False)
        return _decision(True)

    task = asyncio.create_task(
        wait_for_capacity(
            line, "hub_running:gpu", _decision(False), SimpleNamespace(start_timeout=60),
            SimpleNamespace(update=lambda event: None), ask, lambda d, outcome, limit: None,
            lambda: "now",
        )
    )  # fmt: skip
    for _ in range(20):
        await asyncio.sleep(0)
    line.wake_firsts()  # a stop: the first in line asks
    decision = await asyncio.wait_for(task, 5)  # not after a 30 s poll
    assert decision.allowed and len(asks) == 2
