"""``install_quota_services(c)``: the quota page and the enforcer as hub-managed services.

Appends to whatever ``c.JupyterHub.services``, ``load_roles`` and ``custom_scopes`` already
hold (assigning a list in two places of one ``jupyterhub_config.py`` silently keeps only
the second), and merges into a role of the same name instead of defining it twice (the
default ``user`` role is redefined to add access to the quota page: its ``self`` stays).

Who is a quota admin: holders of ``custom:quota:admin`` (granted by the ``quota-admin``
role to ``admin_users`` / ``admin_groups``) and, unless ``hub_admins=False``, the hub's
admins. For those the service's OAuth client may also carry ``admin-ui``, a scope only the
admin role holds that grants nothing but the hub's admin page itself
(https://jupyterhub.readthedocs.io/en/stable/rbac/scopes.html#available-scopes), so an
admin's browser token for the quota page cannot administer the hub.

``jupyterlab=True`` also lets single-user servers call the quota service with their own
token (the JupyterLab extension, docs/jupyterlab.md): ``$JUPYTERHUB_API_TOKEN`` carries the
scopes of JupyterHub's ``server`` role, and a ``load_roles`` entry of that name *replaces*
its scopes (JupyterHub merges the entry over the default role key by key,
https://jupyterhub.readthedocs.io/en/stable/rbac/roles.html#default-roles). So the scope is
added to the operator's own ``server`` entry when there is one, and otherwise to the default
role's scopes as this JupyterHub defines them, which are kept.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable

ADMIN_SCOPE = "custom:quota:admin"
HUB_ADMIN_SCOPE = "admin-ui"
DB_URL_ENV = "QUOTA_LEDGER_DB_URL"
CONFIG_ENV = "QUOTA_LEDGER_CONFIG"
# least privilege for stopping servers: https://jupyterhub.readthedocs.io/en/stable/rbac/scopes.html
ENFORCER_SCOPES = ["list:users", "read:users:groups", "read:servers", "delete:servers"]


def _existing(hub, key: str, default):
    return hub[key] if key in hub else default  # unset traitlets config is not a list


def _default_scopes(role_name: str) -> list[str]:
    """The scopes JupyterHub gives one of its default roles (``server``: posting activity
    and access to its own server), read from the running JupyterHub, not copied here."""
    from jupyterhub.roles import get_default_roles

    (role,) = [r for r in get_default_roles() if r["name"] == role_name]
    return list(role["scopes"])


def _merge_role(roles: list[dict], role: dict) -> None:
    for existing in roles:
        if existing.get("name") == role["name"]:
            for key in ("scopes", "users", "groups", "services"):
                if role.get(key):
                    merged = list(existing.get(key) or [])
                    merged += [v for v in role[key] if v not in merged]
                    existing[key] = merged
            return
    roles.append(role)


def install_quota_services(
    c,
    *,
    db_url: str | None = None,
    policy_path: str | os.PathLike | None = None,
    web: bool = True,
    enforcer: bool = True,
    name: str = "quota",
    enforcer_name: str = "quota-enforcer",
    ip: str = "127.0.0.1",
    port: int = 10101,
    hub_admins: bool = True,
    admin_users: Iterable[str] = (),
    admin_groups: Iterable[str] = (),
    serve_args: Iterable[str] = (),
    enforce_args: Iterable[str] = (),
    command: Iterable[str] | None = None,
    jupyterlab: bool = False,
) -> dict:
    """Add the quota web service, the enforcer and their roles to hub config ``c``.

    ``db_url`` / ``policy_path`` default to ``$QUOTA_LEDGER_DB_URL`` / ``$QUOTA_LEDGER_CONFIG``
    of the hub and reach the services through their environment (never their command line,
    which every local user sees in ``ps``). ``command`` runs quota-ledger (default: this
    Python with ``-m ledger``). ``jupyterlab``: the ``server`` role also gets
    ``access:services!service=<name>``, for the JupyterLab extension (module docstring).
    Returns what was added.
    """
    db_url = db_url or os.environ.get(DB_URL_ENV)
    policy_path = policy_path or os.environ.get(CONFIG_ENV)
    if not db_url:
        raise ValueError(f"install_quota_services: no database; pass db_url= or set ${DB_URL_ENV}")
    if not policy_path:
        raise ValueError(
            f"install_quota_services: no quota policy; pass policy_path= or set ${CONFIG_ENV}"
        )
    if jupyterlab and not web:
        raise ValueError(
            "install_quota_services: jupyterlab=True grants access to the quota web service, "
            "which web=False leaves out; pass both in the call that adds the service"
        )
    base = list(command) if command is not None else [sys.executable, "-m", "ledger"]
    environment = {DB_URL_ENV: db_url, CONFIG_ENV: os.fspath(policy_path)}
    hub = c.JupyterHub
    # a second call (docs/hub.md's plain one, then docs/web.md's with options, pasted into one
    # config) replaces the services it added instead of declaring them twice
    replaced = {name if web else None, enforcer_name if enforcer else None}
    services = [s for s in _existing(hub, "services", []) if s.get("name") not in replaced]
    roles = [dict(r) for r in _existing(hub, "load_roles", [])]
    added: dict = {"services": [], "roles": []}
    if web:
        admin_scopes = [ADMIN_SCOPE] + ([HUB_ADMIN_SCOPE] if hub_admins else [])
        serve = [*base, "serve", "--ip", ip, "--port", str(port)]
        for scope in admin_scopes:
            serve += ["--admin-scope", scope]
        service = {
            "name": name,
            "url": f"http://{ip}:{port}",
            "command": [*serve, *serve_args],
            "environment": dict(environment),
            "display": True,  # listed in the hub's Services menu
            "info": {"description": "Your compute quota and usage"},
            # a token for this service carries these scopes when its user holds them:
            # that is how the service tells quota admins apart (nothing else is asked for)
            "oauth_client_allowed_scopes": admin_scopes,
            "oauth_no_confirm": True,  # run by the hub's admins: no "authorize" page
        }
        services.append(service)
        new_roles = [
            {"name": "user", "scopes": ["self", f"access:services!service={name}"]},
            {
                "name": "quota-admin",
                "description": "See everyone's quota usage on the quota page",
                "scopes": [ADMIN_SCOPE, f"access:services!service={name}"],
                "users": list(admin_users),
                "groups": list(admin_groups),
            },
        ]
        if jupyterlab:
            server = next((r for r in roles if r.get("name") == "server"), None)
            if server is not None and "scopes" not in server:
                server["scopes"] = _default_scopes("server")  # the entry keeps the defaults
            scopes = [] if server is not None else _default_scopes("server")
            new_roles.append(
                {"name": "server", "scopes": [*scopes, f"access:services!service={name}"]}
            )
        for role in new_roles:
            _merge_role(roles, role)
        hub.custom_scopes = {
            **_existing(hub, "custom_scopes", {}),
            ADMIN_SCOPE: {"description": "Read every user's quota usage (quota page admin)."},
        }
        added["services"].append(service)
        added["roles"] += new_roles
    if enforcer:
        service = {
            "name": enforcer_name,
            "command": [*base, "enforce", *enforce_args],
            "environment": dict(environment),
        }
        services.append(service)
        role = {"name": enforcer_name, "scopes": list(ENFORCER_SCOPES),
                "services": [enforcer_name]}  # fmt: skip
        _merge_role(roles, role)
        added["services"].append(service)
        added["roles"].append(role)
    hub.services = services
    hub.load_roles = roles
    return added
