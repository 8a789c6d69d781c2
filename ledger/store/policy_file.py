"""The policy file: where it is, reading it, and re-reading it when it changes.

The one place that turns "``--config FILE``, else ``$QUOTA_LEDGER_CONFIG``" into a policy,
for every part that needs one (the CLI, ``serve``, ``enforce``, ``collect``, the hub hook).
This is I/O (stat, read), so it lives in the store layer, beside the database, and not in
the pure ``ledger.core``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable

from ledger.core.policy import Policy
from ledger.core.policy_yaml import parse_policy
from ledger.core.yaml_lines import PolicyError, PolicyIssue

__all__ = ["CONFIG_ENV", "PolicyError", "PolicyWatcher", "load_policy", "policy_path"]

log = logging.getLogger(__name__)

CONFIG_ENV = "QUOTA_LEDGER_CONFIG"


def policy_path(explicit: str | os.PathLike | None = None) -> str | None:
    """The policy file to use: ``explicit`` (``--config``, ``policy_path=``), else
    ``$QUOTA_LEDGER_CONFIG``; None when neither is set."""
    if explicit:
        return os.fspath(explicit)
    return os.environ.get(CONFIG_ENV) or None


def load_policy(path: str | os.PathLike) -> Policy:
    """A Policy from a file; a missing or unreadable file is a PolicyError naming it."""
    source = os.fspath(path)
    try:
        with open(source, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        issue = PolicyIssue(source, None, "", f"cannot read the policy: {reason}")
        raise PolicyError([issue]) from None
    return parse_policy(text, source)


# --- reloading without restart -------------------------------------------------------------------


class PolicyWatcher:
    """The current policy from a file, re-read when the file changes.

    ``current()`` is cheap enough for every spawn: it stats the file at most once per
    ``check_interval_seconds`` and re-parses only when mtime, size or inode changed and the
    content hash differs. A bad edit is logged and kept in ``last_error`` while the last good
    policy stays in force: a typo must not lock everyone out (or let everyone in). The first
    load has no previous policy, so it raises.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        check_interval_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.path = os.fspath(path)
        self.check_interval_seconds = check_interval_seconds
        self.last_error: PolicyError | None = None
        self._clock = clock
        self._lock = threading.Lock()
        self._signature = self._stat()
        data, self._digest = self._read()
        self._policy = self._parse(data)
        self._checked_at = clock()

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _read(self) -> tuple[bytes, str]:
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except OSError as error:
            issue = PolicyIssue(self.path, None, "", f"cannot read the policy: {error.strerror}")
            raise PolicyError([issue]) from None
        return data, hashlib.sha256(data).hexdigest()

    def _parse(self, data: bytes) -> Policy:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as error:
            issue = PolicyIssue(self.path, None, "", f"cannot read the policy: {error}")
            raise PolicyError([issue]) from None
        return parse_policy(text, self.path)

    def current(self) -> Policy:
        """The latest valid policy."""
        with self._lock:
            now = self._clock()
            if now - self._checked_at < self.check_interval_seconds:
                return self._policy
            self._checked_at = now
            signature = self._stat()
            if signature == self._signature:
                return self._policy
            self._signature = signature  # a bad edit is reported once, not every second
            try:
                data, digest = self._read()
                # Touched but unchanged (or an edit undone): keep the parsed policy.
                policy = self._policy if digest == self._digest else self._parse(data)
            except Exception as exc:  # noqa: BLE001 - no edit of the file may fail a spawn
                error = exc if isinstance(exc, PolicyError) else PolicyError([PolicyIssue(
                    self.path, None, "", f"cannot read the policy: {type(exc).__name__}: {exc}"
                )])  # fmt: skip
                self.last_error = error
                log.error("quota policy not reloaded, keeping the previous one:\n%s", error)
                return self._policy
            if digest != self._digest:
                log.info("quota policy reloaded from %s", self.path)
            self._digest, self._policy, self.last_error = digest, policy, None
            return self._policy
