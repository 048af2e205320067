"""S3-compatible object storage: ``s3://bucket/prefix`` → ``<prefix>/sha256/ab/cd/<sha256>``.

Writes buffer to a local temporary file (hashed as they grow, so ``writer.path`` is readable for
validation) and are uploaded only on ``commit``, after the digest is verified: a single PUT or a
multipart upload (boto3's managed transfer, above ``multipart_threshold``), and S3 makes neither
visible under its key before it is complete. So a reader never sees a partial object.

boto3 is blocking. ``stream`` and ``open_local`` run it in worker threads, and callers on the
event loop run ``commit`` in one; the other methods are synchronous like the local store's
(HEADs are cheap, and positive answers are cached for a minute: blobs are immutable). Every
failure to reach or use the store becomes ``StorageUnavailable`` (503) with a hint; a missing
key is ``BlobMissing`` (404) or ``exists() is False``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import anyio
import boto3
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from stockade.adapters.storage.local import DigestMismatch, TempBlobWriter
from stockade.errors import BlobMissing, ConfigError, StorageUnavailable

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger("stockade.storage.s3")

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_CREDENTIAL_CODES = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
    "AuthorizationHeaderMalformed",
    "403",
}
_STYLES: dict[str, Literal["path", "virtual", "auto"]] = {
    "path": "path",
    "virtual": "virtual",
    "auto": "auto",
}
_MISSING = {"404", "NoSuchKey", "NotFound"}
# sha256 → size of blobs seen to exist: immutable while they exist; the TTL bounds how long a
# deletion by another process goes unnoticed here.
_KNOWN_CACHE = 100_000
_KNOWN_TTL = 60.0


@dataclass(frozen=True, slots=True)
class S3Config:
    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None  # None: AWS (region from storage_region / AWS_REGION)
    region: str | None = None
    access_key: str | None = None  # None: boto3's chain (AWS_ACCESS_KEY_ID, profile, role…)
    secret_key: str | None = None
    addressing_style: str | None = None  # path | virtual | auto; None: path with an endpoint
    presign_downloads: bool = False
    presign_expiry: int = 300
    create_bucket: bool = False
    multipart_threshold: int = 16 * 1024**2
    tmp_dir: Path | None = None

    def where(self) -> str:
        place = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        return f"{place} at {self.endpoint_url}" if self.endpoint_url else place


class S3Writer(TempBlobWriter):
    """Buffers to a local temporary file; ``commit`` verifies the digest, then uploads."""

    def __init__(self, store: S3BlobStore) -> None:
        super().__init__(store.tmp_dir, "s3-")
        self._store = store

    def commit(self, sha256: str) -> None:
        """Verify, upload, remove the local copy. Blocks for the upload: from async code, run
        it in a thread. On failure nothing is visible under the key and the buffer is gone."""
        self.verify(sha256)
        self._file.close()
        self._closed = True
        try:
            self._store.upload_file(self._path, sha256, self._size)
        finally:
            self._path.unlink(missing_ok=True)


class S3BlobStore:
    """Blobs in an S3-compatible bucket (AWS S3, MinIO, Ceph RGW, SeaweedFS, Garage…)."""

    def __init__(self, config: S3Config) -> None:
        self.config = config
        self.bucket = config.bucket
        self.prefix = config.prefix.strip("/")
        self.tmp_dir = Path(config.tmp_dir or tempfile.gettempdir()) / "s3"
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        style = config.addressing_style or ("path" if config.endpoint_url else "auto")
        if style not in _STYLES:
            raise ConfigError(
                f"storage_addressing_style {style!r} is not one of path, virtual, auto",
                "use path for MinIO and most self-hosted servers, virtual or auto for AWS",
            )
        botocfg = Config(
            signature_version="s3v4",
            s3={"addressing_style": _STYLES[style]},
            connect_timeout=5,
            read_timeout=60,
            retries={"max_attempts": 3, "mode": "standard"},
            max_pool_connections=64,
            # We verify sha256 ourselves; newer botocore's default CRC trailers (aws-chunked
            # uploads) are not understood by many S3-compatible servers.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        session = boto3.session.Session(
            aws_access_key_id=config.access_key,
            aws_secret_access_key=config.secret_key,
            region_name=config.region,
        )
        self.client: S3Client = session.client(
            "s3", endpoint_url=config.endpoint_url or None, config=botocfg
        )
        # Readiness answers fast: one attempt, short timeouts.
        self._probe_client: S3Client = session.client(
            "s3",
            endpoint_url=config.endpoint_url or None,
            config=botocfg.merge(
                Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1})
            ),
        )
        self._transfer = TransferConfig(
            multipart_threshold=config.multipart_threshold,
            multipart_chunksize=max(config.multipart_threshold, 5 * 1024**2),
            max_concurrency=4,
            use_threads=True,
        )
        self._known: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._lock = threading.Lock()

    # -- keys and errors ---------------------------------------------------------------------

    def key_for(self, sha256: str) -> str:
        if not _HEX64.match(sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        rel = f"sha256/{sha256[:2]}/{sha256[2:4]}/{sha256}"
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def _unavailable(self, exc: Exception, doing: str) -> StorageUnavailable:
        where = self.config.where()
        if isinstance(exc, NoCredentialsError):
            return StorageUnavailable(
                f"file storage is unavailable: no S3 credentials to {doing} ({where})",
                "set storage_access_key and storage_secret_key (or AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, a profile or an instance role)",
            )
        if isinstance(exc, ClientError):
            err = exc.response.get("Error", {})
            code = str(err.get("Code", "?"))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in _CREDENTIAL_CODES:
                return StorageUnavailable(
                    f"file storage is unavailable: S3 refused Stockade's credentials to {doing} "
                    f"({code}, {where})",
                    "check storage_access_key/storage_secret_key (or the AWS_* variables) and "
                    "that they may read, write and list the bucket",
                )
            if code in ("NoSuchBucket", "404"):
                return StorageUnavailable(
                    f"file storage is unavailable: bucket {self.bucket!r} does not exist ({where})",
                    "create the bucket, or set storage_create_bucket = true",
                )
            return StorageUnavailable(
                f"file storage is unavailable: S3 answered {code} ({status}) to {doing} ({where})",
                "check the S3 server's health and logs; GET /-/readyz shows the storage check",
            )
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return StorageUnavailable(
            f"file storage is unavailable: cannot {doing} ({where}): {detail}",
            "check that the S3 server is running and reachable from Stockade, and "
            "storage_endpoint_url / storage_region; GET /-/readyz shows the storage check",
        )

    @contextlib.contextmanager
    def _calling(self, doing: str, sha256: str | None = None) -> Iterator[None]:
        """Map boto3 failures; a missing key becomes BlobMissing."""
        try:
            yield
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if sha256 is not None and code in _MISSING:
                raise BlobMissing(
                    f"blob {sha256} is not in {self.config.where()}",
                    "it was deleted from the bucket behind Stockade's back, or never stored",
                ) from exc
            raise self._unavailable(exc, doing) from exc
        except Boto3Error as exc:  # managed transfers wrap the ClientError
            cause = exc.__context__ if isinstance(exc.__context__, ClientError) else exc
            raise self._unavailable(cause, doing) from exc
        except (BotoCoreError, OSError) as exc:
            raise self._unavailable(exc, doing) from exc

    def _remember(self, sha256: str, size: int) -> None:
        with self._lock:
            self._known[sha256] = (size, time.monotonic() + _KNOWN_TTL)
            self._known.move_to_end(sha256)
            while len(self._known) > _KNOWN_CACHE:
                self._known.popitem(last=False)

    def _forget(self, sha256: str) -> None:
        with self._lock:
            self._known.pop(sha256, None)

    # -- the BlobStore protocol ----------------------------------------------------------------

    def _head(self, sha256: str) -> int | None:
        with self._lock:
            known = self._known.get(sha256)
        if known is not None and known[1] > time.monotonic():
            return known[0]
        try:
            got = self.client.head_object(Bucket=self.bucket, Key=self.key_for(sha256))
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code", "")) in _MISSING:
                return None  # (a HEAD cannot tell a missing key from a missing bucket)
            raise self._unavailable(exc, "look up a blob") from exc
        except (BotoCoreError, OSError) as exc:
            raise self._unavailable(exc, "look up a blob") from exc
        size = int(got["ContentLength"])
        self._remember(sha256, size)
        return size

    def exists(self, sha256: str) -> bool:
        return self._head(sha256) is not None

    def size(self, sha256: str) -> int:
        size = self._head(sha256)
        if size is None:
            raise BlobMissing(f"blob {sha256} is not in {self.config.where()}")
        return size

    def local_path(self, sha256: str) -> Path | None:
        return None

    def open_writer(self) -> S3Writer:
        return S3Writer(self)

    def upload_file(self, path: Path, sha256: str, size: int) -> None:
        key = self.key_for(sha256)
        with self._calling("store a blob"):
            self.client.upload_file(
                str(path),
                self.bucket,
                key,
                ExtraArgs={"ContentType": "application/octet-stream"},
                Config=self._transfer,
            )
        self._remember(sha256, size)

    def put_many(self, blobs: Sequence[bytes]) -> list[str]:
        """Upload the blobs eight at a time (each a PUT, as ``put_bytes``)."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=8, thread_name_prefix="s3-put") as pool:
            return list(pool.map(self.put_bytes, blobs))

    def put_bytes(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        if not self.exists(sha):
            with self._calling("store a blob"):
                self.client.put_object(
                    Bucket=self.bucket,
                    Key=self.key_for(sha),
                    Body=data,
                    ContentType="application/octet-stream",
                )
            self._remember(sha, len(data))
        return sha

    def _get(self, sha256: str) -> Any:
        with self._calling("read a blob", sha256):
            got = self.client.get_object(Bucket=self.bucket, Key=self.key_for(sha256))
        self._remember(sha256, int(got["ContentLength"]))
        return got["Body"]

    def read_bytes(self, sha256: str) -> bytes:
        body = self._get(sha256)
        try:
            with self._calling("read a blob", sha256):
                data: bytes = body.read()
        finally:
            body.close()
        return data

    async def stream(self, sha256: str, chunk_size: int = 256 * 1024) -> AsyncIterator[bytes]:
        """GET in a worker thread, then each chunk read in a worker thread: the event loop
        never waits on S3. The GET happens on the first ``__anext__`` (errors surface there,
        before a response has started, when the caller primes the stream)."""
        body = await anyio.to_thread.run_sync(self._get, sha256)
        try:
            while True:
                with self._calling("read a blob", sha256):
                    chunk = await anyio.to_thread.run_sync(body.read, chunk_size)
                if not chunk:
                    break
                yield chunk
        finally:
            body.close()

    def _download(self, sha256: str, dest: Path) -> None:
        body = self._get(sha256)
        digest = hashlib.sha256()
        try:
            with dest.open("wb") as f, self._calling("read a blob", sha256):
                while chunk := body.read(1024 * 1024):
                    digest.update(chunk)
                    f.write(chunk)
        finally:
            body.close()
        if digest.hexdigest() != sha256:
            raise DigestMismatch(
                f"blob {sha256} in {self.config.where()} hashes to {digest.hexdigest()}: the "
                "stored object is corrupt or was replaced",
                "delete the object; Stockade fetches mirrored files again on the next request",
            )

    @contextlib.asynccontextmanager
    async def open_local(self, sha256: str) -> AsyncIterator[Path]:
        """Download (verifying the digest) to a temporary file, removed after the block."""
        fd, name = tempfile.mkstemp(dir=self.tmp_dir, prefix="get-", suffix=".blob")
        os.close(fd)
        path = Path(name)
        try:
            await anyio.to_thread.run_sync(self._download, sha256, path)
            yield path
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)  # instant; not awaited, so it also runs when cancelled

    def presigned_url(
        self, sha256: str, *, filename: str | None = None, media_type: str | None = None
    ) -> str | None:
        if not self.config.presign_downloads:
            return None
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": self.key_for(sha256)}
        if filename:
            params["ResponseContentDisposition"] = f'attachment; filename="{filename}"'
        if media_type:
            params["ResponseContentType"] = media_type
        with self._calling("sign a download URL"):
            url: str = self.client.generate_presigned_url(
                "get_object", Params=params, ExpiresIn=self.config.presign_expiry
            )
        return url

    def delete(self, sha256: str) -> None:
        self._forget(sha256)
        with self._calling("delete a blob"):
            self.client.delete_object(Bucket=self.bucket, Key=self.key_for(sha256))

    def probe(self) -> None:
        """The bucket answers to our credentials, and the local buffer folder is writable."""
        with self._calling("reach the bucket"):
            self._probe_client.head_bucket(Bucket=self.bucket)
        fd, name = tempfile.mkstemp(dir=self.tmp_dir, prefix="probe-")
        os.close(fd)
        os.unlink(name)

    def prepare(self) -> None:
        """Fail start-up on a missing bucket (or create it when ``storage_create_bucket``) and
        on refused credentials; an unreachable server only warns (it may come up later, and
        readiness reports it meanwhile)."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code not in (*_MISSING, "NoSuchBucket"):
                err = self._unavailable(exc, "reach the bucket")
                raise ConfigError(err.message, err.hint) from exc
        except (BotoCoreError, OSError) as exc:
            log.warning("%s", self._unavailable(exc, "reach the bucket").one_line())
            return
        if not self.config.create_bucket:
            raise ConfigError(
                f"the storage bucket {self.bucket!r} does not exist ({self.config.where()})",
                "create it (e.g. `aws s3 mb s3://BUCKET`), or set storage_create_bucket = true "
                "to let Stockade create it",
            )
        args: dict[str, Any] = {"Bucket": self.bucket}
        region = self.client.meta.region_name
        if not self.config.endpoint_url and region and region != "us-east-1":
            args["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            self.client.create_bucket(**args)
        except (ClientError, BotoCoreError) as exc:
            err = self._unavailable(exc, f"create bucket {self.bucket!r}")
            raise ConfigError(err.message, err.hint) from exc
        log.info("created storage bucket %s", self.config.where())
