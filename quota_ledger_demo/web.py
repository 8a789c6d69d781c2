"""The quota page as a hub-managed service for the demo and the tests.

In ``jupyterhub_config.py``::

    from quota_ledger_demo.web import apply
    apply(c, db_url, "policy.yaml", port=10101, admin_users=["admin"])

A thin layer over the product's ``ledger.hub.install_quota_services`` (what docs/web.md tells
operators to use) that adds the demo's knobs: a frozen clock (``--at``) and the log level.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable

from ledger.hub.services import ADMIN_SCOPE, install_quota_services

__all__ = ["ADMIN_SCOPE", "apply"]


def apply(
    c,
    db_url: str,
    policy_path: str | os.PathLike,
    port: int = 10101,
    *,
    name: str = "quota",
    admin_users: Iterable[str] = (),
    admin_groups: Iterable[str] = (),
    at: str | None = None,
    python: str = sys.executable,
    log_level: str = "info",
    hub_admins: bool = True,
) -> dict:
    """Add the quota web service, its roles and scope to hub config ``c``. Returns them."""
    serve_args = ["--log-level", log_level] + (["--at", at] if at else [])
    added = install_quota_services(
        c, db_url=db_url, policy_path=policy_path, enforcer=False, name=name, port=port,
        admin_users=admin_users, admin_groups=admin_groups, serve_args=serve_args,
        command=[python, "-m", "ledger"], hub_admins=hub_admins,
    )  # fmt: skip
    return {"service": added["services"][0], "roles": added["roles"],
            "custom_scopes": {ADMIN_SCOPE: c.JupyterHub.custom_scopes[ADMIN_SCOPE]}}  # fmt: skip
