"""The values the docs show render: every ``yaml`` block tagged ``<!-- test: chart-values -->``
(docs/deploy.md) through the quota-ledger chart, and every block tagged
``<!-- test: z2jh-values -->`` (the hub's side, docs/hub.md and docs/deploy.md) checked against
what the chart renders: its ``hub.extraConfig`` compiles, and each Secret it reads is one the
chart creates, with that key. Marker convention: tests/docs_examples.py.
"""

from __future__ import annotations

import pytest
import yaml
from docs_examples import tagged_blocks
from test_chart import chart, find, render  # noqa: F401 (chart: the module's fixture)

CHART_VALUES = tagged_blocks("chart-values", "docs/deploy.md", lang="yaml")
Z2JH_VALUES = tagged_blocks("z2jh-values", "docs/hub.md", "docs/deploy.md", lang="yaml")


def test_the_docs_have_tagged_values():
    assert CHART_VALUES and Z2JH_VALUES


def _secret_refs(node):
    if isinstance(node, dict):
        if "secretKeyRef" in node:
            yield node["secretKeyRef"]
        for value in node.values():
            yield from _secret_refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _secret_refs(value)


@pytest.mark.parametrize("block", CHART_VALUES, ids=lambda b: b.where)
def test_chart_values_of_the_docs_render(chart, block):  # noqa: F811
    values = yaml.safe_load(block.text)
    docs = render(chart, values)  # helm enforces values.schema.json, as `helm install` does
    assert find(docs, "Deployment"), f"{block.where}: nothing rendered"


@pytest.mark.parametrize("block", Z2JH_VALUES, ids=lambda b: b.where)
def test_z2jh_values_of_the_docs_fit_the_chart(chart, block):  # noqa: F811
    hub = yaml.safe_load(block.text)["hub"]
    for name, source in (hub.get("extraConfig") or {}).items():
        compile(source, f"{block.where} hub.extraConfig.{name}", "exec")
    secrets = {d["metadata"]["name"]: d for d in find(render(chart, {}), "Secret")}
    for ref in _secret_refs(hub):
        secret = secrets.get(ref["name"])
        assert secret is not None, f"{block.where}: the chart renders no Secret {ref['name']}"
        keys = {**secret.get("data", {}), **secret.get("stringData", {})}
        assert ref["key"] in keys, f"{block.where}: Secret {ref['name']} has no key {ref['key']}"
