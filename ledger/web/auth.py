"""Who is asking, and what every response carries: Hub OAuth, the admin check, headers.

Authentication is JupyterHub's own ``HubOAuthenticated`` mixin
(https://jupyterhub.readthedocs.io/en/stable/reference/services.html#hub-authentication-and-services):
the browser is sent through the hub's OAuth flow once, the token lands in a cookie, and
every request is identified by ``GET /hub/api/user`` with that token (cached by HubAuth).

The identify model always carries ``name`` and ``groups`` (JupyterHub grants every OAuth
token ``read:users:name!user`` and ``read:users:groups!user`` on itself), and ``scopes``:
the token's scopes, i.e. the service's ``oauth_client_allowed_scopes`` that the user holds.
A user is an admin of this service when one of ``WebConfig.admin_scopes`` is among them.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode

from jupyterhub.services.auth import HubOAuthenticated, check_scopes
from tornado import web

from ledger.web.config import WebConfig

log = logging.getLogger(__name__)

# No script at all; inline styles only for bar widths. frame-ancestors: no clickjacking.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "script-src 'none'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)


@dataclass(frozen=True)
class Viewer:
    """The person behind a request, as the hub identified them."""

    name: str
    groups: tuple[str, ...]
    is_admin: bool


def viewer_from_model(model: dict | None, admin_scopes) -> Viewer | None:
    """A Viewer from the hub's identify model; None for services and anonymous requests."""
    if not model or model.get("kind", "user") != "user":
        return None
    scopes = set(model.get("scopes") or [])
    is_admin = bool(check_scopes(set(admin_scopes), scopes)) if admin_scopes else False
    return Viewer(str(model["name"]), tuple(model.get("groups") or ()), is_admin)


def implemented_methods(cls: type) -> tuple[str, ...]:
    """The HTTP methods a handler class answers: those it defines, not tornado's defaults
    (which answer 405)."""
    return tuple(
        m
        for m in web.RequestHandler.SUPPORTED_METHODS
        if getattr(cls, m.lower(), None) is not getattr(web.RequestHandler, m.lower())
    )


def _head_as_get(self, *args, **kwargs):
    return self.get(*args, **kwargs)  # a coroutine or None: tornado awaits either


class SecureHeaders:
    """Headers on every response, including errors and /healthz; and 405, not an xsrf 403,
    for a method the handler does not define."""

    # A handler whose GET acts (the OAuth callback redeems a one-time code) sets this False:
    # a HEAD from a link scanner must not use the code up before the browser's GET.
    HEAD_AS_GET = True

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        # tornado answers a method a handler does not define with 405 only after its xsrf
        # check, so a PUT without a token was a 403 "xsrf" that sent a client looking for a
        # token; SUPPORTED_METHODS is checked first. A handler defining none (the 404
        # handlers) keeps every method.
        methods = implemented_methods(cls)
        if "GET" in methods and "HEAD" not in methods and cls.HEAD_AS_GET:
            # HEAD is GET without the body (RFC 9110 §9.3.2), which tornado drops for HEAD
            # (RequestHandler.flush): uptime checks and ``curl -I`` get the GET's status
            # and headers, not a 405
            cls.head = _head_as_get
            methods = implemented_methods(cls)
        if methods:
            cls.SUPPORTED_METHODS = methods

    def allow_header(self, status_code: int) -> None:
        """405 says what is allowed (RFC 9110 §15.5.6: it must)."""
        if status_code == 405:
            self.set_header("Allow", ", ".join(self.SUPPORTED_METHODS))

    def write_error(self, status_code: int, **kwargs) -> None:
        self.allow_header(status_code)
        super().write_error(status_code, **kwargs)

    def set_default_headers(self) -> None:
        self.set_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "same-origin")
        self.set_header("X-Frame-Options", "DENY")
        # Quota figures are personal: never let a shared cache keep them.
        self.set_header("Cache-Control", "no-store")

    def _request_summary(self) -> str:
        # tornado puts this in its warning for every HTTPError: keep OAuth codes out.
        return f"{self.request.method} {redacted_uri(self.request.uri or '')} ({self.request.remote_ip})"


