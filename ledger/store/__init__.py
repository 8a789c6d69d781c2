"""The store: every SQL statement of quota-ledger, and the database connection.

Roles (collector, hub hook, enforcer, web) and the CLI read and write the ledger only
through this package; it builds on ``ledger.core`` and nothing above it.
"""
