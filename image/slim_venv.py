"""Shrink the image's virtualenv to what `quota-ledger collect|serve|enforce|migrate` run.

Run by the Dockerfile's builder stage with the virtualenv's own Python:
``/opt/venv/bin/python image/slim_venv.py /opt/venv``. Each step removes only what no
command in the image reads at run time; tests/test_image.py runs every chart command in the
result.

1. Files nothing imports: type stubs (``*.pyi``), packages' own test suites, and
   ``share/jupyterhub`` (the hub's pages and JavaScript, 63 MB; the web service serves
   ``ledger/web/static``, and ``jupyterhub.services.auth`` reads none of them).
2. The Kubernetes API groups the collector never calls. ``kubernetes_asyncio.client``
   imports every generated API class at import time; the collector uses ``CoreV1Api`` only
   (pods, listed and watched as raw JSON). The modules of the other groups are deleted and
   their import lines dropped from the two ``__init__`` modules that name them, so
   ``from kubernetes_asyncio import client`` still works and ``client.AppsV1Api`` and the
   like are simply absent. The models stay: the client's deserializer looks them up by name.
3. Debug symbols of compiled extensions (``strip --strip-unneeded`` keeps the dynamic symbol
   table the interpreter loads them by): wheels ship them, about 28 MB here.
4. Byte-code only for what runs. pip compiles every module it installs; the root filesystem is
   read-only at run time (no cache can be written there), so a module without its ``.pyc``
   is compiled in memory at each start. All byte-code is dropped, then our own packages are
   compiled whole and the third-party modules that the commands import are compiled by
   importing them. A module left out costs milliseconds at start, never a failure.
"""

from __future__ import annotations

import compileall
import shutil
import subprocess
import sys
from pathlib import Path

# CoreV1Api: the collector's pods. CoordinationV1Api: kubernetes_asyncio.leaderelection's
# lease lock, kept importable. VersionApi: the API server's version (`kubectl version`).
KUBERNETES_APIS_KEPT = {"core_v1_api", "coordination_v1_api", "version_api"}

# Imported inside functions by the commands (so not reached by importing our modules).
# Missing ones belong to an extra this image was built without and are skipped.
IMPORTED_AT_RUN_TIME = [
    "kubernetes_asyncio",
    "kubernetes_asyncio.client",
    "kubernetes_asyncio.config",
    "kubernetes_asyncio.watch",
    "apscheduler.schedulers.asyncio",
    "apscheduler.triggers.interval",
    "aiohttp.web",
    "sqlalchemy.dialects.postgresql.asyncpg",
    "sqlalchemy.ext.asyncio",
    "asyncpg",
    "alembic.command",
    "alembic.config",
    "alembic.runtime.migration",
    "alembic.script",
    "alembic.operations",
    "jupyterhub.services.auth",
    "tornado.web",
    "tornado.httpserver",
    "httpx",
    "rich.console",
    "rich.table",
    "rich.text",
    "yaml",
    "prometheus_client",
]

# Our own modules not to import while compiling (they still get byte-code, from compileall):
# the hub hook runs inside JupyterHub, not in this image; `__main__` modules run a command;
# the migrations run only inside alembic's environment.
NOT_IMPORTED = ("ledger.hub", "ledger.migrations", "collector.__main__", "ledger.__main__")

IMPORT_ALL = """
import importlib, pkgutil, sys
skip, extra = sys.argv[1].split(","), sys.argv[2].split(",")
names = list(extra)
for top in ("ledger", "collector"):
    package = importlib.import_module(top)
    names.append(top)
    for info in pkgutil.walk_packages(package.__path__, top + "."):
        if not info.name.startswith(tuple(skip)):
            names.append(info.name)
for name in names:
    try:
        importlib.import_module(name)
    except ImportError as exc:  # an extra this image does not carry
        print(f"not compiled: {name} ({exc})")
"""


def site_packages(venv: Path) -> Path:
    (found,) = venv.glob("lib/python3*/site-packages")
    return found


def remove_unread_files(venv: Path, site: Path) -> None:
    shutil.rmtree(venv / "share" / "jupyterhub", ignore_errors=True)
    for stub in site.rglob("*.pyi"):
        stub.unlink()
    for suite in [*site.glob("*/tests"), *site.glob("*/test"), *site.glob("*/*/tests")]:
        if suite.is_dir():
            shutil.rmtree(suite)
    kubernetes = site / "kubernetes_asyncio"
    if kubernetes.is_dir():
        shutil.rmtree(kubernetes / "e2e_test", ignore_errors=True)
        for test in [*kubernetes.rglob("*_test.py"), *kubernetes.rglob("test_*.py")]:
            test.unlink()


def remove_unused_kubernetes_apis(site: Path) -> None:
    api = site / "kubernetes_asyncio" / "client" / "api"
    if not api.is_dir():
        return
    dropped = {path.stem for path in api.glob("*_api.py")} - KUBERNETES_APIS_KEPT
    assert KUBERNETES_APIS_KEPT <= {path.stem for path in api.glob("*_api.py")}, "API renamed"
    for name in dropped:
        (api / f"{name}.py").unlink()
    prefixes = tuple(f"from kubernetes_asyncio.client.api.{name} import " for name in dropped)
    for init in (api / "__init__.py", api.parent / "__init__.py"):
        lines = init.read_text().splitlines(keepends=True)
        init.write_text("".join(line for line in lines if not line.startswith(prefixes)))


def strip_extensions(site: Path) -> None:
    extensions = [str(path) for path in site.rglob("*.so")]
    if extensions:
        subprocess.run(["strip", "--strip-unneeded", *extensions], check=True)


def compile_what_runs(venv: Path, site: Path) -> None:
    for cache in list(site.rglob("__pycache__")):
        shutil.rmtree(cache)
    for ours in ("ledger", "collector"):
        if (site / ours).is_dir():
            assert compileall.compile_dir(site / ours, quiet=1), ours
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-c", IMPORT_ALL, ",".join(NOT_IMPORTED), ",".join(IMPORTED_AT_RUN_TIME)],
        check=True,
        env={"PATH": f"{venv / 'bin'}:/usr/bin:/bin"},  # byte-code writing left on
    )


def main(venv: Path) -> None:
    site = site_packages(venv)
    remove_unread_files(venv, site)
    remove_unused_kubernetes_apis(site)
    strip_extensions(site)
    compile_what_runs(venv, site)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
