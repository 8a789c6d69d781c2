"""Prometheus metrics and the /healthz, /readyz, /metrics HTTP server.

Labels stay low-cardinality: event type, skip reason, end reason — never pod or user names.
Each `Collector` has its own registry so several can run in one process (tests, the demo).
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events = Counter(
            "quota_ledger_collector_events", "Watch and list events handled", ["type"], registry=r
        )
        self.write_latency = Histogram(
            "quota_ledger_collector_write_latency_seconds",
            "Time to write one batch to PostgreSQL",
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.writes = Counter(
            "quota_ledger_collector_writes", "Ledger write operations applied", registry=r
        )
        self.buffer_depth = Gauge(
            "quota_ledger_collector_buffer_depth", "Writes waiting for the database", registry=r
        )
        self.reconnects = Counter(
            "quota_ledger_collector_reconnects", "Watch streams re-established", registry=r
        )
        self.relists = Counter(
            "quota_ledger_collector_relists",
            "Full lists (start, 410, periodic)",
            ["cause"],
            registry=r,
        )
        self.skipped = Counter(
            "quota_ledger_collector_pods_skipped",
            "Pod events that could not be charged",
            ["reason"],
            registry=r,
        )
        self.opened = Counter(
            "quota_ledger_collector_segments_opened",
            "Segments opened (incl. after resize)",
            registry=r,
        )
        self.closed = Counter(
            "quota_ledger_collector_segments_closed", "Segments closed", ["reason"], registry=r
        )
        self.oom_kills = Counter(
            "quota_ledger_collector_oom_kills", "OOM kills recorded", registry=r
        )
        self.live_pods = Gauge(
            "quota_ledger_collector_live_pods", "Pods with an open segment", registry=r
        )
        self.database_up = Gauge(
            "quota_ledger_collector_database_up", "1 if the last database write worked", registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


async def start_http_server(
    metrics: Metrics, ready: Callable[[], tuple[bool, str]], host: str, port: int
) -> tuple[web.AppRunner, int]:
    """Serve /healthz (the loop is alive), /readyz (listed and DB reachable), /metrics."""

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(request: web.Request) -> web.Response:
        ok, why = ready()
        return web.Response(text=why + "\n", status=200 if ok else 503)

    async def metrics_page(request: web.Request) -> web.Response:
        response = web.Response(body=metrics.render())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_page)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # port 0 → the one the OS picked
    return runner, bound
