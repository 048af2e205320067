"""Token minting, hashing and the authorization decision (no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from stockade.core import auth
from stockade.core.auth import TokenInfo
from stockade.errors import AuthError, Forbidden, InvalidRequest
from stockade.types import Scope

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def tok(index: str = "a", scope: Scope = Scope.READ, **kw: object) -> TokenInfo:
    fields: dict[str, object] = {
        "id": "0" * 16,
        "index_name": index,
        "scope": scope,
        "team": None,
        "expires_at": None,
        "revoked_at": None,
        "secret_hash": b"",
    }
    fields.update(kw)
    return TokenInfo(**fields)  # type: ignore[arg-type]


def test_mint_split_and_verify() -> None:
    m = auth.mint()
    parts = auth.split(m.token)
    assert parts is not None
    token_id, secret = parts
    assert token_id == m.token_id
    assert auth.secret_matches(secret, m.secret_hash)
    assert not auth.secret_matches(secret[:-1] + ("A" if secret[-1] != "A" else "B"), m.secret_hash)
    assert m.token not in m.secret_hash.hex()  # only a hash is kept
    assert auth.split("stk_nothex_" + "x" * 43) is None
    assert auth.split("") is None


def test_authorize_matrix() -> None:
    auth.authorize(tok(), index="a", needed=Scope.READ, now=NOW)
    auth.authorize(tok("*", Scope.ADMIN), index="zzz", needed=Scope.ADMIN, now=NOW)
    with pytest.raises(AuthError, match="needs a token"):
        auth.authorize(None, index="a", needed=Scope.READ, now=NOW)
    auth.authorize(None, index="a", needed=Scope.READ, now=NOW, anonymous_read=True)
    with pytest.raises(AuthError):
        auth.authorize(None, index="a", needed=Scope.WRITE, now=NOW, anonymous_read=True)
    with pytest.raises(Forbidden, match="scope"):
        auth.authorize(tok(), index="a", needed=Scope.WRITE, now=NOW)
    with pytest.raises(Forbidden, match="for index 'a'"):
        auth.authorize(tok(), index="b", needed=Scope.READ, now=NOW)
    with pytest.raises(AuthError, match="expired"):
        auth.authorize(
            tok(expires_at=NOW - timedelta(seconds=1)), index="a", needed=Scope.READ, now=NOW
        )
    with pytest.raises(AuthError, match="revoked"):
        auth.authorize(tok(revoked_at=NOW), index="a", needed=Scope.READ, now=NOW)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90m", 5400), ("12h", 43200), ("30d", 2592000), ("2w", 1209600), (" 1y ", 31536000)],
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert auth.parse_duration(text).total_seconds() == seconds


def test_parse_duration_rejects_garbage() -> None:
    with pytest.raises(InvalidRequest, match="duration"):
        auth.parse_duration("soon")
