"""Teams and their grants: create, delete, list, show, grant, revoke.

A token that belongs to a team may do something on an index only if the token itself allows
it *and* one of the team's grants covers the index with enough scope (``core.auth``). The
grants are cached with each verified token, so every change here ends with ``on_change``
(``Runtime.changed()``): this process and every other one drop their token caches and the next
request sees the new grants.

Deleting a team is refused while active (neither revoked nor expired) tokens belong to it:
deleting it would silently lock those tokens out, and revoking them as a side effect would be
worse. Revoke them first (``stockade token list --team T``, ``stockade token revoke ID``).
Tokens that are already revoked or expired keep their team tag as history.
"""

from __future__ import annotations

import builtins
import dataclasses
import re
import shlex
from collections.abc import Callable

from sqlalchemy.exc import IntegrityError as DBIntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from stockade.core.auth import ALL_INDEXES
from stockade.errors import Conflict, InvalidRequest, NotFound
from stockade.services import repo
from stockade.services.audit import AuditLog
from stockade.services.indexes import IndexService
from stockade.services.repo import GrantRecord, TeamRecord
from stockade.types import Scope

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")  # as index names


def check_team_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise InvalidRequest(
            f"invalid team name {name!r}",
            "use 1-63 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    return name


def _no_team(name: str) -> NotFound:
    return NotFound(f"no team named {name!r}", "see `stockade team list`")


class TeamService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        indexes: IndexService,
        audit: AuditLog,
        on_change: Callable[[], None],
    ) -> None:
        self._sessions = sessions
        self._indexes = indexes
        self._audit = audit
        self._on_change = on_change

    async def create(
        self, name: str, *, description: str | None = None, actor: str | None = None
    ) -> TeamRecord:
        check_team_name(name)
        exists = Conflict(f"team {name!r} already exists", "pick another name")
        try:
            async with self._sessions() as s, s.begin():
                if await repo.team_exists(s, name):
                    raise exists
                await repo.insert_team(s, name=name, description=description, created_by=actor)
        except DBIntegrityError as exc:  # created concurrently
            raise exists from exc
        self._audit.record("team.create", actor=actor, team=name, description=description)
        # Tokens tagged with this name before it existed were refused; they may now be allowed.
        self._on_change()
        return await self.show(name)

    async def delete(self, name: str, *, actor: str | None = None) -> TeamRecord:
        """Delete a team and its grants; refused while active tokens belong to it."""
        async with self._sessions() as s, s.begin():
            team = await repo.get_team(s, name)
            if team is None:
                raise _no_team(name)
            if team.tokens_active:
                q = shlex.quote(name)
                raise Conflict(
                    f"team {name!r} still has {team.tokens_active} active token(s)",
                    f"revoke them first: stockade token list --team {q}, then "
                    "stockade token revoke ID",
                )
            await repo.delete_team(s, name)
        self._audit.record(
            "team.delete",
            actor=actor,
            team=name,
            grants=[f"{g.index_name}:{g.scope.value}" for g in team.grants],
        )
        self._on_change()
        return team

    async def list(self) -> builtins.list[TeamRecord]:
        async with self._sessions() as s:
            teams = await repo.list_teams(s)
        return [await self._mark(t) for t in teams]

    async def show(self, name: str) -> TeamRecord:
        async with self._sessions() as s:
            team = await repo.get_team(s, name)
        if team is None:
            raise _no_team(name)
        return await self._mark(team)

    async def grant(
        self, team: str, index: str, scope: Scope, *, actor: str | None = None
    ) -> tuple[GrantRecord, Scope | None]:
        """Give ``team`` ``scope`` on ``index`` ("*" = every index), replacing any grant it
        had there. Returns the grant and the scope it replaced (None: a new grant)."""
        if index != ALL_INDEXES:
            await self._indexes.get(index)  # NotFound with a hint
        try:
            async with self._sessions() as s, s.begin():
                if not await repo.team_exists(s, team):
                    raise _no_team(team)
                made, previous = await repo.set_grant(
                    s, team=team, index_name=index, scope=scope, created_by=actor
                )
        except DBIntegrityError as exc:  # the same grant made concurrently, or team deleted
            raise Conflict(
                f"the grant of {index!r} to team {team!r} changed concurrently", "try again"
            ) from exc
        self._audit.record(
            "team.grant",
            actor=actor,
            index=None if index == ALL_INDEXES else index,
            team=team,
            grant_index=index,
            scope=scope.value,
            previous=previous.value if previous else None,
        )
        self._on_change()
        return made, previous

    async def revoke_grant(self, team: str, index: str, *, actor: str | None = None) -> GrantRecord:
        async with self._sessions() as s, s.begin():
            if not await repo.team_exists(s, team):
                raise _no_team(team)
            gone = await repo.delete_grant(s, team=team, index_name=index)
        if gone is None:
            raise NotFound(
                f"team {team!r} has no grant for index {index!r}",
                f"see `stockade team show {shlex.quote(team)}`",
            )
        self._audit.record(
            "team.revoke",
            actor=actor,
            index=None if index == ALL_INDEXES else index,
            team=team,
            grant_index=index,
            scope=gone.scope.value,
        )
        self._on_change()
        return gone

    async def _mark(self, team: TeamRecord) -> TeamRecord:
        """Flag grants whose index no longer exists (a grant outlives its index's deletion)."""
        known = {i.name for i in await self._indexes.list()} | {ALL_INDEXES}
        grants = tuple(
            dataclasses.replace(g, index_exists=g.index_name in known) for g in team.grants
        )
        return dataclasses.replace(team, grants=grants)
