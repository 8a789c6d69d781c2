"""The quota web service: each user's own page, the admins' report and a JSON API.

A JupyterHub service authenticated with Hub OAuth (``HubOAuthenticated``). Users see only
themselves; holders of the admin scope see everyone. ``quota-ledger serve`` runs it
(``ledger.cli.serve``); docs/web.md has the hub configuration.

Modules: ``config`` (settings), ``auth`` (base handlers, who is asking), ``app`` (routes),
``user_view`` (a user's numbers for page and API), ``chart`` (the rolling-window SVG),
``reads`` (SQL the pages need), ``report_view`` (the admins' report: cache, sort, filter,
pages), ``user_pages``, ``admin_pages``, ``api`` (handlers), ``command`` (CLI),
``demo`` (hub config for a hub-managed service).
"""
