"""benchmarks/prometheus_side.py's robustness, against a stand-in ``prometheus`` executable
(tests/prometheus_stub.py: real processes, real HTTP): a query over its limit is a timeout
in the results, not a hang; ``recover()`` brings back a server that stopped answering or
that the memory watchdog killed, and says why only for the process whose query failed."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import pytest
from requirements import require

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

STUB = Path(__file__).resolve().parent / "prometheus_stub.py"


@pytest.fixture
def ps(tmp_path, monkeypatch):
    require("aiohttp")
    from benchmarks import prometheus_side

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    executable = bin_dir / "prometheus"
    executable.write_text(f'#!/bin/sh\nexec {sys.executable} {STUB} "$@"\n')
    executable.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(prometheus_side, "CLIENT_GRACE_SECONDS", 1.0)
    return prometheus_side


@pytest.fixture
def server(ps, tmp_path):
    server = ps.PrometheusServer(tmp_path / "tsdb", tmp_path, memory_limit_bytes=150 * 1024**2)
    server.start(timeout_seconds=30)
    yield server
    server.stop()


async def test_a_query_over_its_limit_is_a_timeout_not_a_hang(ps, server):
    async with ps.PromQueries(server.url, query_timeout_seconds=1) as q:
        answer = await q.query("up")  # Prometheus gets the limit with every query
        assert answer["data"]["timeout"] == "1s"
        with pytest.raises(ps.QueryTimeout, match="timed out after 1 s"):
            await q.query("evaluation timeout")  # Prometheus' own: errorType "timeout"
        started = time.monotonic()
        with pytest.raises(ps.QueryTimeout, match="timed out after 1 s"):
            await q.query("hang")  # no answer at all: the client's limit
        assert time.monotonic() - started < 30


async def test_a_timeout_is_recorded_as_one_in_the_timed_results(ps, server):
    from benchmarks import vs_prometheus as vp

    async with ps.PromQueries(server.url, query_timeout_seconds=1) as q:
        failed: dict[str, str] = {}
        latencies = await vp.timed(
            {"fine": q.query, "slow": lambda _: q.query("hang")}, [("up",)], min_reps=2,
            max_reps=2, budget_seconds=10, failed=failed, on_error=server.recover,
        )  # fmt: skip
    assert failed == {"slow": "timed out after 1 s"}
    assert len(latencies["fine"]) == 2 and latencies["slow"] == []
    assert server.ready()  # the server answered throughout: it was not restarted for it


async def test_recover_restarts_a_server_that_stopped_answering(ps, server):
    first = server.process
    async with ps.PromQueries(server.url, query_timeout_seconds=1) as q:
        with pytest.raises(ps.QueryTimeout):
            await q.query("wedge")
        assert first.poll() is None and not server.ready()  # alive, but not serving
        assert await asyncio.to_thread(server.recover) is None  # no kill of ours: no reason
        assert server.process is not first and first.poll() is not None
        assert server.ready()
        assert (await q.query("up"))["status"] == "success"


async def test_recover_says_why_the_watchdog_killed_the_server_and_only_once(ps, server):
    first = server.process
    async with ps.PromQueries(server.url, query_timeout_seconds=20) as q:
        with pytest.raises(Exception) as failed:  # the connection drops with the process
            await q.query("grow")
        assert not isinstance(failed.value, ps.QueryTimeout)
        why = await asyncio.to_thread(server.recover)
        assert why is not None and why.startswith("Prometheus killed at"), why
        assert first.poll() is not None and server.ready()
        # a later failure of the new process is not blamed on the old one's kill
        q.query_timeout_seconds = 1
        with pytest.raises(ps.QueryTimeout):
            await q.query("hang")
        assert await asyncio.to_thread(server.recover) is None
