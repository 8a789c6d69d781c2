"""What ``decide`` sends to PostgreSQL, counted on the pooled asyncpg connections of the
hub hook's engine (``db.create_engine``, not autocommit): its reads only, no transaction
around them, the connection back in the pool after, and one statement for a busy user over
budget too (migrations/versions/0014 ships the day the retry time falls in)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event

from ledger.core.decision import ServerRequest, to_us
from ledger.core.policy_yaml import parse_policy
from ledger.core.resources import GIB
from ledger.store import queries, rollups
from ledger.store.decide import decide

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
POLICY = parse_policy(
    "window: 30d\nunlisted_users: regular\ngroups:\n  regular: {memory: 60 GiB-hours}\n"
)
REQUEST = ServerRequest({"cpu": 1000, "memory": 4 * GIB})


@pytest.fixture
async def statements(engine):
    sent: list[str] = []

    @event.listens_for(engine.sync_engine, "connect")
    def _log(dbapi_connection, record) -> None:
        dbapi_connection.driver_connection.add_query_logger(lambda q: sent.append(q.query))

    await engine.dispose()  # every connection from here on is a logged one
    return sent


async def _segments(engine, username: str, starts, hours: float, memory_gib: int = 4) -> None:
    async with engine.begin() as conn:
        await queries.upsert_segments(
            conn,
            [
                {
                    "pod_uid": f"{username}-{i}",
                    "username": username,
                    "servername": "",
                    "cpu_millicores": 1000,
                    "memory_bytes": memory_gib * GIB,
                    "gpu_count": 0,
                    "extended": {},
                    "started_at": start,
                    "ended_at": start + timedelta(hours=hours),
                }
                for i, start in enumerate(starts)
            ],
        )


async def test_decide_sends_one_read_and_no_transaction_on_the_hooks_engine(engine, statements):
    starts = [NOW - timedelta(days=d, hours=3) for d in range(1, 20)]
    await _segments(engine, "quiet", starts, 1, memory_gib=1)
    await decide(engine, POLICY, "quiet", [], REQUEST, NOW)  # the pool's first connection
    await asyncio.sleep(0)
    statements.clear()
    for _ in range(3):
        decision = await decide(engine, POLICY, "quiet", [], REQUEST, NOW)
    await asyncio.sleep(0)  # asyncpg calls its query loggers soon after a query, not at once
    assert decision.allowed
    assert len(statements) == 3, statements
    assert not [q for q in statements if q.split()[0].upper() in ("BEGIN", "ROLLBACK", "COMMIT")]
    # the connection decide checked out of the pool directly went back to it
    assert engine.sync_engine.pool.checkedout() == 0


async def test_a_busy_user_over_budget_costs_one_statement(engine, statements, monkeypatch):
    # read as a busy user (edge days only); 8 GiB for 2 h every 6 h of the last 30 days is
    # 1,920 GiB-hours: denied, and the retry time lies in a day near the end of the window
    monkeypatch.setattr(rollups, "WHOLE_WINDOW_SEGMENTS", -1)
    starts = [NOW - timedelta(hours=6 * k + 3) for k in range(1, 4 * 30)]
    await _segments(engine, "busy", starts, 2, memory_gib=8)
    await decide(engine, POLICY, "busy", [], REQUEST, NOW)
    await asyncio.sleep(0)
    statements.clear()
    decision = await decide(engine, POLICY, "busy", [], REQUEST, NOW)
    await asyncio.sleep(0)
    assert not decision.allowed and decision.retry_at is not None
    assert len(statements) == 1, statements
    # and the answer is exact: allowed at retry_at, denied a second before
    assert (await decide(engine, POLICY, "busy", [], REQUEST, decision.retry_at)).allowed
    before = decision.retry_at - timedelta(seconds=1)
    assert not (await decide(engine, POLICY, "busy", [], REQUEST, before)).allowed
    # the retry day was not an edge day: the hint is what spared the second trip
    day = to_us(decision.retry_at) - 30 * 86_400_000_000
    assert day // 86_400_000_000 not in {
        to_us(NOW) // 86_400_000_000,
        (to_us(NOW) - 30 * 86_400_000_000) // 86_400_000_000,
    }
