"""The Docker source: containers, listed and followed through the Engine API's event stream.

https://docs.docker.com/reference/api/engine/version/v1.41/ — ``GET /containers/json``
(list), ``GET /containers/{id}/json`` (inspect: HostConfig and State, which the list lacks) and
``GET /events`` (a stream of JSON lines) are all the source needs.

The client is aiohttp over the Unix socket (``aiohttp.UnixConnector``) rather than aiodocker:
aiohttp is already a dependency (the collector's HTTP server, kubernetes_asyncio) with a
compatible range, while aiodocker would add a second wrapper around the same aiohttp whose
event stream reconnects on its own — and here a reconnect must re-list
(see ``ContainerWatch.run``). API version 1.41 (Docker 20.10) is the oldest with
``DeviceRequests`` in every field we read; newer engines serve it unchanged.

* list: every container matching the label filters, each inspected (bounded concurrency);
* events (``type=container``, the same label filters, ``since`` = the list's start, so nothing
  between the list and the stream is missed; replays are harmless, every event re-inspects);
* a dropped stream or an unreachable engine: capped exponential backoff with jitter, then
  list again (the engine keeps no resumable cursor worth trusting);
* ``destroy`` (or an inspect answering 404): the container is gone; charged up to then.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from collector.containers import SOURCE, Observation, event_time, parse_container
from collector.pods import Identity
from collector.settings import Settings
from collector.watcher import Handler, Scope
from collector.write_buffer import BufferFull, backoff_seconds
from ledger.core.accounting import Accounting
from ledger.core.segment_plan import PodView
from ledger.core.times import utcnow

log = logging.getLogger("collector.docker")

API_VERSION = "v1.41"
INSPECT_CONCURRENCY = 16
LIST_SINCE_MARGIN_SECONDS = 1.0  # replay a little before the list: the engine's clock may lag
# Actions after which a container's size, state or existence may differ. Others (exec_*,
# attach, health_status, …) change nothing we charge and are not even sent.
ACTIONS = (
    "create", "start", "restart", "die", "kill", "stop", "oom", "update", "pause", "unpause",
    "rename", "destroy",
)  # fmt: skip
GONE_ACTIONS = {"destroy"}
# After ``oom`` the engine usually reports ``die`` within milliseconds; look again after this
# so that a kill that ended the container is recorded at its exact FinishedAt (what a re-list
# after a restart would record too), and only a kill it survived at the event's time.
OOM_SETTLE_SECONDS = 1.0


class DockerUrlError(ValueError):
    pass


def endpoint(url: str) -> tuple[str, str | None]:
    """(base URL, Unix socket path or None) for ``unix:///path``, ``tcp://host:port`` or
    ``http(s)://host:port``."""
    parts = urlsplit(url)
    if parts.scheme == "unix" and parts.path:
        return "http://docker", parts.path
    if parts.scheme == "tcp" and parts.netloc:
        return f"http://{parts.netloc}", None
    if parts.scheme in {"http", "https"} and parts.netloc:
        return f"{parts.scheme}://{parts.netloc}", None
    raise DockerUrlError(
        f"--docker-url {url!r}: use unix:///var/run/docker.sock, tcp://HOST:2375 or "
        "http(s)://HOST:PORT"
    )


def label_filters(selector: str) -> list[str]:
    """``a,b=c`` → ["a", "b=c"], the Engine API's ``label`` filter values (all must match)."""
    return [part.strip() for part in selector.split(",") if part.strip()]


class NotFound(Exception):
    pass


