"""What an admin or a user types to grant, credit or ask for quota, checked. Pure.

One set of rules for the CLI (``quota-ledger grant|credit|revoke``) and the web forms and
JSON API: amounts are resource-hours written like a policy budget (``100 GiB-hours``, any
unit of the resource, ledger.core.policy_values), and must be more than 0; an end must lie
after the start; a reason is required (it is the record of why) and one line of sane length.
A grant or credit to a group's pool needs a pool budget of that resource in the policy: the
pool verdict reads grants only for the budgets the policy gives (ledger/core/shared_capacity.py
``budget_steps``), so any other would be recorded and count for nothing.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import Decimal

from ledger.core.durations import DurationError, duration_seconds
from ledger.core.policy import Policy
from ledger.core.policy_values import budget_hours
from ledger.core.times import TimeError, parse_day_or_time
from ledger.core.yaml_lines import Invalid, YNode

MAX_REASON_LENGTH = 500


class GrantInputError(ValueError):
    """Input that cannot be a grant, credit or request; the message says what is valid."""


def amount_hours(
    text: object, resource_name: str, extended: Iterable[str], *, where: str
) -> Decimal:
    """``"100 GiB-hours"`` → Decimal hours of the resource's unit, > 0."""
    if not isinstance(text, str) or not text.strip():
        raise GrantInputError(f"{where}: give an amount such as '100 GiB-hours'")
    try:
        hours = budget_hours(YNode(text, 0, text), resource_name, extended)
    except Invalid as exc:
        raise GrantInputError(f"{where}: {exc}") from None
    if hours is None or hours <= 0:
        raise GrantInputError(f"{where}: {text!r} is not more than 0; give e.g. '100 GiB-hours'")
    return hours


def time_of(text: object, *, where: str) -> datetime:
    """ISO 8601 with a time zone (a date alone means its midnight, UTC)."""
    if not isinstance(text, str) or not text.strip():
        raise GrantInputError(f"{where}: give a time such as 2026-12-31T00:00:00Z")
    try:
        return parse_day_or_time(text, what=f"{where}:")
    except TimeError as exc:
        raise GrantInputError(str(exc)) from None


def until_of(text: object, start: datetime, *, where: str) -> datetime:
    """An end: ISO 8601 with a time zone (or a date), or a duration after ``start`` (``30d``)."""
    if isinstance(text, str) and text.strip()[:1].isdigit() and "-" not in text:
        try:
            seconds = duration_seconds(text.strip())
        except DurationError as exc:
            raise GrantInputError(
                f"{where}: {exc}, or a time such as 2026-12-31T00:00:00Z"
            ) from None
        try:
            until = start + timedelta(seconds=float(seconds))
        except OverflowError:
            raise GrantInputError(
                f"{where}: {text.strip()!r} ends after the year 9999; give a shorter duration"
            ) from None
        return until_after(until, start, where=where)
    return until_after(time_of(text, where=where), start, where=where)


def until_after(until: datetime, start: datetime, *, where: str) -> datetime:
    if until <= start:
        raise GrantInputError(
            f"{where}: {until:%Y-%m-%d %H:%M:%S} UTC is not after "
            f"{start:%Y-%m-%d %H:%M:%S} UTC, when it would start"
        )
    return until


def reason_of(text: object, *, where: str = "reason") -> str:
    if not isinstance(text, str) or not text.strip():
        raise GrantInputError(f"{where}: say why (it is recorded with the entry)")
    reason = " ".join(text.split())
    if len(reason) > MAX_REASON_LENGTH:
        raise GrantInputError(f"{where}: {len(reason)} characters; at most {MAX_REASON_LENGTH}")
    if any(unicodedata.category(c) in ("Cc", "Cf") for c in reason):
        raise GrantInputError(f"{where}: contains control characters")
    return reason


def check_pool_budgets(policy: Policy, group: str, resources: Iterable[str], *, where: str) -> None:
    """Refuse a grant or credit to ``group``'s pool unless the policy gives that pool a budget
    of every resource in ``resources``; the message names the policy file and the groups whose
    pools have budgets (with their resources), so the admin sees what would count."""
    budgets = {name: sorted(pool.budgets) for name, pool in policy.pools.items() if pool.budgets}
    with_budgets = ", ".join(
        f"{name} ({', '.join(found)})" for name, found in sorted(budgets.items())
    )
    if group not in budgets:
        has = (
            "has only concurrent caps (running:) in its pool"
            if group in policy.pools
            else ("has no pool: budget")
        )
        raise GrantInputError(
            f"{where} {group}: group {group!r} {has} in the policy {policy.source}, so a pool "
            f"grant or credit would count for nothing; groups whose pool has a budget: "
            f"{with_budgets or 'none'}"
        )
    missing = [name for name in resources if name not in budgets[group]]
    if missing:
        raise GrantInputError(
            f"{where} {group}: the {group} pool in the policy {policy.source} has no "
            f"{' or '.join(missing)} budget (only {', '.join(budgets[group])}), so that grant "
            "or credit would count for nothing"
        )
