"""Helpers for tests that run against the real Docker engine (started by
``/work/shared/tools/docker-up.sh`` here, by ``.ci/run`` in CI).

Every container a test makes carries ``quota-ledger-test=<run id>`` so the collector under test
sees only its own containers on a shared engine, and teardown removes them all.
"""

from __future__ import annotations

import asyncio
import os
import uuid

import pytest

BASE_IMAGE = os.environ.get("QUOTA_LEDGER_TEST_BASE_IMAGE", "local/python:3.11-slim-bookworm")
TEST_LABEL = "quota-ledger-test"
USERNAME_LABEL = "hub.jupyter.org/username"
SERVERNAME_LABEL = "hub.jupyter.org/servername"


def docker_client():
    """A docker-py client, or skip (fail under CI=true) when no engine answers."""
    import docker

    try:
        client = docker.from_env(timeout=60)
        client.ping()
        client.images.get(BASE_IMAGE)
    except Exception as exc:  # noqa: BLE001 - any reason the engine cannot be used
        message = f"no usable Docker engine with {BASE_IMAGE} ({exc}); run docker-up.sh"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return client


class Containers:
    """Creates labelled test containers through docker-py (in a thread: the collector under
    test shares the event loop) and removes them afterwards."""

    def __init__(self, client) -> None:
        self.client = client
        self.run_id = uuid.uuid4().hex[:12]

    @property
    def selector(self) -> str:
        return f"{USERNAME_LABEL},{TEST_LABEL}={self.run_id}"

    def labels(self, username: str | None, servername: str = "") -> dict[str, str]:
        labels = {TEST_LABEL: self.run_id}
        if username is not None:
            labels[USERNAME_LABEL] = username
            labels[SERVERNAME_LABEL] = servername
        return labels

    async def call(self, fn, *args, **kwargs):
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def run(self, username: str | None, command=("sleep", "infinity"), servername="", **host):
        """Create and start a container with HostConfig keyword arguments (docker-py's
        ``create_host_config`` names: mem_limit, cpu_quota, nano_cpus, …)."""
        return await self.call(
            self.client.containers.run,
            BASE_IMAGE,
            list(command),
            detach=True,
            labels=self.labels(username, servername),
            network_mode="none",
            init=True,  # sleep as PID 1 ignores SIGTERM; with an init, stop is immediate
            **host,
        )

    async def inspect(self, container) -> dict:
        return await self.call(lambda: self.client.api.inspect_container(container.id))

    def remove_all(self) -> None:
        for c in self.client.containers.list(
            all=True, filters={"label": f"{TEST_LABEL}={self.run_id}"}
        ):
            c.remove(force=True)


SINGLEUSER_DOCKERFILE = os.path.join(os.path.dirname(__file__), "singleuser.Dockerfile")


def singleuser_image(client) -> str:
    """Build (once per Dockerfile content: the tag is its hash) the single-user image."""
    import hashlib
    import subprocess

    with open(SINGLEUSER_DOCKERFILE, "rb") as f:
        digest = hashlib.sha256(f.read() + BASE_IMAGE.encode()).hexdigest()[:12]
    tag = f"quota-ledger-test/singleuser:{digest}"
    try:
        client.images.get(tag)
        return tag
    except Exception:  # noqa: BLE001 - docker.errors.ImageNotFound: build it
        pass
    # The docker CLI (the legacy builder: no BuildKit here) with host networking, so pip
    # inside the build reaches the package index the way the host does.
    subprocess.run(
        ["docker", "build", "--network", "host", "--build-arg", f"BASE_IMAGE={BASE_IMAGE}",
         "-t", tag, "-f", SINGLEUSER_DOCKERFILE, os.path.dirname(SINGLEUSER_DOCKERFILE)],
        check=True, capture_output=True, timeout=900,
    )  # fmt: skip
    return tag
