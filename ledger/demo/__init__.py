"""``quota-ledger demo``: the whole system on the embedded PostgreSQL, no cluster needed."""
