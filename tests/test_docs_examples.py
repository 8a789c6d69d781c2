"""The reader of the docs' examples (tests/docs_examples.py): markers, stated results, commands."""

from __future__ import annotations

from docs_examples import blocks, command_lines

PAGE = """# Page

Prose example, partial on purpose:

```python
c.Spawner.cmd = ...
```

<!-- test: hub-config -->

```python
from ledger.hub import install_quota_hook
install_quota_hook(c)
```

A query:

```sql
SELECT 1 AS n;
```
<!-- result -->
```text
 n
---
 1
(1 row)
```

```sh
quota-ledger check sam --memory 4Gi   # exit 1: denied
echo $?
$ quota-ledger usage sam
```
"""


def test_markers_results_and_command_lines(tmp_path):
    path = tmp_path / "page.md"
    path.write_text(PAGE)
    found = blocks(path)
    assert [b.lang for b in found] == ["python", "python", "sql", "sh"]  # the result is no block
    prose, config, sql, sh = found
    assert not prose.tagged("hub-config") and config.tagged("hub-config")
    assert config.text.startswith("from ledger.hub") and config.where.endswith(":11")
    assert sql.result == " n\n---\n 1\n(1 row)\n" and sql.heading == "A query:"
    assert command_lines(sh) == [
        ("quota-ledger check sam --memory 4Gi", "exit 1: denied"),
        ("quota-ledger usage sam", ""),
    ]


def test_the_docs_hub_config_blocks_compose(monkeypatch, tmp_path):
    """docs/hub.md's and docs/web.md's tagged blocks pasted into one config: each service once."""
    from docs_examples import hub_config_source
    from traitlets.config import Config

    monkeypatch.setenv("QUOTA_LEDGER_DB_URL", "postgresql://quota@db/quota")
    from quota_ledger_demo.command import POLICY_FILE

    monkeypatch.setenv("QUOTA_LEDGER_CONFIG", str(POLICY_FILE))
    c = Config()
    c.JupyterHub.services = [{"name": "mine", "api_token": "x"}]  # the operator's own
    exec(compile(hub_config_source(), "jupyterhub_config.py", "exec"), {"c": c})
    names = [s["name"] for s in c.JupyterHub.services]
    assert sorted(names) == ["mine", "quota", "quota-enforcer"]
    quota = next(s for s in c.JupyterHub.services if s["name"] == "quota")
    assert "10101" in quota["url"]  # docs/web.md's options won
    admins = next(r for r in c.JupyterHub.load_roles if r["name"] == "quota-admin")
    assert admins["users"] == ["dora"]
