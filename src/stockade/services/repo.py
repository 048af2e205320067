"""Database access. Functions take an AsyncSession and return plain values, never ORM rows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from stockade.core.auth import Grant, TokenInfo
from stockade.db.models import (
    AuditRow,
    FileRow,
    IndexRow,
    MirrorPageRow,
    TeamGrantRow,
    TeamRow,
    TokenRow,
)
from stockade.types import IndexKind, Scope


def utcnow() -> datetime:
    return datetime.now(UTC)


def aware(dt: datetime | None) -> datetime | None:
    if dt is None:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class IndexInfo:
    id: int
    name: str
    kind: IndexKind
    upstream_url: str | None
    members: tuple[str, ...]
    anonymous_read: bool
    description: str | None
    created_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind.value,
            "upstream": self.upstream_url,
            "members": list(self.members),
            "anonymous_read": self.anonymous_read,
            "description": self.description,
            "created_at": self.created_at.isoformat(),
        }


def _index(row: IndexRow) -> IndexInfo:
    return IndexInfo(
        id=row.id,
        name=row.name,
        kind=IndexKind(row.kind),
        upstream_url=row.upstream_url,
        members=tuple(row.members or ()),
        anonymous_read=row.anonymous_read,
        description=row.description,
        created_at=aware(row.created_at) or utcnow(),
    )


async def list_indexes(s: AsyncSession) -> list[IndexInfo]:
    rows = (await s.execute(select(IndexRow).order_by(IndexRow.name))).scalars()
    return [_index(r) for r in rows]


async def get_index(s: AsyncSession, name: str) -> IndexInfo | None:
    row = (await s.execute(select(IndexRow).where(IndexRow.name == name))).scalar_one_or_none()
    return _index(row) if row else None


async def insert_index(
    s: AsyncSession,
    *,
    name: str,
    kind: IndexKind,
    upstream_url: str | None,
    members: list[str],
    anonymous_read: bool,
    description: str | None,
) -> IndexInfo:
    row = IndexRow(
        name=name,
        kind=kind.value,
        upstream_url=upstream_url,
        members=members,
        anonymous_read=anonymous_read,
        description=description,
        created_at=utcnow(),
    )
    s.add(row)
    await s.flush()
    return _index(row)


async def update_index(s: AsyncSession, name: str, **values: Any) -> None:
    await s.execute(update(IndexRow).where(IndexRow.name == name).values(**values))


async def delete_index(s: AsyncSession, index_id: int) -> None:
    await s.execute(delete(FileRow).where(FileRow.index_id == index_id))
    await s.execute(delete(MirrorPageRow).where(MirrorPageRow.index_id == index_id))
    await s.execute(delete(IndexRow).where(IndexRow.id == index_id))


# -- tokens ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TokenRecord:
    info: TokenInfo
    note: str | None
    created_at: datetime
    created_by: str | None
    last_used_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        i = self.info
        return {
            "id": i.id,
            "index": i.index_name,
            "scope": i.scope.value,
            "team": i.team,
            "note": self.note,
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
            "expires_at": i.expires_at.isoformat() if i.expires_at else None,
            "revoked_at": i.revoked_at.isoformat() if i.revoked_at else None,
            "last_used_at": self.last_used_at.isoformat() if self.last_used_at else None,
        }


def _token(row: TokenRow, grants: tuple[Grant, ...] | None) -> TokenRecord:
    """``grants``: those of the token's team (None: no such team)."""
    return TokenRecord(
        info=TokenInfo(
            id=row.id,
            index_name=row.index_name,
            scope=Scope(row.scope),
            team=row.team or None,  # an empty tag never meant anything
            expires_at=aware(row.expires_at),
            revoked_at=aware(row.revoked_at),
            secret_hash=bytes(row.secret_hash),
            grants=grants,
        ),
        note=row.note,
        created_at=aware(row.created_at) or utcnow(),
        created_by=row.created_by,
        last_used_at=aware(row.last_used_at),
    )


async def insert_token(
    s: AsyncSession,
    *,
    token_id: str,
    secret_hash: bytes,
    index_name: str,
    scope: Scope,
    team: str | None,
    note: str | None,
    expires_at: datetime | None,
    created_by: str | None,
) -> TokenRecord:
    row = TokenRow(
        id=token_id,
        secret_hash=secret_hash,
        index_name=index_name,
        scope=scope.value,
        team=team,
        note=note,
        created_at=utcnow(),
        created_by=created_by,
        expires_at=expires_at,
    )
    s.add(row)
    await s.flush()
    return _token(row, await team_grants(s, team) if team else None)


