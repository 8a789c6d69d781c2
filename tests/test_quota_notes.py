"""The compact summary and the per-choice notes: ``decide_many`` against ``decide`` on a real
PostgreSQL, the JSON API routes against their docs/openapi.yaml components, the notes'
wording, and how a form's choices are sized (KubeSpawner's override rules)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from test_usage_model import openapi_validator
from web_support import NOW, client, seed, serve, web_config

from ledger.core.decision import ServerRequest
from ledger.core.policy_yaml import parse_policy
from ledger.core.quota_notes import choice_note, summary_json
from ledger.core.resources import GIB
from ledger.core.usage_model import LimitSource, ResourceUsage
from ledger.hub.choices import Overlay, choices_of, merged, request_of
from ledger.store.decide import decide, decide_many

SIZES = [
    ServerRequest({"cpu": 1000, "memory": 2 * GIB}),
    ServerRequest({"cpu": 2000, "memory": 4 * GIB}),
    ServerRequest({"cpu": 8000, "memory": 64 * GIB}),
    ServerRequest({"cpu": 1000, "memory": 8 * GIB, "gpu": 1}),
    ServerRequest(),
]


async def test_decide_many_equals_decide_for_every_size(engine):
    await seed(engine)
    config = web_config(engine)
    policy = config.policy()
    for user, groups in [("dana", ["regular"]), ("bob", ["power"]), ("nobody", [])]:
        many = await decide_many(engine, policy, user, groups, SIZES, NOW)
        one_by_one = [await decide(engine, policy, user, groups, r, NOW) for r in SIZES]
        assert [d.to_json() for d in many] == [d.to_json() for d in one_by_one], user
    with pytest.raises(ValueError, match="timezone-aware"):
        await decide_many(engine, policy, "dana", [], SIZES, NOW.replace(tzinfo=None))


async def test_summary_and_choices_routes_match_openapi_and_own_numbers(engine):
    await seed(engine)
    summary_schema = openapi_validator("QuotaSummary")
    notes_schema = openapi_validator("ChoiceNotes")
    async with serve(web_config(engine)) as url:
        async with client(url, "dana") as dana, client(url, "bob") as bob:
            mine = (await dana.get("api/v1/me/summary")).json()
            theirs = (await bob.get("api/v1/me/summary")).json()
            params = [("choice", "small:cpu=1,memory=2Gi"), ("choice", "big:memory=64Gi")]
            r = await dana.get("api/v1/me/choices", params=params)
            assert r.status_code == 200, r.text
            notes = r.json()
            bad = await dana.get("api/v1/me/choices", params={"choice": "x:memory=lots"})
            syntax = await dana.get("api/v1/me/choices", params={"choice": "nocolon"})
            unknown = await dana.get("api/v1/me/choices", params={"choice": "x:fpga=1"})
            empty = await dana.get("api/v1/me/choices")
            me = (await dana.get("api/v1/me")).json()
        async with client(url) as anonymous:
            unauthenticated = await anonymous.get("api/v1/me/summary")
    summary_schema.validate(mine)
    summary_schema.validate(theirs)
    notes_schema.validate(notes)
    assert mine["username"] == "dana" and theirs["username"] == "bob"
    memory = next(line for line in mine["resources"] if line["resource"] == "memory")
    assert memory["text"] == "52 / 60 GiB-hours" and memory["level"] == "warn"  # 87 % ≥ 80
    assert memory["usage"] == me["resources"]["memory"]  # the usage model, unchanged
    assert [line["resource"] for line in mine["resources"]] == ["memory"]  # gpu limit 0: left out
    assert theirs["state"] == "over" and "52 / 60" not in str(theirs)
    assert mine["quota_url"] == "/services/quota/"
    small, big = notes["choices"]
    assert (small["value"], small["outcome"]) == ("small", "allowed")
    # 8 GiB-hours left, her 4 GiB server keeps burning: 2 GiB more runs 8 / 6 h = 1 h 20 min
    assert small["note"] == "can run about 1 hour 20 minutes" and small["run_seconds"] == 4800
    assert big["outcome"] == "allowed" and big["level"] == "short"
    assert bad.status_code == 400 and "choice 1" in bad.json()["message"]
    assert "memory" in bad.json()["message"]
    assert syntax.status_code == 400 and "NAME:RESOURCE=QUANTITY" in syntax.json()["message"]
    assert empty.status_code == 400
    assert unknown.status_code == 400 and "valid: cpu, memory, gpu" in unknown.json()["message"]
    assert unauthenticated.status_code == 401


def usage(used: str, limit: str | None, name: str = "memory") -> ResourceUsage:
    return ResourceUsage(name, Decimal(used), None if limit is None else Decimal(limit),
                         30 * 86400, 0, LimitSource("group", ("regular",)))  # fmt: skip


def test_summary_levels_follow_the_policys_first_warning():
    at = datetime(2026, 12, 1, tzinfo=UTC)
    resources = {"memory": usage("42", "60"), "cpu": usage("10", None, "cpu"),
                 "gpu": usage("0", "0", "gpu")}  # fmt: skip
    s = summary_json("u", at, resources, warn_at_percent=[95, 70], quota_url="/q/")
    assert [line["resource"] for line in s["resources"]] == ["memory"]
    assert s["resources"][0]["level"] == "warn" and s["state"] == "warn"  # 70 % ≥ 70
    s = summary_json("u", at, resources, warn_at_percent=[80], quota_url="/q/")
    assert s["state"] == "ok" and s["resources"][0]["bar_percent"] == 70.0
    over = summary_json("u", at, {"memory": usage("75", "60")}, warn_at_percent=[80],
                        quota_url=None)  # fmt: skip
    assert over["state"] == "over" and over["resources"][0]["bar_percent"] == 100.0


async def test_choice_notes_wording(engine):
    await seed(engine)
    policy = web_config(engine).policy()
    bob = await decide(engine, policy, "bob", ["power"], SIZES[1], NOW)
    assert choice_note(bob, NOW) == "over your memory budget until Nov 25, 13:01 UTC"  # rounded up
    dana = await decide(engine, policy, "dana", ["regular"], SIZES[3], NOW)
    assert choice_note(dana, NOW) == "GPU not included in your quota"
    later = NOW + timedelta(days=5, minutes=30)
    assert choice_note(bob, later).endswith(" until 13:01 UTC")  # the same day: the time only


class FakeSpawner:
    """Only the traits a size is read from (a real JupyterHub spawner in test_hub_pages)."""

    mem_guarantee = 1 * GIB
    cpu_guarantee = 0.5
    extra_resource_guarantees = {"nvidia.com/gpu": "1", "example.com/fpga": "1"}
    name = ""

    def __init__(self, profile_list=None):
        self.profile_list = profile_list


def test_overrides_merge_like_kubespawner():
    assert merged({"a": {"b": 1, "c": 2}, "d": 1}, {"a": {"c": None, "e": 3}}) == {
        "a": {"b": 1, "e": 3}, "d": 1}  # fmt: skip
    spawner = FakeSpawner()
    overlay = Overlay(spawner, [{"extra_resource_guarantees": {"nvidia.com/gpu": None}},
                                {"mem_guarantee": lambda s: 2 * s.mem_guarantee,
                                 "image": lambda s: 1 / 0}])  # fmt: skip
    assert overlay.extra_resource_guarantees == {"example.com/fpga": "1"}
    assert overlay.mem_guarantee == 2 * GIB  # callables get the spawner; "image" not called
    assert spawner.extra_resource_guarantees["nvidia.com/gpu"] == "1"  # never mutated


async def test_profile_choices_and_their_sizes():
    policy = parse_policy("groups: {}\n", "<test>")

    async def profiles(spawner):  # KubeSpawner accepts an (async) callable
        return {
            "b": {"display_name": "GPU box", "kubespawner_override": {"mem_guarantee": 8 * GIB}},
            "a": {
                "display_name": "Small One!",
                "profile_options": {
                    "image": {
                        "choices": {
                            "lab": {"display_name": "Lab"},
                            "big": {
                                "display_name": "Big",
                                "kubespawner_override": {"cpu_guarantee": 4},
                            },
                        }
                    }
                },
            },
        }

    spawner = FakeSpawner(profile_list=profiles)
    found = await choices_of(spawner, {"size": {"xl": {"mem_guarantee": 64 * GIB}}})
    keys = [(c.field, c.value) for c in found]
    assert keys == [("size", "xl"), ("profile", "small-one"),
                    ("profile-option-small-one--image", "lab"),
                    ("profile-option-small-one--image", "big"), ("profile", "gpu-box")]  # fmt: skip
    sizes = [request_of(spawner, policy, c.overrides).amounts for c in found]
    assert sizes[0]["memory"] == 64 * GIB
    assert sizes[1] == {"cpu": 500, "memory": GIB, "gpu": 1}
    assert sizes[3]["cpu"] == 4000 and sizes[4]["memory"] == 8 * GIB


async def test_hook_sizes_a_kubespawner_profile_before_kubespawner_applies_it(tmp_path):
    """KubeSpawner applies the chosen profile in ``_start``, after ``pre_spawn_hook``: the
    hook charges the chosen profile's size, as the form's note did."""
    from hub_support.ledger_data import write_policy

    from ledger.hub.hook import QuotaHook

    class KubeSpawner(FakeSpawner):
        pass

    profiles = [
        {"display_name": "Small", "kubespawner_override": {"mem_guarantee": 2 * GIB}},
        {"display_name": "Big", "kubespawner_override": {"mem_guarantee": 32 * GIB},
         "profile_options": {"gpu": {"choices": {
             "none": {"display_name": "none",
                      "kubespawner_override": {"extra_resource_guarantees": {"nvidia.com/gpu": None}}},
             "one": {"display_name": "one"}}}}},
    ]  # fmt: skip
    hook = QuotaHook(db_url="postgresql+asyncpg://x@/x", policy_path=str(
        write_policy(tmp_path / "policy.yaml")))  # fmt: skip
    policy = hook.watcher.current()
    spawner = KubeSpawner(profile_list=profiles)
    spawner.user_options = {"profile": "big"}
    request = await hook._request(spawner, policy, None)
    assert (request.get("cpu"), request.get("memory"), request.get("gpu")) == (500, 32 * GIB, 0)
    spawner.user_options = {"profile": "big", "gpu": "one"}
    assert (await hook._request(spawner, policy, None)).amounts["gpu"] == 1
    spawner.user_options = {}
    assert (await hook._request(spawner, policy, None)).amounts["memory"] == 2 * GIB


async def test_decide_many_counts_grants_and_shared_capacity_like_decide(engine):
    """A grant that lets dana spawn must not make the form say "over budget", and a hub cap
    that is full must make every size's note say so: decide_many reads both once."""
    from ledger.store import grants

    await seed(engine)
    # dana has used 48 GiB-hours and more runs: a budget of 40 is spent
    policy = parse_policy("window: 30d\ngroups:\n  regular: {memory: 40 GiB-hours}\n")
    before = await decide_many(engine, policy, "dana", ["regular"], SIZES, NOW)
    assert not before[2].allowed, before[2].message
    async with engine.begin() as conn:
        await grants.add_grant(
            conn, username="dana", resource="memory", amount_hours=Decimal(100),
            starts_at=NOW - timedelta(days=1), ends_at=NOW + timedelta(days=10),
            reason="thesis", granted_by="admin", created_at=NOW - timedelta(days=1),
        )  # fmt: skip
    many = await decide_many(engine, policy, "dana", ["regular"], SIZES, NOW)
    one_by_one = [await decide(engine, policy, "dana", ["regular"], r, NOW) for r in SIZES]
    assert [d.to_json() for d in many] == [d.to_json() for d in one_by_one]
    assert many[2].allowed, many[2].message
    # a hub-wide cap of one server, already taken by dana's running "big": every size waits
    capped = parse_policy(
        "window: 30d\ngroups:\n  regular: {memory: 40 GiB-hours}\nhub: {running: {servers: 1}}\n"
    )
    many = await decide_many(engine, capped, "dana", ["regular"], SIZES, NOW)
    one_by_one = [await decide(engine, capped, "dana", ["regular"], r, NOW) for r in SIZES]
    assert [d.to_json() for d in many] == [d.to_json() for d in one_by_one]
    assert not any(d.allowed for d in many)
    assert all("hub_running:servers" in d.reasons for d in many), many[0].reasons


