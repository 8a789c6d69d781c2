"""The collector: watches → pure parse/plan → write buffer → PostgreSQL, plus periodic jobs.

In-process API (the CLI and the demo use it)::

    collector = Collector(settings, engine, api_client_factory, collector_id="demo",
                          accounting=policy_watcher.current)  # or an Accounting
    collector = Collector(settings, engine, source=DockerSource(url))   # another runtime
    exit_code = await collector.run(stop_event)     # until stop_event is set
    exit_code = await collector.run_once()          # list, reconcile, write, return

``api_client_factory()`` returns (or awaits to) a ``kubernetes_asyncio.client.ApiClient``;
the collector closes it (collector/sources/kubernetes.py); a ``source`` (collector/sources/)
replaces it for other runtimes. ``accounting`` (``ledger.core.accounting``: charge basis and
extended resources, the policy's ``accounting:`` block) is an ``Accounting`` or a callable
returning the current policy or accounting; a change applies from the next event and triggers a
re-list, so running pods are re-sized at once. This module is the edge that reads the clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from collector.metrics import Metrics, start_http_server
from collector.pods import Identity, PodSkipped
from collector.settings import Settings, Workload
from collector.sources import Source, Watch
from collector.sources.kubernetes import KubernetesSource
from collector.watcher import Scope
from collector.write_buffer import BufferFull, WriteBuffer
from ledger import __version__
from ledger.core.accounting import Accounting
from ledger.core.segment_plan import (
    CloseSegment,
    OpenSegment,
    RecordOom,
    ResizeSegment,
    Tracked,
    VanishSegments,
    plan,
)
from ledger.core.times import utcnow
from ledger.store import partitions
from ledger.store import segment_writes as ledger_writer

log = logging.getLogger("collector")
_SKIP_LOG_MEMORY = 10_000  # remember this many skipped pods so each is logged once


class SeedFailed(Exception):
    """A scope's open segments could not be loaded before its first list (``begin_list``)."""


def identity_of(workload: Workload) -> Identity:
    return Identity(
        workload=workload.name,
        username_key=workload.username_annotation or workload.username_label or "",
        username_from_label=workload.username_label is not None,
        servername_key=workload.servername_annotation or workload.servername_label,
        servername_from_label=workload.servername_label is not None,
    )


