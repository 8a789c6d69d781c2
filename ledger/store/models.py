"""SQLAlchemy 2 models: the ledger's tables.

Integers in base units (millicores, bytes, devices), timestamps UTC and tz-aware. The schema
serves every part: segments (collector, import), OOM kills (collector), decisions (hub hook,
CLI), enforcement actions (enforcer), collector health (collector, web), and the user→group
cache the hub hook and enforcer keep so reports and pages need no Hub round trip.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Index,
    Integer,
    MetaData,
    Text,
    UniqueConstraint,
    func,
    literal_column,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Deterministic constraint names so alembic migrations can refer to them.
# https://alembic.sqlalchemy.org/en/latest/naming.html
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

TZ = DateTime(timezone=True)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# The end of an open segment, for indexes and range conditions: an open segment is still
# holding resources, so it reaches to +infinity until it is closed.
SEGMENT_END = literal_column("COALESCE(ended_at, 'infinity'::timestamptz)")


class Segment(Base):
    """A period in which one pod held a constant set of resources.

    ``(pod_uid, started_at)`` is unique so writing the same segment twice (two collectors,
    a re-imported file) counts once. Partitioned by month of ``started_at`` (migration 0006),
    so the primary key includes it; at most one open segment per pod is kept by a trigger
    (a partitioned table's unique indexes must contain the partition key).
    """

    __tablename__ = "segments"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    pod_uid: Mapped[str] = mapped_column(Text, nullable=False)
    namespace: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    pod_name: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    username: Mapped[str] = mapped_column(Text, nullable=False)
    servername: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    # jupyterhub | dask-gateway | <configured workload name> | import
    workload: Mapped[str] = mapped_column(Text, nullable=False, server_default="jupyterhub")
    cpu_millicores: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    memory_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    gpu_count: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    # other configured extended resources: {"fpga": 1}; integers in devices
    extended: Mapped[dict] = mapped_column(
        JSONB, nullable=False, server_default=text("'{}'::jsonb")
    )
    started_at: Mapped[datetime] = mapped_column(TZ, nullable=False, primary_key=True)
    ended_at: Mapped[datetime | None] = mapped_column(TZ, nullable=True)
    # last time a collector saw the pod alive (heartbeat); a vanished pod is closed here
    last_seen_at: Mapped[datetime] = mapped_column(TZ, nullable=False)
    # terminated | deleted | vanished | resized | imported
    end_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    # for end_reason=vanished: when the pod was noticed gone. [ended_at, noticed_gone_at) is
    # time nobody can prove; it is not charged, but admins can see how much there is.
    noticed_gone_at: Mapped[datetime | None] = mapped_column(TZ, nullable=True)
    source: Mapped[str] = mapped_column(Text, nullable=False, server_default="collector")
    created_at: Mapped[datetime] = mapped_column(TZ, nullable=False, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(TZ, nullable=False, server_default=func.now())

    __table_args__ = (
        UniqueConstraint("pod_uid", "started_at"),
        CheckConstraint("ended_at IS NULL OR ended_at >= started_at", name="ends_after_start"),
        CheckConstraint(
            "cpu_millicores >= 0 AND memory_bytes >= 0 AND gpu_count >= 0", name="non_negative"
        ),
        # One user's windowed usage is one index range scan: username = u AND end > t - W.
        # INCLUDE makes it index-only for the columns the decision reads.
        Index(
            "ix_segments_user_end",
            "username",
            SEGMENT_END,
            postgresql_include=[
                "started_at",
                "servername",
                "cpu_millicores",
                "memory_bytes",
                "gpu_count",
                "ended_at",
                "extended",
            ],
        ),
        # The all-users report: every segment that ends inside the window.
        Index("ix_segments_end", SEGMENT_END),
        Index("ix_segments_open_pod", "pod_uid", postgresql_where=text("ended_at IS NULL")),
        {"postgresql_partition_by": "RANGE (started_at)"},
    )


class OomKill(Base):
    """A container terminated with reason OOMKilled, recorded once each.

    Users see when their server ran out of memory, not only how much quota it used; the
    reason is the container's ``lastState.terminated.reason``
    (https://kubernetes.io/docs/tasks/configure-pod-container/assign-memory-resource/#exceed-a-containers-memory-limit).
    """

    __tablename__ = "oom_kills"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    pod_uid: Mapped[str] = mapped_column(Text, nullable=False)
    namespace: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    pod_name: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    container_name: Mapped[str] = mapped_column(Text, nullable=False)
    username: Mapped[str] = mapped_column(Text, nullable=False)
    servername: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    killed_at: Mapped[datetime] = mapped_column(TZ, nullable=False)
    restart_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    memory_limit_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    recorded_at: Mapped[datetime] = mapped_column(TZ, nullable=False, server_default=func.now())

    __table_args__ = (
        UniqueConstraint("pod_uid", "container_name", "killed_at"),
        Index("ix_oom_kills_user_killed", "username", "killed_at"),
    )


class Decision(Base):
    """Every denial, and optionally every decision: the admin's rejection log.

    Admins read it to see who was refused, when and why (``quota-ledger decisions``).
    """

    __tablename__ = "decisions"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    decided_at: Mapped[datetime] = mapped_column(TZ, nullable=False)
    username: Mapped[str] = mapped_column(Text, nullable=False)
    servername: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    # spawn | enforce | cli | api
    source: Mapped[str] = mapped_column(Text, nullable=False)
    # allowed | denied | error_allowed | error_denied
    outcome: Mapped[str] = mapped_column(Text, nullable=False)
    # budget:memory | zero_limit:gpu | running:gpu | unlisted | timeout | ledger_error | ok
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    message: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    # the requested server, base units: {"cpu": 2000, "memory": 4294967296, "gpu": 0}
    request: Mapped[dict] = mapped_column(JSONB, nullable=False, server_default=text("'{}'::jsonb"))
    groups: Mapped[list] = mapped_column(JSONB, nullable=False, server_default=text("'[]'::jsonb"))
    # per-resource figures as the decision's JSON form
    detail: Mapped[dict] = mapped_column(JSONB, nullable=False, server_default=text("'{}'::jsonb"))
    retry_at: Mapped[datetime | None] = mapped_column(TZ, nullable=True)
    latency_ms: Mapped[float | None] = mapped_column(nullable=True)

    __table_args__ = (
        Index("ix_decisions_decided_at", "decided_at"),
        Index("ix_decisions_user_decided", "username", "decided_at"),
    )


class Lease(Base):
    """Capacity a spawn holds until the collector records its server (migration 0007,
    ledger/store/leases.py)."""

    __tablename__ = "leases"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    username: Mapped[str] = mapped_column(Text, nullable=False)
    servername: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    pools: Mapped[list] = mapped_column(ARRAY(Text), nullable=False, server_default="{}")
    cpu_millicores: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    memory_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    gpu_count: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    extended: Mapped[dict] = mapped_column(
        JSONB, nullable=False, server_default=text("'{}'::jsonb")
    )
    taken_at: Mapped[datetime] = mapped_column(TZ, nullable=False)
    expires_at: Mapped[datetime] = mapped_column(TZ, nullable=False)

    __table_args__ = (
        UniqueConstraint("username", "servername"),
        CheckConstraint("expires_at > taken_at", name="expires_after_taken"),
        Index("ix_leases_expires_at", "expires_at"),
    )


class EnforcementAction(Base):
    """What the enforcer did: a warning at a threshold, a stop, or a failed stop."""

    __tablename__ = "enforcement_actions"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    acted_at: Mapped[datetime] = mapped_column(TZ, nullable=False)
    username: Mapped[str] = mapped_column(Text, nullable=False)
    servername: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    # warn | under_quota (an over-quota episode ended) | stop | stop_failed | stop_skipped
    action: Mapped[str] = mapped_column(Text, nullable=False)
    resource: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    threshold_percent: Mapped[int | None] = mapped_column(Integer, nullable=True)
    used_hours: Mapped[float | None] = mapped_column(nullable=True)
    limit_hours: Mapped[float | None] = mapped_column(nullable=True)
    message: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    dry_run: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    detail: Mapped[dict] = mapped_column(JSONB, nullable=False, server_default=text("'{}'::jsonb"))

    __table_args__ = (
        Index("ix_enforcement_actions_acted_at", "acted_at"),
        Index("ix_enforcement_actions_user_acted", "username", "acted_at"),
    )


class CollectorHeartbeat(Base):
    """One row per collector process: what the admin page shows as collector health."""

    __tablename__ = "collector_heartbeats"

    collector_id: Mapped[str] = mapped_column(Text, primary_key=True)
    hostname: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    version: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    started_at: Mapped[datetime] = mapped_column(TZ, nullable=False)
    last_heartbeat_at: Mapped[datetime] = mapped_column(TZ, nullable=False)
    last_event_at: Mapped[datetime | None] = mapped_column(TZ, nullable=True)
    last_relist_at: Mapped[datetime | None] = mapped_column(TZ, nullable=True)
    events_total: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    pods_skipped_total: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    buffer_depth: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    live_pods: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    detail: Mapped[dict] = mapped_column(JSONB, nullable=False, server_default=text("'{}'::jsonb"))


class UserGroup(Base):
    """Which JupyterHub groups a user was in when last seen (hook, enforcer, groups file)."""

    __tablename__ = "user_groups"

    username: Mapped[str] = mapped_column(Text, primary_key=True)
    group_name: Mapped[str] = mapped_column(Text, primary_key=True)
    synced_at: Mapped[datetime] = mapped_column(TZ, nullable=False)

    __table_args__ = (Index("ix_user_groups_group", "group_name"),)
