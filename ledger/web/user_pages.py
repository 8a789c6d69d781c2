"""The user's own quota page, and the same page for any user when an admin asks."""

from __future__ import annotations

from tornado import web

from ledger.core.usernames import UsernameError, check_username
from ledger.store import page_reads as reads
from ledger.web.auth import QuotaHandler
from ledger.web.user_view import MEMORY_HINT, build_user_view


class UserPageHandler(QuotaHandler):
    """``/``: the logged-in user's page. The username comes only from the hub's identify
    model, never from the request, so nobody can ask for someone else here."""

    async def get(self) -> None:
        viewer = self.require_viewer()
        view = await build_user_view(self.config, viewer.name, viewer.groups)
        self.render_page(
            "user.html", view=view, subject=viewer.name, own=True, memory_hint=MEMORY_HINT
        )


class AdminUserPageHandler(QuotaHandler):
    """``/admin/users/<name>``: an admin looks at one user's page (groups as last recorded)."""

    async def get(self, username: str) -> None:
        self.require_admin()
        try:
            check_username(username)
        except UsernameError:
            raise web.HTTPError(404, "no such user") from None
        async with self.config.engine.connect() as conn:
            groups = await reads.groups_of(conn, username)
        view = await build_user_view(self.config, username, groups)
        self.render_page(
            "user.html", view=view, subject=username, own=False, memory_hint=MEMORY_HINT,
            section="user",  # not "My usage": this is someone else's page
        )  # fmt: skip
