"""The tornado application: routes under the service prefix, templates, static files.

The hub's proxy forwards ``/services/<name>/...`` to the service *without* stripping the
prefix, so every route lives under ``JUPYTERHUB_SERVICE_PREFIX`` (``/`` when run alone).
``/healthz`` and ``/readyz`` are also served at the root for probes that talk to the service
directly.
https://jupyterhub.readthedocs.io/en/stable/reference/services.html#hub-managed-services
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

from jupyterhub.services.auth import HubOAuthCallbackHandler
from tornado import web

from ledger.web import admin_pages, api, request_pages, template_helpers, user_pages
from ledger.web.auth import (
    ApiHandler,
    HealthHandler,
    QuotaHandler,
    ReadyHandler,
    SecureHeaders,
    log_request,
)
from ledger.web.config import WebConfig
from ledger.web.report_view import ReportCache

HERE = Path(__file__).resolve().parent
COOKIE_SECRET_ENV = "QUOTA_LEDGER_COOKIE_SECRET"


class OAuthCallbackHandler(SecureHeaders, HubOAuthCallbackHandler):
    """JupyterHub's callback: trades the code for a token and stores it in a cookie."""

    HEAD_AS_GET = False  # its GET uses up the one-time code: no HEAD


class StaticHandler(SecureHeaders, web.StaticFileHandler):
    """CSS with the same headers as the pages (tornado's own caching headers still apply)."""


class NotFoundHandler(QuotaHandler):
    def check_xsrf_cookie(self) -> None:
        pass  # nothing here acts on a request: a POST to no page is a 404, not an xsrf 403

    def prepare(self) -> None:
        raise web.HTTPError(404, "There is no such page here.")


# The JSON API under api/v1/, as docs/openapi.yaml names its paths ({x}: one path segment),
# and whether the handler shares the report cache: the routes and the 404's list of them.
API_ROUTES = (
    ("me", api.MeApiHandler, False),
    ("me/summary", api.SummaryApiHandler, False),
    ("me/choices", api.ChoicesApiHandler, False),
    ("users/{name}", api.UserApiHandler, False),
    ("report", api.ReportApiHandler, True),
    ("shared", api.SharedApiHandler, False),
    ("requests", api.RequestsApiHandler, False),
    ("requests/{id}/{action}", api.AnswerApiHandler, False),
)


class ApiNotFoundHandler(ApiHandler):
    """Unknown ``api/…`` paths: a JSON 404 a client can read, not the HTML page."""

    check_xsrf_cookie = NotFoundHandler.check_xsrf_cookie

    def prepare(self) -> None:
        raise web.HTTPError(
            404,
            "no such API route: %s; the routes are under api/v1/ (docs/openapi.yaml): %s",
            self.request.path,
            ", ".join(path for path, _, _ in API_ROUTES),
        )


class AddSlashHandler(SecureHeaders, web.RequestHandler):
    """``/services/quota`` → ``/services/quota/``: the login cookie's path is the prefix with
    its slash (HubOAuth sets ``Path=`` to the service prefix), so a page served without it
    would never see the cookie and send the browser round the OAuth flow forever."""

    def get(self) -> None:
        query = f"?{self.request.query}" if self.request.query else ""
        self.redirect(self.request.path + "/" + query, permanent=True)


def service_prefix() -> str:
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX") or "/"
    return prefix if prefix.endswith("/") else prefix + "/"


def _cookie_secret() -> bytes:
    # Only signs the OAuth token cookie; a fresh one per process just means a silent
    # re-login through the hub after a restart. Set it to share cookies between replicas.
    value = os.environ.get(COOKIE_SECRET_ENV)
    return bytes.fromhex(value) if value else secrets.token_bytes(32)


def make_app(
    config: WebConfig, *, prefix: str | None = None, handler_mixin: type | None = None
) -> web.Application:
    """The app. ``handler_mixin`` is put in front of every authenticated handler's bases
    (tests use it to inject the identified user; nothing else does)."""
    prefix = prefix or service_prefix()
    if not prefix.endswith("/"):
        prefix += "/"
    cache = ReportCache(config)
    plain = {"config": config}
    with_cache = {"config": config, "report_cache": cache}

    def h(cls: type) -> type:
        if handler_mixin is None:
            return cls
        return type(cls.__name__, (handler_mixin, cls), {})

    def route(path: str) -> str:
        # not url_path_join: on JupyterHub 5 it drops the trailing slash of
        # url_path_join(prefix, ""), which made the root a 404
        return prefix + path

    routes = [
        (route(""), h(user_pages.UserPageHandler), plain),
        (route("oauth_callback"), OAuthCallbackHandler),
        (route("healthz"), HealthHandler),
        (route("readyz"), ReadyHandler),
        (route("admin/?"), h(admin_pages.ReportPageHandler), with_cache),
        (route("admin/report.csv"), h(admin_pages.ReportCsvHandler), with_cache),
        (route("admin/groups"), h(admin_pages.GroupsPageHandler), with_cache),
        (route("admin/running"), h(admin_pages.RunningPageHandler), with_cache),
        (route("admin/rejections"), h(admin_pages.RejectionsPageHandler), with_cache),
        (route("admin/enforcement"), h(admin_pages.EnforcementPageHandler), with_cache),
        (route("admin/collectors"), h(admin_pages.CollectorsPageHandler), with_cache),
        (route("admin/users/([^/]+)"), h(user_pages.AdminUserPageHandler), plain),
        (route("request"), h(request_pages.RequestFormHandler), plain),
        (route("admin/requests(?:/([0-9]+))?"), h(request_pages.AdminRequestsHandler), plain),
    ]
    routes += [
        (route("api/v1/" + re.sub(r"\{[^}]+\}", "([^/]+)", path)), h(handler),
         with_cache if cached else plain)
        for path, handler, cached in API_ROUTES
    ]  # fmt: skip
    routes.append((route("api/.*"), h(ApiNotFoundHandler), plain))
    if prefix != "/":
        routes.append((re.escape(prefix.rstrip("/")), AddSlashHandler))
        routes.append((r"/healthz", HealthHandler))
        routes.append((r"/readyz", ReadyHandler))
    return web.Application(
        routes,
        template_path=str(HERE / "templates"),
        static_path=str(HERE / "static"),
        static_url_prefix=route("static/"),
        static_handler_class=StaticHandler,
        ui_methods=template_helpers,
        autoescape="xhtml_escape",  # tornado's default, stated: every {{ }} is escaped
        cookie_secret=_cookie_secret(),
        xsrf_cookies=True,  # the request forms (ledger/web/request_pages.py) carry the token
        log_function=log_request,
        default_handler_class=h(NotFoundHandler),
        default_handler_args=plain,
        quota_prefix=prefix,
        quota_config=config,
        quota_report_cache=cache,
    )
