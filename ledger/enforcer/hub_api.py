"""The few JupyterHub REST API calls the enforcer makes (httpx), with least privilege.

Scopes needed: ``list:users`` and ``read:users:groups`` (who, in which groups),
``read:servers`` (their running servers), ``delete:servers`` (stop one).
https://jupyterhub.readthedocs.io/en/stable/reference/rest-api.html
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import quote

import httpx

from ledger.core.enforcement_plan import HubServer, HubUser

# Ask for the paginated shape: {"items": [...], "_pagination": {"next": {...} | null}}
# https://jupyterhub.readthedocs.io/en/stable/reference/rest-api.html#pagination
PAGINATION_ACCEPT = "application/jupyterhub-pagination+json"
PAGE_LIMIT = 200


class HubError(RuntimeError):
    """The hub could not be reached or answered with an error."""


def parse_user(model: dict) -> HubUser:
    servers = {}
    for name, server in (model.get("servers") or {}).items():
        if server.get("stopped"):
            continue
        servers[name] = HubServer(name, bool(server.get("ready")), server.get("pending"))
    return HubUser(model["name"], sorted(model.get("groups") or []), servers)


class HubClient:
    def __init__(self, api_url: str, token: str, *, timeout_seconds: float = 10.0, transport=None):
        self.api_url = api_url.rstrip("/") + "/"
        self._client = httpx.AsyncClient(
            base_url=self.api_url,
            headers={"Authorization": f"token {token}"},
            timeout=timeout_seconds,
            transport=transport,
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def _request(self, method: str, path: str, **kwargs) -> httpx.Response:
        try:
            return await self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise HubError(f"{method} {self.api_url}{path}: {type(exc).__name__}: {exc}") from exc

    async def active_users(self) -> AsyncIterator[HubUser]:
        """Users with at least one running or pending server, page by page."""
        offset = 0
        while True:
            response = await self._request(
                "GET",
                "users",
                params={"state": "active", "offset": offset, "limit": PAGE_LIMIT,
                        "include_stopped_servers": "false"},
                headers={"Accept": PAGINATION_ACCEPT},
            )  # fmt: skip
            if response.status_code != 200:
                raise HubError(f"GET users: HTTP {response.status_code}: {response.text[:200]}")
            body = response.json()
            items = body["items"] if isinstance(body, dict) else body
            for model in items:
                yield parse_user(model)
            following = body.get("_pagination", {}).get("next") if isinstance(body, dict) else None
            if not following or not items:
                return
            offset = int(following["offset"])

    async def stop_server(self, username: str, servername: str) -> str:
        """Ask the hub to stop a server: "stopped" (204), "stopping" (202) or "gone" (404).

        Any other answer raises HubError with the hub's message: the stop failed and is tried
        again next round. The hub answers 204 for a server that is no longer running, so a 400
        is never "gone" but a refusal ("Cannot stop a server while it is being renamed",
        "Named servers are not enabled."); see ``UserServerAPIHandler.delete`` in
        https://github.com/jupyterhub/jupyterhub/blob/main/jupyterhub/apihandlers/users.py
        """
        user = quote(username, safe="")
        path = f"users/{user}/server" if not servername else (
            f"users/{user}/servers/{quote(servername, safe='')}"
        )  # fmt: skip
        response = await self._request("DELETE", path)
        if response.status_code == 204:
            return "stopped"
        if response.status_code == 202:
            return "stopping"
        if response.status_code == 404:  # no such user or server: nothing left to stop
            return "gone"
        raise HubError(f"DELETE {path}: HTTP {response.status_code}: {_hub_message(response)}")


def _hub_message(response: httpx.Response) -> str:
    """The hub's error message: its API answers errors as JSON ``{"status", "message"}``."""
    try:
        message = response.json().get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message) if message else response.text[:200]
