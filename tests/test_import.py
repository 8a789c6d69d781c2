"""Import: JSON Lines and CSV, idempotent, atomic, every bad line named."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from ledger.core.import_rows import ImportError_
from ledger.store.importer import read_rows, write_rows


def jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


GOOD = [
    {"username": "alice", "started_at": "2026-10-01T10:00:00Z", "ended_at": "2026-10-01T15:00:00Z",
     "cpu": "500m", "memory": "4Gi", "gpu": 0},
    {"username": "bob", "started_at": "2026-10-02T10:00:00+02:00", "ended_at": None,
     "cpu": 2, "memory": 4294967296, "servername": "gpu", "gpu": "1"},
]  # fmt: skip


async def test_import_jsonl_is_idempotent(engine, tmp_path):
    rows, _ = read_rows(jsonl(tmp_path / "a.jsonl", GOOD))
    first = await write_rows(engine, rows)
    second = await write_rows(engine, read_rows(tmp_path / "a.jsonl")[0])
    assert (first.inserted, second.inserted, second.unchanged) == (2, 0, 2)
    async with engine.connect() as conn:
        got = (await conn.execute(text(
            "SELECT username, cpu_millicores, memory_bytes, gpu_count, started_at, ended_at "
            "FROM segments ORDER BY username"))).all()  # fmt: skip
    assert got[0][:4] == ("alice", 500, 4 * 2**30, 0)
    assert got[1][:4] == ("bob", 2000, 4 * 2**30, 1)
    assert got[1][4] == datetime(2026, 10, 2, 8, tzinfo=UTC) and got[1][5] is None


async def test_reimport_with_end_closes_the_open_segment(engine, tmp_path):
    await write_rows(engine, read_rows(jsonl(tmp_path / "a.jsonl", GOOD))[0])
    closed = [dict(GOOD[1], ended_at="2026-10-02T12:00:00Z")]
    result = await write_rows(engine, read_rows(jsonl(tmp_path / "b.jsonl", closed))[0])
    assert (result.inserted, result.closed) == (0, 1)
    async with engine.connect() as conn:
        n, ended = (await conn.execute(text(
            "SELECT count(*), max(ended_at) FROM segments WHERE username = 'bob'"))).one()  # fmt: skip
    assert n == 1 and ended == datetime(2026, 10, 2, 12, tzinfo=UTC)


async def test_csv_import(engine, tmp_path):
    path = tmp_path / "a.csv"
    path.write_text(
        "username,started_at,ended_at,cpu,memory,gpu,servername\n"
        "alice,2026-10-01T10:00:00Z,2026-10-01T11:00:00Z,1,2Gi,,\n"
        "alice,2026-10-01T12:00:00Z,,250m,512Mi,0,named\n"
    )
    result = await write_rows(engine, read_rows(path)[0])
    assert result.inserted == 2


def test_bad_rows_import_nothing_and_every_line_is_named(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(
        json.dumps(GOOD[0]) + "\n"
        + "{not json\n"
        + json.dumps(dict(GOOD[0], memory="4 GB")) + "\n"
        + json.dumps(dict(GOOD[0], started_at="2026-10-01T10:00:00")) + "\n"
        + json.dumps(dict(GOOD[0], username="")) + "\n"
        + json.dumps(dict(GOOD[0], ended_at="2026-09-01T00:00:00Z")) + "\n"
        + json.dumps(dict(GOOD[0], colour="red")) + "\n"
        + "[1, 2]\n"
    )  # fmt: skip
    with pytest.raises(ImportError_) as info:
        read_rows(path)
    lines = [line for line, _ in info.value.errors]
    assert lines == [2, 3, 4, 5, 6, 7, 8]
    message = str(info.value)
    assert "nothing was imported" in message
    assert f"{path}:3: memory" in message and "4Gi" in message  # says what would be valid
    assert "no time zone" in message
    assert "username is empty" in message
    assert "before started_at" in message
    assert "unknown column(s) colour" in message


def test_csv_header_without_required_columns(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("user,start\nalice,2026-10-01T10:00:00Z\n")
    with pytest.raises(ImportError_, match="header lacks username, started_at"):
        read_rows(path)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ImportError_, match="cannot read"):
        read_rows(tmp_path / "nope.jsonl")


def test_two_different_rows_of_one_segment_are_an_error_naming_both_lines(tmp_path):
    """An open row and its closed row of the same (pod_uid, started_at): before, the first
    won silently and the pod stayed running, charged until someone noticed. An exact repeat
    is still kept once."""
    closed = GOOD[0]
    still_open = {k: v for k, v in closed.items() if k != "ended_at"}
    path = tmp_path / "twice.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in (still_open, closed, closed)))
    with pytest.raises(ImportError_) as info:
        read_rows(path)
    assert [line for line, _ in info.value.errors] == [2, 3]
    message = str(info.value)
    assert "is on line 1 too, differently (ended_at open then 2026-" in message
    repeat = tmp_path / "repeat.jsonl"
    repeat.write_text("".join(json.dumps(r) + "\n" for r in (closed, closed)))
    assert len(read_rows(repeat)[0]) == 1


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"cpu": "1e16"}, "cpu: '1e16' is more than any server holds"),
        ({"started_at": "0001-01-01T00:00:00+01:00"}, "out of range"),
        ({"servername": "a\u0000b"}, "servername contains a NUL character"),
        ({"servername": "a\ud800b"}, "servername is not valid Unicode text"),
    ],
)
def test_values_the_ledger_cannot_store_are_errors_with_their_line(tmp_path, change, said):
    """Before, each of these got past validation and failed in the COPY (or in astimezone)
    as a traceback; nothing was recorded then either."""
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(dict(GOOD[0], **change)) + "\n", encoding="utf-8",
                    errors="surrogatepass")  # fmt: skip
    with pytest.raises(ImportError_) as info:
        read_rows(path)
    assert [line for line, _ in info.value.errors] == [1]
    assert said in str(info.value)


def test_a_csv_with_a_byte_order_mark_reads(tmp_path):
    path = tmp_path / "sheet.csv"
    path.write_text("\ufeffusername,started_at,ended_at,cpu,memory\n"
                    "alice,2026-10-01T10:00:00Z,2026-10-01T11:00:00Z,1,1Gi\n")  # fmt: skip
    assert len(read_rows(path)[0]) == 1
