"""The demo's story: an admin's and a user's workflow told with numbers from the real ledger.

Admin workflow: the four groups of examples/policy.yaml, a month of usage, the report.
User workflow: "they launch a server with 4GB of RAM … keep it running for about 4 hours …
the idle culler reclaims it after 60min … 20 GiBHour"; later "50 of their 60 GiBHour";
"the admin moves them to the power user group … 240 GiB Hour".
"""

from __future__ import annotations

from datetime import datetime, timedelta

from ledger.cli.query_commands import _print_decision
from ledger.core.decision import ServerRequest
from ledger.core.resources import GIB
from ledger.core.times import iso
from ledger.store import queries
from ledger.store.report import build_report
from ledger.store.status import user_status
from quota_ledger_demo.generate import demo_users, generate

FOUR_GIB = ServerRequest({"cpu": 1000, "memory": 4 * GIB})


async def import_month(engine, out, now: datetime, seed: int) -> None:
    rows = generate(now - timedelta(days=1), seed)
    async with engine.begin() as conn:
        inserted = await queries.upsert_segments(conn, rows)
        for username, groups in demo_users().items():
            await queries.record_groups(conn, username, groups, now)
    out.print(
        f"imported {inserted} segments: a month of usage for {len(demo_users())} users "
        "in the groups regular, power, dev and gpu-dev"
    )


async def print_report(engine, out, policy, now: datetime) -> None:
    from rich.table import Table
    from rich.text import Text

    out.rule("The admins' report (quota-ledger report)")
    lines = await build_report(engine, policy, now)
    lines.sort(key=lambda line: -line.max_percent)
    table = Table("user", "group", "memory GiB-hours", "% of budget", "GPU-hours", "CPU-hours")
    for line in lines[:15]:
        mem, gpu, cpu = line.resources["memory"], line.resources["gpu"], line.resources["cpu"]
        pct = mem.percent_used
        style = "red" if pct and pct >= 100 else ("yellow" if pct and pct >= 80 else "")
        table.add_row(
            Text(line.username),
            Text(", ".join(line.groups)),
            f"{mem.used_hours:.1f} / {mem.limit_hours.normalize():f}"
            if mem.limit_hours
            else f"{mem.used_hours:.1f}",
            Text(f"{pct:.0f}%" if pct is not None else "", style=style),
            f"{gpu.used_hours:.1f}",
            f"{cpu.used_hours:.1f}",
        )
    out.print(table)
    over = sum(1 for line in lines if line.max_percent >= 100)
    out.print(f"{len(lines)} users with usage in the last 30 days; {over} have spent a budget.")


async def _add(engine, start: datetime, hours: float, uid: str) -> None:
    async with engine.begin() as conn:
        await queries.upsert_segments(
            conn,
            [
                {
                    "pod_uid": uid,
                    "namespace": "jhub",
                    "pod_name": "jupyter-sam",
                    "username": "sam",
                    "cpu_millicores": 1000,
                    "memory_bytes": 4 * GIB,
                    "started_at": start,
                    "ended_at": None if hours is None else start + timedelta(hours=hours),
                }
            ],
        )


def _step(out, text: str, command: str) -> None:
    out.print()
    out.print(f"[bold cyan]▶ {text}[/]")
    out.print(f"  $ {command}", markup=False, style="dim")


async def walk_user_workflow(engine, out, policy, now: datetime) -> None:
    out.rule("A user's workflow, with real numbers")
    day = (now - timedelta(days=9)).replace(hour=9, minute=0)
    await _add(engine, day, 5, "demo-sam-1")
    _step(
        out,
        f"sam (group regular) starts a 4 GiB server at {iso(day)}, works about 4 hours and "
        "leaves; the idle culler stops it an hour later",
        "quota-ledger usage sam",
    )
    status = await user_status(engine, policy, "sam", ["regular"], now)
    memory = status.resources["memory"]
    out.print(
        f"  used {memory.used_hours:.0f} of {memory.limit_hours:.0f} GiB-hours "
        f"(4 GiB × 5 hours = 20 GiB-hours)"
    )
    for n, days_ago in enumerate((6, 3), start=2):
        await _add(engine, (now - timedelta(days=days_ago)).replace(hour=10), 3.75, f"demo-sam-{n}")
    _step(
        out,
        "two more working days later sam checks before starting another 4 GiB server",
        f"quota-ledger check sam --group regular --memory 4Gi --cpu 1 --at {iso(now)}",
    )
    _print_decision(await user_status(engine, policy, "sam", ["regular"], now, FOUR_GIB))
    await _add(engine, now - timedelta(hours=3), 3, "demo-sam-4")
    _step(
        out,
        "sam runs that server for 3 more hours and asks again: the budget is spent",
        f"quota-ledger check sam --group regular --memory 4Gi --cpu 1 --at {iso(now)}",
    )
    _print_decision(await user_status(engine, policy, "sam", ["regular"], now, FOUR_GIB))
    _step(
        out,
        "sam asks for more; the admin moves sam to the power group",
        f"quota-ledger check sam --group power --memory 4Gi --cpu 1 --at {iso(now)}",
    )
    _print_decision(await user_status(engine, policy, "sam", ["power"], now, FOUR_GIB))
    async with engine.begin() as conn:
        await queries.record_groups(conn, "sam", ["power"], now)
