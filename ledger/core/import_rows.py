"""Rows of an import file → validated segments in base units. Pure: the caller reads the file.

``quota-ledger import`` reads segments from JSON Lines or CSV, all or nothing, idempotent.

Each row: ``username, started_at, ended_at`` (empty/null = still running), ``cpu, memory, gpu``
(Kubernetes quantities as strings or numbers) and optionally ``servername, pod_uid,
namespace, pod_name``. Every row is validated before anything is written; a file with any
bad row imports nothing, and the error lists every bad line and why.

Idempotence: a row's identity is ``(pod_uid, started_at)``. Rows without a pod_uid get one
derived from (username, servername, namespace, started_at) — not from ended_at, so a file
exported while a server ran and again after it stopped updates the open segment's end
instead of adding a second one.

A pod's segments follow one another (a resize ends one and starts the next at the same
instant), so two rows of one pod_uid whose times overlap are an error naming both lines:
that time would be charged twice. Touching is fine (one ends where the next starts), so
is a zero-length segment at such a boundary; an open row must be its pod's latest. The
rows of a pod may come in any order. Rows without a pod_uid are each their own pod.

Reading is chunked (:func:`parse_record_chunks`) so the writer can stream one chunk to the
database while the next is parsed. Well-formed rows take a fast path: JSON Lines are decoded
by orjson (https://github.com/ijl/orjson, the ``import`` extra; without it by ``json``)
and :func:`fast_record` turns the row straight
into the writer's record, exactly what :func:`parse_row` gives; any line either is unsure
of is decoded again by the standard library's ``json`` and judged by :func:`parse_row`, so
what is accepted and every error message stay the standard ones. Writing them is
ledger/store/importer.py.
"""

from __future__ import annotations

import csv
import hashlib
import json
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from functools import lru_cache
from operator import itemgetter

try:  # the `import` extra (pyproject.toml); the standard library's json does the same, slower
    import orjson
except ModuleNotFoundError:  # pragma: no cover - installed with quota-ledger[all]
    orjson = None

from ledger.core.quantities import QuantityError, cpu_millicores, device_count, memory_bytes
from ledger.core.times import TimeError, parse_iso
from ledger.core.usernames import UsernameError, check_username

FORMATS = ("csv", "jsonl")

REQUIRED = ("username", "started_at")
OPTIONAL = ("ended_at", "cpu", "memory", "gpu", "servername", "pod_uid", "namespace", "pod_name")
KNOWN = REQUIRED + OPTIONAL
_KNOWN_SET = frozenset(KNOWN)
MAX_ERRORS_LISTED = 200


class ImportError_(ValueError):  # noqa: N801 - the builtin name is taken
    """A file that cannot be imported; ``errors`` is a list of (line, message)."""

    def __init__(self, source: str, errors: list[tuple[int, str]]):
        self.source = source
        self.errors = errors
        shown = "\n".join(f"  {source}:{line}: {msg}" for line, msg in errors[:MAX_ERRORS_LISTED])
        more = len(errors) - MAX_ERRORS_LISTED
        tail = f"\n  ... and {more} more" if more > 0 else ""
        super().__init__(
            f"{source}: {len(errors)} bad row(s); nothing was imported.\n{shown}{tail}"
        )


@lru_cache(maxsize=4096)
def _cpu(value: str) -> int:
    return cpu_millicores(value)


@lru_cache(maxsize=4096)
def _memory(value: str) -> int:
    return memory_bytes(value)


@lru_cache(maxsize=256)
def _gpu(value: str) -> int:
    return device_count(value)


def _time(value, key: str) -> datetime:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{key} must be an ISO 8601 time with a time zone, got {value!r}")
    try:
        return parse_iso(value, what=key)
    except TimeError as exc:
        raise ValueError(str(exc)) from None


def _quantity(parse, value, key: str) -> int:
    if value is None or value == "":
        return 0
    if isinstance(value, bool):
        raise ValueError(f"{key} must be a quantity such as 2, 500m or 4Gi, not {value!r}")
    try:
        return parse(str(value))
    except QuantityError as exc:
        raise ValueError(f"{key}: {exc}") from None


def _uid(username: str, servername: str, namespace: str, started_at: datetime) -> str:
    key = "\x1f".join((username, servername, namespace, started_at.isoformat()))
    return "import-" + hashlib.sha256(key.encode()).hexdigest()[:32]


