# ruff: noqa: F811 - JupyterHub fixtures are imported by name and requested as arguments
"""The pre-spawn quota hook against JupyterHub's MockHub (a real hub app, mock spawner).

JupyterHub's own fixtures (``app``, ``cleanup_after`` …) are imported into this module only,
so their autouse fixtures do not reach the rest of the suite.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import sys
from datetime import timedelta
from pathlib import Path
from unittest import mock

import pytest
from hub_support.ledger_data import GIB, insert, segment, silent_port, write_policy
from jupyterhub import orm
from jupyterhub.tests.conftest import (  # noqa: F401 - fixtures
    cleanup_after,
    new_username,
    ssl_tmpdir,
)
from jupyterhub.tests.mocking import MockHub
from jupyterhub.tests.utils import add_user, api_request, async_requests, auth_header
from sqlalchemy import text
from test_embedded_when_asked import postgres_processes
from traitlets.config import Config

from ledger.core.times import utcnow
from ledger.hub import ChainedPostStop, QuotaHook, install_quota_hook, metrics
from ledger.hub.denial import SpawnException  # None on JupyterHub 5

try:  # JupyterHub 6 (5 has no such fixture)
    from jupyterhub.tests.conftest import tmp_cwd  # noqa: F401 - fixture
except ImportError:
    pass


@pytest.fixture(scope="module")
def io_loop():
    """JupyterHub 5's ``cleanup_after`` asks for it only to run before it closes the loop;
    its own would close the event loop this suite shares for the whole session."""
    return None


# MockHub starts configurable-http-proxy from PATH: the npm one `make` installs into .npm
# (the JupyterHub 5 venv has no other), else the PyPI one in this venv.
NPM_BIN = Path(__file__).resolve().parents[1] / ".npm" / "node_modules" / ".bin"
os.environ["PATH"] = os.pathsep.join(
    [str(NPM_BIN), os.path.dirname(sys.executable), os.environ.get("PATH", "")]
)


@pytest.fixture(scope="module")
async def app(request, ssl_tmpdir):
    """JupyterHub's ``app`` fixture, minus its shutdown that cancels every task in the loop.

    JupyterHub's own suite runs a loop per module; ours shares one loop for the session, so
    ``JupyterHub.stop()``'s ``shutdown_cancel_tasks`` would cancel the next test's setup.
    """
    hub = MockHub.instance()
    await hub.initialize([])
    await hub.start()
    yield hub
    hub.log.handlers = []
    MockHub.clear_instance()

    async def nothing_else(sig=None):  # MockHub.stop already ran cleanup()
        pass

    hub.shutdown_cancel_tasks = nothing_else
    stopped = hub.stop()  # a coroutine on JupyterHub 6, plain on 5
    if inspect.isawaitable(stopped):
        await stopped


def _count(counter, label: str) -> float:
    return counter.labels(label)._value.get()


# the users the running test created (no_spawn_outlives_its_test waits for their spawns)
CREATED: list = []


@pytest.fixture(autouse=True)
async def no_spawn_outlives_its_test():
    """A test that takes 202 (the spawn still running, as under load) would leave the spawn to
    finish during a later test, and the hub it shares (module scope) would count that spawn's
    success or failure there: ``failure_count``, which a success resets and a failure raises,
    and the log records. So every spawn a test started ends before the next test starts."""
    yield
    users, CREATED[:] = list(CREATED), []
    futures = [
        s._spawn_future
        for u in users
        for s in list(u.spawners.values())
        if s._spawn_future is not None and not s._spawn_future.done()
    ]
    if futures:
        await asyncio.wait(futures, timeout=120)


def new_user(app, groups=(), name=None):
    user = add_user(app.db, app, name=name or new_username("quota"))
    CREATED.append(user)
    for group_name in groups:
        group = orm.Group.find(app.db, group_name) or orm.Group(name=group_name)
        app.db.add(group)
        user.groups.append(group)
    app.db.commit()
    return user


def prepare(user, hook, *, mem_gib=4, gpu=0, cpu=1.0):
    spawner = user.spawner
    spawner.pre_spawn_hook = hook
    spawner.mem_guarantee = int(mem_gib * GIB)
    spawner.cpu_guarantee = cpu
    spawner.extra_resource_guarantees = {"nvidia.com/gpu": str(gpu)} if gpu else {}
    return spawner


async def spawn(app, user):
    return await api_request(app, "users", user.name, "server", method="post", bypass_proxy=True)


async def decisions(engine, username):
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT outcome, reason, request, servername FROM decisions WHERE username=:u"),
            {"u": username},
        )
        return [tuple(r) for r in rows]


@pytest.fixture
async def hook(fresh_db_url, tmp_path):
    hook = QuotaHook(db_url=fresh_db_url, policy_path=str(write_policy(tmp_path / "p.yaml")))
    hook.watcher.check_interval_seconds = 0
    yield hook
    await hook.close()


async def test_allowed_spawn_shows_quota_in_progress(app, hook, engine):
    user = new_user(app)
    await insert(engine, [segment(user.name, utcnow() - timedelta(days=2), 10, memory_gib=4)])
    spawner = prepare(user, hook)
    r = await spawn(app, user)
    assert r.status_code in (201, 202), r.text
    events = spawner._quota_progress_events
    line = events[0]["message"]  # wording is ledger.core.decision.describe's
    assert line.startswith("Quota: 40") and "60 GiB-hours used in the last 30 days" in line
    assert "This 1 CPU, 4 GiB server can run about 5 hours." in line
    progress = [e async for e in spawner.progress()]
    assert progress[0] == events[0] and len(progress) > 1  # the spawner's own events follow
    await hook.drain()
    assert await decisions(engine, user.name) == [
        ("allowed", "ok", {"cpu": 1000, "memory": 4 * GIB, "gpu": 0}, "")
    ]
    async with engine.connect() as conn:
        groups = await conn.scalar(text("SELECT count(*) FROM user_groups WHERE username=:u"),
                                   {"u": user.name})  # fmt: skip
    assert groups == 0  # no hub groups: the cache holds none


async def test_denied_by_budget_says_why_when_and_how(app, hook, engine):
    user = new_user(app, groups=["regular"])
    await insert(engine, [segment(user.name, utcnow() - timedelta(days=3), 16, memory_gib=4)])
    prepare(user, hook)
    before = _count(metrics.SPAWN_DECISIONS, "denied")
    r = await spawn(app, user)
    assert r.status_code == 403
    message = r.json()["message"]
    assert (
        "You have used 64 GiB-hours of your 60 GiB-hours of memory in the last 30 days." in message
    )
    assert "You can start this server again at " in message and " UTC" in message
    assert "Ask <b>hub admins</b> for more quota." in message
    assert "https://example.org/quota-request" in message
    assert _count(metrics.SPAWN_DECISIONS, "denied") == before + 1
    assert not user.spawner.active
    # the HTML the spawn page shows: escaped text, a <time> rendered locally, links
    exc = user.spawner._spawn_future.exception()
    assert exc.reason == ("quota" if SpawnException else None) and exc.status_code == 403
    html_message = exc.jupyterhub_html_message
    assert "&lt;b&gt;hub admins&lt;/b&gt;" in html_message
    assert '<time datetime="' in html_message and "toLocaleString" in html_message
    assert "timeZoneName" in html_message  # the local time names its zone
    assert '<a href="/services/quota/">' in html_message
    await hook.drain()
    [(outcome, reason, _, _)] = await decisions(engine, user.name)
    assert (outcome, reason) == ("denied", "used_up:memory")
    async with engine.connect() as conn:
        groups = await conn.scalar(text("SELECT array_agg(group_name) FROM user_groups "
                                        "WHERE username=:u"), {"u": user.name})  # fmt: skip
    assert groups == ["regular"]


async def test_denied_by_zero_gpu_limit_offers_smaller_server(app, hook, engine):
    user = new_user(app, groups=["regular"])
    prepare(user, hook, gpu=1)
    r = await spawn(app, user)
    assert r.status_code == 403
    message = r.json()["message"]
    assert "does not include GPUs" in message
    assert "A smaller server (1 CPU, 4 GiB) would be allowed now." in message


async def test_denied_by_concurrent_gpu_cap_named_servers_counted_together(app, hook, engine):
    user = new_user(app, groups=["gpu-dev"])
    now = utcnow()
    await insert(engine, [segment(user.name, now - timedelta(hours=1), None, gpu=1,
                                  servername="first")])  # fmt: skip
    prepare(user, hook, gpu=1)
    r = await spawn(app, user)
    assert r.status_code == 403
    assert "more than your cap of 1 GPU at a time" in r.json()["message"]
    await hook.drain()
    [(outcome, reason, request, _)] = await decisions(engine, user.name)
    assert (outcome, reason, request["gpu"]) == ("denied", "running:gpu", 1)


async def test_several_groups_take_the_most_generous(app, hook, engine):
    user = new_user(app, groups=["regular", "power"])
    await insert(engine, [segment(user.name, utcnow() - timedelta(days=3), 25, memory_gib=4)])
    prepare(user, hook)
    r = await spawn(app, user)  # 100 GiB-hours: over regular's 60, within power's 240
    assert r.status_code in (201, 202), r.text
    assert "of 240 GiB-hours" in user.spawner._quota_progress_events[0]["message"]


async def test_per_user_override_beats_groups(app, hook, engine):
    user = new_user(app, groups=["regular"], name=new_username("vip"))
    write_policy(Path(hook.watcher.path), users=f"  {user.name}: {{memory: 1000 GiB-hours}}\n")
    await insert(engine, [segment(user.name, utcnow() - timedelta(days=3), 50, memory_gib=4)])
    prepare(user, hook)
    r = await spawn(app, user)
    assert r.status_code in (201, 202), r.text
    assert "of 1000 GiB-hours" in user.spawner._quota_progress_events[0]["message"]


async def test_policy_reload_applies_to_the_next_spawn(app, hook, engine, tmp_path):
    user = new_user(app, groups=["regular"])
    await insert(engine, [segment(user.name, utcnow() - timedelta(days=3), 10, memory_gib=4)])
    prepare(user, hook)
    r = await spawn(app, user)
    assert r.status_code in (201, 202), r.text
    await user.stop()
    policy = hook.watcher.path
    with open(policy, encoding="utf-8") as f:
        text_ = f.read()
    with open(policy, "w", encoding="utf-8") as f:
        f.write(text_.replace("regular: {memory: 60 GiB-hours", "regular: {memory: 30 GiB-hours"))
    prepare(user, hook)  # stopping may replace the spawner object
    r = await spawn(app, user)
    assert r.status_code == 403
    assert "of your 30 GiB-hours of memory" in r.json()["message"]


async def test_composes_with_an_existing_hook(app, fresh_db_url, tmp_path, engine):
    calls = []

    async def size_it(spawner):  # an admin's own hook that sets the size: runs first
        calls.append(spawner.user.name)
        spawner.mem_guarantee = 64 * GIB

    c = Config()
    c.Spawner.pre_spawn_hook = size_it
    hook = install_quota_hook(c, db_url=fresh_db_url,
                              policy_path=str(write_policy(tmp_path / "p.yaml")))  # fmt: skip
    assert c.Spawner.pre_spawn_hook is hook and hook.previous is size_it
    try:
        user = new_user(app, groups=["regular"])
        await insert(engine, [segment(user.name, utcnow() - timedelta(days=3), 14, memory_gib=4)])
        # through the hub's config, as jupyterhub_config.py does: traitlets deep-copies it
        with mock.patch.dict(app.config.Spawner, {"pre_spawn_hook": c.Spawner.pre_spawn_hook}):
            r = await spawn(app, user)
        assert user.spawner.pre_spawn_hook is hook
        assert r.status_code in (201, 202), r.text
        assert calls == [user.name]
        message = user.spawner._quota_progress_events[0]["message"]
        assert "This 64 GiB server can run about 3 minutes" in message
        # installing again keeps a single check over the same admin hook
        again = install_quota_hook(c, db_url=fresh_db_url, policy_path=hook.watcher.path)
        assert again.previous is size_it
        await again.close()
    finally:
        await hook.close()


@pytest.mark.parametrize("on_error", ["deny", "allow"])
async def test_hung_database_takes_the_fail_mode(app, tmp_path, on_error):
    user = new_user(app)
    async with silent_port() as port:
        hook = QuotaHook(
            db_url=f"postgresql+asyncpg://quota@127.0.0.1:{port}/ledger",
            policy_path=str(write_policy(tmp_path / "p.yaml", on_error=on_error)),
            timeout_seconds=0.3,
        )
        before = _count(metrics.SPAWN_CHECK_FAILURES, "timeout")
        prepare(user, hook)
        r = await spawn(app, user)
        # the port never answers: only the time budget can have ended the check
        assert _count(metrics.SPAWN_CHECK_FAILURES, "timeout") == before + 1
        if on_error == "deny":
            assert r.status_code == 503
            message = r.json()["message"]
            assert "could not be checked just now" in message
            # the user is not out of quota: no "ask for more quota" line
            assert "hub admins</b> for more quota" not in message
            assert "example.org/quota-request" not in message
        else:
            assert r.status_code in (201, 202), r.text
            assert "starting anyway" in user.spawner._quota_progress_events[0]["message"]
        assert len(hook.spool) == 1  # kept for later: the log write hangs on the same database
        hook.spool.close()
        hook._engine = None


@pytest.mark.parametrize("on_error", ["deny", "allow"])
async def test_slow_ledger_is_recorded_with_its_outcome(app, tmp_path, fresh_db_url, engine,
                                                        on_error):  # fmt: skip
    from ledger.store.decide import decide

    never = asyncio.Event()

    async def slow_decide(*args):  # answers only after the time budget is gone: never
        await never.wait()
        return await decide(*args)

    hook = QuotaHook(db_url=fresh_db_url, timeout_seconds=0.2, decide=slow_decide,
                     policy_path=str(write_policy(tmp_path / "p.yaml", on_error=on_error)))  # fmt: skip
    try:
        user = new_user(app)
        prepare(user, hook)
        r = await spawn(app, user)
        if on_error == "deny":
            assert r.status_code == 503, r.text
        else:
            assert r.status_code in (201, 202), r.text
        await hook.drain()
        [(outcome, reason, request, _)] = await decisions(engine, user.name)
        expected = {"deny": "error_denied", "allow": "error_allowed"}[on_error]
        assert (outcome, reason) == (expected, "timeout")
        assert request["memory"] == 4 * GIB
    finally:
        await hook.close()


@pytest.mark.parametrize("on_error", ["deny", "allow"])
async def test_no_database_url_takes_the_fail_mode_and_starts_no_postgres(
    app, tmp_path, monkeypatch, on_error
):
    """A hub whose operator forgot the URL: every spawn takes on_ledger_error, with an error
    naming the variable in the hub's log, and no embedded PostgreSQL is started."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.delenv("QUOTA_LEDGER_DB_URL", raising=False)
    monkeypatch.setenv("QUOTA_LEDGER_HOME", str(home))
    records = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = records.append
    logging.getLogger("ledger.hub").addHandler(handler)
    try:
        hook = install_quota_hook(
            Config(), policy_path=str(write_policy(tmp_path / "p.yaml", on_error=on_error))
        )
    finally:
        logging.getLogger("ledger.hub").removeHandler(handler)
    assert "no database URL" in records[0].getMessage()
    assert "QUOTA_LEDGER_DB_URL" in records[0].getMessage()
    user = new_user(app)
    spawner = prepare(user, hook)
    spawner.log.addHandler(handler)
    try:
        r = await spawn(app, user)
        await hook.drain()
    finally:
        spawner.log.removeHandler(handler)
        await hook.close()
    if on_error == "deny":
        assert r.status_code == 503, r.text
        assert "could not be checked just now" in r.json()["message"]
    else:
        assert r.status_code in (201, 202), r.text
        assert "starting anyway" in user.spawner._quota_progress_events[0]["message"]
    logged = " ".join(rec.getMessage() for rec in records[1:])
    assert "no database configured" in logged and "$QUOTA_LEDGER_DB_URL" in logged
    assert "db_url= to install_quota_hook" in logged
    assert not (home / "pgdata").exists() and postgres_processes(home) == []


