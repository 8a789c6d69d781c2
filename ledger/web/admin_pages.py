"""Admin pages (behind the admin scope): report, groups, running servers, rejection log,
enforcement actions, collector health. Every handler calls ``require_admin()`` first,
before any read."""

from __future__ import annotations

from decimal import Decimal

from ledger.core.resources import MICROSECONDS_PER_SECOND, resource
from ledger.store import page_reads as reads
from ledger.store import shared_reads
from ledger.store.report import add_times
from ledger.web.auth import QuotaHandler
from ledger.web.report_view import (
    MAX_PAGE,
    Query,
    ReportCache,
    group_totals,
    paginate,
    select,
    to_csv,
)

# A collector whose heartbeat is older than this is shown as stale (it beats every ~15 s).
STALE_HEARTBEAT_SECONDS = 120


class AdminHandler(QuotaHandler):
    def initialize(self, config, report_cache: ReportCache) -> None:
        super().initialize(config)
        self.report_cache = report_cache

    def paging(self, per_page: int = 50) -> tuple[int, int]:
        try:
            page = min(MAX_PAGE, max(1, int(self.get_argument("page", "1"))))
        except ValueError:
            page = 1
        return page, per_page


class ReportPageHandler(AdminHandler):
    async def get(self) -> None:
        self.require_admin()
        query = Query.from_args(self.get_argument, self.config.per_page)
        snapshot = await self.report_cache.get(refresh=self.get_argument("refresh", "") == "1")
        # The page shows no run-out or retry times, so it skips add_times (which reads the
        # shown users' segments; the API and the CSV export pay for it: benchmarks/RESULTS.md).
        page = paginate(select(snapshot, query), query)
        self.render_page(
            "admin_report.html",
            section="report",
            snapshot=snapshot,
            page=page,
            query=query,
            names=snapshot.resources,
            groups=snapshot.group_names(),
        )


class ReportCsvHandler(AdminHandler):
    async def get(self) -> None:
        self.require_admin()
        query = Query.from_args(self.get_argument, self.config.per_page)
        snapshot = await self.report_cache.get()
        lines = select(snapshot, query)
        await add_times(self.config.engine, self.config.policy(), lines)
        body = to_csv(lines, snapshot.resources)
        stamp = snapshot.at.strftime("%Y%m%dT%H%M%SZ")
        self.set_header("Content-Type", "text/csv; charset=UTF-8")
        self.set_header("Content-Disposition", f'attachment; filename="quota-report-{stamp}.csv"')
        self.finish(body)


class GroupsPageHandler(AdminHandler):
    async def get(self) -> None:
        self.require_admin()
        snapshot = await self.report_cache.get()
        async with self.config.engine.connect() as conn:
            members = await reads.group_members(conn)
        policy = self.config.policy()
        names = snapshot.resources
        self.render_page(
            "admin_groups.html",
            section="groups",
            totals=group_totals(snapshot.lines, names),
            members=members,
            policy_groups=policy.groups,
            unlisted_users=policy.unlisted_users,
            names=names,
            snapshot=snapshot,
        )


class RunningPageHandler(AdminHandler):
    async def get(self) -> None:
        self.require_admin()
        page, per_page = self.paging()
        now = self.config.now()
        async with self.config.engine.connect() as conn:
            total, rows = await reads.running_servers(conn, now, per_page, (page - 1) * per_page)
        for row in rows:
            seconds = max(0, int((now - row["started_at"]).total_seconds()))
            row["running_seconds"] = seconds
            us = seconds * MICROSECONDS_PER_SECOND
            row["accrued"] = {
                "cpu": resource("cpu").to_hours(row["cpu_millicores"] * us),
                "memory": resource("memory").to_hours(row["memory_bytes"] * us),
                "gpu": resource("gpu").to_hours(row["gpu_count"] * us),
            }
        self.render_page(
            "admin_running.html", section="running", rows=rows, total=total, page=page,
            pages=max(1, -(-total // per_page)),
            # the pools' and hub's caps with who holds them (admins only: this page)
            shared=await shared_reads.totals(self.config.engine, self.config.policy(), now,
                                             who=True),
        )  # fmt: skip


class RejectionsPageHandler(AdminHandler):
    async def get(self) -> None:
        self.require_admin()
        page, per_page = self.paging()
        async with self.config.engine.connect() as conn:
            total, rows = await reads.rejections(
                conn, per_page, (page - 1) * per_page, self.config.frozen_at
            )
            line = await shared_reads.waiting_line(conn, self.config.now())
        ahead: dict[str, int] = {}
        for row in line:  # ordered by bottleneck, then arrival
            row["position"] = ahead[row["reason"]] = ahead.get(row["reason"], 0) + 1
        for row in rows:
            row["bottleneck"] = (row["reason"] or "").rpartition(":")[2] or row["reason"]
            request = row.get("request") or {}
            row["size"] = ", ".join(
                f"{resource(n).to_display(Decimal(v)):g} {resource(n).display_unit}"
                for n, v in request.items()
                if v
            )
        self.render_page(
            "admin_rejections.html", section="rejections", rows=rows, total=total, page=page,
            line=line,
            pages=max(1, -(-total // per_page)),
        )  # fmt: skip


class EnforcementPageHandler(AdminHandler):
    async def get(self) -> None:
        self.require_admin()
        page, per_page = self.paging()
        async with self.config.engine.connect() as conn:
            total, rows = await reads.enforcement_actions(
                conn, per_page, (page - 1) * per_page, self.config.frozen_at
            )
        self.render_page(
            "admin_enforcement.html", section="enforcement", rows=rows, total=total, page=page,
            pages=max(1, -(-total // per_page)),
        )  # fmt: skip


class CollectorsPageHandler(AdminHandler):
    async def get(self) -> None:
        self.require_admin()
        now = self.config.now()
        async with self.config.engine.connect() as conn:
            rows = await reads.collector_health(conn)
        for row in rows:
            age = (now - row["last_heartbeat_at"]).total_seconds()
            row["heartbeat_age_seconds"] = max(0.0, age)
            row["stale"] = age > STALE_HEARTBEAT_SECONDS
        self.render_page("admin_collectors.html", section="collectors", rows=rows, now=now)
