"""What runs per scope and a pool budget's open part, read from the open totals (migration
0011), equal the scans they replace (benchmarks/open_scan_reference.py) exactly, on a real
PostgreSQL: segments open, closed, touching, zero-length, starting after ``now``, closed after
``now``, resized, deleted, several of one server at once; memberships changing; live,
expired and superseded leases; any ``now``; a requesting user whose groups the hub reports
differently from the cache; the requested server left out. ``rollups verify|rebuild`` cover
the totals; concurrent writers neither miss each other nor wait on a hub-wide row."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from ledger.core.resources import GIB
from ledger.store import queries, rollups, shared_reads

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.open_scan_reference import (  # noqa: E402
    POOL_USED_SCAN_SQL,
    SCOPED_SCAN_SQL,
)
from benchmarks.open_scan_reference import normal as _normal  # noqa: E402

T0 = datetime(2026, 11, 1, 12, tzinfo=UTC)
USERS = ["ann", "bob", "cy", "dee"]
SERVERS = ["", "lab"]
GROUPS = ["g1", "g2", "g3"]
WINDOWS_SECONDS = [3660, 25200, 86400, 172800]
FPGA = "example.com/fpga"


def _at(offset_seconds: float) -> datetime:
    return T0 + timedelta(seconds=offset_seconds)


# instants within ±3 hours of T0 (the checks' too), to the microsecond, and exact anchors
# so segments touch, start or end exactly at a check's instant
ANCHORS = [-7200, -60, 0, 1, 3600]
times = st.one_of(
    st.integers(-3 * 3_600_000_000, 3 * 3_600_000_000).map(lambda us: _at(us / 1e6)),
    st.sampled_from(ANCHORS).map(_at),
    st.integers(-3 * 86_400, 0).map(_at),  # long-running: started before a window's start
)
segment = st.fixed_dictionaries(
    {
        "user": st.sampled_from(USERS),
        "server": st.sampled_from(SERVERS),
        "start": times,
        "end": times,
        "open": st.booleans(),
        "cpu": st.integers(0, 4000),
        "memory_gib": st.integers(0, 64),
        "gpu": st.integers(0, 2),
        "fpga": st.sampled_from([0, 0, 1, 3]),
    }
)
lease = st.fixed_dictionaries(
    {
        "user": st.sampled_from(USERS),
        "server": st.sampled_from(SERVERS),
        "pools": st.sets(st.sampled_from(GROUPS)),
        "taken": times,
        "ttl_seconds": st.integers(1, 4 * 3600),
        "gpu": st.integers(0, 2),
        "fpga": st.sampled_from([0, 2]),
    }
)
operation = st.one_of(
    st.tuples(st.just("add"), segment),
    st.tuples(st.just("add"), segment),
    st.tuples(st.just("groups"), st.sampled_from(USERS), st.sets(st.sampled_from(GROUPS))),
    st.tuples(st.just("close"), st.integers(0, 50), times),
    st.tuples(st.just("resize"), st.integers(0, 50), st.integers(0, 8000)),
    st.tuples(st.just("delete"), st.integers(0, 50)),
    st.tuples(st.just("lease"), lease),
)


async def _apply(engine, ops) -> None:
    added: list[tuple[str, datetime]] = []
    for i, op in enumerate(ops):
        async with engine.begin() as conn:
            if op[0] == "add":
                s = op[1]
                start, end = sorted([s["start"], s["end"]])
                uid = f"pod-{i}"
                await queries.upsert_segments(
                    conn,
                    [{"pod_uid": uid, "username": s["user"], "servername": s["server"],
                      "cpu_millicores": s["cpu"], "memory_bytes": s["memory_gib"] * GIB,
                      "gpu_count": s["gpu"], "extended": {FPGA: s["fpga"]} if s["fpga"] else {},
                      "started_at": start, "ended_at": None if s["open"] else end}],
                )  # fmt: skip
                added.append((uid, start))
            elif op[0] == "groups":
                await queries.record_groups(conn, op[1], sorted(op[2]), T0)
            elif op[0] == "close" and added:
                uid, start = added[op[1] % len(added)]
                await conn.execute(
                    text(
                        "UPDATE segments SET ended_at = :end WHERE pod_uid = :uid "
                        "AND ended_at IS NULL"
                    ),
                    {"end": max(start, op[2]), "uid": uid},
                )
            elif op[0] == "resize" and added:
                uid, _ = added[op[1] % len(added)]
                await conn.execute(
                    text("UPDATE segments SET cpu_millicores = :cpu WHERE pod_uid = :uid"),
                    {"cpu": op[2], "uid": uid},
                )
            elif op[0] == "delete" and added:
                uid, _ = added.pop(op[1] % len(added))
                await conn.execute(text("DELETE FROM segments WHERE pod_uid = :uid"), {"uid": uid})
            elif op[0] == "lease":
                x = op[1]
                await conn.execute(
                    text(
                        "INSERT INTO leases (username, servername, pools, cpu_millicores, "
                        "memory_bytes, gpu_count, extended, taken_at, expires_at) VALUES "
                        "(:u, :s, :p, 500, :m, :g, CAST(:e AS jsonb), :t, :x) "
                        "ON CONFLICT (username, servername) DO UPDATE SET pools = EXCLUDED.pools, "
                        "gpu_count = EXCLUDED.gpu_count, taken_at = EXCLUDED.taken_at, "
                        "expires_at = EXCLUDED.expires_at, extended = EXCLUDED.extended"
                    ),
                    {"u": x["user"], "s": x["server"], "p": sorted(x["pools"]), "m": GIB,
                     "g": x["gpu"], "e": json.dumps({FPGA: x["fpga"]} if x["fpga"] else {}),
                     "t": x["taken"], "x": x["taken"] + timedelta(seconds=x["ttl_seconds"])},
                )  # fmt: skip


async def _compare(engine, at, username, servername, reported, hub, capped) -> None:
    async with engine.connect() as conn:
        raw = await shared_reads._raw(conn)
        want = await raw.fetch(
            SCOPED_SCAN_SQL, at, username, servername, hub, capped, reported, False
        )
        reads = [(g, g in reported, w) for g in GROUPS for w in WINDOWS_SECONDS]
        got, _, used = await shared_reads.open_scoped(
            raw, at, username, servername, hub, capped, reported, pool_reads=reads
        )
        assert _normal(got) == _normal(want), (at, username, servername, reported, capped)
        for (group, in_group, window), merged in zip(reads, used, strict=True):
            args = (group, username, in_group, at, float(window))
            new = await raw.fetchrow(shared_reads._POOL_USED, *args)
            old = await raw.fetchrow(POOL_USED_SCAN_SQL, *args)
            assert tuple(new) == tuple(old), (args, new, old)
            assert [merged[n] for n in ("cpu", "memory", "gpu")] == [int(x) for x in old]


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    memberships=st.lists(
        st.tuples(st.just("groups"), st.sampled_from(USERS), st.sets(st.sampled_from(GROUPS))),
        max_size=4,
    ),
    ops=st.lists(operation, min_size=1, max_size=16),
    checks=st.lists(
        st.tuples(
            times,
            st.sampled_from(["", *USERS]),
            st.sampled_from(SERVERS),
            st.sets(st.sampled_from(GROUPS)),
            st.booleans(),
            st.sets(st.sampled_from(GROUPS)),
        ),
        min_size=1,
        max_size=3,
    ),
)
async def test_reads_from_the_open_totals_equal_the_scans(engine, memberships, ops, checks):
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "TRUNCATE segments, usage_rollups, pool_rollups, user_groups, leases, "
                "open_totals, open_servers"
            )
        )
    await _apply(engine, memberships + ops)
    for at, username, servername, reported, hub, capped in checks:
        await _compare(engine, at, username, servername, sorted(reported), hub, sorted(capped))
    assert await rollups.verify(engine, None) == []


async def _open(engine, uid, user, server="", start=T0, gpu=1):
    async with engine.begin() as conn:
        await queries.upsert_segments(
            conn,
            [{"pod_uid": uid, "username": user, "servername": server, "cpu_millicores": 100,
              "memory_bytes": GIB, "gpu_count": gpu, "started_at": start, "ended_at": None}],
        )  # fmt: skip


async def _hub(engine, at=T0 + timedelta(hours=1)) -> dict:
    async with engine.connect() as conn:
        raw = await shared_reads._raw(conn)
        rows, _, _ = await shared_reads.open_scoped(raw, at, "", "", True, GROUPS, [])
    return _normal(rows)


async def test_verify_finds_a_planted_corruption_of_the_open_totals_and_rebuild_repairs_it(
    engine,
):
    async with engine.begin() as conn:
        await queries.record_groups(conn, "ann", ["g1"], T0)
    await _open(engine, "p1", "ann")
    await _open(engine, "p2", "ann", start=T0 + timedelta(minutes=5))
    assert await rollups.verify(engine, None) == []
    for corruption in (
        "INSERT INTO open_totals VALUES ('g1', 'gpu', 1, 0)",
        "UPDATE open_servers SET segments = 1",
    ):
        async with engine.begin() as conn:
            await conn.execute(text(corruption))
        found = await rollups.verify(engine, None)
        assert found and all(isinstance(m, rollups.OpenTotalsMismatch) for m in found), found
        assert found[0].describe() and found[0].to_json()
        await rollups.rebuild(engine, None)
        assert await rollups.verify(engine, None) == []
    assert (await _hub(engine))[("sum", "", "servers")] == 1  # one server, two segments


async def test_two_writers_of_one_server_count_it_once(engine):
    # two pods of one server opened by concurrent transactions: the second waits on the
    # server's open_servers row, so only one of them counts the server
    a, b = await engine.connect(), await engine.connect()
    try:
        ta, tb = await a.begin(), await b.begin()
        rows = {"username": "bob", "servername": "", "cpu_millicores": 1, "memory_bytes": 0,
                "gpu_count": 1, "started_at": T0, "ended_at": None}  # fmt: skip
        await queries.upsert_segments(a, [{**rows, "pod_uid": "pa"}])
        later = asyncio.ensure_future(queries.upsert_segments(b, [{**rows, "pod_uid": "pb"}]))
        await asyncio.sleep(0.5)
        assert not later.done()
        await ta.commit()
        await later
        await tb.commit()
    finally:
        await a.close()
        await b.close()
    hub = await _hub(engine)
    assert hub[("sum", "", "servers")] == 1 and hub[("sum", "", "gpu")] == 2
    assert await rollups.verify(engine, None) == []


async def test_a_long_writer_holding_the_hub_totals_does_not_block_another(engine):
    # an import-like transaction closes open segments and stays open; the collector opens and
    # closes other servers meanwhile without waiting (no hub-wide row to wait on), and both
    # commits add up
    for i in range(3):
        await _open(engine, f"old-{i}", USERS[i])
    long = await engine.connect()
    try:
        tx = await long.begin()
        await long.execute(
            text("UPDATE segments SET ended_at = :t WHERE pod_uid LIKE 'old-%'"),
            {"t": T0 + timedelta(minutes=1)},
        )
        await asyncio.wait_for(_open(engine, "new-1", "dee", "x"), 5)
        async with engine.begin() as conn:
            await asyncio.wait_for(
                conn.execute(
                    text("UPDATE segments SET ended_at = :t WHERE pod_uid = 'new-1'"),
                    {"t": T0 + timedelta(minutes=2)},
                ),
                5,
            )
        await asyncio.wait_for(_open(engine, "new-2", "dee", "y"), 5)
        assert (await _hub(engine))[("sum", "", "servers")] == 4  # 3 old + new-2
        await tx.commit()
    finally:
        await long.close()
    hub = await _hub(engine, T0 + timedelta(hours=2))
    assert hub[("sum", "", "servers")] == 1
    assert await rollups.verify(engine, None) == []
    async with engine.connect() as conn:  # folded: about one row per key and writer
        rows = await conn.scalar(text("SELECT count(*) FROM open_totals"))
        keys = await conn.scalar(
            text("SELECT count(*) FROM (SELECT DISTINCT scope, resource FROM open_totals) k")
        )
    assert rows <= 2 * keys


async def test_a_segment_opened_while_a_membership_changes_is_counted_either_order(engine):
    for first in ("segment", "membership"):
        async with engine.begin() as conn:
            await conn.execute(
                text("TRUNCATE segments, user_groups, open_totals, open_servers, leases")
            )
        a, b = await engine.connect(), await engine.connect()
        try:
            ta, tb = await a.begin(), await b.begin()
            segment = queries.upsert_segments(
                a if first == "segment" else b,
                [{"pod_uid": f"p-{first}", "username": "cy", "cpu_millicores": 100,
                  "memory_bytes": GIB, "gpu_count": 1, "started_at": T0, "ended_at": None}],
            )  # fmt: skip
            membership = queries.record_groups(b if first == "segment" else a, "cy", ["g2"], T0)
            await (segment if first == "segment" else membership)
            later = asyncio.ensure_future(membership if first == "segment" else segment)
            await asyncio.sleep(0.5)
            assert not later.done()  # waits for the first transaction
            await ta.commit()
            await later
            await tb.commit()
        finally:
            await a.close()
            await b.close()
        totals = await _hub(engine)
        assert totals[("sum", "g2", "gpu")] == 1 and totals[("sum", "g2", "servers")] == 1
        assert await rollups.verify(engine, None) == []


async def test_the_requesting_user_counts_in_the_groups_the_hub_reports(engine):
    # ann is cached in g1 only; the hub reports her in g2 only (or both, or neither): her open
    # segments (one long-running, from before every window) and one closed after ``at`` move
    # with the reported groups, in the caps and the budgets' open parts alike
    async with engine.begin() as conn:
        await queries.record_groups(conn, "ann", ["g1"], T0)
        await queries.record_groups(conn, "bob", ["g1", "g2"], T0)
    await _open(engine, "a1", "ann", "", T0 - timedelta(days=3))
    await _open(engine, "a2", "ann", "lab", T0 - timedelta(minutes=7))
    await _open(engine, "b1", "bob", "", T0 - timedelta(hours=2))
    await _open(engine, "b2", "bob", "x", T0 + timedelta(hours=2))  # starts after ``at``
    async with engine.begin() as conn:
        await queries.upsert_segments(
            conn,
            [{"pod_uid": "a3", "username": "ann", "servername": "old", "cpu_millicores": 7,
              "memory_bytes": GIB, "gpu_count": 1, "started_at": T0 - timedelta(hours=1),
              "ended_at": T0 + timedelta(hours=1, microseconds=1)}],
        )  # fmt: skip
    at = T0 + timedelta(hours=1)
    for reported in ([], ["g1"], ["g2"], ["g1", "g2"]):
        for server in ("", "lab", "none"):
            await _compare(engine, at, "ann", server, reported, True, ["g1", "g2"])
    got = await _hub(engine, at)
    assert got[("sum", "g1", "servers")] == 4 and got[("sum", "", "servers")] == 4


async def test_migration_0011_upgrades_a_loaded_ledger_in_place_and_downgrades(empty_db_url):
    from alembic import command

    from ledger.store import db

    await db.migrate(empty_db_url, "0010")
    engine = db.create_engine(empty_db_url)
    try:
        async with engine.begin() as conn:
            await queries.record_groups(conn, "ann", ["g1", "g2"], T0)
            await queries.record_groups(conn, "bob", ["g2"], T0)
            await queries.upsert_segments(
                conn,
                [{"pod_uid": f"p{i}", "username": USERS[i % 3], "servername": SERVERS[i % 2],
                  "cpu_millicores": 100 * i, "memory_bytes": i * GIB, "gpu_count": i % 2,
                  "extended": {FPGA: i % 3}, "started_at": T0 - timedelta(hours=i),
                  "ended_at": None if i % 4 else T0 + timedelta(minutes=i)}
                 for i in range(12)],
            )  # fmt: skip
        await db.migrate(empty_db_url)
        assert await rollups.verify(engine, None) == []
        await _compare(engine, T0, "ann", "", ["g1"], True, GROUPS)
        await _compare(engine, T0 + timedelta(minutes=30), "bob", "lab", ["g2"], True, GROUPS)
        await asyncio.to_thread(command.downgrade, db.alembic_config(empty_db_url), "0010")
        async with engine.connect() as conn:
            assert not await conn.scalar(text("SELECT to_regclass('open_totals') IS NOT NULL"))
            assert not await conn.scalar(
                text("SELECT to_regclass('ix_segments_open_started') IS NOT NULL")
            )
        await db.migrate(empty_db_url)  # and up again
        assert await rollups.verify(engine, None) == []
    finally:
        await engine.dispose()


async def test_a_segment_cannot_start_or_end_at_infinity_and_0016_downgrades(empty_db_url):
    # an open segment has ended_at NULL; 'infinity' would read as running in the scans but
    # not in the open totals, so the check of migration 0016 refuses it by name
    from alembic import command
    from sqlalchemy.exc import DBAPIError

    from ledger.store import db

    await db.migrate(empty_db_url)
    engine = db.create_engine(empty_db_url)
    insert = (
        "INSERT INTO segments (pod_uid, username, servername, cpu_millicores, memory_bytes, "
        "gpu_count, started_at, ended_at, last_seen_at) VALUES ('p1', 'ann', '', 100, 1, 1, "
        "{start}, {end}, now())"
    )
    try:
        for start, end in (("now()", "'infinity'"), ("'-infinity'", "NULL")):
            with pytest.raises(DBAPIError, match="ck_segments_finite_times"):
                async with engine.begin() as conn:
                    await conn.execute(text(insert.format(start=start, end=end)))
        await asyncio.to_thread(command.downgrade, db.alembic_config(empty_db_url), "0012")
        async with engine.connect() as conn:
            assert not await conn.scalar(
                text("SELECT to_regprocedure('quota_pool_used(text, text, boolean, "
                     "timestamptz, double precision)') IS NOT NULL")
            )  # fmt: skip
        await db.migrate(empty_db_url)  # and up again
        assert await rollups.verify(engine, None) == []
    finally:
        await engine.dispose()


def _migration(name: str):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "migrations" / "versions" / name
    spec = importlib.util.spec_from_file_location(f"quota_ledger_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def _takes_open_totals_only(engine, at, username) -> bool:
    # migration 0017's branch condition, evaluated on its own: the test knows which branch
    # each comparison exercises
    guard = _migration("0017_shared_open_fast_path.py")._MAY_CORRECT
    sql = (
        "SELECT NOT EXISTS (SELECT 1 FROM leases l WHERE l.expires_at > p_at "
        f"AND l.taken_at <= p_at) AND NOT ({guard})"
    )
    sql = sql.replace("p_at", "CAST(:at AS timestamptz)").replace("p_username", ":username")
    async with engine.connect() as conn:
        return await conn.scalar(text(sql), {"at": at, "username": username})


async def test_open_totals_alone_answer_when_nothing_needs_correcting_and_each_guard_sends_back(
    engine,
):
    # a decide about the present: others' servers started before ``at``, one stopped before
    # it, the requesting user (cy) runs nothing; 0017 reads the open totals alone. Then each
    # of its guards in turn (a server starting after ``at``, one stopped after it, cy's own,
    # a live lease) sends the read back to 0016's corrected query: every answer equals the scan
    at = T0 + timedelta(hours=1)
    async with engine.begin() as conn:
        await queries.record_groups(conn, "ann", ["g1"], T0)
        await queries.record_groups(conn, "bob", ["g1", "g2"], T0)
        await queries.record_groups(conn, "cy", ["g2"], T0)
    await _open(engine, "a1", "ann", "", T0 - timedelta(days=3))
    await _open(engine, "b1", "bob", "lab", T0 - timedelta(minutes=7), gpu=2)
    async with engine.begin() as conn:
        await queries.upsert_segments(
            conn,
            [{"pod_uid": "b0", "username": "bob", "servername": "", "cpu_millicores": 7,
              "memory_bytes": GIB, "gpu_count": 1, "extended": {FPGA: 2},
              "started_at": T0 - timedelta(hours=2), "ended_at": T0}],
        )  # fmt: skip

    async def compare_all(fast: bool) -> None:
        assert await _takes_open_totals_only(engine, at, "cy") is fast
        for reported in ([], ["g2"], ["g1", "g2"]):
            for hub, capped in ((True, GROUPS), (False, ["g1"]), (True, [])):
                await _compare(engine, at, "cy", "", reported, hub, capped)

    await compare_all(fast=True)
    got = await _hub(engine, at)
    assert got[("sum", "g1", "servers")] == 2 and got[("sum", "g1", "gpu")] == 3
    # grants and credits of the budgeted pools still show on the fast branch
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO quota_grants (group_name, resource, amount_hours, starts_at, "
                "ends_at, reason, granted_by) VALUES ('g1', 'gpu', 2, :s, :e, 'course', 'admin')"
            ),
            {"s": T0, "e": T0 + timedelta(days=2)},
        )
    async with engine.connect() as conn:
        raw = await shared_reads._raw(conn)
        for budgeted, adjusted in ((["g1"], True), (["g2"], False), ([], False)):
            _, flag, _ = await shared_reads.open_scoped(
                raw, at, "cy", "", True, GROUPS, ["g2"], budgeted, at - timedelta(days=30)
            )
            assert flag is adjusted, budgeted

    async def add(uid, user, server, start, end):
        async with engine.begin() as conn:
            await queries.upsert_segments(
                conn,
                [{"pod_uid": uid, "username": user, "servername": server, "cpu_millicores": 50,
                  "memory_bytes": 2 * GIB, "gpu_count": 1, "started_at": start,
                  "ended_at": end}],
            )  # fmt: skip

    async def remove(uid):
        async with engine.begin() as conn:
            await conn.execute(text("DELETE FROM segments WHERE pod_uid = :u"), {"u": uid})

    guards = [
        ("later", "ann", "x", at + timedelta(seconds=1), None),  # opens after ``at``
        ("stopped", "bob", "y", T0, at + timedelta(microseconds=1)),  # ran at ``at``, stops after
        ("own", "cy", "", T0, None),  # the requesting user's
        ("own-stopped", "cy", "z", T0, at + timedelta(hours=1)),
    ]
    for uid, user, server, start, end in guards:
        await add(uid, user, server, start, end)
        await compare_all(fast=False)
        await remove(uid)
        await compare_all(fast=True)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO leases (username, servername, pools, cpu_millicores, memory_bytes, "
                "gpu_count, extended, taken_at, expires_at) VALUES ('dee', '', '{g1}', 500, 0, "
                "1, '{}', :t, :x)"
            ),
            {"t": at - timedelta(seconds=30), "x": at + timedelta(minutes=5)},
        )
    await compare_all(fast=False)
    assert (await _hub(engine, at))[("sum", "g1", "servers")] == 3
    assert await rollups.verify(engine, None) == []


async def test_migrations_0017_to_0019_downgrade_to_0016s_reads_and_up_again(empty_db_url):
    from alembic import command

    from ledger.store import db

    await db.migrate(empty_db_url)
    engine = db.create_engine(empty_db_url)
    source = "SELECT prosrc FROM pg_proc WHERE proname = 'quota_shared_open'"
    pool_source = "SELECT prosrc FROM pg_proc WHERE proname = 'quota_pool_used'"
    try:
        async with engine.begin() as conn:
            await queries.record_groups(conn, "ann", ["g1"], T0)
        await _open(engine, "a1", "ann", "", T0 - timedelta(hours=1))
        async with engine.connect() as conn:
            assert "ELSIF" in await conn.scalar(text(source))
            assert (await conn.scalar(text(source))).count("OFFSET 0) s") == 2  # 0019
            assert (await conn.scalar(text(pool_source))).count("LIMIT 1) member") == 3
        await asyncio.to_thread(command.downgrade, db.alembic_config(empty_db_url), "0018")
        async with engine.connect() as conn:
            assert "ELSIF" in await conn.scalar(text(source))
            assert "OFFSET 0) s" not in await conn.scalar(text(source))
        await _compare(engine, T0, "ann", "", [], True, GROUPS)  # ann runs one: touched
        await asyncio.to_thread(command.downgrade, db.alembic_config(empty_db_url), "0016")
        async with engine.connect() as conn:
            assert "ELSIF" not in await conn.scalar(text(source))
            assert "LIMIT 1) member" not in await conn.scalar(text(pool_source))
        await _compare(engine, T0, "bob", "", [], True, GROUPS)
        await db.migrate(empty_db_url)
        await _compare(engine, T0, "bob", "", [], True, GROUPS)
        await _compare(engine, T0, "ann", "", [], True, GROUPS)
        assert (await _hub(engine, T0))[("sum", "g1", "servers")] == 1
    finally:
        await engine.dispose()