async def test_failures_show_on_the_hubs_metrics(app):
    r = await async_requests.get(app.hub.url + "metrics", headers=auth_header(app.db, "admin"))
    assert r.status_code == 200
    assert "quota_ledger_spawn_decisions_total" in r.text


async def test_allow_mode_says_so_to_a_stream_opened_during_the_check(app, tmp_path, fresh_db_url):
    """The progress stream is opened while the check still waits for the ledger (as the
    pending page does after slow_spawn_timeout): it waits for the answer and says so."""
    from ledger.store.decide import decide

    started = asyncio.Event()

    async def slow_decide(*args):
        started.set()
        await asyncio.sleep(5)
        return await decide(*args)

    hook = QuotaHook(db_url=fresh_db_url, timeout_seconds=0.5, decide=slow_decide,
                     policy_path=str(write_policy(tmp_path / "p.yaml", on_error="allow")))  # fmt: skip
    try:
        user = new_user(app)
        spawner = prepare(user, hook)
        spawn_task = asyncio.ensure_future(spawn(app, user))
        await asyncio.wait_for(started.wait(), 30)
        assert spawner._spawn_future is not None and not spawner._spawn_future.done()
        first = await anext(aiter(spawner.progress()))  # opened before the answer
        assert "this server is starting anyway" in first["message"], first
        r = await spawn_task
        assert r.status_code in (201, 202), r.text
    finally:
        await hook.close()


