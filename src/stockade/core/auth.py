"""Tokens and authorization decisions. No I/O: callers look tokens up and pass them in.

A token reads ``stk_<id>_<secret>``: the id is public (it names the token in lists and audit
events), the secret is 256 random bits. Only ``sha256(secret)`` is stored, so a copy of the
database yields no usable token; comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from stockade.errors import AuthError, Forbidden, InvalidRequest
from stockade.types import Scope

PREFIX = "stk"
ALL_INDEXES = "*"
_TOKEN_RE = re.compile(r"^stk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True, slots=True)
class MintedToken:
    token: str  # shown once
    token_id: str
    secret_hash: bytes


@dataclass(frozen=True, slots=True)
class TokenInfo:
    id: str
    index_name: str
    scope: Scope
    team: str | None
    expires_at: datetime | None
    revoked_at: datetime | None
    secret_hash: bytes

    def is_expired(self, now: datetime) -> bool:
        return self.expires_at is not None and _aware(self.expires_at) <= now


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def mint() -> MintedToken:
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return MintedToken(f"{PREFIX}_{token_id}_{secret}", token_id, hash_secret(secret))


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def split(token: str) -> tuple[str, str] | None:
    """``(id, secret)`` of a well-formed token, else None."""
    m = _TOKEN_RE.match(token)
    return (m.group(1), m.group(2)) if m else None


def secret_matches(secret: str, stored_hash: bytes) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``2w``, ``1y`` → timedelta."""
    m = re.fullmatch(r"\s*(\d+)\s*([smhdwy])\s*", text.lower())
    if not m:
        raise InvalidRequest(
            f"cannot read duration {text!r}", "use a number and a unit: 90m, 12h, 30d, 2w, 1y"
        )
    n, unit = int(m.group(1)), m.group(2)
    secs = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}[unit]
    return timedelta(seconds=n * secs)


def authorize(
    token: TokenInfo | None,
    *,
    index: str,
    needed: Scope,
    now: datetime,
    anonymous_read: bool = False,
    reachable_from: frozenset[str] = frozenset(),
) -> None:
    """Raise AuthError (401) or Forbidden (403) unless ``token`` may do ``needed`` on ``index``.

    ``reachable_from`` names the indexes through which this one is being served (a virtual
    index serving a member's file): a token for any of them counts as a token for this one.
    """
    if token is None:
        if anonymous_read and needed is Scope.READ:
            return
        raise AuthError(
            f"index {index!r} needs a token",
            "pass it as the password of user __token__, as a Bearer token or under /t/<token>/",
        )
    if token.revoked_at is not None:
        raise AuthError(f"token {token.id} was revoked", "ask an admin for a new token")
    if token.is_expired(now):
        raise AuthError(f"token {token.id} has expired", "ask an admin for a new token")
    allowed = {index} | reachable_from
    if token.index_name != ALL_INDEXES and token.index_name not in allowed:
        raise Forbidden(
            f"token {token.id} is for index {token.index_name!r}, not {index!r}",
            f"use /pypi/{token.index_name}/ or a token created with --index {index}",
        )
    if not token.scope.allows(needed):
        raise Forbidden(
            f"token {token.id} has scope {token.scope.value!r}; this needs {needed.value!r}",
            f"create a token with --scope {needed.value}",
        )