async def get_token(s: AsyncSession, token_id: str) -> TokenRecord | None:
    """The token with its team's grants (what authorize() needs, cached together)."""
    row = await s.get(TokenRow, token_id)
    if row is None:
        return None
    return _token(row, await team_grants(s, row.team) if row.team else None)


async def list_tokens(
    s: AsyncSession, index: str | None = None, team: str | None = None
) -> list[TokenRecord]:
    q = select(TokenRow).order_by(TokenRow.created_at)
    if index:
        q = q.where(TokenRow.index_name == index)
    if team:
        q = q.where(TokenRow.team == team)
    rows = list((await s.execute(q)).scalars())
    grants = await all_team_grants(s) if any(r.team for r in rows) else {}
    return [_token(r, grants.get(r.team) if r.team else None) for r in rows]


async def revoke_token(s: AsyncSession, token_id: str) -> bool:
    res = await s.execute(
        update(TokenRow)
        .where(TokenRow.id == token_id, TokenRow.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    return bool(getattr(res, "rowcount", 0))


async def touch_tokens(s: AsyncSession, used: dict[str, datetime]) -> None:
    for token_id, at in used.items():
        await s.execute(update(TokenRow).where(TokenRow.id == token_id).values(last_used_at=at))


# -- teams -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GrantRecord:
    team: str
    index_name: str  # "*" = every index
    scope: Scope
    created_at: datetime
    created_by: str | None
    index_exists: bool = True  # filled in by TeamService: a grant may outlive its index

    @property
    def grant(self) -> Grant:
        return Grant(self.index_name, self.scope)

    def as_dict(self) -> dict[str, Any]:
        return {
            "team": self.team,
            "index": self.index_name,
            "scope": self.scope.value,
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
            "index_exists": self.index_exists,
        }


@dataclass(frozen=True, slots=True)
class TeamRecord:
    name: str
    description: str | None
    created_at: datetime
    created_by: str | None
    grants: tuple[GrantRecord, ...]
    tokens_active: int  # neither revoked nor expired
    tokens_total: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
            "grants": [g.as_dict() for g in self.grants],
            "tokens": {"active": self.tokens_active, "total": self.tokens_total},
        }


def _grant(row: TeamGrantRow) -> GrantRecord:
    return GrantRecord(
        team=row.team,
        index_name=row.index_name,
        scope=Scope(row.scope),
        created_at=aware(row.created_at) or utcnow(),
        created_by=row.created_by,
    )


async def team_grants(s: AsyncSession, team: str) -> tuple[Grant, ...] | None:
    """The grants of ``team``; None if there is no such team."""
    if await s.get(TeamRow, team) is None:
        return None
    q = select(TeamGrantRow).where(TeamGrantRow.team == team).order_by(TeamGrantRow.index_name)
    return tuple(_grant(r).grant for r in (await s.execute(q)).scalars())


async def all_team_grants(s: AsyncSession) -> dict[str, tuple[Grant, ...]]:
    """Every team's grants (teams without grants map to ``()``)."""
    out: dict[str, list[Grant]] = {n: [] for n in (await s.execute(select(TeamRow.name))).scalars()}
    q = select(TeamGrantRow).order_by(TeamGrantRow.team, TeamGrantRow.index_name)
    for r in (await s.execute(q)).scalars():
        out.setdefault(r.team, []).append(_grant(r).grant)
    return {k: tuple(v) for k, v in out.items()}


async def team_exists(s: AsyncSession, name: str) -> bool:
    return await s.get(TeamRow, name) is not None


async def _team_token_counts(s: AsyncSession, team: str | None = None) -> dict[str, list[int]]:
    """team → [active, total] (active: neither revoked nor expired). Counted here rather than
    in SQL because SQLite compares stored timestamps as text."""
    q = select(TokenRow.team, TokenRow.revoked_at, TokenRow.expires_at).where(
        TokenRow.team.is_not(None)
    )
    if team is not None:
        q = q.where(TokenRow.team == team)
    now = utcnow()
    counts: dict[str, list[int]] = {}
    for name, revoked_at, expires_at in (await s.execute(q)).all():
        c = counts.setdefault(str(name), [0, 0])
        c[1] += 1
        exp = aware(expires_at)
        if revoked_at is None and (exp is None or exp > now):
            c[0] += 1
    return counts


def _team(row: TeamRow, grants: list[GrantRecord], counts: list[int] | None) -> TeamRecord:
    active, total = counts or (0, 0)
    return TeamRecord(
        name=row.name,
        description=row.description,
        created_at=aware(row.created_at) or utcnow(),
        created_by=row.created_by,
        grants=tuple(grants),
        tokens_active=active,
        tokens_total=total,
    )


async def get_team(s: AsyncSession, name: str) -> TeamRecord | None:
    row = await s.get(TeamRow, name)
    if row is None:
        return None
    q = select(TeamGrantRow).where(TeamGrantRow.team == name).order_by(TeamGrantRow.index_name)
    grants = [_grant(r) for r in (await s.execute(q)).scalars()]
    return _team(row, grants, (await _team_token_counts(s, name)).get(name))


async def list_teams(s: AsyncSession) -> list[TeamRecord]:
    rows = list((await s.execute(select(TeamRow).order_by(TeamRow.name))).scalars())
    grants: dict[str, list[GrantRecord]] = {r.name: [] for r in rows}
    q = select(TeamGrantRow).order_by(TeamGrantRow.team, TeamGrantRow.index_name)
    for g in (await s.execute(q)).scalars():
        grants.setdefault(g.team, []).append(_grant(g))
    counts = await _team_token_counts(s)
    return [_team(r, grants[r.name], counts.get(r.name)) for r in rows]


async def insert_team(
    s: AsyncSession, *, name: str, description: str | None, created_by: str | None
) -> None:
    s.add(TeamRow(name=name, description=description, created_at=utcnow(), created_by=created_by))
    await s.flush()


async def delete_team(s: AsyncSession, name: str) -> None:
    await s.execute(delete(TeamGrantRow).where(TeamGrantRow.team == name))
    await s.execute(delete(TeamRow).where(TeamRow.name == name))


async def set_grant(
    s: AsyncSession, *, team: str, index_name: str, scope: Scope, created_by: str | None
) -> tuple[GrantRecord, Scope | None]:
    """Create or change the team's grant on ``index_name``; also returns the previous scope."""
    q = select(TeamGrantRow).where(TeamGrantRow.team == team, TeamGrantRow.index_name == index_name)
    row = (await s.execute(q)).scalar_one_or_none()
    previous = Scope(row.scope) if row is not None else None
    if row is None:
        row = TeamGrantRow(team=team, index_name=index_name)
        s.add(row)
    row.scope = scope.value
    row.created_at = utcnow()  # the grant as it stands now was made now, by created_by
    row.created_by = created_by
    await s.flush()
    return _grant(row), previous


async def delete_grant(s: AsyncSession, *, team: str, index_name: str) -> GrantRecord | None:
    q = select(TeamGrantRow).where(TeamGrantRow.team == team, TeamGrantRow.index_name == index_name)
    row = (await s.execute(q)).scalar_one_or_none()
    if row is None:
        return None
    found = _grant(row)
    await s.delete(row)
    await s.flush()
    return found


# -- files -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileInfo:
    id: int
    index_id: int
    project: str
    display_name: str
    version: str
    filename: str
    packagetype: str
    sha256: str
    size: int
    requires_python: str | None
    metadata_sha256: str | None
    yanked: bool
    yanked_reason: str | None
    upload_time: datetime
    uploaded_by: str | None
    origin_url: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "project": self.project,
            "version": self.version,
            "filename": self.filename,
            "packagetype": self.packagetype,
            "sha256": self.sha256,
            "size": self.size,
            "requires_python": self.requires_python,
            "yanked": self.yanked,
            "yanked_reason": self.yanked_reason,
            "upload_time": self.upload_time.isoformat(),
            "uploaded_by": self.uploaded_by,
            "origin_url": self.origin_url,
        }