async def test_outage_decisions_are_written_when_the_database_returns(app, tmp_path, engine,
                                                                     fresh_db_url):  # fmt: skip
    """Refusals while the database is down wait in the spool and reach the log afterwards."""
    from hub_support.db_switch import DatabaseSwitch

    switch = DatabaseSwitch(fresh_db_url)  # down
    hook = QuotaHook(db_url=switch.url, timeout_seconds=1,
                     policy_path=str(write_policy(tmp_path / "p.yaml")))  # fmt: skip
    try:
        users = [new_user(app), new_user(app)]
        for user in users:
            prepare(user, hook)
            r = await spawn(app, user)
            assert r.status_code == 503, r.text
        assert len(hook.spool) == 2 and not await hook.drain(0.5)
        await switch.up()
        assert await hook.drain(60)
        for user in users:
            assert await decisions(engine, user.name) == [
                ("error_denied", "ledger_error", {"cpu": 1000, "memory": 4 * GIB, "gpu": 0}, "")
            ]
    finally:
        await hook.close()
        await switch.down()


async def test_a_full_spool_drops_the_oldest_and_counts_them():
    from ledger.hub.spool import DecisionSpool

    def no_engine():
        raise OSError("database down")

    spool = DecisionSpool(no_engine, max_rows=2)
    before = metrics.SPAWN_RECORDS_DROPPED._value.get()
    for n in range(3):
        spool.add_groups(f"u{n}", [], utcnow())
    assert [row["username"] for _, row in spool._rows] == ["u1", "u2"]
    assert spool.dropped == 1 and metrics.SPAWN_RECORDS_DROPPED._value.get() == before + 1
    spool.close()


