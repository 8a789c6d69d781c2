"""A real JupyterHub for the demo (and the end-to-end tests), wired to the quota ledger.

- :func:`write_hub_config` writes ``jupyterhub_config.py``: the npm configurable-http-proxy
  (:func:`streaming_proxy`; the pure-pip one holds the spawn progress stream back until the
  spawn is over, so nobody would see the quota line),
  DummyAuthenticator with one shared password, the quota hook, the enforcer's least-privilege
  role, named servers, and :class:`DemoSpawner`.
- :class:`DemoSpawner` runs a real local single-user server (``SimpleLocalProcessSpawner``,
  ``--allow-root`` as root) and, for the same lifetime, a pod in the demo's fake Kubernetes
  API server, so the collector records the usage as it would on a cluster. The size comes
  from the spawn form (like KubeSpawner profiles: it sets ``mem_guarantee``,
  ``cpu_guarantee`` and ``extra_resource_guarantees`` before the quota hook runs).
- The fake API server is read-only over HTTP; :func:`start_pod_control` serves the two writes
  the spawner needs (create a running pod, stop it) from the process that owns the
  ``FakeApiServer``.
- :func:`start_hub` / :func:`stop_hub` run ``jupyterhub`` as a subprocess.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

SIZES = {  # name -> (cpu cores, memory, GPUs, label)
    "small": (1, "1G", 0, "Small: 1 CPU, 1 GiB"),
    "medium": (2, "4G", 0, "Medium: 2 CPUs, 4 GiB"),
    "large": (4, "16G", 0, "Large: 4 CPUs, 16 GiB"),
    "gpu": (4, "16G", 1, "GPU: 4 CPUs, 16 GiB, 1 GPU"),
}
DEFAULT_SIZE = "small"


ROOT = Path(__file__).resolve().parents[1]
PROXY_ENV = "QUOTA_LEDGER_PROXY"
# `make` installs it here (npm install --prefix .npm configurable-http-proxy@5)
NPM_PROXY = ROOT / ".npm" / "node_modules" / ".bin" / "configurable-http-proxy"


def streaming_proxy() -> str:
    """The npm configurable-http-proxy: ``$QUOTA_LEDGER_PROXY``, the checkout's ``.npm``,
    else one on PATH that is not the PyPI package's (which buffers server-sent events)."""
    explicit = os.environ.get(PROXY_ENV)
    if explicit:
        return explicit
    if NPM_PROXY.exists():
        return str(NPM_PROXY)
    venv_bin = Path(sys.executable).parent
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        candidate = Path(directory) / "configurable-http-proxy"
        if candidate.exists() and candidate.parent != venv_bin:
            return str(candidate)
    raise RuntimeError(
        f"the npm configurable-http-proxy is not installed (run `make proxy`, or set "
        f"${PROXY_ENV}); the PyPI one holds back the spawn progress stream"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the spawner ---------------------------------------------------------------------------

try:
    from jupyterhub.spawner import SimpleLocalProcessSpawner
    from traitlets import Any, Float, Unicode
except ImportError:  # pragma: no cover - only the hub process needs this part
    SimpleLocalProcessSpawner = object
else:

    class DemoSpawner(SimpleLocalProcessSpawner):
        """A local single-user server with a matching pod in the demo's fake cluster."""

        pod_control_url = Unicode("", config=True, help="start_pod_control URL ('' = no pods)")
        pod_name = Unicode("")
        start_delay_seconds = Float(
            3.0, config=True, help="pretend the image takes this long to pull (shows progress)"
        )

        def _options_form_default(self):
            options = "".join(
                f'<option value="{name}">{label}</option>'
                for name, (_, _, _, label) in SIZES.items()
            )
            return f'<label for="size">Server size</label><select name="size">{options}</select>'

        def options_from_form(self, formdata):
            return {"size": (formdata.get("size") or [DEFAULT_SIZE])[0]}

        def _apply_size(self) -> None:
            # what a KubeSpawner profile's kubespawner_override does, before pre_spawn_hook
            size = (self.user_options or {}).get("size", DEFAULT_SIZE)
            cpu, memory, gpu, _ = SIZES.get(size, SIZES[DEFAULT_SIZE])
            self.cpu_guarantee, self.mem_guarantee = float(cpu), memory
            self.extra_resource_guarantees = {"nvidia.com/gpu": str(gpu)} if gpu else {}

        def run_pre_spawn_hook(self):
            self._apply_size()
            return super().run_pre_spawn_hook()

        def get_args(self):
            args = super().get_args()
            if os.getuid() == 0:
                args.append("--allow-root")
            return args

        def get_state(self):
            state = super().get_state()
            if self.pod_name:
                state["pod_name"] = self.pod_name
            return state

        def load_state(self, state):
            super().load_state(state)
            self.pod_name = state.get("pod_name", "")

        def clear_state(self):
            super().clear_state()
            self.pod_name = ""

        async def progress(self):
            yield {"progress": 20, "message": "Pulling the demo image…"}
            await asyncio.sleep(self.start_delay_seconds)
            yield {"progress": 60, "message": "Starting the single-user server…"}

        async def start(self):
            await asyncio.sleep(self.start_delay_seconds)
            result = await super().start()
            if self.pod_control_url:
                gpu = int((getattr(self, "extra_resource_guarantees", {}) or {}).get(
                    "nvidia.com/gpu", 0))  # fmt: skip
                body = {"user": self.user.name, "server": self.name or "",
                        "cpu": str(self.cpu_guarantee), "memory": str(self.mem_guarantee),
                        "gpu": gpu}  # fmt: skip
                async with httpx.AsyncClient(timeout=10) as client:
                    r = await client.post(self.pod_control_url.rstrip("/") + "/pods", json=body)
                    r.raise_for_status()
                    self.pod_name = r.json()["name"]
            return result

        async def stop(self, now=False):
            if self.pod_control_url and self.pod_name:
                try:
                    async with httpx.AsyncClient(timeout=10) as client:
                        await client.delete(
                            f"{self.pod_control_url.rstrip('/')}/pods/{self.pod_name}"
                        )
                except httpx.HTTPError as exc:
                    self.log.warning("demo: could not delete pod %s: %s", self.pod_name, exc)
                self.pod_name = ""
            await super().stop(now=now)

    class ProfilesDemoSpawner(DemoSpawner):
        """DemoSpawner with KubeSpawner's ``profile_list`` (profiles and ``profile_options``):
        the same form field names and markup structure as KubeSpawner's ``form.html``, and
        the chosen overrides applied before ``pre_spawn_hook``. Stands in for KubeSpawner,
        which needs a Kubernetes cluster to start anything."""

        profile_list = Any([], config=True, help="KubeSpawner-style profile_list")

        def _options_form_default(self):
            import html

            from ledger.hub.choices import _initialized

            parts = ['<div class="form-group" id="kubespawner-profiles-list">']
            for p in _initialized(self, list(self.profile_list)):
                slug = html.escape(p["slug"], quote=True)
                checked = " checked" if p.get("default") else ""
                parts.append(
                    f'<label for="profile-item-{slug}" class="profile js-profile-label">'
                    f'<div class="radio"><input type="radio" name="profile" '
                    f'id="profile-item-{slug}" value="{slug}"{checked} /></div>'
                    f"<div><h3>{html.escape(p['display_name'])}</h3>"
                )
                for key, option in (p.get("profile_options") or {}).items():
                    name = f"profile-option-{slug}--{html.escape(key, quote=True)}"
                    parts.append(f'<select name="{name}" class="form-control">')
                    for value, choice in option["choices"].items():
                        selected = " selected" if choice.get("default") else ""
                        parts.append(
                            f'<option value="{html.escape(value, quote=True)}"{selected}>'
                            f"{html.escape(choice['display_name'])}</option>"
                        )
                    parts.append("</select>")
                parts.append("</div></label>")
            parts.append("</div>")
            return "".join(parts)

        def options_from_form(self, formdata):
            profile = (formdata.get("profile") or [""])[0]
            options = {"profile": profile}
            prefix = f"profile-option-{profile}--"
            for key, values in formdata.items():
                if key.startswith(prefix):
                    options[key[len(prefix) :]] = values[0]
            return options

        def _apply_size(self) -> None:
            from ledger.hub.choices import _initialized, merged

            profiles = _initialized(self, list(self.profile_list))
            wanted = (self.user_options or {}).get("profile")
            profile = next((p for p in profiles if p["slug"] == wanted), None) or next(
                p for p in profiles if p.get("default")
            )
            overrides = [profile.get("kubespawner_override") or {}]
            for key, option in (profile.get("profile_options") or {}).items():
                chosen = (self.user_options or {}).get(key)
                choice = option["choices"].get(chosen) or next(
                    c for c in option["choices"].values() if c.get("default")
                )
                overrides.append(choice.get("kubespawner_override") or {})
            for override in overrides:  # as KubeSpawner's _apply_overrides
                for name, value in override.items():
                    value = value(self) if callable(value) else value
                    current = getattr(self, name, None)
                    if isinstance(value, dict) and isinstance(current, dict):
                        value = merged(current, value)
                    setattr(self, name, value)


# --- the pod writes, served next to the FakeApiServer ----------------------------------------


async def start_pod_control(server, host: str = "127.0.0.1", port: int = 0, namespace="default"):
    """Serve POST /pods and DELETE /pods/{name} on ``server`` (a FakeApiServer); returns
    ``(url, runner)``. Stop with ``await runner.cleanup()``."""
    from aiohttp import web

    from ledger.core.times import utcnow
    from quota_ledger_demo.simulated_hub import SimulatedHub

    hub = SimulatedHub(server, namespace)

    async def create(request):
        body = await request.json()
        cpu = body.get("cpu") or "500m"
        memory = body.get("memory") or "1Gi"
        pod = hub.start(body["user"], body.get("server", ""), at=utcnow(), cpu=cpu,
                        memory=memory, gpu=int(body.get("gpu") or 0),
                        scheduled_after_seconds=0, running_after_seconds=0)  # fmt: skip
        return web.json_response({"name": pod["metadata"]["name"]})

    async def delete(request):
        name = request.match_info["name"]
        try:
            hub.stop(name, utcnow())
        except KeyError:
            return web.json_response({"gone": name}, status=404)
        return web.json_response({"stopped": name})

    app = web.Application()
    app.router.add_post("/pods", create)
    app.router.add_delete("/pods/{name}", delete)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]
    return f"http://{host}:{bound}", runner


