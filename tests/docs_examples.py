"""The fenced examples of the docs, read the way a reader copies them, for the tests that run them.

Markers are HTML comments (invisible on GitHub and in any Markdown renderer):

- ``<!-- test: NAME -->`` on the line before a fence (blank lines may separate them) tags the
  block; the hub end-to-end tests concatenate every Python block tagged ``hub-config`` into
  their ``jupyterhub_config.py``, so untagged prose examples may stay partial.
- ``<!-- test: skip REASON -->`` before a ``sql`` block keeps it out of the psql run; the
  reason is required and shown in the test's id.
- ``<!-- result -->`` between a ``sql`` block and the fenced ``text`` block after it states the
  result: psql's aligned output of the query (``psql -X -q``). Lines compare with runs of
  spaces collapsed; a line ``...`` matches any number of lines (rows that depend on when
  the test runs).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^(?P<indent> *)(?P<fence>```+|~~~+)\s*(?P<info>[^`\s]*)")
MARKER = re.compile(r"^\s*<!--\s*(?P<body>.*?)\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    path: Path  # relative to the repository
    line: int  # the opening fence's line, 1-based
    lang: str
    text: str
    markers: tuple[str, ...] = ()  # bodies of the `test:` markers before the block
    result: str | None = None  # the stated result (the `text` block after `<!-- result -->`)
    heading: str = ""  # the prose line or heading the block follows
    _next_line: int = field(default=0, compare=False, repr=False)

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    def tagged(self, name: str) -> bool:
        return any(m == name or m.startswith(name + " ") for m in self.markers)


def blocks(path: Path) -> list[Block]:
    """Every fenced block of one Markdown file, with its markers and stated result."""
    lines = path.read_text().splitlines()
    rel = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    found: list[Block] = []
    pending: list[str] = []
    prose = ""
    result_for: int | None = None  # index in `found` awaiting a `text` result block
    i = 0
    while i < len(lines):
        line = lines[i]
        fence = FENCE.match(line)
        marker = MARKER.match(line)
        if fence:
            close, indent = fence["fence"], len(fence["indent"])
            body, j = [], i + 1
            while j < len(lines) and not lines[j].strip().startswith(close):
                body.append(lines[j][indent:] if lines[j][:indent].isspace() else lines[j])
                j += 1
            text = "\n".join(body) + "\n"
            if result_for is not None and fence["info"] == "text":
                stated = found[result_for]
                found[result_for] = Block(**{**stated.__dict__, "result": text})
            else:
                markers = tuple(m.removeprefix("test:").strip() for m in pending)
                found.append(Block(rel, i + 1, fence["info"], text, markers, None, prose))
            pending, result_for, i = [], None, j + 1
            continue
        if marker:
            body = marker["body"]
            if body.startswith("test:"):
                pending.append(body)
            elif body == "result" and found:
                result_for = len(found) - 1
        elif line.strip():
            pending, result_for = [], None
            prose = line.strip().lstrip("#").strip()
        i += 1
    return found


def doc_paths(*patterns: str) -> list[Path]:
    return sorted(p for pattern in patterns for p in ROOT.glob(pattern))


def sql_blocks() -> list[Block]:
    return [b for p in doc_paths("docs/*.md", "README.md") for b in blocks(p) if b.lang == "sql"]


def tagged_blocks(name: str, *docs: str, lang: str = "python") -> list[Block]:
    """The blocks tagged ``<!-- test: name -->`` of the given docs, in the order given."""
    return [b for d in docs for b in blocks(ROOT / d) if b.lang == lang and b.tagged(name)]


def hub_config_source(docs: tuple[str, ...] = ("docs/hub.md", "docs/web.md")) -> str:
    """The ``jupyterhub_config.py`` an operator gets by pasting the tagged blocks together."""
    parts = [f"# {b.where}\n{b.text}" for b in tagged_blocks("hub-config", *docs)]
    if not parts:
        raise AssertionError(f"no <!-- test: hub-config --> python block in {', '.join(docs)}")
    return "\n".join(parts)


def command_lines(block: Block, program: str = "quota-ledger") -> list[tuple[str, str]]:
    """(command, trailing comment) for every line of a shell block that runs ``program``."""
    out = []
    for raw in block.text.splitlines():
        command, _, comment = raw.partition(" #")
        command = command.strip()
        if command.startswith("$ "):
            command = command[2:]
        if command.split(" ", 1)[0] == program:
            out.append((command, comment.strip()))
    return out


def matches(stated: str, actual: str) -> bool:
    """psql output against a stated result: spaces collapsed, ``...`` matching any lines."""

    def norm(text: str) -> list[str]:
        # psql pads columns to the widest value: compare words, and rules as one dash per column
        lines = [" ".join(line.split()) for line in text.strip("\n").splitlines()]
        return [re.sub(r"-+", "-", line) if set(line) <= set("-+") else line for line in lines]

    pattern = "".join(
        r"(?:.*\n)*?" if line == "..." else re.escape(line) + r"\n" for line in norm(stated)
    )
    return re.fullmatch(pattern, "\n".join(norm(actual)) + "\n") is not None


async def load_demo_ledger(url: str, now: datetime) -> None:
    """The data ``quota-ledger demo`` writes: its generated month, then sam's workflow (sam's
    four servers and move to ``power``), plus sam's refusal in the decision log."""
    import io

    from rich.console import Console

    from ledger.store import db
    from ledger.store.decide import decide, record
    from ledger.store.policy_file import load_policy
    from quota_ledger_demo.command import POLICY_FILE
    from quota_ledger_demo.story import FOUR_GIB, import_month, walk_user_workflow

    policy = load_policy(POLICY_FILE)
    quiet = Console(file=io.StringIO())
    engine = db.create_engine(url)
    try:
        await import_month(engine, quiet, now, seed=7)
        await walk_user_workflow(engine, quiet, policy, now)
        denied = await decide(engine, policy, "sam", ["regular"], FOUR_GIB, now)
        await record(engine, denied, source="hub")
    finally:
        await engine.dispose()
