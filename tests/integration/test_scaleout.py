"""The scaled shape under load and faults: several `stockade serve` processes on one
PostgreSQL (a private cluster the test may restart) and one blob store, nginx in front."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.builders import build_wheel, sha256_file
from tests.cluster import Nginx, PgCluster, kill9, start_servers, wait_ok
from tests.conftest import VENV_BIN, Server, UpstreamSet, client_env


@pytest.fixture
def pg() -> Iterator[PgCluster]:
    cluster = PgCluster()
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def trio(tmp_path: Path, pg: PgCluster, upstream: UpstreamSet) -> Iterator[list[Server]]:
    # buffer_below=0: downloads stream while the file is fetched (so a kill cuts bodies)
    servers = start_servers(tmp_path / "cluster", pg.url, 3, access_log="true", buffer_below="0")
    try:
        servers[0].cli("index", "create", "up", "--mirror", upstream.upstream.simple_url)
        yield servers
    finally:
        for s in servers:
            s.stop()


def _backends(servers: list[Server]) -> list[str]:
    return [s.url.split("://", 1)[1] for s in servers]


def _install(index: str, target: Path, project: str, *, pip: bool) -> subprocess.Popen[str]:
    if pip:
        cmd = [
            str(VENV_BIN / "python"),
            "-m",
            "pip",
            "install",
            "--isolated",
            "--no-cache-dir",
            "--retries",
            "5",
            "--timeout",
            "60",
            "--index-url",
            index,
            "--target",
            str(target),
            project,
        ]
    else:
        cmd = [
            str(VENV_BIN / "uv"),
            "pip",
            "install",
            "--no-cache",
            "--index-url",
            index,
            "--target",
            str(target),
            project,
        ]
    return subprocess.Popen(
        cmd,
        env=client_env(UV_HTTP_TIMEOUT="60"),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _dist_infos(target: Path) -> set[str]:
    return {p.name for p in target.glob("*.dist-info")}


def test_200_parallel_installs_through_nginx(
    tmp_path: Path, trio: list[Server], upstream: UpstreamSet
) -> None:
    nginx = Nginx(tmp_path / "nginx", _backends(trio))
    try:
        token = trio[0].token("up")
        index = f"http://__token__:{token}@127.0.0.1:{nginx.port}/pypi/up/simple/"
        started = time.monotonic()
        procs = [
            _install(index, tmp_path / "t" / str(i), "beta", pip=i % 20 == 0) for i in range(200)
        ]
        failures = []
        for i, p in enumerate(procs):
            out, _ = p.communicate(timeout=600)
            if p.returncode != 0:
                failures.append(f"install {i} ({'pip' if i % 20 == 0 else 'uv'}):\n{out}")
            elif _dist_infos(tmp_path / "t" / str(i)) != {
                "alpha-1.1.dist-info",
                "beta-1.0.dist-info",
            }:
                failures.append(f"install {i} installed {_dist_infos(tmp_path / 't' / str(i))}")
        elapsed = time.monotonic() - started
        assert not failures, f"{len(failures)} of 200 failed; first:\n{failures[0]}"
        # Every process took requests, and each file came from upstream once in all.
        for srv in trio:
            assert "GET /pypi/up/" in srv.log(), f"{srv.url} served nothing"
        paths = [r.path for r in upstream.upstream.requests]
        for name in ("alpha-1.1", "beta-1.0"):
            wheel = upstream.files[name].name
            assert paths.count("/files/" + wheel) == 1, (wheel, paths)
        print(f"200 installs (190 uv, 10 pip) through nginx + 3 servers: {elapsed:.1f} s")
    finally:
        nginx.close()


def _big_wheel(upstream: UpstreamSet, mb: int) -> tuple[Path, bytes]:
    """A wheel of about ``mb`` MB that does not compress; and its module's bytes."""
    blob = base64.b64encode(os.urandom(mb * 1024 * 1024 * 3 // 4)).decode()
    module = f"B = '{blob}'\n"
    wheel = build_wheel(upstream.dist, "bigpkg", "1.0", modules={"bigpkg/blob.py": module})
    upstream.upstream.add_files([wheel])
    return wheel, module.encode()


def test_kill_9_mid_download_clients_retry_and_succeed(
    tmp_path: Path, trio: list[Server], upstream: UpstreamSet
) -> None:
    """trio[1] is fetching a large file from a slow upstream and streaming it to clients when
    it is killed: nginx sends new attempts elsewhere, uv retries the cut downloads, another
    process fetches the file again (the dead one's claim died with its connection)."""
    big, module = _big_wheel(upstream, 8)
    token = trio[0].token("up")
    for srv in trio:
        with srv.http(token) as c:
            assert c.get("/pypi/up/simple/bigpkg/").status_code == 200
    # 256 KiB every 0.1 s: about 3 s for the whole file
    upstream.upstream.slow(big.name, 0.0, chunk_size=262144, chunk_delay_s=0.1)
    nginx = Nginx(tmp_path / "nginx", _backends(trio))
    first = threading.Thread(target=_get_quietly, args=(trio[1], token, big.name))
    try:
        first.start()  # trio[1] takes the claim and fetches
        time.sleep(0.5)
        index = f"http://__token__:{token}@127.0.0.1:{nginx.port}/pypi/up/simple/"
        procs = [_install(index, tmp_path / "t" / str(i), "bigpkg", pip=False) for i in range(9)]
        time.sleep(1.0)
        kill9(trio[1])
        outs = [p.communicate(timeout=300)[0] for p in procs]
        for p, out in zip(procs, outs, strict=True):
            assert p.returncode == 0, out
        for i in range(9):  # whole files only: uv checked each download against its sha256
            assert (tmp_path / "t" / str(i) / "bigpkg" / "blob.py").read_bytes() == module
        assert "prematurely closed" in nginx.error_log(), "the kill cut no request"
        assert upstream.upstream.count("/files/" + big.name) >= 2  # cut, then fetched again
    finally:
        first.join()
        nginx.close()


def _get_quietly(srv: Server, token: str, filename: str) -> None:
    with srv.http(token) as c, contextlib.suppress(httpx.HTTPError):
        c.get(f"/pypi/up/files/bigpkg/{filename}", timeout=60)


def test_kill_9_mid_upstream_fetch_leaves_no_partial_object(
    tmp_path: Path, trio: list[Server], upstream: UpstreamSet
) -> None:
    big, _ = _big_wheel(upstream, 4)
    a, b = trio[0], trio[1]
    token = a.token("up")
    for srv in (a, b):
        with srv.http(token) as c:
            assert c.get("/pypi/up/simple/bigpkg/").status_code == 200
    # 64 KiB every 50 ms: about 3 s for the whole file
    upstream.upstream.slow(big.name, 0.0, chunk_size=65536, chunk_delay_s=0.05)

    def first() -> None:
        with a.http(token) as c, contextlib.suppress(httpx.HTTPError):
            c.get(f"/pypi/up/files/bigpkg/{big.name}", timeout=60)

    t = threading.Thread(target=first)
    t.start()
    time.sleep(1.0)
    assert upstream.upstream.count("/files/" + big.name) == 1  # a is fetching
    kill9(a)
    t.join()
    upstream.upstream.reset()
    with b.http(token) as c:
        r = c.get(f"/pypi/up/files/bigpkg/{big.name}", timeout=60)
    assert r.status_code == 200
    assert hashlib.sha256(r.content).hexdigest() == sha256_file(big)
    blobs = tmp_path / "cluster" / "blobs" / "sha256"
    for f in blobs.rglob("*"):
        if f.is_file():  # only whole, verified objects live under their digest
            assert sha256_file(f) == f.name


def test_postgres_restart_fails_fast_and_recovers(
    tmp_path: Path, trio: list[Server], pg: PgCluster
) -> None:
    a, b = trio[0], trio[1]
    admin = a.admin_token
    results: list[tuple[str, int, float]] = []
    stop = threading.Event()

    def hammer(srv: Server) -> None:
        with httpx.Client(base_url=srv.url, auth=("__token__", admin), timeout=30) as c:
            while not stop.is_set():
                t0 = time.monotonic()
                try:
                    code = c.get("/api/v1/audit", params={"limit": "1"}).status_code
                except httpx.HTTPError:
                    code = -1
                results.append((srv.url, code, time.monotonic() - t0))
                time.sleep(0.02)

    threads = [threading.Thread(target=hammer, args=(s,)) for s in (a, b)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        pg.stop("fast")
        down_at = len(results)
        time.sleep(3.0)
        during = results[down_at:]
        pg.start()
        for srv in (a, b):
            wait_ok(srv.url, "/api/v1/audit?limit=1", admin, within=15)
    finally:
        stop.set()
        for t in threads:
            t.join()
    codes = {code for _, code, _ in during}
    assert 503 in codes, codes
    assert codes <= {200, 503}, codes  # never a 500, a hang or a dropped connection
    slow = [d for _, code, d in during if code == 503 and d > 2.0]
    assert not slow, f"503s should come fast; slowest {max(slow):.2f} s"
    # No restart of Stockade was needed, and the change listener reconnected: a revocation
    # on a reaches b again.
    with a.http(admin) as c:
        made = c.post("/api/v1/tokens", json={"index": "up", "scope": "read"}).json()
    with b.http(made["token"]) as c:
        assert c.get("/pypi/up/simple/alpha/").status_code == 200
    with a.http(admin) as c:
        assert c.delete(f"/api/v1/tokens/{made['id']}").status_code == 200
    revoked = time.monotonic()
    with b.http(made["token"]) as c:
        while c.get("/pypi/up/simple/alpha/").status_code != 401:
            assert time.monotonic() - revoked < 2.0, "b missed the revocation after the restart"
            time.sleep(0.05)
    a.cli("audit", "checkpoint")
    b.cli("audit", "checkpoint")  # signed with the deployment's one key
    res = a.cli("audit", "verify", check=False)  # nothing lost or broken by the outage
    assert res.returncode == 0, res.stdout + res.stderr


def test_nginx_sends_stored_files_itself_with_accel_redirect(
    tmp_path: Path, pg: PgCluster, upstream: UpstreamSet
) -> None:
    servers = start_servers(tmp_path / "cluster", pg.url, 2, accel_redirect="/_stockade_blobs/")
    nginx = None
    try:
        servers[0].cli("index", "create", "up", "--mirror", upstream.upstream.simple_url)
        nginx = Nginx(tmp_path / "nginx", _backends(servers), accel=servers[0])
        token = servers[0].token("up")
        wheel = upstream.files["alpha-1.0"]
        with httpx.Client(base_url=nginx.url, auth=("__token__", token), timeout=30) as c:
            first = c.get(f"/pypi/up/files/alpha/{wheel.name}")  # fetched, then stored
            again = c.get(f"/pypi/up/files/alpha/{wheel.name}")
            blocked = c.get("/_stockade_blobs/sha256/")  # internal only
            nobody = httpx.get(f"{nginx.url}/pypi/up/files/alpha/{wheel.name}")
        assert first.content == wheel.read_bytes() and again.content == wheel.read_bytes()
        assert again.headers["content-length"] == str(wheel.stat().st_size)
        assert "x-accel-redirect" not in again.headers
        assert blocked.status_code == 404
        assert nobody.status_code == 401  # Stockade still authorises every download
        with servers[0].http(token) as direct:  # what nginx got from Stockade
            r = direct.get(f"/pypi/up/files/alpha/{wheel.name}")
        assert r.headers["x-accel-redirect"].endswith(sha256_file(wheel))
        assert r.content == b""
    finally:
        if nginx is not None:
            nginx.close()
        for s in servers:
            s.stop()
