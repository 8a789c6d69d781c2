"""The quota policy YAML: every valid form, every error (with file:line:key), resolution."""

from __future__ import annotations

import logging
import os
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest

from ledger.core.accounting import Accounting
from ledger.core.policy import Budget, EffectiveLimits, Enforcement, Messages, Policy
from ledger.core.policy_yaml import PolicyError, PolicyIssue, parse_policy
from ledger.store.policy_file import PolicyWatcher, load_policy

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "policy.yaml"
DAY = 86400
GI = 2**30


def parse(text: str, source: str = "policy.yaml") -> Policy:
    return parse_policy(textwrap.dedent(text), source)


def errors(text: str) -> list[str]:
    """Every problem reported for ``text``, as "file:line: key: message" strings."""
    with pytest.raises(PolicyError) as caught:
        parse(text)
    return [str(issue) for issue in caught.value.errors]


def only_error(text: str) -> str:
    found = errors(text)
    assert len(found) == 1, found
    return found[0]


# --- the example and defaults --------------------------------------------------------------


def test_example_policy_loads_as_is():
    policy = load_policy(EXAMPLE)
    assert policy.source == str(EXAMPLE)
    assert policy.window_seconds == 30 * DAY
    assert policy.combine == "max"
    assert policy.unlisted_users == "regular"
    assert policy.on_ledger_error == "deny"
    assert policy.accounting == Accounting("requests", {"gpu": "nvidia.com/gpu"})
    assert list(policy.groups) == ["regular", "power", "dev", "gpu-dev"]
    assert policy.groups["power"].budgets["memory"].limit_hours == 240
    assert policy.groups["gpu-dev"].budgets["gpu"].limit_hours == 160
    assert policy.groups["gpu-dev"].running == {"gpu": 2}
    assert policy.users["alice"].budgets["memory"].limit_hours == 1000
    assert policy.messages == Messages(
        "Ask your hub admins for more quota.", None, "/services/quota/"
    )
    assert policy.enforcement == Enforcement(True, (80, 95), 600, 60)
    assert policy.max_window_seconds() == 30 * DAY
    assert policy.resource_names() == ["cpu", "memory", "gpu"]


def test_example_limits_match_the_design_table():
    policy = load_policy(EXAMPLE)
    regular = policy.limits_for("bob", ["regular"])
    assert regular == EffectiveLimits(
        budgets={
            "memory": Budget("memory", Decimal(60), 30 * DAY, "group:regular"),
            "gpu": Budget("gpu", Decimal(0), 30 * DAY, "group:regular"),
        },
        running={},
        groups=("regular",),
        unlisted=None,
        denied_all=False,
    )
    gpu_dev = policy.limits_for("eve", ["gpu-dev"])
    assert gpu_dev.budgets["gpu"].limit_hours == 160
    assert gpu_dev.running == {"gpu": 2}


@pytest.mark.parametrize("text", ["", "# nothing yet\n", "{}", "---\n", "groups:\nusers:\n"])
def test_empty_policy_is_valid_and_unlimited(text):
    policy = parse_policy(text)
    assert policy == Policy()
    assert policy.source == "<string>"
    limits = policy.limits_for("anyone", ["whatever"])
    assert limits == EffectiveLimits({}, {}, (), "unlimited", False)
    assert policy.on_ledger_error == "deny"
    assert policy.messages.quota_page_url == "/services/quota/"
    assert policy.enforcement.warn_at_percent == (80, 95)


def test_policy_is_immutable():
    policy = parse_policy("")
    with pytest.raises(AttributeError):
        policy.combine = "sum"  # type: ignore[misc]


# --- budgets -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "hours"),
    [
        ("60 GiB-hours", Decimal(60)),
        ("60 gib-hours", Decimal(60)),
        ("60 GIB-HOURS", Decimal(60)),
        ("60 GiB-hour", Decimal(60)),
        ("60 GiB-h", Decimal(60)),
        ("60 GiB hours", Decimal(60)),
        ("60GiB-hours", Decimal(60)),
        ("60 Gi-hours", Decimal(60)),
        ("61440 MiB-hours", Decimal(60)),
        ("512 MiB-hours", Decimal("0.5")),
        ("1 TiB-hours", Decimal(1024)),
        ("1 KiB-hours", Decimal(1) / 2**20),
        ("1 GB-hours", Decimal("0.931322574615478515625")),  # exactly 10**9 / 2**30
        ("1 MB-hours", Decimal("0.000931322574615478515625")),
        ("1 TB-hours", Decimal("931.322574615478515625")),
        ("2.5 GiB-hours", Decimal("2.5")),
        ("0 GiB-hours", Decimal(0)),
        ("60", Decimal(60)),  # a bare number: hours of the display unit
        ("1.5", Decimal("1.5")),
        ("010", Decimal(10)),  # YAML 1.1 would read octal 8; admins mean ten
        ("'60'", Decimal(60)),
    ],
)
def test_memory_budget_forms(written, hours):
    policy = parse(f"groups:\n  g:\n    memory: {written}\n")
    spec = policy.groups["g"].budgets["memory"]
    assert spec.limit_hours == hours
    assert spec.window_seconds is None