async def test_quota_refusals_are_logged_at_info_without_traceback(app, hook, engine, caplog):
    """JupyterHub logs a failed spawn at ERROR (5: with a traceback); ours become INFO."""
    import logging

    user = new_user(app, groups=["regular"])
    await insert(engine, [segment(user.name, utcnow() - timedelta(days=3), 16, memory_gib=4)])
    prepare(user, hook)
    # the hub is shared by the module: what earlier spawns left in its failure count (a
    # failed one raises it, and only a success resets it) is theirs; this refusal adds nothing
    failures_before = app.tornado_application.settings.get("failure_count", 0)
    with caplog.at_level(logging.DEBUG):
        r = await spawn(app, user)
    assert r.status_code == 403
    ours = [rec for rec in caplog.records if user.name in rec.getMessage()
            and ("Not starting" in rec.getMessage() or "Unhandled error" in rec.getMessage()
                 or "Error starting" in rec.getMessage())]  # fmt: skip
    assert ours, [rec.getMessage() for rec in caplog.records]
    assert all(rec.levelno == logging.INFO and not rec.exc_info for rec in ours)
    assert app.tornado_application.settings.get("failure_count", 0) == failures_before
    exc = user.spawner._spawn_future.exception()
    assert exc.reason in ("quota", None)  # JupyterHub 5 could not overwrite it with 'error'
    assert exc.quota_denial["headline"] == "You have used your memory quota"


