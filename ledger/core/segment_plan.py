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
    # Docker keeps one OOMKilled flag per run (since StartedAt): a kill already recorded in
    # the run is the one the flag means, so a later sighting (the exit, after a process was
    # killed and the container lived on, or a re-list after a collector restart) is not a
    # second kill. None (Kubernetes): every terminated state is its own kill.
    run_started_at: datetime | None = None


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
    # A container that runs again under the same id (Docker's ``docker start`` after a stop)
    # is a new run: ``started_at`` moves forward and this is when the previous run ended.
    previous_run_ended_at: datetime | None = None
    source: str = "collector"  # segments.source: which recorder wrote the row


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
    source: str = "collector"


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
    run_started_at: datetime | None = None  # when the current run began (pods: one run)
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
        source=view.source,
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
    if view.started_at is None:
        return ops, state  # an unscheduled pod holds nothing yet
    run_started_at = state.run_started_at or state.open_started_at
    if run_started_at is not None and view.started_at > run_started_at:
        # A new run of the same object (a pod never has one): end the previous run's
        # segment if it is still open, then charge the new run from its own start.
        if state.is_open:
            ended_at = min(view.previous_run_ended_at or view.started_at, view.started_at)
            ended_at = max(ended_at, state.open_started_at)
            ops.append(CloseSegment(view.uid, ended_at, "terminated"))
        state.open_started_at, state.resources, state.closed = None, None, False
        state.resize_requested_at = None
    if state.closed:
        return ops, state  # closed is final for this run
    if state.open_started_at is None:
        state.open_started_at, state.resources = view.started_at, view.resources
        state.run_started_at = view.started_at
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
