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

Writing them is ledger/store/importer.py (``write_rows``: COPY, then one INSERT … ON CONFLICT).
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterable, Iterator
from datetime import datetime
from functools import lru_cache

from ledger.core.quantities import QuantityError, cpu_millicores, device_count, memory_bytes
from ledger.core.times import TimeError, parse_iso
from ledger.core.usernames import UsernameError, check_username

FORMATS = ("csv", "jsonl")

REQUIRED = ("username", "started_at")
OPTIONAL = ("ended_at", "cpu", "memory", "gpu", "servername", "pod_uid", "namespace", "pod_name")
KNOWN = REQUIRED + OPTIONAL
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
        out[key] = "" if value is None else str(value)
    started, ended = out.get("started_at"), out.get("ended_at")
    if started and ended and ended < started:
        problems.append(f"ended_at {ended.isoformat()} is before started_at {started.isoformat()}")
    if problems:
        raise ValueError("; ".join(problems))
    if not out["pod_uid"]:
        out["pod_uid"] = _uid(out["username"], out["servername"], out["namespace"], started)
    return out


def _read_jsonl(lines: Iterable[str]) -> Iterator[tuple[int, dict | None, str | None]]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            yield number, None, f"not valid JSON ({exc.msg} at column {exc.colno})"
            continue
        if not isinstance(row, dict):
            yield number, None, f"each line must be a JSON object, got {type(row).__name__}"
            continue
        yield number, row, None


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


def parse_lines(lines: Iterable[str], fmt: str, source: str) -> list[dict]:
    """Validate a whole file's lines. Returns the segments (each with its ``_line``) or
    raises ImportError_ listing every bad line: one bad row imports nothing."""
    rows: list[dict] = []
    errors: list[tuple[int, str]] = []
    seen: dict[tuple[str, datetime], int] = {}
    open_pods: dict[str, int] = {}
    reader = _read_csv(lines) if fmt == "csv" else _read_jsonl(lines)
    try:
        for number, row, problem in reader:
            if problem:
                errors.append((number, problem))
                continue
            try:
                segment = parse_row(row)
            except ValueError as exc:
                errors.append((number, str(exc)))
                continue
            key = (segment["pod_uid"], segment["started_at"])
            if key in seen:
                # the same segment twice in one file: keep it once, as a re-import would
                continue
            seen[key] = number
            if segment["ended_at"] is None:
                earlier = open_pods.get(segment["pod_uid"])
                if earlier is not None:
                    errors.append(
                        (
                            number,
                            f"pod_uid {segment['pod_uid']} is already open on line {earlier}",
                        )
                    )
                    continue
                open_pods[segment["pod_uid"]] = number
            segment["_line"] = number
            rows.append(segment)
    except (UnicodeDecodeError, csv.Error) as exc:
        errors.append((0, f"cannot read the file: {exc}"))
    if errors:
        raise ImportError_(source, errors)
    return rows
