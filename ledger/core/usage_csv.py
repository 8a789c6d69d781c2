"""The report as CSV: one header and one row per user, for ``report --format csv`` and the
admin page's export. Pure: it writes rows, the caller writes the file.

Columns: ``username, groups, running_servers``, then per resource ``<r>_used_<unit>``,
``<r>_limit_<unit>`` (empty = unlimited), ``<r>_remaining_<unit>``, ``<r>_percent_used``,
``<r>_running_<display unit>``, ``<r>_runs_out_at``, ``<r>_retry_at``, ``<r>_limit_source``,
then ``policy_groups, unlisted_users, max_percent_used``. Numbers are the JSON numbers
(``ledger.core.json_form``); groups are space-separated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ledger.core.json_form import json_number
from ledger.core.resources import resource
from ledger.core.times import iso
from ledger.core.usage_model import Membership, ResourceUsage, max_percent


def csv_safe(value: str) -> str:
    # A name starting with = + - @ would be run as a formula when the CSV is opened in a
    # spreadsheet (CSV injection, https://owasp.org/www-community/attacks/CSV_Injection);
    # a leading apostrophe makes it plain text.
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def header(names: Sequence[str]) -> list[str]:
    out = ["username", "groups", "running_servers"]
    for n in names:
        unit, held = resource(n).hours_unit, resource(n).display_unit
        out += [
            f"{n}_used_{unit}",
            f"{n}_limit_{unit}",
            f"{n}_remaining_{unit}",
            f"{n}_percent_used",
            f"{n}_running_{held}",
            f"{n}_runs_out_at",
            f"{n}_retry_at",
            f"{n}_limit_source",
        ]
    return [*out, "policy_groups", "unlisted_users", "max_percent_used"]


def _blank(value) -> object:
    return "" if value is None else value


def row(
    username: str,
    membership: Membership,
    running_servers: int,
    resources: Mapping[str, ResourceUsage],
    names: Sequence[str],
) -> list[object]:
    out: list[object] = [
        csv_safe(username),
        csv_safe(" ".join(membership.groups)),
        running_servers,
    ]
    for n in names:
        r = resources.get(n)
        if r is None:
            out += [""] * 8
            continue
        percent = r.percent_used
        source = r.source.user if r.source.kind == "user" else "+".join(r.source.groups)
        out += [
            json_number(r.used_hours),
            _blank(json_number(r.limit_hours)),
            _blank(json_number(r.remaining_hours)),
            "" if percent is None else round(percent, 2),
            json_number(resource(n).to_display(r.running)),
            _blank(iso(r.runs_out_at)),
            _blank(iso(r.retry_at)),
            csv_safe(f"{r.source.kind}:{source}" if source else r.source.kind),
        ]
    return [
        *out,
        csv_safe(" ".join(membership.policy_groups)),
        _blank(membership.unlisted),
        round(max_percent(resources.values()), 2),
    ]