@pytest.mark.parametrize(
    ("resource_name", "written", "hours"),
    [
        ("cpu", "100 CPU-hours", Decimal(100)),
        ("cpu", "100 cpu-hours", Decimal(100)),
        ("cpu", "100 CPUs-hours", Decimal(100)),
        ("cpu", "100 core-hours", Decimal(100)),
        ("cpu", "100 cores-h", Decimal(100)),
        ("cpu", "0.5", Decimal("0.5")),
        ("gpu", "160 GPU-hours", Decimal(160)),
        ("gpu", "160 gpu-h", Decimal(160)),
        ("gpu", "160 GPUs-hours", Decimal(160)),
        ("gpu", "0 GPU-hours", Decimal(0)),
    ],
)
def test_cpu_and_gpu_budget_forms(resource_name, written, hours):
    policy = parse(f"groups:\n  g:\n    {resource_name}: {written}\n")
    assert policy.groups["g"].budgets[resource_name].limit_hours == hours


def test_budget_with_its_own_window_and_null_is_unlimited():
    policy = parse(
        """\
        window: 14d
        groups:
          g:
            memory: {limit: 60 GiB-hours, window: 7d}
            cpu: null
            gpu: {limit: null, window: 1d}
        """
    )
    budgets = policy.groups["g"].budgets
    assert budgets["memory"].limit_hours == 60
    assert budgets["memory"].window_seconds == 7 * DAY
    assert budgets["cpu"] is None
    assert budgets["gpu"] is None
    limits = policy.limits_for("u", ["g"])
    assert limits.budgets == {"memory": Budget("memory", Decimal(60), 7 * DAY, "group:g")}
    assert policy.max_window_seconds() == 14 * DAY


def test_budget_windows_longer_than_the_policy_window():
    policy = parse("window: 7d\ngroups:\n  g: {memory: {limit: 1, window: 90d}}\n")
    assert policy.max_window_seconds() == 90 * DAY
    assert policy.limits_for("u", ["g"]).budgets["memory"].window_seconds == 90 * DAY


def test_extended_resources_by_short_name():
    policy = parse(
        """\
        accounting:
          resources:
            gpu: amd.com/gpu
            fpga: xilinx.com/fpga
        groups:
          g:
            fpga: 3 fpga-hours
            gpu: 2
            running: {fpga: 1}
        """
    )
    assert policy.accounting.resources == {"gpu": "amd.com/gpu", "fpga": "xilinx.com/fpga"}
    assert policy.resource_names() == ["cpu", "memory", "gpu", "fpga"]
    assert policy.groups["g"].budgets["fpga"].limit_hours == 3
    assert policy.groups["g"].running == {"fpga": 1}


def test_resources_replace_the_default_gpu():
    policy = parse("accounting: {resources: {}}\n")
    assert policy.accounting.resources == {}
    assert policy.resource_names() == ["cpu", "memory"]
    assert only_error(
        "accounting: {resources: {fpga: xilinx.com/fpga}}\ngroups:\n  g: {gpu: 1}\n"
    ) == (
        "policy.yaml:3: groups.g.gpu: unknown key 'gpu'; did you mean 'cpu'? valid keys here: "
        "cpu, memory, fpga, "
        "running, pool (other extended resources need a short name under accounting.resources:)"
    )


@pytest.mark.parametrize("basis", ["requests", "limits", "max"])
def test_accounting_block(basis):
    policy = parse(f"accounting:\n  charge_basis: {basis}\n  resources: {{gpu: amd.com/gpu}}\n")
    assert policy.accounting == Accounting(basis, {"gpu": "amd.com/gpu"})


def test_accounting_defaults_and_errors():
    assert parse("window: 7d\n").accounting == Accounting("requests", {"gpu": "nvidia.com/gpu"})
    assert only_error("# c\naccounting:\n  charge_basis: average\n") == (
        "policy.yaml:3: accounting.charge_basis: 'average' is not one of requests, limits, max"
    )
    assert only_error("accounting: {charge_bases: limits}\n") == (
        "policy.yaml:1: accounting.charge_bases: unknown key 'charge_bases'; did you mean "
        "'charge_basis'? valid keys here: charge_basis, resources, docker_all_gpus"
    )


def test_docker_all_gpus_is_a_positive_whole_number():
    assert parse("accounting: {docker_all_gpus: 4}\n").accounting.docker_all_gpus == 4
    assert parse("window: 7d\n").accounting.docker_all_gpus is None
    assert only_error("accounting:\n  docker_all_gpus: 0\n") == (
        "policy.yaml:2: accounting.docker_all_gpus: '0' is not a number of GPUs; "
        "give 1 or more, e.g. 4"
    )
    assert "whole number of devices" in only_error("accounting: {docker_all_gpus: 1.5}\n")
    assert "a list is not a number of GPUs" in only_error("accounting: {docker_all_gpus: [2]}\n")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "window: 7d\nresources:\n  gpu: amd.com/gpu\n",
            "policy.yaml:2: resources: moved under accounting: (read by the collector, the hub "
            "hook, the enforcer and the web service alike); write it as accounting: "
            "{resources: {gpu: amd.com/gpu}}",
        ),
        (
            "charge_basis: limits\n",
            "policy.yaml:1: charge_basis: moved under accounting: (read by the collector, the hub "
            "hook, the enforcer and the web service alike); write it as accounting: "
            "{charge_basis: limits}",
        ),
    ],
)
def test_keys_that_moved_under_accounting_say_where_to(text, expected):
    assert only_error(text) == expected


