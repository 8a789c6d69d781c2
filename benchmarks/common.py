"""What the benchmarks share: the options of a benchmark on the loaded ledger, the machine
description and load average printed next to every figure, and the command line to rerun.

Each script still prints its own wording; these are only the pieces they had copied.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import shlex
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _read(path: str) -> str:
    with contextlib.suppress(OSError):
        return Path(path).read_text()
    return ""


def cpu_model(default: str = "unknown") -> str:
    found = re.search(r"(?m)^model name\s*:\s*(.+)$", _read("/proc/cpuinfo"))
    return found.group(1).strip() if found else default


def ram_gib() -> float:
    """Total memory in GiB (``MemTotal``; 0 where /proc/meminfo is missing)."""
    found = re.search(r"MemTotal:\s+(\d+)", _read("/proc/meminfo"))
    return int(found.group(1)) / 1024**2 if found else 0.0


def os_name() -> str:
    found = re.search(r'PRETTY_NAME="?([^"\n]+)', _read("/etc/os-release"))
    return found.group(1) if found else platform.platform()


def load_average(fields: int = 3) -> str:
    """The first ``fields`` load averages as /proc/loadavg has them, or "unknown"."""
    return " ".join(_read("/proc/loadavg").split()[:fields]) or "unknown"


def machine() -> dict:
    """The machine, for a RESULTS.md "Machine:" line; ``load`` is the load average now."""
    ram = ram_gib()
    return {
        "load": load_average(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "ram": f"{ram:.1f} GiB" if ram else "unknown",
        "os": f"{os_name()}, kernel {platform.release()}",
        "python": platform.python_version(),
    }


def add_after_seconds_option(parser) -> None:
    """``--after-seconds``: read at this long after the generated ledger's present
    (datagen.EVAL_AT, a midnight), since a hub's now is almost never on a whole minute, where
    a pool read's edges read raw starts and ends."""
    parser.add_argument(
        "--after-seconds", type=float, default=0.0,
        help="read this long after the generated ledger's present (a midnight)",
    )  # fmt: skip


def add_loaded_ledger_options(
    parser: argparse.ArgumentParser,
    *,
    reuse_help: str = "--db already loaded by this script",
    results: bool = True,
) -> None:
    """--users/--segments/--seed (benchmarks/datagen.py's ledger), --db, --reuse and, with
    ``results``, --no-results: the options of every benchmark on the loaded ledger."""
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--segments", type=int, default=3_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--db", help="an empty PostgreSQL database (default: embedded, temporary)")
    parser.add_argument("--reuse", action="store_true", help=reuse_help)
    if results:
        parser.add_argument("--no-results", action="store_true", help="do not write RESULTS.md")


def add_loaded_ab_options(
    parser: argparse.ArgumentParser, *, users: int, rounds: int, users_in_ledger: bool = True
) -> None:
    """--db (required), --users timed per block, --rounds, --seed and, with
    ``users_in_ledger``, --users-in-ledger: the options of the A/B benchmarks that time one
    change on a ledger ledger_bench.py already loaded (they need its users' groups)."""
    parser.add_argument(
        "--db", required=True, help="a ledger loaded by ledger_bench.py, never a hub's"
    )
    parser.add_argument("--users", type=int, default=users, help="users timed in each round")
    if users_in_ledger:
        parser.add_argument(
            "--users-in-ledger", type=int, default=10_000,
            help="the --users the ledger was generated with (their groups)",
        )  # fmt: skip
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--seed", type=int, default=0)


def command_line(script: str, argv: list[str]) -> str:
    """How to rerun: ``.venv/bin/python benchmarks/<script> ARGS``, a database URL shown as
    URL (it names this machine's socket directory, and may carry a password)."""
    shown = [a if not a.startswith("postgres") else "URL" for a in argv]
    return " ".join([f".venv/bin/python benchmarks/{script}", *map(shlex.quote, shown)])


RESULTS = REPO / "benchmarks" / "RESULTS.md"


def write_section(section: str, heading: str, path: Path = RESULTS) -> None:
    """Replace ``heading``'s own text in RESULTS.md (up to its first ``### `` subsection or the
    next ``## ``) with ``section``, or append it; the dated ``###`` reruns under it and every
    other section stay as they are."""
    existing = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    out, skipping, replaced = [], False, False
    for line in existing.splitlines(keepends=True):
        if line.rstrip("\n") == heading:
            skipping = replaced = True
            out.append(section.rstrip("\n") + "\n\n")
            continue
        if skipping and line.startswith(("## ", "### ")):
            skipping = False
        if not skipping:
            out.append(line)
    text = "".join(out).rstrip("\n") + "\n"
    if not replaced:
        text += "\n" + section.rstrip("\n") + "\n"
    path.write_text(text, encoding="utf-8")


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile, linearly interpolated between the two nearest ranks (numpy's
    default); benchmarks/vs_prometheus.py keeps nearest rank on purpose (few reps)."""
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)
