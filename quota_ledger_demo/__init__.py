"""Demo and test tooling: the fake Kubernetes API server, the pod simulator, the simulated
hub and ``quota-ledger demo``. No product module imports this package (import-linter).
"""
