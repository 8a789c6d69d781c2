"""JSON API ``/api/v1/...`` (docs/openapi.yaml). Same identity and admin rules as the pages.

- ``GET /api/v1/me``: the caller's quota and usage.
- ``GET /api/v1/users/{name}``: admins (anyone for their own name); others get 403, with
  no hint whether the user exists.
- ``GET /api/v1/report``: admins; ``?page=&per_page=&group=&sort=&order=&q=``.
- ``GET /api/v1/requests``: the caller's quota requests (admins: ``?all=1&state=pending``);
  ``POST``: file one for the caller. ``POST /api/v1/requests/{id}/approve|decline``: admins.
  POSTs authenticated by the login cookie need the xsrf token (``X-XSRFToken``); a request
  with ``Authorization: token …`` does not (JupyterHub's rule, ledger/web/request_pages.py).
- ``GET /api/v1/me/summary``: the caller's compact summary (the hub's header and home page).
- ``GET /api/v1/me/choices?choice=NAME:cpu=2,memory=4Gi``: may the caller start each of
  these sizes, and for how long (the notes of the hub's server-options form).
- ``GET /api/v1/shared``: admins; every group pool and hub cap, and who holds each.
"""

from __future__ import annotations

import json

from tornado import web

from ledger.core.decision import ServerRequest
from ledger.core.grant_input import GrantInputError
from ledger.core.quantities import QuantityError
from ledger.core.times import iso
from ledger.core.usernames import UsernameError, check_username
from ledger.store import page_reads as reads
from ledger.store import quota_requests as requests_store
from ledger.store.report import add_times
from ledger.store.shared_reads import totals as shared_totals
from ledger.store.summary import user_choices, user_summary
from ledger.web.auth import ApiHandler
from ledger.web.report_view import Query, ReportCache, paginate, select
from ledger.web.request_pages import answer_request, file_request
from ledger.web.user_view import build_user_view


class MeApiHandler(ApiHandler):
    async def get(self) -> None:
        viewer = self.require_viewer()
        view = await build_user_view(self.config, viewer.name, viewer.groups, with_charts=False)
        self.write_json(view.to_json())


class UserApiHandler(ApiHandler):
    async def get(self, username: str) -> None:
        viewer = self.require_viewer()
        if not viewer.is_admin and username != viewer.name:
            raise web.HTTPError(403, "only quota admins can read other users")
        try:
            check_username(username)
        except UsernameError:
            raise web.HTTPError(404, "no such user") from None
        if username == viewer.name:
            groups = viewer.groups
        else:
            async with self.config.engine.connect() as conn:
                groups = await reads.groups_of(conn, username)
        view = await build_user_view(self.config, username, groups, with_charts=False)
        self.write_json(view.to_json())


class ReportApiHandler(ApiHandler):
    def initialize(self, config, report_cache: ReportCache) -> None:
        super().initialize(config)
        self.report_cache = report_cache

    async def get(self) -> None:
        self.require_admin()
        query = Query.from_args(self.get_argument, self.config.per_page)
        snapshot = await self.report_cache.get(refresh=self.get_argument("refresh", "") == "1")
        page = paginate(select(snapshot, query), query)
        await add_times(self.config.engine, self.config.policy(), page.lines)
        self.write_json(
            {
                "at": iso(snapshot.at),
                "page": page.page,
                "pages": page.pages,
                "per_page": page.per_page,
                "total": page.total,
                "sort": query.sort,
                "order": "desc" if query.descending else "asc",
                "group": query.group or None,
                "users": [line.to_json() for line in page.lines],
            }
        )


class SharedApiHandler(ApiHandler):
    """Admins: every group pool's and the hub's figures, with who holds each cap."""

    async def get(self) -> None:
        self.require_admin()
        now = self.config.now()
        shared = await shared_totals(self.config.engine, self.config.policy(), now, who=True)
        self.write_json({"at": iso(now), "shared": shared.to_json(admin=True)})


class WriteApiHandler(ApiHandler):
    """A JSON route that accepts POST: the xsrf check runs once the hub has said how the
    request is authenticated (a token needs none; the login cookie needs the xsrf token)."""

    def check_xsrf_cookie(self) -> None:
        pass  # tornado calls this before prepare(), before the hub identified the request

    async def prepare(self) -> None:
        await super().prepare()
        if self.request.method not in ("GET", "HEAD", "OPTIONS"):
            _ = self.current_user  # identified (HubAuth marks token-authenticated requests)
            self.hub_auth.check_xsrf_cookie(self)

    def body(self) -> dict:
        try:
            value = json.loads(self.request.body or b"{}")
        except ValueError:
            raise web.HTTPError(400, "the body is not JSON") from None
        if not isinstance(value, dict):
            raise web.HTTPError(400, "the body must be a JSON object")
        for key, field in value.items():
            if field is not None and (
                isinstance(field, bool) or not isinstance(field, str | int | float)
            ):
                raise web.HTTPError(400, "%s: give a string (or a number), not %s", key,
                                    type(field).__name__)  # fmt: skip
        return {k: v if v is None or isinstance(v, str) else str(v) for k, v in value.items()}