class QuotaHandler(SecureHeaders, HubOAuthenticated, web.RequestHandler):
    """Base of every authenticated page and API route."""

    def initialize(self, config: WebConfig) -> None:
        self.config = config

    async def prepare(self) -> None:
        # HubAuthenticated.get_current_user() is synchronous: on a cache miss it blocks on a
        # background thread while asking the hub. Identify asynchronously first; HubAuth
        # keeps the result on the handler, so get_current_user() then returns at once.
        await self.hub_auth.get_user(self, sync=False)

    @property
    def viewer(self) -> Viewer | None:
        if not hasattr(self, "_viewer"):
            self._viewer = viewer_from_model(self.current_user, self.config.admin_scopes)
        return self._viewer

    def require_viewer(self) -> Viewer:
        viewer = self.viewer
        if viewer is None:
            if self.current_user is None:
                self.redirect(self.get_login_url())  # HubOAuth: redirects to the hub's login
                raise web.Finish()
            raise web.HTTPError(403, "only hub users can use this service")
        return viewer

    def require_admin(self) -> Viewer:
        viewer = self.require_viewer()
        if not viewer.is_admin:
            raise web.HTTPError(
                403,
                "This page is for quota admins: hub admins, and users with the "
                "quota admin scope (%s). Ask your hub admins if you need it.",
                " or ".join(self.config.admin_scopes) or "none configured",
            )
        return viewer

    def render_page(self, template: str, **values) -> None:
        policy = self.config.policy()
        values.setdefault("section", "me")
        # the quota request form on user.html (ledger/web/request_pages.py fills them)
        values.setdefault("request_fields", {})
        values.setdefault("request_error", None)
        values.setdefault("confirm", False)
        self.render(
            template,
            viewer=self.viewer,
            prefix=self.settings.get("quota_prefix", "/"),
            hub_url=self.config.hub_url,
            contact=policy.messages.contact,
            contact_url=policy.messages.contact_url,
            page_at=self.config.now(),
            **values,
        )

    def send_error(self, status_code: int = 500, **kwargs) -> None:
        # A database that is down is not a bug of this page: say so, with 503.
        exc_info = kwargs.get("exc_info")
        if exc_info and is_ledger_unavailable(exc_info[1]):
            status_code = 503
        super().send_error(status_code, **kwargs)

    def write_error(self, status_code: int, **kwargs) -> None:
        reason, detail = error_text(status_code, kwargs.get("exc_info"))
        self.allow_header(status_code)
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.render(
            "error.html",
            status_code=status_code,
            reason=reason,
            detail=detail,
            hub_url=self.config.hub_url,
        )


class ApiHandler(QuotaHandler):
    """JSON routes: 401/403 with a JSON body instead of redirects to the login page."""

    def get_login_url(self) -> str:
        raise web.HTTPError(401, "log in through the hub, or send Authorization: token …")

    def require_viewer(self) -> Viewer:
        viewer = self.viewer
        if viewer is None:
            if self.current_user is None:
                raise web.HTTPError(401, "not authenticated")
            raise web.HTTPError(403, "only hub users can use this service")
        return viewer

    def write_json(self, value) -> None:
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps(value, default=str))

    def write_error(self, status_code: int, **kwargs) -> None:
        reason, detail = error_text(status_code, kwargs.get("exc_info"))
        self.allow_header(status_code)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        message = f"{reason}: {detail}" if detail else reason
        self.finish(json.dumps({"status": status_code, "message": message}))


LEDGER_UNAVAILABLE = (
    "The quota ledger is unavailable just now (its database does not answer). "
    "Your servers are not affected; try this page again in a minute."
)


def is_ledger_unavailable(exc: BaseException | None) -> bool:
    """A database that cannot be reached or answered with an error (not a bug of ours).
    A value the database refused (a DataError: out of range, bad text; an IntegrityError) is
    not an outage: showing "unavailable" for it sends operators looking for one."""
    from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError, TimeoutError

    if isinstance(exc, DataError | IntegrityError):
        return False
    return isinstance(exc, (OSError, DBAPIError, OperationalError, TimeoutError))


def error_text(status_code: int, exc_info) -> tuple[str, str]:
    """(reason, detail) for an error page: our own HTTPError messages are written for people;
    anything else is never shown (a traceback or driver message may name the database)."""
    from http.client import responses

    reason = responses.get(status_code, "Error")
    exc = exc_info[1] if exc_info else None
    if status_code == 503 and (exc is None or is_ledger_unavailable(exc)):
        return "Quota ledger unavailable", LEDGER_UNAVAILABLE
    if isinstance(exc, web.HTTPError) and exc.log_message and status_code < 500:
        try:
            return reason, exc.log_message % exc.args
        except (TypeError, ValueError):
            return reason, ""
    if status_code >= 500:
        return "Internal server error", "Something went wrong on our side; it has been logged."
    return reason, ""


class HealthHandler(SecureHeaders, web.RequestHandler):
    """Liveness for the hub, Kubernetes probes and load balancers. No authentication, no DB
    query: it reports what the background check last saw (``ledger.store.availability``).
    Always 200, so a probe does not restart the service during a database outage; the body
    says ``"ledger unavailable"`` then. ``readyz`` answers 503 in that case instead."""

    ready_only = False

    def get(self) -> None:
        availability = self.settings.get("quota_availability")
        body = {"status": "ok"}
        if availability is not None and not availability.available:
            body = {"status": "ledger unavailable", **availability.to_json()}
            if self.ready_only:
                self.set_status(503)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps(body))


class ReadyHandler(HealthHandler):
    ready_only = True


# Query parameters whose values must not reach the access log: the OAuth code and state
# on the callback, a token someone put in a URL.
_SECRET_PARAMS = {"code", "state", "token", "access_token"}


def redacted_uri(uri: str) -> str:
    path, _, query = uri.partition("?")
    if not query:
        return path
    pairs = [(k, "[secret]" if k in _SECRET_PARAMS else v) for k, v in parse_qsl(query, True)]
    return f"{path}?{urlencode(pairs)}"


access_log = logging.getLogger("ledger.web.access")


def log_request(handler: web.RequestHandler) -> None:
    """Tornado's access log line, with secrets in the query string redacted."""
    status = handler.get_status()
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    if handler.request.path.endswith("healthz") and status < 400:
        level = logging.DEBUG
    elapsed_ms = 1000.0 * handler.request.request_time()
    access_log.log(
        level,
        "%d %s %s %.1fms",
        status,
        handler.request.method,
        redacted_uri(handler.request.uri or ""),
        elapsed_ms,
    )
