"""Usage recorded by the hub itself, for spawners no collector sees (LocalProcessSpawner,
SystemdSpawner, BatchSpawner, …): ``install_quota_hook(c, record_usage=True)``.

The less exact source: this is the hub's view of a server, not the runtime's.

* A segment opens when the spawner's ``start()`` returns (the server process exists), with the
  size the quota check read from the spawner's traits, and closes in ``post_stop_hook``.
* A heartbeat from the hub keeps ``last_seen_at`` of the open segments fresh.
* At hub start, the servers the hub's database says are running are reconciled with the open
  segments: a running server without one is opened at the hub's ``started`` time; a segment
  whose server is no longer running — or that stops during the hub's start-up check (it
  stopped while the hub was down) — is closed at its last heartbeat, ``vanished``, with the
  unknown window recorded, as for pods that vanished while the collector was down.

Servers of KubeSpawner and DockerSpawner are the collectors' and are never recorded here.
Nothing here can fail a spawn or a stop: ledger errors are logged and retried.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from datetime import UTC, datetime

from ledger.core.decision import ServerRequest
from ledger.core.segment_plan import (
    CloseSegment,
    OpenSegment,
    Resources,
    SegmentRow,
    VanishSegments,
)
from ledger.core.times import utcnow
from ledger.hub.background import run_in_background
from ledger.store import segment_writes

log = logging.getLogger("ledger.hub.recorder")

SOURCE = "hub"
COLLECTED_BY_OTHERS = {"KubeSpawner", "DockerSpawner"}
WRITE_TIMEOUT_SECONDS = 10.0


def resources_of(request: ServerRequest) -> Resources:
    amounts = dict(request.amounts)
    extended = tuple(
        sorted((k, int(v)) for k, v in amounts.items() if k not in {"cpu", "memory", "gpu"} and v)
    )
    return (amounts.get("cpu", 0), amounts.get("memory", 0), amounts.get("gpu", 0), extended)


def _key(spawner) -> tuple[str, str]:
    return spawner.user.name, getattr(spawner, "name", "") or ""


class HubRecorder:
    def __init__(self, hook, *, heartbeat_interval_seconds: float = 30.0, clock=utcnow) -> None:
        self.hook = hook  # its engine and policy
        self.heartbeat_interval_seconds = float(heartbeat_interval_seconds)
        self._clock = clock
        self._open: dict[tuple[str, str], str] = {}  # (user, server) → segment pod_uid
        self._pending: list = []  # writes not yet accepted by the ledger, retried
        self._writing = asyncio.Lock()  # one batch at a time (_write)
        self._task: asyncio.Task | None = None
        self._hub_started = False

    def __deepcopy__(self, memo):  # shared by every spawner, like the hook
        return self

    @staticmethod
    def covers(spawner) -> bool:
        return not COLLECTED_BY_OTHERS & {cls.__name__ for cls in type(spawner).__mro__}

    # --- the lifecycle ---------------------------------------------------------------------

    def track(self, spawner, request: ServerRequest) -> None:
        """Called by the quota check when a spawn may go ahead: open at start()'s return."""
        self.ensure_running()
        original = getattr(spawner, "_quota_recorder_start", None) or spawner.start
        spawner._quota_recorder_start = original

        async def start():
            result = original()
            if inspect.isawaitable(result):
                result = await result
            self._opened(spawner, request)
            return result

        spawner.start = start

    def _opened(self, spawner, request: ServerRequest) -> None:
        now = self._clock()
        username, servername = _key(spawner)
        if (username, servername) in self._open:
            return  # reconcile already opened this server's segment: one segment per server
        uid = f"hub:{username}/{servername}@{now.isoformat()}"
        self._open[(username, servername)] = uid
        self._write_later([OpenSegment(self._row(uid, username, servername, request, now))])

    def _row(self, uid, username, servername, request, started_at: datetime) -> SegmentRow:
        return SegmentRow(
            pod_uid=uid,
            namespace="",
            pod_name=f"{username}:{servername}" if servername else username,
            username=username,
            servername=servername,
            workload="jupyterhub",
            resources=resources_of(request),
            started_at=started_at,
            last_seen_at=max(self._clock(), started_at),
            source=SOURCE,
        )

    def stopped(self, spawner, then=None) -> None:
        """``post_stop_hook``: close the server's segment at this instant — or, if it stopped
        during the hub's start-up check, at its last heartbeat (it stopped while the hub was
        down) — then call ``then()``. The write runs in the background, so the hub's stop
        never waits on the ledger; a close the ledger does not take now stays pending and is
        retried with the heartbeat, still at this instant."""
        if not self.covers(spawner):
            return
        self.ensure_running()
        key = _key(spawner)
        now = self._clock()
        uid = self._open.pop(key, None)
        if uid is not None:
            self._write_later([CloseSegment(uid, now, "terminated")], then)
        else:
            run_in_background(self._vanish(key, now, then))

    async def _vanish(self, key, now: datetime, then) -> None:
        try:
            async with asyncio.timeout(WRITE_TIMEOUT_SECONDS):
                rows = await segment_writes.load_open_server_segments(self.hook.engine, SOURCE)
        except Exception as exc:  # noqa: BLE001 - the start-up reconcile catches it later
            log.warning("quota recorder: cannot look up %s's segment: %s", key, exc)
        else:
            # not a segment opened since (a restart while the lookup ran): that one runs
            tracked = set(self._open.values())
            uids = tuple(
                r.pod_uid
                for r in rows
                if (r.username, r.servername) == key and r.pod_uid not in tracked
            )
            if uids:
                await self._write([VanishSegments(uids, now)])
        if then is not None:
            then()

    # --- heartbeat and start-up reconcile --------------------------------------------------

    def ensure_running(self) -> None:
        if self._task is None or self._task.done():
            try:
                self._task = asyncio.get_running_loop().create_task(self._run())
            except RuntimeError:
                return  # no loop yet (config being loaded outside the hub): next call

    async def _run(self) -> None:
        await self._wait_for_hub()
        try:
            await self.reconcile()
        except Exception as exc:  # noqa: BLE001
            log.warning("quota recorder: start-up reconcile failed: %s", exc)
        while True:
            await asyncio.sleep(self.heartbeat_interval_seconds)
            await self.heartbeat()

    async def _wait_for_hub(self) -> None:
        """Until JupyterHub finished starting (its check of the servers it knows included)."""
        try:
            from jupyterhub.app import JupyterHub
        except ImportError:  # pragma: no cover - not inside a hub
            return
        while True:
            app = JupyterHub.instance() if JupyterHub.initialized() else None
            started = getattr(app, "_start_future", None)
            if started is not None and started.done():
                self._app = app
                return
            await asyncio.sleep(0.5)

    async def reconcile(self) -> None:
        """The hub's database vs the ledger's open hub segments."""
        from jupyterhub import orm

        from ledger.hub.request import spawner_request

        app = self._app
        rows = await segment_writes.load_open_server_segments(self.hook.engine, SOURCE)
        # what runs, read after the await: a server that stopped while the ledger answered
        # (its post_stop_hook found nothing to close) is not reopened here
        running = {}
        for orm_spawner in app.db.query(orm.Spawner).filter(orm.Spawner.server_id.isnot(None)):
            running[(orm_spawner.user.name, orm_spawner.name or "")] = orm_spawner
        now = self._clock()
        gone = []
        for row in rows:
            key = (row.username, row.servername)
            if key in running and key not in self._open:
                self._open[key] = row.pod_uid
            elif key not in running:
                gone.append(row.pod_uid)
        ops: list = [VanishSegments(tuple(gone), now)] if gone else []
        policy = self.hook.watcher.current()
        for key, orm_spawner in running.items():
            if key in self._open or orm_spawner.started is None:
                continue
            spawner = app.users[key[0]].spawners[key[1]]
            # A spawn in progress already has its orm Server (JupyterHub creates it before
            # calling start()); its segment is opened when start() returns (track), so
            # opening one here too would charge that server twice.
            if not self.covers(spawner) or getattr(spawner, "pending", None) == "spawn":
                continue
            started_at = orm_spawner.started.replace(tzinfo=UTC)  # the hub stores naive UTC
            uid = f"hub:{key[0]}/{key[1]}@{started_at.isoformat()}"
            self._open[key] = uid
            request = spawner_request(spawner, policy)
            ops.append(OpenSegment(self._row(uid, *key, request, started_at)))
        if ops:
            log.info("quota recorder: reconciled %d running, %d gone", len(running), len(gone))
            await self._write(ops)

    async def heartbeat(self) -> None:
        await self._write([])  # retry what is pending
        if not self._open:
            return
        try:
            async with asyncio.timeout(WRITE_TIMEOUT_SECONDS):
                await segment_writes.touch_last_seen(
                    self.hook.engine, list(self._open.values()), self._clock()
                )
        except Exception as exc:  # noqa: BLE001
            log.warning("quota recorder: heartbeat failed: %s", exc)

    def _write_later(self, ops: list, then=None) -> None:
        """Queue ``ops`` now (their order is the calls' order) and write them in the
        background, then call ``then()``: a spawn or a stop never waits on the ledger."""
        self._pending.extend(ops)

        async def write() -> None:
            await self._write([])
            if then is not None:
                then()

        run_in_background(write())

    async def _write(self, ops: list) -> None:
        """Queue ``ops`` and write everything pending, one writer at a time: a batch is
        removed from the queue only by the writer that wrote it, so a write that fails while
        another succeeds loses nothing (both are idempotent: ON CONFLICT, LEAST)."""
        self._pending.extend(ops)
        async with self._writing:
            if not self._pending:
                return
            batch = list(self._pending)
            try:
                async with asyncio.timeout(WRITE_TIMEOUT_SECONDS):
                    await segment_writes.apply_ops(self.hook.engine, batch)
            except Exception as exc:  # noqa: BLE001 - kept and retried with the next heartbeat
                log.warning("quota recorder: %d writes pending: %s", len(self._pending), exc)
                return
            del self._pending[: len(batch)]

    async def flush(self, timeout_seconds: float) -> bool:
        """Write what is pending (the hook's shutdown): True if nothing is left."""
        try:
            async with asyncio.timeout(timeout_seconds):
                await self._write([])
        except TimeoutError:
            pass
        return not self._pending