class Collector:
    def __init__(
        self,
        settings: Settings,
        engine: AsyncEngine,
        api_client_factory: Callable[[], Any] | None = None,
        *,
        source: Source | None = None,
        collector_id: str | None = None,
        http_host: str = "0.0.0.0",
        http_port: int | None = None,
        clock: Callable[[], datetime] = utcnow,
        accounting: Accounting | Callable[[], Any] | None = None,
    ) -> None:
        self.settings = settings
        fixed = accounting or Accounting()
        self._accounting_source = fixed if callable(fixed) else (lambda: fixed)
        self.accounting = self._current_accounting()
        self.engine = engine
        if source is None:
            if api_client_factory is None:
                raise ValueError("give a Kubernetes api_client_factory or a source")
            source = KubernetesSource(api_client_factory)
        self.source = source
        self.hostname = socket.gethostname()
        self.collector_id = collector_id or f"{self.hostname}-{os.getpid()}"
        self.http_host, self.http_port = http_host, http_port
        self.clock = clock
        self.metrics = Metrics()
        self.tracked: dict[str, Tracked] = {}
        self.scope_of: dict[str, Scope] = {}
        self.scopes = [
            Scope(w, ns) for w in settings.all_workloads() for ns in settings.namespaces_of(w)
        ]
        self._identities = {w.name: identity_of(w) for w in settings.all_workloads()}
        self._db_open: dict[Scope, set[str] | None] = {}
        self._seeded: set[Scope] = set()  # scopes whose open segments were loaded once
        self._seed_failures: dict[Scope, int] = {}
        self._skip_logged: set[tuple[str, str]] = set()
        self.buffer = WriteBuffer(
            lambda ops: ledger_writer.apply_ops(engine, ops),
            max_events=settings.buffer_max_events,
            batch_max=settings.write_batch_max,
            backoff_max_seconds=settings.backoff_max,
            on_write=self._on_write,
            on_state=self._on_db_state,
        )
        self.watches: list[Watch] = []
        self.db_ok = False
        self.fatal: BaseException | None = None
        self.started_at = clock()
        self.events_total = 0
        self.skipped_total = 0
        self.last_event_at: datetime | None = None
        self.last_relist_at: datetime | None = None
        self.http_bound_port: int | None = None
        self._stop: asyncio.Event | None = None

    # --- handling pods (synchronous: called for every event) -------------------------------

    def on_pod(self, event_type: str, pod: dict[str, Any], scope: Scope) -> None:
        observed_at = self.clock()
        self.events_total += 1
        self.last_event_at = observed_at
        try:
            view = self.source.parse(
                event_type,
                pod,
                self._identities[scope.workload.name],
                self.accounting,
                observed_at,
            )
        except PodSkipped as exc:
            self._skipped(pod, exc)
            return
        owner = self.scope_of.get(view.uid)
        if owner is not None and owner.workload.name != scope.workload.name:
            return  # matched by two workloads' selectors: the first one charges it
        ops, state = plan(self.tracked.get(view.uid), view, observed_at)
        self.tracked[view.uid] = state
        self.scope_of[view.uid] = scope
        if event_type == "DELETED":
            self._forget(view.uid)
        if ops:
            self._put(ops)

    def _put(self, ops: list) -> None:
        for op in ops:
            if isinstance(op, OpenSegment | ResizeSegment):
                self.metrics.opened.inc()
            if isinstance(op, CloseSegment | ResizeSegment):
                reason = op.end_reason if isinstance(op, CloseSegment) else "resized"
                self.metrics.closed.labels(reason).inc()
            elif isinstance(op, VanishSegments):
                self.metrics.closed.labels("vanished").inc(len(op.pod_uids))
            elif isinstance(op, RecordOom):
                self.metrics.oom_kills.inc()
        try:
            self.buffer.put_many(ops)
        except BufferFull as exc:
            self._die(exc)
            raise
        finally:
            self.metrics.buffer_depth.set(self.buffer.depth)

    def _skipped(self, pod: dict[str, Any], exc: PodSkipped) -> None:
        key = (self.source.uid_of(pod), exc.reason)
        if key in self._skip_logged:
            return
        if len(self._skip_logged) >= _SKIP_LOG_MEMORY:
            self._skip_logged.clear()
        self._skip_logged.add(key)
        self.skipped_total += 1
        self.metrics.skipped.labels(exc.reason).inc()
        log.warning("event=pod_skipped reason=%s detail=%r", exc.reason, str(exc))

    def _forget(self, uid: str) -> None:
        self.tracked.pop(uid, None)
        self.scope_of.pop(uid, None)

    def _die(self, exc: BaseException) -> None:
        if self.fatal is None:
            self.fatal = exc
            log.critical("event=fatal error=%r; exiting so that a restart re-lists", str(exc))
        if self._stop is not None:
            self._stop.set()

    # --- list reconciliation ---------------------------------------------------------------

    async def begin_list(self, scope: Scope) -> None:
        """Seed what the ledger already holds for this scope (open segments), so a restart
        continues them instead of guessing.

        Until a scope has been seeded once, a failed or timed-out load raises ``SeedFailed``
        and the watch retries the whole list after its backoff: planning against an empty
        state would not match the ledger, and the writes cannot repair it later. A pod
        resized while no collector ran would re-send its open segment at the old start (a
        no-op ``ON CONFLICT DO NOTHING``) while ``tracked`` says "new size", and no later
        re-list would split it; a container run again by its restart policy
        (https://docs.docker.com/engine/containers/start-containers-automatically/) would
        open a second segment the one-open-segment-per-pod trigger drops, and its end would
        close the previous run's segment instead. So a collector started while the database
        is down begins as if started when it is back. Once seeded, ``tracked`` follows every
        planned write, and a re-list without the database reconciles from it alone."""
        failures = self._seed_failures.get(scope, 0)
        try:
            # Longer each attempt, so a slow but working database still gets through.
            async with asyncio.timeout(10 * 2 ** min(failures, 3)):  # 10 s … 80 s
                rows = await ledger_writer.load_open_segments(
                    self.engine, scope.workload.name, scope.namespace, self.source.name
                )
        except Exception as exc:  # noqa: BLE001 - the database may be down
            detail = str(exc)[:200] or type(exc).__name__
            if scope not in self._seeded:
                self._seed_failures[scope] = failures + 1
                log.warning("event=seed_failed scope=%s error=%r; list retried", scope, detail)
                raise SeedFailed(f"open segments of {scope} not loaded: {detail}") from exc
            log.warning("event=reconcile_deferred scope=%s error=%r", scope, detail)
            self._db_open[scope] = None
            return
        self._seeded.add(scope)
        self._seed_failures.pop(scope, None)
        self._db_open[scope] = {row.pod_uid for row in rows}
        for row in rows:
            if row.pod_uid not in self.tracked:
                self.tracked[row.pod_uid] = Tracked(
                    workload=scope.workload.name,
                    namespace=row.namespace,
                    open_started_at=row.started_at,
                    resources=row.resources,
                )
                self.scope_of[row.pod_uid] = scope

    async def end_list(self, scope: Scope, listed_uids: set[str]) -> None:
        """Close what the cluster no longer has: at its last_seen_at ('vanished')."""
        now = self.clock()
        self.last_relist_at = now
        gone = {uid for uid, s in self.scope_of.items() if s == scope and uid not in listed_uids}
        vanished = {uid for uid in gone if self.tracked[uid].is_open}
        vanished |= (self._db_open.pop(scope, None) or set()) - listed_uids
        for uid in gone:
            self._forget(uid)
        if vanished:
            log.info("event=pods_vanished scope=%s count=%d", scope, len(vanished))
            self._put([VanishSegments(tuple(sorted(vanished)), now)])

    # --- periodic jobs ---------------------------------------------------------------------

    def _current_accounting(self) -> Accounting:
        current = self._accounting_source()
        return getattr(current, "accounting", current)  # a Policy carries its Accounting

    async def check_accounting(self) -> None:
        """Apply an edited accounting: block: charge from now on, re-size running pods."""
        current = self._current_accounting()
        if current == self.accounting:
            return
        log.info(
            "event=accounting_changed charge_basis=%s resources=%s",
            current.charge_basis,
            ",".join(f"{k}={v}" for k, v in current.resources.items()),
        )
        self.accounting = current
        await self.relist()

    async def heartbeat(self) -> None:
        """Keep last_seen_at of live pods fresh and report health in collector_heartbeats."""
        await self.check_accounting()
        now = self.clock()
        try:
            for watch in self.watches:
                seen_at = watch.confirmed_at()
                uids = [
                    uid
                    for uid, s in self.scope_of.items()
                    if s == watch.scope and self.tracked[uid].is_open
                ]
                if seen_at is not None and uids:
                    await ledger_writer.touch_last_seen(self.engine, uids, seen_at)
            await ledger_writer.upsert_heartbeat(self.engine, self._heartbeat_row(now))
        except Exception as exc:  # noqa: BLE001
            self._on_db_state(False)
            log.warning("event=heartbeat_failed error=%r", str(exc)[:200])
            return
        self._on_db_state(True)

    def _heartbeat_row(self, now: datetime) -> dict[str, Any]:
        live = sum(1 for t in self.tracked.values() if t.is_open)
        self.metrics.live_pods.set(live)
        return {
            "collector_id": self.collector_id,
            "hostname": self.hostname,
            "version": __version__,
            "started_at": self.started_at,
            "last_heartbeat_at": now,
            "last_event_at": self.last_event_at,
            "last_relist_at": self.last_relist_at,
            "events_total": self.events_total,
            "pods_skipped_total": self.skipped_total,
            "buffer_depth": self.buffer.depth,
            "live_pods": live,
            "detail": {
                "scopes": [str(s) for s in self.scopes],
                "source": self.source.name,
                "charge_basis": self.accounting.charge_basis,
                "listed": all(w.listed.is_set() for w in self.watches),
                "writes_rejected_total": self.buffer.rejected_total,
            },
        }

    async def retention(self) -> None:
        """Month partitions ahead of time, then retention (both run as the ledger's owner
        through SECURITY DEFINER functions; ledger/store/partitions.py)."""
        now = self.clock()
        try:
            made = await partitions.ensure(self.engine, *partitions.months_ahead(now))
        except Exception as exc:  # noqa: BLE001 - rows land in the default partition meanwhile
            log.warning("event=partitions_failed error=%r", str(exc)[:200])
        else:
            if made:
                log.info("event=partitions_created partitions=%s", ",".join(made))
        if self.settings.retention is None:
            return
        current = self._accounting_source()
        longest = getattr(current, "max_window_seconds", lambda: 0)()
        try:
            partitions.retention_cutoff(now, self.settings.retention, longest)
        except partitions.RetentionError as exc:
            log.error("event=retention_refused error=%r", str(exc))
            return
        try:
            segments, ooms = await ledger_writer.delete_older_than(
                self.engine, now, self.settings.retention
            )
        except Exception as exc:  # noqa: BLE001
            log.warning("event=retention_failed error=%r", str(exc)[:200])
            return
        if segments or ooms:
            log.info("event=retention deleted_segments=%d deleted_oom_kills=%d", segments, ooms)

    async def relist(self) -> None:  # async: apscheduler runs plain functions in threads
        for watch in self.watches:
            watch.request_relist()

    # --- state callbacks -------------------------------------------------------------------

    def _on_write(self, seconds: float, count: int) -> None:
        self.metrics.write_latency.observe(seconds)
        self.metrics.writes.inc(count)
        self.metrics.buffer_depth.set(self.buffer.depth - count)

    def _on_db_state(self, ok: bool) -> None:
        self.db_ok = ok
        self.metrics.database_up.set(1 if ok else 0)

    def ready(self) -> tuple[bool, str]:
        if not self.watches or not all(w.listed.is_set() for w in self.watches):
            return False, "initial list not done"
        if not self.db_ok:
            return False, "database unreachable"
        return True, "ready"

    # --- running ---------------------------------------------------------------------------

    def _make_watches(self) -> None:
        m = self.metrics
        self.watches = self.source.make_watches(
            self.scopes,
            self.settings,
            self,
            on_reconnect=m.reconnects.inc,
            on_relist=lambda cause: m.relists.labels(cause).inc(),
            on_event_type=lambda kind: m.events.labels(kind).inc(),
            clock=self.clock,
        )

    async def run_once(self) -> int:
        """List every scope, reconcile, write everything, return 0 (1 if writes failed)."""
        await self.source.open()
        flusher = asyncio.create_task(self.buffer.run())
        try:
            self._make_watches()
            for watch in self.watches:
                try:
                    await watch.list_once("start")
                except SeedFailed as exc:  # without the ledger's state nothing can be planned
                    log.error("event=once_failed error=%r", str(exc))
                    return 1
            await self.heartbeat()
            flushed = await self.buffer.wait_empty(self.settings.shutdown_flush_timeout)
        finally:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            await self.source.close()
        if not flushed:
            log.error("event=flush_incomplete pending=%d", self.buffer.depth)
            return 1
        return 0

    async def run(self, stop: asyncio.Event) -> int:
        """Run until `stop` is set (SIGTERM), then flush and return 0; 1 on a fatal error."""
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        self._stop = stop
        await self.source.open()
        runner = None
        if self.http_port is not None:
            runner, self.http_bound_port = await start_http_server(
                self.metrics, self.ready, self.http_host, self.http_port
            )
        flusher = asyncio.create_task(self.buffer.run(), name="write-buffer")
        # a flusher that died (a bug, not an outage: it retries those) would leave every
        # write in the buffer and the collector looking healthy: exit so a restart re-lists
        flusher.add_done_callback(self._task_done)
        self._make_watches()
        tasks = [asyncio.create_task(w.run(), name=f"watch {w.scope}") for w in self.watches]
        for task in tasks:
            task.add_done_callback(self._task_done)
        scheduler = AsyncIOScheduler(event_loop=asyncio.get_running_loop())
        s = self.settings
        scheduler.add_job(self.heartbeat, "interval", seconds=s.heartbeat_interval, next_run_time=self.clock(), max_instances=1, coalesce=True)  # fmt: skip
        scheduler.add_job(self.relist, "interval", seconds=s.relist_interval, max_instances=1, coalesce=True)  # fmt: skip
        scheduler.add_job(self.retention, "interval", seconds=s.retention_check_interval, next_run_time=self.clock(), max_instances=1, coalesce=True)  # fmt: skip
        scheduler.start()
        log.info(
            "event=started collector_id=%s scopes=%s",
            self.collector_id,
            [str(x) for x in self.scopes],
        )
        try:
            await stop.wait()
        finally:
            scheduler.shutdown(wait=False)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if flusher.done():  # it died (``_task_done``): nothing will write what is left
                flushed = self.buffer.depth == 0
            else:
                flushed = await self.buffer.wait_empty(s.shutdown_flush_timeout)
            if flushed and self.fatal is None:
                await self.heartbeat()
            flusher.cancel()
            await asyncio.gather(flusher, return_exceptions=True)  # its error is in ``fatal``
            await self.source.close()
            if runner is not None:
                await runner.cleanup()
        if not flushed:
            log.error(
                "event=flush_incomplete pending=%d; the re-list after restart recovers",
                self.buffer.depth,
            )
        log.info("event=stopped collector_id=%s", self.collector_id)
        return 1 if self.fatal is not None or not flushed else 0

    def _task_done(self, task: asyncio.Task) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._die(exc)
