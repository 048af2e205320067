"""Token minting, hashing and the authorization decision (no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from stockade.core import auth
from stockade.core.auth import Grant, TokenInfo
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


# -- teams -------------------------------------------------------------------------------------


def team_tok(
    *grants: tuple[str, Scope],
    index: str = "*",
    scope: Scope = Scope.ADMIN,
    team: str = "prod",
    exists: bool = True,
    **kw: object,
) -> TokenInfo:
    """A token of ``team`` (which has ``grants``; ``exists=False``: the team is gone)."""
    return tok(
        index,
        scope,
        team=team,
        grants=tuple(Grant(i, s) for i, s in grants) if exists else None,
        **kw,
    )


def allowed(token: TokenInfo, index: str, needed: Scope, **kw: object) -> bool:
    return auth.permits(token, index=index, needed=needed, now=NOW, **kw)  # type: ignore[arg-type]


def test_team_grant_limits_an_all_index_token() -> None:
    t = team_tok(("prod", Scope.WRITE))
    assert allowed(t, "prod", Scope.READ)
    assert allowed(t, "prod", Scope.WRITE)
    assert not allowed(t, "prod", Scope.ADMIN)
    assert not allowed(t, "dev", Scope.READ)
    assert not allowed(t, auth.ALL_INDEXES, Scope.ADMIN)  # admin endpoints need a '*' grant
    with pytest.raises(Forbidden, match=r"team 'prod' of token .* no grant for index 'dev'") as e:
        auth.authorize(t, index="dev", needed=Scope.READ, now=NOW)
    assert e.value.hint == "ask an admin: stockade team grant prod dev --scope read"
    with pytest.raises(Forbidden, match="granted 'write' on index 'prod'; this needs 'admin'") as e:
        auth.authorize(t, index="prod", needed=Scope.ADMIN, now=NOW)
    assert e.value.hint == "ask an admin: stockade team grant prod prod --scope admin"


def test_both_the_token_and_the_team_must_allow() -> None:
    # the token's own index and scope still cap a team that may do everything
    everything = ("*", Scope.ADMIN)
    assert allowed(team_tok(everything, index="dev", scope=Scope.READ), "dev", Scope.READ)
    assert not allowed(team_tok(everything, index="dev", scope=Scope.READ), "dev", Scope.WRITE)
    assert not allowed(team_tok(everything, index="dev", scope=Scope.READ), "prod", Scope.READ)
    with pytest.raises(Forbidden, match=r"token .* has scope 'read'"):
        auth.authorize(
            team_tok(everything, scope=Scope.READ), index="dev", needed=Scope.WRITE, now=NOW
        )
    # and a team cannot widen a token: a write grant on a read token's index stays read
    assert not allowed(
        team_tok(("dev", Scope.WRITE), index="dev", scope=Scope.READ), "dev", Scope.WRITE
    )
    # the best of several covering grants counts
    t = team_tok(("*", Scope.READ), ("dev", Scope.ADMIN))
    assert allowed(t, "dev", Scope.ADMIN)
    assert allowed(t, "prod", Scope.READ)
    assert not allowed(t, "prod", Scope.WRITE)


def test_team_without_grants_or_gone_refuses_everything() -> None:
    empty = team_tok()
    assert not allowed(empty, "prod", Scope.READ)
    gone = team_tok(("*", Scope.ADMIN), exists=False)
    with pytest.raises(Forbidden, match="belongs to team 'prod', which does not exist") as e:
        auth.authorize(gone, index="prod", needed=Scope.READ, now=NOW)
    assert e.value.hint == (
        "ask an admin: stockade team create prod, then stockade team grant prod prod --scope read"
    )
    # a token record built without its team's grants fails closed
    assert not allowed(tok("prod", Scope.ADMIN, team="prod"), "prod", Scope.READ)


def test_tokens_without_a_team_ignore_grants() -> None:
    assert allowed(tok("*", Scope.ADMIN), "anything", Scope.ADMIN)
    assert allowed(tok("a", Scope.READ, grants=()), "a", Scope.READ)


def test_revocation_and_expiry_come_before_team_checks() -> None:
    revoked = team_tok(revoked_at=NOW)  # no grants either: the 401 says why it really fails
    with pytest.raises(AuthError, match="revoked"):
        auth.authorize(revoked, index="prod", needed=Scope.READ, now=NOW)
    expired = team_tok(exists=False, expires_at=NOW)
    with pytest.raises(AuthError, match="expired"):
        auth.authorize(expired, index="prod", needed=Scope.READ, now=NOW)


def test_grants_through_a_virtual_index_and_anonymous_read() -> None:
    # a member served through virtual 'main': a grant for 'main' covers it (reachable_from),
    # as a token for 'main' does; a grant for the member alone does not cover 'main'
    t = team_tok(("main", Scope.READ))
    assert allowed(t, "internal", Scope.READ, reachable_from=frozenset({"main"}))
    assert not allowed(t, "internal", Scope.READ)
    assert not allowed(team_tok(("internal", Scope.READ)), "main", Scope.READ)
    # a team token is still a token: anonymous read does not make its refusals go away
    assert not allowed(team_tok(("prod", Scope.READ)), "open", Scope.READ, anonymous_read=True)
    assert allowed(team_tok(("*", Scope.READ), team="my team"), "open", Scope.READ)


def test_hints_quote_for_the_shell() -> None:
    t = team_tok(("dev", Scope.READ), team="Data Science")  # a legacy tag (before migration 0007)
    with pytest.raises(Forbidden) as e:
        auth.authorize(t, index=auth.ALL_INDEXES, needed=Scope.ADMIN, now=NOW)
    assert e.value.hint == "ask an admin: stockade team grant 'Data Science' '*' --scope admin"


def test_authorize_any() -> None:
    auth.authorize_any(tok("a"), needed=Scope.READ, now=NOW)
    auth.authorize_any(team_tok(("dev", Scope.READ)), needed=Scope.READ, now=NOW)
    with pytest.raises(AuthError, match="needs a token"):
        auth.authorize_any(None, needed=Scope.READ, now=NOW)
    with pytest.raises(Forbidden, match="no grant with scope 'write'") as e:
        auth.authorize_any(team_tok(("dev", Scope.READ)), needed=Scope.WRITE, now=NOW)
    assert e.value.hint == "ask an admin: stockade team grant prod INDEX --scope write"
    with pytest.raises(Forbidden, match="does not exist"):
        auth.authorize_any(team_tok(exists=False), needed=Scope.READ, now=NOW)
    with pytest.raises(Forbidden):
        auth.authorize_any(team_tok(), needed=Scope.READ, now=NOW)
    # a token for one index: its team must cover that index
    auth.authorize_any(team_tok(("dev", Scope.READ), index="dev"), needed=Scope.READ, now=NOW)
    with pytest.raises(Forbidden, match="no grant for index 'dev'"):
        auth.authorize_any(team_tok(("prod", Scope.READ), index="dev"), needed=Scope.READ, now=NOW)
    with pytest.raises(AuthError, match="expired"):
        auth.authorize_any(team_tok(("*", Scope.READ), expires_at=NOW), needed=Scope.READ, now=NOW)
