"""The pure core: quantities, resources, usage arithmetic, the policy, decisions, messages.

Nothing here does I/O or reads the clock (import-linter checks it; docs/architecture.md).
"""
