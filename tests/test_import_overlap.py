"""Import: segments of one pod that overlap in time are an error, never charged twice.

A pod's segments follow one another (a resize closes one and opens the next at the same
instant). Before, a file with 10:00–12:00 and 11:00–13:00 of one pod_uid imported both, and
the hour 11–12 was charged twice.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from ledger.core.import_rows import ImportError_, parse_record_chunks
from ledger.store import rollups
from ledger.store.importer import import_file, read_rows

DAY = datetime(2026, 10, 1, tzinfo=UTC)


def _at(hour: float) -> str:
    return (DAY + timedelta(hours=hour)).isoformat()


def row(start: float, end: float | None, pod: str = "p", **more) -> dict:
    out = {"username": "alice", "started_at": _at(start), "cpu": 1, "memory": "1Gi",
           "pod_uid": pod, **more}  # fmt: skip
    if end is not None:
        out["ended_at"] = _at(end)
    return out


def _write(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _errors(tmp_path, rows, name="f.jsonl") -> list[tuple[int, str]]:
    with pytest.raises(ImportError_) as info:
        read_rows(_write(tmp_path / name, rows))
    return info.value.errors


async def _segments(engine) -> list[tuple]:
    async with engine.connect() as conn:
        return (await conn.execute(text(
            "SELECT pod_uid, started_at, ended_at FROM segments ORDER BY pod_uid, started_at"
        ))).all()  # fmt: skip


async def test_overlapping_segments_of_one_pod_import_nothing_naming_both(engine, tmp_path):
    path = _write(tmp_path / "f.jsonl", [row(10, 12), row(20, 21, pod="q"), row(11, 13)])
    with pytest.raises(ImportError_) as info:
        await import_file(engine, path)
    assert [line for line, _ in info.value.errors] == [3]
    message = str(info.value)
    assert "nothing was imported" in message
    assert (
        f"{path}:3: pod_uid p: 2026-10-01T11:00:00+00:00 to 2026-10-01T13:00:00+00:00 "
        "overlaps line 1 (2026-10-01T10:00:00+00:00 to 2026-10-01T12:00:00+00:00)"
    ) in message
    assert "may start where the one before it ended" in message  # what would be valid
    assert await _segments(engine) == []


def test_out_of_order_rows_are_checked_too(tmp_path):
    # the later segment first: the overlap is found all the same, naming both
    errors = _errors(tmp_path, [row(11, 13), row(1, 2), row(10, 12), row(14, 15)])
    assert [line for line, _ in errors] == [3]
    assert (
        "overlaps line 1 (2026-10-01T11:00:00+00:00 to 2026-10-01T13:00:00+00:00)" in errors[0][1]
    )
    # one inside another, found from either side
    assert [n for n, _ in _errors(tmp_path, [row(10, 20), row(12, 13)])] == [2]
    assert [n for n, _ in _errors(tmp_path, [row(12, 13), row(10, 20)])] == [2]


def test_an_open_row_overlaps_what_starts_after_it(tmp_path):
    errors = _errors(tmp_path, [row(10, None), row(30, 31)])
    assert [line for line, _ in errors] == [2]
    assert "overlaps line 1 (2026-10-01T10:00:00+00:00 to open)" in errors[0][1]
    # found from either side, and two open rows of a pod are the same rule
    assert [n for n, _ in _errors(tmp_path, [row(30, 31), row(10, None)])] == [2]
    errors = _errors(tmp_path, [row(10, None), row(12, None)])
    assert [line for line, _ in errors] == [2]
    assert "to open overlaps line 1 (2026-10-01T10:00:00+00:00 to open)" in errors[0][1]


def test_touching_zero_length_and_other_pods_are_fine(tmp_path):
    rows = [
        row(12, 14), row(10, 12), row(14, 14), row(15, None),  # touching, out of order
        row(11, 13, pod="q"),  # another pod
        row(11, 13, pod=""), row(11.5, 13, pod=""),  # no pod_uid: each row its own pod
        row(10, 12),  # an exact repeat is kept once
    ]  # fmt: skip
    segments, _ = read_rows(_write(tmp_path / "ok.jsonl", rows))
    assert len(segments) == 7


def test_csv_rows_are_named_by_their_lines(tmp_path):
    path = tmp_path / "f.csv"
    path.write_text("username,started_at,ended_at,cpu,memory,pod_uid\n"
                    f"alice,{_at(10)},{_at(12)},1,1Gi,p\n"
                    f"alice,{_at(11)},,1,1Gi,p\n")  # fmt: skip
    with pytest.raises(ImportError_) as info:
        read_rows(path)
    assert [line for line, _ in info.value.errors] == [3]
    assert "to open overlaps line 2 (" in info.value.errors[0][1]


def test_every_overlap_is_listed_with_the_other_errors(tmp_path):
    rows = [row(10, 12), row(11, 13), dict(row(20, 21), memory="1 GB"), row(0, None, pod="q"),
            row(5, 6, pod="q")]  # fmt: skip
    errors = _errors(tmp_path, rows)
    assert [line for line, _ in errors] == [2, 3, 5]
    assert "memory" in errors[1][1]


async def test_overlap_found_across_chunks(engine, tmp_path):
    rows = [row(3 * i, 3 * i + 2, pod=f"p{i}") for i in range(100)]
    rows.append(row(0, 1, pod="p99"))  # p99 is 297–299; fine
    rows.append(row(290, 298, pod="p99"))
    path = _write(tmp_path / "f.jsonl", rows)
    with pytest.raises(ImportError_) as info:
        await import_file(engine, path, chunk_rows=16)
    assert [line for line, _ in info.value.errors] == [102]
    assert await _segments(engine) == []


_HOURS = st.integers(0, 12)


@st.composite
def _pod_rows(draw):
    """A pod's rows in any order: distinct starts, each closed (maybe zero-length) or open,
    some given twice."""
    starts = draw(st.lists(_HOURS, unique=True, min_size=1, max_size=6))
    spans = [(s, draw(st.one_of(st.none(), st.integers(s, 14)))) for s in starts]
    repeats = draw(st.lists(st.sampled_from(spans), max_size=2))
    return draw(st.permutations(spans + repeats))


def _overlap(a: tuple, b: tuple) -> bool:
    inf = float("inf")
    return a[0] < (inf if b[1] is None else b[1]) and b[0] < (inf if a[1] is None else a[1])


@settings(max_examples=300, deadline=None)
@given(spans=_pod_rows())
def test_a_pods_rows_import_iff_no_two_overlap(spans):
    distinct = sorted(set(spans), key=lambda s: s[0])
    clash = any(_overlap(a, b) for i, a in enumerate(distinct) for b in distinct[i + 1 :])
    lines = [json.dumps(row(s, e)) for s, e in spans]
    try:
        chunks = list(parse_record_chunks(lines, "jsonl", "f", chunk_rows=2))
    except ImportError_ as exc:
        assert clash
        for line, message in exc.errors:  # each names a line it does overlap
            other = int(re.search(r"overlaps line (\d+)", message).group(1))
            assert _overlap(spans[line - 1], spans[other - 1]), message
        return
    assert not clash
    assert len([r for chunk in chunks for r in chunk]) == len(distinct)


async def test_an_open_row_overlapping_the_pods_segment_in_the_ledger_is_refused(engine, tmp_path):
    """The ledger side: a file's open rows are checked against the pod's segments already
    in the ledger (closed rows are not: docs/scaling.md "Importing history")."""
    await import_file(engine, _write(tmp_path / "one.jsonl", [row(10, 12)]))
    path = _write(tmp_path / "two.jsonl", [row(0, 1, pod="q"), row(11, None)])
    with pytest.raises(ImportError_) as info:
        await import_file(engine, path)
    assert [line for line, _ in info.value.errors] == [2]
    assert (
        f"{path}:2: pod_uid p: 2026-10-01T11:00:00+00:00 to open overlaps its segment in the "
        "ledger (2026-10-01T10:00:00+00:00 to 2026-10-01T12:00:00+00:00)"
    ) in str(info.value)
    assert len(await _segments(engine)) == 1
    # starting where the ledger's segment ended is fine
    result = await import_file(engine, _write(tmp_path / "three.jsonl", [row(12, None)]))
    assert result.inserted == 1
    assert [s[1:] for s in await _segments(engine)] == [
        (DAY + timedelta(hours=10), DAY + timedelta(hours=12)),
        (DAY + timedelta(hours=12), None),
    ]
    assert await rollups.verify(engine, None) == []


async def test_a_closed_row_overlapping_the_pods_segment_in_the_ledger_is_refused(engine, tmp_path):
    """The collector (or an earlier import) recorded 10:00–12:00 of pod p; a backfill that
    says 11:00–13:00 for it would charge 11–12 twice."""
    await import_file(engine, _write(tmp_path / "one.jsonl", [row(10, 12)]))
    for rows, line in (
        ([row(0, 1, pod="q"), row(11, 13)], 2),  # starts inside
        ([row(9, 10.5)], 1),  # ends inside
        ([row(9, 13)], 1),  # contains it
        ([row(10.5, 11)], 1),  # inside it
        ([row(11, 11)], 1),  # zero-length inside it
    ):
        path = _write(tmp_path / "two.jsonl", rows)
        with pytest.raises(ImportError_) as info:
            await import_file(engine, path)
        assert [n for n, _ in info.value.errors] == [line], rows
        assert "overlaps its segment in the ledger (2026-10-01T10:00:00+00:00 to " \
               "2026-10-01T12:00:00+00:00)" in str(info.value)  # fmt: skip
    assert len(await _segments(engine)) == 1
    # zero-length where it ends, before it, after it, touching, and itself again: fine
    result = await import_file(engine, _write(tmp_path / "zero.jsonl", [row(12, 12)]))
    assert result.inserted == 1
    rows = [row(8, 10), row(13, None), row(10, 12), row(12.5, 13)]
    result = await import_file(engine, _write(tmp_path / "three.jsonl", rows))
    assert (result.inserted, result.unchanged) == (3, 1)
    assert await rollups.verify(engine, None) == []


async def test_a_row_after_the_ledgers_open_segment_imports_when_the_file_closes_it(
    engine, tmp_path
):
    """Rows come in any order and chunk by chunk: the row that follows the ledger's open
    segment may be read before the row that closes it, so the check waits for the file."""
    await import_file(engine, _write(tmp_path / "open.jsonl", [row(10, None)]))
    rows = [row(12, 13), row(10, 12)]  # the follower first, in a chunk of its own
    result = await import_file(engine, _write(tmp_path / "f.jsonl", rows), chunk_rows=1)
    assert (result.inserted, result.closed) == (1, 1)
    assert [s[1:] for s in await _segments(engine)] == [
        (DAY + timedelta(hours=10), DAY + timedelta(hours=12)),
        (DAY + timedelta(hours=12), DAY + timedelta(hours=13)),
    ]
    # a row inside the ledger's open segment, which the file does not close
    await import_file(engine, _write(tmp_path / "reopen.jsonl", [row(20, None)]))
    with pytest.raises(ImportError_, match="already has an open segment in the ledger, started "
                       "2026-10-01T20:00:00"):  # fmt: skip
        await import_file(engine, _write(tmp_path / "g.jsonl", [row(21, 22)]))


async def test_a_row_the_ledger_holds_differently_is_kept_as_the_ledger_has_it_and_named(
    engine, tmp_path
):
    """Same (pod_uid, started_at): the same segment, and the ledger is the record. A file
    that says it ended later (or had another size) changes nothing, but says so by line,
    instead of counting the row as 'already recorded' as if it agreed."""
    await import_file(engine, _write(tmp_path / "one.jsonl", [row(10, 12), row(20, 21, pod="q")]))
    rows = [row(20, 21, pod="q"), row(10, 14), row(30, None, pod="r")]
    result = await import_file(engine, _write(tmp_path / "two.jsonl", rows))
    assert (result.inserted, result.unchanged, result.differing) == (1, 2, 1)
    assert result.differing_lines == [
        (2, "pod_uid p started_at 2026-10-01T10:00:00+00:00 is in the ledger already, "
            "differently (the ledger's then this file's: ended_at 2026-10-01 12:00:00+00:00 "
            "then 2026-10-01 14:00:00+00:00); the ledger's was kept"),
    ]  # fmt: skip
    # an open row for a segment the ledger has closed, and another size
    rows = [row(20, None, pod="q"), row(10, 12, memory="2Gi")]
    result = await import_file(engine, _write(tmp_path / "three.jsonl", rows))
    assert result.differing == 2
    assert [line for line, _ in result.differing_lines] == [1, 2]
    assert "ended_at 2026-10-01 21:00:00+00:00 then open" in result.differing_lines[0][1]
    assert "memory_bytes 1073741824 then 2147483648" in result.differing_lines[1][1]
    # another user for the same pod
    result = await import_file(
        engine, _write(tmp_path / "four.jsonl", [row(10, 12, username="bob")])
    )
    assert "username alice then bob" in result.differing_lines[0][1]
    assert [s[1:] for s in await _segments(engine)] == [
        (DAY + timedelta(hours=10), DAY + timedelta(hours=12)),
        (DAY + timedelta(hours=20), DAY + timedelta(hours=21)),
        (DAY + timedelta(hours=30), None),
    ]
    # the same file again agrees with the ledger: nothing differs
    again = await import_file(engine, _write(tmp_path / "one.jsonl", [row(10, 12)]))
    assert (again.unchanged, again.differing) == (1, 0)


async def test_a_segment_from_an_earlier_month_that_runs_into_the_row_is_found(engine, tmp_path):
    """The check reads the months from a row's own on per row, and the segments running
    across the first instant of its month once: a server started 20 September and still
    running (or ended 5 October) overlaps a row of 3 October."""
    sept = -11 * 24  # hours before 1 October
    await import_file(engine, _write(tmp_path / "ledger.jsonl", [
        row(sept, 4 * 24), row(sept, None, pod="open"), row(-40 * 24, -35 * 24, pod="old"),
    ]))  # fmt: skip
    for rows in ([row(2 * 24, 3 * 24)], [row(2 * 24, 3 * 24, pod="open")], [row(0, 0)]):
        with pytest.raises(ImportError_) as info:
            await import_file(engine, _write(tmp_path / "f.jsonl", rows))
        assert "2026-09-20T00:00:00+00:00" in str(info.value), rows
    # the old pod's segment ended in August: a row of its pod in October is fine
    result = await import_file(engine, _write(tmp_path / "g.jsonl", [row(0, 1, pod="old")]))
    assert result.inserted == 1


# hours from 2026-08-20 to 2026-12-09: the rows and the ledger's segments cross four months
_LEDGER_HOURS = st.integers(0, 111 * 24)
_FROM = datetime(2026, 8, 20, tzinfo=UTC)


@st.composite
def _apart(draw, max_edges: int):
    """Spans of one pod that follow one another (a zero-length one too); the last maybe open."""
    edges = sorted(draw(st.lists(_LEDGER_HOURS, unique=True, min_size=0, max_size=max_edges)))
    spans = [(edges[i], edges[i + 1]) for i in range(0, len(edges) - 1, 2)]
    if draw(st.booleans()) and spans:
        spans.append((spans[-1][1], spans[-1][1]))  # zero-length, touching
    if spans and draw(st.booleans()):
        spans[-1] = (spans[-1][0], None)
    return spans


def _ledger_row(pod: str, start: int, end: int | None) -> dict:
    out = {"username": "alice", "started_at": (_FROM + timedelta(hours=start)).isoformat(),
           "cpu": 1, "memory": "1Gi", "pod_uid": pod}  # fmt: skip
    if end is not None:
        out["ended_at"] = (_FROM + timedelta(hours=end)).isoformat()
    return out


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip
# few, long segments in the ledger (they cross months), more and shorter rows in the file
@given(ledger=st.tuples(_apart(4), _apart(4)), file=st.tuples(_apart(10), _apart(10)))
async def test_a_file_imports_iff_no_row_overlaps_its_pods_segments_in_the_ledger(
    engine, tmp_path, ledger, file
):
    """Against the raw rule, over months: every pair of a row and a segment of its pod
    already in the ledger (other starts; the same start is the same segment)."""
    pods = ("a", "b")
    starts = {(p, s) for p, spans in zip(pods, ledger, strict=True) for s, _ in spans}
    file = tuple([sp for sp in spans if (p, sp[0]) not in starts]
                 for p, spans in zip(pods, file, strict=True))  # fmt: skip
    async with engine.begin() as conn:
        await conn.execute(text("TRUNCATE segments, usage_rollups"))
    rows = [_ledger_row(p, s, e) for p, spans in zip(pods, ledger, strict=True) for s, e in spans]
    if rows:
        await import_file(engine, _write(tmp_path / "ledger.jsonl", rows))
    lines = [(p, sp) for p, spans in zip(pods, file, strict=True) for sp in spans]
    if not lines:
        return

    def clashes(pod: str, span: tuple) -> bool:
        return any(_overlap(span, other) for other in ledger[pods.index(pod)])

    path = _write(tmp_path / "file.jsonl", [_ledger_row(p, *sp) for p, sp in lines])
    try:
        await import_file(engine, path)
    except ImportError_ as exc:
        # every row that overlaps is named, and only those
        assert [n for n, _ in exc.errors] == [
            n for n, line in enumerate(lines, 1) if clashes(*line)
        ], exc.errors
        return
    assert not any(clashes(*line) for line in lines)


async def test_every_row_inside_a_ledger_segment_is_named(engine, tmp_path):
    """Two rows inside one segment of the ledger: both lines, not the first alone (the
    operator would fix one and be told of the next on the next run)."""
    await import_file(engine, _write(tmp_path / "ledger.jsonl", [row(0, 10)]))
    with pytest.raises(ImportError_) as info:
        await import_file(engine, _write(tmp_path / "f.jsonl", [row(2, 3), row(5, 8)]))
    assert [n for n, _ in info.value.errors] == [1, 2]


async def test_a_row_of_another_size_does_not_close_the_ledgers_open_segment(engine, tmp_path):
    """Same pod and start but another user or size: not this segment's end. The ledger's
    open segment stays open and the row is named, rather than closed and said to be kept."""
    await import_file(engine, _write(tmp_path / "open.jsonl", [row(10, None)]))
    result = await import_file(
        engine, _write(tmp_path / "f.jsonl", [row(10, 12, username="bob", cpu=2)])
    )
    assert (result.closed, result.differing) == (0, 1)
    message = result.differing_lines[0][1]
    assert "ended_at open then 2026-10-01 12:00:00+00:00" in message
    assert "cpu_millicores 1000 then 2000" in message and "username alice then bob" in message
    assert [s[2] for s in await _segments(engine)] == [None]
    # a row after it then overlaps the open segment, and the error says what closes it
    with pytest.raises(ImportError_, match="one that differs in any of them does not close it"):
        await import_file(engine, _write(tmp_path / "h.jsonl", [row(10, 12, cpu=2), row(12, 13)]))
    # the same row with the ledger's size and user closes it
    result = await import_file(engine, _write(tmp_path / "g.jsonl", [row(10, 12)]))
    assert (result.closed, result.differing) == (1, 0)
