"""Reads of the per-day usage rollups (migrations/versions/0004), and their upkeep commands.

- :func:`user_history` — what :func:`ledger.store.decide.decide` reads for one user, in
  one round trip: the rollup days of the longest window, the segments running at ``now``,
  and every closed segment of the window for a quiet user, or the edge days' partial
  segments for a busy one (plus the days its retry times can fall in, migration 0014);
  :func:`load_days` adds more days' partial segments when the arithmetic asks (a busy
  user's run-out time inside a day no edge touches, a retry day the hint missed).
- :func:`rebuild` / :func:`verify` — ``quota-ledger rollups rebuild|verify``: the per-user
  days, their aligned multi-day blocks (migrations/versions/0012), the per-group pool
  buckets (0009) and the open totals (0011).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ledger.core.decision import SegmentRow, from_us, to_us
from ledger.core.resources import resource
from ledger.core.rollup_usage import DAY_US, Bucket, ResourceHistory
from ledger.store.queries import row_amounts

CORE_COLUMNS = {"cpu": 0, "memory": 1, "gpu": 2}

# A user with at most this many closed segments in the longest window (counted from the
# rollups) gets all of them in the first round trip: every day's shape is then known, so a
# retry or run-out time inside any day needs no second one. Busier users get the edge days'
# segments only (their cost stays flat in history) and a second trip when the answer needs
# another day. Reading ~100 more short rows costs less than a round trip.
WHOLE_WINDOW_SEGMENTS = 256

# The first read and the later days' reads are SQL functions (migrations/versions/0013 and
# 0014): one row shape for the parts (kind 2 = a rollup day, 1 = a partial segment, 0 = a
# running segment, 6 = a segment running at now and closed after it, both a running and a
# closed one; 3 = "every segment of the window is here", 4 = "the user has grants or credits
# that may count": only then does decide read them, ledger/store/grants.py; 5 = "this day's
# partial segments are here", a day a busy user's retry time can fall in): times as epoch µs
# and integrals as text keep the Python side to int() calls; empty extended maps come back
# NULL so no JSON is decoded for them. They always run their generic plan: the custom plans a
# prepared statement may settle on cost more to plan than the generic plan takes to run.
_HISTORY_SQL = "SELECT * FROM quota_user_history($1, $2, $3, $4, $5, $6, $7, $8)"

# Another read sent in the same round trip (decide's shared capacity read, four text columns
# whose parameters are numbered from $9: ledger/store/shared_reads.py): its rows come back
# as kind 9, in the text columns, and are kept as they came (``UserHistory.also_rows``).
ALSO_FIRST_PARAMETER = 9
_ALSO_SQL = (
    " UNION ALL SELECT 9, NULL, NULL, x.c1, NULL, NULL, NULL, NULL, x.c2, x.c3, x.c4, NULL"
    " FROM ({}) x(c1, c2, c3, c4)"
)
_DAYS_SQL = "SELECT * FROM quota_user_days($1, $2)"


def _bucket_of(at_us: int) -> int:
    return at_us - at_us % DAY_US


def _integral(text_value: str) -> int:
    # a sum of integer products: numeric's text has no fraction ("1.0" only if a writer
    # ever stored one), and int() of the digits is 3× cheaper than int(Decimal(…))
    try:
        return int(text_value)
    except ValueError:
        return int(Decimal(text_value))


def _json(value) -> dict:
    if not value or value == "{}":
        return {}
    if isinstance(value, str):  # asyncpg returns jsonb as text
        value = json.loads(value, parse_float=Decimal)
    return value


# Closed segments (kinds 1 and 6) are kept as the records they came in, which share one
# layout: start µs, end µs, id or servername, cpu, memory, gpu, extended (jsonb text or
# None). A tuple built per row was a third of add_records, and most rows are read by at most
# one resource of one day.
_CORE_INDEX = {"cpu": 4, "memory": 5, "gpu": 6}
# a rollup day's (total, cover) columns of each core resource (kind 2)
_DAY_COLUMNS = {"cpu": (8, 4), "memory": (9, 5), "gpu": (10, 6)}


def _rate(row, name: str) -> int:
    index = _CORE_INDEX.get(name)
    if index is not None:
        return row[index]
    # decoded here, once per row and day for the resource asking (_Partials keeps the
    # result), not for every row read: few policies budget an extended resource
    ext = _extended(row[7])
    return int(ext.get(name, 0)) if ext else 0


def _extended_bucket(row, name: str, core: Bucket | None) -> Bucket | None:
    """``name``'s bucket in a rollup day (kind 2) with extended maps: their entry wins over
    the core columns' ``core``."""
    covers, totals = _json(row[7]), _json(row[11])
    if name in totals:
        return Bucket(int(totals[name]), int(covers.get(name, 0)))
    if core is None and name in covers:
        return Bucket(0, int(covers[name]))
    return core


