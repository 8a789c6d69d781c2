"""Hub configuration for running the quota page as a hub-managed service (demo, tests).

In ``jupyterhub_config.py``::

    from quota_ledger_demo.web import apply
    apply(c, db_url, "policy.yaml", port=10101, admin_users=["admin"])

The hub then starts ``quota-ledger serve``, lists "quota" in its Services menu, and every
user can open ``/services/quota/`` after logging in. docs/web.md explains each line.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable

ADMIN_SCOPE = "custom:quota:admin"


def service_config(
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
) -> dict:
    """``{"service": ..., "roles": [...], "custom_scopes": {...}}`` for a hub-managed service.

    The database URL reaches the service through its environment, not its command line
    (command lines are visible to every local user in ``ps``).
    """
    command = [python, "-m", "ledger", "serve", "--ip", "127.0.0.1", "--port", str(port)]
    command += ["--log-level", log_level]
    if at:
        command += ["--at", at]
    service = {
        "name": name,
        "url": f"http://127.0.0.1:{port}",
        "command": command,
        "environment": {
            "QUOTA_LEDGER_DB_URL": db_url,
            "QUOTA_LEDGER_CONFIG": os.fspath(policy_path),
        },
        "display": True,  # listed in the hub's Services menu for users who may access it
        "info": {"description": "Your compute quota and usage"},
        # Tokens issued to this service carry the admin scope when the user holds it:
        # that is how the service tells admins apart (nothing else is requested).
        "oauth_client_allowed_scopes": [ADMIN_SCOPE],
        "oauth_no_confirm": True,  # operated by the hub admins: no "authorize" page
    }
    roles = [
        # Overrides the default 'user' role: keep 'self', add access to the quota page.
        {"name": "user", "scopes": ["self", f"access:services!service={name}"]},
        {
            "name": "quota-admin",
            "description": "see everyone's quota usage on the quota page",
            "scopes": [ADMIN_SCOPE, f"access:services!service={name}"],
            "users": list(admin_users),
            "groups": list(admin_groups),
        },
    ]
    custom_scopes = {
        ADMIN_SCOPE: {"description": "Read every user's quota usage (quota page admin)."}
    }
    return {"service": service, "roles": roles, "custom_scopes": custom_scopes}


def apply(c, db_url: str, policy_path, port: int = 10101, **kwargs) -> dict:
    """Add the service, its roles and scope to a hub config object ``c``. Returns them."""
    config = service_config(db_url, policy_path, port, **kwargs)
    hub = c.JupyterHub

    def existing(key: str, default):
        return hub[key] if key in hub else default  # unset traitlets config is not a list

    hub.services = [*existing("services", []), config["service"]]
    hub.load_roles = [*existing("load_roles", []), *config["roles"]]
    hub.custom_scopes = {**existing("custom_scopes", {}), **config["custom_scopes"]}
    return config
