"""install_quota_hook on a traitlets Config, and reading a request from spawner traits."""

from __future__ import annotations

import copy
import logging
from types import SimpleNamespace

import pytest
from docs_examples import tagged_blocks
from hub_support.ledger_data import GIB, write_policy
from traitlets.config import Config

from ledger.core.accounting import Accounting
from ledger.core.policy_yaml import parse_policy
from ledger.core.quantities import QuantityError
from ledger.hub import ChainedHook, ChainedPostStop, QuotaHook, install_quota_hook
from ledger.hub.request import request_from_traits, spawner_request


def mine(spawner):
    """An operator's own hook (on Spawner)."""


def kube(spawner):
    """An operator's own hook on the KubeSpawner section."""


def test_wraps_hooks_on_spawner_class_sections_too(tmp_path):
    c = Config()
    c.Spawner.pre_spawn_hook = mine
    c.KubeSpawner.pre_spawn_hook = kube  # traitlets lets this one win for KubeSpawner
    hook = install_quota_hook(
        c, db_url="postgresql://x@/y", policy_path=str(write_policy(tmp_path / "p.yaml"))
    )
    assert c.Spawner.pre_spawn_hook is hook and hook.previous is mine
    chained = c.KubeSpawner.pre_spawn_hook
    assert isinstance(chained, ChainedHook) and chained.previous is kube and chained.hook is hook
    # traitlets deep-copies config into every spawner: all must share the one hook
    assert copy.deepcopy(hook) is hook and copy.deepcopy(chained) is chained


def test_a_post_stop_hook_releases_leases_after_the_operators_own(tmp_path):
    """Every install chains ``post_stop_hook`` (a stopped server's lease is released, the
    waiting line woken), after the operator's hook, on each section that sets one; a second
    install keeps one link."""

    c = Config()
    c.Spawner.post_stop_hook = mine
    c.KubeSpawner.post_stop_hook = kube
    policy = str(write_policy(tmp_path / "p.yaml"))
    install_quota_hook(c, db_url="postgresql://x@/y", policy_path=policy)
    hook = install_quota_hook(c, db_url="postgresql://x@/y", policy_path=policy)
    for section, previous in (("Spawner", mine), ("KubeSpawner", kube)):
        chained = c[section].post_stop_hook
        assert isinstance(chained, ChainedPostStop), section
        assert (chained.previous, chained.hook) == (previous, hook), section
        assert copy.deepcopy(chained) is chained
    bare = Config()
    hook = install_quota_hook(bare, db_url="postgresql://x@/y", policy_path=policy)
    assert (bare.Spawner.post_stop_hook.previous, bare.Spawner.post_stop_hook.hook) == (None, hook)


async def test_a_spawner_class_s_own_default_hooks_still_run(tmp_path, monkeypatch):
    """A spawner class may give itself a ``post_stop_hook`` or ``pre_spawn_hook`` with
    ``@default``; the ``c.Spawner`` hooks install sets would replace it, so ours call it."""
    from jupyterhub.spawner import LocalProcessSpawner
    from traitlets import default

    ran = []

    class OwnHooks(LocalProcessSpawner):
        @default("post_stop_hook")
        def _own_post_stop(self):
            return lambda spawner: ran.append("post_stop")

        @default("pre_spawn_hook")
        def _own_pre_spawn(self):
            return lambda spawner: ran.append("pre_spawn")

    c = Config()
    hook = install_quota_hook(
        c, db_url="postgresql://x@/y", policy_path=str(write_policy(tmp_path / "p.yaml"))
    )

    async def check(spawner):
        ran.append("check")

    monkeypatch.setattr(hook, "check", check)
    spawner = OwnHooks()
    await c.Spawner.pre_spawn_hook(spawner)
    await c.Spawner.post_stop_hook(spawner)  # then the quota hook's release (no lease here)
    assert ran == ["pre_spawn", "check", "post_stop"]