class _Partials(Mapping):
    """``ResourceHistory.partials`` of one resource: (start, end, rate) per loaded day, made
    from that day's closed segments on first use."""

    def __init__(self, history: UserHistory, loaded_days: set[int], name: str):
        self._history, self._loaded, self._name = history, loaded_days, name
        self._cache: dict[int, list] = {}

    def __contains__(self, z) -> bool:
        return z in self._loaded

    def __getitem__(self, z: int) -> list:
        if z not in self._loaded:
            raise KeyError(z)
        out = self._cache.get(z)
        if out is None:
            name = self._name
            out = self._cache[z] = [
                (row[1], row[2], rate)
                for row in self._history.closed_in(z)
                if (rate := _rate(row, name))
            ]
        return out

    def __iter__(self):
        return iter(sorted(self._loaded))

    def __len__(self) -> int:
        return len(self._loaded)


def _extended(ext) -> dict | None:
    if not ext or ext == "{}":
        return None
    if isinstance(ext, str):  # asyncpg returns jsonb as text
        ext = json.loads(ext)
    return ext or None


@dataclass
class UserHistory:
    """One user's rollup days, loaded days' partial segments and running segments at now."""

    now_us: int
    loaded_days: set[int] = field(default_factory=set)
    running: list[SegmentRow] = field(default_factory=list)
    whole_window: bool = False  # every closed segment of the window was read
    has_adjustments: bool = False  # grants or credits may count (kind 4)
    also_rows: list[tuple] = field(default_factory=list)  # the other read's (kind 9)
    # the rollup days' records (kind 2), made into each resource's buckets on first use
    day_records: list = field(default_factory=list)
    _buckets: dict[str, dict[int, Bucket]] = field(default_factory=dict, repr=False)
    _extended_days: bool = field(default=False, repr=False)  # a day with extended maps
    # the closed segments read (kinds 1 and 6), each once, and those of each day asked for
    closed: list = field(default_factory=list)
    _closed_by_day: dict[int, list] = field(default_factory=dict, repr=False)
    _segment_ids: set[str] = field(default_factory=set, repr=False)  # of the keyed ones

    def add_records(self, records) -> None:
        # The closed segments are most rows and most are never looked at (a decision reads
        # a day or two of them): they are picked out by one comprehension and sorted into a
        # day only when that day is asked for (closed_in).
        closed = [r for r in records if r[0] == 1]
        keyed = [r for r in closed if r[3] is not None]  # by segment id: the edge days'
        if keyed:  # a segment of two days read comes twice; once is counted
            ids = self._segment_ids
            closed = [r for r in closed if r[3] is None]
            for r in keyed:
                if r[3] not in ids:
                    ids.add(r[3])
                    closed.append(r)
        for r in [r for r in records if r[0] != 1]:
            kind = r[0]
            if kind == 2:
                self.day_records.append(r)
                self._buckets.clear()
                if r[7] is not None or r[11] is not None:
                    self._extended_days = True
            elif kind == 0 or kind == 6:  # running at now (6: and closed, after now)
                self.running.append(
                    SegmentRow(r[1], r[2], r[3], row_amounts(r[4], r[5], r[6], r[7]))
                )
                if kind == 6:
                    closed.append(r)
            elif kind == 9:  # the other read's (kind, scope, resource, amount)
                self.also_rows.append((r[3], r[8], r[9], r[10]))
            elif kind == 3:
                self.whole_window = True
            elif kind == 5:  # a day whose partial segments are here (migration 0014)
                self.loaded_days.add(r[1])
            elif kind == 4:
                self.has_adjustments = True
        if closed:
            self.closed += closed
            self._closed_by_day.clear()

    def closed_in(self, z: int) -> list:
        """The closed segments of day ``z`` (µs) that started before now and start inside it
        or end inside it (ending at midnight is not inside the day before)."""
        found = self._closed_by_day.get(z)
        if found is None:
            now, end = self.now_us, z + DAY_US
            # kinds 1 and 6 are closed: their end is never NULL (migrations 0013, 0014)
            found = self._closed_by_day[z] = [
                r
                for r in self.closed
                if (z <= r[1] < end or z < r[2] < end) and r[1] < now and r[1] < r[2]
            ]
        return found

    def buckets(self, name: str) -> dict[int, Bucket]:
        """``name``'s rollup days (µs day start → bucket), the days without it left out."""
        found = self._buckets.get(name)
        if found is not None:
            return found
        total_at, cover_at = _DAY_COLUMNS.get(name, (None, None))
        if total_at is not None and not self._extended_days:  # most: one comprehension
            found = {
                row[1]: Bucket(_integral(row[total_at]), row[cover_at])
                for row in self.day_records
                if row[cover_at] or row[total_at] != "0"
            }
        else:
            found = {}
            for row in self.day_records:
                bucket = None
                if total_at is not None:
                    total, cover = row[total_at], row[cover_at]
                    if cover or total != "0":
                        bucket = Bucket(_integral(total), cover)
                if row[7] is not None or row[11] is not None:
                    bucket = _extended_bucket(row, name, bucket)
                if bucket is not None:
                    found[row[1]] = bucket
        self._buckets[name] = found
        return found

    def histories(self, names: Iterable[str]) -> dict[str, ResourceHistory]:
        now = self.now_us
        loaded = set(self.loaded_days)
        started = [r for r in self.running if r.started_at_us < now]
        out = {}
        for name in names:
            rates = [(r, int(r.amounts.get(name, 0))) for r in started]
            out[name] = ResourceHistory(
                now_us=now,
                bucket_us=DAY_US,
                buckets=self.buckets(name),
                partials=_Partials(self, loaded, name),
                open_starts=[
                    (r.started_at_us, rate) for r, rate in rates if rate and r.ended_at_us is None
                ],
                running=[(r.ended_at_us, rate) for r, rate in rates if rate],
            )
        return out


