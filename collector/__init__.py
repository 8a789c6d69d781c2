"""The collector daemon: watch Kubernetes pods and write their resource intervals to the ledger."""