# --- config and process ------------------------------------------------------------------------

ENFORCER_SCOPES = ["list:users", "read:users:groups", "read:servers", "delete:servers"]


def write_hub_config(
    directory, *, db_url: str, policy_path, fake_api_url: str | None, port: int,
    password: str = "quota-demo", users: dict[str, list[str]] | None = None,
    enforcer_token: str = "quota-enforcer-demo-token", admin_token: str | None = None,
    run_enforcer: bool = False, enforcer_interval_seconds: float = 30.0, extra_config: str = "",
    hook_args: str = "", quota_hook: bool = True, enforcer_service: str = "quota-enforcer",
) -> Path:  # fmt: skip
    """Write ``jupyterhub_config.py`` into ``directory`` and return its path.

    ``fake_api_url`` is the URL of :func:`start_pod_control` (None: no pods). ``users`` maps
    demo users to their groups (default: alice→regular, bob→power, carol→gpu-dev).
    ``run_enforcer`` adds ``quota-ledger enforce`` as a hub-managed service; ``extra_config``
    is appended verbatim (Python). ``quota_hook=False`` leaves the hook out (the caller's
    ``extra_config`` installs it); ``enforcer_service`` names the token-only enforcer service.
    """
    directory = Path(directory).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    users = users if users is not None else {"alice": ["regular"], "bob": ["power"],
                                             "carol": ["gpu-dev"]}  # fmt: skip
    groups: dict[str, list[str]] = {}
    for user, names in users.items():
        for g in names:
            groups.setdefault(g, []).append(user)
    bin_dir = Path(sys.executable).parent
    service = {"name": enforcer_service, "api_token": enforcer_token}
    if run_enforcer:
        service["command"] = [
            str(bin_dir / "quota-ledger"), "enforce", "--db", db_url, "--config",
            str(policy_path), "--interval", str(enforcer_interval_seconds), "--log-level", "info",
        ]  # fmt: skip
    services = [service]
    roles = [{"name": enforcer_service, "scopes": ENFORCER_SCOPES, "services": [enforcer_service]}]
    if admin_token:
        services.append({"name": "test-admin", "api_token": admin_token})
        roles.append({"name": "test-admin", "scopes": ["admin:users", "admin:servers",
                      "admin:groups", "tokens", "read:metrics"], "services": ["test-admin"]})  # fmt: skip
    settings = {
        "port": port,
        "hub_port": free_port(),
        "proxy_api_port": free_port(),
        "proxy": streaming_proxy(),
        "password": password,
        "users": sorted(users),
        "groups": {g: {"users": sorted(u)} for g, u in groups.items()},
        "services": services,
        "roles": roles,
        "pod_control_url": fake_api_url or "",
        "dir": str(directory),
        "path": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "singleuser": str(bin_dir / "jupyterhub-singleuser"),
    }
    hook = (
        "from ledger.hub import install_quota_hook\n"
        f"install_quota_hook(c, db_url={db_url!r}, policy_path={str(policy_path)!r}{hook_args})"
        if quota_hook
        else ""
    )
    text = f"""# Written by quota_ledger_demo.hub.write_hub_config: a demo hub wired to quota-ledger.
import asyncio
import json
settings = json.loads({json.dumps(json.dumps(settings))})
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = settings["port"]
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = settings["hub_port"]
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{{settings['proxy_api_port']}}"
c.ConfigurableHTTPProxy.command = [settings["proxy"]]
c.JupyterHub.db_url = "sqlite:///" + settings["dir"] + "/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = settings["dir"] + "/jupyterhub_cookie_secret"
c.JupyterHub.pid_file = settings["dir"] + "/jupyterhub.pid"
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = settings["password"]
c.Authenticator.allowed_users = set(settings["users"])
c.Authenticator.admin_users = {{"admin"}}
c.JupyterHub.load_groups = settings["groups"]
c.JupyterHub.services = settings["services"]
c.JupyterHub.load_roles = settings["roles"]
c.JupyterHub.allow_named_servers = True
c.JupyterHub.spawner_class = "quota_ledger_demo.hub.DemoSpawner"
c.DemoSpawner.pod_control_url = settings["pod_control_url"]
c.Spawner.notebook_dir = settings["dir"]
c.Spawner.default_url = "/api"  # jupyter_server only: its API answers with its version
c.Spawner.cmd = [settings["singleuser"]]
c.Spawner.env_keep = ["LANG"]
c.Spawner.environment = {{"PATH": settings["path"]}}
c.Spawner.start_timeout = 60
c.Spawner.http_timeout = 60

{hook}
{extra_config}
"""
    path = directory / "jupyterhub_config.py"
    path.write_text(text, encoding="utf-8")
    return path


