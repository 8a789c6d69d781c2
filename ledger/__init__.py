"""quota-ledger: compute-usage quotas for JupyterHub, measured exactly.

The decision library. It never imports Kubernetes code; only ``collector`` does.
"""

__version__ = "0.1.0"
