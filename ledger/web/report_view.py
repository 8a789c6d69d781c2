"""The admins' report: every user's usage and percent of each budget, sorted, filtered, paged.

``ledger.store.report.build_report`` is one aggregate over every segment in the window (all
users at once); at 10,000 users and a million segments in the window that is a few hundred
milliseconds of PostgreSQL. Admins page, sort and filter the same figures many times in a
row, so the built report is kept for ``WebConfig.report_ttl_seconds`` (default 30 s) and
every page, sort, filter and the CSV export are cut from that snapshot in memory. The page
says how old the snapshot is and offers a refresh. Run-out and retry times are added to the
lines a page shows (``ledger.store.report.add_times``, once per line and snapshot).
"""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from ledger.core import usage_csv
from ledger.core.resources import display_order
from ledger.store.report import UserLine, build_report

log = logging.getLogger(__name__)

SORT_KEYS = ("percent", "user", "running", "cpu", "memory", "gpu")
MAX_PER_PAGE = 500
MAX_PAGE = 10**6  # past it a page number is a typo or a probe (the page is empty anyway)


@dataclass
class Snapshot:
    lines: list[UserLine]
    at: datetime  # the evaluation time of the figures
    built_monotonic: float
    build_seconds: float
    policy_id: int
    _orders: dict = field(default_factory=dict)

    @property
    def resources(self) -> list[str]:
        names = {n for line in self.lines[:1] for n in line.resources}
        return display_order(names) or ["cpu", "memory", "gpu"]

    def group_names(self) -> list[str]:
        if "__groups__" not in self._orders:
            found = {g for line in self.lines for g in (*line.groups, *line.policy_groups)}
            self._orders["__groups__"] = sorted(found)
        return self._orders["__groups__"]

    def ordered(self, sort: str) -> list[UserLine]:
        """All lines ascending by ``sort``, computed once per snapshot (keys are Decimals)."""
        if sort not in self._orders:
            self._orders[sort] = sorted(self.lines, key=_sort_key(sort))
        return self._orders[sort]


class ReportCache:
    """The last built report, rebuilt in the background when older than the TTL.

    Stale-while-revalidate: a request never waits for a rebuild once a snapshot exists (it
    gets the previous one, at most a TTL plus a build old, and the page says how old);
    ``refresh=True`` waits for a new one. ``warm()`` builds the first at start-up.
    """

    def __init__(self, config):
        self.config = config
        self._snapshot: Snapshot | None = None
        self._lock = asyncio.Lock()
        self._background: asyncio.Task | None = None

    def _fresh(self, snap: Snapshot | None, policy) -> bool:
        return (
            snap is not None
            and snap.policy_id == id(policy)
            and time.monotonic() - snap.built_monotonic < self.config.report_ttl_seconds
            and (self.config.frozen_at is None or snap.at == self.config.frozen_at)
        )

    async def _build(self) -> Snapshot:
        async with self._lock:  # one build at a time; concurrent requests share it
            policy = self.config.policy()
            if self._fresh(self._snapshot, policy):
                return self._snapshot
            at = self.config.now()
            started = time.monotonic()
            lines = await build_report(self.config.engine, policy, at)
            elapsed = time.monotonic() - started
            self._snapshot = Snapshot(lines, at, time.monotonic(), elapsed, id(policy))
            return self._snapshot

    def warm(self) -> None:
        """Start building in the background (no-op if a build is already running)."""
        if self._background is None or self._background.done():
            self._background = asyncio.ensure_future(self._build())
            self._background.add_done_callback(_log_failure)

    async def get(self, *, refresh: bool = False) -> Snapshot:
        snap = self._snapshot
        if refresh or snap is None:
            if refresh and snap is not None:
                snap.built_monotonic = float("-inf")  # make the locked re-check rebuild
            return await self._build()
        if not self._fresh(snap, self.config.policy()):
            if snap.policy_id != id(self.config.policy()):
                return await self._build()  # new limits: old percentages would mislead
            self.warm()
        return snap


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("building the quota report failed: %s", type(task.exception()).__name__)


