"""``quota-ledger collect`` (also ``python -m collector``): run the collector daemon.

kubernetes_asyncio is imported inside `run`, not here: the CLI imports this module to
build ``--help`` and must not pay for (or need) the Kubernetes client for that.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from ledger.cli.common import CommandError, database_url, engine_of, policy_source

log = logging.getLogger("collector")


def add_parser(subparsers, common) -> list[str]:
    p = subparsers.add_parser(
        "collect",
        parents=[common],
        help="watch Kubernetes pods and write their resource intervals to the ledger",
        description="List and watch the pods of JupyterHub servers (and configured workloads) "
        "and keep the ledger's segments exact, charged per the quota policy's accounting: "
        "block (--config FILE or $QUOTA_LEDGER_CONFIG). See docs/collector.md.",
    )
    p.add_argument("--settings", metavar="FILE", help="collector settings YAML (default: built-in)")
    p.add_argument(
        "--kubeconfig",
        metavar="PATH",
        help="kubeconfig file (default: in-cluster config, else $KUBECONFIG / ~/.kube/config)",
    )
    p.add_argument(
        "--http-port",
        type=int,
        default=8000,
        help="/healthz /readyz /metrics port (0: any, -1: off)",
    )
    p.add_argument("--http-host", default="0.0.0.0", help="address for the HTTP server")
    p.add_argument("--collector-id", help="name in collector_heartbeats (default: hostname-pid)")
    p.add_argument("--once", action="store_true", help="list, reconcile, write, exit (cron/tests)")
    p.set_defaults(run=run)
    return ["collect"]


async def api_client_factory(kubeconfig: str | None):
    """An ApiClient from --kubeconfig, else the in-cluster service account, else ~/.kube/config."""
    from kubernetes_asyncio import client, config

    configuration = client.Configuration()
    if kubeconfig:
        await config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    else:
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException:
            await config.load_kube_config(client_configuration=configuration)
    return client.ApiClient(configuration)


async def run(args) -> int:
    from collector.settings import SettingsError, load_settings

    database_url(args)  # no URL: fail now; the collector never starts the embedded server
    try:
        settings = load_settings(args.settings)
    except SettingsError as exc:
        raise CommandError(str(exc)) from None
    # The policy's accounting: block says what is charged (charge basis, extended
    # resources); the hub hook judges spawns by the same block, so there is no default here.
    current_policy = policy_source(args, watch=True)
    try:
        from kubernetes_asyncio.config import ConfigException
    except ModuleNotFoundError:
        raise CommandError(
            "the collector needs kubernetes_asyncio: pip install quota-ledger"
        ) from None
    try:
        api_client = await api_client_factory(args.kubeconfig)
    except (ConfigException, OSError) as exc:
        raise CommandError(f"no Kubernetes configuration: {exc}") from None
    try:
        async with engine_of(args) as engine:
            return await _run_collector(args, settings, current_policy, engine, api_client)
    finally:
        await api_client.close()  # idempotent; the collector closes it too


async def _run_collector(args, settings, current_policy, engine, api_client) -> int:
    from collector.daemon import Collector

    collector = Collector(
        settings,
        engine,
        lambda: api_client,
        collector_id=args.collector_id,
        http_host=args.http_host,
        http_port=None if args.http_port < 0 else args.http_port,
        accounting=current_policy,
    )
    if args.once:
        return await collector.run_once()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("event=starting pid=%d", os.getpid())
    return await collector.run(stop)
