"""Mirror behaviour under failure: tampering, outages, truncation, concurrency, caching."""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.builders import build_wheel, sha256_file
from tests.conftest import Server, UpstreamSet, make_server


def blobs(srv: Server) -> set[str]:
    root = srv.home / "files" / "sha256"
    return {p.name for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def audit(srv: Server, action: str) -> list[dict[str, object]]:
    import json

    deadline = time.monotonic() + 3
    while True:
        events = [
            e
            for e in json.loads(srv.cli("audit", "list", "--json", "--limit", "500").stdout)
            if e["action"] == action
        ]
        if events or time.monotonic() > deadline:
            return events
        time.sleep(0.2)


@pytest.fixture
def mirror(sqlite_server: Server, upstream: UpstreamSet) -> tuple[Server, str, UpstreamSet]:
    sqlite_server.cli("index", "create", "up", "--mirror", upstream.upstream.simple_url)
    return sqlite_server, sqlite_server.token("up"), upstream


@contextlib.contextmanager
def mirror_server(tmp_path: Path, up: UpstreamSet, **settings: object) -> Iterator[Server]:
    """A SQLite server with settings, and a mirror index ``up`` of the local upstream."""
    srv = make_server(tmp_path / "h", f"sqlite:///{tmp_path / 'h' / 'db.sqlite'}", **settings)
    try:
        srv.cli("index", "create", "up", "--mirror", up.upstream.simple_url)
        yield srv
    finally:
        srv.stop()


def file_url(project: str, path: Path) -> str:
    return f"/pypi/up/files/{project}/{path.name}"


def test_tampered_file_is_never_served_nor_stored(mirror: tuple[Server, str, UpstreamSet]) -> None:
    srv, token, up = mirror
    wheel = up.files["alpha-1.1"]
    up.upstream.tamper(wheel.name)
    with srv.http(token) as c:
        for _ in range(2):  # twice in a row: nothing poisoned the cache
            r = c.get(file_url("alpha", wheel))
            assert r.status_code == 502
            assert "sha256" in r.text or "hashes to" in r.text
        assert sha256_file(wheel) not in blobs(srv)
        assert up.upstream.count(wheel.name) >= 2  # each attempt went back upstream
        assert audit(srv, "integrity.mismatch")
        up.upstream.reset()
        r = c.get(file_url("alpha", wheel))
        assert r.status_code == 200
        assert r.content == wheel.read_bytes()
    assert sha256_file(wheel) in blobs(srv)


def test_upstream_down_serves_stale_page_and_cached_files(
    tmp_path: Path, upstream: UpstreamSet
) -> None:
    with mirror_server(tmp_path, upstream, page_ttl=0) as srv:
        token = srv.token("up")
        wheel = upstream.files["alpha-1.1"]
        with srv.http(token) as c:
            fresh = c.get("/pypi/up/simple/alpha/")
            assert fresh.status_code == 200 and "Warning" not in fresh.headers
            assert c.get(file_url("alpha", wheel)).status_code == 200
            upstream.upstream.down = True
            stale = c.get("/pypi/up/simple/alpha/")
            assert stale.status_code == 200
            assert stale.headers["Warning"].startswith("110")
            assert "x-stockade-stale" in stale.headers
            assert wheel.name in stale.text
            cached = c.get(file_url("alpha", wheel))
            assert cached.status_code == 200 and cached.content == wheel.read_bytes()
            # a project never seen before cannot be served
            never = c.get("/pypi/up/simple/gamma/")
            assert never.status_code == 502
            assert "upstream" in never.text
            # a failing upstream is not hammered: the failure is remembered for a few seconds
            asked = len(upstream.upstream.requests)
            for _ in range(5):
                assert c.get("/pypi/up/simple/gamma/").status_code == 502
            assert len(upstream.upstream.requests) == asked


def test_revalidation_is_conditional(tmp_path: Path, upstream: UpstreamSet) -> None:
    with mirror_server(tmp_path, upstream, page_ttl=0) as srv:
        with srv.http(srv.token("up")) as c:
            assert c.get("/pypi/up/simple/beta/").status_code == 200
            upstream.upstream.clear_requests()
            assert c.get("/pypi/up/simple/beta/").status_code == 200
        reqs = [r for r in upstream.upstream.requests if r.path.startswith("/simple/beta")]
        assert reqs and reqs[-1].headers.get("if-none-match")


@pytest.mark.parametrize("mode", ["buffered", "streamed"])
def test_truncated_upstream_stores_nothing_and_refetches(
    tmp_path: Path, upstream: UpstreamSet, mode: str
) -> None:
    settings = {"buffer_below": 0} if mode == "streamed" else {}
    with mirror_server(tmp_path, upstream, **settings) as srv:
        big = build_wheel(
            upstream.dist,
            "delta",
            "1.0",
            modules={"delta/blob.py": "x = '" + "y" * 400_000 + "'\n"},
        )
        upstream.upstream.add_files([big])
        upstream.upstream.truncate(big.name, 0.5)
        with srv.http(srv.token("up")) as c:
            if mode == "buffered":
                r = c.get(file_url("delta", big))
                assert r.status_code == 502
            else:
                try:
                    r = c.get(file_url("delta", big))
                    complete = r.status_code == 200 and r.content == big.read_bytes()
                except httpx.HTTPError:
                    complete = False
                assert not complete  # the client never receives the whole unverified file
            assert sha256_file(big) not in blobs(srv)
            assert not list((srv.home / "files" / "tmp").iterdir())
            upstream.upstream.reset()
            before = upstream.upstream.count(big.name)
            r = c.get(file_url("delta", big))
            assert r.status_code == 200 and r.content == big.read_bytes()
            assert upstream.upstream.count(big.name) == before + 1
        assert sha256_file(big) in blobs(srv)


@pytest.mark.parametrize("mode", ["buffered", "streamed"])
def test_concurrent_first_requests_share_one_fetch(
    tmp_path: Path, upstream: UpstreamSet, mode: str
) -> None:
    settings = {"buffer_below": 0} if mode == "streamed" else {}
    with mirror_server(tmp_path, upstream, **settings) as srv:
        token = srv.token("up")
        wheel = upstream.files["alpha-1.0"]
        with srv.http(token) as c:
            c.get("/pypi/up/simple/alpha/")
        upstream.upstream.slow(wheel.name, 1.0)

        def get() -> bytes:
            with srv.http(token) as c:
                r = c.get(file_url("alpha", wheel))
                assert r.status_code == 200
                return r.content

        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            bodies = list(pool.map(lambda _: get(), range(6)))
        assert all(b == wheel.read_bytes() for b in bodies)
        assert upstream.upstream.count("/files/" + wheel.name) == 1


def test_page_caching_headers_and_negotiation(mirror: tuple[Server, str, UpstreamSet]) -> None:
    srv, token, _ = mirror
    with srv.http(token) as c:
        r = c.get("/pypi/up/simple/alpha/")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/html")
        etag = r.headers["etag"]
        again = c.get("/pypi/up/simple/alpha/", headers={"If-None-Match": etag})
        assert again.status_code == 304
        j = c.get(
            "/pypi/up/simple/alpha/",
            headers={"Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.1"},
        )
        data = j.json()
        assert data["meta"]["api-version"].startswith("1.")
        assert data["versions"] == ["1.0", "1.1", "2.0"]
        yanked = [f for f in data["files"] if f["filename"].startswith("alpha-2.0")]
        assert yanked[0]["yanked"] == "broken build"
        assert all(len(f["hashes"]["sha256"]) == 64 for f in data["files"])
        assert c.get("/pypi/up/simple/alpha/", headers={"Accept": "image/png"}).status_code == 406
        redirect = c.get("/pypi/up/simple/Alpha/", follow_redirects=False)
        assert redirect.status_code == 301
        assert redirect.headers["location"] == "../alpha/"
        assert c.get("/pypi/up/simple/Alpha/", follow_redirects=True).status_code == 200
        gz = c.get("/pypi/up/simple/alpha/", headers={"Accept-Encoding": "gzip"})
        assert gz.status_code == 200
        meta = c.get("/pypi/up/files/alpha/alpha-1.1-py3-none-any.whl.metadata")
        assert meta.status_code == 200 and b"Name: alpha" in meta.content
        want = next(f for f in data["files"] if f["filename"] == "alpha-1.1-py3-none-any.whl")
        assert hashlib.sha256(meta.content).hexdigest() == want["core-metadata"]["sha256"]
        assert c.get("/pypi/up/simple/does-not-exist/").status_code == 404


def test_confusion_new_public_version_never_shadows_internal(
    sqlite_server: Server, upstream: UpstreamSet, tmp_path: Path
) -> None:
    srv = sqlite_server
    srv.cli("index", "create", "internal", "--private")
    srv.cli("index", "create", "up", "--mirror", upstream.upstream.simple_url)
    srv.cli("index", "create", "main", "--virtual", "up,internal")  # even with the mirror first
    ours = build_wheel(tmp_path, "internal-tool", "1.0")
    admin = srv.admin_token
    with srv.http(admin) as c:
        r = c.post(
            "/pypi/internal/",
            data={":action": "file_upload", "name": "internal-tool", "version": "1.0"},
            files={"content": (ours.name, ours.read_bytes())},
        )
        assert r.status_code == 200, r.text
        upstream.upstream.add_files([build_wheel(upstream.dist, "internal-tool", "99.0")])
        j = c.get(
            "/pypi/main/simple/internal-tool/",
            headers={"Accept": "application/vnd.pypi.simple.v1+json"},
        ).json()
        assert [f["filename"] for f in j["files"]] == [ours.name]
        # and a project only the mirror has still flows through
        assert c.get("/pypi/main/simple/beta/").status_code == 200


def test_changed_upstream_digest_keeps_serving_verified_bytes(
    tmp_path: Path, upstream: UpstreamSet
) -> None:
    with mirror_server(tmp_path, upstream, page_ttl=0) as srv, srv.http(srv.token("up")) as c:
        wheel = upstream.files["alpha-1.0"]
        original = wheel.read_bytes()
        assert c.get(file_url("alpha", wheel)).content == original
        # the upstream now publishes different bytes under the same (immutable) filename
        rebuilt = build_wheel(upstream.dist, "alpha", "1.0", summary="evil twin")
        assert rebuilt.read_bytes() != original
        upstream.upstream.add_files([rebuilt])
        page = c.get("/pypi/up/simple/alpha/").text
        assert sha256_file(rebuilt) not in page
        assert hashlib.sha256(original).hexdigest() in page
        assert c.get(file_url("alpha", wheel)).content == original
        assert audit(srv, "upstream.digest_changed")
