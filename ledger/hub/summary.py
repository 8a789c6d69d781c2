"""The quota on the hub's own pages: the summary in the header and on the home page, and the
notes on each choice of the server-options form.

JupyterHub calls each callable in ``c.JupyterHub.template_vars`` with the *current user*
when it builds a page's template namespace (``BaseHandler.template_namespace`` in
jupyterhub/handlers/base.py), so a page only ever sees its viewer's own summary. Pages are
rendered with an async Jinja environment, where a call in a template is awaited; error
pages with a sync one (``write_error``). :meth:`SummaryRef.view` is told which
(``jinja2.pass_environment``): in an async render a cold cache is filled with one ledger
query (within ``timeout_seconds``); a sync render only uses what is cached. Any failure of
the ledger is a summary that says "quota unavailable" — never a failed page. Results are
cached per user for ``cache_seconds`` (failures for less), so a page view costs at most one
ledger query and most cost none. https://jupyterhub.readthedocs.io/en/stable/howto/templates.html
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict

from jinja2 import pass_environment

from ledger.core.quota_notes import unavailable_summary
from ledger.core.times import utcnow
from ledger.hub.choices import choices_of, request_of
from ledger.hub.request import user_groups
from ledger.store.summary import user_choices, user_summary

log = logging.getLogger("ledger.hub")

CACHE_SECONDS = 30.0
FAILURE_CACHE_SECONDS = 10.0  # a ledger that is down is asked again this often, not per page
MAX_CACHED_USERS = 20000


class SummaryCache:
    """username → (expires at (monotonic), summary); one query in flight per user."""

    def __init__(self, fetch, cache_seconds: float, clock=time.monotonic):
        self.fetch = fetch  # async (user) -> summary dict; raises on ledger failure
        self.cache_seconds = cache_seconds
        self.clock = clock
        self.entries: OrderedDict[str, tuple[float, dict]] = OrderedDict()
        self.pending: dict[str, asyncio.Future] = {}

    def cached(self, name: str) -> dict | None:
        found = self.entries.get(name)
        if found is None or found[0] < self.clock():
            return None
        return found[1]

    def put(self, name: str, summary: dict, seconds: float) -> None:
        self.entries[name] = (self.clock() + seconds, summary)
        self.entries.move_to_end(name)
        while len(self.entries) > MAX_CACHED_USERS:
            self.entries.popitem(last=False)

    async def get(self, user) -> dict:
        name = user.name
        found = self.cached(name)
        if found is not None:
            return found
        pending = self.pending.get(name)
        if pending is None:
            pending = self.pending[name] = asyncio.ensure_future(self._load(user))
        return await asyncio.shield(pending)

    async def _load(self, user) -> dict:
        try:
            summary = await self.fetch(user)
            self.put(user.name, summary, self.cache_seconds)
        except Exception as exc:  # noqa: BLE001 - nothing of ours may fail a hub page
            log.warning("quota: summary of %s unavailable: %s: %s", user.name,
                        type(exc).__name__, exc)  # fmt: skip
            summary = None
        finally:
            self.pending.pop(user.name, None)
        if summary is None:
            summary = self.unavailable(user)
            self.put(user.name, summary, min(FAILURE_CACHE_SECONDS, self.cache_seconds))
        return summary

    def unavailable(self, user) -> dict:
        return unavailable_summary(user.name, utcnow(), None)

    def refresh_soon(self, user) -> None:
        """From a sync render: fill the cache in the background for the next page."""
        if user.name in self.pending:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self.pending[user.name] = loop.create_task(self._load(user))


class SummaryRef:
    """``quota_summary`` in a template: ``{% set q = quota_summary.view() %}``."""

    def __init__(self, pages: HubQuotaPages, user):
        self.pages, self.user = pages, user

    @pass_environment
    def view(self, environment):
        found = self.pages.cache.cached(self.user.name)
        if found is not None:
            return found
        if getattr(environment, "is_async", False):
            return self.pages.cache.get(self.user)  # awaited by Jinja
        self.pages.cache.refresh_soon(self.user)
        return None

    @pass_environment
    def choices(self, environment, for_user, spawner):
        """The notes of ``for_user``'s form (whose server it is: an admin may spawn for
        someone else). None in a sync render, for a form without sized choices, and when
        the ledger does not answer (the form is then shown as JupyterHub made it)."""
        if not getattr(environment, "is_async", False) or spawner is None:
            return None
        return self.pages.choices_for(for_user or self.user, spawner)


class HubQuotaPages:
    """The ``quota_summary`` template variable and what it reads; made by install_quota_hook."""

    def __init__(self, hook, *, cache_seconds: float = CACHE_SECONDS, timeout_seconds: float = 1.0,
                 disable_refused: bool = False, form_choices=None):  # fmt: skip
        self.hook = hook
        self.timeout_seconds = float(timeout_seconds)
        self.disable_refused = bool(disable_refused)
        self.form_choices = form_choices
        self.cache = SummaryCache(self._fetch, float(cache_seconds))
        self.cache.unavailable = self._unavailable

    def __deepcopy__(self, memo):  # config values are deep-copied; keep one cache
        return self

    def __call__(self, user):
        """JupyterHub's template_vars callable: the current user, or None when logged out."""
        if user is None or getattr(user, "name", None) is None:
            return None
        if getattr(user, "kind", "user") != "user":  # a service's token: no quota of its own
            return None
        return SummaryRef(self, user)

    def quota_url(self, policy) -> str:
        return self.hook.quota_page_url or policy.messages.quota_page_url

    def _unavailable(self, user) -> dict:
        return unavailable_summary(user.name, utcnow(), self.quota_url(self.hook.watcher.current()))

    async def _fetch(self, user) -> dict:
        policy = self.hook.watcher.current()
        async with asyncio.timeout(self.timeout_seconds):
            return await user_summary(self.hook.engine, policy, user.name, user_groups(user),
                                      self.hook.now(), quota_url=self.quota_url(policy))  # fmt: skip

    async def choices_for(self, user, spawner) -> dict | None:
        try:
            return await self._choices(user, spawner)
        except Exception as exc:  # noqa: BLE001 - the form is shown without notes
            log.warning("quota: choice notes for %s unavailable: %s: %s", user.name,
                        type(exc).__name__, exc)  # fmt: skip
            return None

    async def _choices(self, user, spawner) -> dict | None:
        policy = self.hook.watcher.current()
        choices = []
        for choice in await choices_of(spawner, self.form_choices):
            try:
                request = request_of(spawner, policy, choice.overrides)
            except Exception as exc:  # noqa: BLE001 - QuantityError, a TraitError, the
                # operator's callable: that choice stays without a note
                log.warning("quota: size of choice %s=%s unreadable: %s", choice.field,
                            choice.value, exc)  # fmt: skip
                continue
            choices.append((choice.field, choice.value, choice.label, request))
        if not choices:
            return None
        async with asyncio.timeout(self.timeout_seconds):
            notes = await user_choices(self.hook.engine, policy, user.name, user_groups(user),
                                       self.hook.now(), choices)  # fmt: skip
        notes["disable_refused"] = self.disable_refused
        return notes