HUB_CAP_POLICY = """
groups:
  lab: {memory: 640 GiB-hours, pool: {running: {gpu: 2}}}
hub: {running: {gpu: 1}, wait: {gpu: false}}
"""


@pytest.fixture
async def cap_hook(fresh_db_url, tmp_path):
    path = tmp_path / "caps.yaml"
    path.write_text(HUB_CAP_POLICY, encoding="utf-8")
    hook = QuotaHook(db_url=fresh_db_url, policy_path=str(path))
    hook.watcher.check_interval_seconds = 0
    yield hook
    await hook.close()


async def test_hub_cap_lease_refuses_the_second_gpu_and_names_the_bottleneck(app, cap_hook,
                                                                             engine):  # fmt: skip
    from ledger.store import leases

    first, second = new_user(app, ["lab"]), new_user(app, ["lab"])
    prepare(first, cap_hook, gpu=1)
    r = await spawn(app, first)
    assert r.status_code in (201, 202), r.text
    [held] = await leases.live_leases(engine, utcnow())
    assert (held["username"], held["gpu_count"], held["pools"]) == (first.name, 1, ["lab"])
    line = first.spawner._quota_progress_events[0]["message"]
    assert (
        "Shared: 0 of 2 GPUs in use in the lab group's pool; 0 of 1 GPU in use on this hub" in line
    )
    prepare(second, cap_hook, gpu=1)
    r = await spawn(app, second)
    assert r.status_code == 403
    assert "Not enough gpu free: 1 of 1 GPU in use on this hub" in r.json()["message"]
    await cap_hook.drain()
    async with engine.connect() as conn:
        row = (await conn.execute(text(
            "SELECT reason, bottleneck_level, bottleneck_resource FROM decisions "
            "WHERE username = :u"), {"u": second.name})).one()  # fmt: skip
    assert tuple(row) == ("hub_running:gpu", "hub", "gpu")


