"""Local-folder blob store: ``<root>/sha256/ab/cd/<sha256>``, written via temp file + rename."""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import anyio

from stockade.errors import BlobMissing, StockadeError

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _syncfs(path: Path) -> None:
    """Flush the filesystem holding ``path`` to disk (Linux ``syncfs``; ``os.sync`` where
    there is none)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        syncfs = getattr(libc, "syncfs", None)
        if syncfs is None:
            os.sync()
        elif syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


class DigestMismatch(StockadeError):
    """Committed content does not hash to the requested key."""


class TempBlobWriter:
    """A blob being written to a temporary file in ``tmp_dir``, hashed as it grows; each store
    says in ``commit`` how it is published. ``verify`` is the check every commit starts with."""

    def __init__(self, tmp_dir: Path, prefix: str) -> None:
        fd, name = tempfile.mkstemp(dir=tmp_dir, prefix=prefix, suffix=".part")
        self._file = os.fdopen(fd, "wb")
        self._path = Path(name)
        self._hash = hashlib.sha256()
        self._size = 0
        self._closed = False

    @property
    def path(self) -> Path:
        return self._path

    @property
    def size(self) -> int:
        return self._size

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self._file.flush()
        self._hash.update(data)
        self._size += len(data)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()

    def verify(self, sha256: str) -> None:
        """Raise (and discard the buffer) unless the content hashes to ``sha256``."""
        if self.hexdigest() != sha256:
            self.abort()
            raise DigestMismatch(f"content hashes to {self.hexdigest()}, not {sha256}")

    def abort(self) -> None:
        if not self._closed:
            self._file.close()
            self._closed = True
        self._path.unlink(missing_ok=True)


class LocalWriter(TempBlobWriter):
    def __init__(self, store: LocalBlobStore) -> None:
        super().__init__(store.tmp_dir, "up-")
        self._store = store

    def commit(self, sha256: str) -> None:
        self.verify(sha256)
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._closed = True
        dest = self._store.path_for(sha256)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._path, dest)


class LocalBlobStore:
    """Blobs in a local folder; atomic by rename, so a crash never leaves a served half-file."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.tmp_dir = self.root / "tmp"
        self.tmp_dir.mkdir(parents=True, exist_ok=True)

    def path_for(self, sha256: str) -> Path:
        if not _HEX64.match(sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        return self.root / "sha256" / sha256[:2] / sha256[2:4] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path_for(sha256).is_file()

    def local_path(self, sha256: str) -> Path | None:
        return self.path_for(sha256)

    @asynccontextmanager
    async def open_local(self, sha256: str) -> AsyncIterator[Path]:
        path = self.path_for(sha256)
        if not path.is_file():
            raise BlobMissing(f"blob {sha256} is not in the local store {self.root}")
        yield path

    def presigned_url(
        self, sha256: str, *, filename: str | None = None, media_type: str | None = None
    ) -> str | None:
        return None

    def probe(self) -> None:
        """Writable: a temporary file can be created, written and removed."""
        writer = self.open_writer()
        try:
            writer.write(b"stockade readiness probe\n")
        finally:
            writer.abort()

    def prepare(self) -> None:
        self.tmp_dir.mkdir(parents=True, exist_ok=True)

    def open_writer(self) -> LocalWriter:
        return LocalWriter(self)

    def put_bytes(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        if not self.exists(sha):
            w = self.open_writer()
            w.write(data)
            w.commit(sha)
        return sha

    def put_many(self, blobs: Sequence[bytes]) -> list[str]:
        """Write every new blob to a temporary file, make them all durable with one
        ``syncfs``, then rename each into place and sync again (the renames), instead of an
        ``fsync`` per file: thousands of conda shards cost two syncs, not thousands."""
        shas = [hashlib.sha256(b).hexdigest() for b in blobs]
        staged: list[tuple[Path, Path]] = []
        seen: set[str] = set()
        try:
            for sha, data in zip(shas, blobs, strict=True):
                dest = self.path_for(sha)
                if sha in seen or dest.is_file():
                    continue
                seen.add(sha)
                fd, tmp = tempfile.mkstemp(dir=self.tmp_dir, prefix="many-")
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                staged.append((Path(tmp), dest))
            if staged:
                _syncfs(self.tmp_dir)
                for tmp_path, dest in staged:
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(tmp_path, dest)
                staged = []
                _syncfs(self.root)
        finally:
            for tmp_path, _ in staged:
                tmp_path.unlink(missing_ok=True)
        return shas

    def read_bytes(self, sha256: str) -> bytes:
        try:
            return self.path_for(sha256).read_bytes()
        except FileNotFoundError:  # as the S3 store does: the protocol's BlobMissing
            raise BlobMissing(f"blob {sha256} is not in the local store {self.root}") from None

    def size(self, sha256: str) -> int:
        return self.path_for(sha256).stat().st_size

    async def stream(self, sha256: str, chunk_size: int = 256 * 1024) -> AsyncIterator[bytes]:
        async with await anyio.open_file(self.path_for(sha256), "rb") as f:
            while chunk := await f.read(chunk_size):
                yield chunk

    def delete(self, sha256: str) -> None:
        self.path_for(sha256).unlink(missing_ok=True)
