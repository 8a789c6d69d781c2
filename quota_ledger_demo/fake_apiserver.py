"""A protocol-faithful fake Kubernetes API server for pods (aiohttp), for tests and the demo.

The real `kubernetes_asyncio` client talks to it unchanged. Wire behaviour follows
https://kubernetes.io/docs/reference/using-api/api-concepts/ — list with resourceVersion and
limit/continue, watch with resourceVersion, bookmarks, timeoutSeconds and 410 Expired —
plus fault injection (compaction, dropped streams, unreachability, latency) driven from Python.

Run standalone (the demo does): ``python -m quota_ledger_demo.fake_apiserver --port 8001
--kubeconfig-out /tmp/kubeconfig``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from aiohttp import web

from quota_ledger_demo.fake_pods_api import (
    CLOSE,
    DROP,
    as_bool,
    error_response,
    list_pods,
    watch_pods,
    with_kind,
)
from quota_ledger_demo.fake_store import (
    Pod,
    PodChange,
    PodStore,
    SelectorError,
    parse_field_selector,
    parse_label_selector,
)


class _RejectingProtocol(asyncio.Protocol):
    """Accepts a TCP connection and resets it at once: the 'unreachable' network fault."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.abort()  # type: ignore[attr-defined]


class FakeApiServer:
    """Pods API + store + fault injection. Use `async with FakeApiServer() as server:` or
    `url = await server.start()` / `await server.stop()`."""

    def __init__(
        self,
        *,
        history_limit: int = 1000,
        bookmark_interval_seconds: float = 1.0,
        default_watch_timeout_seconds: float = 1800.0,
    ) -> None:
        self.store = PodStore(history_limit=history_limit)
        self.bookmark_interval_seconds = bookmark_interval_seconds
        # The real server picks a random timeout in [1800, 3600) s when the client sets none.
        self.default_watch_timeout_seconds = default_watch_timeout_seconds
        self.list_requests = 0
        self.watch_requests = 0
        self.get_requests = 0
        self.url = ""
        self._delay_seconds = 0.0
        self.drop_after_events_count: int | None = None
        self.watch_seconds_cap: float | None = None  # end_watches_after()
        self._unreachable_until: float | None = None  # time.monotonic() deadline
        self._unreachable_mode = "reset"
        self.streams: set[asyncio.Queue] = set()
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.AbstractServer | None = None

    # --- store API (synchronous; every change bumps the resourceVersion) -------------------

    def create_pod(self, pod: Pod) -> Pod:
        return self.store.create_pod(pod)

    def update_pod(self, namespace: str, name: str, change: PodChange) -> Pod:
        return self.store.update_pod(namespace, name, change)

    def delete_pod(
        self,
        namespace: str,
        name: str,
        *,
        grace: bool = False,
        grace_period_seconds: int = 30,
        at: datetime | None = None,
    ) -> Pod:
        return self.store.delete_pod(
            namespace, name, grace=grace, grace_period_seconds=grace_period_seconds, at=at
        )

    def pods(self) -> list[Pod]:
        return self.store.pods()

    @property
    def resource_version(self) -> str:
        return str(self.store.resource_version)

    @property
    def open_watch_streams(self) -> int:
        return len(self.streams)

    # --- fault injection -------------------------------------------------------------------

    def compact(self, keep_events: int = 0) -> None:
        """Drop history: watches from older resourceVersions get 410 Expired."""
        self.store.compact(keep_events)

    def drop_streams(self) -> None:
        """Abort every open watch connection mid-stream (TCP reset, no chunked terminator)."""
        for queue in list(self.streams):
            queue.put_nowait(DROP)

    def drop_after_events(self, count: int | None) -> None:
        """Cut each watch stream (abort) after it sent `count` events; None turns this off.
        Counts ADDED/MODIFIED/DELETED (replayed and synthetic ones too), not BOOKMARKs."""
        self.drop_after_events_count = count

    def end_watches_after(self, seconds: float | None) -> None:
        """End every watch cleanly after at most `seconds`, whatever timeoutSeconds asked (a
        proxy or load balancer closing long requests); None turns this off."""
        self.watch_seconds_cap = seconds

    def set_unreachable(self, seconds: float | None, *, mode: str = "reset") -> None:
        """Be unreachable for `seconds` (math.inf = until cleared; None = reachable now).
        mode "reset": new TCP connections are accepted and reset at once (the client sees
        ServerDisconnectedError / ClientOSError); mode "503": requests get 503
        ServiceUnavailable. Open watch streams are dropped either way."""
        if seconds is None:
            self._unreachable_until = None
            return
        if mode not in {"reset", "503"}:
            raise ValueError('mode must be "reset" or "503"')
        self._unreachable_mode = mode
        self._unreachable_until = time.monotonic() + seconds
        self.drop_streams()
        if mode == "reset" and self._runner is not None and self._runner.server is not None:
            # Kill idle keep-alive connections too, or pooled clients would not notice.
            for connection in self._runner.server.connections:
                if connection.transport is not None:
                    connection.transport.abort()

    def set_delay(self, seconds: float) -> None:
        """Delay every response (before headers) by `seconds`."""
        self._delay_seconds = seconds

    def _unreachable(self, mode: str) -> bool:
        until = self._unreachable_until
        return until is not None and time.monotonic() < until and self._unreachable_mode == mode

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        app = web.Application(middlewares=[self._faults_middleware])
        for suffix in ("", "/"):  # the client asks for both "/api/v1" and "/api/v1/"
            app.router.add_get("/version" + suffix, self._version)
            app.router.add_get("/api" + suffix, self._api_versions)
            app.router.add_get("/api/v1" + suffix, self._api_resources)
            app.router.add_get("/apis" + suffix, self._api_groups)
        app.router.add_get("/api/v1/pods", self._pods)
        app.router.add_get("/api/v1/namespaces/{namespace}/pods", self._pods)
        app.router.add_get("/api/v1/namespaces/{namespace}/pods/{name}", self._pod)
        # handler_cancellation: a client that goes away ends its watch handler at once.
        self._runner = web.AppRunner(app, handle_signals=False, handler_cancellation=True)
        await self._runner.setup()
        handler = self._runner.server

        def protocol_factory() -> asyncio.Protocol:
            if self._unreachable("reset"):
                return _RejectingProtocol()
            return handler()  # type: ignore[misc]

        loop = asyncio.get_running_loop()
        self._listener = await loop.create_server(protocol_factory, host, port)
        bound_port = self._listener.sockets[0].getsockname()[1]
        self.url = f"http://{host}:{bound_port}"
        return self.url

    async def stop(self) -> None:
        for queue in list(self.streams):
            queue.put_nowait(CLOSE)
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeApiServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # --- HTTP handlers ---------------------------------------------------------------------

    @web.middleware
    async def _faults_middleware(self, request: web.Request, handler: Callable) -> Any:
        if self._delay_seconds:
            await asyncio.sleep(self._delay_seconds)
        if self._unreachable("503"):
            return error_response(
                503, "ServiceUnavailable", "the server is currently unable to handle the request"
            )
        try:
            return await handler(request)
        except web.HTTPNotFound:
            return error_response(
                404, "NotFound", "the server could not find the requested resource"
            )
        except web.HTTPMethodNotAllowed:
            # Read-only fake: writes go through the Python store API.
            return error_response(405, "MethodNotAllowed", f"{request.method} is not supported")

    async def _version(self, request: web.Request) -> web.Response:
        # Every field is required by the client's VersionInfo model.
        return web.json_response(
            {
                "major": "1",
                "minor": "34",
                "gitVersion": "v1.34.0-fake",
                "gitCommit": "0" * 40,
                "gitTreeState": "clean",
                "buildDate": "2026-01-01T00:00:00Z",
                "goVersion": "go1.24.0",
                "compiler": "gc",
                "platform": "linux/amd64",
            }
        )

    async def _api_versions(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": request.host}
                ],
            }
        )

    async def _api_groups(self, request: web.Request) -> web.Response:
        return web.json_response({"kind": "APIGroupList", "apiVersion": "v1", "groups": []})

    async def _api_resources(self, request: web.Request) -> web.Response:
        pods = {
            "name": "pods",
            "singularName": "pod",
            "namespaced": True,
            "kind": "Pod",
            "verbs": ["get", "list", "watch"],
            "shortNames": ["po"],
        }
        return web.json_response(
            {"kind": "APIResourceList", "groupVersion": "v1", "resources": [pods]}
        )

    async def _pod(self, request: web.Request) -> web.Response:
        self.get_requests += 1
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        pod = self.store.get(namespace, name)
        if pod is None:
            return error_response(404, "NotFound", f'pods "{name}" not found')
        return web.json_response(with_kind(pod))

    async def _pods(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        namespace = request.match_info.get("namespace")
        try:
            label_match = parse_label_selector(query.get("labelSelector"))
            field_match = parse_field_selector(query.get("fieldSelector"))
        except SelectorError as exc:
            return error_response(400, "BadRequest", str(exc))

        def matches(pod: Pod | None) -> bool:
            if pod is None or (namespace and pod["metadata"]["namespace"] != namespace):
                return False
            return label_match(pod) and field_match(pod)

        if as_bool(query.get("watch")):
            self.watch_requests += 1
            return await watch_pods(self, request, matches)
        self.list_requests += 1
        return list_pods(self.store, query, matches)


def write_kubeconfig(path: str, url: str, *, namespace: str = "default") -> None:
    """A kubeconfig for plain http without auth (JSON is valid YAML)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": url}}],
        "users": [{"name": "fake", "user": {}}],
        "contexts": [
            {"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}
        ],
        "current-context": "fake",
        "preferences": {},
    }
    with open(path, "w", encoding="utf-8") as file:
        json.dump(config, file, indent=2)


async def _serve(args: argparse.Namespace) -> None:
    server = FakeApiServer(
        history_limit=args.history_limit, bookmark_interval_seconds=args.bookmark_interval_seconds
    )
    url = await server.start(args.host, args.port)
    if args.kubeconfig_out:
        write_kubeconfig(args.kubeconfig_out, url, namespace=args.namespace)
    print(f"fake Kubernetes API server on {url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    simulation = None
    if args.users:
        from quota_ledger_demo.simulated_hub import run_random_lifecycles

        users = [f"user{i}" for i in range(args.users)]
        simulation = asyncio.create_task(
            run_random_lifecycles(
                server,
                users,
                seed=args.seed,
                namespace=args.namespace,
                speed=args.speed,
                duration_seconds=args.duration_seconds,
                step_seconds=args.step_seconds,
            )
        )
        # Report the simulation's end (or crash) at once instead of at shutdown.
        simulation.add_done_callback(
            lambda task: (
                task.cancelled()
                or print(f"simulation ended: {task.exception() or task.result()}", flush=True)
            )
        )
    await stop.wait()
    if simulation is not None:
        simulation.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await simulation
    await server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--kubeconfig-out", help="write a kubeconfig pointing here")
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--history-limit", type=int, default=1000)
    parser.add_argument("--bookmark-interval-seconds", type=float, default=60.0)
    parser.add_argument("--users", type=int, default=0, help="simulate this many hub users")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--speed", type=float, default=1.0, help="simulated seconds per real second (inf: no pause)"
    )
    parser.add_argument(
        "--duration-seconds",
        type=float,
        default=None,
        help="simulated time to run (default: forever)",
    )
    parser.add_argument("--step-seconds", type=float, default=60.0, help="how often users act")
    asyncio.run(_serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
