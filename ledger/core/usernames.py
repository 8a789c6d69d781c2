"""What a username may be. JupyterHub usernames are arbitrary strings chosen by the
authenticator, so we accept any text a person could have as a name and refuse only what
cannot be one: empty, non-text, control characters, surrounding space, absurd length.
Rendering escapes everything else (a name may well contain ``<`` or ``&``).
"""

from __future__ import annotations

import unicodedata

MAX_USERNAME_LENGTH = 255


class UsernameError(ValueError):
    pass


def check_username(value: object, *, what: str = "username") -> str:
    if not isinstance(value, str):
        raise UsernameError(f"{what} must be a non-empty string, got {value!r}")
    if not value:
        raise UsernameError(f"{what} is empty; every segment belongs to a user")
    if value != value.strip():
        raise UsernameError(f"{what} {value!r} has leading or trailing white space")
    if len(value) > MAX_USERNAME_LENGTH:
        raise UsernameError(f"{what} is {len(value)} characters; at most {MAX_USERNAME_LENGTH}")
    bad = [c for c in value if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")]
    if bad:
        raise UsernameError(
            f"{what} {value!r} contains control character(s) {', '.join(repr(c) for c in bad)}"
        )
    return value
