"""The pre-spawn quota check: a thin async edge around ``ledger.store.decide``.

Per spawn: read the request from the spawner's traits and the groups from the hub, ask the
ledger (one query) within a time budget, then either attach the quota line to the spawn's
progress stream or refuse the spawn with a message a person can act on. The decision (and
the user's groups) are written to the ledger in the background, so the spawn never waits for
the write. What happens when the ledger cannot answer in time is the policy's
``on_ledger_error`` (deny | allow); either way it is logged, counted on the hub's /metrics
and recorded.

Refusals are ``ledger.hub.denial.QuotaRefusal`` (JupyterHub 6's ``SpawnException`` where it
exists): see that module for how they stay out of spawn-failure counts and error logs on
JupyterHub 5 and 6, and for the data of the friendly denial page (``templates/403.html``).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import time
from contextlib import aclosing
from datetime import datetime

from ledger.core import messages
from ledger.core.decision import Decision, ServerRequest
from ledger.core.quantities import QuantityError
from ledger.core.times import utcnow
from ledger.hub import capacity, metrics, waiting_line
from ledger.hub.choices import is_kubespawner, request_of, selected_overrides
from ledger.hub.denial import (
    QUIET_REFUSALS,
    TextWithHtml,  # noqa: F401 - re-exported: ledger.hub.hook.TextWithHtml
    denial_view,
    not_a_spawn_failure,
    quiet_loggers,
    refusal,
)
from ledger.hub.docker_request import (
    docker_spawner_request,
    is_docker_spawner,
    prepare_docker_spawn,
)
from ledger.hub.request import spawner_groups, spawner_request
from ledger.hub.spool import DecisionSpool
from ledger.store import policy_file, quota_requests
from ledger.store.db import DB_URL_ENV, create_engine, resolve_url
from ledger.store.decide import decide as ledger_decide
from ledger.store.decide import decision_row

log = logging.getLogger("ledger.hub")

RECORD_CHOICES = ("all", "denials")
RECORD_TIMEOUT_SECONDS = 10.0

OUTAGE_TEXT = (
    "Your compute quota could not be checked just now, so this server was not started. "
    "Please try again in a minute; if this keeps happening, tell your hub admins."
)
ALLOW_TEXT = (
    "Your compute quota could not be checked just now; this server is starting anyway "
    "(the hub is configured to allow spawns while the quota ledger is unavailable)."
)
# How long a spawn form remembers the refusal it shows (templates/spawn.html).
DENIAL_MEMORY_SECONDS = 300.0


def quota_error(text: str, html_text: str, status_code: int = 403) -> Exception:
    """An exception that refuses a spawn and shows ``html_text`` on JupyterHub's own page."""
    return refusal(text, html_text, status_code=status_code, reason="quota")


class ProgressGate:
    """The quota lines of one spawn, for progress streams opened before they are known.

    A stream opened while the check is still waiting for the ledger (the browser's pending
    page opens it after ``slow_spawn_timeout``; a REST client may open it at once) waits
    for the answer, so the quota line, or the notice that the quota could not be checked,
    is there whatever the timing.
    """

    def __init__(self, spawn_future, wait_seconds: float):
        self.spawn_future = spawn_future
        self.wait_seconds = wait_seconds
        self._done = asyncio.get_running_loop().create_future()
        self._updates: list[dict] = []  # lines while the spawn waits in line (waiting_line)
        self._changed = asyncio.Event()

    def set(self, events: list[dict]) -> None:
        if not self._done.done():
            self._done.set_result(list(events))
        self._changed.set()

    def update(self, event: dict) -> None:
        """A line shown while the check goes on (the spawn waits for capacity)."""
        self._updates.append(event)
        self._changed.set()

    async def events(self) -> list[dict]:
        return [event async for event in self.stream()]

    async def stream(self):
        """The waiting lines as they come, then the check's own lines. Without a line from
        the check within ``wait_seconds`` (the ledger is silent), nothing."""
        sent = 0
        while True:
            while sent < len(self._updates):
                yield self._updates[sent]
                sent += 1
            if self._done.done():
                break
            self._changed.clear()
            try:
                async with asyncio.timeout(self.wait_seconds):
                    await self._changed.wait()
            except TimeoutError:
                if not self._updates:
                    return
        for event in self._done.result():
            yield event


