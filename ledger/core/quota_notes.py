"""The compact quota summary and the per-choice notes of the server-options form. Pure.

Both are JSON first (``QuotaSummary`` and ``ChoiceNotes`` in docs/openapi.yaml): the hub's
home page and header, the annotated options form, the quota service's
``/api/v1/me/summary`` and ``/api/v1/me/choices`` and the JupyterLab status bar all render
these objects, so they say the same thing. A summary is built from the usage model
(:class:`~ledger.core.usage_model.ResourceUsage`, whose JSON it embeds unchanged); a choice
note from the :class:`~ledger.core.decision.Decision` for that choice's size.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta

from ledger.core.decision import Decision
from ledger.core.json_form import json_amounts
from ledger.core.quantities import format_amount, format_duration, format_hours
from ledger.core.resources import resource
from ledger.core.times import iso
from ledger.core.usage_model import ResourceUsage
from ledger.core.usage_text import label, used_of_limit_text, window_text

# levels of a summary line / of the whole summary
LEVELS = ("ok", "warn", "over")
# outcomes of a choice; "waits": refused now only by pool or hub caps a spawn may wait for
# (ledger.core.shared_capacity.SharedStatus.may_wait): picking it queues the spawn in line.
OUTCOMES = ("allowed", "refused", "waits")
SHORT_RUN_SECONDS = 3600  # an allowed choice that cannot run an hour is flagged "short"


def level_of(r: ResourceUsage, warn_at_percent: float) -> str:
    """ok | warn (at or above the policy's first warning threshold) | over (used up)."""
    percent = r.percent_used
    if percent is None:
        return "ok"
    if percent >= 100:
        return "over"
    return "warn" if percent >= warn_at_percent else "ok"


def first_warning_percent(warn_at_percent: Iterable[int]) -> float:
    """The policy's ``enforcement.warn_at_percent`` is a list; the summary warns at its
    lowest threshold (80 when the list is empty, the usage model's "near")."""
    values = sorted(float(p) for p in warn_at_percent)
    return values[0] if values else 80.0


def _hours_number(name: str, amount_base_us: int) -> str:
    """``42`` of ``42 GiB-hours`` (the unit is said once per line)."""
    return format_hours(name, resource(name).to_hours(amount_base_us)).rsplit(" ", 1)[0]


def shared_lines(shared, at: datetime, warn: float) -> list[dict]:
    """The summary's lines for the group pools and hub caps the user meets (never who else
    holds what): a pool budget like a resource line, ``over`` when spent, saying until when;
    a cap ``warn`` when full (a full cap makes a new server wait or be refused, it is no
    budget used up), saying whether a new server would wait."""
    lines = []
    for c in [] if shared is None else shared.checks:
        if c.level == "user" or c.limit <= 0:
            continue
        where = "Hub" if c.level == "hub" else f"{c.scope} pool"
        percent = c.in_use / c.limit * 100
        if c.kind == "budget":
            used, limit = (_hours_number(c.resource, v) for v in (c.in_use, c.limit))
            text = f"{used} / {limit} {resource(c.resource).hours_unit}"
            level = "over" if c.in_use >= c.limit else ("warn" if percent >= warn else "ok")
            note = f"used up{_until(c.retry_at, at)}" if level == "over" else ""
        else:
            text = _held(c)
            level = "warn" if c.in_use >= c.limit else "ok"
            note = ("full: a new server waits" if c.waitable else "full") if level == "warn" else ""
        lines.append(
            {
                "scope_level": c.level,
                "scope": c.scope,
                "resource": c.resource,
                "kind": c.kind,
                "label": f"{where} {'servers' if c.resource == 'servers' else label(c.resource)}",
                "level": level,
                "text": text,
                "note": note,
                "retry_at": iso(c.retry_at),
            }
        )
    return lines


def summary_json(
    username: str,
    at: datetime,
    resources: Mapping[str, ResourceUsage],
    *,
    warn_at_percent: Iterable[int],
    quota_url: str | None,
    shared=None,
) -> dict:
    """The compact summary: one line per limited resource (limit above 0), and the lines of
    the pools and hub caps the user meets (``shared``: a SharedStatus)."""
    warn = first_warning_percent(warn_at_percent)
    lines = []
    for name, r in resources.items():
        if r.limit_hours is None or r.limit_hours <= 0:
            continue  # unlimited or not included: nothing to watch
        percent = r.percent_used or 0.0
        lines.append(
            {
                "resource": name,
                "label": label(name),
                "level": level_of(r, warn),
                "text": used_of_limit_text(r),
                "window": window_text(r.window_seconds),
                "bar_percent": round(min(100.0, max(0.0, percent)), 1),
                "usage": r.to_json(),
            }
        )
    pooled = shared_lines(shared, at, warn)
    levels = {line["level"] for line in [*lines, *pooled]}
    return {
        "username": username,
        "at": iso(at),
        "available": True,
        "state": next((s for s in ("over", "warn") if s in levels), "ok"),
        "warn_at_percent": warn,
        "quota_url": quota_url or None,
        "resources": lines,
        "shared": pooled,
    }


def unavailable_summary(username: str, at: datetime, quota_url: str | None) -> dict:
    """What the hub's pages show when the ledger does not answer: no numbers, a notice."""
    return {
        "username": username,
        "at": iso(at),
        "available": False,
        "state": "unavailable",
        "warn_at_percent": None,
        "quota_url": quota_url or None,
        "resources": [],
        "shared": [],
    }


def about_text(seconds: int) -> str:
    """``"about 4 hours"``: one unit, rounded down (never promise more than can run)."""
    if seconds >= 2 * 86400:
        return f"about {seconds // 86400} days"
    if seconds >= 2 * 3600:
        return f"about {seconds // 3600} hours"
    return f"about {format_duration(seconds)}"


def _until(at: datetime | None, now: datetime) -> str:
    if at is None:
        return ""
    at = at.astimezone(UTC)
    if at.second or at.microsecond:  # a waiting time is never understated
        at = at.replace(second=0, microsecond=0) + timedelta(minutes=1)
    if at.date() == now.astimezone(UTC).date():
        return f" until {at:%H:%M} UTC"
    return f" until {at:%b} {at.day}, {at:%H:%M} UTC"


def _name(resource_name: str) -> str:
    """``memory``, ``GPU``, ``CPU`` mid-sentence."""
    text = label(resource_name)
    return text if text.isupper() else text.lower()


def _waits(decision: Decision) -> bool:
    """Refused only by shared caps it may wait for: the user's own limits all allow it."""
    shared = decision.shared
    own = [r for r in decision.reasons if not r.startswith(("pool:", "hub_", "user_running:"))]
    return shared is not None and shared.may_wait and not own


def choice_outcome(decision: Decision) -> str:
    if decision.allowed:
        return "allowed"
    return "waits" if _waits(decision) else "refused"


def _thing(resource_name: str) -> str:
    """What a spawn waits for: ``a GPU``, ``a server slot``, ``memory``."""
    if resource_name == "gpu":
        return "a GPU"
    if resource_name == "servers":
        return "a server slot"
    return _name(resource_name) if resource_name in ("cpu", "memory") else resource_name


def _held(check) -> str:
    """``8 of 8 in use``; amounts with a unit of their own keep it (``2 TiB of 2 TiB``)."""
    if check.resource in ("cpu", "memory"):
        used, cap = (format_amount(check.resource, v) for v in (check.in_use, check.limit))
    else:
        used, cap = check.in_use, check.limit
    return f"{used} of {cap} in use"


def _where(check) -> str:
    return {"hub": "on this hub", "pool": f"in the {check.scope} pool"}.get(check.level, "")


def _shared_note(decision: Decision, now: datetime) -> str | None:
    """The note for a choice the user's own limits allow but a pool or the hub refuses."""
    shared = decision.shared
    blocking = [] if shared is None else shared.blocking
    if not blocking:
        return None
    if shared.may_wait:
        neck = shared.bottleneck
        return f"would wait for {_thing(neck.resource)} ({_held(neck)} {_where(neck)})"
    spent = [c for c in blocking if c.kind == "budget" and c.blocks == "used_up"]
    if spent:
        c = spent[0]
        owner = "your own" if c.level == "user" else f"the {c.scope} pool's"
        return f"{owner} {_name(c.resource)} budget is spent{_until(decision.retry_at, now)}"
    zero = [c for c in blocking if c.blocks == "zero_limit"]
    if zero:
        return f"{_name(zero[0].resource)} not included in the {zero[0].scope} pool"
    c = min(blocking, key=lambda c: c.level != "hub")  # the widest scope first
    if c.level == "user":  # the user's own servers still starting count against their cap
        return f"over what you may run at a time ({_name(c.resource)}, starting servers included)"
    return f"not enough {_name(c.resource)} free ({_held(c)} {_where(c)})"


def choice_note(decision: Decision, now: datetime) -> str:
    """One short line a person reads next to a choice, before picking it."""
    if decision.allowed:
        if decision.run_seconds is None:
            return "within your quota"
        return f"can run {about_text(decision.run_seconds)}"
    reasons = decision.reasons
    own = [r for r in reasons if not r.startswith(("pool:", "hub_", "user_running:"))]
    if not own:
        shared = _shared_note(decision, now)
        if shared is not None:
            return shared
    if "unlisted" in reasons:
        return "you may not start servers on this hub"
    used_up = [r.split(":", 1)[1] for r in reasons if r.startswith("used_up:")]
    if used_up:
        names = " and ".join(_name(n) for n in used_up)
        return f"over your {names} budget{_until(decision.retry_at, now)}"
    zero = [r.split(":", 1)[1] for r in reasons if r.startswith("zero_limit:")]
    if zero:
        return f"{' and '.join(_name(n) for n in zero)} not included in your quota"
    caps = [r.split(":", 1)[1] for r in reasons if r.startswith("running:")]
    if caps:
        names = " and ".join("servers" if n == "servers" else _name(n) for n in caps)
        return f"over what you may run at a time ({names})"
    return decision.message


def choice_json(
    field: str, value: str, decision: Decision, now: datetime, *, label_text: str = ""
) -> dict:
    """One choice's annotation: the form ``field`` and ``value`` it belongs to."""
    outcome = choice_outcome(decision)
    short = decision.run_seconds is not None and decision.run_seconds < SHORT_RUN_SECONDS
    level = "short" if short else "ok"
    return {
        "field": field,
        "value": value,
        "label": label_text,
        "outcome": outcome,
        "level": outcome if outcome in ("refused", "waits") else level,
        "note": choice_note(decision, now),
        "request": json_amounts(decision.request.amounts),
        "run_seconds": decision.run_seconds,
        "retry_at": iso(decision.retry_at),
        "reasons": list(decision.reasons),
        "message": decision.message,
    }


def choices_json(username: str, at: datetime, choices: Iterable[dict]) -> dict:
    return {"username": username, "at": iso(at), "choices": list(choices)}
