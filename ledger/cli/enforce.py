"""``quota-ledger enforce``: run the enforcer, as a hub-managed service or beside the collector.

Reads ``JUPYTERHUB_API_TOKEN`` (and ``JUPYTERHUB_API_URL`` for ``--hub-url``), which the hub
sets for a managed service. Handles SIGTERM/SIGINT itself: the hub waits for its services to
exit on shutdown (https://github.com/jupyterhub/jupyterhub/issues/3735), so a round in
progress is finished and the next one is not started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal

from ledger.cli.common import CommandError, add_at, at_of, database_url, engine_of, policy_source

log = logging.getLogger("ledger.enforcer.enforcer")

TOKEN_ENV = "JUPYTERHUB_API_TOKEN"
HUB_URL_ENV = "JUPYTERHUB_API_URL"
HEALTH_PORT_ENV = "QUOTA_LEDGER_HEALTH_PORT"


def add_parser(subparsers, common) -> list[str]:
    p = subparsers.add_parser(
        "enforce",
        parents=[common],
        help="warn users whose running servers used up a budget, then stop them (Hub REST API)",
    )
    p.add_argument(
        "--hub-url",
        default=os.environ.get(HUB_URL_ENV),
        metavar="URL",
        help=f"the Hub API, e.g. http://hub:8081/hub/api (default: ${HUB_URL_ENV}); "
        f"token from ${TOKEN_ENV}",
    )
    p.add_argument(
        "--interval",
        type=float,
        metavar="SECONDS",
        help="seconds between rounds (default: the policy's enforcement.interval)",
    )
    p.add_argument("--once", action="store_true", help="run one round and exit")
    p.add_argument("--dry-run", action="store_true", help="record what would be done; stop nothing")
    p.add_argument(
        "--alive-file",
        metavar="PATH",
        help="touch this file after every round, failed or not (a liveness probe checks its age)",
    )
    p.add_argument(
        "--health-port",
        type=int,
        default=int(os.environ.get(HEALTH_PORT_ENV) or 0) or None,
        metavar="N",
        help=f"serve /healthz and /readyz on this port (default: ${HEALTH_PORT_ENV}, else none)",
    )
    add_at(p)
    p.set_defaults(run=run)
    return ["enforce"]


async def run(args) -> int:
    from ledger.core.times import utcnow
    from ledger.enforcer.enforcer import enforce_round
    from ledger.enforcer.hub_api import HubClient, HubError
    from ledger.store.availability import LedgerAvailability

    if args.at and not args.once:
        raise CommandError("--at only makes sense with --once (a loop always runs at now)")
    database_url(args)  # no URL: fail now; a service never starts the embedded server
    if not args.hub_url:
        raise CommandError(f"no hub: pass --hub-url URL or set ${HUB_URL_ENV}")
    token = os.environ.get(TOKEN_ENV)
    if not token:
        raise CommandError(f"no API token: set ${TOKEN_ENV} (the hub sets it for a service)")
    current_policy = policy_source(args, watch=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    hub = HubClient(args.hub_url, token)
    failed_rounds = 0
    health = None
    try:
        # no schema check before the loop: a database that is down when the hub starts must
        # not end this hub-managed service (the hub stops when one exits during startup)
        async with engine_of(args, check_schema=False) as engine:
            availability = LedgerAvailability(engine)
            if args.health_port:
                health = _serve_health(args.health_port, availability)
            if args.once and not await availability.check():
                raise CommandError(f"ledger unavailable: {availability.last_error}")
            while not stop.is_set():
                if not availability.available and not await availability.wait(stop):
                    break  # stopped while waiting for the database
                policy = current_policy()
                now = at_of(args) if args.once else utcnow()
                try:
                    stats = await enforce_round(engine, hub, policy, now, dry_run=args.dry_run)
                    log.info("enforcer round at %s: %s", now.isoformat(), stats)
                except HubError as exc:
                    failed_rounds += 1
                    log.error("enforcer: the hub did not answer, retrying next round: %s", exc)
                except Exception as exc:  # noqa: BLE001 - a database hiccup must not end it
                    failed_rounds += 1
                    if is_database_error(exc):
                        availability.mark_failed(exc)  # next: retry with backoff
                        log.error("enforcer: ledger unavailable: %s", availability.last_error)
                    else:
                        log.exception("enforcer: round failed, retrying next round")
                if args.alive_file:
                    # the loop is turning; a hub or database outage must not restart the pod
                    with open(args.alive_file, "w", encoding="utf-8") as alive:
                        alive.write(now.isoformat())
                if args.once:
                    return 0 if failed_rounds == 0 else 2
                interval = args.interval or policy.enforcement.interval_seconds
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(interval):
                        await stop.wait()
    finally:
        await hub.close()
        if health is not None:
            health.stop()
    log.info("enforcer stopped")
    return 0


def is_database_error(exc: BaseException) -> bool:
    from sqlalchemy.exc import DBAPIError, SQLAlchemyError

    return isinstance(exc, (OSError, DBAPIError, SQLAlchemyError, TimeoutError))


def _serve_health(port: int, availability):
    """``/healthz`` (always 200, the body says whether the ledger answers) and ``/readyz``
    (503 while it does not), for probes of an enforcer run as its own Deployment."""
    import json

    from tornado import web

    class Health(web.RequestHandler):
        def initialize(self, ready_only: bool) -> None:
            self.ready_only = ready_only

        def get(self) -> None:
            body = {"status": "ok"}
            if not availability.available:
                body = {"status": "ledger unavailable", **availability.to_json()}
                if self.ready_only:
                    self.set_status(503)
            self.set_header("Content-Type", "application/json; charset=UTF-8")
            self.finish(json.dumps(body))

    app = web.Application(
        [(r"/healthz", Health, {"ready_only": False}), (r"/readyz", Health, {"ready_only": True})]
    )
    return app.listen(port, address="")
