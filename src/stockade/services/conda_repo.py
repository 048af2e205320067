"""Database access for conda channels. Functions take an AsyncSession and return plain values."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from stockade.db.models import (
    CondaChannelRow,
    CondaPackageRow,
    CondaRepodataRow,
    CondaTrustMetadataRow,
)
from stockade.services.repo import aware, utcnow


@dataclass(frozen=True, slots=True)
class CondaPackageInfo:
    index_id: int
    subdir: str
    filename: str
    name: str
    version: str
    build: str
    sha256: str
    md5: str
    size: int
    source: str
    uploaded_at: datetime
    uploaded_by: str | None
    record: dict[str, Any]
    yanked_at: datetime | None = None
    yank_reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "subdir": self.subdir,
            "filename": self.filename,
            "name": self.name,
            "version": self.version,
            "build": self.build,
            "sha256": self.sha256,
            "md5": self.md5,
            "size": self.size,
            "source": self.source,
            "uploaded_at": self.uploaded_at.isoformat(),
            "uploaded_by": self.uploaded_by,
            "yanked": self.yanked_at is not None,
            "yanked_at": self.yanked_at.isoformat() if self.yanked_at else None,
            "yank_reason": self.yank_reason,
        }


@dataclass(frozen=True, slots=True)
class RepodataState:
    """One served repodata document: blobs by sha256; for mirrors, the upstream validators."""

    path: str
    json_sha256: str | None
    zst_sha256: str | None
    gz_sha256: str | None
    shards_sha256: str | None
    source_sha256: str | None
    etag: str | None
    last_modified: str | None
    variant: str | None
    fetched_at: datetime
    exists_upstream: bool
    packages: int
    policy_key: str | None = None

    def blobs(self) -> set[str]:
        shas = (
            self.json_sha256,
            self.zst_sha256,
            self.gz_sha256,
            self.shards_sha256,
            self.source_sha256,
        )
        return {s for s in shas if s}


def _package(row: CondaPackageRow) -> CondaPackageInfo:
    return CondaPackageInfo(
        index_id=row.index_id,
        subdir=row.subdir,
        filename=row.filename,
        name=row.name,
        version=row.version,
        build=row.build,
        sha256=row.sha256,
        md5=row.md5,
        size=row.size,
        source=row.source,
        uploaded_at=aware(row.uploaded_at) or utcnow(),
        uploaded_by=row.uploaded_by,
        record=orjson.loads(row.record),
        yanked_at=aware(row.yanked_at),
        yank_reason=row.yank_reason,
    )


def _state(row: CondaRepodataRow) -> RepodataState:
    return RepodataState(
        path=row.path,
        json_sha256=row.json_sha256,
        zst_sha256=row.zst_sha256,
        gz_sha256=row.gz_sha256,
        shards_sha256=row.shards_sha256,
        source_sha256=row.source_sha256,
        etag=row.etag,
        last_modified=row.last_modified,
        variant=row.variant,
        fetched_at=aware(row.fetched_at) or utcnow(),
        exists_upstream=row.exists_upstream,
        packages=row.packages,
        policy_key=row.policy_key,
    )


async def channel_subdirs(s: AsyncSession) -> dict[int, tuple[list[str], datetime | None]]:
    """index id → (mirrored subdirs, since when its records are signed)."""
    rows = (await s.execute(select(CondaChannelRow))).scalars()
    return {r.index_id: (list(r.subdirs or []), aware(r.signed_at)) for r in rows}


async def set_signed(s: AsyncSession, index_id: int, at: datetime | None) -> bool:
    """Turn signing on (``at``) or off (None) for a channel; False when it has no row."""
    row = await s.get(CondaChannelRow, index_id)
    if row is None:
        return False
    row.signed_at = at
    await s.flush()
    return True


async def trust_documents(s: AsyncSession, role: str) -> list[tuple[int, bytes, datetime]]:
    """(version, bytes, expiry) of every stored ``role`` document, oldest first."""
    rows = (
        await s.execute(
            select(CondaTrustMetadataRow)
            .where(CondaTrustMetadataRow.role == role)
            .order_by(CondaTrustMetadataRow.version)
        )
    ).scalars()
    return [(r.version, r.data, aware(r.expires) or utcnow()) for r in rows]


async def add_trust_document(
    s: AsyncSession, role: str, version: int, data: bytes, expires: datetime
) -> None:
    s.add(
        CondaTrustMetadataRow(
            role=role, version=version, data=data, expires=expires, created_at=utcnow()
        )
    )
    await s.flush()


async def insert_channel(s: AsyncSession, index_id: int, subdirs: list[str]) -> None:
    s.add(CondaChannelRow(index_id=index_id, subdirs=subdirs))
    await s.flush()


async def _package_row(
    s: AsyncSession, index_id: int, subdir: str, filename: str
) -> CondaPackageRow | None:
    return (
        await s.execute(
            select(CondaPackageRow).where(
                CondaPackageRow.index_id == index_id,
                CondaPackageRow.subdir == subdir,
                CondaPackageRow.filename == filename,
            )
        )
    ).scalar_one_or_none()


async def delete_package(s: AsyncSession, index_id: int, subdir: str, filename: str) -> bool:
    row = await _package_row(s, index_id, subdir, filename)
    if row is None:
        return False
    await s.delete(row)
    await s.flush()
    return True


async def set_yanked(
    s: AsyncSession, index_id: int, subdir: str, filename: str, reason: str | None, yank: bool
) -> CondaPackageInfo | None:
    row = await _package_row(s, index_id, subdir, filename)
    if row is None:
        return None
    row.yanked_at = utcnow() if yank else None
    row.yank_reason = reason if yank else None
    await s.flush()
    return _package(row)


async def get_package(
    s: AsyncSession, index_id: int, subdir: str, filename: str
) -> CondaPackageInfo | None:
    row = (
        await s.execute(
            select(CondaPackageRow).where(
                CondaPackageRow.index_id == index_id,
                CondaPackageRow.subdir == subdir,
                CondaPackageRow.filename == filename,
            )
        )
    ).scalar_one_or_none()
    return _package(row) if row else None


async def list_packages(
    s: AsyncSession, index_id: int, subdir: str | None = None, name: str | None = None
) -> list[CondaPackageInfo]:
    q = select(CondaPackageRow).where(CondaPackageRow.index_id == index_id)
    if subdir is not None:
        q = q.where(CondaPackageRow.subdir == subdir)
    if name is not None:
        q = q.where(CondaPackageRow.name == name)
    q = q.order_by(CondaPackageRow.subdir, CondaPackageRow.name, CondaPackageRow.filename)
    return [_package(r) for r in (await s.execute(q)).scalars()]


async def insert_package(
    s: AsyncSession,
    *,
    index_id: int,
    subdir: str,
    filename: str,
    name: str,
    version: str,
    build: str,
    sha256: str,
    md5: str,
    size: int,
    record: dict[str, Any],
    source: str,
    uploaded_by: str | None,
) -> CondaPackageInfo:
    row = CondaPackageRow(
        index_id=index_id,
        subdir=subdir,
        filename=filename,
        name=name,
        version=version,
        build=build,
        sha256=sha256,
        md5=md5,
        size=size,
        record=orjson.dumps(record).decode(),
        source=source,
        uploaded_at=utcnow(),
        uploaded_by=uploaded_by,
    )
    s.add(row)
    await s.flush()
    return _package(row)


async def get_state(s: AsyncSession, index_id: int, path: str) -> RepodataState | None:
    row = (
        await s.execute(
            select(CondaRepodataRow).where(
                CondaRepodataRow.index_id == index_id, CondaRepodataRow.path == path
            )
        )
    ).scalar_one_or_none()
    return _state(row) if row else None


async def put_state(s: AsyncSession, index_id: int, path: str, **values: Any) -> RepodataState:
    """Insert or update the state of ``path`` (callers serialise writers of one path)."""
    row = (
        await s.execute(
            select(CondaRepodataRow).where(
                CondaRepodataRow.index_id == index_id, CondaRepodataRow.path == path
            )
        )
    ).scalar_one_or_none()
    if row is None:
        row = CondaRepodataRow(index_id=index_id, path=path, **values)
        s.add(row)
    else:
        for key, value in values.items():
            setattr(row, key, value)
    await s.flush()
    return _state(row)


async def blob_in_use(s: AsyncSession, sha: str) -> bool:
    """Whether any conda row still points at the blob ``sha``."""
    n = (
        await s.execute(
            select(func.count())
            .select_from(CondaRepodataRow)
            .where(
                or_(
                    CondaRepodataRow.json_sha256 == sha,
                    CondaRepodataRow.zst_sha256 == sha,
                    CondaRepodataRow.gz_sha256 == sha,
                    CondaRepodataRow.shards_sha256 == sha,
                    CondaRepodataRow.source_sha256 == sha,
                )
            )
        )
    ).scalar_one()
    if n:
        return True
    m = (
        await s.execute(
            select(func.count()).select_from(CondaPackageRow).where(CondaPackageRow.sha256 == sha)
        )
    ).scalar_one()
    return bool(m)