def parse_row(row: dict) -> dict:
    """One row → a segment dict in base units. Raises ValueError naming every problem."""
    problems = []
    unknown = sorted(k for k in row if k not in KNOWN)
    if unknown:
        problems.append(f"unknown column(s) {', '.join(unknown)}; valid: {', '.join(KNOWN)}")
    out: dict = {}
    try:
        out["username"] = check_username(row.get("username"))
    except UsernameError as exc:
        problems.append(str(exc))
    for key in ("started_at", "ended_at"):
        value = row.get(key)
        if key == "ended_at" and (value is None or value == ""):
            out[key] = None
            continue
        try:
            out[key] = _time(value, key)
        except ValueError as exc:
            problems.append(str(exc))
    for key, parse, column in (
        ("cpu", _cpu, "cpu_millicores"),
        ("memory", _memory, "memory_bytes"),
        ("gpu", _gpu, "gpu_count"),
    ):
        try:
            out[column] = _quantity(parse, row.get(key), key)
        except ValueError as exc:
            problems.append(str(exc))
    for key in ("servername", "pod_uid", "namespace", "pod_name"):
        value = row.get(key)
        if value is not None and not isinstance(value, str | int):
            problems.append(f"{key} must be a string, got {type(value).__name__}")
        out[key] = text = "" if value is None else str(value)
        if "\x00" in text:  # PostgreSQL text cannot hold it
            problems.append(f"{key} contains a NUL character (\\u0000); remove it")
        elif not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate (JSON "\ud800")
                problems.append(f"{key} is not valid Unicode text (a lone surrogate)")
    started, ended = out.get("started_at"), out.get("ended_at")
    if started and ended and ended < started:
        problems.append(f"ended_at {ended.isoformat()} is before started_at {started.isoformat()}")
    if problems:
        raise ValueError("; ".join(problems))
    if not out["pod_uid"]:
        out["pod_uid"] = _uid(out["username"], out["servername"], out["namespace"], started)
    return out


# A record: one validated segment as the writer sends it, in this order (``line`` is the
# file line it came from; the writer names it when the ledger refuses the row).
RECORD_FIELDS = (
    "pod_uid", "namespace", "pod_name", "username", "servername",
    "cpu_millicores", "memory_bytes", "gpu_count", "started_at", "ended_at", "line",
)  # fmt: skip
_SEGMENT_FIELDS = RECORD_FIELDS[:-1]

# Usernames already checked (a file has far fewer users than rows); bounded.
_VALID_USERNAMES: set[str] = set()
# Quantity text → base units, for the fast path (bounded like the lru_caches above, but a
# plain dict lookup: a file repeats few sizes over millions of rows).
_QUANTITY_CACHES: tuple[dict, dict, dict] = ({}, {}, {})
_QUANTITY_PARSERS = (_cpu, _memory, _gpu)


def _fast_time(value) -> datetime | None:
    # a date and a time ("2026-10-01T…"); anything else (a bare date, spaces, …) is for
    # parse_iso to judge and explain
    if value.__class__ is not str or len(value) < 16 or value[10] not in "Tt":
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    zone = parsed.tzinfo
    if zone is UTC:
        return parsed
    if zone is None:
        return None
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # before year 1 in UTC: parse_iso says so
        return None


def _fast_quantity(kind: int, value) -> int | None:
    if value is None or value == "":
        return 0
    cls = value.__class__
    if cls is not str and cls is not int:
        return None
    cache = _QUANTITY_CACHES[kind]
    amount = cache.get(value)
    if amount is None:
        try:
            amount = _QUANTITY_PARSERS[kind](str(value))
        except QuantityError:
            return None
        if len(cache) < 4096:
            cache[value] = amount
    return amount


def fast_record(row: dict, line: int) -> tuple | None:
    """The record (:data:`RECORD_FIELDS`) of a well-formed row, without :func:`parse_row`'s
    error bookkeeping; ``None`` for anything unusual (then :func:`parse_row` decides and
    says what is wrong). Whenever it returns a record, it holds what :func:`parse_row`
    returns (a property test checks)."""
    if not _KNOWN_SET.issuperset(row):
        return None
    get = row.get
    username = get("username")
    if username.__class__ is not str:
        return None
    if username not in _VALID_USERNAMES:
        try:
            check_username(username)
        except UsernameError:
            return None
        if len(_VALID_USERNAMES) < 200_000:
            _VALID_USERNAMES.add(username)
    started = _fast_time(get("started_at"))
    if started is None:
        return None
    ended = get("ended_at")
    if ended is not None and ended != "":
        ended = _fast_time(ended)
        if ended is None or ended < started:
            return None
    else:
        ended = None
    cpu = _fast_quantity(0, get("cpu"))
    memory = _fast_quantity(1, get("memory"))
    gpu = _fast_quantity(2, get("gpu"))
    if cpu is None or memory is None or gpu is None:
        return None
    names = []
    for key in _NAMES:
        value = get(key)
        if value is None:
            names.append("")
        elif value.__class__ is str and (value.isascii() and "\x00" not in value):
            names.append(value)
        else:
            return None  # not text, or text parse_row must look at (NUL, non-ASCII)
    servername, pod_uid, namespace, pod_name = names
    if not pod_uid:
        pod_uid = _uid(username, servername, namespace, started)
    return (pod_uid, namespace, pod_name, username, servername, cpu, memory, gpu, started, ended, line)  # fmt: skip


