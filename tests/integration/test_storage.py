"""Blob store conformance: the same contract for the local folder and S3 (a real s3rver)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stockade.adapters.storage import LocalBlobStore, open_store
from stockade.adapters.storage.local import DigestMismatch
from stockade.adapters.storage.s3 import S3BlobStore, S3Config
from stockade.core.ports import BlobStore
from stockade.errors import BlobMissing, ConfigError, StorageUnavailable
from stockade.settings import Settings
from tests.s3server import ACCESS_KEY, REGION, SECRET_KEY, S3Server

THRESHOLD = 8 * 1024**2  # multipart above this (boto3's minimum part is 5 MB)
MISSING = "0" * 64


def s3_store(s3: S3Server, tmp: Path, bucket: str | None = None, **kw: Any) -> S3BlobStore:
    cfg: dict[str, Any] = {
        "bucket": bucket or s3.new_bucket(),
        "prefix": "pre/fix",
        "endpoint_url": s3.endpoint,
        "access_key": ACCESS_KEY,
        "secret_key": SECRET_KEY,
        "region": REGION,
        "multipart_threshold": THRESHOLD,
        "tmp_dir": tmp,
    }
    cfg.update(kw)
    return S3BlobStore(S3Config(**cfg))


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    if request.param == "local":
        yield LocalBlobStore(tmp_path / "files")
    else:
        yield s3_store(request.getfixturevalue("s3"), tmp_path / "tmp")


def stored_keys(store: BlobStore, s3: S3Server | None) -> set[str]:
    """Every sha256 the backend holds, read from the backend itself (not through the store)."""
    if isinstance(store, LocalBlobStore):
        root = store.root / "sha256"
        return {p.name for p in root.rglob("*") if p.is_file()} if root.exists() else set()
    assert isinstance(store, S3BlobStore) and s3 is not None
    return {k.rsplit("/", 1)[1] for k in s3.keys(store.bucket, store.prefix + "/")}


def leftovers(store: BlobStore) -> list[Path]:
    tmp = Path(getattr(store, "tmp_dir"))  # noqa: B009 - both stores have one
    return [p for p in tmp.iterdir() if p.is_file()]


async def collect(store: BlobStore, sha: str, chunk: int = 64 * 1024) -> bytes:
    return b"".join([c async for c in store.stream(sha, chunk)])


@pytest.fixture
def s3_or_none(request: pytest.FixtureRequest, store: BlobStore) -> S3Server | None:
    return request.getfixturevalue("s3") if isinstance(store, S3BlobStore) else None


def test_put_read_stream_size_exists_delete(store: BlobStore, s3_or_none: S3Server | None) -> None:
    data = b"hello, blob\n" * 1000
    sha = store.put_bytes(data)
    assert sha == hashlib.sha256(data).hexdigest()
    assert store.exists(sha)
    assert store.size(sha) == len(data)
    assert store.read_bytes(sha) == data
    assert asyncio.run(collect(store, sha, 4096)) == data
    assert store.put_bytes(data) == sha  # idempotent
    assert stored_keys(store, s3_or_none) == {sha}
    store.delete(sha)
    assert not store.exists(sha)
    assert stored_keys(store, s3_or_none) == set()
    store.delete(sha)  # deleting a missing blob is fine
    assert not store.exists(MISSING)
    with pytest.raises((BlobMissing, FileNotFoundError)):
        store.read_bytes(MISSING)


def test_put_many_stores_a_batch_once_each(store: BlobStore, s3_or_none: S3Server | None) -> None:
    """put_many (conda shards): every blob stored under its sha256, in order, duplicates and
    blobs already stored written once, no temporary file left behind."""
    first = store.put_bytes(b"already here")
    blobs = [f"shard {i}".encode() * 50 for i in range(40)] + [b"already here", b"shard 3" * 50]
    shas = store.put_many(blobs)
    assert shas == [hashlib.sha256(b).hexdigest() for b in blobs]
    assert shas[-2] == first
    assert stored_keys(store, s3_or_none) == set(shas)
    assert all(store.read_bytes(sha) == b for sha, b in zip(shas, blobs, strict=True))
    assert store.put_many([]) == []
    assert leftovers(store) == []


def test_key_layout(store: BlobStore, s3_or_none: S3Server | None) -> None:
    sha = store.put_bytes(b"layout")
    if isinstance(store, S3BlobStore):
        assert s3_or_none is not None
        assert set(s3_or_none.keys(store.bucket)) == {f"pre/fix/sha256/{sha[:2]}/{sha[2:4]}/{sha}"}
        assert store.local_path(sha) is None
    else:
        assert isinstance(store, LocalBlobStore)
        assert store.local_path(sha) == store.root / "sha256" / sha[:2] / sha[2:4] / sha


def test_writer_commit_and_path_readable_while_writing(store: BlobStore) -> None:
    w = store.open_writer()
    w.write(b"part one, ")
    assert w.path.read_bytes() == b"part one, "  # validators read the file as it grows
    w.write(b"part two")
    data = b"part one, part two"
    assert w.size == len(data)
    sha = w.hexdigest()
    assert sha == hashlib.sha256(data).hexdigest()
    w.commit(sha)
    assert store.read_bytes(sha) == data
    assert leftovers(store) == []


def test_commit_with_wrong_digest_leaves_nothing(
    store: BlobStore, s3_or_none: S3Server | None
) -> None:
    w = store.open_writer()
    w.write(b"the real content")
    claimed = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(DigestMismatch):
        w.commit(claimed)
    assert not store.exists(claimed)
    assert not store.exists(hashlib.sha256(b"the real content").hexdigest())
    assert stored_keys(store, s3_or_none) == set()
    assert leftovers(store) == []


def test_abort_leaves_nothing(store: BlobStore, s3_or_none: S3Server | None) -> None:
    w = store.open_writer()
    w.write(b"never mind")
    w.abort()
    w.abort()  # twice is fine
    assert stored_keys(store, s3_or_none) == set()
    assert leftovers(store) == []


def test_concurrent_writers_of_the_same_content(
    store: BlobStore, s3_or_none: S3Server | None
) -> None:
    data = os.urandom(2 * 1024**2)
    sha = hashlib.sha256(data).hexdigest()

    def write_one(_: int) -> None:
        w = store.open_writer()
        for i in range(0, len(data), 256 * 1024):
            w.write(data[i : i + 256 * 1024])
        w.commit(sha)

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        list(pool.map(write_one, range(6)))
    assert store.read_bytes(sha) == data
    assert stored_keys(store, s3_or_none) == {sha}
    assert leftovers(store) == []


def test_large_file_round_trip(store: BlobStore) -> None:
    """20 MB: above the multipart threshold on S3 (counted: 3 parts of 8 MB, one completion)."""
    calls: list[str] = []
    if isinstance(store, S3BlobStore):
        for op in ("CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload", "PutObject"):
            store.client.meta.events.register(
                f"before-call.s3.{op}", lambda op=op, **_: calls.append(op)
            )
    data = os.urandom(20 * 1024**2)
    sha = hashlib.sha256(data).hexdigest()
    w = store.open_writer()
    for i in range(0, len(data), 1024**2):
        w.write(data[i : i + 1024**2])
    w.commit(sha)
    assert store.size(sha) == len(data)
    got = asyncio.run(collect(store, sha, 1024**2))
    assert hashlib.sha256(got).hexdigest() == sha
    assert store.read_bytes(sha) == data
    if isinstance(store, S3BlobStore):
        assert sorted(calls) == sorted(
            ["CompleteMultipartUpload", "CreateMultipartUpload", *["UploadPart"] * 3]
        )
    assert leftovers(store) == []


def test_open_local(store: BlobStore) -> None:
    data = b"read me as a file"
    sha = store.put_bytes(data)

    async def use() -> Path:
        async with store.open_local(sha) as path:
            assert path.read_bytes() == data
            return path

    path = asyncio.run(use())
    if isinstance(store, S3BlobStore):
        assert not path.exists()  # the temporary copy is gone
        assert leftovers(store) == []
    else:
        assert path.exists()  # the stored file itself

    async def missing() -> None:
        async with store.open_local(MISSING):
            raise AssertionError("unreachable")

    with pytest.raises(BlobMissing):
        asyncio.run(missing())


def test_probe_and_prepare(store: BlobStore) -> None:
    store.probe()
    store.prepare()
    assert store.presigned_url(store.put_bytes(b"x")) is None  # off unless configured


# -- S3 specifics ------------------------------------------------------------------------------


def test_s3_unreachable_is_storage_unavailable(tmp_path: Path, s3: S3Server) -> None:
    dead = S3Server(tmp_path / "dead")  # never started: nothing listens on the port
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead.port = sock.getsockname()[1]
    st = s3_store(s3, tmp_path, bucket="stockade", endpoint_url=dead.endpoint)
    for call in (
        lambda: st.exists("a" * 64),
        lambda: st.put_bytes(b"x"),
        lambda: st.read_bytes("a" * 64),
        st.probe,
    ):
        with pytest.raises(StorageUnavailable) as err:
            call()
        assert "storage is unavailable" in err.value.message
        assert dead.endpoint in err.value.message
        assert err.value.http_status == 503
        assert "S3 server is running" in (err.value.hint or "")
    w = st.open_writer()
    w.write(b"payload")
    with pytest.raises(StorageUnavailable):
        w.commit(w.hexdigest())
    assert leftovers(st) == []
    st.prepare()  # unreachable at start: only a warning (readiness reports it)


def test_s3_refused_credentials(tmp_path: Path, s3: S3Server) -> None:
    bucket = s3.new_bucket()
    st = s3_store(s3, tmp_path, bucket=bucket, access_key="NOT-A-KEY")
    with pytest.raises(StorageUnavailable) as err:
        st.put_bytes(b"x")  # a HEAD first: no error body, just 403
    assert "refused Stockade's credentials" in err.value.message
    assert "storage_access_key" in (err.value.hint or "")
    with pytest.raises(StorageUnavailable) as err:
        st.read_bytes("a" * 64)
    assert "refused Stockade's credentials" in err.value.message
    assert "InvalidAccessKeyId" in err.value.message
    w = st.open_writer()
    w.write(b"payload")
    with pytest.raises(StorageUnavailable, match="credentials"):
        w.commit(w.hexdigest())
    with pytest.raises(ConfigError) as cfg:
        st.prepare()  # at start-up: refuse to run
    assert "credentials" in cfg.value.message


def test_s3_missing_bucket_fails_prepare_or_is_created(tmp_path: Path, s3: S3Server) -> None:
    st = s3_store(s3, tmp_path, bucket="no-such-bucket-here")
    with pytest.raises(ConfigError) as err:
        st.prepare()
    assert "does not exist" in err.value.message
    assert "storage_create_bucket" in (err.value.hint or "")
    with pytest.raises(StorageUnavailable, match="does not exist"):
        st.probe()
    made = s3_store(s3, tmp_path, bucket="created-by-stockade", create_bucket=True)
    made.prepare()
    sha = made.put_bytes(b"in a new bucket")
    assert made.read_bytes(sha) == b"in a new bucket"


def test_s3_object_deleted_behind_our_back(tmp_path: Path, s3: S3Server) -> None:
    st = s3_store(s3, tmp_path)
    sha = st.put_bytes(b"soon gone")
    s3.client().delete_object(Bucket=st.bucket, Key=st.key_for(sha))
    with pytest.raises(BlobMissing):
        st.read_bytes(sha)
    with pytest.raises(BlobMissing):
        asyncio.run(collect(st, sha))


def test_s3_corrupt_object_is_refused_by_open_local(tmp_path: Path, s3: S3Server) -> None:
    st = s3_store(s3, tmp_path)
    sha = st.put_bytes(b"original")
    s3.client().put_object(Bucket=st.bucket, Key=st.key_for(sha), Body=b"tampered")

    async def use() -> None:
        async with st.open_local(sha):
            raise AssertionError("a corrupt blob must not be handed out")

    with pytest.raises(DigestMismatch, match="corrupt"):
        asyncio.run(use())


def test_s3_presigned_url(tmp_path: Path, s3: S3Server) -> None:
    import httpx

    st = s3_store(s3, tmp_path, presign_downloads=True, presign_expiry=60)
    sha = st.put_bytes(b"fetch me directly")
    url = st.presigned_url(sha, filename="x-1.0-py3-none-any.whl")
    assert url is not None and url.startswith(s3.endpoint)
    assert "X-Amz-Signature=" in url and "X-Amz-Expires=60" in url
    r = httpx.get(url)
    assert r.status_code == 200 and r.content == b"fetch me directly"
    assert 'filename="x-1.0-py3-none-any.whl"' in r.headers["content-disposition"]


# -- open_store --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("ftp://host/files", "file:///ABSOLUTE/PATH"),
        ("s3://", "s3://BUCKET[/PREFIX]"),
        ("s3://key:secret@bucket/p", "never in the URL"),
        ("s3://bucket/p?region=x", "storage_* settings"),
        ("file://var/files", "three slashes"),
    ],
)
def test_open_store_explains_bad_urls(url: str, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        open_store(url)
    assert needle in (err.value.hint or "")


def test_open_store_reads_the_storage_settings(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("STOCKADE_STORAGE_URL", "s3://bkt/some/prefix/")
    monkeypatch.setenv("STOCKADE_STORAGE_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("STOCKADE_STORAGE_PRESIGN_DOWNLOADS", "true")
    monkeypatch.setenv("STOCKADE_STORAGE_PRESIGN_EXPIRY", "120")
    monkeypatch.setenv("STOCKADE_STORAGE_MULTIPART_THRESHOLD", "32MB")
    monkeypatch.setenv("STOCKADE_STORAGE_ACCESS_KEY", "AK")
    monkeypatch.setenv("STOCKADE_STORAGE_SECRET_KEY", "SK")
    monkeypatch.setenv("STOCKADE_STORAGE_REGION", "eu-west-3")
    s = Settings.load(tmp_path)
    st = open_store(s.storage_url, s)
    assert isinstance(st, S3BlobStore)
    assert (st.bucket, st.prefix) == ("bkt", "some/prefix")
    assert st.config.presign_downloads and st.config.presign_expiry == 120
    assert st.config.multipart_threshold == 32 * 1024**2
    assert st.client.meta.region_name == "eu-west-3"
    assert st.client.meta.config.s3 == {"addressing_style": "path"}  # with an endpoint URL
    assert st.tmp_dir == tmp_path / "tmp" / "s3"
    url = st.presigned_url("a" * 64)
    assert url is not None and url.startswith("http://127.0.0.1:9/bkt/some/prefix/sha256/aa/aa/")
    assert "AK%2F" in url  # signed with the configured key


def test_open_store_falls_back_to_the_aws_environment(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "FROM-ENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ap-south-1")
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    s = Settings.load(tmp_path, storage_url="s3://bkt")
    st = open_store(s.storage_url, s)
    assert isinstance(st, S3BlobStore)
    assert st.prefix == ""
    assert st.key_for("b" * 64) == f"sha256/bb/bb/{'b' * 64}"
    creds = st.client._request_signer._credentials  # what boto3 resolved
    assert creds.access_key == "FROM-ENV"
    assert st.client.meta.region_name == "ap-south-1"
