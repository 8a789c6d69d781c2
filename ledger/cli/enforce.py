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
    add_at(p)
    p.set_defaults(run=run)
    return ["enforce"]


async def run(args) -> int:
    from ledger.core.times import utcnow
    from ledger.enforcer.enforcer import enforce_round
    from ledger.enforcer.hub_api import HubClient, HubError

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
    try:
        async with engine_of(args) as engine:
            while not stop.is_set():
                policy = current_policy()
                now = at_of(args) if args.once else utcnow()
                try:
                    stats = await enforce_round(engine, hub, policy, now, dry_run=args.dry_run)
                    log.info("enforcer round at %s: %s", now.isoformat(), stats)
                except HubError as exc:
                    failed_rounds += 1
                    log.error("enforcer: the hub did not answer, retrying next round: %s", exc)
                except Exception:  # noqa: BLE001 - a database hiccup must not end the service
                    failed_rounds += 1
                    log.exception("enforcer: round failed, retrying next round")
                if args.once:
                    return 0 if failed_rounds == 0 else 2
                interval = args.interval or policy.enforcement.interval_seconds
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval)
    finally:
        await hub.close()
    log.info("enforcer stopped")
    return 0