async def test_a_failed_spawn_releases_its_lease(app, cap_hook, engine):
    from ledger.store import leases

    user = new_user(app, ["lab"])
    spawner = prepare(user, cap_hook, gpu=1)

    async def broken_start():
        raise RuntimeError("the image does not exist")

    spawner.start = broken_start
    await spawn(app, user)
    for _ in range(100):
        if spawner._spawn_future is None or spawner._spawn_future.done():
            break
        await asyncio.sleep(0.05)
    for _ in range(100):  # the release runs from the future's done callback
        if not await leases.live_leases(engine, utcnow()):
            break
        await asyncio.sleep(0.05)
    assert await leases.live_leases(engine, utcnow()) == []


WAIT_POLICY = """
groups:
  lab: {memory: 640 GiB-hours}
hub: {running: {gpu: 1}}
"""


async def _until(predicate, seconds=30.0):
    for _ in range(int(seconds / 0.1)):
        if await predicate():
            return True
        await asyncio.sleep(0.1)
    return False


async def _stop(app, user) -> None:
    """Stop ``user``'s server and wait until the hub has finished: a DELETE answered 202
    stops in the background, and JupyterHub's ``cleanup_after`` stopping the same user
    meanwhile pops its spawner twice (KeyError in ``User.stop``)."""
    if user.spawner.active:
        await api_request(app, "users", user.name, "server", method="delete",
                          stream=True, bypass_proxy=True)  # fmt: skip

    async def settled():
        return not user.spawner.active and user.spawner.pending is None

    await _until(settled)


