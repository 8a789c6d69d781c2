"""Is the ledger's database reachable (and at our schema)? Checked in the background, with backoff.

``serve`` and ``enforce`` start without their database: a hub-managed service that exits
because PostgreSQL is down takes JupyterHub down with it at hub start (the hub stops when a
managed service exits during startup). Instead they report "ledger unavailable" on their
health endpoints, retry with exponential backoff, and carry on once it answers. A schema
that is behind is reported the same way (an operator runs ``quota-ledger db migrate``).
"""

from __future__ import annotations

import asyncio
import logging
import time

from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.store import db

log = logging.getLogger("ledger.store.availability")

FIRST_RETRY_SECONDS = 1.0
MAX_RETRY_SECONDS = 30.0
CHECK_TIMEOUT_SECONDS = 10.0


def short_error(exc: BaseException) -> str:
    """One line naming what failed, without the URL (driver messages never carry passwords,
    but keep it short for a health endpoint)."""
    text = str(getattr(exc, "orig", None) or exc)
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


class LedgerAvailability:
    """What the last check of the database saw; :meth:`wait` retries until it answers."""

    def __init__(self, engine: AsyncEngine, *, max_retry_seconds: float = MAX_RETRY_SECONDS):
        self.engine = engine
        self.available = False
        self.last_error: str | None = "not checked yet"
        self.attempts = 0
        self.next_retry_seconds: float | None = None
        self.max_retry_seconds = max_retry_seconds
        self._since = time.monotonic()

    def to_json(self) -> dict:
        return {
            "error": self.last_error,
            "attempts": self.attempts,
            "retry_in_seconds": self.next_retry_seconds,
        }

    async def check(self) -> bool:
        """One attempt: connect, and compare the schema with this release's migrations."""
        self.attempts += 1
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
                await db.check_schema(self.engine)
        except (OSError, DBAPIError, SQLAlchemyError, TimeoutError, db.DatabaseError) as exc:
            was = self.available
            self.available, self.last_error = False, short_error(exc)
            if was:
                log.error("ledger unavailable: %s", self.last_error)
            return False
        if not self.available and self.attempts > 1:
            log.warning("ledger available again after %d attempts", self.attempts)
        self.available, self.last_error, self.next_retry_seconds = True, None, None
        return True

    async def wait(self, stop: asyncio.Event | None = None) -> bool:
        """Check until the database answers (True) or ``stop`` is set (False)."""
        delay = FIRST_RETRY_SECONDS
        while not await self.check():
            self.next_retry_seconds = delay
            log.warning("ledger unavailable (%s); retrying in %g s", self.last_error, delay)
            if stop is None:
                await asyncio.sleep(delay)
            else:
                try:
                    async with asyncio.timeout(delay):
                        await stop.wait()
                    return False
                except TimeoutError:
                    pass
            delay = min(delay * 2, self.max_retry_seconds)
        return True

    def mark_failed(self, exc: BaseException) -> None:
        """A query elsewhere failed on the database: report it until the next check."""
        self.available, self.last_error = False, short_error(exc)

    async def monitor(self, stop: asyncio.Event, interval_seconds: float = 15.0) -> None:
        """Until ``stop``: retry with backoff while unavailable, re-check every interval."""
        while not stop.is_set():
            if not await self.wait(stop):
                return
            try:
                async with asyncio.timeout(interval_seconds):
                    await stop.wait()
            except TimeoutError:
                pass