def _wrap_progress(spawner) -> None:
    """Patch this spawner instance's ``progress()`` once: our events, then the spawner's.

    Patching the instance, not the class, works with any spawner class and with KubeSpawner
    profiles (which change traits, not the class), and composes with whatever
    ``progress()`` the class already has: its events follow ours.
    """
    if getattr(spawner, "_quota_progress_wrapped", False):
        return
    original = getattr(spawner, "progress", None)
    if original is None:  # not a JupyterHub spawner (a test double)
        return

    async def progress():
        gate = getattr(spawner, "_quota_gate", None)
        current = getattr(spawner, "_spawn_future", None)
        if gate is not None and (current is None or gate.spawn_future is current):
            async for event in gate.stream():
                yield event
        async with aclosing(original()) as inner:
            async for event in inner:
                yield event

    spawner.progress = progress
    spawner._quota_progress_wrapped = True


def attach_progress(spawner, events: list[dict]) -> None:
    """Prepend ``events`` to this spawner's progress stream (for callers outside a check)."""
    _wrap_progress(spawner)
    gate = ProgressGate(getattr(spawner, "_spawn_future", None), 0)
    gate.set(events)
    spawner._quota_gate = gate
    spawner._quota_progress_events = list(events)


def class_default_hook(spawner, trait: str):
    """The hook a spawner class gives ``trait`` by itself (a ``@default``), which the config's
    ``c.Spawner.<trait>`` that install_quota_hook sets would otherwise replace; None when the
    class has none (traitlets ``trait_defaults``)."""
    try:
        hook = spawner.trait_defaults(trait)
    except Exception:  # noqa: BLE001 - not a traitlets spawner, or its default fails: none
        return None
    return hook if callable(hook) else None


