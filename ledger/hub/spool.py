"""Decision-log writes that survive a database outage: kept in memory, written when it returns.

The hook answers a spawn before anything is written; the rows (the decision, the user's
groups) go into this bounded queue and one background task writes them in order, in one
transaction per batch. While the database refuses, the task retries with exponential
backoff; when the queue is full the oldest rows are dropped and counted
(``quota_ledger_spawn_records_dropped_total``), so an outage never grows the hub's memory
without bound. Rows still queued at hub shutdown are lost (and counted as dropped).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from datetime import datetime

from ledger.hub import metrics
from ledger.store import queries

log = logging.getLogger("ledger.hub")

MAX_ROWS = 10_000
BATCH_ROWS = 500
WRITE_TIMEOUT_SECONDS = 10.0
FIRST_RETRY_SECONDS = 1.0
MAX_RETRY_SECONDS = 30.0


class DecisionSpool:
    def __init__(self, engine_of, *, max_rows: int = MAX_ROWS):
        self._engine_of = engine_of  # a callable: the engine is made lazily by the hook
        self._rows: collections.deque[tuple[str, dict]] = collections.deque()
        self.max_rows = max_rows
        self.dropped = 0
        self._task: asyncio.Task | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self.retry_seconds = FIRST_RETRY_SECONDS

    def __len__(self) -> int:
        return len(self._rows)

    def add_decision(self, row: dict) -> None:
        self._add("decision", row)

    def add_groups(self, username: str, groups, synced_at: datetime) -> None:
        self._add("groups", {"username": username, "groups": list(groups), "synced_at": synced_at})

    def _add(self, kind: str, row: dict) -> None:
        if len(self._rows) >= self.max_rows:
            self._rows.popleft()
            self.dropped += 1
            metrics.SPAWN_RECORDS_DROPPED.inc()
        self._rows.append((kind, row))
        metrics.SPAWN_RECORDS_PENDING.set(len(self._rows))
        self._idle.clear()
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        try:
            while self._rows:
                if await self.write_once():
                    self.retry_seconds = FIRST_RETRY_SECONDS
                    continue
                await asyncio.sleep(self.retry_seconds)
                self.retry_seconds = min(self.retry_seconds * 2, MAX_RETRY_SECONDS)
        finally:
            if not self._rows:
                self._idle.set()

    async def write_once(self) -> bool:
        """Write the oldest batch; False (rows kept) when the database does not take it."""
        batch = list(self._rows)[:BATCH_ROWS]
        try:
            async with asyncio.timeout(WRITE_TIMEOUT_SECONDS):
                await self._write(batch)
        except Exception as exc:  # noqa: BLE001 - any failure: keep the rows, retry later
            metrics.SPAWN_RECORD_FAILURES.inc()
            log.warning(
                "quota: %d decision-log rows wait for the database (%s: %s); retrying in %g s",
                len(self._rows), type(exc).__name__, exc, self.retry_seconds,
            )  # fmt: skip
            return False
        for _ in batch:
            self._rows.popleft()
        metrics.SPAWN_RECORDS_PENDING.set(len(self._rows))
        return True

    async def _write(self, batch) -> None:
        async with self._engine_of().begin() as conn:
            for kind, row in batch:
                if kind == "decision":
                    await queries.record_decision(conn, **row)
                else:
                    await queries.record_groups(conn, row["username"], row["groups"],
                                                row["synced_at"])  # fmt: skip

    async def drain(self, timeout_seconds: float | None = None) -> bool:
        """Wait until every row is written (True) or ``timeout_seconds`` pass (False)."""
        try:
            async with asyncio.timeout(timeout_seconds):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._rows:
            self.dropped += len(self._rows)
            metrics.SPAWN_RECORDS_DROPPED.inc(len(self._rows))
            log.error("quota: %d decision-log rows were never written", len(self._rows))
            self._rows.clear()
        self._idle.set()
