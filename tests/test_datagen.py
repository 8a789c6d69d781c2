"""benchmarks/datagen.py: deterministic for a seed, and every row is a valid import row."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # benchmarks/ is not installed; it lives in the checkout
    sys.path.insert(0, str(REPO))

from benchmarks import datagen  # noqa: E402
from ledger.core.import_rows import parse_row  # noqa: E402
from ledger.store.importer import read_rows  # noqa: E402


def _sample(seed: int) -> list[datagen.Segment]:
    return list(datagen.generate_segments(50, 2_000, seed=seed))


def test_same_seed_same_rows_other_seed_other_rows():
    first = _sample(7)
    assert first == _sample(7)
    assert first != _sample(8)
    assert datagen.generate_groups(50, seed=7) == datagen.generate_groups(50, seed=7)


def test_shape():
    segments = _sample(1)
    assert len(segments) == 2_000
    groups = datagen.generate_groups(50, seed=1)
    assert set(groups) == {s.username for s in segments}  # every user has a segment
    assert {g for gs in groups.values() for g in gs} <= set(datagen.GROUPS)
    span_start = datagen.EVAL_AT.timestamp() - datagen.DAYS * 86400
    for s in segments:
        assert span_start <= s.started_at.timestamp() < datagen.EVAL_AT.timestamp()
        assert s.ended_at is None or s.started_at < s.ended_at < datagen.EVAL_AT
        assert s.gpu_count == 0 or groups[s.username] == ["gpu-dev"]
    assert len({(s.pod_uid, s.started_at) for s in segments}) == len(segments)
    # one server never runs twice at once
    by_server: dict[tuple[str, str], list[datagen.Segment]] = {}
    for s in segments:
        by_server.setdefault((s.username, s.servername), []).append(s)
    for runs in by_server.values():
        runs.sort(key=lambda s: s.started_at)
        for a, b in zip(runs, runs[1:], strict=False):
            assert a.ended_at is not None and a.ended_at <= b.started_at
    assert max(Counter(s.username for s in segments).values()) > 2_000 / 50  # heavy tail


def test_rows_import_as_generated(tmp_path):
    segments = _sample(3)
    for s in segments:
        parsed = parse_row(datagen.to_import_row(s))
        assert (parsed["started_at"], parsed["ended_at"]) == (s.started_at, s.ended_at)
        assert (parsed["cpu_millicores"], parsed["memory_bytes"], parsed["gpu_count"]) == (
            s.cpu_millicores,
            s.memory_bytes,
            s.gpu_count,
        )
        assert (parsed["username"], parsed["servername"], parsed["pod_uid"]) == (
            s.username,
            s.servername,
            s.pod_uid,
        )
    path = tmp_path / "usage.jsonl"
    assert datagen.write_jsonl(path, segments) == len(segments)
    rows, _ = read_rows(path)
    assert len(rows) == len(segments)
    datagen.write_groups(tmp_path / "groups.json", datagen.generate_groups(50, seed=3))
    assert len(json.loads((tmp_path / "groups.json").read_text())) == 50