def retry_limits(budgets) -> list[tuple[str, int, int]]:
    """(resource, window seconds, policy limit in base-unit·µs) of each budget with a limit
    above zero: what :func:`user_history` looks for a busy user's retry day with (grants and
    credits move the limit; then the arithmetic may still ask for another day)."""
    out = []
    for name, budget in budgets.items():
        limit = resource(name).from_hours(budget.limit_hours)
        if limit > 0:
            out.append((name, budget.window_seconds, limit))
    return out


async def _raw(conn: AsyncConnection):
    return (await conn.get_raw_connection()).driver_connection


async def user_history(
    conn: AsyncConnection,
    username: str,
    now: datetime,
    windows_seconds: Sequence[int],
    retry_limits: Sequence[tuple[str, int, int]] = (),
    *,
    also: tuple[str, Sequence] | None = None,
) -> UserHistory:
    """One round trip: rollup days of the longest window, the segments running at ``now``, and
    either every closed segment of the window (a user with at most
    :data:`WHOLE_WINDOW_SEGMENTS`) or the edge days' partial segments (the day of ``now`` and
    the day of each window's start), plus, for a busy user, the days where the retry time of
    each of ``retry_limits`` (resource, window seconds, limit in base-unit·µs) can lie
    (migrations/versions/0014: found from the days' totals, so a busy user over budget
    needs no second round trip); and ``also``'s (statement, parameters) rows, in
    ``also_rows`` (:data:`_ALSO_SQL`)."""
    now_us = to_us(now)
    longest = max(windows_seconds, default=0) * 1_000_000
    first_day = _bucket_of(now_us - longest)
    edges = sorted({_bucket_of(now_us)} | {_bucket_of(now_us - w * 1_000_000) for w in windows_seconds})  # fmt: skip
    history = UserHistory(now_us=now_us, loaded_days=set(edges))
    raw = await _raw(conn)
    sql, more = (_HISTORY_SQL, ()) if also is None else (_HISTORY_SQL + _ALSO_SQL.format(also[0]), also[1])  # fmt: skip
    records = await raw.fetch(
        sql,
        username,
        from_us(first_day),
        now,
        WHOLE_WINDOW_SEGMENTS,
        [from_us(z) for z in edges],
        [name for name, _, _ in retry_limits],
        [from_us(now_us - w * 1_000_000) for _, w, _ in retry_limits],
        [limit for _, _, limit in retry_limits],
        *more,
    )
    history.add_records(records)
    if history.whole_window:
        history.loaded_days.update(range(first_day, _bucket_of(now_us) + 1, DAY_US))
    return history


