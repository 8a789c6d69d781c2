"""The collector's SQL: idempotent, batched writes of segments, OOM kills and heartbeats.

Idempotence is what makes restarts, retries and two collectors at once safe:
* open: ``INSERT … ON CONFLICT DO NOTHING`` — (pod_uid, started_at) is unique and at most one
  segment per pod is open, so the same open twice (or a stale one) is a no-op;
* close: ``ended_at = LEAST(COALESCE(ended_at, :end), :end)`` — the earliest end wins;
* resize: ``SELECT … FOR UPDATE`` the open row in one transaction and only split it if its
  resources differ, so a second collector seeing the same resize changes nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ledger.core.segment_plan import (
    CloseSegment,
    Op,
    OpenSegment,
    RecordOom,
    ResizeSegment,
    Resources,
    SegmentRow,
    VanishSegments,
)
from ledger.store import partitions

log = logging.getLogger(__name__)

_INSERT_SEGMENT = text(
    """
    INSERT INTO segments (pod_uid, namespace, pod_name, username, servername, workload,
        cpu_millicores, memory_bytes, gpu_count, extended, started_at, last_seen_at, source)
    VALUES (:pod_uid, :namespace, :pod_name, :username, :servername, :workload,
        :cpu_millicores, :memory_bytes, :gpu_count, CAST(:extended AS jsonb), :started_at,
        :last_seen_at, :source)
    ON CONFLICT DO NOTHING
    """
)
_CLOSE_SEGMENT = text(
    """
    UPDATE segments
    SET end_reason = CASE WHEN ended_at IS NULL OR :ended_at < ended_at
                          THEN :end_reason ELSE end_reason END,
        ended_at = LEAST(COALESCE(ended_at, :ended_at), :ended_at),
        updated_at = now()
    WHERE pod_uid = :pod_uid AND started_at <= :ended_at
      AND (ended_at IS NULL OR ended_at > :ended_at)
    """
)
_VANISH = text(
    """
    UPDATE segments
    SET ended_at = GREATEST(last_seen_at, started_at), end_reason = 'vanished',
        noticed_gone_at = GREATEST(:noticed_gone_at, last_seen_at, started_at),
        updated_at = now()
    WHERE pod_uid = ANY(:pod_uids) AND ended_at IS NULL
    """
)
_OPEN_ROW = text(
    """
    SELECT id, started_at, cpu_millicores, memory_bytes, gpu_count, extended
    FROM segments WHERE pod_uid = :pod_uid AND ended_at IS NULL FOR UPDATE
    """
)
_INSERT_OOM = text(
    """
    INSERT INTO oom_kills (pod_uid, namespace, pod_name, container_name, username, servername,
        killed_at, restart_count, memory_limit_bytes)
    SELECT :pod_uid, :namespace, :pod_name, :container_name, :username, :servername,
        :killed_at, :restart_count, :memory_limit_bytes
    WHERE CAST(:run_started_at AS timestamptz) IS NULL OR NOT EXISTS (
        SELECT 1 FROM oom_kills k
        WHERE k.pod_uid = :pod_uid AND k.container_name = :container_name
          AND k.killed_at >= CAST(:run_started_at AS timestamptz))
    ON CONFLICT DO NOTHING
    """
)


def _extended_json(resources: Resources) -> str:
    return json.dumps(dict(resources[3]), sort_keys=True)


def _segment_params(row: SegmentRow) -> dict:
    cpu, memory, gpu, _ = row.resources
    return {
        "pod_uid": row.pod_uid,
        "namespace": row.namespace,
        "pod_name": row.pod_name,
        "username": row.username,
        "servername": row.servername,
        "workload": row.workload,
        "cpu_millicores": cpu,
        "memory_bytes": memory,
        "gpu_count": gpu,
        "extended": _extended_json(row.resources),
        "started_at": row.started_at,
        "last_seen_at": row.last_seen_at,
        "source": row.source,
    }


def _row_resources(row) -> Resources:
    extended = row.extended or {}
    return (
        row.cpu_millicores,
        row.memory_bytes,
        row.gpu_count,
        tuple(sorted((k, int(v)) for k, v in extended.items() if v)),
    )


async def _resize(conn: AsyncConnection, op: ResizeSegment) -> None:
    row = op.row
    current = (await conn.execute(_OPEN_ROW, {"pod_uid": row.pod_uid})).first()
    if current is None or _row_resources(current) == row.resources:
        return  # closed already, or another collector applied this resize
    if row.started_at <= current.started_at:
        # Nothing was charged at the old size: correct the open segment in place.
        params = _segment_params(row)
        await conn.execute(
            text(
                "UPDATE segments SET cpu_millicores = :cpu_millicores, "
                "memory_bytes = :memory_bytes, gpu_count = :gpu_count, "
                "extended = CAST(:extended AS jsonb), updated_at = now() WHERE id = :id"
            ),
            {**params, "id": current.id},
        )
        return
    await conn.execute(
        text(
            "UPDATE segments SET ended_at = :ended_at, end_reason = 'resized', "
            "updated_at = now() WHERE id = :id"
        ),
        {"ended_at": row.started_at, "id": current.id},
    )
    await conn.execute(_INSERT_SEGMENT, _segment_params(row))


def _phases(ops: Sequence[Op]) -> list[list[Op]]:
    """Split a batch where a pod's next run opens after its previous run closed (a container
    started again): within a phase every pod's writes are open → resize → close."""
    phases: list[list[Op]] = [[]]
    closed: set[str] = set()
    for op in ops:
        if isinstance(op, OpenSegment) and op.row.pod_uid in closed:
            phases.append([])
            closed = set()
        if isinstance(op, CloseSegment):
            closed.add(op.pod_uid)
        phases[-1].append(op)
    return phases


