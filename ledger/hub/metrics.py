"""Prometheus metrics of the spawn check, on the default registry.

JupyterHub serves ``prometheus_client.REGISTRY`` at ``/hub/metrics``
(https://jupyterhub.readthedocs.io/en/stable/reference/metrics.html), so metrics created
here show up there without any extra wiring. Created once per process: registering the same
name twice raises, and a hub config may be loaded more than once in tests.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

SPAWN_DECISIONS = Counter(
    "quota_ledger_spawn_decisions",
    "Spawn-time quota decisions by outcome (allowed, denied, error_allowed, error_denied)",
    ["outcome"],
)
SPAWN_CHECK_FAILURES = Counter(
    "quota_ledger_spawn_check_failures",
    "Spawn-time quota checks that could not be answered (timeout, ledger_error)",
    ["reason"],
)
SPAWN_RECORD_FAILURES = Counter(
    "quota_ledger_spawn_record_failures",
    "Attempts to write the decision log that failed (the rows are kept and retried)",
)
SPAWN_RECORDS_PENDING = Gauge(
    "quota_ledger_spawn_records_pending",
    "Decision-log rows kept in memory until the database takes writes again",
)
SPAWN_RECORDS_DROPPED = Counter(
    "quota_ledger_spawn_records_dropped",
    "Decision-log rows dropped: the in-memory queue was full, or the hub stopped first",
)
SPAWN_CHECK_SECONDS = Histogram(
    "quota_ledger_spawn_check_seconds",
    "Time the quota check added to a spawn",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5),
)