async def test_waiting_line_shows_position_wakes_on_a_raised_cap_and_cancel_leaves(
    app, fresh_db_url, tmp_path, engine
):
    from ledger.hub import waiting_line

    path = tmp_path / "wait.yaml"
    path.write_text(WAIT_POLICY, encoding="utf-8")
    hook = QuotaHook(db_url=fresh_db_url, policy_path=str(path))
    hook.watcher.check_interval_seconds = 0
    waiting_line.POLL_SECONDS = 0.2
    try:
        first, second, third = (new_user(app, ["lab"]) for _ in range(3))
        for user in (first, second, third):
            prepare(user, hook, gpu=1)
        assert (await spawn(app, first)).status_code in (201, 202)
        assert await _until(lambda: _ready(first))
        await spawn(app, second)
        await spawn(app, third)

        async def both_in_line():
            return [len(v) for v in hook.line.snapshot().values()] == [2]

        assert await _until(both_in_line)
        lines = {u.name: u.spawner._quota_gate._updates[-1]["message"] for u in (second, third)}
        assert lines[second.name].startswith(
            "Waiting for a GPU: 1 of 1 GPU in use on this hub; you are number 1 in line"
        )
        assert "you are number 2 in line" in lines[third.name]
        # the progress stream a browser reads carries the same line
        stream = second.spawner.progress()
        assert (await stream.__anext__())["message"].startswith("Waiting for a GPU")
        await stream.aclose()
        # raising the cap in the policy file wakes the first in line, no restart
        path.write_text(WAIT_POLICY.replace("gpu: 1}", "gpu: 2}"), encoding="utf-8")
        assert await _until(lambda: _ready(second))
        assert hook.line.snapshot() == {"hub_running:gpu": [(third.name, "")]}
        # cancelling the third spawn (the hub cancels its spawn task) leaves the line
        r = await api_request(
            app, "users", third.name, "server", method="delete", stream=True, bypass_proxy=True
        )
        assert r.status_code in (202, 204), (r.status_code, r.text[-1500:])

        async def line_empty():
            return hook.line.snapshot() == {}

        assert await _until(line_empty)
        await hook.drain()
        async with engine.connect() as conn:
            rows = (await conn.execute(text(
                "SELECT username, outcome, reason, bottleneck_level FROM decisions "
                "WHERE outcome IN ('waiting', 'woke') ORDER BY id"))).all()  # fmt: skip
        assert [tuple(r) for r in rows] == [
            (second.name, "waiting", "hub_running:gpu", "hub"),
            (third.name, "waiting", "hub_running:gpu", "hub"),
            (second.name, "woke", "ok", None),
        ]
    finally:
        waiting_line.POLL_SECONDS = 2.0
        for user in (first, second, third):
            await _stop(app, user)
        await hook.close()


async def test_a_stopped_server_releases_its_lease_and_the_waiter_starts(
    app, fresh_db_url, tmp_path, engine
):
    """No collector or recorder has seen the first GPU server when it stops: its lease would
    hold the hub's only GPU until its TTL (start_timeout + http_timeout + 2 minutes) while
    the second spawn waits for it. The stop (the hook's ``post_stop_hook``) releases it and
    wakes the line: the second server starts at once."""
    from ledger.hub import waiting_line
    from ledger.store import leases

    path = tmp_path / "wait.yaml"
    path.write_text(WAIT_POLICY, encoding="utf-8")
    hook = QuotaHook(db_url=fresh_db_url, policy_path=str(path))
    hook.watcher.check_interval_seconds = 0
    waiting_line.POLL_SECONDS = 60.0  # only the stop's wake can start the waiter in time
    first, second = new_user(app, ["lab"]), new_user(app, ["lab"])
    try:
        for user in (first, second):
            prepare(user, hook, gpu=1)
            user.spawner.post_stop_hook = ChainedPostStop(None, hook)
            user.spawner.start_timeout = 90
        assert (await spawn(app, first)).status_code in (201, 202)
        assert await _until(lambda: _ready(first))
        [held] = await leases.live_leases(engine, utcnow())
        assert held["username"] == first.name
        await spawn(app, second)

        async def in_line():
            return bool(hook.line.snapshot())

        assert await _until(in_line)
        await _stop(app, first)
        assert await _until(lambda: _ready(second), seconds=20)
        [held] = await leases.live_leases(engine, utcnow())
        assert held["username"] == second.name
    finally:
        waiting_line.POLL_SECONDS = 2.0
        for user in (first, second):
            await _stop(app, user)
        await hook.close()


