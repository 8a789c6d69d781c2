"""JupyterHub integration: the pre-spawn quota check, its progress line and denial page.

In ``jupyterhub_config.py`` (or z2jh ``hub.extraConfig``), after any ``pre_spawn_hook``
of your own::

    from ledger.hub import install_quota_hook
    install_quota_hook(c)  # QUOTA_LEDGER_DB_URL, QUOTA_LEDGER_CONFIG from the environment

and, for the quota page and the enforcer as hub-managed services::

    from ledger.hub import install_quota_services
    install_quota_services(c)  # appends to c.JupyterHub.services / load_roles

See docs/hub.md. The enforcer (``quota-ledger enforce``) lives in ``ledger.enforcer.enforcer``.
"""

from __future__ import annotations

import inspect

from ledger.hub.hook import QuotaHook, attach_progress, class_default_hook, quota_error
from ledger.hub.pages import TEMPLATE_DIR, add_template_dir
from ledger.hub.services import install_quota_services

__all__ = [
    "ChainedHook",
    "ChainedPostStop",
    "QuotaHook",
    "add_template_dir",
    "attach_progress",
    "install_quota_hook",
    "install_quota_services",
    "quota_error",
]


def _configured_hooks(c) -> dict[str, object]:
    """Sections of the config that already set ``pre_spawn_hook`` (Spawner, KubeSpawner, …).

    traitlets gives a subclass's section precedence over ``c.Spawner``, so a hook set on
    ``c.KubeSpawner`` would silently replace one on ``c.Spawner``: wrap every one of them.
    """
    found = {}
    for section, values in c.items():
        if section[:1].isupper() and hasattr(values, "keys") and "pre_spawn_hook" in values:
            found[section] = values["pre_spawn_hook"]
    return found


def install_quota_hook(
    c,
    *,
    db_url: str | None = None,
    policy_path: str | None = None,
    timeout_seconds: float = 2.0,
    quota_page_url: str | None = None,
    record: str = "all",
    record_usage: bool = False,
    record_usage_heartbeat_seconds: float = 30.0,
    denial_page: bool = True,
    hub_pages: bool = True,
    summary_cache_seconds: float = 30.0,
    form_choices=None,
    disable_refused_choices: bool = False,
) -> QuotaHook:
    """Install the quota check as ``pre_spawn_hook`` on config ``c``; returns the hook.

    An existing ``pre_spawn_hook`` runs first (then the quota check): it may still change
    the request. ``db_url`` defaults to ``$QUOTA_LEDGER_DB_URL``, ``policy_path`` to
    ``$QUOTA_LEDGER_CONFIG``; ``record="denials"`` logs only refusals and errors.

    ``record_usage=True``: the hub records the usage of servers no collector sees (any
    spawner but KubeSpawner and DockerSpawner) — see ledger/hub/recorder.py, docs/docker.md.
    ``denial_page`` adds our templates (the friendly refusal page) to the hub's
    ``template_paths``, after the operator's own (``ledger.hub.pages``).

    ``hub_pages`` (needs ``denial_page``: the same template directory) adds the user's quota
    summary to the hub's header and home page (cached ``summary_cache_seconds`` per user)
    and a quota note to every choice of the server-options form: KubeSpawner's
    ``profile_list``, and the fields of any ``options_form`` that ``form_choices`` describes
    (``{"size": {"small": {"mem_guarantee": "2G", "cpu_guarantee": 1}}}``: field → value →
    trait overrides, or a callable of the spawner returning that). Refused choices are
    marked; ``disable_refused_choices=True`` also disables them (``ledger.hub.summary``).
    """
    options = dict(
        db_url=db_url,
        policy_path=policy_path,
        timeout_seconds=timeout_seconds,
        quota_page_url=quota_page_url,
        record=record,
    )
    existing = _configured_hooks(c)
    existing.setdefault("Spawner", None)
    existing = {s: _unwrap(h) for s, h in existing.items()}
    hook = QuotaHook(previous=existing.pop("Spawner"), **options)
    c.Spawner.pre_spawn_hook = hook
    _install_post_stop(c, hook)
    if record_usage:
        _install_recorder(c, hook, record_usage_heartbeat_seconds)
    for section, previous in existing.items():
        # one hook (one engine, one policy watcher); each section keeps its own earlier hook
        c[section]["pre_spawn_hook"] = ChainedHook(previous, hook)
    if denial_page:
        variables = {"quota_denial_of": hook.denial_of}
        if hub_pages:
            from ledger.hub.summary import HubQuotaPages  # jinja2: only inside a hub

            hook.pages = HubQuotaPages(
                hook,
                cache_seconds=summary_cache_seconds,
                disable_refused=disable_refused_choices,
                form_choices=form_choices,
            )
            variables["quota_summary"] = hook.pages
        add_template_dir(c, TEMPLATE_DIR, variables)
    return hook


class ChainedHook:
    """``previous(spawner)`` then the quota check, for a spawner-class config section."""

    def __init__(self, previous, hook: QuotaHook):
        self.previous, self.hook = previous, hook

    def __deepcopy__(self, memo):  # see QuotaHook.__deepcopy__
        return self

    async def __call__(self, spawner) -> None:
        if self.previous is not None:
            result = self.previous(spawner)
            if inspect.isawaitable(result):
                await result
        await self.hook.check(spawner)


def _install_recorder(c, hook: QuotaHook, heartbeat_seconds: float) -> None:
    from ledger.hub.recorder import HubRecorder

    hook.recorder = HubRecorder(hook, heartbeat_interval_seconds=heartbeat_seconds)
    hook.recorder.ensure_running()  # the hub loads its config inside its running event loop


def _install_post_stop(c, hook: QuotaHook) -> None:
    """``post_stop_hook`` on every section that sets one (as for ``pre_spawn_hook``) and on
    ``c.Spawner``: the quota hook's :meth:`QuotaHook.stopped` after the operator's own."""
    for section, values in list(c.items()):
        if section[:1].isupper() and hasattr(values, "keys") and "post_stop_hook" in values:
            if section != "Spawner":
                c[section]["post_stop_hook"] = ChainedPostStop(
                    _unwrap_stop(values["post_stop_hook"]), hook
                )
    previous = _unwrap_stop(c.Spawner.post_stop_hook if "post_stop_hook" in c.Spawner else None)
    c.Spawner.post_stop_hook = ChainedPostStop(previous, hook)


class ChainedPostStop:
    """``previous(spawner)`` then the quota hook's ``stopped``, as ``post_stop_hook``."""

    def __init__(self, previous, hook: QuotaHook) -> None:
        self.previous, self.hook = previous, hook

    def __deepcopy__(self, memo):  # see QuotaHook.__deepcopy__
        return self

    async def __call__(self, spawner) -> None:
        try:
            previous = self.previous or class_default_hook(spawner, "post_stop_hook")
            if previous is not None:
                result = previous(spawner)
                if inspect.isawaitable(result):
                    await result
        finally:
            await self.hook.stopped(spawner)


def _unwrap_stop(hook):
    while isinstance(hook, ChainedPostStop):
        hook = hook.previous
    return hook


def _unwrap(hook):
    """The user's own hook under an earlier install (installing twice keeps one check)."""
    while isinstance(hook, (QuotaHook, ChainedHook)):
        hook = hook.previous
    return hook
