"""The enforcer: warns users whose budgets run low, then stops servers that ran out.

``quota-ledger enforce`` (``ledger.enforcer.command``); see docs/hub.md.
"""
