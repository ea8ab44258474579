"""API tokens: `ps_<prefix>_<secret>`, stored only as a sha256 digest.

The prefix is not secret: pages and commands show it so that a person can tell their tokens
apart and revoke one. The secret carries 256 bits from `secrets`, so a plain sha256 is
enough (no slow hash: nobody can guess a 256-bit secret, and every request checks one).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

SCHEME = "ps"
PREFIX_CHARS = 8


@dataclass(frozen=True)
class NewToken:
    prefix: str
    raw: str  # shown once, never stored

    @property
    def digest(self) -> str:
        return token_digest(self.raw)


def token_new() -> NewToken:
    prefix = secrets.token_hex(PREFIX_CHARS // 2)
    return NewToken(prefix=prefix, raw=f"{SCHEME}_{prefix}_{secrets.token_urlsafe(32)}")


def token_digest(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def token_prefix(raw: str) -> str | None:
    """The prefix of a well-formed token, else None (then no lookup is worth making)."""
    scheme, _, rest = raw.partition("_")
    prefix, _, secret = rest.partition("_")
    if scheme != SCHEME or len(prefix) != PREFIX_CHARS or len(secret) < 32:
        return None
    return prefix