# --- running caps, durations, top-level settings ------------------------------------------


def test_running_caps_in_base_units():
    policy = parse(
        """\
        groups:
          a: {running: {cpu: 4, memory: 32Gi, gpu: 2, servers: 3}}
          b: {running: {cpu: 500m, memory: 1.5Gi}}
          c: {running: {cpu: 1.5, memory: 4G, gpu: null}}
        """
    )
    assert policy.groups["a"].running == {"cpu": 4000, "memory": 32 * GI, "gpu": 2, "servers": 3}
    assert policy.groups["b"].running == {"cpu": 500, "memory": 3 * 2**29}
    assert policy.groups["c"].running == {"cpu": 1500, "memory": 4 * 10**9, "gpu": None}


@pytest.mark.parametrize(
    ("written", "seconds"),
    [
        ("30d", 30 * DAY),
        ("12h", 12 * 3600),
        ("90m", 90 * 60),
        ("45s", 45),
        ("1w", 7 * DAY),
        ("1d12h", DAY + 12 * 3600),
        ("1d 12h", DAY + 12 * 3600),
        ("1w2d3h4m5s", 9 * DAY + 3 * 3600 + 4 * 60 + 5),
        ("1.5d", DAY + 12 * 3600),
        ("2000ms", 2),
    ],
)
def test_durations(written, seconds):
    assert parse(f"window: {written}\n").window_seconds == seconds
    # a grace must be shorter than every budget's window (test_a_grace_as_long_as_a_window…)
    policy = parse(f"window: 400d\nenforcement: {{grace: {written}, interval: {written}}}\n")
    assert policy.enforcement.grace_seconds == seconds
    assert policy.enforcement.interval_seconds == seconds


def test_top_level_settings():
    policy = parse(
        """\
        combine: sum
        unlisted_users: deny
        on_ledger_error: allow
        messages:
          contact: Mail hub-admins@example.org
          contact_url: https://example.org/quota-request
        enforcement:
          enabled: false
          warn_at_percent: [95, 50, 95]
        """
    )
    assert (policy.combine, policy.unlisted_users, policy.on_ledger_error) == (
        "sum",
        "deny",
        "allow",
    )
    assert policy.messages == Messages(
        "Mail hub-admins@example.org", "https://example.org/quota-request", "/services/quota/"
    )
    assert policy.enforcement == Enforcement(False, (50, 95), 600, 60)
    assert parse("enforcement: {warn_at_percent: []}\n").enforcement.warn_at_percent == ()


def test_group_and_user_names_are_kept_as_written():
    policy = parse(
        """\
        groups:
          on: {memory: 1}
          007: {memory: 2}
          "1.50": {memory: 3}
        users:
          12345: {memory: 4}
        """
    )
    assert list(policy.groups) == ["on", "007", "1.50"]
    assert policy.limits_for("x", ["007"]).budgets["memory"].limit_hours == 2
    assert policy.limits_for("12345", []).budgets["memory"].source == "user:12345"


def test_yaml_merge_keys_and_anchors():
    policy = parse(
        """\
        groups:
          regular: &base {memory: 60 GiB-hours, gpu: 0 GPU-hours, running: {servers: 1}}
          power: {<<: *base, memory: 240 GiB-hours}
        """
    )
    assert policy.groups["power"].budgets["memory"].limit_hours == 240
    assert policy.groups["power"].budgets["gpu"].limit_hours == 0
    assert policy.groups["power"].running == {"servers": 1}


# --- combining groups ----------------------------------------------------------------------

COMBINE = """\
combine: {combine}
window: 30d
groups:
  small: {{memory: 60 GiB-hours, cpu: 10, running: {{cpu: 2, servers: 1}}}}
  big:   {{memory: {{limit: 240 GiB-hours, window: 7d}}, cpu: 100, running: {{cpu: 8}}}}
  same:  {{memory: {{limit: 240 GiB-hours, window: 60d}}, gpu: 4}}
  free:  {{cpu: null}}
"""


def limits(combine: str, groups: list[str], user: str = "u") -> EffectiveLimits:
    return parse_policy(COMBINE.format(combine=combine), "p.yaml").limits_for(user, groups)


def test_combine_max_most_generous_and_unlimited_wins():
    result = limits("max", ["small", "big"])
    assert result.budgets["memory"] == Budget("memory", Decimal(240), 7 * DAY, "group:big")
    assert result.budgets["cpu"] == Budget("cpu", Decimal(100), 30 * DAY, "group:big")
    # caps combine only over the groups that set them: big sets no servers cap, small's stays
    assert result.running == {"cpu": 8000, "servers": 1}
    assert result.groups == ("big", "small")
    # free does not limit cpu, so cpu is unlimited; memory: free does not limit it either.
    assert limits("max", ["small", "free"]).budgets == {}


