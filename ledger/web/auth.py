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


class SecureHeaders:
    """Headers on every response, including errors and /healthz."""

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
            raise web.HTTPError(403, "this page needs the quota admin scope")
        return viewer

    def render_page(self, template: str, **values) -> None:
        policy = self.config.policy()
        values.setdefault("section", "me")
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

    def write_error(self, status_code: int, **kwargs) -> None:
        # Never a traceback, never the exception text (it may name the database).
        reason = self._reason if status_code < 500 else "Internal server error"
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.render(
            "error.html", status_code=status_code, reason=reason, hub_url=self.config.hub_url
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
        reason = self._reason if status_code < 500 else "Internal server error"
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps({"status": status_code, "message": reason}))


class HealthHandler(SecureHeaders, web.RequestHandler):
    """Liveness for the hub, Kubernetes probes and load balancers. No authentication, no DB."""

    def get(self) -> None:
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish('{"status": "ok"}')


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
