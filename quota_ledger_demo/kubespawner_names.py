"""Pod names and label values as KubeSpawner >= 7 derives them (its "safe" slug scheme).

Port of jupyterhub/kubespawner `kubespawner/slugs.py` and `KubeSpawner._expand_user_properties`,
used by the simulator to produce realistic, *lossy* names: the collector must take identity
from the `hub.jupyter.org/username` annotation, never from these.
"""

from __future__ import annotations

import hashlib
import re
import string

_ALPHA_LOWER = tuple(string.ascii_lowercase)
_ALPHANUM_LOWER = tuple(string.ascii_lowercase + string.digits)
_ALPHANUM = tuple(string.ascii_letters + string.digits)
_OBJECT_PATTERN = re.compile(r"^[a-z0-9\-]+$")
_LABEL_PATTERN = re.compile(r"^[a-z0-9.\-_]+$", flags=re.IGNORECASE)
_HASH_LENGTH = 8
_SLUG_MAX_LENGTH = 48


def _is_valid_object_name(s: str) -> bool:
    return (
        0 < len(s) <= 63
        and s.startswith(_ALPHA_LOWER)
        and s.endswith(_ALPHANUM_LOWER)
        and bool(_OBJECT_PATTERN.match(s))
    )


def _is_valid_label(s: str) -> bool:
    return not s or (
        len(s) <= 63
        and s.startswith(_ALPHANUM)
        and s.endswith(_ALPHANUM)
        and bool(_LABEL_PATTERN.match(s))
    )


def _extract_safe_name(name: str, max_length: int) -> str:
    safe = re.sub(r"[^a-z0-9]+", "-", name.lower()).lstrip("-")[:max_length].rstrip("-")
    if safe and not safe.startswith(_ALPHA_LOWER):
        safe = "x-" + safe[: max_length - 2]
    return safe or "x"


def _strip_and_hash(name: str, max_length: int = 32) -> str:
    name_hash = hashlib.sha256(name.encode()).hexdigest()[:_HASH_LENGTH]
    return f"{_extract_safe_name(name, max_length - (_HASH_LENGTH + 3))}---{name_hash}"


def safe_slug(name: str, *, label: bool = False, max_length: int | None = None) -> str:
    """KubeSpawner's lossy slug: kept if already valid, else stripped and hashed."""
    valid = _is_valid_label(name) if label else _is_valid_object_name(name)
    if "--" not in name and valid and (max_length is None or len(name) <= max_length):
        return name
    return _strip_and_hash(name, max_length or 32)


def _multi_slug(names: list[str], max_length: int) -> str:
    hasher = hashlib.sha256(names[0].encode())
    for name in names[1:]:
        hasher.update(b"\xff" + name.encode())
    per_name = (max_length - (_HASH_LENGTH + 1)) // len(names) - 2
    slugs = [_extract_safe_name(name, per_name) for name in names]
    return f"{'--'.join(slugs)}---{hasher.hexdigest()[:_HASH_LENGTH]}"


def pod_name(user: str, server: str = "") -> str:
    """`jupyter-{user_server}`: `jupyter-<user>` or `jupyter-<user>--<server>`."""
    safe_user = safe_slug(user, max_length=_SLUG_MAX_LENGTH)
    safe_server = safe_slug(server, max_length=_SLUG_MAX_LENGTH) if server else ""
    if len(safe_user) + len(safe_server) + 2 > _SLUG_MAX_LENGTH:
        return "jupyter-" + _multi_slug([user, server], _SLUG_MAX_LENGTH)
    return f"jupyter-{safe_user}--{safe_server}" if server else f"jupyter-{safe_user}"