def test_combine_max_tie_goes_to_the_longer_window():
    result = limits("max", ["big", "same"])
    assert result.budgets["memory"] == Budget("memory", Decimal(240), 60 * DAY, "group:same")
    assert "gpu" not in result.budgets  # big leaves gpu unlimited


def test_combine_min_strictest_and_any_limit_applies():
    result = limits("min", ["small", "big", "same", "free"])
    assert result.budgets["memory"] == Budget("memory", Decimal(60), 30 * DAY, "group:small")
    assert result.budgets["cpu"] == Budget("cpu", Decimal(10), 30 * DAY, "group:small")
    assert result.budgets["gpu"] == Budget("gpu", Decimal(4), 30 * DAY, "group:same")
    assert result.running == {"cpu": 2000, "servers": 1}
    tie = limits("min", ["big", "same"]).budgets["memory"]
    assert (tie.window_seconds, tie.source) == (60 * DAY, "group:same")


def test_combine_sum_adds_over_the_longest_window():
    result = limits("sum", ["small", "big"])
    assert result.budgets["memory"] == Budget("memory", Decimal(300), 30 * DAY, "sum:big+small")
    assert result.budgets["cpu"] == Budget("cpu", Decimal(110), 30 * DAY, "sum:big+small")
    assert result.running == {"cpu": 10000, "servers": 1}  # big sets no servers cap
    three = limits("sum", ["small", "big", "same"])
    assert three.budgets["memory"].limit_hours == 540
    assert three.budgets["memory"].window_seconds == 60 * DAY
    assert "cpu" not in three.budgets  # same leaves cpu unlimited
    single = limits("sum", ["small"]).budgets["memory"]
    assert single == Budget("memory", Decimal(60), 30 * DAY, "group:small")


def test_groups_the_policy_does_not_list_are_ignored():
    result = limits("max", ["small", "hub-admins", "students"])
    assert result.groups == ("small",)
    assert result.budgets["memory"].source == "group:small"


# --- users and unlisted ----------------------------------------------------------------------

USERS = """\
unlisted_users: {unlisted}
groups:
  regular: {{memory: 60 GiB-hours, gpu: 0 GPU-hours, running: {{servers: 1}}}}
  gpu-dev: {{memory: 640 GiB-hours, gpu: 160 GPU-hours, running: {{gpu: 2}}}}
users:
  alice: {{memory: 1000 GiB-hours}}
  bob: {{gpu: {{limit: 8 GPU-hours, window: 1d}}, running: {{gpu: 1, servers: null}}}}
  carol: {{memory: null}}
"""


def users_policy(unlisted: str = "regular") -> Policy:
    return parse_policy(USERS.format(unlisted=unlisted), "p.yaml")


def test_user_override_beats_groups_per_resource():
    policy = users_policy()
    alice = policy.limits_for("alice", ["gpu-dev"])
    assert alice.budgets["memory"] == Budget("memory", Decimal(1000), 30 * DAY, "user:alice")
    assert alice.budgets["gpu"].source == "group:gpu-dev"  # not named: from the groups
    bob = policy.limits_for("bob", ["regular"])
    assert bob.budgets["gpu"] == Budget("gpu", Decimal(8), DAY, "user:bob")
    assert bob.budgets["memory"].source == "group:regular"
    assert bob.running == {"gpu": 1}  # servers: null in the override lifts the group's cap
    carol = policy.limits_for("carol", ["regular"])
    assert "memory" not in carol.budgets  # null: unlimited for carol
    assert carol.budgets["gpu"].limit_hours == 0


def test_unlisted_user_gets_the_named_group():
    policy = users_policy("regular")
    dave = policy.limits_for("dave", ["students"])
    assert dave.unlisted == "regular"
    assert dave.groups == ("regular",)
    assert dave.denied_all is False
    assert dave.budgets["memory"] == Budget("memory", Decimal(60), 30 * DAY, "unlisted:regular")
    assert dave.running == {"servers": 1}
    alice = policy.limits_for("alice", [])  # overrides apply on top of the unlisted group
    assert alice.budgets["memory"].source == "user:alice"
    assert alice.budgets["gpu"].source == "unlisted:regular"


def test_unlisted_deny():
    policy = users_policy("deny")
    dave = policy.limits_for("dave", [])
    assert dave == EffectiveLimits({}, {}, (), "deny", True)
    listed = policy.limits_for("dave", ["regular"])
    assert listed.denied_all is False and listed.unlisted is None
    # A user named under users: is not unlisted: their entry is their whole policy.
    alice = policy.limits_for("alice", [])
    assert alice.denied_all is False and alice.unlisted is None
    assert alice.budgets == {"memory": Budget("memory", Decimal(1000), 30 * DAY, "user:alice")}


def test_unlisted_unlimited():
    policy = users_policy("unlimited")
    dave = policy.limits_for("dave", ["students"])
    assert dave == EffectiveLimits({}, {}, (), "unlimited", False)
    assert policy.limits_for("alice", []).budgets["memory"].limit_hours == 1000