async def load_days(
    conn: AsyncConnection, username: str, history: UserHistory, days: Iterable[int]
) -> None:
    """Read the partial segments of more days (µs bucket starts) into ``history``."""
    days = sorted(set(days) - history.loaded_days)
    if not days:
        return
    raw = await _raw(conn)
    history.add_records(await raw.fetch(_DAYS_SQL, username, [from_us(z) for z in days]))
    history.loaded_days.update(days)


# --- upkeep -------------------------------------------------------------------------------

_HORIZON = text("SELECT raw_complete_since FROM rollup_horizon")

_DIFF = text(
    """
    WITH expected AS (SELECT * FROM quota_rollups_from_segments(:since)),
    stored AS (SELECT * FROM usage_rollups WHERE bucket_start >= quota_bucket_start(:since))
    SELECT COALESCE(e.username, s.username) AS username,
           COALESCE(e.bucket_start, s.bucket_start) AS bucket_start,
           to_jsonb(e) - 'username' - 'bucket_start' AS expected,
           to_jsonb(s) - 'username' - 'bucket_start' AS stored
    FROM expected e FULL JOIN stored s USING (username, bucket_start)
    WHERE e IS DISTINCT FROM s
      AND NOT (e.username IS NULL AND s.cpu_used = 0 AND s.memory_used = 0 AND s.gpu_used = 0
               AND s.extended_used = '{}' AND s.cpu_cover = 0 AND s.memory_cover = 0
               AND s.gpu_cover = 0 AND s.extended_cover = '{}' AND s.segments_started = 0
               AND s.segments_covering = 0)
    ORDER BY 2, 1
    LIMIT :limit
    """
)