async def apply_ops(engine: AsyncEngine, ops: Sequence[Op]) -> None:
    """Apply a batch in one transaction, grouped by kind in the order open → resize → close
    (per phase, see ``_phases``), so every pod's writes keep the plan's order."""
    async with engine.begin() as conn:
        for phase in _phases(ops):
            await _apply_phase(conn, phase)


async def _apply_phase(conn: AsyncConnection, ops: Sequence[Op]) -> None:
    opens = [_segment_params(op.row) for op in ops if isinstance(op, OpenSegment)]
    resizes = [op for op in ops if isinstance(op, ResizeSegment)]
    closes = [
        {"pod_uid": op.pod_uid, "ended_at": op.ended_at, "end_reason": op.end_reason}
        for op in ops
        if isinstance(op, CloseSegment)
    ]
    vanishes = [op for op in ops if isinstance(op, VanishSegments)]
    ooms = [
        {
            "pod_uid": op.view.uid,
            "namespace": op.view.namespace,
            "pod_name": op.view.name,
            "container_name": op.kill.container_name,
            "username": op.view.username,
            "servername": op.view.servername,
            "killed_at": op.kill.killed_at,
            "restart_count": op.kill.restart_count,
            "memory_limit_bytes": op.kill.memory_limit_bytes,
            "run_started_at": op.kill.run_started_at,
        }
        for op in ops
        if isinstance(op, RecordOom)
    ]
    if opens:
        await conn.execute(_INSERT_SEGMENT, opens)
    for op in resizes:
        await _resize(conn, op)
    if closes:
        await conn.execute(_CLOSE_SEGMENT, closes)
    for op in vanishes:
        await conn.execute(
            _VANISH, {"pod_uids": list(op.pod_uids), "noticed_gone_at": op.noticed_gone_at}
        )
    if ooms:
        await conn.execute(_INSERT_OOM, ooms)


@dataclass(frozen=True, slots=True)
class OpenSegmentRow:
    pod_uid: str
    namespace: str
    started_at: datetime
    resources: Resources


async def load_open_segments(
    engine: AsyncEngine, workload: str, namespace: str | None, source: str = "collector"
) -> list[OpenSegmentRow]:
    """Open segments this watch scope is responsible for (never another workload's, nor
    another recorder's: ``source`` is collector (Kubernetes), docker or hub)."""
    sql = (
        "SELECT pod_uid, namespace, started_at, cpu_millicores, memory_bytes, gpu_count, "
        "extended FROM segments WHERE ended_at IS NULL AND source = :source "
        "AND workload = :workload"
    )
    params: dict = {"workload": workload, "source": source}
    if namespace is not None:
        sql += " AND namespace = :namespace"
        params["namespace"] = namespace
    async with engine.connect() as conn:
        rows = (await conn.execute(text(sql), params)).all()
    return [OpenSegmentRow(r.pod_uid, r.namespace, r.started_at, _row_resources(r)) for r in rows]


async def touch_last_seen(engine: AsyncEngine, pod_uids: Sequence[str], seen_at: datetime) -> None:
    """The heartbeat: these pods were alive at `seen_at` (a vanished pod is closed there).

    Rows a concurrent write holds (a resize or close of the same pods, from the write buffer)
    are skipped rather than waited for: waiting on rows locked in another order is a deadlock
    (https://www.postgresql.org/docs/current/explicit-locking.html#LOCKING-DEADLOCKS), and the
    skipped ones are being rewritten anyway; the next heartbeat touches them."""
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE segments SET last_seen_at = GREATEST(last_seen_at, :seen_at) "
                "WHERE id IN (SELECT id FROM segments WHERE pod_uid = ANY(:pod_uids) "
                "AND ended_at IS NULL FOR UPDATE SKIP LOCKED)"
            ),
            {"pod_uids": list(pod_uids), "seen_at": seen_at},
        )


