"""The collector's settings file (YAML), validated strictly: unknown keys are errors.

Durations are written in the one syntax of ``ledger.core.durations`` (``30s``, ``10m``,
``2h``, ``400d``, ``200ms``, ``1d12h``); a bare number is seconds here, so files written
before units existed keep working. ``retention: 0`` or ``null`` keeps rows forever. Every
error names the file, the key and what would be valid.

What is charged (charge basis, extended resources) is not here: it is the policy's
``accounting:`` block, which the hub hook reads too (``ledger.core.accounting``).
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ledger.core.durations import DurationError, duration_seconds

JUPYTERHUB_SELECTOR = "component=singleuser-server"  # the Zero-to-JupyterHub default
USERNAME_ANNOTATION = "hub.jupyter.org/username"
SERVERNAME_ANNOTATION = "hub.jupyter.org/servername"
# Keys that moved to the policy's accounting: block; refused with where to write them, so the
# collector and the hub hook can never charge on two different bases.
MOVED_TO_POLICY = ("charge_basis", "resources")


class SettingsError(ValueError):
    """The settings file is missing, not YAML, or not valid; the message says what to fix."""


def parse_duration_seconds(value: object) -> float:
    """A settings duration → seconds (a bare number is seconds)."""
    try:
        return float(duration_seconds(value, bare_seconds=True))
    except DurationError as exc:
        raise ValueError(str(exc)) from None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Workload(_Strict):
    """Pods to charge and where their owner's identity comes from (annotation or label)."""

    name: str = Field(min_length=1)
    namespaces: list[str] | None = None  # None: the top-level `namespaces`
    label_selector: str = Field(min_length=1)
    username_annotation: str | None = None
    username_label: str | None = None
    servername_annotation: str | None = None
    servername_label: str | None = None

    @model_validator(mode="after")
    def _one_identity_source(self) -> Workload:
        if bool(self.username_annotation) == bool(self.username_label):
            raise ValueError("give exactly one of username_annotation or username_label")
        if self.servername_annotation and self.servername_label:
            raise ValueError("give at most one of servername_annotation or servername_label")
        return self


def jupyterhub_workload(label_selector: str) -> Workload:
    return Workload(
        name="jupyterhub",
        label_selector=label_selector,
        username_annotation=USERNAME_ANNOTATION,
        servername_annotation=SERVERNAME_ANNOTATION,
    )


class Settings(_Strict):
    namespaces: list[str] = []  # empty: all namespaces
    label_selector: str = JUPYTERHUB_SELECTOR
    workloads: list[Workload] = []
    heartbeat_interval: float = 30.0  # seconds
    relist_interval: float = 600.0
    retention: float | None = 400 * 86400.0  # None: keep forever
    retention_check_interval: float = 3600.0
    buffer_max_events: int = Field(default=100_000, ge=1)
    write_batch_max: int = Field(default=2000, ge=1)
    watch_timeout: float = 300.0  # server-side timeoutSeconds
    list_page_size: int = Field(default=500, ge=1)
    backoff_max: float = 30.0  # reconnect / retry backoff cap
    shutdown_flush_timeout: float = 20.0

    @field_validator(
        "heartbeat_interval",
        "relist_interval",
        "retention_check_interval",
        "watch_timeout",
        "backoff_max",
        "shutdown_flush_timeout",
        mode="before",
    )
    @classmethod
    def _duration(cls, value: object) -> float:
        seconds = parse_duration_seconds(value)
        if seconds <= 0:
            raise ValueError("must be more than 0 seconds")
        return seconds

    @field_validator("retention", mode="before")
    @classmethod
    def _retention(cls, value: object) -> float | None:
        if value is None:
            return None
        seconds = parse_duration_seconds(value)
        return seconds or None

    @model_validator(mode="after")
    def _unique_workloads(self) -> Settings:
        names = [w.name for w in self.all_workloads()]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"workload names must be unique; repeated: {duplicated}")
        return self

    def all_workloads(self) -> list[Workload]:
        """The JupyterHub servers first, then the configured extra workloads."""
        return [jupyterhub_workload(self.label_selector), *self.workloads]

    def namespaces_of(self, workload: Workload) -> list[str | None]:
        """The namespaces to watch for `workload`; [None] means all namespaces."""
        chosen = self.namespaces if workload.namespaces is None else workload.namespaces
        return list(chosen) or [None]


def parse_settings(data: object, source: str = "<settings>") -> Settings:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SettingsError(f"{source}: the settings must be a mapping of keys to values")
    moved = [key for key in MOVED_TO_POLICY if key in data]
    if moved:
        lines = [f"{source}: invalid collector settings:"]
        lines += [
            f"  {key}: moved to the quota policy (the file of --config / $QUOTA_LEDGER_CONFIG), "
            f"where the hub hook reads it too; write it there as accounting: "
            f"{{{key}: {_flow(data[key])}}} and remove it here"
            for key in moved
        ]
        raise SettingsError("\n".join(lines))
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        lines = [f"{source}: invalid collector settings:"]
        for error in exc.errors():
            key = ".".join(str(p) for p in error["loc"]) or "(top level)"
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                valid = ", ".join(sorted(_fields_at(error["loc"])))
                message = f"unknown key; valid keys here: {valid}"
            lines.append(f"  {key}: {message}")
        raise SettingsError("\n".join(lines)) from None


def _flow(value: object) -> str:
    """A settings value as one line of YAML flow style, for messages."""
    return (
        yaml.safe_dump(value, default_flow_style=True, width=10**6)
        .strip()
        .removesuffix("...")
        .strip()
    )


def _fields_at(loc: tuple) -> set[str]:
    return (
        set(Workload.model_fields) if loc and loc[0] == "workloads" else set(Settings.model_fields)
    )


def load_settings(path: str | Path | None) -> Settings:
    if path is None:
        return Settings()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"{path}: cannot read the settings file: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SettingsError(f"{path}: not valid YAML: {exc}") from None
    return parse_settings(data, str(path))