_POOL_DIFF = text(
    """
    WITH expected AS (SELECT * FROM quota_pool_rollups_from_segments(:since)),
    stored AS (SELECT * FROM pool_rollups WHERE bucket_start >= quota_bucket_start(:since))
    SELECT COALESCE(e.group_name, s.group_name) AS group_name,
           COALESCE(e.width_seconds, s.width_seconds) AS width_seconds,
           COALESCE(e.bucket_start, s.bucket_start) AS bucket_start,
           to_jsonb(e) - 'group_name' - 'width_seconds' - 'bucket_start' AS expected,
           to_jsonb(s) - 'group_name' - 'width_seconds' - 'bucket_start' AS stored
    FROM expected e FULL JOIN stored s USING (group_name, width_seconds, bucket_start)
    WHERE e IS DISTINCT FROM s
      -- a bucket whose starts and ends cancelled (or a deleted member's) is all zeros
      AND NOT (e.group_name IS NULL AND s.cpu_rate = 0 AND s.memory_rate = 0
               AND s.gpu_rate = 0 AND s.cpu_delta = 0 AND s.memory_delta = 0
               AND s.gpu_delta = 0 AND s.cpu_delta_us = 0 AND s.memory_delta_us = 0
               AND s.gpu_delta_us = 0)
      AND NOT (s.group_name IS NULL AND e.cpu_rate = 0 AND e.memory_rate = 0
               AND e.gpu_rate = 0 AND e.cpu_delta = 0 AND e.memory_delta = 0
               AND e.gpu_delta = 0 AND e.cpu_delta_us = 0 AND e.memory_delta_us = 0
               AND e.gpu_delta_us = 0)
    ORDER BY 3, 1, 2
    LIMIT :limit
    """
)
_HAS_POOLS = text("SELECT to_regclass('pool_rollups') IS NOT NULL")
# The open totals (migrations/versions/0011): Σ of the stored delta rows per scope and
# resource, and every server's open-segment count, against the open segments (zeros are
# nothing: a key whose rows cancelled, a server with none open).
_OPEN_DIFF = text(
    """
    WITH expected AS (SELECT * FROM quota_open_totals_from_segments()),
    stored AS (SELECT scope, resource, sum(amount) AS amount,
                      sum(amount_start_us) AS amount_start_us
               FROM open_totals GROUP BY scope, resource)
    SELECT 'totals' AS kind, COALESCE(e.scope, s.scope) AS scope,
           COALESCE(e.resource, s.resource) AS name,
           jsonb_build_object('amount', e.amount, 'amount_start_us', e.amount_start_us) AS expected,
           jsonb_build_object('amount', s.amount, 'amount_start_us', s.amount_start_us) AS stored
    FROM expected e FULL JOIN stored s USING (scope, resource)
    WHERE (COALESCE(e.amount, 0), COALESCE(e.amount_start_us, 0))
          IS DISTINCT FROM (COALESCE(s.amount, 0), COALESCE(s.amount_start_us, 0))
    UNION ALL
    SELECT 'servers', COALESCE(e.username, s.username), COALESCE(e.servername, s.servername),
           jsonb_build_object('segments', e.segments), jsonb_build_object('segments', s.segments)
    FROM quota_open_servers_from_segments() e FULL JOIN open_servers s
      USING (username, servername)
    WHERE COALESCE(e.segments, 0) <> COALESCE(s.segments, 0)
    ORDER BY 1, 2, 3
    LIMIT :limit
    """
)
_HAS_OPEN_TOTALS = text("SELECT to_regclass('open_totals') IS NOT NULL")
_OPEN_REBUILD = [
    text("DELETE FROM open_totals"),
    text("INSERT INTO open_totals SELECT * FROM quota_open_totals_from_segments()"),
    text("DELETE FROM open_servers"),
    text("INSERT INTO open_servers SELECT * FROM quota_open_servers_from_segments()"),
]
_HAS_BLOCKS = text("SELECT to_regclass('usage_rollup_blocks') IS NOT NULL")

# the blocks holding a day from :since on, against the sums of their days in usage_rollups
# (days before the retention horizon included: the blocks are checked against the days,
# which are checked against the raw segments)
_BLOCK_STORED = (
    "usage_rollup_blocks WHERE bucket_start + make_interval(hours => 24 * width_days) "
    "> quota_bucket_start(:since)"
)
_BLOCK_DIFF = text(
    f"""
    WITH expected AS (SELECT * FROM quota_rollup_blocks_from_days(:since)),
    stored AS (SELECT * FROM {_BLOCK_STORED})
    SELECT COALESCE(e.username, s.username) AS username,
           COALESCE(e.width_days, s.width_days) AS width_days,
           COALESCE(e.bucket_start, s.bucket_start) AS bucket_start,
           to_jsonb(e) - 'username' - 'width_days' - 'bucket_start' AS expected,
           to_jsonb(s) - 'username' - 'width_days' - 'bucket_start' AS stored
    FROM expected e FULL JOIN stored s USING (username, width_days, bucket_start)
    WHERE e IS DISTINCT FROM s
      -- a block whose days cancelled out is all zeros, stored or not
      AND NOT (e.username IS NULL AND s.cpu_used = 0 AND s.memory_used = 0
               AND s.gpu_used = 0 AND s.segments_started = 0)
      AND NOT (s.username IS NULL AND e.cpu_used = 0 AND e.memory_used = 0
               AND e.gpu_used = 0 AND e.segments_started = 0)
    ORDER BY 3, 2, 1
    LIMIT :limit
    """  # noqa: S608 - a constant table expression
)
_BLOCK_DELETE = text(f"DELETE FROM {_BLOCK_STORED}")  # noqa: S608 - a constant
_BLOCK_INSERT = text(
    "INSERT INTO usage_rollup_blocks SELECT * FROM quota_rollup_blocks_from_days(:since) "
    "ORDER BY width_days, bucket_start, username"
)
_POOL_DELETE = text("DELETE FROM pool_rollups WHERE bucket_start >= quota_bucket_start(:since)")
_POOL_INSERT = text(
    "INSERT INTO pool_rollups SELECT * FROM quota_pool_rollups_from_segments(:since)"
)


