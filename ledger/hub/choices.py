"""The choices of a server-options form and the size each one would start.

KubeSpawner's ``profile_list`` (https://jupyterhub-kubespawner.readthedocs.io/en/latest/spawner.html,
``profile_list``): each profile is a choice of the form field ``profile`` (its ``slug``), and
each ``profile_options`` choice one of ``profile-option-{slug}--{option}``, as KubeSpawner's
own form names them. A choice's size is the spawner with the choice's
``kubespawner_override`` applied the way KubeSpawner applies it (``_apply_overrides``: a
callable is called with the spawner, a dict is merged into the trait's dict, ``None`` in it
removes a key; the profile first, then each option's choice, the others at their default),
charged by the same rule the hook charges a spawn with (``ledger.hub.request``,
``ledger.hub.docker_request``). Any other spawner's ``options_form``: the operator says what
each value of a field overrides (``form_choices={"size": {"small": {"mem_guarantee": "2G"}}}``,
or a callable of the spawner returning that), in the same override form.

Nothing here mutates the spawner: the overrides are laid over it (:class:`Overlay`).
"""

from __future__ import annotations

import copy
import inspect
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from ledger.core.decision import ServerRequest
from ledger.hub.docker_request import docker_spawner_request, is_docker_spawner
from ledger.hub.request import REQUEST_TRAITS, spawner_request

PROFILE_FIELD = "profile"
MAX_CHOICES = 60  # a form longer than this is annotated for its first choices only
# DockerSpawner's size traits (ledger.hub.docker_request) beside the pod ones
SIZE_TRAITS = frozenset(REQUEST_TRAITS) | {"mem_limit", "cpu_limit", "extra_host_config"}


@dataclass(frozen=True)
class Choice:
    field: str  # the form field's name
    value: str  # the value the form submits for this choice
    label: str
    overrides: tuple[Mapping, ...] = field(default_factory=tuple)  # applied in order


def merged(base: Mapping, update: Mapping) -> dict:
    """KubeSpawner's ``recursive_update`` on a copy: dicts merge, ``None`` removes a key."""
    out = copy.deepcopy(dict(base))
    for key, value in update.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


class Overlay:
    """The spawner as it would be with ``overrides`` applied; only size traits are laid
    over (a callable override of anything else is never called)."""

    def __init__(self, spawner, overrides=()):
        self._spawner = spawner
        values: dict[str, object] = {}
        for override in overrides:
            for name, value in (override or {}).items():
                if name not in SIZE_TRAITS:
                    continue
                if callable(value):
                    value = value(spawner)
                trait = _trait(spawner, name)
                if trait is not None and value is not None:  # "2G" → bytes, as setattr does
                    value = trait.validate(spawner, value)
                current = values.get(name, getattr(spawner, name, None))
                if isinstance(value, Mapping) and isinstance(current, Mapping):
                    value = merged(current, value)
                values[name] = value
        self._values = values

    def __getattr__(self, name):
        values = self.__dict__.get("_values", {})
        if name in values:
            return values[name]
        return getattr(self.__dict__["_spawner"], name)


def _trait(spawner, name: str):
    traits = getattr(spawner, "traits", None)
    if not callable(traits):
        return None
    return traits().get(name)


def request_of(spawner, policy, overrides=()) -> ServerRequest:
    """The size ``spawner`` would start with ``overrides`` applied, charged as the hook
    charges it (raises QuantityError for a size that cannot be read)."""
    overlay = Overlay(spawner, overrides)
    if is_docker_spawner(spawner):
        return docker_spawner_request(overlay, policy.accounting)
    return spawner_request(overlay, policy)


def _slug(text: str) -> str:
    # python-slugify's result for plain display names, for a spawner without KubeSpawner's
    # own _get_initialized_profile_list (which is used whenever the spawner has it)
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _initialized(spawner, profiles: list) -> list:
    own = getattr(spawner, "_get_initialized_profile_list", None)
    if callable(own):
        return own(profiles)
    profiles = copy.deepcopy(profiles)
    for profile in profiles:
        profile.setdefault("slug", _slug(str(profile.get("display_name", ""))))
        for option in (profile.get("profile_options") or {}).values():
            choices = option.get("choices") or {}
            if choices and not any(c.get("default") for c in choices.values()):
                next(iter(choices.values()))["default"] = True
    if profiles and not any(p.get("default") for p in profiles):
        profiles[0]["default"] = True
    return profiles


