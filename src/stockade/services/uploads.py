"""Uploads to private indexes (the legacy upload API twine speaks), yank and delete."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
from sqlalchemy.exc import IntegrityError as DBIntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from stockade.core.archives import ArchiveLimits, validate_distribution
from stockade.core.ports import BlobStore, BlobWriter
from stockade.errors import Conflict, InvalidRequest, NotFound, UploadRejected
from stockade.services import repo
from stockade.services.audit import AuditLog
from stockade.services.metadata import MetadataService
from stockade.services.pages import PageService
from stockade.services.provenance import (
    ProvenanceError,
    ProvenanceService,
    Verified,
    verify_attestations,
)
from stockade.services.repo import FileInfo, IndexInfo
from stockade.services.threats import ThreatService
from stockade.types import IndexKind, canonicalize_name

if TYPE_CHECKING:
    from stockade.services.identity import IdentityService

log = logging.getLogger("stockade.uploads")


@dataclass(frozen=True, slots=True)
class UploadForm:
    """The fields of a legacy-API upload that Stockade checks."""

    filename: str
    name: str | None = None
    version: str | None = None
    sha256_digest: str | None = None
    md5_digest: str | None = None
    blake2_256_digest: str | None = None
    attestations: str | None = None  # PEP 740: a JSON array (twine upload --attestations)


class UploadService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        store: BlobStore,
        pages: PageService,
        audit: AuditLog,
        metadata: MetadataService | None = None,
        threats: ThreatService | None = None,
        limits: ArchiveLimits | None = None,
    ) -> None:
        self._metadata = metadata
        self._threats = threats
        self._sessions = sessions
        self._store = store
        self._pages = pages
        self._audit = audit
        self._limits = limits or ArchiveLimits()
        # Called with (index, project) after its files changed (upload, yank, delete): TUF.
        self.on_change: Callable[[IndexInfo, str], None] | None = None
        self.provenance: ProvenanceService | None = None  # PEP 740 attestations
        self.identity: IdentityService | None = None  # publisher changes between versions

    def _changed(self, index: IndexInfo, project: str) -> None:
        if self.on_change is not None:
            self.on_change(index, project)

    async def accept(
        self,
        index: IndexInfo,
        form: UploadForm,
        writer: BlobWriter,
        *,
        actor: str | None,
        md5: str,
        blake2: str,
    ) -> FileInfo:
        """Validate the upload held in ``writer`` and store it; the writer is always finished."""
        try:
            if index.kind is not IndexKind.PRIVATE:
                raise InvalidRequest(
                    f"index {index.name!r} is a {index.kind.value} index; "
                    "uploads go to private ones",
                    "upload to a private member, e.g. --repository-url …/pypi/<private>/",
                )
            sha = writer.hexdigest()
            for field, given, actual in (
                ("sha256_digest", form.sha256_digest, sha),
                ("md5_digest", form.md5_digest, md5),
                ("blake2_256_digest", form.blake2_256_digest, blake2),
            ):
                if given and given.strip().lower() != actual:
                    raise UploadRejected(
                        f"{field} {given[:16]}… does not match the received file ({actual[:16]}…)",
                        "the upload was corrupted in transit; retry",
                    )
            if writer.size == 0:
                raise UploadRejected("the uploaded file is empty")
            async with self._sessions() as s:
                if await repo.get_file(s, index.id, form.filename):
                    raise self._exists(index, form.filename)
            meta = await anyio.to_thread.run_sync(
                lambda: validate_distribution(
                    writer.path,
                    form.filename,
                    limits=self._limits,
                    expected_name=form.name,
                    expected_version=form.version,
                )
            )
            verified = await self._verify_attestations(form, sha)
            metadata_sha = (
                hashlib.sha256(meta.metadata).hexdigest()
                if meta.packagetype == "bdist_wheel"
                else None
            )
            size = writer.size
            # The row is inserted first, inside the transaction: the unique constraint decides a
            # race between concurrent uploads of one filename before any byte is stored, and the
            # bytes are stored before the row becomes visible. A loser stores nothing.
            stored: list[str] = []
            try:
                async with self._sessions() as s, s.begin():
                    try:
                        info = await repo.insert_file(
                            s,
                            index_id=index.id,
                            project=meta.name,
                            display_name=meta.display_name,
                            version=meta.version,
                            filename=form.filename,
                            packagetype=meta.packagetype,
                            sha256=sha,
                            size=size,
                            requires_python=meta.requires_python,
                            metadata_sha256=metadata_sha,
                            yanked=False,
                            upload_time=repo.utcnow(),
                            uploaded_by=actor,
                        )
                    except DBIntegrityError as exc:
                        raise self._exists(index, form.filename) from exc
                    if verified is not None:
                        await ProvenanceService.record_upload(
                            s,
                            index.name,
                            canonicalize_name(meta.name),
                            form.filename,
                            sha,
                            verified,
                        )
                    if metadata_sha is not None and not self._store.exists(metadata_sha):
                        await anyio.to_thread.run_sync(self._store.put_bytes, meta.metadata)
                        stored.append(metadata_sha)
                    if not self._store.exists(sha):
                        await anyio.to_thread.run_sync(writer.commit, sha)  # S3: an upload
                        stored.append(sha)
            except DBIntegrityError as exc:  # lost the race at commit time (PostgreSQL)
                await self._discard(stored)
                raise self._exists(index, form.filename) from exc
            except BaseException:
                await self._discard(stored)
                raise
            if self._metadata is not None:
                await self._metadata.record(sha, meta.name, meta.version, meta.metadata, "upload")
            if self._threats is not None:
                self._threats.enqueue(sha, form.filename)
            publisher = verified.publishers[0].label if verified and verified.publishers else None
            if self.identity is not None:
                try:
                    await self.identity.record_version(
                        index.name,
                        canonicalize_name(meta.name),
                        meta.version,
                        publisher,
                        verified is not None,
                        info.upload_time,
                    )
                except Exception:  # the file is stored; the publisher record is a check
                    log.exception("recording the publisher of %s failed", form.filename)
            self._pages.clear()
            self._changed(index, canonicalize_name(meta.name))
            self._audit.record(
                "upload",
                actor=actor,
                index=index.name,
                project=meta.name,
                filename=form.filename,
                sha256=sha,
                size=size,
                version=meta.version,
                publisher=publisher,
            )
            return info
        finally:
            writer.abort()  # no-op once committed

    async def _verify_attestations(self, form: UploadForm, sha: str) -> Verified | None:
        """PEP 740: the upload's attestations, verified against the received file's sha256
        (nothing is stored when they do not verify)."""
        if not form.attestations:
            return None
        try:
            return await anyio.to_thread.run_sync(
                verify_attestations, form.attestations, form.filename, sha
            )
        except ProvenanceError as exc:
            raise UploadRejected(
                f"attestations of {form.filename} refused: {exc}",
                "attest the file that is uploaded, from a Trusted Publisher workflow "
                "(pypa/gh-action-pypi-publish with attestations: true), or upload without "
                "--attestations",
            ) from exc

    async def yank(
        self,
        index: IndexInfo,
        project: str,
        version: str,
        *,
        reason: str | None,
        yanked: bool = True,
        actor: str | None = None,
    ) -> int:
        self._require_private(index)
        name = canonicalize_name(project)
        async with self._sessions() as s, s.begin():
            n = await repo.set_yanked(s, index.id, name, version, yanked, reason)
        if n == 0:
            raise NotFound(f"{name} {version} has no files on index {index.name!r}")
        self._pages.clear()
        self._changed(index, name)
        self._audit.record(
            "yank" if yanked else "unyank",
            actor=actor,
            index=index.name,
            project=name,
            version=version,
            reason=reason,
            files=n,
        )
        return n

    async def delete(
        self,
        index: IndexInfo,
        project: str,
        version: str | None = None,
        filename: str | None = None,
        *,
        actor: str | None = None,
    ) -> list[FileInfo]:
        self._require_private(index)
        name = canonicalize_name(project)
        async with self._sessions() as s, s.begin():
            files = await repo.list_files(s, index.id, name)
            doomed = [
                f
                for f in files
                if (version is None or f.version == version)
                and (filename is None or f.filename == filename)
            ]
            if not doomed:
                raise NotFound(f"nothing matches on index {index.name!r}")
            await repo.delete_files(s, [f.id for f in doomed])
            if self.provenance is not None:
                await self.provenance.forget_in(s, index.name, [f.filename for f in doomed])
            for f in doomed:
                if not await repo.sha_in_use(s, f.sha256):
                    self._store.delete(f.sha256)
        self._pages.clear()
        self._changed(index, name)
        for f in doomed:
            self._audit.record(
                "delete",
                actor=actor,
                index=index.name,
                project=name,
                filename=f.filename,
                sha256=f.sha256,
            )
        return doomed

    @staticmethod
    def _exists(index: IndexInfo, filename: str) -> Conflict:
        return Conflict(
            f"{filename} already exists on index {index.name!r}; files are immutable",
            "upload a new version: each filename can be uploaded once",
        )

    async def _discard(self, shas: list[str]) -> None:
        """Remove blobs this upload stored, unless a committed row uses them."""
        for sha in shas:
            async with self._sessions() as s:
                if not await repo.sha_in_use(s, sha):
                    self._store.delete(sha)

    @staticmethod
    def _require_private(index: IndexInfo) -> None:
        if index.kind is not IndexKind.PRIVATE:
            raise InvalidRequest(
                f"index {index.name!r} is a {index.kind.value} index; only private indexes hold "
                "uploaded files to yank or delete"
            )


class Digests:
    """md5 and blake2b-256 alongside the blob writer's sha256 (the legacy API sends all three)."""

    def __init__(self) -> None:
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.blake2 = hashlib.blake2b(digest_size=32)

    def update(self, data: bytes) -> None:
        self.md5.update(data)
        self.blake2.update(data)

    def result(self) -> dict[str, Any]:
        return {"md5": self.md5.hexdigest(), "blake2": self.blake2.hexdigest()}