class RequestsApiHandler(WriteApiHandler):
    async def get(self) -> None:
        viewer = self.require_viewer()
        async with self.config.engine.connect() as conn:
            if self.get_argument("all", "") == "1":
                self.require_admin()
                state = self.get_argument("state", "pending")
                if state not in requests_store.REQUEST_STATES:
                    raise web.HTTPError(400, "state: one of pending, approved, declined")
                found = await requests_store.listed(conn, [state])
            else:
                found = await requests_store.of_user(conn, viewer.name, limit=100)
        self.write_json({"requests": [r.to_json() for r in found]})

    async def post(self) -> None:
        viewer = self.require_viewer()
        try:
            made = await file_request(self.config, viewer, self.body())
        except GrantInputError as exc:
            raise web.HTTPError(400, "%s", str(exc)) from None
        self.set_status(201)
        self.write_json({"request": made.to_json()})


class AnswerApiHandler(WriteApiHandler):
    async def post(self, request_id: str, action: str) -> None:
        admin = self.require_admin()
        # isascii: str.isdigit() also takes "²", which int() refuses
        if not (request_id.isascii() and request_id.isdigit()) or action not in (
            "approve",
            "decline",
        ):
            raise web.HTTPError(404, "POST /api/v1/requests/<id>/approve or /decline")
        fields = {**self.body(), "action": action}
        try:
            request, grant = await answer_request(self.config, admin, int(request_id), fields)
        except (GrantInputError, requests_store.RequestError) as exc:
            raise web.HTTPError(400, "%s", str(exc)) from None
        at = self.config.now()
        self.write_json(
            {"request": request.to_json(), "grant": None if grant is None else grant.to_json(at)}
        )


class SummaryApiHandler(ApiHandler):
    async def get(self) -> None:
        viewer = self.require_viewer()
        policy = self.config.policy()
        summary = await user_summary(
            self.config.engine, policy, viewer.name, viewer.groups, self.config.now(),
            quota_url=self.settings.get("quota_prefix", "/"),
        )  # fmt: skip
        self.write_json(summary)


MAX_CHOICES = 30
CHOICE_SYNTAX = "choice=NAME:RESOURCE=QUANTITY,… (e.g. choice=large:cpu=4,memory=16Gi,gpu=1)"


def parse_choice(
    text: str, index: int, resources=("cpu", "memory", "gpu")
) -> tuple[str, ServerRequest]:
    """``"large:cpu=4,memory=16Gi"`` → ("large", request); errors name the choice, and
    ``resources`` are the names a size may use (the policy's)."""
    where = f"choice {index + 1} ({text[:60]!r})"
    name, sep, sizes = text.partition(":")
    if not sep or not name.strip():
        raise ValueError(f"{where}: expected {CHOICE_SYNTAX}")
    quantities = {}
    for part in filter(None, (p.strip() for p in sizes.split(","))):
        resource, eq, value = part.partition("=")
        if not eq or not resource.strip() or not value.strip():
            raise ValueError(f"{where}: {part!r} is not RESOURCE=QUANTITY; {CHOICE_SYNTAX}")
        if resource.strip() not in resources:
            raise ValueError(
                f"{where}: unknown resource {resource.strip()!r}; valid: {', '.join(resources)}"
            )
        quantities[resource.strip()] = value.strip()
    try:
        request = ServerRequest.from_quantities(quantities, where=f"{where}: {{name}}")
    except (QuantityError, KeyError, ValueError) as exc:
        raise ValueError(str(exc).strip("'\"")) from None
    return name.strip(), request


class ChoicesApiHandler(ApiHandler):
    async def get(self) -> None:
        viewer = self.require_viewer()
        texts = self.get_arguments("choice")
        if not texts:
            raise web.HTTPError(400, "no choice given; %s", CHOICE_SYNTAX)
        if len(texts) > MAX_CHOICES:
            raise web.HTTPError(400, "at most %d choices per request", MAX_CHOICES)
        try:
            names = tuple(self.config.policy().resource_names())
            parsed = [parse_choice(t, i, names) for i, t in enumerate(texts)]
        except ValueError as exc:
            raise web.HTTPError(400, "%s", str(exc)) from None
        notes = await user_choices(
            self.config.engine, self.config.policy(), viewer.name, viewer.groups,
            self.config.now(), [("choice", name, name, request) for name, request in parsed],
        )  # fmt: skip
        self.write_json(notes)
