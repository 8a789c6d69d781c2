"""The compact quota summary and the per-choice decisions, read from the ledger.

One function each, used by the hub's pages (``ledger.hub.summary``) and by the quota
service's ``/api/v1/me/summary`` and ``/api/v1/me/choices`` alike, so they cannot differ:
the summary is :func:`ledger.store.status.user_status` (one query) put through
:func:`ledger.core.quota_notes.summary_json`; the choices are
:func:`ledger.store.decide.decide_many` (one round trip for every size).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from ledger.core.decision import ServerRequest
from ledger.core.quota_notes import choice_json, choices_json, summary_json
from ledger.store.decide import decide_many
from ledger.store.status import user_status


async def user_summary(
    engine, policy, username: str, groups: Iterable[str], now: datetime, *, quota_url=None
) -> dict:
    """``QuotaSummary`` (docs/openapi.yaml) of ``username`` at ``now``."""
    status = await user_status(engine, policy, username, groups, now)
    return summary_json(
        username,
        now,
        status.resources,
        warn_at_percent=policy.enforcement.warn_at_percent,
        quota_url=quota_url if quota_url is not None else policy.messages.quota_page_url,
        shared=status.decision.shared,
    )


async def user_choices(
    engine,
    policy,
    username: str,
    groups: Iterable[str],
    now: datetime,
    choices: Sequence[tuple[str, str, str, ServerRequest]],
) -> dict:
    """``ChoiceNotes``: ``choices`` are (field, value, label, request) of a form."""
    decisions = await decide_many(
        engine, policy, username, tuple(groups), [c[3] for c in choices], now
    )
    return choices_json(
        username,
        now,
        [
            choice_json(field, value, decision, now, label_text=label)
            for (field, value, label, _), decision in zip(choices, decisions, strict=True)
        ],
    )