def test_settings_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("QUOTA_LEDGER_CONFIG", str(write_policy(tmp_path / "p.yaml")))
    monkeypatch.setenv("QUOTA_LEDGER_DB_URL", "postgresql://env@/db")
    hook = install_quota_hook(Config())
    assert isinstance(hook, QuotaHook) and hook.db_url == "postgresql://env@/db"
    monkeypatch.delenv("QUOTA_LEDGER_CONFIG")
    with pytest.raises(ValueError, match="QUOTA_LEDGER_CONFIG"):
        install_quota_hook(Config())


@pytest.mark.parametrize(
    ("basis", "expected_memory", "expected_cpu"),
    [("requests", 2 * GIB, 500), ("limits", 8 * GIB, 2000), ("max", 8 * GIB, 2000)],
)
def test_charge_basis_comes_from_the_policy(basis, expected_memory, expected_cpu):
    """The production path: the hook's spawner_request on a parsed policy's accounting block."""
    policy = parse_policy(f"accounting: {{charge_basis: {basis}}}\n")
    spawner = SimpleNamespace(mem_guarantee=2 * GIB, mem_limit=8 * GIB, cpu_guarantee=0.5,
                              cpu_limit=2.0, name="")  # fmt: skip
    request = spawner_request(spawner, policy)
    assert request.amounts["memory"] == expected_memory
    assert request.amounts["cpu"] == expected_cpu


def test_limit_counts_when_there_is_no_guarantee_and_gpus_come_from_extra_resources():
    request = request_from_traits(
        mem_limit=4 * GIB,
        extra_limits={"nvidia.com/gpu": "2"},
        accounting=Accounting(resources={"gpu": "nvidia.com/gpu"}),
        servername="big",
    )
    assert request.amounts == {"cpu": 0, "memory": 4 * GIB, "gpu": 2}
    assert request.servername == "big"


def test_a_fractional_gpu_is_refused_with_the_trait_named():
    with pytest.raises(QuantityError, match=r"extra_resource_guarantees\[nvidia.com/gpu\]"):
        request_from_traits(
            extra_guarantees={"nvidia.com/gpu": "0.5"},
            accounting=Accounting(resources={"gpu": "nvidia.com/gpu"}),
        )


async def test_an_unreadable_size_refuses_with_a_message(tmp_path):
    hook = QuotaHook(db_url="postgresql://x@/y", policy_path=str(write_policy(tmp_path / "p.yaml")))
    spawner = SimpleNamespace(user=SimpleNamespace(name="u", groups=[]), name="", log=None,
                              mem_guarantee="lots")  # fmt: skip
    with pytest.raises(Exception, match="size could not be read") as caught:
        await hook.check(spawner)
    assert caught.value.status_code == 400


# --- composable hub configuration -----------------------------------------------------------


def test_install_quota_services_appends_to_what_the_config_holds(tmp_path):
    from ledger.hub import install_quota_services

    c = Config()
    c.JupyterHub.services = [{"name": "grafana", "url": "http://grafana:3000"}]
    c.JupyterHub.load_roles = [{"name": "user", "scopes": ["self", "access:services!service=grafana"]},
                               {"name": "ops", "scopes": ["admin:users"], "users": ["o"]}]  # fmt: skip
    install_quota_services(c, db_url="postgresql://q:pw@db/q", policy_path="/etc/p.yaml",
                           admin_users=["dora"])  # fmt: skip
    names = [s["name"] for s in c.JupyterHub.services]
    assert names == ["grafana", "quota", "quota-enforcer"]
    roles = {r["name"]: r for r in c.JupyterHub.load_roles}
    assert roles["user"]["scopes"] == ["self", "access:services!service=grafana",
                                       "access:services!service=quota"]  # fmt: skip
    assert roles["ops"] == {"name": "ops", "scopes": ["admin:users"], "users": ["o"]}
    assert roles["quota-admin"]["users"] == ["dora"]
    assert roles["quota-enforcer"]["scopes"] == ["list:users", "read:users:groups",
                                                 "read:servers", "delete:servers"]  # fmt: skip
    web = c.JupyterHub.services[1]
    assert web["oauth_client_allowed_scopes"] == ["custom:quota:admin", "admin-ui"]
    assert "pw" not in " ".join(web["command"])  # the URL travels in the environment
    assert web["environment"]["QUOTA_LEDGER_DB_URL"] == "postgresql://q:pw@db/q"
    assert "custom:quota:admin" in c.JupyterHub.custom_scopes
    # twice (hub.md's and web.md's examples both pasted): the second adds nothing twice
    install_quota_services(c, db_url="postgresql://q@db/q", policy_path="/p.yaml",
                           web=False, enforcer_name="quota-enforcer-2")  # fmt: skip
    assert [s["name"] for s in c.JupyterHub.services][:3] == names


