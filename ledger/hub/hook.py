"""The pre-spawn quota check: a thin async edge around ``ledger.store.decide``.

Per spawn: read the request from the spawner's traits and the groups from the hub, ask the
ledger (one query) within a time budget, then either attach the quota line to the spawn's
progress stream or refuse the spawn with a message a person can act on. The decision (and
the user's groups) are written to the ledger in the background, so the spawn never waits for
the write. What happens when the ledger cannot answer in time is the policy's
``on_ledger_error`` (deny | allow); either way it is logged, counted on the hub's /metrics
and recorded.

Denials raise JupyterHub 6's ``SpawnException(reason="quota")``, which keeps them out of the
spawn-failure metrics (https://github.com/jupyterhub/jupyterhub/pull/4985); the exception also
carries ``jupyterhub_message`` / ``jupyterhub_html_message``, which is what the spawn-pending
page's failure event reads (``format_exception`` in jupyterhub/utils.py) and what JupyterHub 5
reads from a plain ``HTTPError``.
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
from ledger.hub import metrics
from ledger.hub.request import spawner_groups, spawner_request
from ledger.store import policy_file, queries
from ledger.store.db import DB_URL_ENV, create_engine, resolve_url
from ledger.store.decide import decide as ledger_decide
from ledger.store.decide import record as ledger_record

log = logging.getLogger("ledger.hub")

RECORD_CHOICES = ("all", "denials")
RECORD_TIMEOUT_SECONDS = 10.0

try:  # JupyterHub >= 6
    from jupyterhub.spawner import SpawnException
except ImportError:  # pragma: no cover - JupyterHub 5
    SpawnException = None


def quota_error(text: str, html_text: str, status_code: int = 403) -> Exception:
    """The exception that refuses a spawn and shows ``html_text`` on the hub's pages."""
    if SpawnException is not None:
        error = SpawnException(
            text, reason="quota", message_html=html_text, status_code=status_code
        )
    else:  # pragma: no cover - JupyterHub 5
        from tornado.web import HTTPError

        error = HTTPError(status_code, "%s", text)
    error.jupyterhub_message = TextWithHtml(text, html_text)
    error.jupyterhub_html_message = html_text
    return error


class TextWithHtml(str):
    """The plain-text message that renders as its HTML in JupyterHub's Jinja templates.

    JupyterHub's spawn form (templates/spawn.html) shows ``error_message`` in preference to
    ``error_html_message``, and ``format_exception`` (jupyterhub/utils.py) fills the former
    from ``jupyterhub_message``: with a plain string the links and the local time would never
    show on the form of a spawner with options (KubeSpawner profiles). Jinja's autoescape
    inserts whatever ``__html__`` returns (markupsafe's protocol); everywhere else (REST JSON,
    logs, the progress stream's text) this is the plain text.
    """

    def __new__(cls, text: str, html_text: str):
        self = super().__new__(cls, text)
        self._html = html_text
        return self

    def __html__(self) -> str:
        return self._html


