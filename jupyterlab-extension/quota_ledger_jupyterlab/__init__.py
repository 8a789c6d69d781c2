"""quota-ledger in JupyterLab: the status-bar item (a prebuilt JupyterLab extension) and the
small server extension it reads from (``<base_url>quota-ledger/me``).

The server extension asks the quota service's ``GET /api/v1/me`` with the single-user
server's own ``$JUPYTERHUB_API_TOKEN``, so the browser never holds a token and the service
answers for this server's owner only. The token needs ``access:services!service=quota``
(docs/jupyterlab.md).
"""

from __future__ import annotations


def _jupyter_labextension_paths():
    return [{"src": "labextension", "dest": "quota-ledger-jupyterlab"}]


def _jupyter_server_extension_points():
    return [{"module": "quota_ledger_jupyterlab"}]


def _load_jupyter_server_extension(server_app) -> None:
    from quota_ledger_jupyterlab.handlers import setup_handlers

    setup_handlers(server_app)
