"""Our templates on the hub's own pages, composed with the operator's.

JupyterHub looks a template up in ``c.JupyterHub.template_paths`` in order, then in its
own directory (``templates/…`` names always reach its originals):
https://jupyterhub.readthedocs.io/en/stable/howto/templates.html. A directory added here
goes after the operator's directories, so a template of theirs with the same name wins,
and ours extend ``error.html``/``page.html`` by name, so their branding stays. Values for
the templates go into ``c.JupyterHub.template_vars`` beside theirs (a callable there is
called with the current user). Set ``template_paths`` before calling this: a later
assignment replaces the list.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"


def _jupyterhub_templates() -> str | None:
    try:
        from jupyterhub._data import DATA_FILES_PATH  # JupyterHub.data_files_path's default
    except ImportError:  # pragma: no cover - the hub extra is not installed
        return None
    return str(Path(DATA_FILES_PATH) / "templates")


def add_template_dir(c, directory: str | Path, variables: Mapping[str, object] = ()) -> None:
    """Add ``directory`` to the hub's templates after the operator's, and ``variables``."""
    hub = c.JupyterHub
    paths = list(hub.template_paths) if "template_paths" in hub else []
    directory = str(directory)
    if directory not in paths:
        default = _jupyterhub_templates()
        # before JupyterHub's own directory if the operator listed it: it has a spawn.html
        where = paths.index(default) if default in paths else len(paths)
        paths.insert(where, directory)
    hub.template_paths = paths
    existing = dict(hub.template_vars) if "template_vars" in hub else {}
    hub.template_vars = {**existing, **dict(variables)}
