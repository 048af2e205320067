"""Protocols the application needs from the outside world (storage, upstream indexes)."""

from __future__ import annotations

from collections.abc import AsyncIterator
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
        """Publish atomically under ``sha256``; raises if the content does not hash to it."""
        ...

    def abort(self) -> None: ...


class BlobStore(Protocol):
    """Content-addressed storage (by sha256) with atomic writes."""

    def exists(self, sha256: str) -> bool: ...

    def local_path(self, sha256: str) -> Path | None:
        """A filesystem path to the blob when the store is local (for sendfile), else None."""
        ...

    def open_writer(self) -> BlobWriter: ...

    def put_bytes(self, data: bytes) -> str:
        """Store ``data``; return its sha256."""
        ...

    def read_bytes(self, sha256: str) -> bytes: ...

    def stream(self, sha256: str, chunk_size: int = 256 * 1024) -> AsyncIterator[bytes]: ...

    def size(self, sha256: str) -> int: ...

    def delete(self, sha256: str) -> None: ...
