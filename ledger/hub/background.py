"""Work the hub hook starts and nobody awaits (a lease release, a segment's close after a
stop): the hub's stop path never waits on the ledger."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine

# The event loop keeps only a weak reference to a task, so one nobody holds can vanish
# before it has run (https://docs.python.org/3/library/asyncio-task.html#asyncio.create_task).
_running: set[asyncio.Future] = set()


def run_in_background(work: Coroutine | asyncio.Future) -> asyncio.Future:
    """Schedule ``work`` on the running loop (or take a future already running) and hold it
    until it is done. Nothing awaits it: work that may fail catches and logs its own errors,
    or a done callback reads them."""
    task = asyncio.ensure_future(work)
    _running.add(task)
    task.add_done_callback(_running.discard)
    return task