async def _profile_list(spawner) -> list:
    profiles = getattr(spawner, "profile_list", None)
    if callable(profiles):
        profiles = profiles(spawner)
        if inspect.isawaitable(profiles):
            profiles = await profiles
    if isinstance(profiles, Mapping):  # KubeSpawner takes a dict's values in key order
        profiles = [profiles[key] for key in sorted(profiles)]
    return _initialized(spawner, list(profiles or []))


def _default_choice(option: Mapping) -> Mapping:
    choices = option.get("choices") or {}
    return next((c for c in choices.values() if c.get("default")), {})


async def profile_choices(spawner) -> list[Choice]:
    """Every profile and every ``profile_options`` choice of a KubeSpawner-style spawner."""
    out: list[Choice] = []
    for profile in await _profile_list(spawner):
        slug = str(profile["slug"])
        base = profile.get("kubespawner_override") or {}
        options = profile.get("profile_options") or {}
        defaults = {
            k: _default_choice(o).get("kubespawner_override") or {} for k, o in options.items()
        }
        name = str(profile.get("display_name", slug))
        out.append(Choice(PROFILE_FIELD, slug, name, (base, *defaults.values())))
        for key, option in options.items():
            for value, choice in (option.get("choices") or {}).items():
                others = [v for k, v in defaults.items() if k != key]
                overrides = (base, *others, choice.get("kubespawner_override") or {})
                label = f"{name}: {choice.get('display_name', value)}"
                out.append(Choice(f"profile-option-{slug}--{key}", str(value), label, overrides))
    return out


async def form_choices_of(spawner, form_choices) -> list[Choice]:
    """The operator's ``form_choices`` (field → value → overrides), or a callable of the
    spawner returning them."""
    if callable(form_choices):
        form_choices = form_choices(spawner)
        if inspect.isawaitable(form_choices):
            form_choices = await form_choices
    out = []
    for name, values in (form_choices or {}).items():
        for value, overrides in values.items():
            out.append(Choice(str(name), str(value), str(value), (overrides or {},)))
    return out


async def choices_of(spawner, form_choices=None) -> list[Choice]:
    """The annotated choices of this spawner's form (``form_choices`` first, then any
    ``profile_list``), at most :data:`MAX_CHOICES`."""
    found = await form_choices_of(spawner, form_choices) if form_choices else []
    if getattr(spawner, "profile_list", None):
        found += await profile_choices(spawner)
    return found[:MAX_CHOICES]


def is_kubespawner(spawner) -> bool:
    return any(cls.__name__ == "KubeSpawner" for cls in type(spawner).__mro__)


async def selected_overrides(spawner) -> tuple[Mapping, ...]:
    """The overrides KubeSpawner will apply for ``spawner.user_options``: it applies them in
    ``load_user_options``, called from ``_start``, i.e. *after* ``pre_spawn_hook``
    (kubespawner/spawner.py), so the hook lays them over the traits itself. Applying them to
    traits that already carry them changes nothing (same values, dicts merged again)."""
    profiles = await _profile_list(spawner)
    if not profiles:
        return ()
    options = getattr(spawner, "user_options", None) or {}
    slug = options.get(PROFILE_FIELD)
    if slug:
        profile = next((p for p in profiles if p["slug"] == slug), None)
    else:
        profile = next((p for p in profiles if p.get("default")), None)
    if profile is None:
        return ()  # KubeSpawner refuses an unknown profile itself
    overrides = [profile.get("kubespawner_override") or {}]
    for key, option in (profile.get("profile_options") or {}).items():
        if options.get(f"{key}--unlisted-choice"):
            continue  # free text, formatted into the override by KubeSpawner; not sized here
        chosen = options.get(key)
        choice = (option.get("choices") or {}).get(chosen) if chosen else _default_choice(option)
        overrides.append((choice or {}).get("kubespawner_override") or {})
    return tuple(overrides)