_HEARTBEAT_COLUMNS = (
    "collector_id, hostname, version, started_at, last_heartbeat_at, last_event_at, "
    "last_relist_at, events_total, pods_skipped_total, buffer_depth, live_pods, detail"
)
_UPSERT_HEARTBEAT = text(
    f"""
    INSERT INTO collector_heartbeats ({_HEARTBEAT_COLUMNS})
    VALUES (:collector_id, :hostname, :version, :started_at, :last_heartbeat_at,
        :last_event_at, :last_relist_at, :events_total, :pods_skipped_total, :buffer_depth,
        :live_pods, CAST(:detail AS jsonb))
    ON CONFLICT (collector_id) DO UPDATE SET
        hostname = EXCLUDED.hostname, version = EXCLUDED.version,
        started_at = EXCLUDED.started_at, last_heartbeat_at = EXCLUDED.last_heartbeat_at,
        last_event_at = EXCLUDED.last_event_at, last_relist_at = EXCLUDED.last_relist_at,
        events_total = EXCLUDED.events_total, pods_skipped_total = EXCLUDED.pods_skipped_total,
        buffer_depth = EXCLUDED.buffer_depth, live_pods = EXCLUDED.live_pods,
        detail = EXCLUDED.detail
    """  # noqa: S608 - a constant column list, no input
)


async def upsert_heartbeat(engine: AsyncEngine, row: dict) -> None:
    params = {**row, "detail": json.dumps(row.get("detail", {}), default=str)}
    async with engine.begin() as conn:
        await conn.execute(_UPSERT_HEARTBEAT, params)


async def delete_older_than(
    engine: AsyncEngine, now: datetime, retention_seconds: float
) -> tuple[int, int]:
    """Retention: closed segments that ended, and OOM kills, before now − retention.

    Whole month partitions before the cutoff go first (``partitions.drop_before``: a DROP,
    no dead rows to vacuum); the remaining old rows are deleted. Their days stay in
    ``usage_rollups`` for reports (the delete trigger is told to keep them), and
    ``rollup_horizon`` records from when raw history is complete. Callers check the
    retention against the longest policy window (``partitions.retention_cutoff``).
    Returns (segments removed, OOM kills removed).
    """
    cutoff = now - timedelta(seconds=retention_seconds)
    dropped = await partitions.drop_before(engine, cutoff)
    if partitions.rollups_differ(dropped):
        # rows deleted now would take usage the rollups do not hold with them, for good
        log.error("retention skipped: %s", next(d.reason for d in dropped if d.reason))
        return 0, 0
    in_partitions = sum(d.segments for d in dropped if d.dropped)
    async with engine.begin() as conn:
        await conn.execute(text("SET LOCAL quota_ledger.keep_rollups = 'on'"))
        await conn.execute(
            text(
                "INSERT INTO rollup_horizon (raw_complete_since) VALUES (:cutoff) "
                "ON CONFLICT (id) DO UPDATE SET raw_complete_since = "
                "GREATEST(rollup_horizon.raw_complete_since, EXCLUDED.raw_complete_since)"
            ),
            {"cutoff": cutoff},
        )
        # started_at < cutoff too: partition pruning skips the months after the cutoff
        segments = await conn.execute(
            text(
                "DELETE FROM segments WHERE ended_at IS NOT NULL AND ended_at < :cutoff "
                "AND started_at < :cutoff"
            ),
            {"cutoff": cutoff},
        )
        ooms = await conn.execute(
            text("DELETE FROM oom_kills WHERE killed_at < :cutoff"), {"cutoff": cutoff}
        )
    return in_partitions + segments.rowcount, ooms.rowcount


@dataclass(frozen=True, slots=True)
class OpenServerSegment:
    pod_uid: str
    username: str
    servername: str


async def load_open_server_segments(engine: AsyncEngine, source: str) -> list[OpenServerSegment]:
    """Open segments a recorder without object ids (the hub's) matches by user and server."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT pod_uid, username, servername FROM segments "
                "WHERE ended_at IS NULL AND source = :source"
            ),
            {"source": source},
        )
        return [OpenServerSegment(r.pod_uid, r.username, r.servername) for r in rows]
