"""List + watch of one scope (a namespace or all) × one label selector, done right.

https://kubernetes.io/docs/reference/using-api/api-concepts/#efficient-detection-of-changes
* list (paginated, so memory stays flat with 20,000 pods), then watch from the list's
  resourceVersion with bookmarks, so resuming after a dropped stream replays nothing twice;
* 410 Gone (in the stream or on a list continue token): list again;
* a dropped stream or an unreachable API server: capped exponential backoff with jitter,
  then resume the watch from the last resourceVersion seen;
* server-side ``timeoutSeconds`` plus a client read timeout, so a half-open connection
  cannot hang us; a re-list can also be requested (the periodic reconcile).

Pods are handled as raw JSON dicts (``_preload_content=False``): that is the shape the pure
parser takes, and it skips the client's slow model deserialisation.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import aiohttp

from collector.settings import Settings, Workload
from collector.write_buffer import BufferFull, backoff_seconds
from ledger.core.times import utcnow

log = logging.getLogger("collector.watcher")


@dataclass(frozen=True)
class Scope:
    workload: Workload
    namespace: str | None  # None: all namespaces

    def __str__(self) -> str:
        return f"{self.workload.name}@{self.namespace or '*'}"


class Handler(Protocol):
    async def begin_list(self, scope: Scope) -> None: ...
    def on_pod(self, event_type: str, pod: dict[str, Any], scope: Scope) -> None: ...
    async def end_list(self, scope: Scope, listed_uids: set[str]) -> None: ...


# Watch events that prove the scope's state up to the moment they arrive.
_CONFIRMING = frozenset({"ADDED", "MODIFIED", "DELETED", "BOOKMARK"})


class Gone(Exception):
    """410: our resourceVersion was compacted away; only a new list can continue."""


def _status_of(exc: BaseException) -> int | None:
    return getattr(exc, "status", None)


class PodWatch:
    def __init__(
        self,
        core_api: Any,
        scope: Scope,
        settings: Settings,
        handler: Handler,
        *,
        on_reconnect: Callable[[], None] = lambda: None,
        on_relist: Callable[[str], None] = lambda cause: None,
        on_event_type: Callable[[str], None] = lambda kind: None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.api = core_api
        self.scope = scope
        self.settings = settings
        self.handler = handler
        self.listed = asyncio.Event()  # set once the first list succeeded
        self.resource_version: str | None = None
        self._relist_due = False
        self._response: aiohttp.ClientResponse | None = None
        self._on_reconnect = on_reconnect
        self._on_relist = on_relist
        self._on_event_type = on_event_type
        self._sleep = sleep
        self._clock = clock
        # Until when the API server has confirmed this scope's pods; the heartbeat writes this
        # time as their last_seen_at, and a pod that turns out gone is closed there
        # (daemon.end_list). Only real contact confirms: a completed list, or a watch event
        # that proves the state up to it (ADDED/MODIFIED/DELETED/BOOKMARK). Opening a watch
        # request does not, nor does an ERROR event: after an outage the first line may be
        # 410 Expired, which says only that the deletions since our resourceVersion are lost
        # (https://kubernetes.io/docs/reference/using-api/api-concepts/#efficient-detection-of-changes).
        self._confirmed_at: datetime | None = None
        # The open stream has proved to be a valid watch (delivered such an event); from then
        # on it would deliver any deletion, so while it stays open its pods are alive now
        # (a quiet watch gets bookmarks, and ends cleanly at timeoutSeconds:
        # https://kubernetes.io/docs/reference/using-api/api-concepts/#watch-bookmarks).
        self._live = False

    # --- requests --------------------------------------------------------------------------

    def _call(self, **kwargs: Any) -> Awaitable[Any]:
        kwargs.update(label_selector=self.scope.workload.label_selector, _preload_content=False)
        if self.scope.namespace is None:
            return self.api.list_pod_for_all_namespaces(**kwargs)
        return self.api.list_namespaced_pod(self.scope.namespace, **kwargs)

    def _timeouts(self) -> tuple[float, float]:
        # (connect, read): a stream with nothing to say still gets a bookmark or its
        # server-side end within watch_timeout, so a longer silence is a dead connection.
        return (10.0, self.settings.watch_timeout + 30.0)

    async def list_once(self, cause: str) -> str:
        """List every page, hand each pod over, reconcile; return the list's resourceVersion."""
        self._on_relist(cause)
        listed_at = self._clock()
        await self.handler.begin_list(self.scope)
        listed: set[str] = set()
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": self.settings.list_page_size}
            if token:
                kwargs["_continue"] = token
            response = await self._call(_request_timeout=self._timeouts(), **kwargs)
            try:
                body = json.loads(await response.read())
            finally:
                response.release()
            for pod in body.get("items") or []:
                self._on_event_type("LISTED")
                self.handler.on_pod("LISTED", pod, self.scope)
                uid = (pod.get("metadata") or {}).get("uid")
                if uid:
                    listed.add(uid)
            token = (body.get("metadata") or {}).get("continue")
            if not token:
                break
        await self.handler.end_list(self.scope, listed)
        self._confirmed_at = listed_at
        self.listed.set()
        return body["metadata"]["resourceVersion"]

    async def watch_once(self, resource_version: str) -> int:
        """One watch request, until the server ends it, it breaks, or a re-list is asked.
        Returns how many events it delivered."""
        response = await self._call(
            watch=True,
            resource_version=resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=int(max(1, self.settings.watch_timeout)),
            _request_timeout=self._timeouts(),
        )
        self._response = response
        self._live = False  # not yet: the first line may be a 410 (see __init__)
        ended_cleanly = False
        delivered = 0
        try:
            while not self._relist_due:
                line = await response.content.readline()
                if not line:
                    ended_cleanly = True
                    return delivered  # the server ended the watch (timeoutSeconds)
                delivered += 1
                received_at = self._clock()
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":  # confirms nothing (see __init__)
                    if obj.get("code") == 410:
                        raise Gone(obj.get("message", "expired"))
                    raise RuntimeError(f"watch error {obj.get('code')}: {obj.get('message')}")
                rv = (obj.get("metadata") or {}).get("resourceVersion")
                if kind != "BOOKMARK":
                    self._on_event_type(kind)
                    self.handler.on_pod(kind, obj, self.scope)
                else:
                    self._on_event_type(kind)
                if kind in _CONFIRMING:
                    self._confirmed_at, self._live = received_at, True
                if rv:
                    self.resource_version = rv
        finally:
            # A broken stream is trusted only up to its last confirming event; one the server
            # ended cleanly (no ERROR: that raised above) delivered everything until its end.
            if ended_cleanly:
                self._confirmed_at = self._clock()
            self._live = False
            self._response = None
            response.release()

    def confirmed_at(self) -> datetime | None:
        """Pods of this scope not deleted by then were alive then."""
        return self._clock() if self._response is not None and self._live else self._confirmed_at

    def request_relist(self) -> None:
        """Make the running loop list again now (ends the current watch stream)."""
        self._relist_due = True
        if self._response is not None:
            self._response.close()

    # --- the loop --------------------------------------------------------------------------

    async def run(self) -> None:
        """List, then watch forever; runs until cancelled."""
        failures = 0
        cause = "start"
        while True:
            try:
                if self.resource_version is None or self._relist_due:
                    self._relist_due = False
                    self.resource_version = await self.list_once(cause)
                opened = time.monotonic()
                delivered = await self.watch_once(self.resource_version)
                if not self._relist_due and time.monotonic() - opened < min(
                    1.0, self.settings.watch_timeout / 2
                ):
                    # ended long before the timeoutSeconds we asked for (a proxy or load
                    # balancer closing watches; the events and bookmarks it carried are
                    # kept): without a pause this loop would ask as fast as the server answers
                    failures += 1
                    self._on_reconnect()
                    delay = backoff_seconds(failures, self.settings.backoff_max)
                    log.warning("event=watch_ended_at_once scope=%s attempt=%d events=%d "
                                "retry_in_seconds=%.2f", self.scope, failures, delivered,
                                delay)  # fmt: skip
                    await self._sleep(delay)
                    continue
                failures = 0
            except (asyncio.CancelledError, BufferFull):
                raise
            except Gone as exc:
                log.info("event=watch_expired scope=%s detail=%r", self.scope, str(exc))
                self.resource_version, cause = None, "expired"
                continue
            except Exception as exc:  # noqa: BLE001 - network, API and parse errors: back off
                status = _status_of(exc)
                if status == 410:  # a list continue token expired
                    self.resource_version, cause = None, "expired"
                    continue
                if self._relist_due:
                    cause = "periodic"
                    continue  # we closed the stream ourselves
                failures += 1
                self._on_reconnect()
                delay = backoff_seconds(failures, self.settings.backoff_max)
                hint = " (check the RBAC: list and watch pods)" if status in {401, 403} else ""
                log.warning(
                    "event=watch_failed scope=%s attempt=%d retry_in_seconds=%.2f error=%s%s",
                    self.scope, failures, delay, _describe(exc), hint,
                )  # fmt: skip
                await self._sleep(delay)
                continue
            if self._relist_due:
                cause = "periodic"


def _describe(exc: BaseException) -> str:
    status = _status_of(exc)
    text = f"{type(exc).__name__}"
    if status:
        text += f"({status})"
    detail = str(getattr(exc, "reason", "") or exc).splitlines()
    return f"{text}: {detail[0][:200]}" if detail and detail[0] else text
