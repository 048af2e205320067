"""Protocols the application needs from the outside world (storage, upstream indexes)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Protocol


class BlobWriter(Protocol):
    """A blob being written: bytes go to a temporary place until ``commit``."""

    @property
    def path(self) -> Path: ...  # the temporary file, readable while it grows

    @property
    def size(self) -> int: ...

    def write(self, data: bytes) -> None: ...

    def hexdigest(self) -> str: ...

    def commit(self, sha256: str) -> None:
        """Publish atomically under ``sha256``; raises if the content does not hash to it.
        Blocking (an upload for S3): from async code run it in a worker thread."""
        ...

    def abort(self) -> None: ...


class BlobStore(Protocol):
    """Content-addressed storage (by sha256) with atomic writes.

    Implementations: a local folder (``file://``) and S3-compatible object storage (``s3://``).
    Code that needs the bytes as a file (scanner, metadata, conda repodata) uses
    :meth:`open_local`; web responses use ``stockade.web.blobs.blob_response`` (sendfile for a
    local path, a presigned redirect or a streamed body otherwise). Methods raise
    ``StorageUnavailable`` (503) when the store cannot be reached and ``BlobMissing`` (404) when
    a blob that must exist does not.
    """

    def exists(self, sha256: str) -> bool: ...

    def local_path(self, sha256: str) -> Path | None:
        """A filesystem path to the blob when the store is local (for sendfile), else None.
        To read a blob as a file whatever the store, use :meth:`open_local`."""
        ...

    def open_local(self, sha256: str) -> AbstractAsyncContextManager[Path]:
        """``async with store.open_local(sha) as path``: the blob as a readable local file for
        the duration of the block (the stored file itself, or a verified temporary copy).
        Raises ``BlobMissing`` when the blob is not stored."""
        ...

    def presigned_url(
        self, sha256: str, *, filename: str | None = None, media_type: str | None = None
    ) -> str | None:
        """A URL clients may download the blob from directly, when the store offers one and
        it is enabled (S3 with ``storage_presign_downloads``); else None."""
        ...

    def probe(self) -> None:
        """Raise if the store cannot be used now (readiness); cheap, blocking."""
        ...

    def prepare(self) -> None:
        """Once at server start: raise ``ConfigError`` (with a hint) when the store can never
        work as configured, e.g. a missing bucket; may create it when configured to."""
        ...

    def open_writer(self) -> BlobWriter: ...

    def put_bytes(self, data: bytes) -> str:
        """Store ``data``; return its sha256."""
        ...

    def put_many(self, blobs: Sequence[bytes]) -> list[str]:
        """Store many (small) blobs at once, durable when it returns; their sha256s in order.
        Cheaper than ``put_bytes`` each: the local store syncs once per batch instead of once
        per file, S3 uploads several at a time."""
        ...

    def read_bytes(self, sha256: str) -> bytes: ...

    def stream(self, sha256: str, chunk_size: int = 256 * 1024) -> AsyncIterator[bytes]: ...

    def size(self, sha256: str) -> int: ...

    def delete(self, sha256: str) -> None: ...
