"""Tokens and authorization decisions. No I/O: callers look tokens up and pass them in.

A token reads ``stk_<id>_<secret>``: the id is public (it names the token in lists and audit
events), the secret is 256 random bits. Only ``sha256(secret)`` is stored, so a copy of the
database yields no usable token; comparison is constant-time.

Teams: a token may belong to a team, and a team is granted indexes (``"*"`` = every index),
each up to a scope. A team token may do something on an index only if the token itself allows
it (its own index and scope, as for any token) *and* one of its team's grants covers the index
with a scope that allows it. The team's grants travel with the token (``TokenInfo.grants``),
so the decision stays pure and the fast path stays free of I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import shlex
from collections.abc import Collection
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
class Grant:
    """A team's access to one index (``"*"`` = every index), up to ``scope``."""

    index_name: str
    scope: Scope

    def covers(self, indexes: Collection[str]) -> bool:
        return self.index_name == ALL_INDEXES or self.index_name in indexes


@dataclass(frozen=True, slots=True)
class TokenInfo:
    id: str
    index_name: str
    scope: Scope
    team: str | None
    expires_at: datetime | None
    revoked_at: datetime | None
    secret_hash: bytes
    # The grants of ``team`` when the token was loaded; None when the team does not exist.
    # Only read for a token with a team; None (the default) refuses everything, so a token
    # loaded without its team's grants fails closed.
    grants: tuple[Grant, ...] | None = None

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


def parse_when(text: str | None, option: str = "time") -> datetime | None:
    """A point in time from ``7d`` (that long ago) or an ISO date/time (UTC when naive)."""
    if text is None or not text.strip():
        return None
    try:
        return datetime.now(UTC) - parse_duration(text)
    except InvalidRequest:
        pass
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidRequest(
            f"{option} {text!r} is neither a duration nor a date",
            "use e.g. 7d, 12h or 2026-11-01 or 2026-11-01T08:00",
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


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
    index serving a member's file): a token for any of them counts as a token for this one,
    and so does a team grant for any of them.
    """
    if token is None:
        if anonymous_read and needed is Scope.READ:
            return
        raise AuthError(
            f"index {index!r} needs a token",
            "pass it as the password of user __token__, as a Bearer token or under /t/<token>/",
        )
    _check_live(token, now)
    allowed = {index} | reachable_from
    if token.index_name != ALL_INDEXES and token.index_name not in allowed:
        raise Forbidden(
            f"token {token.id} is for index {token.index_name!r}, not {index!r}",
            f"use /pypi/{token.index_name}/ or a token created with --index {index}",
        )
    _check_scope(token, needed)
    if token.team is not None:
        _check_team(token, token.team, allowed, index=index, needed=needed)


def authorize_any(token: TokenInfo | None, *, needed: Scope, now: datetime) -> None:
    """Raise unless ``token`` may do ``needed`` on at least one index.

    For endpoints that belong to no index (the index list, vulnerability queries, scans).
    """
    if token is None:
        raise AuthError("this endpoint needs a token", "send it as a Bearer token")
    if token.index_name != ALL_INDEXES or token.team is None:
        authorize(token, index=token.index_name, needed=needed, now=now)
        return
    _check_live(token, now)
    _check_scope(token, needed)
    if token.grants is None:
        raise _team_missing(token, token.team, "INDEX", needed)
    if not any(g.scope.allows(needed) for g in token.grants):
        raise Forbidden(
            f"team {token.team!r} of token {token.id} has no grant with scope {needed.value!r}",
            _grant_hint(token.team, "INDEX", needed),
        )


def permits(
    token: TokenInfo | None,
    *,
    index: str,
    needed: Scope,
    now: datetime,
    anonymous_read: bool = False,
    reachable_from: frozenset[str] = frozenset(),
) -> bool:
    """:func:`authorize` as a yes/no answer (for filtering lists)."""
    try:
        authorize(
            token,
            index=index,
            needed=needed,
            now=now,
            anonymous_read=anonymous_read,
            reachable_from=reachable_from,
        )
    except (AuthError, Forbidden):
        return False
    return True


def _check_live(token: TokenInfo, now: datetime) -> None:
    if token.revoked_at is not None:
        raise AuthError(f"token {token.id} was revoked", "ask an admin for a new token")
    if token.is_expired(now):
        raise AuthError(f"token {token.id} has expired", "ask an admin for a new token")


def _check_scope(token: TokenInfo, needed: Scope) -> None:
    if not token.scope.allows(needed):
        raise Forbidden(
            f"token {token.id} has scope {token.scope.value!r}; this needs {needed.value!r}",
            f"create a token with --scope {needed.value}",
        )


def _check_team(
    token: TokenInfo, team: str, allowed: Collection[str], *, index: str, needed: Scope
) -> None:
    if token.grants is None:
        raise _team_missing(token, team, shlex.quote(index), needed)
    for g in token.grants:  # the usual case, allowed, without building anything
        if (g.index_name == ALL_INDEXES or g.index_name in allowed) and g.scope.allows(needed):
            return
    covering = [g for g in token.grants if g.covers(allowed)]
    if not covering:
        raise Forbidden(
            f"team {team!r} of token {token.id} has no grant for index {index!r}",
            _grant_hint(team, shlex.quote(index), needed),
        )
    best = max(covering, key=lambda g: g.scope.rank)
    raise Forbidden(
        f"team {team!r} of token {token.id} is granted {best.scope.value!r} on index "
        f"{index!r}; this needs {needed.value!r}",
        _grant_hint(team, shlex.quote(index), needed),
    )


def _team_missing(token: TokenInfo, team: str, target: str, needed: Scope) -> Forbidden:
    return Forbidden(
        f"token {token.id} belongs to team {team!r}, which does not exist",
        f"ask an admin: stockade team create {shlex.quote(team)}, then "
        f"stockade team grant {shlex.quote(team)} {target} --scope {needed.value}",
    )


def _grant_hint(team: str, target: str, needed: Scope) -> str:
    """``target``: the index as typed in a shell (already quoted), or a placeholder."""
    return f"ask an admin: stockade team grant {shlex.quote(team)} {target} --scope {needed.value}"