class DockerEngine:
    """The three Engine API calls, over one aiohttp session."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.base, self.socket_path = endpoint(url)
        self.session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        connector = (
            aiohttp.UnixConnector(path=self.socket_path, limit=INSPECT_CONCURRENCY * 2)
            if self.socket_path
            else aiohttp.TCPConnector(limit=INSPECT_CONCURRENCY * 2)
        )
        self.session = aiohttp.ClientSession(connector=connector)

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    def _url(self, path: str) -> str:
        return f"{self.base}/{API_VERSION}{path}"

    async def _get_json(self, path: str, params: dict | None = None) -> Any:
        assert self.session is not None, "open() first"
        timeout = aiohttp.ClientTimeout(total=30, sock_connect=10)
        async with self.session.get(self._url(path), params=params, timeout=timeout) as response:
            if response.status == 404:
                raise NotFound(path)
            if response.status >= 400:
                detail = (await response.text())[:300]
                raise aiohttp.ClientResponseError(
                    response.request_info, (), status=response.status, message=detail
                )
            return await response.json()

    async def container_ids(self, labels: list[str]) -> list[str]:
        filters = json.dumps({"label": labels})
        listed = await self._get_json("/containers/json", {"all": "1", "filters": filters})
        return [c["Id"] for c in listed]

    async def inspect(self, container_id: str) -> dict | None:
        try:
            return await self._get_json(f"/containers/{container_id}/json")
        except NotFound:
            return None

    async def events(self, labels: list[str], since: datetime) -> aiohttp.ClientResponse:
        assert self.session is not None, "open() first"
        filters = json.dumps({"type": ["container"], "label": labels, "event": list(ACTIONS)})
        # No read timeout: an idle engine sends nothing; the periodic re-list ends the stream.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=None)
        response = await self.session.get(
            self._url("/events"),
            params={"since": f"{since.timestamp():.6f}", "filters": filters},
            timeout=timeout,
        )
        if response.status >= 400:
            detail = (await response.text())[:300]
            response.release()
            raise aiohttp.ClientResponseError(
                response.request_info, (), status=response.status, message=detail
            )
        return response


class ContainerWatch:
    """List + events for one workload's label filters; the Docker twin of ``PodWatch``."""

    def __init__(
        self,
        engine: DockerEngine,
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
        self.engine = engine
        self.scope = scope
        self.settings = settings
        self.handler = handler
        self.labels = label_filters(scope.workload.label_selector)
        self.listed = asyncio.Event()
        self._relist_due = False
        self._response: aiohttp.ClientResponse | None = None
        self._confirmed_at: datetime | None = None
        self._last_seen: dict[str, dict] = {}  # id → last inspect, to close it once destroyed
        self._settling: set[asyncio.Task] = set()
        self._on_reconnect, self._on_relist = on_reconnect, on_relist
        self._on_event_type = on_event_type
        self._sleep, self._clock = sleep, clock

    async def _inspect_all(self, ids: list[str]) -> list[dict]:
        gate = asyncio.Semaphore(INSPECT_CONCURRENCY)

        async def one(container_id: str) -> dict | None:
            async with gate:
                return await self.engine.inspect(container_id)

        found = await asyncio.gather(*(one(i) for i in ids))
        return [c for c in found if c is not None]

    async def list_once(self, cause: str) -> datetime:
        """List and inspect every container, hand each over, reconcile; return when the list
        began (the events stream starts there)."""
        self._on_relist(cause)
        listed_at = self._clock()
        await self.handler.begin_list(self.scope)
        containers = await self._inspect_all(await self.engine.container_ids(self.labels))
        self._last_seen = {}
        for container in containers:
            self._on_event_type("LISTED")
            self._last_seen[container["Id"]] = container
            self.handler.on_pod("LISTED", Observation(container), self.scope)
        await self.handler.end_list(self.scope, set(self._last_seen))
        self._confirmed_at = listed_at
        self.listed.set()
        return listed_at

    async def _on_event(self, event: dict) -> None:
        action = (event.get("Action") or event.get("status") or "").split(":")[0]
        container_id = (event.get("Actor") or {}).get("ID") or event.get("id")
        self._on_event_type(action or "unknown")
        if action not in ACTIONS or not container_id:
            return
        event_at = event_time(event)
        if action == "oom":
            task = asyncio.ensure_future(self._settled_oom(container_id, event_at))
            self._settling.add(task)
            task.add_done_callback(self._settling.discard)
            return
        container = None if action in GONE_ACTIONS else await self.engine.inspect(container_id)
        if container is not None:
            self._last_seen[container_id] = container
            self.handler.on_pod("MODIFIED", Observation(container, action, event_at), self.scope)
            return
        last = self._last_seen.pop(container_id, None)
        if last is not None:  # gone: charged until the event (or its own FinishedAt)
            self.handler.on_pod("DELETED", Observation(last, action, event_at), self.scope)

    async def _settled_oom(self, container_id: str, event_at: datetime | None) -> None:
        try:
            await self._sleep(OOM_SETTLE_SECONDS)
            container = await self.engine.inspect(container_id)
            if container is not None:
                observation = Observation(container, "oom", event_at)
                self.handler.on_pod("MODIFIED", observation, self.scope)
        except Exception as exc:  # noqa: BLE001 - a re-list still sees State.OOMKilled
            log.warning("event=oom_inspect_failed id=%s error=%r", container_id[:12], str(exc))

    async def watch_once(self, since: datetime) -> None:
        """Follow the event stream until it breaks or a re-list is asked."""
        response = await self.engine.events(self.labels, since)
        self._response = response
        last_contact_at = self._confirmed_at = self._clock()
        try:
            while not self._relist_due:
                line = await response.content.readline()
                if not line:
                    return  # the engine ended the stream (restart): re-list
                last_contact_at = self._clock()
                if line.strip():
                    await self._on_event(json.loads(line))
        finally:
            self._confirmed_at = last_contact_at
            self._response = None
            response.release()

    def confirmed_at(self) -> datetime | None:
        """While the stream is open a removal would have reached us: everything listed and
        not destroyed is alive now."""
        return self._clock() if self._response is not None else self._confirmed_at

    def request_relist(self) -> None:
        self._relist_due = True
        if self._response is not None:
            self._response.close()

    async def run(self) -> None:
        """List, then follow events; every reconnect lists again. Runs until cancelled."""
        try:
            await self._run()
        finally:
            for task in list(self._settling):
                task.cancel()

    async def _run(self) -> None:
        failures, cause = 0, "start"
        while True:
            try:
                self._relist_due = False
                listed_at = await self.list_once(cause)
                since = listed_at.timestamp() - LIST_SINCE_MARGIN_SECONDS
                await self.watch_once(datetime.fromtimestamp(since, listed_at.tzinfo))
                failures, cause = 0, "periodic" if self._relist_due else "reconnect"
                if cause == "reconnect":  # the engine ended the stream (it restarts): pause
                    await self._sleep(backoff_seconds(1, self.settings.backoff_max))
            except (asyncio.CancelledError, BufferFull):
                raise
            except Exception as exc:  # noqa: BLE001 - engine down, socket gone, bad JSON
                if self._relist_due:
                    cause = "periodic"
                    continue  # we closed the stream ourselves
                failures += 1
                self._on_reconnect()
                delay = backoff_seconds(failures, self.settings.backoff_max)
                hint = (
                    " (is the Docker socket mounted and readable?)"
                    if isinstance(exc, aiohttp.ClientConnectorError | FileNotFoundError)
                    else ""
                )
                log.warning(
                    "event=docker_watch_failed scope=%s attempt=%d retry_in_seconds=%.2f "
                    "error=%s: %s%s",
                    self.scope, failures, delay, type(exc).__name__, str(exc)[:200], hint,
                )  # fmt: skip
                await self._sleep(delay)
                cause = "reconnect"


class DockerSource:
    name = SOURCE

    def __init__(self, url: str) -> None:
        self.engine = DockerEngine(url)
        # (container id) → (run started_at, killed_at recorded): Docker flags an OOM kill
        # once per run; a kill seen live (``oom`` event) is not recorded again at the exit.
        self._oom_runs: dict[str, tuple[datetime, datetime]] = {}

    async def open(self) -> None:
        await self.engine.open()

    async def close(self) -> None:
        await self.engine.close()

    def make_watches(
        self, scopes: list[Scope], settings: Settings, handler: Handler, **callbacks
    ) -> list[ContainerWatch]:
        return [ContainerWatch(self.engine, s, settings, handler, **callbacks) for s in scopes]

    def parse(
        self,
        kind: str,
        obj: Observation,
        identity: Identity,
        accounting: Accounting,
        observed_at: datetime,
    ) -> PodView:
        if kind == "DELETED" and obj.event_at is not None:
            observed_at = min(observed_at, obj.event_at)
        view = parse_container(
            obj,
            identity,
            accounting=accounting,
            deleted=kind == "DELETED",
            observed_at=observed_at,
        )
        if kind == "DELETED":
            self._oom_runs.pop(view.uid, None)
        if view.oom_kills and view.started_at is not None:
            kill = view.oom_kills[0]
            run_started_at, killed_at = self._oom_runs.setdefault(
                view.uid, (view.started_at, kill.killed_at)
            )
            if run_started_at != view.started_at:
                self._oom_runs[view.uid] = (view.started_at, kill.killed_at)
            elif killed_at != kill.killed_at:
                view = dataclasses.replace(view, oom_kills=())
        return view

    def uid_of(self, obj: Observation) -> str:
        return obj.container.get("Id") or ""
