"""Blob stores. ``open_store(url, settings)`` picks the implementation from the storage URL:
``file:///ABSOLUTE/PATH`` (or a bare path) → :class:`LocalBlobStore`, ``s3://bucket/prefix`` →
:class:`S3BlobStore` configured by the ``storage_*`` settings."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlparse

from stockade.adapters.storage.local import LocalBlobStore
from stockade.core.ports import BlobStore
from stockade.errors import ConfigError

if TYPE_CHECKING:
    from stockade.settings import Settings

_FORMS = "use file:///ABSOLUTE/PATH for a local folder or s3://BUCKET[/PREFIX] for object storage"


def open_store(url: str, settings: Settings | None = None) -> BlobStore:
    """The blob store for ``url`` (no network I/O here: see ``BlobStore.prepare``)."""
    parsed = urlparse(url)
    if parsed.scheme in ("file", ""):
        if parsed.netloc not in ("", "localhost"):
            raise ConfigError(
                f"storage URL {url!r} names a host ({parsed.netloc!r}); file URLs need an "
                "absolute path",
                f"write file:///{parsed.netloc}{parsed.path} (three slashes); {_FORMS}",
            )
        return LocalBlobStore(parsed.path if parsed.scheme else url)
    if parsed.scheme == "s3":
        return _s3(url, settings)
    raise ConfigError(f"unsupported storage URL {url!r} (scheme {parsed.scheme!r})", _FORMS)


def _s3(url: str, settings: Settings | None) -> BlobStore:
    from stockade.adapters.storage.s3 import S3BlobStore, S3Config

    parsed = urlparse(url)
    bucket = parsed.netloc
    if not bucket or "@" in bucket or ":" in bucket:
        raise ConfigError(
            f"storage URL {url!r} does not name a bucket",
            "write s3://BUCKET[/PREFIX]; the server goes in storage_endpoint_url and the keys "
            "in storage_access_key / storage_secret_key (never in the URL)",
        )
    if parsed.query or parsed.fragment:
        raise ConfigError(
            f"storage URL {url!r} has a query or fragment",
            "write s3://BUCKET[/PREFIX]; S3 options are storage_* settings",
        )
    if settings is None:
        return S3BlobStore(S3Config(bucket=bucket, prefix=parsed.path.strip("/")))
    return S3BlobStore(
        S3Config(
            bucket=bucket,
            prefix=parsed.path.strip("/"),
            endpoint_url=settings.storage_endpoint_url or None,
            region=settings.storage_region or None,
            access_key=settings.storage_access_key or None,
            secret_key=settings.storage_secret_key or None,
            addressing_style=settings.storage_addressing_style or None,
            presign_downloads=settings.storage_presign_downloads,
            presign_expiry=settings.storage_presign_expiry,
            create_bucket=settings.storage_create_bucket,
            multipart_threshold=settings.storage_multipart_threshold,
            tmp_dir=settings.home / "tmp",
        )
    )


__all__ = ["LocalBlobStore", "open_store"]
