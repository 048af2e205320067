"""Serving distribution files: from storage, or fetched through from a mirror's upstream.

A mirror's first request for a file starts one background fetch (shared by every concurrent
request for the same file). The fetch writes to a temporary blob while hashing; readers stream
from that growing file but always hold back the last byte until the fetch has verified the size
and sha256 published upstream. On a mismatch or a truncated upstream the fetch is discarded,
nothing is stored, readers' responses are aborted, and the next request starts afresh. Files
smaller than ``buffer_below`` are verified before the first byte is sent, so a mismatch is a
clean 502 with a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

import anyio
import httpx
from sqlalchemy.exc import IntegrityError as DBIntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from stockade.core.ports import BlobStore, BlobWriter
from stockade.core.simple import FileEntry, blocked_metadata, version_from_filename
from stockade.errors import (
    IntegrityError,
    NotFound,
    PayloadTooLarge,
    PolicyBlocked,
    StockadeError,
    UpstreamError,
    UpstreamUnavailable,
)
from stockade.services import repo
from stockade.services.audit import AuditLog
from stockade.services.coordination import POLL, Coordination, Lock
from stockade.services.indexes import IndexService
from stockade.services.metadata import MetadataService
from stockade.services.pages import PageService
from stockade.services.provenance import ProvenanceService
from stockade.services.repo import IndexInfo
from stockade.services.threats import ThreatService
from stockade.settings import Settings
from stockade.types import IndexKind, NormalizedName

log = logging.getLogger("stockade.files")
CHUNK = 256 * 1024
METADATA_MAX = 16 * 1024**2


@dataclass(frozen=True, slots=True)
class StoredFile:
    sha256: str
    size: int


class Fetch:
    """One upstream download in progress, shared by every reader of that file."""

    def __init__(self, writer: BlobWriter, expected_size: int | None) -> None:
        self.writer = writer
        self.lock: Lock | None = None  # the cross-process claim on this file, if taken
        self.expected_size = expected_size
        self.written = 0
        self.headers_ready = asyncio.Event()
        self.done = asyncio.Event()
        self.error: StockadeError | None = None
        self._progress = asyncio.Event()

    def notify(self) -> None:
        ev, self._progress = self._progress, asyncio.Event()
        ev.set()

    def open_reader(self) -> AsyncIterator[bytes]:
        f = open(self.writer.path, "rb")  # noqa: SIM115 - closed by the generator
        return self._read(f)

    async def _read(self, f: BinaryIO) -> AsyncIterator[bytes]:
        sent = 0
        try:
            while True:
                progress = self._progress  # taken before reading state: no lost wake-up
                done = self.done.is_set()
                if done and self.error is not None:
                    raise self.error
                limit = self.written if done else self.written - 1  # hold back the last byte
                while sent < limit:
                    chunk = f.read(min(CHUNK, limit - sent))
                    if not chunk:
                        break
                    sent += len(chunk)
                    yield chunk
                if done:
                    return
                if sent >= self.written - 1:
                    await progress.wait()
        finally:
            f.close()


@dataclass(frozen=True, slots=True)
class Streaming:
    fetch: Fetch
    size: int | None


async def claim_fetch(
    coord: Coordination | None,
    store: BlobStore,
    sha: str,
    inflight: Mapping[str, object],
    wait: float,
) -> StoredFile | Lock | None:
    """Across processes, one fetches a file from upstream and the others wait for it.

    Returns the claim (this process fetches), the stored file (another process finished),
    or None: this process fetches without a claim because another task here already is
    (``inflight``), the other process took longer than ``wait`` seconds (clients must not time
    out waiting for bytes they cannot see), or the coordination service is unreachable.
    Blobs are committed atomically, so a second fetch never exposes a partial file."""
    if coord is None:
        return None
    deadline = time.monotonic() + wait
    delay = POLL
    while sha not in inflight:
        try:
            lock = await coord.try_lock(f"fetch:{sha}")
        except Exception as exc:
            log.warning("cannot coordinate the fetch of %s with other processes: %s", sha, exc)
            return None
        if store.exists(sha):
            if lock is not None:
                await lock.release()
            return StoredFile(sha, store.size(sha))
        if lock is not None:
            return lock
        if time.monotonic() >= deadline:
            log.info("another process is still fetching %s; fetching it here as well", sha)
            return None
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, 0.5)  # each look may be a request to object storage
    return None


class FileService:
    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        store: BlobStore,
        indexes: IndexService,
        pages: PageService,
        audit: AuditLog,
        client: httpx.AsyncClient,
        metadata: MetadataService | None = None,
        threats: ThreatService | None = None,
        coord: Coordination | None = None,
    ) -> None:
        self._coord = coord
        self._metadata = metadata
        self._threats = threats
        self._settings = settings
        self._sessions = sessions
        self._store = store
        self._indexes = indexes
        self._pages = pages
        self._audit = audit
        self._client = client
        self._inflight: dict[str, Fetch] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Called with (origin index, project) after a mirrored file was stored: TUF.
        self.on_stored: Callable[[IndexInfo, str], None] | None = None
        # PEP 740: a mirrored file whose upstream offers provenance is served once it verified.
        self.provenance: ProvenanceService | None = None

    async def entry(
        self, index: IndexInfo, project: NormalizedName, filename: str, *, blocked_ok: bool = False
    ) -> tuple[FileEntry, IndexInfo]:
        """The page entry for ``filename`` and the index that really holds it.

        ``blocked_ok``: also for a file the policy blocks (its PEP 658 metadata is served, so
        a resolver can get far enough to show the client the reason on the page).
        """
        served = await self._pages.project_page(index, project)
        blocked = served.blocked(filename)
        if blocked is not None and not blocked_ok:
            requestable = any(r.requestable for r in blocked.blocks)
            raise PolicyBlocked(
                f"{filename} is blocked by the policy of index {index.name!r}: "
                + "; ".join(r.line() for r in blocked.blocks),
                f"see `stockade policy explain {index.name} {project}`; "
                + (
                    "your request was recorded for an admin to approve"
                    if requestable
                    else "an admin can grant an exception"
                ),
                [r.line() for r in blocked.blocks],
                requestable,
            )
        entry = served.page.file(filename)
        if entry is None:
            raise NotFound(f"{filename} is not a file of {project!r} on index {index.name!r}")
        origin = await self._indexes.get(entry.origin or index.name)
        return entry, origin

    async def open(
        self, index: IndexInfo, project: NormalizedName, filename: str
    ) -> StoredFile | Streaming:
        await self._check_provenance(index, project, filename)
        got = await self._open(index, project, filename)
        if self._threats is None or not await self._pages.needs_scan(index):
            if isinstance(got, StoredFile):
                self._threats_enqueue(got.sha256, filename)
            return got
        # The policy blocks on the scanner's verdict: have the whole file, scan it, decide again.
        if isinstance(got, Streaming):
            await got.fetch.done.wait()
            if got.fetch.error is not None:
                raise got.fetch.error
            entry, _origin = await self.entry(index, project, filename)
            assert entry.sha256
            got = StoredFile(entry.sha256.lower(), self._store.size(entry.sha256.lower()))
        report = await self._threats.ensure(got.sha256, filename)
        if report is not None and report.verdict in ("malicious", "suspicious"):
            self._pages.clear_project(project)
            await self.entry(index, project, filename)  # raises PolicyBlocked if the rule blocks
        return got

    async def _check_provenance(
        self, index: IndexInfo, project: NormalizedName, filename: str
    ) -> None:
        """Verify a mirrored file's PEP 740 provenance before its first byte is served; a
        refused one blocks the file (PolicyBlocked with the reason), an unreachable one fails
        the download (nothing is served whose offered provenance was not checked)."""
        if self.provenance is None:
            return
        entry, origin = await self.entry(index, project, filename)
        if entry.provenance is None or origin.kind is not IndexKind.MIRROR:
            return
        rec = await self.provenance.ensure(origin, project, entry)
        if rec is None or rec.verified:
            return
        self._pages.clear_project(project)  # decide again: the refusal is now known
        await self.entry(index, project, filename)  # raises PolicyBlocked with the reason
        why = f"provenance of {filename} failed verification: {rec.reason}; not served"
        raise PolicyBlocked(
            why,
            "the upstream's file or provenance is not what its publisher signed; alert security",
            [why],
            False,
        )

    def _threats_enqueue(self, sha256: str, filename: str) -> None:
        if self._threats is not None and not self._threats.known(sha256):
            self._threats.enqueue(sha256, filename)

    async def _open(
        self, index: IndexInfo, project: NormalizedName, filename: str
    ) -> StoredFile | Streaming:
        entry, origin = await self.entry(index, project, filename)
        if origin.kind is IndexKind.PRIVATE:
            if entry.sha256 and self._store.exists(entry.sha256):
                return StoredFile(entry.sha256, self._store.size(entry.sha256))
            raise NotFound(f"{filename} is listed but its bytes are missing from storage")
        if not entry.sha256 or not entry.url:
            raise IntegrityError(
                f"upstream publishes no sha256 for {filename}; Stockade will not serve unverified "
                "bytes",
                "ask the upstream to publish hashes (PEP 503 #sha256= or PEP 691 hashes)",
            )
        sha = entry.sha256.lower()
        if self._store.exists(sha):
            return StoredFile(sha, self._store.size(sha))
        fetch = self._inflight.get(sha)
        if fetch is None:
            claim = await claim_fetch(
                self._coord, self._store, sha, self._inflight, self._settings.fetch_wait
            )
            if isinstance(claim, StoredFile):  # another process fetched it meanwhile
                return claim
            fetch = self._inflight.get(sha)  # another task of ours started while we waited
            if fetch is None:
                fetch = self._start_fetch(origin, project, entry, sha)
                fetch.lock = claim
            elif claim is not None:
                await claim.release()
        await fetch.headers_ready.wait()
        if fetch.done.is_set():  # finished while we waited: stored, or failed
            if fetch.error is not None:
                raise fetch.error
            return StoredFile(sha, self._store.size(sha))
        size = fetch.expected_size
        if size is None or size <= self._settings.buffer_below:
            await fetch.done.wait()
            if fetch.error is not None:
                raise fetch.error
            return StoredFile(sha, self._store.size(sha))
        return Streaming(fetch, size)

    def _start_fetch(
        self, origin: IndexInfo, project: NormalizedName, entry: FileEntry, sha: str
    ) -> Fetch:
        writer = self._store.open_writer()
        fetch = Fetch(writer, entry.size)
        self._inflight[sha] = fetch
        task = asyncio.create_task(self._run_fetch(fetch, origin, project, entry, sha))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return fetch

    async def _run_fetch(
        self, fetch: Fetch, origin: IndexInfo, project: NormalizedName, entry: FileEntry, sha: str
    ) -> None:
        assert entry.url is not None
        cap = self._settings.max_file_size
        try:
            async with self._client.stream("GET", entry.url) as resp:
                if resp.status_code != 200:
                    raise UpstreamUnavailable(
                        f"upstream answered {resp.status_code} for {entry.filename}",
                        "try again later; the upstream may be down",
                    )
                cl = resp.headers.get("content-length")
                if cl and cl.isdigit() and not resp.headers.get("content-encoding"):
                    declared = int(cl)
                    if fetch.expected_size is not None and declared != fetch.expected_size:
                        raise IntegrityError(
                            f"upstream sends {declared} bytes for {entry.filename}, its page says "
                            f"{fetch.expected_size}"
                        )
                    fetch.expected_size = declared
                if fetch.expected_size is not None and fetch.expected_size > cap:
                    raise PayloadTooLarge(
                        f"{entry.filename} is {fetch.expected_size} bytes, over max_file_size",
                        "raise max_file_size in stockade.toml",
                    )
                fetch.headers_ready.set()
                async for chunk in resp.aiter_bytes(CHUNK):
                    fetch.writer.write(chunk)
                    fetch.written += len(chunk)
                    if fetch.written > cap:
                        raise PayloadTooLarge(f"{entry.filename} exceeds max_file_size")
                    fetch.notify()
            if fetch.expected_size is not None and fetch.written != fetch.expected_size:
                raise IntegrityError(
                    f"upstream sent {fetch.written} of {fetch.expected_size} bytes for "
                    f"{entry.filename}",
                    "the upstream connection broke; retry",
                )
            got = fetch.writer.hexdigest()
            if got != sha:
                self._audit.record(
                    "integrity.mismatch",
                    index=origin.name,
                    project=project,
                    filename=entry.filename,
                    outcome="blocked",
                    expected=sha,
                    got=got,
                    url=entry.url,
                )
                raise IntegrityError(
                    f"{entry.filename} from upstream hashes to {got[:16]}…, but the upstream "
                    f"page publishes {sha[:16]}…; not served, not stored",
                    "the upstream file or page was tampered with or corrupted; alert security",
                )
            await anyio.to_thread.run_sync(fetch.writer.commit, sha)  # S3: an upload
            await self._record_mirrored(origin, project, entry, sha, fetch.written)
            if self.on_stored is not None:
                self.on_stored(origin, project)
            if self._metadata is not None:  # licences etc. for policies, read off the stored file
                self._background(
                    self._metadata.from_stored_file(sha, project, entry.version, entry.filename)
                )
            if self._threats is not None:  # every stored file gets a scanner verdict
                self._threats.enqueue(sha, entry.filename)
        except StockadeError as exc:
            fetch.error = exc
            fetch.writer.abort()
        except httpx.HTTPError as exc:
            fetch.error = UpstreamUnavailable(
                f"download of {entry.filename} from upstream failed: {type(exc).__name__}",
                "retry; nothing was stored",
            )
            fetch.writer.abort()
        except Exception as exc:  # never leave readers waiting forever
            log.exception("fetch of %s failed", entry.filename)
            fetch.error = UpstreamError(f"download of {entry.filename} failed: {exc}")
            fetch.writer.abort()
        finally:
            self._inflight.pop(sha, None)
            fetch.headers_ready.set()
            fetch.done.set()
            fetch.notify()
            if fetch.lock is not None:
                with contextlib.suppress(Exception):  # the lock dies with its connection
                    await fetch.lock.release()

    async def _record_mirrored(
        self, origin: IndexInfo, project: NormalizedName, entry: FileEntry, sha: str, size: int
    ) -> None:
        try:
            async with self._sessions() as s, s.begin():
                if await repo.get_file(s, origin.id, entry.filename) is None:
                    await repo.insert_file(
                        s,
                        index_id=origin.id,
                        project=project,
                        display_name=project,
                        version=version_from_filename(entry.filename) or "",
                        filename=entry.filename,
                        packagetype="bdist_wheel" if entry.filename.endswith(".whl") else "sdist",
                        sha256=sha,
                        size=size,
                        requires_python=entry.requires_python,
                        metadata_sha256=entry.metadata_sha256,
                        yanked=entry.yanked,
                        yanked_reason=entry.yanked_reason,
                        upload_time=repo.utcnow(),
                        origin_url=entry.url,
                    )
        except DBIntegrityError:
            pass  # another process recorded it first

    async def metadata(
        self, index: IndexInfo, project: NormalizedName, filename: str
    ) -> StoredFile | bytes:
        """PEP 658 core metadata of ``filename`` (also of a blocked file: metadata runs no code,
        and pip reports a blocked pin's reason only after it has resolved)."""
        entry, origin = await self.entry(index, project, filename, blocked_ok=True)
        if entry.synthetic_metadata and entry.blocked is not None and entry.version:
            return blocked_metadata(project, entry.version, entry.blocked)
        if not entry.has_metadata:
            raise NotFound(f"no metadata file is published for {filename}")
        meta_sha = entry.metadata_sha256
        if meta_sha and self._store.exists(meta_sha):
            return StoredFile(meta_sha, self._store.size(meta_sha))
        if origin.kind is IndexKind.PRIVATE or not entry.url:
            raise NotFound(f"metadata of {filename} is missing from storage")
        url = entry.url + ".metadata"
        try:
            resp = await self._client.get(url)
        except httpx.HTTPError as exc:
            raise UpstreamUnavailable(f"cannot fetch metadata of {filename}: {exc}") from exc
        if resp.status_code != 200:
            raise UpstreamUnavailable(f"upstream answered {resp.status_code} for {url}")
        body = resp.content
        if len(body) > METADATA_MAX:
            raise PayloadTooLarge(f"metadata of {filename} is over {METADATA_MAX} bytes")
        if meta_sha:
            got = hashlib.sha256(body).hexdigest()
            if got != meta_sha:
                self._audit.record(
                    "integrity.mismatch",
                    index=origin.name,
                    project=project,
                    filename=filename + ".metadata",
                    outcome="blocked",
                    expected=meta_sha,
                    got=got,
                )
                raise IntegrityError(
                    f"metadata of {filename} hashes to {got[:16]}…, upstream published "
                    f"{meta_sha[:16]}…; not served"
                )
            self._store.put_bytes(body)
        if self._metadata is not None and entry.sha256:
            await self._metadata.record(entry.sha256, project, entry.version, body, "metadata")
        return body

    def _background(self, work: Coroutine[Any, Any, object]) -> None:
        async def run() -> None:
            try:
                await work
            except Exception:
                log.exception("background work after a download failed")

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
