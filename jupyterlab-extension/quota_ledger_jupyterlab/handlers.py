"""The two routes the status-bar item reads, under the single-user server's base URL.

- ``GET quota-ledger/config``: where the quota page is, which server this is.
- ``GET quota-ledger/me``: the quota service's ``GET /api/v1/me`` (docs/openapi.yaml),
  passed through unchanged, asked with this server's ``$JUPYTERHUB_API_TOKEN``.

Nothing else is forwarded: no path, query or header from the browser reaches the service,
so this server can only ever show its owner's numbers (the service takes the user from the
token). Both routes need the same login as the rest of this server
(``tornado.web.authenticated``: under JupyterHub, ``access:servers`` for this server).
"""

from __future__ import annotations

import json
import os

from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from traitlets import Float, Unicode
from traitlets.config import Configurable

SERVICE_URL_ENV = "QUOTA_LEDGER_SERVICE_URL"
PAGE_URL_ENV = "QUOTA_LEDGER_PAGE_URL"
SCOPE_HINT = (
    "the server's JupyterHub token may not use the quota service: the hub must grant "
    "access:services!service=quota to the 'server' role (see the quota-ledger docs, "
    "JupyterLab status bar)"
)


class QuotaLedgerJupyterLab(Configurable):
    """``c.QuotaLedgerJupyterLab.*`` in ``jupyter_server_config.py`` (or the env variables)."""

    service_url = Unicode(
        "",
        config=True,
        help=f"""URL at which this server reaches the quota service, with its prefix, e.g.
        http://proxy-public/services/quota/ (Zero to JupyterHub) or
        http://127.0.0.1:8000/services/quota/ (the hub's proxy on the same host).
        Default: ${SERVICE_URL_ENV}, else the hub's public URL + services/quota/ when the
        hub sets $JUPYTERHUB_PUBLIC_HUB_URL (c.JupyterHub.public_url).""",
    )
    page_url = Unicode(
        "",
        config=True,
        help=f"""Link to the quota page in the browser. Default: ${PAGE_URL_ENV}, else
        $JUPYTERHUB_BASE_URL + services/quota/ (the same origin as JupyterLab).""",
    )
    service_name = Unicode("quota", config=True, help="The quota service's name at the hub.")
    request_timeout_seconds = Float(10.0, config=True, help="Timeout for one request.")

    def resolved_service_url(self) -> str:
        url = self.service_url or os.environ.get(SERVICE_URL_ENV, "")
        if not url:
            public_hub = os.environ.get("JUPYTERHUB_PUBLIC_HUB_URL", "")
            if public_hub:
                root = public_hub.rstrip("/")
                root = root[: -len("/hub")] if root.endswith("/hub") else root
                url = f"{root}/services/{self.service_name}/"
        return url if not url or url.endswith("/") else url + "/"

    def resolved_page_url(self) -> str:
        url = self.page_url or os.environ.get(PAGE_URL_ENV, "")
        if url:
            return url
        base = os.environ.get("JUPYTERHUB_BASE_URL", "/")
        return url_path_join(base, "services", self.service_name) + "/"


class _Base(APIHandler):
    def initialize(self, settings: QuotaLedgerJupyterLab) -> None:
        self.quota = settings

    def fail(self, status: int, message: str) -> None:
        self.set_status(status)
        self.finish(json.dumps({"status": status, "message": message}))


class ConfigHandler(_Base):
    @web.authenticated
    def get(self) -> None:
        self.finish(
            json.dumps(
                {
                    "quota_page_url": self.quota.resolved_page_url(),
                    "server_name": os.environ.get("JUPYTERHUB_SERVER_NAME", ""),
                    "user": os.environ.get("JUPYTERHUB_USER", ""),
                }
            )
        )


class MeHandler(_Base):
    @web.authenticated
    async def get(self) -> None:
        token = os.environ.get("JUPYTERHUB_API_TOKEN", "")
        base = self.quota.resolved_service_url()
        if not token:
            return self.fail(503, "this server was not started by JupyterHub (no API token)")
        if not base:
            return self.fail(
                503,
                f"the quota service's URL is not configured: set ${SERVICE_URL_ENV} in the "
                "single-user environment (or c.QuotaLedgerJupyterLab.service_url)",
            )
        request = HTTPRequest(
            base + "api/v1/me",
            headers={"Authorization": f"token {token}", "Accept": "application/json"},
            request_timeout=self.quota.request_timeout_seconds,
            follow_redirects=False,  # a redirect to a login page means the token was refused
        )
        try:
            response = await AsyncHTTPClient().fetch(request, raise_error=False)
        except (OSError, HTTPClientError) as exc:  # refused, DNS, timeout
            self.log.warning("quota-ledger: quota service at %s: %s", base, exc)
            return self.fail(502, f"the quota service does not answer at {base} ({exc})")
        if response.code == 200:
            self.set_header("Content-Type", "application/json")
            self.set_header("Cache-Control", "no-store")
            return self.finish(response.body)
        if response.code in (401, 403) or 300 <= response.code < 400:
            self.log.warning("quota-ledger: quota service refused the token (%s)", response.code)
            return self.fail(403, SCOPE_HINT)
        if response.code == 599:  # tornado: no HTTP response at all
            return self.fail(502, f"the quota service does not answer at {base}")
        return self.fail(502, f"the quota service answered {response.code}")


def setup_handlers(server_app) -> None:
    web_app = server_app.web_app
    settings = QuotaLedgerJupyterLab(parent=server_app)
    base = url_path_join(web_app.settings["base_url"], "quota-ledger")
    web_app.add_handlers(
        ".*$",
        [
            (url_path_join(base, "config"), ConfigHandler, {"settings": settings}),
            (url_path_join(base, "me"), MeHandler, {"settings": settings}),
        ],
    )