_NAMES = ("servername", "pod_uid", "namespace", "pod_name")


def parse_row_fast(row: dict) -> dict | None:
    """:func:`fast_record` as :func:`parse_row`'s dict (``None`` where it gives none)."""
    record = fast_record(row, 0)
    return None if record is None else dict(zip(_SEGMENT_FIELDS, record, strict=False))


def record_of(segment: dict, line: int) -> tuple:
    """:func:`parse_row`'s dict as a record."""
    return (*(segment[k] for k in _SEGMENT_FIELDS), line)


def _json_row(number: int, line: str) -> tuple[int, dict | None, str | None]:
    """The standard library's reading of a line: what is accepted and how it is refused."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        return number, None, f"not valid JSON ({exc.msg} at column {exc.colno})"
    if not isinstance(row, dict):
        return number, None, f"each line must be a JSON object, got {type(row).__name__}"
    return number, row, None


def _read_csv(lines: Iterable[str]) -> Iterator[tuple[int, dict | None, str | None]]:
    reader = csv.DictReader(lines)
    if reader.fieldnames is None:
        return
    missing = [k for k in REQUIRED if k not in reader.fieldnames]
    if missing:
        yield 1, None, f"header lacks {', '.join(missing)}; columns: {', '.join(KNOWN)}"
        return
    for row in reader:
        if None in row:
            yield reader.line_num, None, "more fields than the header has columns"
            continue
        yield reader.line_num, row, None


def format_of(source: str, fmt: str | None) -> str:
    """The file's format: as given, else ``csv`` for a ``.csv`` name, else ``jsonl``."""
    if fmt is None:
        fmt = "csv" if source.lower().endswith(".csv") else "jsonl"
    if fmt not in FORMATS:
        raise ImportError_(source, [(0, f"unknown format {fmt!r}; use jsonl or csv")])
    return fmt


# (loads, its decode error) for the first reading of every line
_FAST_JSON = (
    (orjson.loads, orjson.JSONDecodeError) if orjson else (json.loads, json.JSONDecodeError)
)


def _jsonl_rows(
    lines: Iterable[str],
) -> Iterator[tuple[int, tuple | None, dict | None, str | None]]:
    """(line number, record, row, problem) per non-blank line: the record of a well-formed
    row, else the row (or the problem) as the standard library reads the line."""
    loads, decode_error = _FAST_JSON
    for number, line in enumerate(lines, start=1):
        try:
            row = loads(line)
        except decode_error:
            row = None
        record = fast_record(row, number) if row.__class__ is dict else None
        if record is not None:
            yield number, record, None, None
        elif line.strip():
            # orjson differs from json on a few inputs (NaN, integers beyond 64 bits, lone
            # surrogates): judge the line as the standard library reads it
            yield (number, None, *_json_row(number, line)[1:])


def _csv_rows(lines: Iterable[str]) -> Iterator[tuple[int, tuple | None, dict | None, str | None]]:
    for number, row, problem in _read_csv(lines):
        record = None if row is None else fast_record(row, number)
        yield number, record, row, problem


def parse_record_chunks(
    lines: Iterable[str], fmt: str, source: str, chunk_rows: int = 50_000
) -> Iterator[list[tuple]]:
    """Validate a file's lines, yielding records (:data:`RECORD_FIELDS`) in chunks of
    ``chunk_rows``. After the first bad line nothing more is yielded; once every line is
    read, ImportError_ lists every bad line: one bad row imports nothing, so the writer
    must not commit what it was given before."""
    chunk: list[tuple] = []
    errors: list[tuple[int, str]] = []
    # pod_uid → its segments so far: one span, or a list of them sorted by start and
    # pairwise not overlapping; a span is (started_at, line, what it says: ended_at, cpu,
    # memory, gpu, username, servername)
    pods: dict[str, tuple | list[tuple]] = {}
    reader = _csv_rows(lines) if fmt == "csv" else _jsonl_rows(lines)
    try:
        for number, record, row, problem in reader:
            if record is None:
                if problem:
                    errors.append((number, problem))
                    continue
                try:
                    record = record_of(parse_row(row), number)
                except ValueError as exc:
                    errors.append((number, str(exc)))
                    continue
            span = (record[8], number, record[9], record[5], record[6], record[7], record[3], record[4])  # fmt: skip
            known = pods.get(record[0])
            if known is None:  # the pod's first row (every row, when each pod has one)
                pods[record[0]] = span
            elif (problem := _add_span(record[0], known, span, pods)) is not None:
                if problem:
                    errors.append((number, problem))
                # else the same segment twice in one file: keep it once, as a re-import would
                continue
            if errors:
                continue
            chunk.append(record)
            if len(chunk) >= chunk_rows:
                yield chunk
                chunk = []
    except (UnicodeDecodeError, csv.Error) as exc:
        errors.append((0, f"cannot read the file: {exc}"))
    if errors:
        raise ImportError_(source, errors)
    if chunk:
        yield chunk