@dataclass(frozen=True)
class Mismatch:
    username: str
    bucket_start: datetime
    expected: dict | None
    stored: dict | None

    def to_json(self) -> dict:
        return {
            "username": self.username,
            "day": self.bucket_start.isoformat(),
            "expected": self.expected,
            "stored": self.stored,
        }

    def describe(self) -> str:
        return (
            f"{self.username} {self.bucket_start:%Y-%m-%d}: stored {self.stored}, "
            f"expected {self.expected}"
        )


@dataclass(frozen=True)
class BlockMismatch:
    """A user's multi-day block (migrations/versions/0012) that differs from the sum of its
    days in ``usage_rollups``."""

    username: str
    width_days: int
    bucket_start: datetime
    expected: dict | None
    stored: dict | None

    def to_json(self) -> dict:
        return {
            "username": self.username,
            "block_days": self.width_days,
            "block_start": self.bucket_start.isoformat(),
            "expected": self.expected,
            "stored": self.stored,
        }

    def describe(self) -> str:
        return (
            f"{self.username} {self.width_days}-day block from {self.bucket_start:%Y-%m-%d}: "
            f"stored {self.stored}, expected {self.expected} (the sum of its days)"
        )


@dataclass(frozen=True)
class PoolMismatch:
    """A group's pool bucket (a day, hour or minute) that differs from its members' raw
    segments."""

    group_name: str
    width_seconds: int
    bucket_start: datetime
    expected: dict | None
    stored: dict | None

    def to_json(self) -> dict:
        return {
            "group": self.group_name,
            "bucket_seconds": self.width_seconds,
            "bucket_start": self.bucket_start.isoformat(),
            "expected": self.expected,
            "stored": self.stored,
        }

    def describe(self) -> str:
        return (
            f"pool {self.group_name} {self.width_seconds} s bucket at "
            f"{self.bucket_start:%Y-%m-%dT%H:%MZ}: stored {self.stored}, expected {self.expected}"
        )


@dataclass(frozen=True)
class OpenTotalsMismatch:
    """A scope's open total (``kind`` totals: scope, resource) or a server's open-segment
    count (``kind`` servers: username, servername) that differs from the open segments."""

    kind: str
    key: str
    name: str
    expected: dict | None
    stored: dict | None

    def to_json(self) -> dict:
        return {
            "open_" + self.kind: [self.key, self.name],
            "expected": self.expected,
            "stored": self.stored,
        }

    def describe(self) -> str:
        what = (
            f"open totals of {'the hub' if self.key == '' else 'group ' + self.key} {self.name}"
            if self.kind == "totals"
            else f"open segments of server {self.key}/{self.name}"
        )
        return f"{what}: stored {self.stored}, expected {self.expected}"