def test_unlisted_users_defaults_to_unlimited():
    policy = parse("groups:\n  regular: {memory: 60}\n")
    assert policy.unlisted_users == "unlimited"
    assert policy.limits_for("x", []).unlisted == "unlimited"


# --- errors: file, line, key and what would be valid -------------------------------------


def test_the_brief_example_message():
    assert only_error(
        """\
        # comment
        window: 30d

        groups:
          power: {memory: 240 GiB-hours}

          regular: {memory: 60 GiB, gpu: 0 GPU-hours}
        """
    ) == (
        "policy.yaml:7: groups.regular.memory: '60 GiB' is not a budget; write resource-hours "
        "such as '60 GiB-hours' (or {limit: 60 GiB-hours, window: 7d})"
    )


def test_unknown_keys_list_valid_keys_and_suggest_the_closest():
    found = errors(
        """\
        windw: 30d
        groups:
          regular:
            memroy: 60 GiB-hours
            running: {servers: 1, gpus: 1}
            memory: {limit: 1, windo: 7d}
        messages: {contact_ur: x}
        enforcement: {graze: 5m}
        """
    )
    assert found == [
        "policy.yaml:1: windw: unknown key 'windw'; did you mean 'window'? valid keys here: "
        "window, combine, unlisted_users, on_ledger_error, accounting, groups, users, messages, "
        "enforcement, exhausted_budget_blocks, hub",
        "policy.yaml:4: groups.regular.memroy: unknown key 'memroy'; did you mean 'memory'? "
        "valid keys here: cpu, memory, gpu, running, pool (other extended resources need a short "
        "name under accounting.resources:)",
        "policy.yaml:5: groups.regular.running.gpus: unknown key 'gpus'; did you mean 'gpu'? "
        "valid keys here: cpu, memory, gpu, servers (other extended resources need a short "
        "name under accounting.resources:)",
        "policy.yaml:6: groups.regular.memory.windo: unknown key 'windo'; did you mean 'window'? "
        "valid keys here: limit, window",
        "policy.yaml:7: messages.contact_ur: unknown key 'contact_ur'; did you mean "
        "'contact_url'? valid keys here: contact, contact_url, quota_page_url",
        "policy.yaml:8: enforcement.graze: unknown key 'graze'; did you mean 'grace'? valid "
        "keys here: enabled, warn_at_percent, grace, interval",
    ]


def test_unknown_key_without_a_close_match():
    assert only_error("zzz: 1\n").startswith(
        "policy.yaml:1: zzz: unknown key 'zzz'; valid keys here: window,"
    )


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("groups:\n  g: {memory: [1\n", 3, "expected ',' or ']'"),
        ("groups:\n\tg: {}\n", 2, "YAML indents with spaces, not tabs"),
        ("window: 30d\ncombine: max: min\n", 2, "mapping values are not allowed here"),
        ("a: 1\n---\nb: 2\n", 2, "expected a single document"),
        ("groups: {g: *nowhere}\n", 1, "undefined alias"),
    ],
)
def test_yaml_syntax_errors_give_the_line(text, line, fragment):
    message = only_error(text)
    assert message.startswith(f"policy.yaml:{line}: YAML syntax error: ")
    assert fragment in message


@pytest.mark.parametrize(
    ("written", "message"),
    [
        (
            "10 GPU-hours",
            "memory budgets are in GiB-hours (or MiB-, TiB-, GB-hours); 'GPU-hours' is for gpu "
            "budgets",
        ),
        (
            "10 CPU-hours",
            "memory budgets are in GiB-hours (or MiB-, TiB-, GB-hours); 'CPU-hours' is for cpu "
            "budgets",
        ),
        (
            "10 foo-hours",
            "memory budgets are in GiB-hours (or MiB-, TiB-, GB-hours); 'foo-hours' is not a unit",
        ),
        ("60 hours", "'60 hours' does not say hours of what; write e.g. '60 GiB-hours'"),
        ("-5 GiB-hours", "'-5 GiB-hours' is negative; a budget is 0 (forbidden) or more"),
        ("-5", "'-5' is negative; a budget is 0 (forbidden) or more"),
        ("60 GiB-days", "'60 GiB-days' is not a budget; write resource-hours such as"),
        ("lots", "'lots' is not a budget; write resource-hours such as '60 GiB-hours'"),
        ("yes", "'yes' is not a budget"),
        ("[60]", "a list is not a budget"),
        ("1.2.3 GiB-hours", "'1.2.3' is not a non-negative number"),
        ("{window: 7d}", "needs a limit, e.g. {limit: 60 GiB-hours, window: 7d}"),
    ],
)
def test_budget_errors(written, message):
    assert only_error(f"groups:\n  g:\n    memory: {written}\n").startswith(
        f"policy.yaml:3: groups.g.memory: {message}"
    )


