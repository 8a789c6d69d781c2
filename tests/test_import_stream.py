"""The streaming import (ledger/store/importer.py ``import_file``) and the fast path for
well-formed rows (ledger/core/import_rows.py ``parse_row_fast``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from ledger.core.import_rows import (
    ImportError_,
    parse_record_chunks,
    parse_row,
    parse_row_fast,
    record_of,
)
from ledger.store import rollups
from ledger.store.importer import import_file

T0 = datetime(2026, 9, 20, tzinfo=UTC)


def _rows(n: int, *, start: datetime = T0) -> list[dict]:
    return [
        {
            "username": f"user{i % 7}",
            "started_at": (start + timedelta(hours=3 * i)).isoformat(),
            "ended_at": (start + timedelta(hours=3 * i + 2, seconds=i)).isoformat(),
            "cpu": "500m",
            "memory": "2Gi",
            "pod_uid": f"pod-{i}",
        }
        for i in range(n)
    ]


def _write(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


async def _count(engine) -> int:
    async with engine.connect() as conn:
        return await conn.scalar(text("SELECT count(*) FROM segments"))


async def test_streamed_in_chunks_exact_rollups_idempotent(engine, tmp_path):
    path = _write(tmp_path / "a.jsonl", _rows(500))  # spans September to November
    first = await import_file(engine, path, chunk_rows=64)
    again = await import_file(engine, path, chunk_rows=64)
    assert (first.rows, first.inserted, again.inserted, again.unchanged) == (500, 500, 0, 500)
    assert await _count(engine) == 500
    assert await rollups.verify(engine, None) == []
    async with engine.connect() as conn:  # the import made the months' partitions
        homes = set(await conn.scalars(text("SELECT DISTINCT tableoid::regclass::text FROM segments")))  # fmt: skip
    assert homes == {"segments_2026_09", "segments_2026_10", "segments_2026_11"}


async def test_a_bad_row_in_a_late_chunk_imports_nothing(engine, tmp_path):
    rows = _rows(300)
    rows[250]["memory"] = "2 GB"
    rows[280]["started_at"] = "2026-10-01T10:00:00"
    path = _write(tmp_path / "bad.jsonl", rows)
    with pytest.raises(ImportError_) as info:
        await import_file(engine, path, chunk_rows=50)
    assert [line for line, _ in info.value.errors] == [251, 281]
    assert f"{path}:251: memory" in str(info.value)
    assert await _count(engine) == 0


async def test_an_open_row_for_a_pod_open_in_the_ledger_is_refused_with_its_line(engine, tmp_path):
    open_row = {"username": "a", "started_at": "2026-10-01T00:00:00Z", "pod_uid": "p", "cpu": 1}
    await import_file(engine, _write(tmp_path / "one.jsonl", [open_row]))
    later = dict(open_row, started_at="2026-10-02T00:00:00Z")
    path = _write(tmp_path / "two.jsonl", [*_rows(3), later])
    with pytest.raises(ImportError_, match=r"two.jsonl:4: pod_uid p already has an open segment"):
        await import_file(engine, path)
    assert await _count(engine) == 1
    closed = dict(open_row, ended_at="2026-10-01T08:00:00Z")
    result = await import_file(engine, _write(tmp_path / "three.jsonl", [closed]))
    assert (result.inserted, result.closed) == (0, 1)
    assert await rollups.verify(engine, None) == []


async def test_a_file_that_closes_a_pods_open_segment_may_open_its_next(engine, tmp_path):
    # the file's closed rows are written before its open ones, wherever they stand in it
    first = {"username": "a", "started_at": "2026-10-01T00:00:00Z", "pod_uid": "p", "cpu": 1}
    await import_file(engine, _write(tmp_path / "one.jsonl", [first]))
    after = dict(first, started_at="2026-10-02T00:00:00Z")
    path = _write(tmp_path / "two.jsonl", [after, *_rows(130), dict(first, ended_at="2026-10-01T08:00:00Z")])  # fmt: skip
    result = await import_file(engine, path, chunk_rows=40)
    assert (result.rows, result.inserted, result.closed) == (132, 131, 1)
    async with engine.connect() as conn:
        open_starts = list(await conn.scalars(text("SELECT started_at FROM segments WHERE ended_at IS NULL")))  # fmt: skip
    assert open_starts == [datetime(2026, 10, 2, tzinfo=UTC)]
    assert await rollups.verify(engine, None) == []


_text = st.text(alphabet=st.sampled_from("ab c\t\x00é-_.Zz:+0123456789"), max_size=12)
_times = st.one_of(
    st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ).map(lambda d: d.isoformat()),
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)).map(
        lambda d: d.isoformat()
    ),
    st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ).map(lambda d: d.strftime("%Y-%m-%dT%H:%M:%SZ")),
    st.dates()
    .map(str)
    .flatmap(lambda d: st.sampled_from([d, d + "Z", d + "+01:00", d + "-0130", d + " 10:00Z"])),
    _text,
    st.none(),
    st.integers(),
)
_values = st.one_of(
    st.none(), st.just(""), st.booleans(), st.integers(-5, 10**12), st.floats(0, 100),
    st.sampled_from(["500m", "2", "4Gi", "1.5", "-1", "2 GB", "1e3", "0"]), _text,
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(
    row=st.fixed_dictionaries(
        {
            "username": st.one_of(
                st.sampled_from(["alice", "bob.x"]), _text, st.none(), st.integers()
            ),
            "started_at": _times,
        },
        optional={
            "ended_at": _times,
            "cpu": _values,
            "memory": _values,
            "gpu": _values,
            "servername": _values,
            "pod_uid": _values,
            "namespace": _values,
            "pod_name": _values,
            "colour": _values,
        },
    )  # fmt: skip
)
def test_fast_path_gives_what_the_full_validation_gives(row):
    fast = parse_row_fast(row)
    try:
        full = parse_row(row)
    except ValueError:
        assert fast is None  # only the full validation names what is wrong
        return
    assert fast is None or fast == full


_LINES = st.one_of(
    st.just('{"username": "a", "started_at": "2026-10-01T00:00:00Z", "memory": NaN}'),
    st.just('{"username": "a", "started_at": "2026-10-01T00:00:00Z", "memory": 123456789012345678901234567890}'),
    st.just('{"username": "a", "started_at": "2026-10-01T00:00:00Z", "pod_uid": "\\ud800"}'),
    st.just('{"username": "a", "username": "b", "started_at": "2026-10-01T00:00:00Z"}'),
    st.just('\ufeff{"username": "a", "started_at": "2026-10-01T00:00:00Z"}'),
    st.just('["username"]'),
    st.just("{not json"),
    st.dictionaries(st.sampled_from(["username", "started_at", "ended_at", "cpu", "memory", "gpu", "pod_uid"]),
                    st.one_of(st.none(), st.integers(-2**70, 2**70), st.floats(allow_nan=False), _text,
                              st.sampled_from(["2026-10-01T00:00:00Z", "2026-10-01T02:00:00+01:00", "alice", "2Gi"])),
                    ).map(json.dumps),
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(line=_LINES)
def test_a_line_reads_as_the_standard_library_reads_it(line):
    """orjson's fast path accepts a line only as json + parse_row would, with the same
    record; a refused line gets the standard message."""
    try:
        row = json.loads(line)
        expected = ("ok", record_of(parse_row(row), 1)) if isinstance(row, dict) else ("bad", None)
    except ValueError:
        expected = ("bad", None)
    try:
        chunks = list(parse_record_chunks([line], "jsonl", "f"))
        got = ("ok", chunks[0][0])
    except ImportError_:
        got = ("bad", None)
    assert got == expected


async def test_a_role_that_may_not_turn_off_wal_compression_imports_all_the_same(
    fresh_db_url, tmp_path
):
    from sqlalchemy.engine import make_url

    from ledger.store import db

    name = make_url(fresh_db_url).database
    owner = db.create_engine(fresh_db_url)
    async with owner.begin() as conn:
        await conn.execute(text(f'ALTER DATABASE "{name}" SET wal_compression = pglz'))
        await conn.execute(text("CREATE ROLE importer_pglz LOGIN PASSWORD 'pw-importer'"))
        await conn.execute(text("GRANT SELECT, INSERT, UPDATE ON segments TO importer_pglz"))
        await conn.execute(text("GRANT USAGE ON SEQUENCE segments_id_seq TO importer_pglz"))
        await conn.execute(
            text(
                "GRANT EXECUTE ON FUNCTION quota_segment_partition_create(timestamptz) TO importer_pglz"
            )  # fmt: skip
        )
    await owner.dispose()
    url = make_url(fresh_db_url).set(username="importer_pglz", password="pw-importer")
    engine = db.create_engine(url.render_as_string(hide_password=False))
    try:
        async with engine.connect() as conn:
            assert await conn.scalar(text("SHOW wal_compression")) == "pglz"
        result = await import_file(engine, _write(tmp_path / "a.jsonl", _rows(50)))
        assert result.inserted == 50
        assert await _count(engine) == 50
    finally:
        await engine.dispose()
        owner = db.create_engine(fresh_db_url)
        async with owner.begin() as conn:
            await conn.execute(text("DROP OWNED BY importer_pglz"))
            await conn.execute(text("DROP ROLE importer_pglz"))
        await owner.dispose()
    assert await rollups_clean(fresh_db_url)


async def rollups_clean(url: str) -> bool:
    from ledger.store import db

    engine = db.create_engine(url)
    try:
        return await rollups.verify(engine, None) == []
    finally:
        await engine.dispose()


def test_without_orjson_the_standard_library_reads_every_line(monkeypatch, tmp_path):
    import json as stdlib_json

    from ledger.core import import_rows

    monkeypatch.setattr(import_rows, "_FAST_JSON", (stdlib_json.loads, stdlib_json.JSONDecodeError))
    lines = [
        *(json.dumps(r) for r in _rows(5)),
        "{not json",
        '{"username": "a", "started_at": NaN}',
    ]
    with pytest.raises(ImportError_) as info:
        list(parse_record_chunks(lines, "jsonl", "f"))
    assert [line for line, _ in info.value.errors] == [6, 7]
    assert "not valid JSON" in info.value.errors[0][1]
    assert len(list(parse_record_chunks(lines[:5], "jsonl", "f"))[0]) == 5
