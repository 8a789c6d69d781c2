"""The SQL the ledger runs. Bound parameters only; one statement per question.

- :func:`user_segments` — one user's segments that touch a window: a single index range scan
  on ``ix_segments_user_end`` (username, COALESCE(ended_at, 'infinity')). The decision reads
  rollups instead (ledger/store/rollups.py); pages that list segments still use this.
- :func:`usage_report` — every user's exact integrals from the ``quota_usage`` SQL function.
- :func:`usage_report_us` — the same as integers in base-unit·µs (``quota_usage_exact``).
- :func:`upsert_segments` — idempotent batch insert keyed on (pod_uid, started_at).
- :func:`record_groups`, :func:`groups_by_user` — the hub's groups as last seen.
- :func:`record_decision`, :func:`recent_decisions` — the decision log.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.core.decision import SegmentRow, to_us

# The spawn-time query. Run through asyncpg directly: its per-connection prepared-statement
# cache and plain tuples halve the p99 against SQLAlchemy's result processing (measured in
# benchmarks/RESULTS.md, Ledger). Served by an Index Only Scan on ix_segments_user_end. A
# segment starting at the window's end runs then (segments are [start, end), as
# ledger.core.decision counts running servers): it is read, with nothing used yet.
USER_SEGMENTS_COLUMNS = (
    "started_at, ended_at, servername, cpu_millicores, memory_bytes, gpu_count, extended"
)
USER_SEGMENTS_SQL = f"""
    SELECT {USER_SEGMENTS_COLUMNS}
    FROM segments
    WHERE username = $1
      AND COALESCE(ended_at, 'infinity'::timestamptz) > $2
      AND started_at <= $3
"""  # noqa: S608 - a constant column list


def row_amounts(cpu: int, memory: int, gpu: int, extended) -> dict[str, int]:
    amounts = {"cpu": cpu, "memory": memory, "gpu": gpu}
    if extended and extended != "{}":  # None, "{}" or {} = no extended resources
        if isinstance(extended, str):  # asyncpg returns jsonb as text
            extended = json.loads(extended)
        amounts.update({k: int(v) for k, v in extended.items()})
    return amounts


async def user_segments(
    conn: AsyncConnection, username: str, since: datetime, until: datetime
) -> list[SegmentRow]:
    """Segments of ``username`` overlapping [since, until), as the decision reads them."""
    raw = (await conn.get_raw_connection()).driver_connection
    records = await raw.fetch(USER_SEGMENTS_SQL, username, since, until)
    return [
        SegmentRow(
            started_at_us=to_us(started),
            ended_at_us=None if ended is None else to_us(ended),
            servername=servername,
            amounts=row_amounts(cpu, mem, gpu, ext),
        )
        for started, ended, servername, cpu, mem, gpu, ext in records
    ]


USAGE_REPORT_SQL = text(
    """
    SELECT username, cpu_millicore_seconds, memory_byte_seconds, gpu_seconds,
           running_servers, running_cpu_millicores, running_memory_bytes, running_gpu_count,
           segments
    FROM quota_usage(:at, :window)
    ORDER BY username
    """
)


_USAGE_REPORT_POSITIONAL = USAGE_REPORT_SQL.text.replace("(:at, :window)", "($1, $2)")


async def usage_report(conn: AsyncConnection, at: datetime, window_seconds: int) -> list[dict]:
    """Every user with usage in [at − window, at): exact base-unit·second integrals."""
    # asyncpg directly: SQLAlchemy's row mappings cost more than the query for 10k users
    raw = (await conn.get_raw_connection()).driver_connection
    rows = await raw.fetch(_USAGE_REPORT_POSITIONAL, at, timedelta(seconds=window_seconds))
    return [dict(r) for r in rows]


# The all-users report's read (ledger.store.report): the aggregate quota_usage is a SELECT
# over, its integrals as integers in base-unit·µs. Sent as text: Python's int() parses them
# exactly, in a third of the time of asyncpg's numeric → Decimal and the Decimal arithmetic
# that followed; cpu and gpu could overflow bigint over a long window. No ORDER BY: the
# report sorts in Python (code points, not the database's collation).
USAGE_REPORT_US_SQL = """
    SELECT username, cpu_used::text, memory_used::text, gpu_used::text, running_servers,
           running_cpu_millicores, running_memory_bytes, running_gpu_count, segments
    FROM quota_usage_exact($1, $2)
