"""The collector's settings file (YAML), validated strictly: unknown keys are errors.

Durations accept seconds (``30``) or ``30s`` / ``10m`` / ``2h`` / ``400d``; ``retention: 0``
or ``null`` keeps rows forever. Every error names the file, the key and what would be valid.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ledger.core.resources import DEFAULT_EXTENDED_RESOURCES

JUPYTERHUB_SELECTOR = "component=singleuser-server"  # the Zero-to-JupyterHub default
USERNAME_ANNOTATION = "hub.jupyter.org/username"
SERVERNAME_ANNOTATION = "hub.jupyter.org/servername"
# Docker has labels only: the hub hook puts the same keys on DockerSpawner's containers.
DOCKER_SELECTOR = USERNAME_ANNOTATION
DOCKER_URL = "unix:///var/run/docker.sock"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


class SettingsError(ValueError):
    """The settings file is missing, not YAML, or not valid; the message says what to fix."""


def parse_duration_seconds(value: object) -> float:
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or e.g. 30s, 10m, 2h, 400d")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m[1]) * _UNIT_SECONDS[m[2]]
    else:
        raise ValueError(f"{value!r} is not a duration; write e.g. 30s, 10m, 2h, 400d or 30")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


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


def jupyterhub_workload(label_selector: str, *, from_labels: bool = False) -> Workload:
    if from_labels:
        return Workload(
            name="jupyterhub",
            label_selector=label_selector,
            username_label=USERNAME_ANNOTATION,
            servername_label=SERVERNAME_ANNOTATION,
        )
    return Workload(
        name="jupyterhub",
        label_selector=label_selector,
        username_annotation=USERNAME_ANNOTATION,
        servername_annotation=SERVERNAME_ANNOTATION,
    )


class Settings(_Strict):
    source: Literal["kubernetes", "docker"] = "kubernetes"
    namespaces: list[str] = []  # empty: all namespaces
    label_selector: str = JUPYTERHUB_SELECTOR
    # source: docker. Label filters like the Engine API's (``key`` or ``key=value``, comma
    # separated; a container must match all); workloads' label_selector reads the same way.
    docker_url: str = DOCKER_URL
    docker_label_selector: str = Field(default=DOCKER_SELECTOR, min_length=1)
    workloads: list[Workload] = []
    charge_basis: Literal["requests", "limits", "max"] = "requests"
    resources: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_EXTENDED_RESOURCES))
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

    @field_validator("resources")
    @classmethod
    def _resources(cls, value: dict[str, str]) -> dict[str, str]:
        for short in value:
            if short in {"cpu", "memory"}:
                raise ValueError(f"{short!r} is always charged; list only extended resources")
        return value

    @model_validator(mode="after")
    def _unique_workloads(self) -> Settings:
        names = [w.name for w in self.all_workloads()]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"workload names must be unique; repeated: {duplicated}")
        return self

    def all_workloads(self) -> list[Workload]:
        """The JupyterHub servers first, then the configured extra workloads."""
        if self.source == "docker":
            return [
                jupyterhub_workload(self.docker_label_selector, from_labels=True),
                *self.workloads,
            ]
        return [jupyterhub_workload(self.label_selector), *self.workloads]

    def namespaces_of(self, workload: Workload) -> list[str | None]:
        """The namespaces to watch for `workload`; [None] means all namespaces."""
        if self.source == "docker":
            return [None]  # an engine has no namespaces: one scope per workload
        chosen = self.namespaces if workload.namespaces is None else workload.namespaces
        return list(chosen) or [None]


def parse_settings(data: object, source: str = "<settings>") -> Settings:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SettingsError(f"{source}: the settings must be a mapping of keys to values")
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