class QuotaHook:
    """``c.Spawner.pre_spawn_hook``: the quota check, after any hook that was there before."""

    def __init__(
        self,
        *,
        db_url: str | None = None,
        policy_path: str | None = None,
        timeout_seconds: float = 2.0,
        quota_page_url: str | None = None,
        record: str = "all",
        previous=None,
        decide=ledger_decide,
        clock=utcnow,
    ):
        if record not in RECORD_CHOICES:
            raise ValueError(f"record={record!r}: valid values are {', '.join(RECORD_CHOICES)}")
        path = policy_file.policy_path(policy_path)
        if not path:
            raise ValueError(
                f"install_quota_hook: no quota policy; pass policy_path= or set ${policy_file.CONFIG_ENV}"
            )
        self.watcher = policy_file.PolicyWatcher(path)  # a bad file stops the hub here, loudly
        self.db_url = db_url or os.environ.get(DB_URL_ENV)
        if not self.db_url:
            # Not raised: nothing of ours may stop the hub. Every spawn takes on_ledger_error
            # (and logs why) until the URL is set; no embedded server is ever started here.
            log.error(
                "quota: no database URL (db_url= to install_quota_hook or $%s): every spawn "
                "follows on_ledger_error=%s until one is configured",
                DB_URL_ENV, self.watcher.current().on_ledger_error,
            )  # fmt: skip
        self.timeout_seconds = float(timeout_seconds)
        self.quota_page_url = quota_page_url
        self.record = record
        self.previous = previous
        self._decide = decide
        self._clock = clock
        self._engine = None
        self.spool = DecisionSpool(lambda: self.engine)
        self.recent_denials: dict[str, tuple[float, dict]] = {}
        self.last_latency_ms: float | None = None  # of the last check, for tests and logs
        self.recorder = None  # a HubRecorder with install_quota_hook(record_usage=True)
        self.line = waiting_line.WaitingLine()  # spawns waiting for shared capacity
        self.pages = None  # a ledger.hub.summary.HubQuotaPages with hub_pages=True

    def now(self) -> datetime:
        return self._clock()

    def __deepcopy__(self, memo):
        # traitlets deep-copies config values into every new spawner
        # (Configurable._load_config); all spawners must share one hook: one engine, one
        # connection pool, one policy watcher.
        return self

    def __copy__(self):
        return self

    @property
    def engine(self):
        if self._engine is None:
            url = resolve_url(self.db_url, how_to_pass="db_url= to install_quota_hook")
            self._engine = create_engine(url)
        return self._engine

    async def __call__(self, spawner) -> None:
        previous = self.previous or class_default_hook(spawner, "pre_spawn_hook")
        if previous is not None:
            result = previous(spawner)
            if inspect.isawaitable(result):
                await result
        await self.check(spawner)

    async def check(self, spawner) -> Decision | None:
        """Decide, then attach the progress line or raise the denial."""
        _wrap_progress(spawner)
        gate = ProgressGate(getattr(spawner, "_spawn_future", None), self.timeout_seconds + 5)
        spawner._quota_gate = gate
        try:
            return await self._check(spawner, gate)
        finally:
            gate.set([])  # a refusal or an unexpected error: nothing of ours to show

    async def _check(self, spawner, gate: ProgressGate) -> Decision | None:
        policy = self.watcher.current()
        logger = getattr(spawner, "log", None) or log
        # JupyterHub logs a failed spawn on its app log (handlers, spawner) and on tornado's
        # app_log (User.spawn, jupyterhub/user.py)
        quiet_loggers(
            logger,
            getattr(getattr(spawner, "handler", None), "log", None),
            logging.getLogger("tornado.application"),
        )
        username = spawner.user.name
        groups = spawner_groups(spawner)
        try:
            request = await self._request(spawner, policy, logger)
        except QuantityError as exc:  # a misconfigured profile: say so instead of a 500
            text = f"This server's size could not be read, so it was not started: {exc}"
            not_a_spawn_failure(spawner)
            raise quota_error(text, messages.html.escape(text), status_code=400) from None
        now = self._clock()
        quota_url = self.quota_page_url or policy.messages.quota_page_url
        started = time.perf_counter()

        # FIFO: nobody overtakes a waiter for a cap that applies to them
        queue = self.line.busy_keys(request.amounts, waiting_line.line_scopes(policy, groups))

        async def decide_and_hold(policy, at, hold: bool = True) -> Decision:
            decision = await self._decide(self.engine, policy, username, groups, request, at)
            if not hold:
                return decision
            return await capacity.hold(self.engine, spawner, policy, groups, request, at,
                                       decision, timeout_seconds=self.timeout_seconds)  # fmt: skip

        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow the hub's
            # cancel of this spawn when it lands as the read returns, and the spawn would go
            # on (https://github.com/python/cpython/issues/86296; ruff bans wait_for here)
            async with asyncio.timeout(self.timeout_seconds):
                decision = await decide_and_hold(policy, now, hold=not queue)
        except Exception as exc:  # noqa: BLE001 - any ledger failure takes the fail mode
            latency_ms = self.last_latency_ms = (time.perf_counter() - started) * 1000
            metrics.SPAWN_CHECK_SECONDS.observe(latency_ms / 1000)
            return self._failed(spawner, gate, logger, policy, exc, username, groups, request,
                                now, latency_ms)  # fmt: skip
        latency_ms = self.last_latency_ms = (time.perf_counter() - started) * 1000
        metrics.SPAWN_CHECK_SECONDS.observe(latency_ms / 1000)
        key = waiting_line.key_for(decision, queue)
        if key is not None:

            async def ask(at) -> Decision:
                async with asyncio.timeout(self.timeout_seconds):
                    return await decide_and_hold(self.watcher.current(), at)

            def keep(d: Decision, outcome: str, limit_seconds: float) -> None:
                row = decision_row(d, source="spawn", outcome=outcome)
                row["detail"] = {**row["detail"], **waiting_line.deadline_detail(d, limit_seconds)}
                self._keep(row)
                neck = d.shared.bottleneck if d.shared is not None else None
                logger.info("quota: %s %s for %s (%s)", username, outcome,
                            neck.reason if neck is not None else key, request.servername)  # fmt: skip

            try:
                decision = await waiting_line.wait_for_capacity(
                    self.line, key, decision, spawner, gate, ask, keep, self._clock
                )
            except Exception as exc:  # noqa: BLE001 - the last ask failed: the fail mode
                waited_ms = (time.perf_counter() - started) * 1000
                return self._failed(spawner, gate, logger, policy, exc, username, groups,
                                    request, now, waited_ms)  # fmt: skip
        outcome = "allowed" if decision.allowed else "denied"
        metrics.SPAWN_DECISIONS.labels(outcome).inc()
        if self.record == "all" or not decision.allowed:
            self._keep(decision_row(decision, source="spawn", latency_ms=latency_ms))
        if self.db_url:
            self.spool.add_groups(username, groups, now)
        if decision.allowed:
            events = messages.progress_events(
                decision, policy.enforcement.warn_at_percent, quota_url
            )
            events += await self._request_news(username, now, logger)
            gate.set(events)
            spawner._quota_progress_events = events
            logger.info(
                "quota: %s may start %r: %s", username, request.servername, decision.message
            )
            self._record_usage(spawner, request)
            return decision
        logger.info("quota: refused %s %r: %s", username, request.servername, decision.reason)
        contact, contact_url = policy.messages.contact, policy.messages.contact_url
        text = messages.denial_text(decision, contact, contact_url, quota_url)
        view = denial_view(decision, contact, contact_url, quota_url, text)
        error = refusal(
            text,
            messages.denial_html(decision, contact, contact_url, quota_url),
            status_code=403,
            reason="quota",
            view=view,
        )
        self.recent_denials[username] = (time.monotonic(), view)
        QUIET_REFUSALS.remember(error)
        not_a_spawn_failure(spawner)
        raise error

    async def _request_news(self, username: str, now: datetime, logger) -> list[dict]:
        """Progress lines for the user's quota requests decided since they were last told
        (then marked told). A failure here costs the lines, never the spawn."""
        if not self.db_url:
            return []
        try:
            async with asyncio.timeout(self.timeout_seconds), self.engine.begin() as conn:
                found = await quota_requests.unseen_decisions(conn, username)
                await quota_requests.mark_seen(conn, [r.id for r in found], now)
        except Exception as exc:  # noqa: BLE001 - a notice is not worth a failed spawn
            logger.warning("quota: could not read %s's quota requests: %s", username, exc)
            return []
        lines = [
            messages.request_news(
                r.id, r.state, r.resource, r.amount_hours, r.decided_by, r.decision_message
            )
            for r in found
        ]
        return [{"message": line, "html_message": messages.html.escape(line)} for line in lines]

    def _record_usage(self, spawner, request: ServerRequest) -> None:
        if self.recorder is not None and self.recorder.covers(spawner):
            self.recorder.track(spawner, request)

    async def _request(self, spawner, policy, logger) -> ServerRequest:
        if is_kubespawner(spawner) and getattr(spawner, "profile_list", None):
            return request_of(spawner, policy, await selected_overrides(spawner))
        if not is_docker_spawner(spawner):
            return spawner_request(spawner, policy)
        try:
            await prepare_docker_spawn(spawner)  # the labels the collector charges by
        except Exception as exc:  # noqa: BLE001 - the operator's callable: DockerSpawner
            # calls it again and reports its error itself; the request falls back to traits
            logger.warning("quota: extra_host_config could not be evaluated: %s", exc)
        return docker_spawner_request(spawner, policy.accounting)

    def _keep(self, row: dict) -> None:
        """Queue a decision-log row; without a database URL there is nowhere it could go
        (the hub's log said so at startup), so nothing piles up."""
        if self.db_url:
            self.spool.add_decision(row)

    def denial_of(self, user) -> dict | None:
        """The refusal ``user`` was last shown, while fresh (``templates/spawn.html``)."""
        found = self.recent_denials.get(getattr(user, "name", None))
        if found is None or time.monotonic() - found[0] > DENIAL_MEMORY_SECONDS:
            return None
        return found[1]

    def _failed(self, spawner, gate: ProgressGate, logger, policy, exc, username, groups,
                request: ServerRequest, now: datetime, latency_ms: float):  # fmt: skip
        reason = "timeout" if isinstance(exc, TimeoutError) else "ledger_error"
        allow = policy.on_ledger_error == "allow"
        outcome = "error_allowed" if allow else "error_denied"
        metrics.SPAWN_CHECK_FAILURES.labels(reason).inc()
        metrics.SPAWN_DECISIONS.labels(outcome).inc()
        detail = (
            f"{type(exc).__name__}: {exc}"
            if reason == "ledger_error"
            else (f"no answer within {self.timeout_seconds:g} s")
        )
        logger.error(
            "quota: cannot check %s's quota (%s); on_ledger_error=%s, so the spawn is %s",
            username, detail, policy.on_ledger_error, "allowed" if allow else "refused",
        )  # fmt: skip
        text = ALLOW_TEXT if allow else OUTAGE_TEXT
        row = dict(
            decided_at=now, username=username, servername=request.servername, source="spawn",
            outcome=outcome, reason=reason, message=text, request=dict(request.amounts),
            groups=list(groups), detail={"error": detail}, latency_ms=latency_ms,
        )  # fmt: skip
        self._keep(row)
        if allow:
            self._record_usage(spawner, request)
            events = [{"message": text, "html_message": messages.html.escape(text)}]
            gate.set(events)
            spawner._quota_progress_events = events
            return None
        not_a_spawn_failure(spawner)
        raise refusal(text, messages.html.escape(text), status_code=503, reason="quota_unavailable")

    async def stopped(self, spawner) -> None:
        """``post_stop_hook`` (ledger.hub.ChainedPostStop): release the server's lease and
        wake the waiting lines (capacity may be free now), then the recorder closes the
        server's segment if it records this spawner, and wakes them again: on a hub whose
        recorder writes the segments, the open segment is what held the capacity. Both the
        release and the close run in the background, so a stop never waits on the ledger
        (a close the ledger does not take is retried: recorder.py). Nothing here raises
        into the hub."""
        try:
            capacity.release_when_stopped(self._engine, spawner, self.line.wake_firsts)
        except Exception as exc:  # noqa: BLE001 - the lease then expires at its TTL
            log.warning(
                "quota: after the stop of %s: %s", getattr(spawner, "_log_name", spawner), exc
            )
        if self.recorder is not None:
            try:
                self.recorder.stopped(spawner, then=self.line.wake_firsts)
            except Exception as exc:  # noqa: BLE001 - the start-up reconcile closes it later
                log.warning("quota recorder: after the stop of %s: %s",
                            getattr(spawner, "_log_name", spawner), exc)  # fmt: skip

    async def drain(self, timeout_seconds: float | None = None) -> bool:
        """Wait until the decision log has every decision made so far (tests, shutdown)."""
        return await self.spool.drain(timeout_seconds)

    async def close(self) -> None:
        await self.drain(RECORD_TIMEOUT_SECONDS)
        if self.recorder is not None:
            await self.recorder.flush(RECORD_TIMEOUT_SECONDS)
        self.spool.close()
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None