def test_hub_admins_switch_requires_the_custom_scope_only():
    from ledger.hub import install_quota_services

    c = Config()
    added = install_quota_services(c, db_url="postgresql://q@db/q", policy_path="/p.yaml",
                                   hub_admins=False, enforcer=False)  # fmt: skip
    web = added["services"][0]
    assert web["oauth_client_allowed_scopes"] == ["custom:quota:admin"]
    assert web["command"][-2:] == ["--admin-scope", "custom:quota:admin"]


def test_install_quota_services_needs_a_database(monkeypatch):
    from ledger.hub import install_quota_services

    monkeypatch.delenv("QUOTA_LEDGER_DB_URL", raising=False)
    with pytest.raises(ValueError, match="QUOTA_LEDGER_DB_URL"):
        install_quota_services(Config(), policy_path="/p.yaml")


# JupyterHub's default `server` role, as the hub under test defines it (5.x and 6.x agree)
SERVER_DEFAULTS = ["users:activity!user", "access:servers!server"]
QUOTA_ACCESS = "access:services!service=quota"


async def loaded_roles(c: Config, tmp_path, monkeypatch) -> dict[str, set[str]]:
    """The roles a real JupyterHub loads from ``c`` (its own merging of ``load_roles`` over
    its default roles): name -> scopes, as stored in the hub's database."""
    from jupyterhub import orm
    from jupyterhub.app import JupyterHub

    monkeypatch.chdir(tmp_path)  # the hub writes its cookie secret and pid files here
    c.JupyterHub.db_url = "sqlite:///:memory:"
    hub = JupyterHub(config=c)
    # init_logging re-parents tornado's loggers under this app's log (which does not
    # propagate) for the rest of the process: the hub tests' log capture would lose them
    hub.init_logging = lambda: None
    await hub.initialize([])
    try:
        return {role.name: set(role.scopes) for role in hub.db.query(orm.Role)}
    finally:
        hub.db.close()


def server_role(c: Config) -> dict:
    (role,) = [r for r in c.JupyterHub.load_roles if r["name"] == "server"]
    return role


async def test_jupyterlab_gives_the_server_role_the_service_and_keeps_its_defaults(
    tmp_path, monkeypatch
):
    from jupyterhub.roles import get_default_roles

    from ledger.hub import install_quota_services

    (default,) = [r for r in get_default_roles() if r["name"] == "server"]
    assert default["scopes"] == SERVER_DEFAULTS  # what this test and docs/jupyterlab.md assume
    c = Config()
    assert not any(r["name"] == "server" for r in install_quota_services(
        c, db_url="postgresql://q@db/q", policy_path="/p.yaml")["roles"])  # fmt: skip
    assert "server" not in [r["name"] for r in c.JupyterHub.load_roles]  # off by default

    c = Config()
    install_quota_services(c, db_url="postgresql://q@db/q", policy_path="/p.yaml", jupyterlab=True)
    assert server_role(c)["scopes"] == [*SERVER_DEFAULTS, QUOTA_ACCESS]
    # what the hand-written block of docs/jupyterlab.md gives, for those without the keyword
    (block,) = tagged_blocks("jupyterlab-config", "docs/jupyterlab.md")
    by_hand = Config()
    by_hand.JupyterHub.load_roles = []
    exec(compile(block.text, block.where, "exec"), {"c": by_hand})
    assert server_role(by_hand)["scopes"] == server_role(c)["scopes"]
    # a second call (docs/hub.md's and web.md's blocks both pasted) adds nothing twice
    install_quota_services(c, db_url="postgresql://q@db/q", policy_path="/p.yaml", jupyterlab=True)
    assert server_role(c)["scopes"] == [*SERVER_DEFAULTS, QUOTA_ACCESS]
    tornado_parent = logging.getLogger("tornado").parent  # what earlier tests left it as
    roles = await loaded_roles(c, tmp_path, monkeypatch)
    assert roles["server"] == {*SERVER_DEFAULTS, QUOTA_ACCESS}
    assert logging.getLogger("tornado").parent is tornado_parent  # left as it was
    assert QUOTA_ACCESS in roles["user"] and "self" in roles["user"]