SHARED_POLICY = """
window: 30d
groups:
  regular: {memory: 60 GiB-hours, gpu: 10 GPU-hours}
  power: {memory: 1000 GiB-hours, pool: {memory: 100 GiB-hours}}
hub: {running: {gpu: 2}}
"""


async def shared_seed(engine):
    from web_support import segment

    from ledger.store import queries

    await seed(engine)
    async with engine.begin() as conn:  # two GPUs held by others: the hub's cap of 2 is full
        await queries.upsert_segments(
            conn,
            [segment(u, NOW - timedelta(hours=1), None, gpu=1, server="g") for u in ("g1", "g2")],
        )
    return parse_policy(SHARED_POLICY, "policy.yaml")


async def test_notes_say_a_full_cap_waits_and_a_spent_pool_frees(engine):
    from ledger.core.quota_notes import choice_json
    from ledger.web.config import WebConfig

    policy = await shared_seed(engine)
    gpu, small = SIZES[3], SIZES[0]
    waits, fine = await decide_many(engine, policy, "dana", ["regular"], [gpu, small], NOW)
    assert choice_note(waits, NOW) == "would wait for a GPU (2 of 2 in use on this hub)"
    assert choice_json("f", "gpu", waits, NOW)["outcome"] == "waits"
    assert choice_json("f", "gpu", waits, NOW)["level"] == "waits"
    assert choice_json("f", "small", fine, NOW)["outcome"] == "allowed"
    # bob's own 1000 allow his 248 GiB-hours; power's pool of 100 does not: 148 must leave at
    # 8 GiB, 18.5 h into his server, 30 days on (06:30:01, rounded up to the minute)
    (spent,) = await decide_many(engine, policy, "bob", ["power"], [SIZES[1]], NOW)
    assert (
        choice_note(spent, NOW) == "the power pool's memory budget is spent until Nov 26, 06:31 UTC"
    )
    assert choice_json("f", "x", spent, NOW)["outcome"] == "refused"
    # over dana's own budget (52 of 50): that is what the note says, though the hub is full
    over = parse_policy(SHARED_POLICY.replace("60 GiB-hours", "50 GiB-hours"), "policy.yaml")
    (own,) = await decide_many(engine, over, "dana", ["regular"], [gpu], NOW)
    assert (
        "hub_running:gpu" in own.reasons and choice_json("f", "g", own, NOW)["outcome"] == "refused"
    )
    assert choice_note(own, NOW).startswith("over your memory budget")
    # the route the options form and JupyterLab read says the same, as documented
    config = WebConfig(engine=engine, policy=lambda: policy, frozen_at=NOW)
    async with serve(config) as url, client(url, "dana") as dana:
        r = await dana.get("api/v1/me/choices", params={"choice": "gpu:cpu=1,memory=8Gi,gpu=1"})
    assert r.status_code == 200, r.text
    openapi_validator("ChoiceNotes").validate(r.json())
    (choice,) = r.json()["choices"]
    assert choice["outcome"] == "waits" and choice["note"] == choice_note(waits, NOW)


