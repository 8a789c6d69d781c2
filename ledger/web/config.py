"""What the web service is configured with. Built by ``ledger.cli.serve`` (or tests)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.core.decision import ServerRequest
from ledger.core.resources import GIB
from ledger.core.times import utcnow

# Scopes that make a user an admin of this service (any one is enough). ``admin-ui`` is what
# hub admins hold (and it grants nothing but the hub's admin page itself), ``admin:users``
# too; ``custom:quota:admin`` is the least-privilege grant for others: define it in
# c.JupyterHub.custom_scopes and grant it with a role (ledger.hub.services, docs/web.md).
# https://jupyterhub.readthedocs.io/en/stable/rbac/scopes.html#custom-scopes
DEFAULT_ADMIN_SCOPES = ("custom:quota:admin", "admin-ui", "admin:users")

# The server size "when can I start again" is answered for: 2 CPUs / 4 GiB by default.
DEFAULT_TYPICAL_REQUEST = ServerRequest({"cpu": 2000, "memory": 4 * GIB})


@dataclass
class WebConfig:
    engine: AsyncEngine
    policy: Callable[[], object]  # returns the current Policy (a PolicyWatcher's .current)
    admin_scopes: tuple[str, ...] = DEFAULT_ADMIN_SCOPES
    typical_request: ServerRequest = DEFAULT_TYPICAL_REQUEST
    frozen_at: datetime | None = None  # --at: every page evaluated at this time
    report_ttl_seconds: float = 30.0  # the admins' report is one aggregate over all users
    per_page: int = 50
    recent_sessions: int = 20
    hub_url: str = "/hub/"  # for "back to the hub" links
    extra: dict = field(default_factory=dict)

    def now(self) -> datetime:
        return self.frozen_at or utcnow()