@dataclass
class Query:
    """What the admin asked for, validated: ``?page=&per_page=&group=&sort=&order=&q=``."""

    page: int = 1
    per_page: int = 50
    group: str = ""
    sort: str = "percent"
    descending: bool = True
    search: str = ""

    @classmethod
    def from_args(cls, get, default_per_page: int) -> Query:
        def number(name: str, default: int, low: int, high: int) -> int:
            try:
                return min(high, max(low, int(get(name, str(default)))))
            except ValueError:
                return default

        sort = get("sort", "percent")
        order = get("order", "asc" if sort == "user" else "desc")
        return cls(
            page=number("page", 1, 1, MAX_PAGE),
            per_page=number("per_page", default_per_page, 1, MAX_PER_PAGE),
            group=get("group", "").strip(),
            sort=sort if sort in SORT_KEYS else "percent",
            descending=order != "asc",
            search=get("q", "").strip(),
        )

    def args(self, **changes) -> dict[str, str]:
        """Query-string values for a link to this view with ``changes`` applied."""
        values = {
            "page": self.page,
            "per_page": self.per_page,
            "group": self.group,
            "sort": self.sort,
            "order": "desc" if self.descending else "asc",
            "q": self.search,
        }
        values.update(changes)
        return {k: str(v) for k, v in values.items() if v not in ("", None)}


def _sort_key(sort: str):
    if sort == "user":
        return lambda line: line.username
    if sort == "running":
        return lambda line: (line.running_servers, line.max_percent)
    if sort in ("cpu", "memory", "gpu"):

        def by_resource(line: UserLine):
            r = line.resources.get(sort)
            if r is None:
                return (-1.0, Decimal(0))
            return (r.percent_used if r.percent_used is not None else -1.0, r.used_hours)

        return by_resource
    return lambda line: (
        line.max_percent,
        max((r.used_hours for r in line.resources.values()), default=0),
    )


def select(snapshot: Snapshot, query: Query) -> list[UserLine]:
    """Filter and sort (all pages): the CSV export and the paged view share this."""
    chosen = snapshot.ordered(query.sort)
    if query.descending:
        chosen = chosen[::-1]
    if query.group:
        group = query.group
        chosen = [line for line in chosen if group in line.groups or group in line.policy_groups]
    if query.search:
        needle = query.search.lower()
        chosen = [line for line in chosen if needle in line.username.lower()]
    return chosen


@dataclass
class Page:
    lines: list[UserLine]
    total: int
    page: int
    pages: int
    per_page: int


def paginate(lines: list[UserLine], query: Query) -> Page:
    total = len(lines)
    pages = max(1, -(-total // query.per_page))
    page = min(query.page, pages)
    start = (page - 1) * query.per_page
    return Page(lines[start : start + query.per_page], total, page, pages, query.per_page)


@dataclass
class GroupTotal:
    group: str
    users: int
    used_hours: dict[str, Decimal]
    running_servers: int
    over_limit: int  # users at or above 100 % of some budget


def group_totals(lines: list[UserLine], names: list[str]) -> list[GroupTotal]:
    """Per group (hub groups; a user in two groups counts in both; '(no group)' too)."""
    totals: dict[str, GroupTotal] = {}
    for line in lines:
        for group in line.groups or ["(no group)"]:
            t = totals.setdefault(group, GroupTotal(group, 0, {n: Decimal(0) for n in names}, 0, 0))
            t.users += 1
            t.running_servers += line.running_servers
            t.over_limit += line.max_percent >= 100
            for n in names:
                r = line.resources.get(n)
                if r is not None:
                    t.used_hours[n] += r.used_hours
    return sorted(totals.values(), key=lambda t: t.group)


def to_csv(lines: list[UserLine], names: list[str]) -> str:
    """The export: the same columns as ``quota-ledger report --format csv``."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(usage_csv.header(names))
    for line in lines:
        writer.writerow(
            usage_csv.row(
                line.username, line.membership, line.running_servers, line.resources, names
            )
        )
    return out.getvalue()


_csv_safe = usage_csv.csv_safe