async def _since(conn: AsyncConnection, since: datetime | None) -> datetime:
    """The first instant whose days raw history can recompute (retention may have cut it)."""
    horizon = await conn.scalar(_HORIZON)
    floor = horizon or datetime.fromisoformat("1970-01-01T00:00:00+00:00")
    if horizon is not None:
        floor = from_us(-(-to_us(horizon) // DAY_US) * DAY_US)  # first whole day after it
    return floor if since is None or since < floor else since


async def day_mismatches_before(
    conn: AsyncConnection, until: datetime, limit: int = 10
) -> list[Mismatch]:
    """User days before ``until`` (from the rollup horizon on) whose stored rollups differ
    from their raw segments: what dropping those segments would make permanent. ORDER BY day,
    so the first is where a rebuild has to start."""
    start = await _since(conn, None)
    if start >= until:
        return []
    rows = (await conn.execute(_DIFF, {"since": start, "limit": 10**9})).all()
    return [
        Mismatch(r.username, r.bucket_start, r.expected, r.stored)
        for r in rows
        if r.bucket_start < until
    ][:limit]


async def verify(
    engine: AsyncEngine, since: datetime | None, limit: int = 100
) -> list[Mismatch | BlockMismatch | PoolMismatch | OpenTotalsMismatch]:
    """User days, pool buckets and open totals whose stored rollups differ from what the raw
    segments (and ``user_groups``, for pools and groups) say, and user blocks that differ from
    the sum of their days: up to ``limit`` of each."""
    async with engine.begin() as conn:
        await conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
        start = await _since(conn, since)
        rows = (await conn.execute(_DIFF, {"since": start, "limit": limit})).all()
        pool_rows = []
        if await conn.scalar(_HAS_POOLS):  # a schema before migration 0009 has none
            pool_rows = (await conn.execute(_POOL_DIFF, {"since": start, "limit": limit})).all()
        open_rows = []
        if await conn.scalar(_HAS_OPEN_TOTALS):  # a schema before migration 0011 has none
            open_rows = (await conn.execute(_OPEN_DIFF, {"limit": limit})).all()
        block_rows = []
        if await conn.scalar(_HAS_BLOCKS):  # nor one before 0012 blocks
            block_rows = (await conn.execute(_BLOCK_DIFF, {"since": start, "limit": limit})).all()
    blocks = [
        BlockMismatch(r.username, r.width_days, r.bucket_start, r.expected, r.stored)
        for r in block_rows
    ]
    return (
        [Mismatch(r.username, r.bucket_start, r.expected, r.stored) for r in rows]
        + blocks
        + [
            PoolMismatch(r.group_name, r.width_seconds, r.bucket_start, r.expected, r.stored)
            for r in pool_rows
        ]
        + [OpenTotalsMismatch(r.kind, r.scope, r.name, r.expected, r.stored) for r in open_rows]
    )


async def rebuild(engine: AsyncEngine, since: datetime | None) -> tuple[datetime, int, int]:
    """Recompute the user days and pool buckets from ``since`` (default: all raw history) and
    the open totals, from the segments and ``user_groups``, and the user blocks holding those
    days from the days.

    Writers wait (SHARE ROW EXCLUSIVE on segments and user_groups) so none slips between the
    delete and the recompute; readers do not. Returns (first day rebuilt, user-day rows
    written, pool bucket rows written).
    """
    async with engine.begin() as conn:
        await conn.execute(text("LOCK TABLE segments IN SHARE ROW EXCLUSIVE MODE"))
        await conn.execute(text("LOCK TABLE user_groups IN SHARE ROW EXCLUSIVE MODE"))
        start = await _since(conn, since)
        await conn.execute(
            text("DELETE FROM usage_rollups WHERE bucket_start >= quota_bucket_start(:since)"),
            {"since": start},
        )
        result = await conn.execute(
            text("INSERT INTO usage_rollups SELECT * FROM quota_rollups_from_segments(:since)"),
            {"since": start},
        )
        if await conn.scalar(_HAS_BLOCKS):
            # the days' triggers kept the blocks equal to the new days; recomputing them
            # also repairs a block that was wrong by itself
            await conn.execute(_BLOCK_DELETE, {"since": start})
            await conn.execute(_BLOCK_INSERT, {"since": start})
        pool_rows = 0
        if await conn.scalar(_HAS_POOLS):
            await conn.execute(_POOL_DELETE, {"since": start})
            pool_rows = (await conn.execute(_POOL_INSERT, {"since": start})).rowcount
        if await conn.scalar(_HAS_OPEN_TOTALS):  # what is open now: always all of it
            for statement in _OPEN_REBUILD:
                await conn.execute(statement)
        first = await conn.scalar(text("SELECT quota_bucket_start(:since)"), {"since": start})
    return first, result.rowcount, pool_rows
