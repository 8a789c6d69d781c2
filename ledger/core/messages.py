"""What a person reads at spawn time: the denial (text + HTML) and the progress line. Pure.

All user-visible text goes through ``html.escape``: budget names, group names, the admin's
contact text and links all come from configuration or the hub, never trusted as markup.
Times are UTC in text; in HTML they are ``<time datetime=ISO>…UTC</time>`` and a tiny
inline script rewrites them in the browser's local time (JupyterHub inserts
``html_message`` with jQuery ``.html()`` on the spawn-pending page, which runs inline
scripts; the error page renders it as-is). The UTC text stays for REST clients and
browsers without JavaScript.
"""

from __future__ import annotations

import html

from ledger.core.decision import Decision
from ledger.core.quantities import format_hours

# Rewrites every <time data-quota-local> once; idempotent, so several copies are harmless.
LOCAL_TIME_SCRIPT = (
    "<script>document.querySelectorAll('time[data-quota-local]').forEach(function(t){"
    "var d=new Date(t.getAttribute('datetime'));"
    "if(!isNaN(d)){t.textContent=d.toLocaleString(undefined,{timeZoneName:'short'});"
    "t.removeAttribute('data-quota-local');}"
    "});</script>"
)


def utc_text(decision: Decision) -> str | None:
    """The retry time exactly as ``ledger.core.decision.describe`` writes it."""
    if decision.retry_at is None:
        return None
    return f"{decision.retry_at:%Y-%m-%d %H:%M:%S} UTC"


def _link(url: str, text: str) -> str:
    return f'<a href="{html.escape(url, quote=True)}">{html.escape(text)}</a>'


def denial_text(decision: Decision, contact: str, contact_url: str | None, quota_url: str) -> str:
    parts = [decision.message.strip(), contact.strip()]
    if contact_url:
        parts.append(f"Contact: {contact_url}")
    if quota_url:
        parts.append(f"Your quota page: {quota_url}")
    return " ".join(p for p in parts if p)


def denial_html(decision: Decision, contact: str, contact_url: str | None, quota_url: str) -> str:
    body = html.escape(decision.message.strip())
    when = utc_text(decision)
    script = ""
    if when is not None:
        escaped = html.escape(when)
        iso = html.escape(decision.retry_at.isoformat(), quote=True)
        body = body.replace(escaped, f'<time datetime="{iso}" data-quota-local>{escaped}</time>', 1)
        script = LOCAL_TIME_SCRIPT
    lines = [f'<span class="quota-denial">{body}</span>']
    if contact:
        more = html.escape(contact.strip())
        if contact_url:
            more += " " + _link(contact_url, contact_url)
        lines.append(more)
    if quota_url:
        lines.append("See " + _link(quota_url, "your quota page") + " for your usage.")
    return "<br>".join(lines) + script


def warning_lines(decision: Decision, warn_at_percent: tuple[int, ...]) -> list[str]:
    """One line per budget at or past the lowest warning threshold (what the enforcer warns)."""
    if not warn_at_percent:
        return []
    lowest = min(warn_at_percent)
    out = []
    for b in decision.budgets.values():
        if b.limit_hours > 0 and b.percent_used >= lowest:
            out.append(
                f"Warning: you have used {b.percent_used:.0f}% of your {b.resource} quota "
                f"({format_hours(b.resource, b.used_hours)} of "
                f"{format_hours(b.resource, b.limit_hours)}); running servers are stopped "
                "when it runs out."
            )
    return out


def progress_events(
    decision: Decision, warn_at_percent: tuple[int, ...], quota_url: str
) -> list[dict]:
    """Events for ``Spawner.progress``: the quota line, then any warnings."""
    events = []
    text = decision.message
    if decision.budgets or decision.run_seconds is not None or decision.shared is not None:
        link = f' (<a href="{html.escape(quota_url, quote=True)}">details</a>)' if quota_url else ""
        events.append({"message": text, "html_message": html.escape(text) + link})
    for line in warning_lines(decision, warn_at_percent):
        events.append({"message": line, "html_message": html.escape(line)})
    return events


def request_news(
    request_id: int,
    state: str,
    resource_name: str,
    amount_hours,
    decided_by: str | None,
    message: str | None,
) -> str:
    """``"Your request 3 for 100 GiB-hours of memory was approved by admin: half now."``"""
    text = (
        f"Your request {request_id} for {format_hours(resource_name, amount_hours)} of "
        f"{resource_name} was {state} by {decided_by}"
    )
    return f"{text}: {message}" if message else f"{text}."
