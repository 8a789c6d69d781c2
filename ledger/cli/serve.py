"""``quota-ledger serve``: run the quota web service (a JupyterHub service, Hub OAuth).

Hub-managed, the hub starts it with ``JUPYTERHUB_*`` variables (API token, client id,
service prefix and URL); run externally, set them yourself (docs/web.md). The port and
address default to ``JUPYTERHUB_SERVICE_URL`` when the hub provides it.

SIGINT and SIGTERM stop it at once: the hub sends SIGINT at shutdown, then SIGTERM and
SIGKILL after a timeout each, to a service that ignores it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from urllib.parse import urlsplit

from ledger.cli.common import (
    CONFIG_ENV,
    CommandError,
    add_at,
    at_of,
    database_url,
    engine_of,
    policy_source,
)

log = logging.getLogger("ledger.web")

DEFAULT_PORT = 8080
CLOSE_TIMEOUT_SECONDS = 3.0

MAX_BODY_BYTES = 256 * 1024  # a request's form or JSON body, at most


def add_parser(subparsers, common) -> list[str]:
    p = subparsers.add_parser(
        "serve",
        parents=[common],
        help="run the quota web service (JupyterHub service with Hub OAuth)",
    )
    p.add_argument(
        "--port",
        type=int,
        default=None,
        help=f"port (default: from $JUPYTERHUB_SERVICE_URL, else {DEFAULT_PORT})",
    )
    p.add_argument(
        "--ip",
        default=None,
        help="address to listen on (default: from $JUPYTERHUB_SERVICE_URL, else all)",
    )
    p.add_argument(
        "--admin-scope",
        action="append",
        default=None,
        metavar="SCOPE",
        help="a hub scope that makes a user an admin of this service; repeat for several "
        "(default: custom:quota:admin and admin:users)",
    )
    p.add_argument(
        "--typical-cpu", default="2", metavar="Q", help="CPU of the 'typical server' (default 2)"
    )
    p.add_argument(
        "--typical-memory",
        default="4Gi",
        metavar="Q",
        help="memory of the 'typical server' the page says when it can start again (default 4Gi)",
    )
    p.add_argument("--typical-gpu", default="0", metavar="N", help="GPUs of the typical server")
    p.add_argument(
        "--report-cache-seconds",
        type=float,
        default=30.0,
        help="how long the admins' report is reused between pages (default 30)",
    )
    add_at(p)  # freezes the service's clock: reproducible screenshots and tests
    p.set_defaults(run=run)
    return ["serve"]


def _typical_request(args):
    from ledger.core.decision import ServerRequest
    from ledger.core.quantities import QuantityError

    quantities = {name: getattr(args, f"typical_{name}") for name in ("cpu", "memory", "gpu")}
    try:
        request = ServerRequest.from_quantities(quantities, where="--typical-{name}")
    except QuantityError as exc:
        raise CommandError(str(exc)) from None
    return ServerRequest({k: v for k, v in request.amounts.items() if v})


def _listen_address(args) -> tuple[str, int]:
    service_url = os.environ.get("JUPYTERHUB_SERVICE_URL", "")
    parsed = urlsplit(service_url) if service_url else None
    ip = args.ip if args.ip is not None else (parsed.hostname if parsed and parsed.hostname else "")
    port = args.port or (parsed.port if parsed and parsed.port else DEFAULT_PORT)
    return ip, port


def _policy_source(args):
    from ledger.store.policy_file import policy_path

    if not policy_path(getattr(args, "config", None)):
        log.warning(
            "no quota policy (--config or $%s): every resource shows as unlimited", CONFIG_ENV
        )
    return policy_source(args, required=False, watch=True)


def _check_hub_environment() -> None:
    missing = [v for v in ("JUPYTERHUB_API_TOKEN", "JUPYTERHUB_CLIENT_ID") if not os.environ.get(v)]
    if missing:
        raise CommandError(
            f"{' and '.join('$' + v for v in missing)} not set: run this as a JupyterHub "
            "service (c.JupyterHub.services, see docs/web.md), or set the JUPYTERHUB_* "
            "variables for an external service"
        )


def _stopping(stop: asyncio.Event, sig: signal.Signals) -> None:
    # Which signal: a hub stops its services with SIGINT first, then SIGTERM after
    # Spawner.interrupt_timeout (jupyterhub/spawner.py, LocalProcessSpawner.stop).
    log.info("quota web service stopping on %s", sig.name)
    stop.set()


async def run(args) -> int:
    from ledger.store.availability import LedgerAvailability
    from ledger.web.app import make_app, service_prefix
    from ledger.web.config import DEFAULT_ADMIN_SCOPES, WebConfig

    database_url(args)  # no URL: fail now; a service never starts the embedded server
    _check_hub_environment()
    policy = _policy_source(args)
    frozen_at = at_of(args) if getattr(args, "at", None) else None
    ip, port = _listen_address(args)
    # No schema check before listening: a database that is down at hub start must not make
    # this hub-managed service exit (the hub stops when one does). The availability monitor
    # retries with backoff; /healthz says "ledger unavailable" and pages answer 503 meanwhile.
    async with engine_of(args, check_schema=False) as engine:
        availability = LedgerAvailability(engine)
        config = WebConfig(
            engine=engine,
            policy=policy,
            admin_scopes=tuple(args.admin_scope or DEFAULT_ADMIN_SCOPES),
            typical_request=_typical_request(args),
            frozen_at=frozen_at,
            report_ttl_seconds=args.report_cache_seconds,
            hub_url=(os.environ.get("JUPYTERHUB_BASE_URL") or "/").rstrip("/") + "/hub/",
        )
        app = make_app(config)
        app.settings["quota_availability"] = availability
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, _stopping, stop, sig)
        # tornado reads a whole body (100 MiB by default) before any handler can refuse it,
        # so anyone who reaches the service could fill its memory; its forms and JSON are
        # small (https://www.tornadoweb.org/en/stable/httpserver.html, max_body_size)
        server = app.listen(port, address=ip, xheaders=True, max_body_size=MAX_BODY_BYTES)
        log.info(
            "quota web service on http://%s:%d%s (admin scopes: %s)",
            ip or "*", port, service_prefix(), ", ".join(config.admin_scopes),
        )  # fmt: skip
        monitor = asyncio.ensure_future(_watch_ledger(availability, app, stop))
        try:
            await stop.wait()
        finally:
            monitor.cancel()
            server.stop()
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT_SECONDS):
                    await server.close_all_connections()
            except TimeoutError:
                pass
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        log.info("quota web service stopped")
    return 0


async def _watch_ledger(availability, app, stop: asyncio.Event) -> None:
    if await availability.wait(stop):
        app.settings["quota_report_cache"].warm()  # the first admin need not wait for it
    await availability.monitor(stop)
