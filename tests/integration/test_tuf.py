"""Signed indexes (issue 9, TUF as PEP 458 lays it out), verified by python-tuf's own client.

A client trusts the root it was handed out of band (``stockade tuf init --root-out``), then
refreshes timestamp → snapshot → targets → the hashed bin of each target, and downloads pages
and files through ``/pypi/<index>/tuf/targets/…``; it refuses anything whose hash differs.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from tuf.api.exceptions import (
    BadVersionNumberError,
    ExpiredMetadataError,
    LengthOrHashMismatchError,
    RepositoryError,
)
from tuf.ngclient import Updater, Urllib3Fetcher

from tests.builders import build_wheel, sha256_file
from tests.conftest import Server, UpstreamSet, make_server

WHEEL = "thing-{v}-py3-none-any.whl"


def _upload(srv: Server, index: str, wheel: Path) -> None:
    with srv.http(srv.admin_token) as c:
        r = c.post(
            f"/pypi/{index}/",
            data={":action": "file_upload"},
            files={"content": (wheel.name, wheel.read_bytes())},
        )
        assert r.status_code == 200, r.text + srv.log()[-5000:]


def _base(srv: Server, token: str, index: str) -> str:
    return f"{srv.url}/t/{token}/pypi/{index}/tuf/"


def _updater(
    srv: Server, token: str, index: str, meta: Path, root: bytes | None = None, **kw: Any
) -> Updater:
    meta.mkdir(parents=True, exist_ok=True)
    (meta.parent / "targets").mkdir(exist_ok=True)
    return Updater(
        str(meta),
        _base(srv, token, index),
        str(meta.parent / "targets"),
        _base(srv, token, index) + "targets/",
        bootstrap=root,
        **kw,
    )


def _status(srv: Server, index: str) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(srv.cli("tuf", "status", index, "--json").stdout)
    return data


def _wait_for(check: Any, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _fetch(up: Updater, path: str, dest: Path) -> bytes:
    info = up.get_targetinfo(path)
    assert info is not None, f"{path} is not a signed target"
    return Path(up.download_target(info, str(dest))).read_bytes()


def _blob(srv: Server, sha: str) -> Path:
    return srv.home / "files" / "sha256" / sha[:2] / sha[2:4] / sha


def test_private_index_signed_verified_tamper_refused_and_keys_rotated(
    server: Server, tmp_path: Path
) -> None:
    srv = server
    srv.cli("index", "create", "p", "--private")
    w1 = build_wheel(tmp_path, "thing", "1.0")
    _upload(srv, "p", w1)
    root_file = tmp_path / "root.json"
    srv.cli("tuf", "init", "p", "--bins", "16", "--root-out", str(root_file))
    reader = srv.token("p")
    status = _status(srv, "p")
    assert status["bins"] == 16 and status["targets"] == 3  # two page forms and the wheel
    assert status["keys"]["root"]["key_file"].endswith("root-ed25519.pem")
    assert oct((srv.home / "keys" / "tuf" / "root-ed25519.pem").stat().st_mode)[-3:] == "600"

    # A client bootstraps from the root it got out of band and verifies a page and a file.
    meta = tmp_path / "client" / "metadata"
    up = _updater(srv, reader, "p", meta, root_file.read_bytes())
    up.refresh()
    html = _fetch(up, "simple/thing/index.html", tmp_path / "page.html")
    with srv.http(reader) as c:
        served = c.get("/pypi/p/simple/thing/", headers={"Accept-Encoding": "identity"})
        served_json = c.get(
            "/pypi/p/simple/thing/",
            headers={"Accept": "application/vnd.pypi.simple.v1+json"},
        )
        assert c.get("/pypi/p/tuf/timestamp.json").headers["cache-control"] == "no-cache"
        assert c.get("/pypi/p/tuf/1.nope.json").status_code == 404
        bad = c.get(f"/pypi/p/tuf/targets/files/thing/{'0' * 64}.{w1.name}")
        assert bad.status_code == 404  # only signed digests are served
    with srv.http() as anon:
        assert anon.get("/pypi/p/tuf/timestamp.json").status_code == 401  # same auth as /simple/
    assert html == served.content  # the signed page is the page pip gets
    assert _fetch(up, "simple/thing/index.json", tmp_path / "page.json") == served_json.content
    assert _fetch(up, f"files/thing/{w1.name}", tmp_path / w1.name) == w1.read_bytes()

    # An upload re-signs only what changed: the new file's bin and the page's bins.
    before = _status(srv, "p")["versions"]
    w2 = build_wheel(tmp_path, "thing", "2.0")
    _upload(srv, "p", w2)
    _wait_for(lambda: _status(srv, "p")["targets"] == 4, "the upload to be signed")
    after = _status(srv, "p")["versions"]
    assert after["targets"] == before["targets"]  # the offline role was not needed
    up = _updater(srv, reader, "p", meta)
    up.refresh()
    assert _fetch(up, f"files/thing/{w2.name}", tmp_path / w2.name) == w2.read_bytes()
    html2 = _fetch(up, "simple/thing/index.html", tmp_path / "page2.html")
    assert w2.name.encode() in html2 and html2 != html

    # A yank changes the page: signed again.
    srv.cli("package", "yank", "p", "thing", "2.0", "--reason", "broken")
    _wait_for(lambda: b"broken" in _signed_page(srv, reader, tmp_path), "the yank to be signed")

    # Tampering behind the server's back: the client refuses the file and the page.
    blob = _blob(srv, sha256_file(w1))
    blob.chmod(0o644)
    blob.write_bytes(blob.read_bytes()[:-1] + b"X")
    up = _updater(srv, reader, "p", meta)
    up.refresh()
    with pytest.raises(LengthOrHashMismatchError):
        _fetch(up, f"files/thing/{w1.name}", tmp_path / "tampered.whl")
    info = up.get_targetinfo("simple/thing/index.html")
    assert info is not None
    page_blob = _blob(srv, info.hashes["sha256"])
    page_blob.chmod(0o644)
    page_blob.write_bytes(page_blob.read_bytes().replace(b"thing-2.0", b"thing-6.6"))
    with pytest.raises(LengthOrHashMismatchError):
        up.download_target(info, str(tmp_path / "tampered.html"))

    # Key rotation: the client holding the old root follows the chain of roots.
    for role in ("root", "timestamp", "bins", "targets", "snapshot"):
        out = orjson.loads(srv.cli("tuf", "rotate", role, "--json").stdout)
        assert out["old_keyid"] != out["new_keyid"] and out["indexes"] == ["p"]
    assert _status(srv, "p")["versions"]["root"] == 5  # bins live in targets, not root
    up = _updater(srv, reader, "p", meta)
    up.refresh()
    assert _fetch(up, f"files/thing/{w2.name}", tmp_path / "again.whl") == w2.read_bytes()
    fresh = _updater(srv, reader, "p", tmp_path / "fresh" / "metadata", root_file.read_bytes())
    fresh.refresh()  # a client that only knows root v1 walks 1 → 5
    assert fresh.get_targetinfo(f"files/thing/{w2.name}") is not None
    events = orjson.loads(srv.cli("audit", "list", "--action", "tuf.rotate", "--json").stdout)
    assert sorted(e["detail"]["role"] for e in events) == sorted(
        ["root", "timestamp", "bins", "targets", "snapshot"]
    )
    # The root key offline: rotating needs it back, and says so.
    key = srv.home / "keys" / "tuf" / "root-ed25519.pem"
    key.rename(tmp_path / "offline-root.pem")
    res = srv.cli("tuf", "rotate", "timestamp", check=False)
    assert res.returncode != 0 and "root key" in res.stderr and "--root-key" in res.stderr
    assert _status(srv, "p")["keys"]["root"]["key_file"] == "offline"
    srv.cli("tuf", "rotate", "timestamp", "--root-key", str(tmp_path / "offline-root.pem"))

    # A policy change re-decides the pages: the signed page and targets follow it.
    policy = tmp_path / "policy.toml"
    policy.write_text(
        'blocked_files = "hidden"\n[[rules]]\nkind = "names"\ndeny = ["thing==2.0"]\n'
    )
    srv.cli("policy", "set", "p", "--file", str(policy))
    page = _signed_page(srv, reader, tmp_path)
    assert w2.name.encode() not in page and w1.name.encode() in page
    up = _updater(srv, reader, "p", meta)
    up.refresh()
    assert up.get_targetinfo(f"files/thing/{w2.name}") is None


def _signed_page(srv: Server, token: str, tmp_path: Path) -> bytes:
    meta = tmp_path / "poll" / "metadata"
    root = srv.cli("tuf", "root", "p", "--version", "1").stdout.strip().encode()
    shutil.rmtree(meta, ignore_errors=True)
    up = _updater(srv, token, "p", meta, root)
    up.refresh()
    return _fetch(up, "simple/thing/index.html", tmp_path / "poll.html")


class ReplayTimestamp(Urllib3Fetcher):
    """A freeze/rollback attacker: serves an old timestamp.json instead of the current one."""

    def __init__(self, old: bytes) -> None:
        super().__init__()
        self.old = old

    def _fetch(self, url: str) -> Iterator[bytes]:
        if url.endswith("/timestamp.json"):
            return iter([self.old])
        return super()._fetch(url)


@pytest.fixture
def fast_expiry_server(tmp_path: Path, db_url: str) -> Iterator[Server]:
    srv = make_server(tmp_path / "home", db_url, tuf_timestamp_expiry=10, tuf_refresh_interval=1)
    try:
        yield srv
    finally:
        srv.stop()


def test_mirror_and_virtual_signed_timestamp_refreshed_expired_and_replayed_refused(
    fast_expiry_server: Server, upstream: UpstreamSet, tmp_path: Path
) -> None:
    srv = fast_expiry_server
    srv.cli("index", "create", "up", "--mirror", upstream.upstream.simple_url)
    srv.cli("index", "create", "internal", "--private")
    srv.cli("index", "create", "all", "--virtual", "internal,up")
    srv.cli("tuf", "init", "up", "--bins", "8", "--root-out", str(tmp_path / "up-root.json"))
    srv.cli("tuf", "init", "all", "--bins", "8", "--root-out", str(tmp_path / "all-root.json"))
    reader = srv.token("*")
    with srv.http(reader) as c:  # the mirror learns the project when a client asks for it
        assert c.get("/pypi/all/simple/alpha/").status_code == 200
    alpha = upstream.files["alpha-1.1"]

    def signed(index: str) -> bool:
        up = _updater(
            srv,
            reader,
            index,
            tmp_path / index / "m",
            (tmp_path / f"{index}-root.json").read_bytes(),
        )
        try:
            up.refresh()
        except RepositoryError:  # e.g. the timestamp `tuf init` signed expired meanwhile
            return False
        return up.get_targetinfo(f"files/alpha/{alpha.name}") is not None

    try:
        _wait_for(lambda: signed("up") and signed("all"), "the mirrored page to be signed")
    except Exception:
        print(srv.log())
        raise
    up = _updater(srv, reader, "all", tmp_path / "all" / "m")
    up.refresh()
    # fetched through from the upstream on the way, verified against the signed digest
    assert _fetch(up, f"files/alpha/{alpha.name}", tmp_path / alpha.name) == alpha.read_bytes()
    page = _fetch(up, "simple/alpha/index.json", tmp_path / "alpha.json")
    assert orjson.loads(page)["name"] == "alpha"

    with srv.http(reader) as c:
        old_ts = c.get("/pypi/up/tuf/timestamp.json").content
    old_version = orjson.loads(old_ts)["signed"]["version"]
    time.sleep(11)  # longer than the timestamp lives: the refresh job re-signed it
    with srv.http(reader) as c:
        new_ts = c.get("/pypi/up/tuf/timestamp.json").content
    assert orjson.loads(new_ts)["signed"]["version"] > old_version
    current = _updater(srv, reader, "up", tmp_path / "up" / "m")
    current.refresh()

    # An attacker replaying the old (now expired) timestamp: a new client refuses it...
    root = (tmp_path / "up-root.json").read_bytes()
    with pytest.raises(ExpiredMetadataError):
        _updater(
            srv, reader, "up", tmp_path / "x" / "m", root, fetcher=ReplayTimestamp(old_ts)
        ).refresh()
    # ...and a client that has seen a newer one refuses the rollback.
    with pytest.raises(BadVersionNumberError):
        _updater(
            srv, reader, "up", tmp_path / "up" / "m", fetcher=ReplayTimestamp(old_ts)
        ).refresh()


def test_two_workers_sign_concurrent_uploads_consistently(tmp_path: Path, db_url: str) -> None:
    """Uploads land on either worker process; each signs behind the tuf_repos row lock, so the
    metadata ends up naming every file, and a client never meets a missing bin version."""
    from concurrent.futures import ThreadPoolExecutor

    srv = make_server(tmp_path / "home", db_url, workers=2)
    try:
        srv.cli("index", "create", "p", "--private")
        root = tmp_path / "root.json"
        srv.cli("tuf", "init", "p", "--bins", "4", "--root-out", str(root))
        wheels = [build_wheel(tmp_path, "thing", f"{v}.0") for v in range(1, 7)]
        with ThreadPoolExecutor(6) as pool:
            list(pool.map(lambda w: _upload(srv, "p", w), wheels))
        reader = srv.token("p")

        def complete() -> bool:
            meta = tmp_path / "c" / "metadata"
            shutil.rmtree(meta, ignore_errors=True)
            up = _updater(srv, reader, "p", meta, root.read_bytes())
            up.refresh()
            return all(up.get_targetinfo(f"files/thing/{w.name}") for w in wheels)

        try:
            _wait_for(complete, "every upload to be signed", timeout=30)
        except AssertionError:
            print(srv.log()[-6000:])
            print(_status(srv, "p"))
            raise
        up = _updater(srv, reader, "p", tmp_path / "c" / "metadata")
        up.refresh()
        page = _fetch(up, "simple/thing/index.html", tmp_path / "page.html")
        assert all(w.name.encode() in page for w in wheels)
        for w in wheels:
            assert _fetch(up, f"files/thing/{w.name}", tmp_path / w.name) == w.read_bytes()
    finally:
        srv.stop()