@pytest.mark.parametrize(
    "theirs, kept",
    [
        # the operator's own server role: theirs stay, the service is added
        ({"name": "server", "scopes": [*SERVER_DEFAULTS, "read:users:name!user"]},
         [*SERVER_DEFAULTS, "read:users:name!user"]),
        # an entry without scopes would take JupyterHub's defaults; adding one must keep them
        ({"name": "server", "description": "ours"}, SERVER_DEFAULTS),
    ],
)  # fmt: skip
async def test_jupyterlab_merges_with_the_operators_server_role(
    tmp_path, monkeypatch, theirs, kept
):
    from ledger.hub import install_quota_services

    c = Config()
    c.JupyterHub.load_roles = [dict(theirs)]
    install_quota_services(c, db_url="postgresql://q@db/q", policy_path="/p.yaml", jupyterlab=True)
    assert [r["name"] for r in c.JupyterHub.load_roles].count("server") == 1
    assert server_role(c)["scopes"] == [*kept, QUOTA_ACCESS]
    assert server_role(c).get("description") == theirs.get("description")
    assert (await loaded_roles(c, tmp_path, monkeypatch))["server"] == {*kept, QUOTA_ACCESS}


def test_jupyterlab_docs_block_and_its_web_service(monkeypatch):
    from ledger.hub import install_quota_services

    monkeypatch.setenv("QUOTA_LEDGER_DB_URL", "postgresql://q@db/q")
    monkeypatch.setenv("QUOTA_LEDGER_CONFIG", "/p.yaml")
    (block,) = tagged_blocks("jupyterlab-services", "docs/jupyterlab.md")
    c = Config()
    exec(compile(block.text, block.where, "exec"), {"c": c})
    assert server_role(c)["scopes"] == [*SERVER_DEFAULTS, QUOTA_ACCESS]
    with pytest.raises(ValueError, match="web=False"):
        install_quota_services(Config(), web=False, jupyterlab=True)


def test_templates_go_after_the_operators_and_keep_their_vars(tmp_path):
    from jupyterhub._data import DATA_FILES_PATH

    from ledger.hub.pages import TEMPLATE_DIR

    default = f"{DATA_FILES_PATH}/templates"
    c = Config()
    c.JupyterHub.template_paths = ["/srv/branding", default]
    c.JupyterHub.template_vars = {"announcement": "Maintenance on Friday"}
    hook = install_quota_hook(c, db_url="postgresql://x@/y",
                              policy_path=str(write_policy(tmp_path / "p.yaml")))  # fmt: skip
    assert c.JupyterHub.template_paths == ["/srv/branding", str(TEMPLATE_DIR), default]
    assert c.JupyterHub.template_vars["announcement"] == "Maintenance on Friday"
    assert c.JupyterHub.template_vars["quota_denial_of"] == hook.denial_of
    install_quota_hook(c, db_url="postgresql://x@/y", policy_path=hook.watcher.path)
    assert c.JupyterHub.template_paths.count(str(TEMPLATE_DIR)) == 1


def _hub_jinja(*operator_dirs):
    """Templates looked up as JupyterHub does (JupyterHub.init_tornado_settings)."""
    from jinja2 import ChoiceLoader, Environment, FileSystemLoader, PrefixLoader
    from jupyterhub._data import DATA_FILES_PATH

    from ledger.hub.pages import TEMPLATE_DIR

    base = f"{DATA_FILES_PATH}/templates"
    loader = ChoiceLoader([PrefixLoader({"templates": FileSystemLoader([base])}, "/"),
                           FileSystemLoader([*operator_dirs, str(TEMPLATE_DIR), base])])  # fmt: skip
    return Environment(loader=loader, autoescape=True)


