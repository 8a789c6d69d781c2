"""Where the collector learns what runs: one ``Source`` per runtime.

A source lists and watches its runtime's objects (``make_watches``) and turns one of them into
a ``PodView`` (``parse``); everything after that — planning, the write buffer, heartbeats,
the reconcile of vanished objects — is the daemon's and the same for every source
(collector/daemon.py). ``kubernetes`` (pods, the default) and ``docker`` (containers).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from collector.pods import Identity
from collector.settings import Settings
from collector.watcher import Handler, Scope
from ledger.core.accounting import Accounting
from ledger.core.segment_plan import PodView


class Watch(Protocol):
    scope: Scope
    listed: asyncio.Event  # set once the first list succeeded

    async def run(self) -> None: ...  # list, then follow changes until cancelled
    async def list_once(self, cause: str) -> Any: ...
    def confirmed_at(self) -> datetime | None: ...  # objects not reported gone were alive then
    def request_relist(self) -> None: ...


class Source(Protocol):
    name: str  # segments.source of the rows it opens; its reconcile touches only those

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    def make_watches(
        self,
        scopes: list[Scope],
        settings: Settings,
        handler: Handler,
        *,
        on_reconnect: Callable[[], None],
        on_relist: Callable[[str], None],
        on_event_type: Callable[[str], None],
        clock: Callable[[], datetime],
    ) -> list[Watch]: ...
    def parse(
        self, kind: str, obj: Any, identity: Identity, accounting: Accounting, observed_at: datetime
    ) -> PodView: ...  # raises PodSkipped
    def uid_of(self, obj: Any) -> str: ...
