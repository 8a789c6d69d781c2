"""JSON API ``/api/v1/...`` (docs/openapi.yaml). Same identity and admin rules as the pages.

- ``GET /api/v1/me``: the caller's quota and usage.
- ``GET /api/v1/users/{name}``: admins (anyone for their own name); others get 403, with
  no hint whether the user exists.
- ``GET /api/v1/report``: admins; ``?page=&per_page=&group=&sort=&order=&q=``.
"""

from __future__ import annotations

from tornado import web

from ledger.core.times import iso
from ledger.core.usernames import UsernameError, check_username
from ledger.store import page_reads as reads
from ledger.store.report import add_times
from ledger.web.auth import ApiHandler
from ledger.web.report_view import Query, ReportCache, paginate, select
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
