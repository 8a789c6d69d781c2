"""Quota requests on the web: a user asks on their quota page (or from the hub's denial page,
which sends its fields here to confirm); admins answer in ``admin/requests``.

Forms are POSTs protected by the xsrf token JupyterHub's HubOAuth binds to the login
(``xsrf_cookies`` in ledger/web/app.py; ``{% module xsrf_form_html() %}`` in the forms).
A user files requests only under the name the hub identified; only admins approve or
decline. The same checks back the JSON API (ledger/web/api.py): :func:`file_request`,
:func:`answer_request`.
"""

from __future__ import annotations

from decimal import Decimal

from tornado import web

from ledger.core.grant_input import GrantInputError, amount_hours, reason_of, until_of
from ledger.core.resources import display_order
from ledger.store import page_reads as reads
from ledger.store import quota_requests as requests_store
from ledger.store.status import user_status
from ledger.web.auth import QuotaHandler, Viewer
from ledger.web.user_view import MEMORY_HINT, build_user_view

MAX_MESSAGE_LENGTH = 1000


def requestable(config, viewer_name: str, groups) -> list[str]:
    """The resources a user can ask more of: those the policy limits for them."""
    limits = config.policy().limits_for(viewer_name, groups)
    return display_order(limits.budgets)


def parse_request(config, viewer: Viewer, fields: dict) -> dict:
    """Form or JSON fields → create() arguments; GrantInputError says what is wrong."""
    names = requestable(config, viewer.name, viewer.groups)
    name = fields.get("resource")
    if name not in names:
        valid = ", ".join(names) or "none: no limit applies to you"
        raise GrantInputError(f"resource: {str(name)!r} is not one of your limits ({valid})")
    now = config.now()
    return {
        "resource_name": name,
        "amount_hours": amount_hours(fields.get("amount"), name, (), where="amount"),
        "until_at": until_of(fields.get("until"), now, where="until"),
        "reason": reason_of(fields.get("reason"), where="why"),
        "at": now,
    }


async def file_request(config, viewer: Viewer, fields: dict):
    values = parse_request(config, viewer, fields)
    async with config.engine.begin() as conn:
        return await requests_store.create(conn, username=viewer.name, **values)


def _message(text: object, *, required: bool) -> str:
    if text is None or (isinstance(text, str) and not text.strip()):
        if required:
            raise GrantInputError("message: say why it is declined (the user reads it)")
        return ""
    return reason_of(text, where="message")[:MAX_MESSAGE_LENGTH]


async def answer_request(config, admin: Viewer, request_id: int, fields: dict):
    """Approve (``action`` approve, optional changed ``amount``/``until``) or decline (with a
    ``message``). Returns (request, grant or None). RequestError / GrantInputError on bad input."""
    action = fields.get("action")
    now = config.now()
    async with config.engine.begin() as conn:
        if action == "approve":
            current = await requests_store.get(conn, request_id)
            if current is None:
                raise requests_store.RequestError(f"there is no request {request_id}")
            amount: Decimal | None = None
            if fields.get("amount") not in (None, ""):
                amount = amount_hours(fields["amount"], current.resource, (), where="amount")
            until = None
            if fields.get("until") not in (None, ""):
                until = until_of(fields["until"], now, where="until")
            return await requests_store.approve(
                conn, request_id, by=admin.name, at=now, amount_hours=amount, until_at=until,
                message=_message(fields.get("message"), required=False),
            )  # fmt: skip
        if action == "decline":
            message = _message(fields.get("message"), required=True)
            declined = await requests_store.decline(
                conn, request_id, by=admin.name, at=now, message=message
            )
            return declined, None
    raise GrantInputError(f"action: {str(action)!r} is not approve or decline")


def _fields(handler) -> dict:
    return {
        k: handler.get_body_argument(k, None) for k in ("resource", "amount", "until", "reason")
    }


class RequestFormHandler(QuotaHandler):
    """``/request``: GET shows the form filled from the query (the hub's denial page sends its
    fields here; GET changes nothing), POST files the request and goes back to the page."""

    async def get(self) -> None:
        viewer = self.require_viewer()
        fields = {k: self.get_argument(k, "") for k in ("resource", "amount", "until", "reason")}
        await self._page(viewer, fields, error=None)

    async def post(self) -> None:
        viewer = self.require_viewer()
        fields = _fields(self)
        try:
            await file_request(self.config, viewer, fields)
        except GrantInputError as exc:
            self.set_status(400)
            await self._page(viewer, fields, error=str(exc))
            return
        self.redirect(self.settings.get("quota_prefix", "/") + "#requests", status=303)

    async def _page(self, viewer: Viewer, fields: dict, error: str | None) -> None:
        view = await build_user_view(self.config, viewer.name, viewer.groups)
        self.render_page(
            "user.html", view=view, subject=viewer.name, own=True, memory_hint=MEMORY_HINT,
            request_fields=fields, request_error=error, confirm=True,
        )  # fmt: skip


class AdminRequestsHandler(QuotaHandler):
    """``/admin/requests``: pending requests with each user's usage, history and groups, and
    the recently decided ones; POST ``/admin/requests/<id>`` approves or declines."""

    async def get(self, request_id: str | None = None) -> None:
        self.require_admin()
        await self._page(error=None)

    async def post(self, request_id: str | None = None) -> None:
        admin = self.require_admin()
        if request_id is None:
            raise web.HTTPError(405, "POST to admin/requests/<id>")
        fields = {
            k: self.get_body_argument(k, None) for k in ("action", "amount", "until", "message")
        }
        try:
            await answer_request(self.config, admin, int(request_id), fields)
        except (GrantInputError, requests_store.RequestError) as exc:
            self.set_status(400)
            await self._page(error=f"request {int(request_id)}: {exc}")
            return
        self.redirect(self.settings.get("quota_prefix", "/") + "admin/requests", status=303)

    async def _page(self, error: str | None) -> None:
        policy = self.config.policy()
        now = self.config.now()
        async with self.config.engine.connect() as conn:
            pending = await requests_store.listed(conn, ["pending"])
            decided = await requests_store.listed(conn, ["approved", "declined"], limit=50)
            history = {}
            groups = {}
            for username in {r.username for r in pending}:
                history[username] = await requests_store.of_user(conn, username)
                groups[username] = await reads.groups_of(conn, username)
            events = await requests_store.events(conn, [r.id for r in pending + decided])
        usage = {}
        for username in groups:
            usage[username] = await user_status(
                self.config.engine, policy, username, groups[username], now
            )
        self.render_page(
            "admin_requests.html", section="requests", pending=pending, decided=decided,
            history=history, groups=groups, usage=usage, events=events, error=error,
        )  # fmt: skip


def bad_request(exc: Exception) -> web.HTTPError:
    return web.HTTPError(400, "%s", str(exc))
