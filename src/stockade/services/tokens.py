"""Token lifecycle (create, list, revoke) and per-request verification with a small cache.

A cached record carries the grants of the token's team, so team and grant changes must clear
this cache (``Runtime.changed()`` does, in every process).
"""

from __future__ import annotations

import asyncio
import shlex
import time
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from stockade.core import auth
from stockade.core.auth import TokenInfo
from stockade.errors import AuthError, NotFound
from stockade.services import repo
from stockade.services.audit import AuditLog
from stockade.services.indexes import IndexService
from stockade.services.repo import TokenRecord
from stockade.types import Scope

_TOUCH_EVERY = 60.0  # seconds between last_used_at writes for one token


if TYPE_CHECKING:
    from stockade.services.teams import TeamService


class TokenService:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], indexes: IndexService, audit: AuditLog
    ) -> None:
        self._sessions = sessions
        self._indexes = indexes
        self._audit = audit
        self._cache: dict[str, TokenRecord | None] = {}
        self._pending: dict[str, asyncio.Future[TokenRecord | None]] = {}
        self._touched: dict[str, float] = {}
        self._generation = 0  # bumped by clear(): a lookup that straddles a clear is not kept

    def clear(self) -> None:
        self._generation += 1
        self._cache.clear()
        self._pending.clear()  # requests after a change never join a lookup begun before it

    async def create(
        self,
        *,
        index: str,
        scope: Scope,
        expires: str | None = None,
        team: str | None = None,
        note: str | None = None,
        created_by: str | None = None,
    ) -> tuple[str, TokenRecord]:
        if index != auth.ALL_INDEXES:
            await self._indexes.get(index)
        team = team or None
        expires_at = repo.utcnow() + auth.parse_duration(expires) if expires else None
        minted = auth.mint()
        async with self._sessions() as s, s.begin():
            if team is not None and not await repo.team_exists(s, team):
                raise NotFound(
                    f"no team named {team!r}",
                    f"create it first: stockade team create {shlex.quote(team)} (and grant it "
                    "indexes with stockade team grant)",
                )
            rec = await repo.insert_token(
                s,
                token_id=minted.token_id,
                secret_hash=minted.secret_hash,
                index_name=index,
                scope=scope,
                team=team,
                note=note,
                expires_at=expires_at,
                created_by=created_by,
            )
        self._audit.record(
            "token.create",
            actor=created_by,
            index=None if index == auth.ALL_INDEXES else index,
            token=rec.info.id,
            scope=scope.value,
            team=team,
            expires_at=expires_at.isoformat() if expires_at else None,
        )
        return minted.token, rec

    async def list(self, index: str | None = None, team: str | None = None) -> list[TokenRecord]:
        async with self._sessions() as s:
            return await repo.list_tokens(s, index=index, team=team)

    async def actor_ids(
        self, teams: TeamService, team: str | None, actor: str | None
    ) -> set[str] | None:
        """Token ids an audit filter means: a team's tokens (the team must exist), narrowed to
        one token; None when neither is given."""
        actors: set[str] | None = None
        if team is not None:
            await teams.show(team)  # a clear error when it does not exist
            actors = {t.info.id for t in await self.list(team=team)}
        if actor is not None:
            actors = {actor} if actors is None else actors & {actor}
        return actors

    async def revoke(self, token_id: str, actor: str | None = None) -> TokenRecord:
        async with self._sessions() as s, s.begin():
            rec = await repo.get_token(s, token_id)
            if rec is None:
                raise NotFound(f"no token with id {token_id!r}", "see `stockade token list`")
            await repo.revoke_token(s, token_id)
        self.clear()
        self._audit.record("token.revoke", actor=actor, token=token_id)
        async with self._sessions() as s:
            rec2 = await repo.get_token(s, token_id)
        assert rec2 is not None
        return rec2

    async def verify(self, token: str) -> TokenInfo:
        """The token's record if the secret matches; AuthError otherwise (scope not checked)."""
        parts = auth.split(token)
        if parts is None:
            raise AuthError(
                "the credentials are not a Stockade token",
                "tokens look like stk_<16 hex>_<43 chars>; create one with `stockade token create`",
            )
        token_id, secret = parts
        if token in self._cache:
            found = self._cache[token]
        else:  # one lookup for every request of this token that arrives meanwhile
            pending = self._pending.get(token)
            if pending is None:
                pending = asyncio.ensure_future(self._lookup(token, token_id, secret))
                self._pending[token] = pending
                pending.add_done_callback(
                    lambda f: self._pending.pop(token) if self._pending.get(token) is f else None
                )
            found = await asyncio.shield(pending)
        if found is None:
            raise AuthError("unknown token", "check for typos or ask an admin for a new token")
        self.note_use(found)
        return found.info

    async def _lookup(self, token: str, token_id: str, secret: str) -> TokenRecord | None:
        generation = self._generation
        async with self._sessions() as s:
            found = await repo.get_token(s, token_id)
        if found is not None and not auth.secret_matches(secret, found.info.secret_hash):
            found = None
        if generation == self._generation:  # else a change raced this lookup: use, not keep
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[token] = found
        return found

    def cached(self, token: str) -> TokenRecord | None:
        """The verified record of ``token`` if this process has already checked it."""
        return self._cache.get(token)

    def note_use(self, rec: TokenRecord) -> None:
        """Record last use (at most once a minute per token) and the first use ever."""
        token_id = rec.info.id
        mono = time.monotonic()
        last = self._touched.get(token_id)
        if last is not None and mono - last < _TOUCH_EVERY:
            return
        self._touched[token_id] = mono
        if rec.last_used_at is None and last is None:
            self._audit.record("token.first_use", actor=token_id, token=token_id)
        self._audit.token_used(token_id, repo.utcnow())