async def test_a_spawn_cancelled_while_its_lease_is_taken_releases_it(app, cap_hook, engine,
                                                                     monkeypatch):  # fmt: skip
    """The hub's cancel lands as the lease's transaction commits: the lease is released, not
    left to hold the hub's only GPU until its TTL."""
    from ledger.store import leases

    user = new_user(app, ["lab"])
    spawner = prepare(user, cap_hook, gpu=1)
    take = leases.take

    async def cancelled_as_it_commits(*args, **kwargs):
        result = await take(*args, **kwargs)
        spawner._spawn_future.cancel()  # what the hub does on a stop, at the worst moment
        await asyncio.sleep(0)
        return result

    monkeypatch.setattr(leases, "take", cancelled_as_it_commits)
    await spawn(app, user)
    for _ in range(100):  # the release runs once the take ends
        if not await leases.live_leases(engine, utcnow()):
            break
        await asyncio.sleep(0.05)
    assert await leases.live_leases(engine, utcnow()) == []
    await _stop(app, user)


async def test_a_spawn_cancelled_as_the_check_answers_is_not_started(app, tmp_path, fresh_db_url):
    """The hub cancels a pending spawn's task (a stop while it is pending,
    jupyterhub/apihandlers/users.py ``delete``). A cancel that lands as the check's read
    returns must stop the spawn before ``Spawner.start``; Python 3.11's ``asyncio.wait_for``
    drops it (https://github.com/python/cpython/issues/86296) and the server would start."""
    from ledger.store.decide import decide

    spawners = []

    async def cancelled_as_it_answers(*args):
        decision = await decide(*args)
        spawners[0]._spawn_future.cancel()  # what the hub does, at the worst moment
        return decision

    hook = QuotaHook(db_url=fresh_db_url, decide=cancelled_as_it_answers,
                     policy_path=str(write_policy(tmp_path / "p.yaml")))  # fmt: skip
    user = new_user(app)
    try:
        spawners.append(prepare(user, hook))
        calls = []
        start = user.spawner.start

        async def counted_start():
            calls.append(1)
            return await start()

        user.spawner.start = counted_start
        await spawn(app, user)

        async def settled():
            return user.spawner.pending is None

        assert await _until(settled)
        assert calls == [], "Spawner.start ran for a cancelled spawn"
        # the hub's own stop (the DELETE below) cleans up the server record it made
    finally:
        await _stop(app, user)
        await hook.close()


async def _ready(user):
    return bool(user.spawner.ready)


async def test_next_spawn_says_a_request_was_approved_once(app, hook, engine):
    from decimal import Decimal

    from ledger.store import quota_requests

    user = new_user(app)
    now = utcnow()
    async with engine.begin() as conn:
        asked = await quota_requests.create(
            conn, username=user.name, resource_name="memory", amount_hours=Decimal(100),
            until_at=now + timedelta(days=30), reason="thesis", at=now,
        )  # fmt: skip
        await quota_requests.approve(conn, asked.id, by="admin", at=now, message="good luck")
    spawner = prepare(user, hook)
    r = await spawn(app, user)
    assert r.status_code in (201, 202), r.text
    lines = [e["message"] for e in spawner._quota_progress_events]
    assert lines[0].startswith("Quota: 0 of 160 GiB-hours")  # the grant is in the limit
    assert (
        f"Your request {asked.id} for 100 GiB-hours of memory was approved by admin: good luck"
        in lines
    )
    async with engine.connect() as conn:
        assert await quota_requests.unseen_decisions(conn, user.name) == []  # told once