def test_budget_unit_mismatch_for_cpu_and_gpu():
    found = errors("groups:\n  g: {cpu: 5 GiB-hours, gpu: 5 CPU-hours}\n")
    assert found == [
        "policy.yaml:2: groups.g.cpu: cpu budgets are in CPU-hours (or core-hours); 'GiB-hours' "
        "is for memory budgets",
        "policy.yaml:2: groups.g.gpu: gpu budgets are in GPU-hours; 'CPU-hours' is for cpu budgets",
    ]


@pytest.mark.parametrize(
    ("written", "message"),
    [
        ("30", "'30' has no unit; durations need one, e.g. 30d or 30h"),
        ("'30'", "'30' has no unit; durations need one, e.g. 30d or 30h"),
        ("0d", "'0d' is zero; a duration must be longer than that, e.g. 30d"),
        ("30 days", "'30 days' is not a duration; write e.g. 30d, 12h, 90m, 45s, 200ms, 1w, 1d12h"),
        ("1500ms", "'1500ms' is not a whole number of seconds; write e.g. 90m or 45s"),
        ("-1d", "'-1d' is negative; a duration is 0 or more"),
        ("12h1d", "'12h1d' is not a duration; write e.g."),
        ("30D", "'30D' is not a duration; write e.g."),
        ("true", "'true' is not a duration; write e.g."),
        ("[1d]", "a list is not a duration; write e.g."),
    ],
)
def test_duration_errors(written, message):
    found = only_error(f"# c\nwindow: {written}\n")
    assert found.startswith(f"policy.yaml:2: window: {message}")


@pytest.mark.parametrize(
    ("running", "message"),
    [
        (
            "{memory: 500m}",
            "memory: '500m' is 500 thousandths of a byte; did you mean 500Mi or 500M?",
        ),
        ("{memory: 4GB}", "memory: '4GB' is not a Kubernetes quantity (did you mean 4G or 4Gi?); "),
        (
            "{cpu: 4 cores}",
            "cpu: '4 cores' is not a Kubernetes quantity; valid quantities look like",
        ),
        ("{cpu: -1}", "cpu: '-1' is negative"),
        ("{gpu: 0.5}", "gpu: '0.5' is not a whole number of devices; valid quantities look like"),
        ("{servers: 1.5}", "servers: '1.5' is not a whole number of servers"),
        ("{servers: many}", "servers: 'many' is not a non-negative number"),
        ("{cpu: [1]}", "cpu: must be an amount such as 4, 500m, 32Gi or 2"),
        ("{cpu: true}", "cpu: must be an amount such as 4, 500m, 32Gi or 2"),
        ("5", "must be a mapping with keys cpu, memory, gpu, servers; got '5'"),
    ],
)
def test_running_cap_errors(running, message):
    found = only_error(f"groups:\n  g:\n    running: {running}\n")
    assert found.startswith(f"policy.yaml:3: groups.g.running{'.' if running[0] == '{' else ': '}")
    assert message in found


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("combine: maximum\n", "policy.yaml:1: combine: 'maximum' is not one of max, min, sum"),
        ("on_ledger_error: no\n", "policy.yaml:1: on_ledger_error: 'no' is not one of deny, allow"),
        (
            "groups: {regular: {}}\nunlisted_users: regulars\n",
            "policy.yaml:2: unlisted_users: 'regulars' is not a group in groups:; valid: deny, "
            "unlimited, regular",
        ),
        (
            "combine: [max]\n",
            "policy.yaml:1: combine: must be a single value, not a list or mapping",
        ),
        ("groups: [regular]\n", "policy.yaml:1: groups: must be a mapping of names to limits"),
        ("users: 5\n", "policy.yaml:1: users: must be a mapping of names to limits"),
        (
            "groups:\n  regular: 60\n",
            "policy.yaml:2: groups.regular: must be a mapping with keys cpu, memory, gpu, "
            "running, pool; got '60'",
        ),
        ("- a\n- b\n", "policy.yaml:1: must be a mapping with keys window, combine,"),
        ("just text\n", "policy.yaml:1: must be a mapping with keys window, combine,"),
        (
            "enforcement: {enabled: maybe}\n",
            "policy.yaml:1: enforcement.enabled: must be true or false",
        ),
        (
            "enforcement:\n  warn_at_percent: [80, 101]\n",
            "policy.yaml:2: enforcement.warn_at_percent: must be a list of whole percentages "
            "1-100, e.g. [80, 95]",
        ),
        (
            "enforcement: {warn_at_percent: 80}\n",
            "policy.yaml:1: enforcement.warn_at_percent: must be a list of whole percentages",
        ),
        (
            "enforcement: {warn_at_percent: [0, 50.5]}\n",
            "policy.yaml:1: enforcement.warn_at_percent: must be a list of whole percentages",
        ),
        ("enforcement: {grace: 10}\n", "policy.yaml:1: enforcement.grace: '10' has no unit"),
        ("messages: {contact: [a]}\n", "policy.yaml:1: messages.contact: must be a single value"),
        (
            "accounting: {resources: {gpu: nvidia}}\n",
            "policy.yaml:1: accounting.resources.gpu: 'nvidia' is not an extended resource name; "
            "write one such as nvidia.com/gpu or amd.com/gpu",
        ),
        (
            "accounting: {resources: {cpu: example.com/cpu}}\n",
            "policy.yaml:1: accounting.resources.cpu: short names are lower-case words other than cpu, "
            "memory, servers and running, e.g. gpu or fpga",
        ),
        (
            "accounting: {resources: {GPU: nvidia.com/gpu}}\n",
            "policy.yaml:1: accounting.resources.GPU: short names are lower-case words",
        ),
        (
            "accounting:\n  resources:\n    gpu: nvidia.com/gpu\n    gpu2: nvidia.com/gpu\n",
            "policy.yaml:4: accounting.resources.gpu2: nvidia.com/gpu already has another short name",
        ),
        (
            "groups:\n  g: {memory: 1}\n  g: {memory: 2}\n",
            "policy.yaml:3: groups.g: duplicate key (first written on line 2)",
        ),
        ("? [a, b]\n: 1\n", "policy.yaml:1: keys must be plain names, not lists or mappings"),
        ("groups: &x {g: *x}\n", "policy.yaml:1: groups.g: refers to itself through a YAML alias"),
    ],
)
def test_setting_errors(text, expected):
    assert only_error(text).startswith(expected)


