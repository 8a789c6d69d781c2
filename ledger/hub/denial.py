"""How a refused spawn reaches JupyterHub 5 and 6: the exception, its messages, the page's data.

- JupyterHub 6 has ``SpawnException(reason=...)``: a refusal with it is a "failure", not an
  "error", in ``jupyterhub_server_spawn_duration_seconds`` and does not count towards
  ``Spawner.consecutive_failure_limit`` (https://github.com/jupyterhub/jupyterhub/pull/4985).
- JupyterHub 5 has no such class; its ``User.spawn`` overwrites ``e.reason = 'error'``, and
  its error page then shows the generic "Failed to start your server on the last attempt"
  (``reasons`` in jupyterhub/handlers/base.py) instead of the message. Our exception keeps
  the reason it was made with, so the page shows ours; and since JupyterHub 5 counts every
  failed spawn towards ``consecutive_failure_limit`` (z2jh sets it), which stops the hub
  when reached, :func:`not_a_spawn_failure` takes a refusal back out of that count.
- Both versions log a failed spawn at ERROR, with a traceback on JupyterHub 5;
  :class:`QuietRefusals` turns those records of a quota refusal into one INFO line.

The page data (:func:`denial_view`) is what ``templates/403.html`` renders; pure.
"""

from __future__ import annotations

import collections
import html
import logging

from tornado.web import HTTPError

from ledger.core.decision import Decision, ServerRequest, _window_text
from ledger.core.quantities import format_amount, format_hours
from ledger.core.resources import SERVERS, resource

try:  # JupyterHub >= 6
    from jupyterhub.spawner import SpawnException
except ImportError:  # JupyterHub 5
    SpawnException = None

_Base = SpawnException if SpawnException is not None else HTTPError


class QuotaRefusal(_Base):
    """A spawn refused by the quota (or because the quota could not be checked)."""

    @property
    def reason(self):
        return self.__dict__.get("_quota_reason")

    @reason.setter
    def reason(self, value) -> None:
        # set once, by __init__; JupyterHub 5's User.spawn later writes 'error' here
        self.__dict__.setdefault("_quota_reason", value)


def refusal(
    text: str, html_text: str, *, status_code: int, reason: str, view: dict | None = None
) -> QuotaRefusal:
    """The exception that refuses a spawn, with the text for REST/logs and HTML for pages."""
    if SpawnException is not None:
        error = QuotaRefusal(text, reason=reason, message_html=html_text, status_code=status_code)
    else:
        # not reason=: tornado would make it the HTTP reason phrase ("503 quota_unavailable")
        error = QuotaRefusal(status_code, "%s", text)
    error.jupyterhub_message = TextWithHtml(text, html_text)
    error.jupyterhub_html_message = html_text
    error.quota_denial = view  # the friendly page's data (None: JupyterHub's own page)
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


def not_a_spawn_failure(spawner) -> None:
    """JupyterHub 5 only: a refusal must not count towards ``consecutive_failure_limit``.

    Its ``_track_failure_count`` adds one for every failed spawn (handlers/base.py); lowering
    the count first leaves it where it was. JupyterHub 6 does not count a SpawnException.
    """
    if SpawnException is not None:
        return
    handler = getattr(spawner, "handler", None)
    settings = getattr(handler, "settings", None)
    if isinstance(settings, dict):
        settings["failure_count"] = settings.get("failure_count", 0) - 1


class QuietRefusals(logging.Filter):
    """Turns JupyterHub's ERROR records about a spawn we refused for quota into INFO.

    Matched by the exception (``exc_info``) or by the refusal's text in the message (JupyterHub
    6 logs ``Not starting …: {e}`` without it). Refusals because the ledger could not be
    checked stay errors (an outage someone must look at), without JupyterHub 5's traceback.
    """

    def __init__(self) -> None:
        super().__init__("quota-ledger")
        self.recent: collections.deque[str] = collections.deque(maxlen=64)

    def remember(self, error: QuotaRefusal) -> None:
        self.recent.append(str(error))

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, QuotaRefusal):
            record.exc_info, record.exc_text = None, None  # our own refusal: no traceback
        ours = isinstance(exc, QuotaRefusal) and getattr(exc, "quota_denial", None) is not None
        if not ours and exc is None and self.recent:
            message = record.getMessage()
            ours = any(text in message for text in self.recent)
        if ours:
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


QUIET_REFUSALS = QuietRefusals()


def quiet_loggers(*loggers) -> None:
    for logger in loggers:
        if isinstance(logger, logging.LoggerAdapter):
            logger = logger.logger
        if isinstance(logger, logging.Logger) and QUIET_REFUSALS not in logger.filters:
            logger.addFilter(QUIET_REFUSALS)


# --- what the denial page shows ----------------------------------------------------------------


def _headline(decision: Decision) -> str:
    reason = decision.reason
    kind, _, name = reason.partition(":")
    if kind == "used_up":
        return f"You have used your {name} quota"
    if kind == "zero_limit":
        return f"Your quota does not include {resource(name).display_unit}s"
    if kind == "running":
        if name == SERVERS:
            return "You already run as many servers as you may"
        return f"You already use all the {resource(name).display_unit}s you may at a time"
    if kind == "unlisted":
        return "Your account has no compute quota on this hub"
    return "This server cannot start now"


def denial_view(
    decision: Decision, contact: str, contact_url: str | None, quota_url: str, text: str
) -> dict:
    """The data of the friendly page; every value is plain text (the template escapes it)."""
    budgets = [
        {
            "resource": b.resource,
            "used": format_hours(b.resource, b.used_hours),
            "limit": format_hours(b.resource, b.limit_hours),
            "window": _window_text(b.window_seconds),
            "percent": round(b.percent_used),
            "blocks": b.blocks,
        }
        for b in decision.budgets.values()
        if b.blocks == "used_up"
    ]
    caps = [
        {
            "resource": c.resource,
            "running": str(c.running)
            if c.resource == SERVERS
            else format_amount(c.resource, c.running),
            "cap": str(c.cap) if c.resource == SERVERS else format_amount(c.resource, c.cap),
        }
        for c in decision.caps.values()
        if c.blocks
    ]
    return {
        "headline": _headline(decision),
        "message": decision.message,
        "budgets": budgets,
        "caps": caps,
        "request": decision.request.describe() if decision.request.sized else "",
        "retry_at": decision.retry_at.isoformat() if decision.retry_at else None,
        "retry_at_utc": f"{decision.retry_at:%Y-%m-%d %H:%M} UTC" if decision.retry_at else None,
        "smaller": ServerRequest(decision.suggestion).describe() if decision.suggestion else None,
        "contact": contact.strip(),
        "contact_url": contact_url,
        "quota_url": quota_url,
        "text": text,
        # "Request more quota": a GET form to the quota page's request form, which confirms
        # and files it (its POST needs the quota service's xsrf token, which this page lacks)
        "request_url": quota_url.rstrip("/") + "/request" if quota_url and budgets else None,
        "request_resources": [
            {"name": b["resource"], "unit": resource(b["resource"]).hours_unit} for b in budgets
        ],
    }


def outage_html(text: str, contact_url: str | None) -> str:
    body = html.escape(text)
    if contact_url:
        url = html.escape(contact_url, quote=True)
        body += f' <a href="{url}">{html.escape(contact_url)}</a>'
    return body
