"""The waiting line: a spawn refused only by a shared cap that allows waiting (a group
pool's or the hub's ``running:``, ``wait:`` in the policy; gpu by default) waits for capacity
instead of failing, first come first served per bottleneck.

The waiting spawn stays inside the quota check (JupyterHub's ``pre_spawn_hook``, before
``Spawner.start``), so the spawn page shows it pending with our progress lines ("Waiting for
a GPU: 8 of 8 GPUs in use on this hub; you are number 2 in line"). Every
``POLL_SECONDS`` the first in line asks again under lock (``ledger.store.leases.take``), with
the policy as it is then — a cap raised in the policy file wakes it without a restart; a
waiter whose bottleneck moves (a policy change) moves to that line, keeping its turn. A new
spawn queues behind the lines whose caps apply to it (the hub's, its own groups' pools). The
wait is bounded by the spawner's ``start_timeout``: then it asks once more, under lock like
every ask, and starts only with a lease; a failed last ask is a ledger failure (the hook's
``on_ledger_error``). A cancelled spawn (the hub cancels the spawn's task) leaves the line.
The line lives in the hub process (one hub, one line); the decision log records each wait
(``waiting``), wake (``woke``), give-up (``gave_up``) and cancel (``left``) with its
bottleneck, which is what the admin pages show as the line.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from dataclasses import dataclass, field
from datetime import timedelta

from ledger.core import messages
from ledger.core.quantities import format_duration
from ledger.core.resources import SERVERS
from ledger.core.shared_capacity import HUB, pools_for

POLL_SECONDS = 2.0
_order = itertools.count()


@dataclass(eq=False)
class Waiter:
    key: str  # the bottleneck: "hub_running:gpu", "pool:lab_running:gpu"
    username: str
    servername: str
    order: int = field(default_factory=lambda: next(_order))
    woken: asyncio.Event = field(default_factory=asyncio.Event)


class WaitingLine:
    """FIFO lines, one per bottleneck."""

    def __init__(self) -> None:
        self._lines: dict[str, list[Waiter]] = {}

    def join(self, key: str, username: str, servername: str) -> Waiter:
        waiter = Waiter(key, username, servername)
        self._lines.setdefault(key, []).append(waiter)
        return waiter

    def position(self, waiter: Waiter) -> int:
        return self._lines.get(waiter.key, []).index(waiter) + 1

    def leave(self, waiter: Waiter) -> None:
        line = self._lines.get(waiter.key, [])
        if waiter in line:
            line.remove(waiter)
        if line:
            line[0].woken.set()  # the next in line asks at once
        else:
            self._lines.pop(waiter.key, None)

    def wake_firsts(self) -> None:
        """Capacity may have freed (a server stopped): the first of every line asks now
        rather than at its next poll."""
        for line in self._lines.values():
            if line:
                line[0].woken.set()

    def move(self, waiter: Waiter, key: str) -> None:
        """Into ``key``'s line (its bottleneck changed), at the place its arrival gives it:
        ahead of everyone who came later."""
        if key == waiter.key:
            return
        self.leave(waiter)
        waiter.key = key
        line = self._lines.setdefault(key, [])
        line.insert(sum(1 for w in line if w.order < waiter.order), waiter)

    def busy_keys(self, request_amounts, scopes: set[str]) -> list[str]:
        """Lines a new spawn asking for these resources must queue behind (FIFO: no one
        overtakes a waiter for the same bottleneck): those of its ``scopes``
        (:func:`line_scopes`), for a resource it asks for; a line of a pool the user is not
        in holds nothing the spawn needs."""
        asked = {n for n, v in request_amounts.items() if v} | {SERVERS}
        return [
            k
            for k, line in self._lines.items()
            if line and scope_of(k) in scopes and k.rsplit(":", 1)[1] in asked
        ]

    def snapshot(self) -> dict[str, list[tuple[str, str]]]:
        return {k: [(w.username, w.servername) for w in line] for k, line in self._lines.items()}


def scope_of(key: str) -> str:
    """``hub`` or ``pool:<group>`` of a line's key, ``ScopeCheck.reason`` of a waitable cap
    (``hub_running:gpu``, ``pool:gpu-dev_running:gpu``)."""
    return key.rsplit(":", 1)[0].removesuffix("_running")


def line_scopes(policy, groups) -> set[str]:
    """The scopes whose caps a spawn of a user in ``groups`` meets: the hub, and the pools
    of its groups (``ledger.core.shared_capacity.pools_for``)."""
    return {HUB} | {f"pool:{g}" for g in pools_for(policy.pools, groups)}


def key_for(decision, queue: list[str]) -> str | None:
    """The line this spawn waits in: its bottleneck when only waitable caps refuse it, or
    the first busy line for what it asks (an allowed spawn queues behind earlier waiters)."""
    shared = decision.shared
    if not decision.allowed:
        return shared.bottleneck.reason if shared is not None and shared.may_wait else None
    return queue[0] if queue else None


def waiting_text(neck, position: int, waited_seconds: float) -> str:
    what = {"gpu": "a GPU", SERVERS: "a server slot", "cpu": "CPUs", "memory": "memory"}
    resource = what.get(neck.resource, neck.resource)
    text = f"Waiting for {resource}: {neck.describe()}; you are number {position} in line"
    if waited_seconds >= 1:
        text += f" (waiting {format_duration(int(waited_seconds))})"
    return text + "."


def gave_up_text(neck, waited_seconds: float) -> str:
    return (
        f"No capacity became free in {format_duration(int(waited_seconds))} of waiting "
        f"({neck.describe()}), so this server was not started. Please try again later."
    )


def event(text: str) -> dict:
    return {"message": text, "html_message": messages.html.escape(text)}


async def wait_for_capacity(line: WaitingLine, key: str, decision, spawner, gate, ask, keep,
                            clock):  # fmt: skip
    """Wait in ``key``'s line until ``ask()`` (a fresh decision, lease included) allows the
    spawn, stops being only a waitable cap, or ``start_timeout`` passes (then one last ask:
    a spawn only ever starts on a decision ``ask`` made, with its lease; if that ask fails,
    its error is raised, for the hook's ``on_ledger_error``). Returns the final decision;
    ``keep(decision, outcome)`` records waits, wakes, give-ups and cancels."""
    limit_seconds = float(getattr(spawner, "start_timeout", 60) or 60)
    started = time.monotonic()
    waiter = line.join(key, decision.username, decision.request.servername)
    keep(decision, "waiting", limit_seconds)
    try:
        while True:
            waited = time.monotonic() - started
            neck = decision.shared.bottleneck if decision.shared is not None else None
            position = line.position(waiter)
            if neck is not None:
                gate.update(event(waiting_text(neck, position, waited)))
            else:  # allowed, but queued behind earlier waiters for the same bottleneck
                gate.update(event(f"Waiting in line for shared capacity; you are number "
                                  f"{position} in line."))  # fmt: skip
            if waited >= limit_seconds:
                # the last ask, whatever the place in line: the allowed decision this spawn
                # queued with holds no lease, and the ledger may have been away since
                fresh = await ask(clock())
                if fresh.allowed:
                    keep(fresh, "woke", limit_seconds)
                elif fresh.shared is not None and fresh.shared.may_wait:
                    fresh.message = gave_up_text(fresh.shared.bottleneck, waited)
                    keep(fresh, "gave_up", limit_seconds)
                return fresh
            # asyncio.timeout, not wait_for: a cancel landing with a wake must still cancel
            # (https://github.com/python/cpython/issues/86296)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(POLL_SECONDS, limit_seconds - waited)):
                    await waiter.woken.wait()
            # cleared once woken, before the ask: a wake that lands while the ask reads the
            # ledger (a server's release committing just after) stays set, and the next wait
            # returns at once to ask again instead of sleeping a whole poll
            waiter.woken.clear()
            if line.position(waiter) != 1:
                continue  # FIFO: only the first in line asks
            try:
                fresh = await ask(clock())
            except Exception:  # noqa: BLE001 - the ledger is away a moment: keep waiting
                continue
            if fresh.allowed:
                keep(fresh, "woke", limit_seconds)
                return fresh
            if fresh.shared is None or not fresh.shared.may_wait:
                return fresh  # something waiting cannot fix (a spent budget) now refuses
            decision = fresh
            line.move(waiter, fresh.shared.bottleneck.reason)
    except asyncio.CancelledError:
        keep(decision, "left", limit_seconds)  # the admin pages' line: no longer waiting
        raise
    finally:
        line.leave(waiter)


def deadline_detail(decision, limit_seconds: float) -> dict:
    return {"wait_deadline": (decision.at + timedelta(seconds=limit_seconds)).isoformat()}
