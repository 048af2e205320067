"""Stockade on S3 storage end to end: real servers, a real S3-compatible server (s3rver),
real pip and twine. Nothing may land on the local disk; S3 going away is a clean 503."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.builders import build_wheel, sha256_file
from tests.conftest import VENV_BIN, Server, UpstreamSet, client_env, make_server
from tests.s3server import ACCESS_KEY, REGION, SECRET_KEY, S3Server

pytestmark = pytest.mark.slow


def pip_install(srv: Server, index: str, token: str, target: Path, *reqs: str) -> str:
    res = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "install", "--isolated", "--no-cache-dir"),
            *("--index-url", srv.index_url(index, token), "--target", str(target), *reqs),
        ],
        env=client_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


def installed(target: Path) -> set[str]:
    return {p.name for p in target.glob("*.dist-info")}


def s3_server(tmp_path: Path, **settings: Any) -> Server:
    home = tmp_path / "h"
    return make_server(home, f"sqlite:///{home / 'db.sqlite'}", **settings)


@pytest.fixture
def running(request: pytest.FixtureRequest) -> Iterator[list[Server]]:
    """Servers a test starts; stopped however the test ends."""
    servers: list[Server] = []
    yield servers
    for srv in servers:
        srv.stop()


def settled(folder: Path, timeout: float = 15) -> list[Path]:
    """The files left in ``folder`` once background work (scans read temporary copies) ends."""
    deadline = time.monotonic() + timeout
    while (left := list(folder.iterdir())) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def shas_in(s3: S3Server, bucket: str, prefix: str = "blobs/") -> set[str]:
    return {k.rsplit("/", 1)[1] for k in s3.keys(bucket, prefix)}


def upload(c: httpx.Client, index: str, wheel: Path, name: str, version: str) -> httpx.Response:
    return c.post(
        f"/pypi/{index}/",
        data={":action": "file_upload", "name": name, "version": version},
        files={"content": (wheel.name, wheel.read_bytes())},
    )


def test_pip_installs_through_a_mirror_stored_in_s3(
    tmp_path: Path,
    upstream: UpstreamSet,
    s3: S3Server,
    running: list[Server],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Credentials and region from the standard AWS variables (no storage_access_key)."""
    bucket = s3.new_bucket()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    srv = s3_server(tmp_path, storage_url=f"s3://{bucket}/blobs", storage_endpoint_url=s3.endpoint)
    running.append(srv)
    srv.cli("index", "create", "up", "--mirror", upstream.upstream.simple_url)
    target = tmp_path / "t"
    pip_install(srv, "up", srv.token("up"), target, "beta")
    assert installed(target) == {"alpha-1.1.dist-info", "beta-1.0.dist-info"}
    stored = shas_in(s3, bucket)
    assert sha256_file(upstream.files["beta-1.0"]) in stored
    assert sha256_file(upstream.files["alpha-1.1"]) in stored
    assert not (srv.home / "files" / "sha256").exists()  # nothing on the local disk
    assert settled(srv.home / "tmp" / "s3") == []  # no buffers or copies left behind
    with srv.http() as c:
        ready = c.get("/-/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["storage"] == {"ok": True}


def test_twine_upload_lands_in_s3_and_is_served_back(
    tmp_path: Path, s3: S3Server, running: list[Server]
) -> None:
    bucket = s3.new_bucket()
    srv = s3_server(tmp_path, **s3.settings(bucket))
    running.append(srv)
    srv.cli("index", "create", "internal", "--private")
    writer = srv.token("internal", "write")
    wheel = build_wheel(tmp_path, "s3-tool", "1.0")
    res = subprocess.run(
        [
            *(str(VENV_BIN / "twine"), "upload", "--non-interactive", "--disable-progress-bar"),
            *("--repository-url", f"{srv.url}/pypi/internal/", "-u", "__token__", "-p", writer),
            str(wheel),
        ],
        env=client_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    sha = sha256_file(wheel)
    key = f"blobs/sha256/{sha[:2]}/{sha[2:4]}/{sha}"
    obj = s3.client().get_object(Bucket=bucket, Key=key)
    assert obj["Body"].read() == wheel.read_bytes()
    assert len(shas_in(s3, bucket)) == 2  # the wheel and its PEP 658 metadata
    reader = srv.token("internal")
    with srv.http(reader) as c:
        r = c.get(f"/pypi/internal/files/s3-tool/{wheel.name}")
        assert r.status_code == 200
        assert r.content == wheel.read_bytes()
        assert r.headers["content-length"] == str(wheel.stat().st_size)
        assert r.headers["etag"] == f'"{sha}"'
        meta = c.get(f"/pypi/internal/files/s3-tool/{wheel.name}.metadata")
        assert meta.status_code == 200 and b"Name: s3-tool" in meta.content
    target = tmp_path / "t"
    pip_install(srv, "internal", reader, target, "s3-tool")
    assert installed(target) == {"s3_tool-1.0.dist-info"}


def test_presigned_redirect_works_with_pip(
    tmp_path: Path, upstream: UpstreamSet, s3: S3Server, running: list[Server]
) -> None:
    bucket = s3.new_bucket()
    srv = s3_server(
        tmp_path, **s3.settings(bucket, storage_presign_downloads="true", storage_presign_expiry=90)
    )
    running.append(srv)
    srv.cli("index", "create", "up", "--mirror", upstream.upstream.simple_url)
    token = srv.token("up")
    wheel = upstream.files["alpha-1.0"]
    with srv.http(token) as c:
        # small files are fetched whole from upstream into S3 first, so even the first
        # request is a redirect to the stored object
        again = c.get(f"/pypi/up/files/alpha/{wheel.name}")
        assert again.status_code == 302, again.text
        location = again.headers["location"]
        assert location.startswith(f"{s3.endpoint}/{bucket}/blobs/sha256/")
        assert "X-Amz-Expires=90" in location
        assert again.headers["cache-control"] == "no-store"
        direct = httpx.get(location)  # no Stockade credentials needed: the URL is signed
        assert direct.status_code == 200 and direct.content == wheel.read_bytes()
        assert wheel.name in direct.headers["content-disposition"]
    target = tmp_path / "t"
    out = pip_install(srv, "up", token, target, "alpha==1.0")
    assert installed(target) == {"alpha-1.0.dist-info"}
    assert "alpha" in out
    wheel_gets = upstream.upstream.count(wheel.name) - upstream.upstream.count(f"{wheel.name}.")
    assert wheel_gets == 1  # pip's copy came from the bucket, not from upstream again


def test_s3_outage_is_a_clean_503_and_recovers_without_restart(
    tmp_path: Path, upstream: UpstreamSet, private_s3: S3Server, running: list[Server]
) -> None:
    s3 = private_s3
    bucket = s3.new_bucket()
    srv = s3_server(tmp_path, **s3.settings(bucket))
    running.append(srv)
    srv.cli("index", "create", "up", "--mirror", upstream.upstream.simple_url)
    srv.cli("index", "create", "internal", "--private")
    cached = upstream.files["alpha-1.1"]
    ours = build_wheel(tmp_path, "ours", "1.0")
    later = build_wheel(tmp_path, "ours", "2.0")
    with srv.http(srv.admin_token) as c:
        assert c.get(f"/pypi/up/files/alpha/{cached.name}").status_code == 200
        assert upload(c, "internal", ours, "ours", "1.0").status_code == 200
        before = shas_in(s3, bucket)

        s3.stop()
        stored = (f"/pypi/up/files/alpha/{cached.name}", f"/pypi/internal/files/ours/{ours.name}")
        for url in stored:
            r = c.get(url)
            assert r.status_code == 503, (url, r.status_code, r.text)
            assert "storage is unavailable" in r.text
            assert s3.endpoint in r.text  # what to check
            assert "S3 server is running" in r.text
            assert r.headers["retry-after"] == "30"
        r = upload(c, "internal", later, "ours", "2.0")
        assert r.status_code == 503, r.text
        assert "storage is unavailable" in r.text
        ready = c.get("/-/readyz")
        assert ready.status_code == 503
        storage = ready.json()["checks"]["storage"]
        assert storage["ok"] is False and s3.endpoint in storage["error"]
        listed = srv.cli("package", "list", "internal", "--json").stdout
        assert later.name not in listed  # nothing recorded for bytes that did not land

        s3.start()  # same port, same data; Stockade is not restarted
        r = c.get(f"/pypi/up/files/alpha/{cached.name}")
        assert r.status_code == 200 and r.content == cached.read_bytes()
        r = c.get(f"/pypi/internal/files/ours/{ours.name}")
        assert r.status_code == 200 and r.content == ours.read_bytes()
        assert upload(c, "internal", later, "ours", "2.0").status_code == 200
        assert c.get("/-/readyz").status_code == 200
    assert shas_in(s3, bucket) >= before | {sha256_file(later)}
    target = tmp_path / "t"
    pip_install(srv, "internal", srv.token("internal"), target, "ours==2.0")
    assert installed(target) == {"ours-2.0.dist-info"}


def test_missing_bucket_stops_start_up_unless_it_may_be_created(
    tmp_path: Path, s3: S3Server
) -> None:
    with pytest.raises(AssertionError) as err:
        s3_server(tmp_path / "a", **s3.settings("never-created"))
    text = str(err.value)
    assert "the storage bucket 'never-created' does not exist" in text
    assert "storage_create_bucket = true" in text
    srv = s3_server(tmp_path / "b", **s3.settings("made-at-start", storage_create_bucket="true"))
    try:
        s3.client().head_bucket(Bucket="made-at-start")
        with srv.http() as c:
            assert c.get("/-/readyz").status_code == 200
    finally:
        srv.stop()


def test_refused_credentials_stop_start_up(tmp_path: Path, s3: S3Server) -> None:
    settings = s3.settings(s3.new_bucket(), storage_access_key="WRONG-KEY")
    with pytest.raises(AssertionError) as err:
        s3_server(tmp_path, **settings)
    assert "refused Stockade's credentials" in str(err.value)
    assert "storage_access_key" in str(err.value)


def test_conda_mirror_and_private_channel_on_s3(
    tmp_path: Path, s3: S3Server, running: list[Server]
) -> None:
    """Mirrored repodata is parsed from a verified local copy of its S3 blob; private uploads
    regenerate repodata incrementally from the current document in S3; rattler installs."""
    from tests.conda_builders import CondaUpstream, write_channel
    from tests.integration.test_conda import _channel_url, _names, _packages, _solve_install

    bucket = s3.new_bucket()
    srv = s3_server(tmp_path, **s3.settings(bucket))
    running.append(srv)
    pkgs = _packages(tmp_path / "dist")
    up = CondaUpstream(write_channel(tmp_path / "channel", list(pkgs.values())))
    try:
        srv.cli(
            "conda", "channel", "create", "cf", "--mirror", up.url, "--subdirs", "noarch,linux-64"
        )
        url = _channel_url(srv, "cf", srv.token("cf"))
        records = _solve_install(url, ["app"], tmp_path / "c1")
        assert _names(records) == {"app": "2.0", "lib": "1.0"}
    finally:
        up.close()
    stored = shas_in(s3, bucket)
    for name in ("app", "lib"):
        assert hashlib.sha256(pkgs[name].read_bytes()).hexdigest() in stored

    srv.cli("conda", "channel", "create", "internal", "--private")
    srv.cli("conda", "upload", "-c", "internal", str(pkgs["lib"]))
    srv.cli("conda", "upload", "-c", "internal", str(pkgs["lib2"]))  # incremental regeneration
    with srv.http(srv.token("internal")) as c:
        data = c.get("/conda/internal/noarch/repodata.json").json()
        assert set(data["packages"]) == {"lib-1.0-0.tar.bz2"}
        assert set(data["packages.conda"]) == {"lib-2.0-0.conda"}
        r = c.get("/conda/internal/noarch/lib-2.0-0.conda")
        assert r.status_code == 200 and r.content == pkgs["lib2"].read_bytes()
    assert not (srv.home / "files" / "sha256").exists()
