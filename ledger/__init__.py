"""quota-ledger: compute-usage quotas for JupyterHub, measured exactly.

The decision library. It never imports Kubernetes code; only ``collector`` does.

The names below are its public API for other integrations and scripts (docs/library.md
documents them, with an example)::

    from ledger import ServerRequest, connect, decide, load_policy

They are loaded on first use (a module ``__getattr__``, PEP 562), so ``import ledger`` — which
every ``ledger.*`` import runs — stays cheap. Everything else is internal and may change.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> (module, attribute)
_EXPORTS: dict[str, tuple[str, str]] = {
    "connect": ("ledger.store.db", "connect"),
    "DatabaseError": ("ledger.store.db", "DatabaseError"),
    "DatabaseNotConfigured": ("ledger.store.db", "DatabaseNotConfigured"),
    "decide": ("ledger.store.decide", "decide"),
    "record_decision": ("ledger.store.decide", "record"),
    "Decision": ("ledger.core.decision", "Decision"),
    "ServerRequest": ("ledger.core.decision", "ServerRequest"),
    "Policy": ("ledger.core.policy", "Policy"),
    "PolicyError": ("ledger.core.policy_yaml", "PolicyError"),
    "load_policy": ("ledger.store.policy_file", "load_policy"),
    "parse_policy": ("ledger.core.policy_yaml", "parse_policy"),
    "QuantityError": ("ledger.core.quantities", "QuantityError"),
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    try:
        module_name, attribute = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'ledger' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module_name), attribute)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