async def test_summary_carries_spent_pools_and_full_caps_escaped(engine):
    from pathlib import Path

    import jinja2

    from ledger.store.summary import user_summary
    from ledger.web.config import WebConfig

    policy = await shared_seed(engine)
    bob = await user_summary(engine, policy, "bob", ["power"], NOW, quota_url="/q/")
    dana = await user_summary(engine, policy, "dana", ["regular"], NOW, quota_url="/q/")
    (pool,) = [line for line in bob["shared"] if line["scope"] == "power"]
    assert (pool["text"], pool["level"]) == ("248 / 100 GiB-hours", "over")
    assert pool["note"] == "used up until Nov 26, 06:31 UTC" and bob["state"] == "over"
    (hub,) = [line for line in dana["shared"] if line["resource"] == "gpu"]
    assert (hub["label"], hub["text"], hub["level"]) == ("Hub GPU", "2 of 2 in use", "warn")
    assert hub["note"] == "full: a new server waits"
    config = WebConfig(engine=engine, policy=lambda: policy, frozen_at=NOW)
    async with serve(config) as url, client(url, "bob") as c:
        routed = (await c.get("api/v1/me/summary")).json()
    openapi_validator("QuotaSummary").validate(routed)
    assert routed["shared"] == [{**line} for line in bob["shared"]]
    # the hub's macros render the lines, escaped (a hub group name is any text)
    templates = Path(__file__).resolve().parents[1] / "ledger" / "hub" / "templates"
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(templates), autoescape=True)
    macros = env.get_template("quota_summary.html").module
    bob["shared"][0]["label"] = "<b>evil</b> pool Memory"
    home, header = str(macros.quota_home(bob)), str(macros.quota_header(bob))
    assert "&lt;b&gt;evil&lt;/b&gt; pool Memory" in home and "<b>evil" not in home
    assert "used up until Nov 26, 06:31 UTC" in home and "used up until Nov 26" in header
    assert "No limits apply" not in home
    dana_header = str(macros.quota_header(dana))
    assert "Hub GPU full: a new server waits" in " ".join(dana_header.split())
