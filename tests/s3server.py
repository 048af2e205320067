"""A real S3-compatible server for the tests: s3rver (npm), filesystem backend, on 127.0.0.1.

Why s3rver: MinIO cannot be installed here, and Zenko CloudServer's only npm release
(``@zenko/cloudserver`` 8.0.0-beta) depends on GitHub git URLs (``scality/Arsenal#…``), which
``npm`` cannot fetch where only the npm registry is reachable. s3rver is an independent
implementation (Koa, objects as files) installable from the registry alone: buckets, objects,
HEAD, multipart uploads, presigned URLs (query-string auth) and access-key checks. Its limit:
it does not verify SigV4 signatures (only that the access key exists), so "wrong secret key" is
tested as "wrong access key".

The package is pinned by ``tests/s3server/package-lock.json`` and installed with ``npm ci`` on
first use into ``~/.cache/stockade-test-s3/<lock hash>`` (``STOCKADE_TEST_S3_CACHE`` moves it),
never into the repository. Anything missing (node, npm, the registry) FAILS the test with what
to do: S3 storage is a feature, its tests are not optional.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
import select
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

HERE = Path(__file__).resolve().parent / "s3server"
CACHE = Path(os.environ.get("STOCKADE_TEST_S3_CACHE", Path.home() / ".cache" / "stockade-test-s3"))
ACCESS_KEY = SECRET_KEY = "S3RVER"  # s3rver's built-in account
REGION = "us-east-1"
INSTALL_TIMEOUT = 170


def _fail(msg: str) -> None:
    pytest.fail(f"cannot run the S3 test server (s3rver): {msg}", pytrace=False)


def ensure_installed() -> Path:
    """The folder holding ``node_modules/s3rver`` (installed once per lock file version)."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            _fail(f"`{tool}` is not on PATH; install Node.js >= 18 and npm (apt-get install npm)")
    lock = (HERE / "package-lock.json").read_bytes() + (HERE / "package.json").read_bytes()
    dest = CACHE / hashlib.sha256(lock).hexdigest()[:16]
    marker = dest / "node_modules" / "s3rver" / "package.json"
    if marker.exists():
        return dest
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / ".lock").open("a") as lk:
        fcntl.flock(lk, fcntl.LOCK_EX)  # another test run may be installing right now
        if marker.exists():
            return dest
        tmp = CACHE / f"{dest.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for name in ("package.json", "package-lock.json"):
            shutil.copy(HERE / name, tmp / name)
        try:
            res = subprocess.run(
                ["npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--omit=dev"],
                cwd=tmp,
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT,
            )
        except subprocess.TimeoutExpired:
            shutil.rmtree(tmp, ignore_errors=True)
            _fail(f"`npm ci` in {tmp} took over {INSTALL_TIMEOUT}s; is the npm registry reachable?")
        if res.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            _fail(
                f"`npm ci` failed ({res.returncode}); the npm registry must be reachable for the "
                f"first run:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}"
            )
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
    return dest


class S3Server:
    """One s3rver process; ``stop()``/``start()`` keep the port and the data (outage tests)."""

    def __init__(self, data_dir: Path, buckets: tuple[str, ...] = ("stockade",)) -> None:
        self.data_dir = data_dir
        self.buckets = buckets
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"{data_dir.name}.log"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        root = ensure_installed()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, NODE_PATH=str(root / "node_modules"))
        self.proc = subprocess.Popen(
            ["node", str(HERE / "run.js"), str(self.data_dir), str(self.port), *self.buckets],
            env=env,
            stdout=subprocess.PIPE,
            stderr=self.log_path.open("ab"),
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 20
        line = b""
        while not line.endswith(b"\n"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                _fail(f"s3rver did not start:\n{self.log_path.read_text(errors='replace')}")
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if ready:
                line += os.read(self.proc.stdout.fileno(), 4096)
        self.port = int(json.loads(line)["port"])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def client(self, access_key: str = ACCESS_KEY) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=access_key,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
            config=Config(
                s3={"addressing_style": "path"},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )

    def new_bucket(self) -> str:
        name = f"t-{secrets.token_hex(6)}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> dict[str, int]:
        """Every object key in ``bucket`` under ``prefix`` → size."""
        out: dict[str, int] = {}
        pager = self.client().get_paginator("list_objects_v2")
        for page in pager.paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                out[obj["Key"]] = obj["Size"]
        return out

    def settings(self, bucket: str, prefix: str = "blobs", **extra: Any) -> dict[str, Any]:
        """``make_server`` settings for a Stockade storing into ``bucket``."""
        return {
            "storage_url": f"s3://{bucket}/{prefix}",
            "storage_endpoint_url": self.endpoint,
            "storage_access_key": ACCESS_KEY,
            "storage_secret_key": SECRET_KEY,
            "storage_region": REGION,
            **extra,
        }


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One s3rver for the session; tests isolate themselves with ``new_bucket()``."""
    srv = S3Server(tmp_path_factory.mktemp("s3") / "data")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def private_s3(tmp_path: Path) -> Iterator[S3Server]:
    """An s3rver of this test's own, which it may stop and start."""
    srv = S3Server(tmp_path / "s3data")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
