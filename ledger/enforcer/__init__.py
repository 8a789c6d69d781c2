"""The enforcer: warns users whose budgets run low, then stops servers that ran out.

``quota-ledger enforce`` (``ledger.cli.enforce``); see docs/hub.md.
"""
