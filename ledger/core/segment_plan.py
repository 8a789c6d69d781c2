"""Pure planning: what to write to the ledger when a pod is seen in a given state.

`plan` compares a `PodView` with what this collector last wrote for the pod (`Tracked`) and
returns the write operations plus the new tracked state. No I/O, no clock (``observed_at``
is a parameter). Every operation is idempotent in SQL (see ledger/store/segment_writes.py), so
replaying a plan, or two collectors planning the same pod, charges the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

# (cpu_millicores, memory_bytes, gpu_count, ((extended name, count), ...) sorted)
Resources = tuple[int, int, int, tuple[tuple[str, int], ...]]


@dataclass(frozen=True, slots=True)
class OomKill:
    container_name: str
    killed_at: datetime
    restart_count: int
    memory_limit_bytes: int | None


@dataclass(frozen=True, slots=True)
class PodView:
    uid: str
    namespace: str
    name: str
    workload: str
    username: str
    servername: str
    resources: Resources
    started_at: datetime | None  # None: not scheduled yet, nothing to charge
    ended_at: datetime | None  # set once every container terminated, or the pod is deleted
    end_reason: str | None  # terminated | deleted
    resize_requested_at: datetime | None  # PodResizeInProgress since, while it is present
    oom_kills: tuple[OomKill, ...]


@dataclass(frozen=True, slots=True)
class SegmentRow:
    """A segment to open: who, what size, from when."""

    pod_uid: str
    namespace: str
    pod_name: str
    username: str
    servername: str
    workload: str
    resources: Resources
    started_at: datetime
    last_seen_at: datetime


@dataclass(frozen=True, slots=True)
class OpenSegment:
    row: SegmentRow


@dataclass(frozen=True, slots=True)
class ResizeSegment:
    """Close the open segment at ``row.started_at`` and open ``row`` — unless the open
    segment already has these resources (another collector did it)."""

    row: SegmentRow


@dataclass(frozen=True, slots=True)
class CloseSegment:
    pod_uid: str
    ended_at: datetime
    end_reason: str


@dataclass(frozen=True, slots=True)
class VanishSegments:
    """Pods gone without a trace: close at their last_seen_at, record the unknown window."""

    pod_uids: tuple[str, ...]
    noticed_gone_at: datetime


@dataclass(frozen=True, slots=True)
class RecordOom:
    view: PodView
    kill: OomKill


Op = OpenSegment | ResizeSegment | CloseSegment | VanishSegments | RecordOom


@dataclass(slots=True)
class Tracked:
    """What the ledger holds (or will, once buffered writes land) for one pod."""

    workload: str
    namespace: str
    open_started_at: datetime | None = None  # the open segment's start; None: none open
    resources: Resources | None = None
    closed: bool = False
    resize_requested_at: datetime | None = None
    oom_seen: set[tuple[str, datetime]] = field(default_factory=set)

    @property
    def is_open(self) -> bool:
        return self.open_started_at is not None and not self.closed


def _row(view: PodView, started_at: datetime, observed_at: datetime) -> SegmentRow:
    return SegmentRow(
        pod_uid=view.uid,
        namespace=view.namespace,
        pod_name=view.name,
        username=view.username,
        servername=view.servername,
        workload=view.workload,
        resources=view.resources,
        started_at=started_at,
        last_seen_at=max(observed_at, started_at),
    )


def plan(tracked: Tracked | None, view: PodView, observed_at: datetime) -> tuple[list[Op], Tracked]:
    """The writes that bring the ledger in line with `view`, and the new tracked state."""
    state = tracked or Tracked(workload=view.workload, namespace=view.namespace)
    ops: list[Op] = []
    for kill in view.oom_kills:
        key = (kill.container_name, kill.killed_at)
        if key not in state.oom_seen:
            state.oom_seen.add(key)
            ops.append(RecordOom(view, kill))
    if view.resize_requested_at is not None:
        state.resize_requested_at = view.resize_requested_at
    if state.closed or view.started_at is None:
        return ops, state  # closed is final; an unscheduled pod holds nothing yet
    if state.open_started_at is None:
        state.open_started_at, state.resources = view.started_at, view.resources
        ops.append(OpenSegment(_row(view, view.started_at, observed_at)))
    elif view.resources != state.resources and view.ended_at is None:
        # In-place resize: the kubelet applied new resources. The object keeps no timestamp
        # for a finished resize, so use when PodResizeInProgress began if we saw it, else now.
        changed_at = max(state.resize_requested_at or observed_at, state.open_started_at)
        ops.append(ResizeSegment(_row(view, changed_at, observed_at)))
        state.open_started_at, state.resources = changed_at, view.resources
        state.resize_requested_at = None
    if view.ended_at is not None:
        ended_at = max(view.ended_at, state.open_started_at)
        ops.append(CloseSegment(view.uid, ended_at, view.end_reason or "terminated"))
        state.closed = True
    return ops, state