"""
# where each resource's integral (text, base-unit·µs) and running total are in its rows
USAGE_REPORT_US_POSITIONS = {
    "cpu": (1, 5),
    "memory": (2, 6),
    "gpu": (3, 7),
}
USAGE_REPORT_US_RUNNING_SERVERS = 4


async def usage_report_us(conn: AsyncConnection, at: datetime, window_seconds: int) -> dict:
    """Every user with usage in [at − window, at), by username: the row of
    :data:`USAGE_REPORT_US_SQL` (see :data:`USAGE_REPORT_US_POSITIONS`)."""
    raw = (await conn.get_raw_connection()).driver_connection
    rows = await raw.fetch(USAGE_REPORT_US_SQL, at, timedelta(seconds=window_seconds))
    return {r[0]: r for r in rows}


SEGMENT_DEFAULTS = {
    "namespace": "",
    "pod_name": "",
    "servername": "",
    "workload": "jupyterhub",
    "cpu_millicores": 0,
    "memory_bytes": 0,
    "gpu_count": 0,
    "extended": {},
    "ended_at": None,
    "end_reason": None,
    "source": "collector",
}


async def upsert_segments(conn: AsyncConnection, rows: Sequence[dict]) -> int:
    """Insert segments, skipping any (pod_uid, started_at) already recorded. Returns inserted."""
    if not rows:
        return 0
    params = []
    for row in rows:
        p = {**SEGMENT_DEFAULTS, **row}
        p.setdefault("last_seen_at", p["ended_at"] or p["started_at"])
        params.append(p)
    inserted = 0
    for chunk_start in range(0, len(params), 5000):
        chunk = params[chunk_start : chunk_start + 5000]
        inserted += await _insert_chunk(conn, chunk)
    return inserted


async def _insert_chunk(conn: AsyncConnection, chunk: list[dict]) -> int:
    # One statement for the whole chunk: unnest() of parallel arrays is far faster than
    # executemany for tens of thousands of rows, and reports how many rows were new.
    columns = [
        "pod_uid", "namespace", "pod_name", "username", "servername", "workload",
        "cpu_millicores", "memory_bytes", "gpu_count", "extended",
        "started_at", "ended_at", "last_seen_at", "end_reason", "source",
    ]  # fmt: skip
    types = [
        "text[]", "text[]", "text[]", "text[]", "text[]", "text[]",
        "bigint[]", "bigint[]", "bigint[]", "jsonb[]",
        "timestamptz[]", "timestamptz[]", "timestamptz[]", "text[]", "text[]",
    ]  # fmt: skip
    arrays = {c: [row[c] for row in chunk] for c in columns}
    arrays["extended"] = [json.dumps(e or {}) for e in arrays["extended"]]
    select = ", ".join(f"CAST(:{c} AS {t})" for c, t in zip(columns, types, strict=True))
    statement = text(
        f"""
        WITH new AS (
            INSERT INTO segments ({", ".join(columns)})
            SELECT * FROM unnest({select})
            ON CONFLICT (pod_uid, started_at) DO NOTHING
            RETURNING 1
        )
        SELECT count(*) FROM new
        """  # noqa: S608 - column names are constants above; values are bound
    )
    return int(await conn.scalar(statement, arrays))


async def record_groups(
    conn: AsyncConnection, username: str, groups: Iterable[str], synced_at: datetime
) -> None:
    """Remember the user's hub groups (for reports and pages that have no Hub round trip)."""
    groups = sorted(set(groups))
    await conn.execute(
        text("DELETE FROM user_groups WHERE username = :u AND NOT (group_name = ANY(:g))"),
        {"u": username, "g": groups},
    )
    if groups:
        await conn.execute(
            text(
                """
                INSERT INTO user_groups (username, group_name, synced_at)
                SELECT :u, g, :at FROM unnest(CAST(:g AS text[])) AS g
                ON CONFLICT (username, group_name) DO UPDATE SET synced_at = EXCLUDED.synced_at
                """
            ),
            {"u": username, "g": groups, "at": synced_at},
        )


async def groups_by_user(conn: AsyncConnection) -> dict[str, list[str]]:
    raw = (await conn.get_raw_connection()).driver_connection
    result = await raw.fetch(
        "SELECT username, group_name FROM user_groups ORDER BY username, group_name"
    )
    out: dict[str, list[str]] = {}
    for username, group in result:
        out.setdefault(username, []).append(group)
    return out


INSERT_DECISION_SQL = text(
    """
    INSERT INTO decisions (decided_at, username, servername, source, outcome, reason, message,
                           request, groups, detail, retry_at, latency_ms)
    VALUES (:decided_at, :username, :servername, :source, :outcome, :reason, :message,
            :request, :groups, :detail, :retry_at, :latency_ms)
    """
).bindparams(
    bindparam("request", type_=JSONB),
    bindparam("groups", type_=JSONB),
    bindparam("detail", type_=JSONB),
)


async def record_decision(conn: AsyncConnection, **values) -> None:
    """One row of the decision log. Keys: see the ``decisions`` table."""
    values.setdefault("servername", "")
    values.setdefault("message", "")
    values.setdefault("request", {})
    values.setdefault("groups", [])
    values.setdefault("detail", {})
    values.setdefault("retry_at", None)
    values.setdefault("latency_ms", None)
    await conn.execute(INSERT_DECISION_SQL, values)


RECENT_DECISIONS_SQL = text(
    """
    SELECT decided_at, username, servername, source, outcome, reason, message, retry_at
    FROM decisions
    WHERE (:include_allowed OR outcome <> 'allowed')
      AND (CAST(:username AS text) IS NULL OR username = :username)
    ORDER BY decided_at DESC
    LIMIT :limit
    """
)


async def recent_decisions(
    conn: AsyncConnection, *, limit: int, username: str | None = None, include_allowed: bool = False
) -> list[dict]:
    """The decision log, newest first: denials only unless ``include_allowed``."""
    rows = await conn.execute(
        RECENT_DECISIONS_SQL,
        {"limit": limit, "username": username, "include_allowed": include_allowed},
    )
    return [dict(r._mapping) for r in rows]


async def ping(conn: AsyncConnection) -> None:
    """One round trip: raises if the database does not answer."""
    await conn.execute(text("SELECT 1"))
