"""A group pool's usage history, in the shape a user's has (ledger/store/rollups.py), so the
one retry arithmetic (``ledger.core.grants.first_below_stopped`` over
``ledger.core.rollup_usage.ResourceHistory``) answers "when does the pool have room again?"
exactly, as it answers it for one user.

The pool's history is its members' summed: a day's ``used`` and ``cover_rate`` are the sums
of the members' (the integral and the rate are additive), a loaded day's partial segments
and the running segments are all the members' segments of that kind. Members are the
``user_groups`` cache, except the requesting user, whose groups are the ones the hub reported
(the rule of ledger/store/shared_reads.py).

:data:`POOL_DAYS_SQL` is the only place the pool's per-day series is read: today it sums the
members' ``usage_rollups`` rows; a per-(group, day) rollup table can replace its body (same
columns) without touching anything else.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from ledger.core.decision import ceil_to_second, from_us, to_us
from ledger.core.grants import LimitSteps, first_below_stopped
from ledger.core.rollup_usage import DAY_US, NeedBuckets
from ledger.store.rollups import UserHistory

# $1 group, $2 the requesting user, $3 whether $2 is in the group (its hub-reported groups)
MEMBERS_SQL = """
    SELECT username FROM user_groups WHERE group_name = $1 AND username <> $2
    UNION SELECT $2 WHERE $3
"""

# The pool's per-day series from day $4 to day $5 (bucket starts), in the rollup row shape
# of ledger/store/rollups.py (kind 2). Pool budgets cover the core resources only.
POOL_DAYS_SQL = """
    SELECT 2 AS kind, quota_epoch_us(r.bucket_start) AS a, NULL::bigint AS b, '' AS servername,
           sum(r.cpu_cover)::bigint AS cpu, sum(r.memory_cover)::bigint AS memory,
           sum(r.gpu_cover)::bigint AS gpu, NULL::jsonb AS ext,
           sum(r.cpu_used)::text AS cpu_used, sum(r.memory_used)::text AS memory_used,
           sum(r.gpu_used)::text AS gpu_used, NULL::jsonb AS ext_used
    FROM usage_rollups r
    WHERE r.username IN (SELECT username FROM members)
      AND r.bucket_start >= $4 AND r.bucket_start <= $5
    GROUP BY r.bucket_start
"""

_SEGMENT_COLUMNS = (
    "quota_epoch_us(started_at), quota_epoch_us(ended_at), {name}, cpu_millicores, "
    "memory_bytes, gpu_count, NULL::jsonb, NULL, NULL, NULL, NULL::jsonb"
)
# the members' segments running at $6 (kind 0)
_RUNNING_SQL = f"""
    SELECT 0, {_SEGMENT_COLUMNS.format(name="servername")}
    FROM segments
    WHERE username IN (SELECT username FROM members)
      AND COALESCE(ended_at, 'infinity'::timestamptz) > $6 AND started_at < $6
"""  # noqa: S608 - a constant column list


def _partials_sql(first_param: int, count: int) -> str:
    # Per day: the members' closed segments starting inside it or ending inside it (kind 1,
    # keyed by segment id), the rows ledger/store/rollups.py reads for one user.
    arms = [
        f"(started_at >= ${i} AND started_at < ${i} + interval '24 hours') OR "
        f"(COALESCE(ended_at, 'infinity'::timestamptz) > ${i} AND "
        f"COALESCE(ended_at, 'infinity'::timestamptz) < ${i} + interval '24 hours')"
        for i in range(first_param, first_param + count)
    ]
    return f"""
    SELECT 1, {_SEGMENT_COLUMNS.format(name="id::text")}
    FROM segments
    WHERE username IN (SELECT username FROM members) AND ended_at IS NOT NULL
      AND ({" OR ".join(arms)})
    """  # noqa: S608 - constants and placeholders only


def _bucket_of(at_us: int) -> int:
    return at_us - at_us % DAY_US


async def pool_history(
    raw, group: str, username: str, in_group: bool, now: datetime, window_seconds: int
) -> UserHistory:
    """One round trip: the pool's days of the window, its members' running segments, and the
    edge days' partial segments (the day of ``now`` and of the window's start)."""
    now_us = to_us(now)
    first_day = _bucket_of(now_us - window_seconds * 1_000_000)
    edges = sorted({first_day, _bucket_of(now_us)})
    sql = (
        f"WITH members AS MATERIALIZED ({MEMBERS_SQL}) {POOL_DAYS_SQL} UNION ALL "
        f"{_RUNNING_SQL} UNION ALL {_partials_sql(7, len(edges))}"
    )
    history = UserHistory(now_us=now_us, loaded_days=set(edges))
    records = await raw.fetch(
        sql, group, username, in_group, from_us(first_day), from_us(_bucket_of(now_us)), now,
        *(from_us(z) for z in edges),
    )  # fmt: skip
    history.add_records(records)
    return history


async def load_pool_days(
    raw, group: str, username: str, in_group: bool, history: UserHistory, days: Iterable[int]
) -> None:
    """Read the members' partial segments of more days (µs bucket starts) into ``history``."""
    days = sorted(set(days) - history.loaded_days)
    if not days:
        return
    sql = f"WITH members AS MATERIALIZED ({MEMBERS_SQL}) {_partials_sql(4, len(days))}"
    history.add_records(
        await raw.fetch(sql, group, username, in_group, *(from_us(z) for z in days))
    )
    history.loaded_days.update(days)


async def retry_times(
    raw,
    group: str,
    username: str,
    in_group: bool,
    now: datetime,
    asks: Sequence[tuple[str, int, LimitSteps]],
) -> dict[tuple[str, int], int | None]:
    """For each spent budget ``(resource, window seconds, limit steps)`` of the pool: the first
    whole second (epoch µs) at which its usage is below the limit again if the servers its
    members run now stopped now — the rule of a user's ``retry_at`` — or None if never."""
    out: dict[tuple[str, int], int | None] = {}
    by_window: dict[int, list[tuple[str, LimitSteps]]] = {}
    for name, window, steps in asks:
        by_window.setdefault(window, []).append((name, steps))
    for window, wanted in sorted(by_window.items()):
        history = await pool_history(raw, group, username, in_group, now, window)
        window_us = window * 1_000_000
        pending = list(wanted)
        # each round loads the days the answers asked for; a crossing lies in one day per
        # limit piece, so the bound is generous
        for _ in range(2 + 2 * sum(len(s.pieces) for _, s in wanted)):
            histories: Mapping = history.histories([n for n, _ in pending])
            needed, waiting = set(), []
            for name, steps in pending:
                try:
                    below = first_below_stopped(histories[name], window_us, steps)
                except NeedBuckets as need:
                    needed |= need.bucket_starts
                    waiting.append((name, steps))
                    continue
                out[name, window] = None if below is None else ceil_to_second(below)
            if not waiting:
                break
            await load_pool_days(raw, group, username, in_group, history, needed)
            pending = waiting
        else:
            raise RuntimeError(f"pool {group!r}: the retry time kept asking for more days")
    return out
