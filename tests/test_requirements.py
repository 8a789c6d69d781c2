"""tests/requirements.py: a missing tool skips a test locally and fails it under CI=true."""

from __future__ import annotations

import pytest
import requirements


@pytest.fixture
def missing_tools(monkeypatch):
    monkeypatch.setitem(requirements.TOOLS, "no-module", ("no_such_module_here", "pip it"))
    monkeypatch.setitem(requirements.TOOLS, "no-program", ("/nonexistent/tool", "apt it"))


@pytest.mark.parametrize("tool", ["no-module", "no-program"])
def test_missing_tool_skips_locally(missing_tools, monkeypatch, tool):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="install it to run this test"):
        requirements.require(tool)


@pytest.mark.parametrize("tool", ["no-module", "no-program"])
def test_missing_tool_fails_under_ci(missing_tools, monkeypatch, tool):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true and .* install it: (pip|apt) it"):
        requirements.require(tool)


def test_present_tools_are_returned(monkeypatch):
    monkeypatch.setenv("CI", "true")
    assert requirements.require("jsonschema").__name__ == "jsonschema"
    monkeypatch.setitem(requirements.TOOLS, "sh", ("/bin/sh", "always there"))
    assert requirements.require("sh") == "/bin/sh"
