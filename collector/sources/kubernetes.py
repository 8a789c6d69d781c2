"""The Kubernetes source: pods, listed and watched with kubernetes_asyncio (collector/watcher.py)
and parsed by collector/pods.py."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from datetime import datetime
from typing import Any

from collector.pods import Identity, parse_pod
from collector.settings import Settings
from collector.watcher import Handler, PodWatch, Scope
from ledger.core.accounting import Accounting


class KubernetesSource:
    """``api_client_factory()`` returns (or awaits to) a ``kubernetes_asyncio`` ApiClient,
    which this source closes."""

    name = "collector"  # the segments.source Kubernetes rows have always had

    def __init__(self, api_client_factory: Callable[[], Any]) -> None:
        self.api_client_factory = api_client_factory
        self.api_client: Any = None
        self.core_api: Any = None

    async def open(self) -> None:
        from kubernetes_asyncio import client

        api_client = self.api_client_factory()
        if inspect.isawaitable(api_client):
            api_client = await api_client
        self.api_client, self.core_api = api_client, client.CoreV1Api(api_client)

    async def close(self) -> None:
        if self.api_client is not None:
            await self.api_client.close()

    def make_watches(
        self, scopes: list[Scope], settings: Settings, handler: Handler, **callbacks
    ) -> list[PodWatch]:
        return [PodWatch(self.core_api, scope, settings, handler, **callbacks) for scope in scopes]

    def parse(
        self, kind: str, obj: Any, identity: Identity, accounting: Accounting, observed_at: datetime
    ):
        return parse_pod(
            obj, identity, accounting=accounting, deleted=kind == "DELETED", observed_at=observed_at
        )

    def uid_of(self, obj: Any) -> str:
        return (obj.get("metadata") or {}).get("uid") or ""