def _page_namespace():
    class User:  # what page.html reads of the current user
        name = "alice"
        admin = False

    return dict(static_url=lambda p, **kw: "/hub/static/" + p, base_url="/", prefix="/",
                user=None, login_url="/hub/login", logout_url="/hub/logout",
                parsed_scopes=set(), version_hash="", xsrf="", services=[],
                announcement=None, no_spawner_check=True)  # fmt: skip


def _denied_exception():
    from datetime import UTC, datetime

    from ledger.hub.denial import refusal

    view = {"headline": "You have used your memory quota", "message": "m",
            "budgets": [{"resource": "memory", "used": "64 GiB-hours",
                         "limit": "60 GiB-hours", "window": "30 days", "percent": 107,
                         "blocks": "used_up"}],
            "caps": [], "request": "2 CPUs, 4 GiB",
            "retry_at": datetime(2026, 12, 28, 2, 0, tzinfo=UTC).isoformat(),
            "retry_at_utc": "2026-12-28 02:00 UTC", "smaller": "1 CPU, 1 GiB",
            "contact": "Ask <b>admins</b>", "contact_url": "https://example.org/more",
            "quota_url": "/services/quota/", "text": "t"}  # fmt: skip
    return refusal("t", "t", status_code=403, reason="quota", view=view)


def test_the_denial_page_is_friendly_and_other_403s_keep_the_hubs_page(tmp_path):
    from tornado.web import HTTPError

    env = _hub_jinja()
    ns = {**_page_namespace(), "status_code": 403, "status_message": "Forbidden",
          "message": "t", "extra_error_html": ""}  # fmt: skip
    page = env.get_template("403.html").render(exception=_denied_exception(), **ns)
    assert "You have used your memory quota" in page and "403 : Forbidden" not in page
    assert "64 GiB-hours" in page and "60 GiB-hours" in page and "30 days" in page
    assert 'datetime="2026-12-28T02:00:00+00:00"' in page and "timeZoneName" in page
    assert "1 CPU, 1 GiB" in page and 'href="/services/quota/"' in page
    assert "Ask &lt;b&gt;admins&lt;/b&gt;" in page  # escaped
    other = env.get_template("403.html").render(exception=HTTPError(403, "nope"), **ns)
    assert "403 : Forbidden" in other and "quota" not in other.lower()


def test_the_denial_page_extends_the_operators_error_page(tmp_path):
    (tmp_path / "error.html").write_text(
        '{% extends "templates/error.html" %}{% block h1_error %}<p class="brand">ACME</p>'
        "{{ super() }}{% endblock %}"
    )
    env = _hub_jinja(str(tmp_path))
    ns = {**_page_namespace(), "status_code": 403, "status_message": "Forbidden",
          "message": "t", "extra_error_html": ""}  # fmt: skip
    page = env.get_template("403.html").render(exception=_denied_exception(), **ns)
    assert "You have used your memory quota" in page
    other = env.get_template("403.html").render(exception=None, **ns)
    assert 'class="brand">ACME' in other and "403 : Forbidden" in other


async def test_a_recording_hub_wakes_the_line_after_the_segment_is_closed(tmp_path, monkeypatch):
    """On a hub whose recorder writes the segments (DockerSpawner, ...), the open segment is
    what holds the capacity: a waiter woken before the recorder closed it was refused and
    slept a whole poll. The line is woken again once the segment is closed."""
    hook = install_quota_hook(
        Config(), db_url="postgresql://x@/y", policy_path=str(write_policy(tmp_path / "p.yaml"))
    )
    events = []

    class Recorder:  # the real one calls ``then`` once its close is written
        def stopped(self, spawner, then):  # (tests/test_hub_recorder_writes.py)
            events.append("segment closed")
            then()

    hook.recorder = Recorder()
    monkeypatch.setattr(hook.line, "wake_firsts", lambda: events.append("wake"))
    await hook.stopped(SimpleNamespace(name="", _log_name="alice"))  # no lease held
    assert events == ["wake", "segment closed", "wake"]
