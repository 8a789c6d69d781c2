"""A bounded in-memory buffer between the watches and PostgreSQL, with retry.

Watch events never wait for the database: their writes queue here and a single flusher
applies them in order, in batches. While the database is unreachable the batch is retried
with capped exponential backoff and the queue grows; nothing is dropped. If the queue
reaches its bound, `BufferFull` is raised: the daemon logs it and exits non-zero, and the
re-list after the restart rebuilds the state from the cluster.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence

from sqlalchemy.exc import DataError, IntegrityError

from ledger.core.segment_plan import Op

log = logging.getLogger("collector.write_buffer")


class BufferFull(RuntimeError):
    pass


def backoff_seconds(attempt: int, cap_seconds: float, base_seconds: float = 0.1) -> float:
    """Capped exponential backoff with full jitter (attempt 1, 2, …)."""
    return random.uniform(0, min(cap_seconds, base_seconds * 2 ** min(attempt, 30)))


class WriteBuffer:
    def __init__(
        self,
        apply: Callable[[Sequence[Op]], Awaitable[None]],
        *,
        max_events: int,
        batch_max: int = 2000,
        backoff_max_seconds: float = 30.0,
        on_write: Callable[[float, int], None] = lambda seconds, count: None,
        on_state: Callable[[bool], None] = lambda ok: None,
    ) -> None:
        self._apply = apply
        self.max_events = max_events
        self.batch_max = batch_max
        self.backoff_max_seconds = backoff_max_seconds
        self._queue: deque[Op] = deque()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._on_write = on_write
        self._on_state = on_state
        self.rejected_total = 0
        self.written_total = 0

    @property
    def depth(self) -> int:
        return len(self._queue)

    def put_many(self, ops: Iterable[Op]) -> None:
        for op in ops:
            if len(self._queue) >= self.max_events:
                raise BufferFull(
                    f"write buffer full ({self.max_events} pending writes, buffer_max_events): "
                    "the database has been unreachable too long"
                )
            self._queue.append(op)
            self._idle.clear()
        if self._queue:
            self._wakeup.set()

    async def wait_empty(self, timeout_seconds: float | None = None) -> bool:
        """True once everything queued so far is written."""
        try:
            async with asyncio.timeout(timeout_seconds):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def run(self) -> None:
        """The flusher: runs until cancelled."""
        attempt = 0
        while True:
            if not self._queue:
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = [self._queue[i] for i in range(min(self.batch_max, len(self._queue)))]
            started = time.perf_counter()
            try:
                try:
                    await self._apply(batch)
                except (IntegrityError, DataError) as exc:
                    # Not an outage: one write is wrong. Find it, log it, keep the others.
                    await self._apply_one_by_one(batch, exc)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any driver/network error: retry
                attempt += 1
                self._on_state(False)
                delay = backoff_seconds(attempt, self.backoff_max_seconds)
                log.warning(
                    "event=write_failed pending=%d attempt=%d retry_in_seconds=%.2f error=%r",
                    len(self._queue), attempt, delay, _short(exc),
                )  # fmt: skip
                await asyncio.sleep(delay)
                continue
            if attempt:
                log.warning(
                    "event=write_recovered pending=%d attempts=%d", len(self._queue), attempt
                )
            attempt = 0
            self._on_state(True)
            self._on_write(time.perf_counter() - started, len(batch))
            for _ in batch:
                self._queue.popleft()
            self.written_total += len(batch)

    async def _apply_one_by_one(self, batch: list[Op], first_error: Exception) -> None:
        log.error(
            "event=write_rejected batch=%d error=%r; retrying one by one",
            len(batch),
            _short(first_error),
        )
        for op in batch:
            try:
                await self._apply([op])
            except (IntegrityError, DataError) as exc:
                self.rejected_total += 1
                log.error("event=write_rejected op=%r error=%r", op, _short(exc))


def _short(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc) or type(exc).__name__
    return text.splitlines()[0][:300]