def test_all_errors_are_collected_in_file_order():
    text = textwrap.dedent(
        """\
        combine: maximum
        groups:
          regular: {memory: 60 GiB}
          power:
            memory: 10 GPU-hours
            running: {memory: 500m}
        unlisted_users: nobody
        window: 30
        """
    )
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, "/etc/quota/policy.yaml")
    error = caught.value
    assert isinstance(error, ValueError)
    assert [(i.line, i.key) for i in error.errors] == [
        (1, "combine"),
        (3, "groups.regular.memory"),
        (5, "groups.power.memory"),
        (6, "groups.power.running.memory"),
        (7, "unlisted_users"),
        (8, "window"),
    ]
    assert all(issue.file == "/etc/quota/policy.yaml" for issue in error.errors)
    lines = str(error).splitlines()
    assert lines == [str(issue) for issue in error.errors]
    assert lines[0] == "/etc/quota/policy.yaml:1: combine: 'maximum' is not one of max, min, sum"


def test_policy_issue_str():
    assert str(PolicyIssue("p.yaml", 3, "a.b", "bad")) == "p.yaml:3: a.b: bad"
    assert str(PolicyIssue("p.yaml", None, "", "cannot read")) == "p.yaml: cannot read"
    assert str(PolicyIssue("p.yaml", 2, "", "YAML syntax error: x")) == (
        "p.yaml:2: YAML syntax error: x"
    )


def test_load_policy_missing_or_unreadable_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(PolicyError) as caught:
        load_policy(missing)
    assert str(caught.value) == f"{missing}: cannot read the policy: No such file or directory"
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"window: \xff\xfe\n")
    with pytest.raises(PolicyError, match=f"^{binary}: cannot read the policy: "):
        load_policy(binary)
    with pytest.raises(PolicyError, match="cannot read the policy"):
        load_policy(tmp_path)  # a directory


