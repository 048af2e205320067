"""Facts read from files' core metadata (licences, Requires-Python), by content hash.

A file's core metadata never changes, so what Stockade reads once is kept for good (table
``file_metadata``) and cached in this process. It is read:

* on upload (the validated METADATA / PKG-INFO),
* when a mirror stores a file (read back from the blob, in a worker thread),
* from the upstream's PEP 658 ``.metadata`` when a policy needs the facts before anyone has
  downloaded the file (:meth:`MetadataService.learn`, bounded per page build).

Licences are per release in practice, so a file with no facts of its own borrows those of
another file of the same version (:func:`facts_by_file`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from pathlib import Path

import httpx
from packaging.utils import canonicalize_name
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError as DBIntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from stockade.core.archives import validate_distribution
from stockade.core.policy.licenses import license_from_metadata
from stockade.core.ports import BlobStore
from stockade.core.simple import FileEntry, ProjectPage, version_key
from stockade.db.models import FileMetadataRow
from stockade.errors import BlobMissing, StockadeError, StorageUnavailable
from stockade.services.repo import utcnow

log = logging.getLogger(__name__)

METADATA_MAX = 4 * 1024**2
LEARN_VERSIONS = 40  # newest versions without facts fetched per page build
LEARN_CONCURRENCY = 8
LEARN_BUDGET = 10.0  # seconds a page build may spend fetching metadata
LEARN_FILE_MAX = 10 * 1024**2  # no PEP 658 metadata: fetch (and keep) files up to this size
CACHE_MAX = 200_000
BY_PROJECT_ABOVE = 50  # get_many: more missing files than this are read per project


@dataclass(frozen=True, slots=True)
class MetaFacts:
    sha256: str
    project: str
    version: str | None
    license: str | None  # normalized SPDX expression; None: none found or not readable
    license_raw: str | None
    license_source: str | None
    requires_python: str | None
    source: str  # upload | file | metadata
    error: str | None = None


def parse_facts(
    sha256: str, project: str, version: str | None, metadata: bytes | None, source: str
) -> MetaFacts:
    """Facts from core metadata bytes (never raises: unreadable metadata is an error fact)."""
    if metadata is None:
        return MetaFacts(sha256, project, version, None, None, None, None, source, "no metadata")
    info = license_from_metadata(metadata)
    try:
        headers = BytesHeaderParser().parsebytes(metadata[:METADATA_MAX])
        requires_python = headers.get("Requires-Python")
    except Exception:
        requires_python = None
    return MetaFacts(
        sha256,
        project,
        version,
        info.expression,
        info.raw,
        info.source,
        str(requires_python)[:255] if requires_python else None,
        source,
    )


def facts_by_file(page: ProjectPage, known: dict[str, MetaFacts]) -> dict[str, MetaFacts]:
    """Facts per filename: the file's own, else those of another file of its version (the
    first wheel's that has some, else the first other file's)."""
    wheels: dict[str, MetaFacts] = {}  # per version: from its first wheel with facts
    others: dict[str, MetaFacts] = {}  # per version: from its first other file with facts
    lacking: list[tuple[str, str | None]] = []  # (filename, version) of files without
    out: dict[str, MetaFacts] = {}
    for f in page.files:
        own = known.get((f.sha256 or "").lower())
        if own is None or own.error is not None:
            lacking.append((f.filename, f.version))
            continue
        out[f.filename] = own
        v = f.version
        if v:
            (wheels if f.filename.endswith(".whl") else others).setdefault(v, own)
    for filename, v in lacking:
        borrowed = wheels.get(v) or others.get(v) if v else None
        if borrowed is not None:
            out[filename] = borrowed
    return out


class MetadataService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        store: BlobStore,
        client: httpx.AsyncClient,
    ) -> None:
        self._sessions = sessions
        self._store = store
        self._client = client
        self._cache: dict[str, MetaFacts] = {}
        # Called with the project whenever new facts are stored, so pages decided without
        # them (a licence rule) are decided again now rather than when their TTL ends.
        self.on_new: Callable[[str], None] | None = None

    async def get_many(
        self, shas: Iterable[str], project: str | None = None
    ) -> dict[str, MetaFacts]:
        """Stored facts of these files. With ``project`` (the files' project), many missing
        files are read with one indexed query for the project instead of lists of digests."""
        wanted = {s.lower() for s in shas if s}
        cache = self._cache
        out = {s: got for s in wanted if (got := cache.get(s)) is not None}
        missing = wanted - out.keys()
        if not missing:
            return out
        c = FileMetadataRow.__table__.c  # Core columns: plain rows, no ORM loading per row
        cols = (
            c.sha256,
            c.project,
            c.version,
            c.license_expression,
            c.license_raw,
            c.license_source,
            c.requires_python,
            c.source,
            c.error,
        )
        async with self._sessions() as s:
            conn = await s.connection()
            if project is not None and len(missing) > BY_PROJECT_ABOVE:
                by_project = select(*cols).where(c.project == canonicalize_name(project))
                for row in (await conn.execute(by_project)).all():
                    if row[0] in missing:
                        out[row[0]] = self._remember(MetaFacts(*row))
                return out  # a file of the project not found under it has no facts yet
            ordered = sorted(missing)
            for i in range(0, len(ordered), 500):
                q = select(*cols).where(c.sha256.in_(ordered[i : i + 500]))
                for row in (await conn.execute(q)).all():
                    out[row[0]] = self._remember(MetaFacts(*row))
        return out

    def _remember(self, facts: MetaFacts) -> MetaFacts:
        if len(self._cache) >= CACHE_MAX:
            self._cache.clear()
        self._cache[facts.sha256] = facts
        return facts

    async def save(self, facts: MetaFacts, *, announce: bool = True) -> MetaFacts:
        """Store facts (first writer wins: a file's metadata is immutable)."""
        try:
            async with self._sessions() as s, s.begin():
                s.add(
                    FileMetadataRow(
                        sha256=facts.sha256,
                        project=canonicalize_name(facts.project),
                        version=facts.version,
                        license_expression=facts.license,
                        license_raw=facts.license_raw,
                        license_source=facts.license_source,
                        requires_python=facts.requires_python,
                        source=facts.source,
                        error=facts.error,
                        created_at=utcnow(),
                    )
                )
        except DBIntegrityError:
            return (await self.get_many([facts.sha256])).get(facts.sha256, facts)
        if announce and self.on_new is not None:
            self.on_new(canonicalize_name(facts.project))
        return self._remember(facts)

    async def record(
        self,
        sha256: str,
        project: str,
        version: str | None,
        metadata: bytes,
        source: str,
        *,
        announce: bool = True,
    ) -> MetaFacts:
        facts = parse_facts(sha256.lower(), project, version, metadata, source)
        return await self.save(facts, announce=announce)

    async def from_stored_file(
        self,
        sha256: str,
        project: str,
        version: str | None,
        filename: str,
        *,
        announce: bool = True,
    ) -> MetaFacts | None:
        """Read the metadata of a stored distribution (wheel or sdist) and keep the facts."""
        sha = sha256.lower()
        if sha in (await self.get_many([sha])):
            return self._cache[sha]
        try:
            async with self._store.open_local(sha) as path:
                meta = await asyncio.to_thread(_read_metadata, path, filename)
            facts = parse_facts(sha, project, version, meta, "file")
        except BlobMissing:
            return None
        except StorageUnavailable:
            raise  # not a fact about the file: try again another time
        except StockadeError as exc:
            facts = MetaFacts(sha, project, version, None, None, None, None, "file", exc.message)
        return await self.save(facts, announce=announce)

    async def learn(self, page: ProjectPage) -> dict[str, MetaFacts]:
        """Facts per filename for ``page``, fetching upstream PEP 658 metadata (newest versions
        first, bounded in count and time) for versions Stockade knows nothing about yet."""
        known = await self.get_many((f.sha256 for f in page.files if f.sha256), page.name)
        have = facts_by_file(page, known)
        versions: dict[str, FileEntry] = {}
        for f in page.files:
            if f.filename in have or not f.url or not f.sha256:
                continue
            v = f.version
            if v is None:
                continue
            if not f.has_metadata and (f.size is None or f.size > LEARN_FILE_MAX):
                continue
            if any(g.version == v and g.filename in have for g in page.files):
                continue
            if v not in versions or _preference(f) < _preference(versions[v]):
                versions[v] = f
        todo = sorted(versions, key=version_key, reverse=True)[:LEARN_VERSIONS]
        if not todo:
            return have
        sem = asyncio.Semaphore(LEARN_CONCURRENCY)
        deadline = time.monotonic() + LEARN_BUDGET

        async def one(entry: FileEntry) -> None:
            async with sem:
                if time.monotonic() > deadline:
                    return
                await self._fetch(page.name, entry)

        tasks = [asyncio.create_task(one(versions[v])) for v in todo]
        _done, pending = await asyncio.wait(tasks, timeout=LEARN_BUDGET)
        for t in pending:
            t.cancel()
        known = await self.get_many(f.sha256 for f in page.files if f.sha256)
        return facts_by_file(page, known)

    async def _fetch(self, project: str, entry: FileEntry) -> None:
        assert entry.url
        assert entry.sha256
        if not entry.has_metadata:
            await self._fetch_file(project, entry)
            return
        url = entry.url.split("#", 1)[0] + ".metadata"
        try:
            resp = await self._client.get(url)
        except httpx.HTTPError as exc:
            log.info("metadata of %s: %s", entry.filename, exc)
            return
        if resp.status_code != 200 or len(resp.content) > METADATA_MAX:
            log.info("metadata of %s: HTTP %s", entry.filename, resp.status_code)
            return
        body = resp.content
        if entry.metadata_sha256 and hashlib.sha256(body).hexdigest() != entry.metadata_sha256:
            log.warning("metadata of %s does not match its published hash", entry.filename)
            return
        if entry.metadata_sha256:
            self._store.put_bytes(body)  # served later as the file's .metadata
        await self.record(entry.sha256, project, entry.version, body, "metadata", announce=False)

    async def _fetch_file(self, project: str, entry: FileEntry) -> None:
        """A small file without PEP 658 metadata: fetch it whole (hash-checked, then kept, so a
        later download is served from storage) and read its metadata."""
        assert entry.url
        assert entry.sha256
        sha = entry.sha256.lower()
        if not self._store.exists(sha):
            try:
                resp = await self._client.get(entry.url.split("#", 1)[0])
            except httpx.HTTPError as exc:
                log.info("fetching %s for its metadata: %s", entry.filename, exc)
                return
            body = resp.content
            if resp.status_code != 200 or len(body) > LEARN_FILE_MAX:
                return
            if hashlib.sha256(body).hexdigest() != sha:
                log.warning("%s does not match its published hash; not kept", entry.filename)
                return
            self._store.put_bytes(body)
        await self.from_stored_file(sha, project, entry.version, entry.filename, announce=False)


def _preference(f: FileEntry) -> tuple[bool, bool, int]:
    """Which file of a version to read: advertised metadata first, then wheels, then small."""
    return (not f.has_metadata, not f.filename.endswith(".whl"), f.size or 0)


def _read_metadata(path: Path, filename: str) -> bytes:
    return validate_distribution(path, filename).metadata
