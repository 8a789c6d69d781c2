"""Alembic migrations for the quota-ledger schema (installed as ``ledger.migrations``)."""
