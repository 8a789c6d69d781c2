"""The enforcement plan is pure: the same decisions, hub view and history give the same
warnings and stops, with no database or hub (the full round is tests/test_enforcer.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ledger.core.decision import SegmentRow, ServerRequest, evaluate, to_us
from ledger.core.enforcement_plan import HubServer, HubUser, Past, plan_user
from ledger.core.policy_yaml import parse_policy
from ledger.core.resources import GIB

NOW = datetime(2026, 11, 1, 12, tzinfo=UTC)
POLICY = parse_policy(
    "groups:\n  regular: {memory: 60 GiB-hours}\n"
    "enforcement: {warn_at_percent: [80, 95], grace: 10m}\n"
)


def plan(memory_gib_hours: float, history=(), servers=("",), now=NOW, running=None):
    """Plan for a user whose one server has used ``memory_gib_hours`` over the last hours."""
    hours = 10
    rate = int(memory_gib_hours / hours * GIB)
    rows = [SegmentRow(to_us(now - timedelta(hours=hours)), None, "", {"memory": rate})]
    decision = evaluate("ann", POLICY.limits_for("ann", ["regular"]), rows, ServerRequest(), now)
    user = HubUser("ann", ["regular"], {s: HubServer(s, True, None) for s in servers})
    running = running if running is not None else [{"servername": "", "memory": rate / GIB}]
    return plan_user(decision, running, user, list(history), POLICY, now)


def test_under_every_threshold_nothing_is_due():
    assert plan(40) == []


def test_the_highest_crossed_threshold_warns_once():
    [warn] = plan(58)
    assert (warn.action, warn.threshold_percent, warn.resource) == ("warn", 95, "memory")
    earlier = Past("warn", "memory", 95, NOW - timedelta(hours=1), {})
    assert plan(58, history=[earlier]) == []


def test_used_up_warns_with_over_since_then_stops_after_the_grace():
    [warn] = plan(61)
    assert warn.threshold_percent == 100 and warn.detail["over_since"] == NOW.isoformat()
    over = Past("warn", "memory", 100, NOW - timedelta(minutes=5), {})
    assert plan(61, history=[over]) == []  # within the 10 minute grace
    over = Past("warn", "memory", 100, NOW - timedelta(minutes=11), {})
    stops = plan(61, history=[over], servers=("", "gpu"))
    assert [(a.action, a.servername) for a in stops] == [("stop", ""), ("stop", "gpu")]


def test_a_zero_grace_warns_and_stops_in_the_same_round():
    """``grace: 0s`` (an operator who wants no grace): the round that finds the budget used up
    warns and stops; with no grace nothing says "after 0 seconds"."""
    policy = parse_policy("groups:\n  regular: {memory: 60 GiB-hours}\nenforcement: {grace: 0s}\n")
    assert policy.enforcement.grace_seconds == 0
    rate = int(6.1 * GIB)
    rows = [SegmentRow(to_us(NOW - timedelta(hours=10)), None, "", {"memory": rate})]
    decision = evaluate("ann", policy.limits_for("ann", ["regular"]), rows, ServerRequest(), NOW)
    user = HubUser("ann", ["regular"], {"": HubServer("", True, None)})
    running = [{"servername": "", "memory": rate / GIB}]
    warn, stop = plan_user(decision, running, user, [], policy, NOW)
    assert (warn.action, warn.threshold_percent, stop.action) == (
        "warn",
        100,
        "stop",
    )
    assert warn.message.endswith("Your running servers are being stopped.")


def test_a_server_already_stopping_is_skipped():
    rows = [SegmentRow(to_us(NOW - timedelta(hours=10)), None, "", {"memory": int(6.1 * GIB)})]
    decision = evaluate("ann", POLICY.limits_for("ann", ["regular"]), rows, ServerRequest(), NOW)
    stopping = HubUser("ann", ["regular"], {"": HubServer("", True, "stop")})
    over = Past("warn", "memory", 100, NOW - timedelta(minutes=11), {})
    [skipped] = plan_user(decision, [], stopping, [over], POLICY, NOW)
    assert (skipped.action, skipped.servername) == ("stop_skipped", "")


def test_back_under_the_limit_ends_the_episode_once():
    over = Past("warn", "memory", 100, NOW - timedelta(minutes=30), {})
    [under] = plan(50, history=[over])  # a grant, or the window dropping old usage
    assert (under.action, under.resource) == ("under_quota", "memory")
    assert under.detail["over_since"] == over.acted_at.isoformat()
    ended = Past("under_quota", "memory", None, NOW - timedelta(minutes=20), {})
    assert plan(50, history=[over, ended]) == []


def test_a_budget_taken_out_of_the_policy_ends_its_episode():
    """The gpu budget leaves the policy while Ann's gpu episode is open: the round ends it
    (once), so a gpu budget put back later starts a fresh episode with its own grace."""
    over = Past("warn", "gpu", 100, NOW - timedelta(hours=1), {})
    [under] = plan(40, history=[over])
    assert (under.action, under.resource) == ("under_quota", "gpu")
    assert under.detail == {"over_since": over.acted_at.isoformat(), "no_longer_limited": True}
    ended = Past("under_quota", "gpu", None, NOW - timedelta(minutes=1), {})
    assert plan(40, history=[over, ended]) == []
    stopped = Past("stop", "gpu", None, NOW - timedelta(minutes=30), {})
    assert plan(40, history=[over, stopped]) == []  # a stop already ended it


def test_a_new_exhaustion_after_the_episode_ended_is_warned_with_a_fresh_grace():
    over = Past("warn", "memory", 100, NOW - timedelta(hours=2), {})
    ended = Past("under_quota", "memory", None, NOW - timedelta(hours=1), {})
    [warn] = plan(61, history=[over, ended])
    assert (warn.action, warn.threshold_percent) == ("warn", 100)
    assert warn.detail["over_since"] == NOW.isoformat()  # the new episode's own start
    again = Past("warn", "memory", 100, NOW - timedelta(minutes=5), {})
    assert plan(61, history=[over, ended, again]) == []  # its own grace, not the first one's
    stops = plan(61, history=[over, ended, again], now=NOW + timedelta(minutes=6))
    assert [a.action for a in stops] == ["stop"]


def test_a_round_where_a_stop_failed_does_not_end_the_episode():
    """12:00 warned; 12:10 the default server stopped, ``big`` refused (400: stop_failed).
    The next round retries ``big`` (docs/hub.md: "retried next round"); before, the one good
    stop ended the episode and the user was warned anew with a fresh grace."""
    warned = NOW - timedelta(minutes=11)
    stop_round = NOW - timedelta(minutes=1)
    history = [
        Past("warn", "memory", 100, warned, {}),
        Past("stop", "memory", None, stop_round, {}),
        Past("stop_failed", "memory", None, stop_round, {}),
    ]
    actions = plan(61, history=history, servers=("big",))
    assert [(a.action, a.servername) for a in actions] == [("stop", "big")]
    # once a round stops every server, the episode is over: a later exhaustion warns anew
    done = [*history, Past("stop", "memory", None, NOW, {})]
    later = NOW + timedelta(minutes=5)
    [warn] = plan(61, history=done, now=later)
    assert (warn.action, warn.threshold_percent) == ("warn", 100)


def test_a_zero_grace_episode_ends_with_its_stop():
    """``grace: 0s``: the round that warns also stops, both at its time. That warning is the
    ended episode's: it neither keeps an episode open (no spurious under_quota later, and
    no stop without a warning at the next exhaustion) nor hides the next 80 / 95 % ones."""
    policy = parse_policy(
        "groups:\n  regular: {memory: 60 GiB-hours}\n"
        "enforcement: {warn_at_percent: [80, 95], grace: 0s}\n"
    )
    stopped = NOW - timedelta(hours=1)
    history = [Past("warn", "memory", 100, stopped, {}), Past("stop", "memory", None, stopped, {})]

    def planned(gib_hours: float):
        rate = int(gib_hours / 10 * GIB)
        rows = [SegmentRow(to_us(NOW - timedelta(hours=10)), None, "", {"memory": rate})]
        decision = evaluate(
            "ann", policy.limits_for("ann", ["regular"]), rows, ServerRequest(), NOW
        )
        user = HubUser("ann", ["regular"], {"": HubServer("", True, None)})
        running = [{"servername": "", "memory": rate / GIB}]
        return [(a.action, a.threshold_percent) for a in
                plan_user(decision, running, user, history, policy, NOW)]  # fmt: skip

    assert planned(40) == []  # under again: no "has room again" for an ended episode
    assert planned(58) == [("warn", 95)]  # the next 95 % is warned
    assert planned(61) == [("warn", 100), ("stop", None)]  # warned, then stopped


def test_one_stop_for_two_used_up_budgets_ends_both_episodes():
    """Memory and CPU both used up past the grace: the server is stopped once, and that stop
    ends both episodes. Before, it was recorded for memory only, and the CPU episode stayed
    open: the next CPU exhaustion was stopped at once, with no warning and no grace."""
    policy = parse_policy(
        "groups:\n  regular: {memory: 60 GiB-hours, cpu: 10 CPU-hours}\nenforcement: {grace: 10m}\n"
    )

    def planned(history, now):
        rows = [SegmentRow(to_us(now - timedelta(hours=10)), None, "",
                           {"memory": int(6.1 * GIB), "cpu": 1100})]  # fmt: skip
        decision = evaluate(
            "ann", policy.limits_for("ann", ["regular"]), rows, ServerRequest(), now
        )
        user = HubUser("ann", ["regular"], {"": HubServer("", True, None)})
        running = [{"servername": "", "memory": 6.1, "cpu": 1.1}]
        return plan_user(decision, running, user, history, policy, now)

    warned = [Past("warn", r, 100, NOW - timedelta(minutes=11), {}) for r in ("cpu", "memory")]
    [stop] = planned(warned, NOW)
    assert stop.action == "stop" and sorted(stop.detail["resources"]) == ["cpu", "memory"]
    stopped = Past("stop", stop.resource, None, NOW, stop.detail)
    # an hour later both are used up again (a new server): both are warned anew, no stop
    later = planned([*warned, stopped], NOW + timedelta(hours=1))
    assert sorted((a.action, a.resource, a.threshold_percent) for a in later) == [
        ("warn", "cpu", 100), ("warn", "memory", 100),
    ]  # fmt: skip


def test_an_episode_may_be_open_only_inside_its_resources_longest_window():
    """What the enforcer plans for users running nothing (ledger/enforcer/enforcer.py): a
    100 % warning older than every window its resource's budgets have ends nothing to wait
    for; one inside the longest, not ended by a stop or ``under_quota``, may be open."""
    from ledger.core.enforcement_plan import open_episode

    policy = parse_policy(
        "window: 30d\ngroups:\n"
        "  a: {memory: 60 GiB-hours, gpu: {limit: 5 GPU-hours, window: 1d}}\n"
        "  b: {gpu: {limit: 5 GPU-hours, window: 2d}}\n"
    )
    assert policy.longest_window_seconds("gpu") == 2 * 86400
    assert policy.longest_window_seconds("memory") == 30 * 86400
    assert policy.longest_window_seconds("cpu") == policy.max_window_seconds()  # no budget

    def warned(resource, days_ago, action="warn"):
        at = NOW - timedelta(days=days_ago)
        return Past(action, resource, 100 if action == "warn" else None, at, {})

    assert not open_episode([warned("gpu", 3)], policy, NOW)
    assert open_episode([warned("gpu", 1.5)], policy, NOW)
    assert open_episode([warned("memory", 20)], policy, NOW)
    assert not open_episode([warned("memory", 20), warned("memory", 19, "under_quota")],
                            policy, NOW)  # fmt: skip
    assert not open_episode([warned("memory", 20), warned("memory", 19, "stop")], policy, NOW)