_REPEAT = ""  # _add_span's answer for an exact repeat of a row
_START = itemgetter(0)


def _add_span(pod_uid: str, known: tuple | list[tuple], span: tuple, pods: dict) -> str | None:
    """Add a row's span to the spans its pod has so far (``known``: one, or a sorted list).
    None when added; :data:`_REPEAT` when the row repeats one exactly; else what is wrong:
    another row of the same start that says something else, or an overlap.

    A span is the half-open ``[started_at, ended_at)``, open-ended while the pod runs. The
    pod's spans are kept sorted by start and pairwise apart, so a new one overlaps one of
    them iff it overlaps the one just before it or the one just after it."""
    spans = known if known.__class__ is list else [known]
    start, end = span[0], span[2]
    if spans[-1][0] < start:
        at = len(spans)  # after all the others: a file in time order
    else:
        at = bisect_left(spans, start, key=_START)
        first = spans[at]
        if first[0] == start:
            if first[2:] == span[2:]:
                return _REPEAT
            # two different accounts of one segment (an open row and its closed one, other
            # sizes): keeping the first silently could charge a pod forever
            return (f"pod_uid {pod_uid} started_at {start.isoformat()} is on line {first[1]} "
                    f"too, differently ({difference(first[2:], span[2:])}); give each "
                    "segment once, as it ended (or open if it runs)")  # fmt: skip
    before = spans[at - 1] if at else None
    if before is not None and (before[2] is None or before[2] > start):
        other = before
    elif at < len(spans) and (end is None or spans[at][0] < end):
        other = spans[at]
    else:
        spans.insert(at, span)
        if spans is not known:
            pods[pod_uid] = spans
        return None
    return (f"pod_uid {pod_uid}: {interval(start, end)} overlaps line {other[1]} "
            f"({interval(other[0], other[2])}), {OVERLAP_RULE}")  # fmt: skip


# What an overlap error says is valid; ledger/store/importer.py says it too.
OVERLAP_RULE = (
    "and that time would be charged twice; a pod's segments follow one another: each may "
    "start where the one before it ended, or later (a zero-length one too), and an open one "
    "(no ended_at) must be the pod's last"
)


def interval(started_at: datetime, ended_at: datetime | None) -> str:
    """A segment's times as an overlap error names them."""
    return f"{started_at.isoformat()} to {'open' if ended_at is None else ended_at.isoformat()}"


def difference(first: tuple, then: tuple) -> str:
    """What two accounts of one segment say differently: ``(ended_at, cpu_millicores,
    memory_bytes, gpu_count, username, servername)`` each."""
    names = ("ended_at", "cpu_millicores", "memory_bytes", "gpu_count", "username", "servername")
    shown = [
        f"{n} {'open' if a is None else a} then {'open' if b is None else b}"
        for n, a, b in zip(names, first, then, strict=True)
        if a != b
    ]
    return "; ".join(shown)


def parse_chunks(
    lines: Iterable[str], fmt: str, source: str, chunk_rows: int = 50_000
) -> Iterator[list[dict]]:
    """:func:`parse_record_chunks` as segment dicts, each with its ``_line``."""
    for chunk in parse_record_chunks(lines, fmt, source, chunk_rows):
        out = []
        for record in chunk:
            segment = dict(zip(_SEGMENT_FIELDS, record, strict=False))
            segment["_line"] = record[10]
            out.append(segment)
        yield out


def parse_lines(lines: Iterable[str], fmt: str, source: str) -> list[dict]:
    """Validate a whole file's lines. Returns the segments (each with its ``_line``) or
    raises ImportError_ listing every bad line: one bad row imports nothing."""
    return [segment for chunk in parse_chunks(lines, fmt, source) for segment in chunk]