def start_hub(config_path, *, log_path=None, timeout_seconds: float = 60.0) -> subprocess.Popen:
    """Start ``jupyterhub -f config_path`` and wait until it answers; returns the process."""
    config_path = Path(config_path)
    log_path = Path(log_path or config_path.parent / "jupyterhub.log")
    port = _setting(config_path, "port")
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    log_file = open(log_path, "ab")  # noqa: SIM115 - owned by the process until stop_hub
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "jupyterhub"), "-f", str(config_path)],
        cwd=config_path.parent, stdout=log_file, stderr=subprocess.STDOUT, env=env,
        start_new_session=True,
    )  # fmt: skip
    process.log_file = log_file
    deadline = time.monotonic() + timeout_seconds
    url = f"http://127.0.0.1:{port}/hub/api/"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"jupyterhub exited with {process.returncode}; see {log_path}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    stop_hub(process)
    raise RuntimeError(
        f"jupyterhub did not answer on {url} in {timeout_seconds:g} s; see {log_path}"
    )


def stop_hub(process: subprocess.Popen, timeout_seconds: float = 20.0) -> None:
    """SIGTERM the hub (it stops its servers, proxy and services), then SIGKILL the group."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_seconds)
        except subprocess.TimeoutExpired:
            pass
    try:  # anything left in the hub's process group (proxy, single-user servers)
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()
    log_file = getattr(process, "log_file", None)
    if log_file is not None:
        log_file.close()


def _setting(config_path: Path, key: str):
    for line in config_path.read_text(encoding="utf-8").splitlines():
        if line.startswith("settings = json.loads("):
            return json.loads(json.loads(line[len("settings = json.loads(") : -1]))[key]
    raise KeyError(key)