def attach_progress(spawner, events: list[dict]) -> None:
    """Prepend ``events`` to this spawner's progress stream (patched once per instance).

    Patching the instance, not the class, works with any spawner class and with KubeSpawner
    profiles (which change traits, not the class), and composes with whatever
    ``progress()`` the class already has: its events follow ours.
    """
    spawner._quota_progress_events = list(events)
    if getattr(spawner, "_quota_progress_wrapped", False):
        return
    original = spawner.progress

    async def progress():
        for event in list(getattr(spawner, "_quota_progress_events", [])):
            yield event
        async with aclosing(original()) as inner:
            async for event in inner:
                yield event

    spawner.progress = progress
    spawner._quota_progress_wrapped = True


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
        self._pending: set[asyncio.Task] = set()
        self.last_latency_ms: float | None = None  # of the last check, for tests and logs

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
        if self.previous is not None:
            result = self.previous(spawner)
            if inspect.isawaitable(result):
                await result
        await self.check(spawner)

    async def check(self, spawner) -> Decision | None:
        """Decide, then attach the progress line or raise the denial."""
        policy = self.watcher.current()
        logger = getattr(spawner, "log", None) or log
        username = spawner.user.name
        groups = spawner_groups(spawner)
        try:
            request = spawner_request(spawner, policy)
        except QuantityError as exc:  # a misconfigured profile: say so instead of a 500
            text = f"This server's size could not be read, so it was not started: {exc}"
            raise quota_error(text, messages.html.escape(text), status_code=400) from None
        now = self._clock()
        quota_url = self.quota_page_url or policy.messages.quota_page_url
        started = time.perf_counter()
        try:
            decision = await asyncio.wait_for(
                self._decide(self.engine, policy, username, groups, request, now),
                self.timeout_seconds,
            )
        except Exception as exc:  # noqa: BLE001 - any ledger failure takes the fail mode
            latency_ms = self.last_latency_ms = (time.perf_counter() - started) * 1000
            metrics.SPAWN_CHECK_SECONDS.observe(latency_ms / 1000)
            return self._failed(spawner, logger, policy, exc, username, groups, request, now,
                                latency_ms, quota_url)  # fmt: skip
        latency_ms = self.last_latency_ms = (time.perf_counter() - started) * 1000
        metrics.SPAWN_CHECK_SECONDS.observe(latency_ms / 1000)
        outcome = "allowed" if decision.allowed else "denied"
        metrics.SPAWN_DECISIONS.labels(outcome).inc()
        if self.record == "all" or not decision.allowed:
            self._background(self._write_decision(decision, groups, now, latency_ms), logger)
        if decision.allowed:
            events = messages.progress_events(
                decision, policy.enforcement.warn_at_percent, quota_url
            )
            attach_progress(spawner, events)
            logger.info(
                "quota: %s may start %r: %s", username, request.servername, decision.message
            )
            return decision
        attach_progress(spawner, [])
        logger.info("quota: refused %s %r: %s", username, request.servername, decision.reason)
        contact, contact_url = policy.messages.contact, policy.messages.contact_url
        raise quota_error(
            messages.denial_text(decision, contact, contact_url, quota_url),
            messages.denial_html(decision, contact, contact_url, quota_url),
        )

    def _failed(self, spawner, logger, policy, exc, username, groups, request: ServerRequest,
                now: datetime, latency_ms: float, quota_url: str):  # fmt: skip
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
        if allow:
            text = "Quota could not be checked just now; this server is starting anyway."
        else:
            text = (
                "Your compute quota could not be checked just now, so this server was not "
                "started. Please try again in a minute. " + policy.messages.contact
            )
        row = dict(
            decided_at=now, username=username, servername=request.servername, source="spawn",
            outcome=outcome, reason=reason, message=text, request=dict(request.amounts),
            groups=list(groups), detail={"error": detail}, latency_ms=latency_ms,
        )  # fmt: skip
        self._background(self._write_row(row), logger)
        if allow:
            attach_progress(spawner, [{"message": text}])
            return None
        attach_progress(spawner, [])
        contact_url = policy.messages.contact_url
        html_text = messages.html.escape(text)
        if contact_url:
            html_text += " " + messages._link(contact_url, contact_url)
        raise quota_error(text, html_text, status_code=503)

    # --- the decision log, written off the spawn's path ------------------------------------

    def _background(self, coro, logger) -> None:
        task = asyncio.ensure_future(self._bounded(coro, logger))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _bounded(self, coro, logger) -> None:
        try:
            await asyncio.wait_for(coro, RECORD_TIMEOUT_SECONDS)
        except Exception as exc:  # noqa: BLE001 - the log write must never break a spawn
            metrics.SPAWN_RECORD_FAILURES.inc()
            logger.warning("quota: could not record the decision: %s: %s", type(exc).__name__, exc)

    async def _write_decision(self, decision: Decision, groups, now, latency_ms) -> None:
        await ledger_record(self.engine, decision, source="spawn", latency_ms=latency_ms)
        async with self.engine.begin() as conn:
            await queries.record_groups(conn, decision.username, groups, now)

    async def _write_row(self, row: dict) -> None:
        async with self.engine.begin() as conn:
            await queries.record_decision(conn, **row)

    async def drain(self) -> None:
        """Wait for pending decision-log writes (tests, shutdown)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    async def close(self) -> None:
        await self.drain()
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None