def test_load_policy_names_the_path_in_errors(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text("groups:\n  regular: {memory: 60 GiB}\n")
    with pytest.raises(PolicyError, match=rf"^{path}:2: groups.regular.memory: '60 GiB'"):
        load_policy(str(path))


# --- reloading ----------------------------------------------------------------------------------


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def rewrite(path: Path, text: str, bump_seconds: int) -> None:
    """Write and move mtime forward: same-second writes must still be seen as changes."""
    before = path.stat().st_mtime_ns
    path.write_text(text)
    later = before + bump_seconds * 1_000_000_000
    os.utime(path, ns=(later, later))


def test_watcher_reloads_on_change_and_keeps_the_last_good_policy(tmp_path, caplog):
    path = tmp_path / "policy.yaml"
    path.write_text("groups:\n  regular: {memory: 60 GiB-hours}\n")
    clock = FakeClock()
    watcher = PolicyWatcher(path, clock=clock)
    first = watcher.current()
    assert first.groups["regular"].budgets["memory"].limit_hours == 60
    assert watcher.last_error is None

    rewrite(path, "groups:\n  regular: {memory: 90 GiB-hours}\n", 1)
    assert watcher.current() is first  # stat at most once per second
    clock.now += 1.5
    second = watcher.current()
    assert second.groups["regular"].budgets["memory"].limit_hours == 90

    with caplog.at_level(logging.ERROR, logger="ledger.store.policy_file"):
        rewrite(path, "groups:\n  regular: {memory: 90 GiB}\n", 2)
        clock.now += 1.5
        assert watcher.current() is second  # a bad edit keeps the previous policy
    assert isinstance(watcher.last_error, PolicyError)
    assert str(watcher.last_error).startswith(f"{path}:2: groups.regular.memory: '90 GiB'")
    assert "keeping the previous one" in caplog.text
    caplog.clear()
    clock.now += 1.5
    with caplog.at_level(logging.ERROR, logger="ledger.store.policy_file"):
        assert watcher.current() is second
    assert caplog.text == ""  # the same bad file is not re-reported every second

    rewrite(path, "groups:\n  regular: {memory: 120 GiB-hours}\n", 3)
    clock.now += 1.5
    third = watcher.current()
    assert third.groups["regular"].budgets["memory"].limit_hours == 120
    assert watcher.last_error is None


def watched(tmp_path, text: str = "window: 7d\n"):
    """A policy file of ``text``, a watcher on it with a fake clock, and its first policy."""
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    clock = FakeClock()
    watcher = PolicyWatcher(path, clock=clock)
    return path, clock, watcher, watcher.current()


def test_watcher_touch_without_change_keeps_the_parsed_policy(tmp_path):
    path, clock, watcher, policy = watched(tmp_path)
    rewrite(path, "window: 7d\n", 5)
    clock.now += 2
    assert watcher.current() is policy


def test_watcher_survives_the_file_disappearing(tmp_path):
    path, clock, watcher, policy = watched(tmp_path)
    path.unlink()
    clock.now += 2
    assert watcher.current() is policy
    assert "cannot read the policy: No such file or directory" in str(watcher.last_error)
    path.write_text("window: 14d\n")
    clock.now += 2
    assert watcher.current().window_seconds == 14 * DAY
    assert watcher.last_error is None


def test_watcher_refuses_to_start_on_a_bad_file(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text("combine: maximum\n")
    with pytest.raises(PolicyError, match="combine: 'maximum' is not one of"):
        PolicyWatcher(path)
    with pytest.raises(PolicyError, match="No such file or directory"):
        PolicyWatcher(tmp_path / "missing.yaml")


def test_watcher_with_the_real_clock(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text("window: 7d\n")
    watcher = PolicyWatcher(path, check_interval_seconds=0)
    rewrite(path, "window: 8d\n", 1)
    assert watcher.current().window_seconds == 8 * DAY


def test_a_group_without_a_cap_does_not_lift_another_groups_cap():
    # examples/policy.yaml's groups with gpu-dev's concurrent GPU cap: regular + gpu-dev keeps the cap
    policy = parse_policy(
        "groups:\n  regular: {memory: 60 GiB-hours, gpu: 0 GPU-hours}\n"
        "  gpu-dev: {memory: 640 GiB-hours, gpu: 160 GPU-hours, running: {gpu: 2}}\n"
    )
    assert policy.limits_for("u", ["regular", "gpu-dev"]).running == {"gpu": 2}


def test_exhausted_budget_blocks_choice():
    assert parse_policy("{}").exhausted_budget_blocks == "any"
    assert parse_policy("exhausted_budget_blocks: requested").exhausted_budget_blocks == "requested"
    with pytest.raises(
        PolicyError, match="p.yaml:1: exhausted_budget_blocks: 'all' is not one of any, requested"
    ):
        parse_policy("exhausted_budget_blocks: all", "p.yaml")


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("messages:\n  contact: 2026-02-30\n",
         "policy.yaml:2: messages.contact: '2026-02-30' cannot be read (day is out of range"),
        ("window: 99999999999d\n", "window: '99999999999d' is longer than 100 years"),
        ("groups:\n  g: {memory: 1e999999 GiB-hours}\n",
         "groups.g.memory: '1e999999 GiB-hours' is more than 1,000,000,000,000 hours"),
        ("groups:\n  g: {running: {servers: 1e400}}\n",
         "groups.g.running.servers: '1e400' is more than any server could hold"),
        ("a: " + "[" * 5000 + "]" * 5000 + "\n", "YAML nested too deeply to read"),
    ],
)  # fmt: skip
def test_values_yaml_or_our_arithmetic_cannot_hold_are_errors_with_their_line(text, said):
    """Before, these loaded (and failed at the first check) or raised something other than
    PolicyError: a traceback from ``policy check``, and a failed spawn on a hot reload."""
    assert any(said in issue for issue in errors(text)), errors(text)


def test_watcher_keeps_the_policy_through_an_edit_yaml_cannot_construct(tmp_path, caplog):
    path, clock, watcher, policy = watched(tmp_path)
    rewrite(path, "window: 7d\nmessages:\n  contact: 2026-02-30\n", 1)
    clock.now += 2
    with caplog.at_level(logging.ERROR, logger="ledger.store.policy_file"):
        assert watcher.current() is policy  # not a ValueError out of the hub's spawn check
    assert "2026-02-30" in str(watcher.last_error)
    assert "keeping the previous one" in caplog.text


def test_a_grace_as_long_as_a_window_is_refused_naming_the_window():
    """Such a grace never stops anyone: once it has passed, the 100 % warning that began it
    has left the window, and the user is warned anew (found in review, 2026-12-04)."""
    text = ("window: 30d\ngroups:\n  regular: {memory: {limit: 5 GiB-hours, window: 1d}}\n"
            "enforcement:\n  grace: 2d\n")  # fmt: skip
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "policy.yaml")
    assert "policy.yaml:5: enforcement.grace: 2 days is not shorter than the shortest budget " \
           "window (1 day)" in str(info.value)  # fmt: skip
    assert parse_policy(text.replace("2d", "23h")).enforcement.grace_seconds == 23 * 3600