def _file(row: FileRow) -> FileInfo:
    return FileInfo(
        id=row.id,
        index_id=row.index_id,
        project=row.project,
        display_name=row.display_name,
        version=row.version,
        filename=row.filename,
        packagetype=row.packagetype,
        sha256=row.sha256,
        size=row.size,
        requires_python=row.requires_python,
        metadata_sha256=row.metadata_sha256,
        yanked=row.yanked,
        yanked_reason=row.yanked_reason,
        upload_time=aware(row.upload_time) or utcnow(),
        uploaded_by=row.uploaded_by,
        origin_url=row.origin_url,
    )


async def list_files(s: AsyncSession, index_id: int, project: str | None = None) -> list[FileInfo]:
    q = select(FileRow).where(FileRow.index_id == index_id)
    if project is not None:
        q = q.where(FileRow.project == project)
    q = q.order_by(FileRow.project, FileRow.upload_time, FileRow.filename)
    return [_file(r) for r in (await s.execute(q)).scalars()]


async def get_file(s: AsyncSession, index_id: int, filename: str) -> FileInfo | None:
    q = select(FileRow).where(FileRow.index_id == index_id, FileRow.filename == filename)
    row = (await s.execute(q)).scalar_one_or_none()
    return _file(row) if row else None


async def list_projects(s: AsyncSession, index_id: int) -> list[str]:
    q = select(FileRow.project).where(FileRow.index_id == index_id).distinct()
    return sorted(r for r in (await s.execute(q)).scalars())


