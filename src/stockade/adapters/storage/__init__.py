"""Blob stores. ``open_store(url)`` picks the implementation from the storage URL."""

from __future__ import annotations

from urllib.parse import urlparse

from stockade.adapters.storage.local import LocalBlobStore
from stockade.core.ports import BlobStore
from stockade.errors import ConfigError


def open_store(url: str) -> BlobStore:
    parsed = urlparse(url)
    if parsed.scheme in ("file", ""):
        return LocalBlobStore(parsed.path if parsed.scheme else url)
    raise ConfigError(
        f"unsupported storage URL {url!r}", "use file:///ABSOLUTE/PATH (S3 support is planned)"
    )


__all__ = ["LocalBlobStore", "open_store"]