async def insert_file(s: AsyncSession, **values: Any) -> FileInfo:
    row = FileRow(**values)
    s.add(row)
    await s.flush()
    return _file(row)


async def set_yanked(
    s: AsyncSession, index_id: int, project: str, version: str, yanked: bool, reason: str | None
) -> int:
    res = await s.execute(
        update(FileRow)
        .where(FileRow.index_id == index_id, FileRow.project == project, FileRow.version == version)
        .values(yanked=yanked, yanked_reason=reason if yanked else None)
    )
    return int(getattr(res, "rowcount", 0))


async def delete_files(s: AsyncSession, ids: list[int]) -> None:
    await s.execute(delete(FileRow).where(FileRow.id.in_(ids)))


async def sha_in_use(s: AsyncSession, sha256: str) -> bool:
    q = select(func.count()).select_from(FileRow).where(FileRow.sha256 == sha256)
    return bool((await s.execute(q)).scalar_one())


# -- mirror pages ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PageRecord:
    data: str
    etag: str | None
    last_modified: str | None
    fetched_at: datetime
    exists_upstream: bool


async def get_page(s: AsyncSession, index_id: int, project: str) -> PageRecord | None:
    q = select(MirrorPageRow).where(
        MirrorPageRow.index_id == index_id, MirrorPageRow.project == project
    )
    row = (await s.execute(q)).scalar_one_or_none()
    if row is None:
        return None
    return PageRecord(
        data=row.data,
        etag=row.etag,
        last_modified=row.last_modified,
        fetched_at=aware(row.fetched_at) or utcnow(),
        exists_upstream=row.exists_upstream,
    )


async def upsert_page(
    s: AsyncSession,
    index_id: int,
    project: str,
    *,
    data: str | None,
    etag: str | None,
    last_modified: str | None,
    exists_upstream: bool,
) -> None:
    q = select(MirrorPageRow).where(
        MirrorPageRow.index_id == index_id, MirrorPageRow.project == project
    )
    row = (await s.execute(q)).scalar_one_or_none()
    now = utcnow()
    if row is None:
        s.add(
            MirrorPageRow(
                index_id=index_id,
                project=project,
                data=data or "",
                etag=etag,
                last_modified=last_modified,
                fetched_at=now,
                exists_upstream=exists_upstream,
            )
        )
    else:
        if data is not None:
            row.data = data
        row.etag = etag
        row.last_modified = last_modified
        row.fetched_at = now
        row.exists_upstream = exists_upstream
    await s.flush()


async def mirror_projects(s: AsyncSession, index_id: int) -> list[str]:
    q = select(MirrorPageRow.project).where(
        MirrorPageRow.index_id == index_id, MirrorPageRow.exists_upstream.is_(True)
    )
    return sorted((await s.execute(q)).scalars())


# -- audit -------------------------------------------------------------------------------------


async def insert_audit(s: AsyncSession, events: list[dict[str, Any]]) -> None:
    """One multi-row INSERT for the batch (no ORM objects: the audit writer is hot)."""
    if events:
        await s.execute(insert(AuditRow), events)


async def list_audit(s: AsyncSession, limit: int = 100, **filters: Any) -> list[dict[str, Any]]:
    q = select(AuditRow).order_by(AuditRow.id.desc()).limit(limit)
    for key, value in filters.items():
        if value is not None:
            q = q.where(getattr(AuditRow, key) == value)
    out = []
    for r in (await s.execute(q)).scalars():
        out.append(
            {
                "id": r.id,
                "at": (aware(r.at) or utcnow()).isoformat(),
                "actor": r.actor,
                "action": r.action,
                "index": r.index_name,
                "project": r.project,
                "filename": r.filename,
                "outcome": r.outcome,
                "client": r.client,
                "detail": r.detail,
            }
        )
    return out
