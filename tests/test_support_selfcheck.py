"""Self-check for the test-support modules tests/builders.py and tests/upstream.py."""

from __future__ import annotations

import csv
import hashlib
import http.client
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import threading
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from pathlib import Path

import pytest

from tests.builders import (
    build_corrupt_wheel,
    build_many_members_wheel,
    build_sdist,
    build_symlink_sdist,
    build_symlink_wheel,
    build_traversal_sdist,
    build_traversal_wheel,
    build_wheel,
    build_wheel_without_metadata,
    build_zip_bomb_wheel,
    record_hash,
    sha256_file,
    wheel_metadata,
    write_simple_tree,
)
from tests.upstream import HTML_TYPE, JSON_TYPE, Upstream, negotiate

PIP_ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, "
    "text/html; q=0.01"
)
UV_ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, "
    "text/html;q=0.01"
)
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


@dataclass
class Tree:
    root: Path
    dists: Path
    alpha_whl: Path
    beta1_whl: Path
    beta2_whl: Path
    alpha_sdist: Path


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Tree:
    dists = tmp_path_factory.mktemp("dists")
    alpha = build_wheel(dists, "Alpha.Pkg", "1.0", requires_dist=["beta>=1.0"], license="MIT")
    beta1 = build_wheel(dists, "beta", "1.0")
    beta2 = build_wheel(dists, "beta", "2.0", requires_python=">=3.8")
    sdist = build_sdist(dists, "Alpha.Pkg", "1.0", requires_dist=["beta>=1.0"])
    root = tmp_path_factory.mktemp("upstream")
    write_simple_tree(
        root,
        [alpha, beta1, beta2, sdist],
        yanked={beta1.name: "broken <build>"},
        with_metadata={alpha.name, beta2.name},
    )
    return Tree(root, dists, alpha, beta1, beta2, sdist)


@pytest.fixture
def upstream(tree: Tree) -> Iterator[Upstream]:
    with Upstream(tree.root) as up:
        yield up


def _get(
    url: str, headers: dict[str, str] | None = None, timeout: float = 5
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers.items()), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers.items()), err.read()


def _pip_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(PIP_CONFIG_FILE="/dev/null", PIP_DISABLE_PIP_VERSION_CHECK="1")
    for key in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX"):
        env.pop(key, None)
    return env


# --------------------------------------------------------------------------- builders


def test_wheel_layout_and_record(tree: Tree) -> None:
    assert tree.alpha_whl.name == "Alpha_Pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(tree.alpha_whl) as zf:
        assert zf.testzip() is None
        names = zf.namelist()
        assert "alpha_pkg/__init__.py" in names
        assert zf.read("alpha_pkg/__init__.py") == b'__version__ = "1.0"\n'
        assert zf.read("Alpha_Pkg-1.0.dist-info/WHEEL").decode().splitlines() == [
            "Wheel-Version: 1.0",
            "Generator: stockade-tests (0.1)",
            "Root-Is-Purelib: true",
            "Tag: py3-none-any",
        ]
        rows = list(csv.reader(io.StringIO(zf.read("Alpha_Pkg-1.0.dist-info/RECORD").decode())))
        assert rows[-1] == ["Alpha_Pkg-1.0.dist-info/RECORD", "", ""]
        assert {r[0] for r in rows} == set(names)
        for path, digest, size in rows[:-1]:
            data = zf.read(path)
            assert digest == record_hash(data)
            assert "=" not in digest.removeprefix("sha256=")
            assert int(size) == len(data)
    meta = BytesHeaderParser().parsebytes(wheel_metadata(tree.alpha_whl))
    assert meta["Metadata-Version"] == "2.1"
    assert meta["Name"] == "Alpha.Pkg"
    assert meta["Version"] == "1.0"
    assert meta["License"] == "MIT"
    assert meta.get_all("Requires-Dist") == ["beta>=1.0"]
    assert BytesHeaderParser().parsebytes(wheel_metadata(tree.beta2_whl))["Requires-Python"] == (
        ">=3.8"
    )


def test_wheel_metadata_overrides_and_extras(tmp_path: Path) -> None:
    whl = build_wheel(
        tmp_path,
        "gamma",
        "1.0",
        metadata_name="delta",
        metadata_version_override="9.9",
        requires_dist=['rich; extra == "fancy"'],
        modules={"gamma_mod.py": "X = 1\n"},
    )
    meta = BytesHeaderParser().parsebytes(wheel_metadata(whl))
    assert (meta["Name"], meta["Version"]) == ("delta", "9.9")
    assert meta["Provides-Extra"] == "fancy"
    with zipfile.ZipFile(whl) as zf:
        assert "gamma_mod.py" in zf.namelist()
    # reproducible
    again = build_wheel(
        tmp_path / "again",
        "gamma",
        "1.0",
        metadata_name="delta",
        metadata_version_override="9.9",
        requires_dist=['rich; extra == "fancy"'],
        modules={"gamma_mod.py": "X = 1\n"},
    )
    assert sha256_file(whl) == sha256_file(again)


def test_sdist_layout(tree: Tree) -> None:
    assert tree.alpha_sdist.name == "alpha_pkg-1.0.tar.gz"
    with tarfile.open(tree.alpha_sdist, "r:gz") as tf:
        names = tf.getnames()
        assert all(n == "alpha_pkg-1.0" or n.startswith("alpha_pkg-1.0/") for n in names)
        assert {
            "alpha_pkg-1.0/PKG-INFO",
            "alpha_pkg-1.0/pyproject.toml",
            "alpha_pkg-1.0/alpha_pkg/__init__.py",
        } <= set(names)
        fh = tf.extractfile("alpha_pkg-1.0/PKG-INFO")
        assert fh is not None
        info = BytesHeaderParser().parsebytes(fh.read())
    assert (info["Metadata-Version"], info["Name"], info["Version"]) == ("2.1", "Alpha.Pkg", "1.0")
    assert info.get_all("Requires-Dist") == ["beta>=1.0"]


def test_pip_installs_from_find_links(tree: Tree, tmp_path: Path) -> None:
    target = tmp_path / "target"
    # fmt: off
    cmd = [
        sys.executable, "-m", "pip", "install", "--isolated", "--no-index", "--no-cache-dir",
        "--no-compile", "--find-links", str(tree.dists), "--target", str(target),
        "alpha.pkg", "beta==1.0",
    ]
    # fmt: on
    proc = subprocess.run(cmd, env=_pip_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (target / "alpha_pkg" / "__init__.py").is_file()
    assert (target / "beta" / "__init__.py").read_text() == '__version__ = "1.0"\n'
    assert (target / "Alpha_Pkg-1.0.dist-info" / "RECORD").is_file()


# --------------------------------------------------------------------------- hostile builders


def test_hostile_builders(tmp_path: Path) -> None:
    garbage = build_corrupt_wheel(tmp_path / "g", "bad", "1.0")
    assert garbage.name == "bad-1.0-py3-none-any.whl"
    assert not zipfile.is_zipfile(garbage)
    chopped = build_corrupt_wheel(tmp_path / "c", "bad", "1.0", mode="no-central-directory")
    assert chopped.read_bytes()[:4] == b"PK\x03\x04"
    with pytest.raises(zipfile.BadZipFile):
        zipfile.ZipFile(chopped)

    trav = build_traversal_wheel(tmp_path / "t", "trav", "1.0")
    with zipfile.ZipFile(trav) as zf:
        assert "../evil.py" in zf.namelist()
        assert "trav-1.0.dist-info/METADATA" in zf.namelist()
    absolute = build_traversal_wheel(tmp_path / "a", "trav", "1.0", member="/etc/evil")
    with zipfile.ZipFile(absolute) as zf:
        assert "/etc/evil" in zf.namelist()

    sym = build_symlink_wheel(tmp_path / "s", "sym", "1.0")
    with zipfile.ZipFile(sym) as zf:
        links = [i for i in zf.infolist() if (i.external_attr >> 16) == 0o120777]
        assert len(links) == 1
        assert zf.read(links[0]) == b"/etc/passwd"

    nometa = build_wheel_without_metadata(tmp_path / "n", "nometa", "1.0")
    with zipfile.ZipFile(nometa) as zf:
        assert zf.testzip() is None
        assert not [n for n in zf.namelist() if n.endswith("/METADATA")]
    with pytest.raises(ValueError, match="METADATA"):
        wheel_metadata(nometa)

    bomb = build_zip_bomb_wheel(tmp_path / "b", "bomb", "1.0")
    assert bomb.stat().st_size < 1024 * 1024
    with zipfile.ZipFile(bomb) as zf:
        assert sum(i.file_size for i in zf.infolist()) >= 200 * 1024 * 1024
        assert wheel_metadata(bomb).startswith(b"Metadata-Version: 2.1")

    many = build_many_members_wheel(tmp_path / "m", "many", "1.0", count=20000)
    with zipfile.ZipFile(many) as zf:
        assert len(zf.infolist()) >= 20000

    ssym = build_symlink_sdist(tmp_path / "ss", "Sym.Sdist", "1.0")
    assert ssym.name == "sym_sdist-1.0.tar.gz"
    with tarfile.open(ssym, "r:gz") as tf:
        link = [m for m in tf.getmembers() if m.issym()]
        assert [m.linkname for m in link] == ["../../etc/passwd"]

    strav = build_traversal_sdist(tmp_path / "st", "trav", "1.0")
    with tarfile.open(strav, "r:gz") as tf:
        assert "../x" in tf.getnames()
        assert "trav-1.0/PKG-INFO" in tf.getnames()


# --------------------------------------------------------------------------- upstream pages


def test_negotiate_unit() -> None:
    assert negotiate(PIP_ACCEPT) == JSON_TYPE
    assert negotiate(UV_ACCEPT) == JSON_TYPE
    assert negotiate(BROWSER_ACCEPT) == HTML_TYPE
    assert negotiate(None) == HTML_TYPE
    assert negotiate("*/*") == HTML_TYPE
    assert negotiate("application/vnd.pypi.simple.v1+json, text/html") == JSON_TYPE
    assert negotiate("text/html, application/vnd.pypi.simple.v1+json") == HTML_TYPE
    assert negotiate("text/html;q=0.5, application/vnd.pypi.simple.v1+json;q=0.6") == JSON_TYPE
    assert negotiate("application/vnd.pypi.simple.latest+json") == JSON_TYPE
    assert negotiate(PIP_ACCEPT, json_enabled=False) == "application/vnd.pypi.simple.v1+html"


def test_pages_html_and_json(tree: Tree, upstream: Upstream) -> None:
    status, headers, body = _get(upstream.simple_url + "alpha-pkg/")
    assert status == 200
    assert headers["Content-Type"] == "text/html"
    page = body.decode()
    sha = sha256_file(tree.alpha_whl)
    assert f'href="../../files/{tree.alpha_whl.name}#sha256={sha}"' in page
    assert (
        f'href="../../files/{tree.alpha_sdist.name}#sha256={sha256_file(tree.alpha_sdist)}"' in page
    )
    meta_sha = hashlib.sha256(wheel_metadata(tree.alpha_whl)).hexdigest()
    assert f'data-core-metadata="sha256={meta_sha}"' in page
    assert f'data-dist-info-metadata="sha256={meta_sha}"' in page

    status, headers, body = _get(upstream.simple_url + "beta/", {"Accept": PIP_ACCEPT})
    assert status == 200
    assert headers["Content-Type"] == JSON_TYPE
    doc = json.loads(body)
    assert doc["meta"]["api-version"] == "1.1"
    assert doc["name"] == "beta"
    assert doc["versions"] == ["1.0", "2.0"]
    files = {f["filename"]: f for f in doc["files"]}
    b1, b2 = files[tree.beta1_whl.name], files[tree.beta2_whl.name]
    assert b1["hashes"] == {"sha256": sha256_file(tree.beta1_whl)}
    assert b1["yanked"] == "broken <build>"
    assert b1["core-metadata"] is False
    assert b1["dist-info-metadata"] is False
    assert "requires-python" not in b1
    assert b2["yanked"] is False
    assert b2["requires-python"] == ">=3.8"
    assert b2["core-metadata"] == {
        "sha256": hashlib.sha256(wheel_metadata(tree.beta2_whl)).hexdigest()
    }
    assert b2["size"] == tree.beta2_whl.stat().st_size
    assert b2["upload-time"] == "2024-01-02T03:04:05.000000Z"
    assert b2["url"] == f"../../files/{tree.beta2_whl.name}"

    _, headers, body = _get(upstream.simple_url + "beta/", {"Accept": UV_ACCEPT})
    assert headers["Content-Type"] == JSON_TYPE
    _, headers, body = _get(upstream.simple_url + "beta/", {"Accept": BROWSER_ACCEPT})
    assert headers["Content-Type"] == "text/html"
    html_page = body.decode()
    assert 'data-yanked="broken &lt;build&gt;"' in html_page
    assert 'data-requires-python="&gt;=3.8"' in html_page

    # root index, redirects, 404s
    status, _, body = _get(upstream.simple_url)
    assert status == 200
    assert b'href="alpha-pkg/"' in body
    assert b'href="beta/"' in body
    status, _, body = _get(upstream.simple_url, {"Accept": JSON_TYPE})
    assert json.loads(body)["projects"] == [{"name": "alpha-pkg"}, {"name": "beta"}]
    status, headers, _ = _get(upstream.simple_url + "Alpha.Pkg/")  # follows the 301
    assert status == 200
    assert headers["Content-Type"] == "text/html"
    assert _get(upstream.simple_url + "nope/")[0] == 404
    assert _get(upstream.files_url + "nope.whl")[0] == 404
    assert _get(upstream.url + "/files/../.tree-state.json")[0] == 404

    # files and metadata files
    status, headers, body = _get(upstream.files_url + tree.beta2_whl.name)
    assert status == 200
    assert headers["Content-Type"] == "application/octet-stream"
    assert int(headers["Content-Length"]) == len(body) == tree.beta2_whl.stat().st_size
    assert hashlib.sha256(body).hexdigest() == sha256_file(tree.beta2_whl)
    _, _, meta = _get(upstream.files_url + tree.alpha_whl.name + ".metadata")
    assert meta == wheel_metadata(tree.alpha_whl)
    assert _get(upstream.files_url + tree.beta1_whl.name + ".metadata")[0] == 404

    # request log (headers are case-insensitive)
    reqs = [r for r in upstream.requests if r.path == "/simple/beta/"]
    assert reqs
    assert reqs[0].headers["accept"] == PIP_ACCEPT == reqs[0].headers["Accept"]
    method, path, _hdrs = reqs[0]
    assert (method, path) == ("GET", "/simple/beta/")
    assert upstream.count("/simple/beta/") == 3


def test_etag_and_last_modified(tree: Tree, upstream: Upstream) -> None:
    url = upstream.simple_url + "beta/"
    _, html_headers, html_body = _get(url)
    _, json_headers, _json_body = _get(url, {"Accept": PIP_ACCEPT})
    assert html_headers["ETag"] == f'"{hashlib.sha256(html_body).hexdigest()}"'
    assert json_headers["ETag"] != html_headers["ETag"]
    assert "Last-Modified" in html_headers
    assert html_headers["Vary"] == "Accept"
    assert _get(url, {"If-None-Match": html_headers["ETag"]})[0] == 304
    assert _get(url, {"If-None-Match": '"other"'})[0] == 200
    # ETag belongs to the representation: JSON etag does not validate the HTML page
    assert _get(url, {"If-None-Match": json_headers["ETag"]})[0] == 200
    assert _get(url, {"If-Modified-Since": html_headers["Last-Modified"]})[0] == 304
    furl = upstream.files_url + tree.beta1_whl.name
    _, fh, _ = _get(furl)
    assert fh["ETag"] == f'"{sha256_file(tree.beta1_whl)}"'
    assert _get(furl, {"If-None-Match": fh["ETag"]})[0] == 304


def test_pip_installs_from_upstream_index(tree: Tree, upstream: Upstream, tmp_path: Path) -> None:
    target = tmp_path / "target"
    # fmt: off
    cmd = [
        sys.executable, "-m", "pip", "install", "--isolated", "--no-cache-dir", "--no-compile",
        "--index-url", upstream.simple_url, "--target", str(target), "alpha.pkg",
    ]
    # fmt: on
    proc = subprocess.run(cmd, env=_pip_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (target / "alpha_pkg" / "__init__.py").is_file()
    assert (target / "beta" / "__init__.py").read_text() == '__version__ = "2.0"\n'
    # pip negotiated JSON and used PEP 658 metadata for the wheels that have it
    page_reqs = [r for r in upstream.requests if r.path.startswith("/simple/")]
    assert page_reqs
    assert all("vnd.pypi.simple.v1+json" in r.headers["accept"] for r in page_reqs)
    assert upstream.count(f"/files/{tree.alpha_whl.name}.metadata") == 1
    assert upstream.count(f"/files/{tree.beta2_whl.name}.metadata") == 1
    assert upstream.count(f"/files/{tree.beta1_whl.name}") == 0  # yanked, never fetched


# --------------------------------------------------------------------------- knobs


def test_tamper(tree: Tree, upstream: Upstream) -> None:
    url = upstream.files_url + tree.beta1_whl.name
    upstream.tamper(tree.beta1_whl.name)
    _, _, body = _get(url)
    assert len(body) == tree.beta1_whl.stat().st_size
    assert hashlib.sha256(body).hexdigest() != sha256_file(tree.beta1_whl)
    original = tree.beta1_whl.read_bytes()
    assert sum(a != b for a, b in zip(body, original, strict=True)) == 1
    # the page still advertises the original hash
    _, _, page = _get(upstream.simple_url + "beta/", {"Accept": PIP_ACCEPT})
    (entry,) = [f for f in json.loads(page)["files"] if f["filename"] == tree.beta1_whl.name]
    assert entry["hashes"]["sha256"] == sha256_file(tree.beta1_whl)
    upstream.reset()
    assert _get(url)[2] == original


def test_truncate(tree: Tree, upstream: Upstream) -> None:
    upstream.truncate(tree.beta2_whl.name, at_fraction=0.5)
    conn = http.client.HTTPConnection("127.0.0.1", upstream.port, timeout=5)
    conn.request("GET", "/files/" + tree.beta2_whl.name)
    resp = conn.getresponse()
    assert int(resp.headers["Content-Length"]) == tree.beta2_whl.stat().st_size
    with pytest.raises(http.client.IncompleteRead) as excinfo:
        resp.read()
    assert len(excinfo.value.partial) == tree.beta2_whl.stat().st_size // 2
    conn.close()
    with pytest.raises(http.client.IncompleteRead):
        _get(upstream.files_url + tree.beta2_whl.name)


def test_down_modes(upstream: Upstream) -> None:
    upstream.down = True
    assert _get(upstream.simple_url + "beta/")[0] == 503
    upstream.down_mode = "reset"
    with pytest.raises((urllib.error.URLError, http.client.HTTPException, ConnectionError)):
        _get(upstream.simple_url + "beta/")
    upstream.down_mode = "hang"
    with pytest.raises((urllib.error.URLError, TimeoutError, socket.timeout)):
        _get(upstream.simple_url + "beta/", timeout=0.3)
    with pytest.raises(ValueError, match="down_mode"):
        upstream.down_mode = "bogus"  # type: ignore[assignment]
    upstream.down = False
    assert _get(upstream.simple_url + "beta/")[0] == 200
    assert upstream.count("/simple/beta/") == 4


def test_slow_and_single_flight_visibility(tree: Tree, upstream: Upstream) -> None:
    name = tree.alpha_whl.name
    upstream.slow(name, 0.3, chunk_size=256, chunk_delay_s=0.01)
    results: list[bytes] = []

    def fetch() -> None:
        results.append(_get(upstream.files_url + name)[2])

    start = time.monotonic()
    threads = [threading.Thread(target=fetch) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    assert 0.3 <= elapsed < 3
    assert results == [tree.alpha_whl.read_bytes()] * 3  # concurrent, all served in parallel
    assert upstream.count(f"/files/{name}") == 3
    upstream.reset()
    start = time.monotonic()
    _get(upstream.files_url + name)
    assert time.monotonic() - start < 0.3


def test_fail_and_json_disabled(upstream: Upstream) -> None:
    upstream.fail("/simple/beta/", 500, times=1)
    assert _get(upstream.simple_url + "beta/")[0] == 500
    assert _get(upstream.simple_url + "beta/")[0] == 200
    upstream.json_enabled = False
    _, headers, _ = _get(upstream.simple_url + "beta/", {"Accept": PIP_ACCEPT})
    assert headers["Content-Type"] == "application/vnd.pypi.simple.v1+html"
    upstream.reset()
    _, headers, _ = _get(upstream.simple_url + "beta/", {"Accept": PIP_ACCEPT})
    assert headers["Content-Type"] == JSON_TYPE


def test_add_files_publishes_new_version(tree: Tree, tmp_path: Path) -> None:
    root = tmp_path / "root"
    write_simple_tree(root, [tree.beta1_whl], with_metadata={tree.beta1_whl.name})
    with Upstream(root) as up:
        doc = json.loads(_get(up.simple_url + "beta/", {"Accept": PIP_ACCEPT})[2])
        assert doc["versions"] == ["1.0"]
        beta3 = build_wheel(tmp_path, "beta", "3.0")
        up.add_files([beta3], yanked={tree.beta1_whl.name: ""})
        doc = json.loads(_get(up.simple_url + "beta/", {"Accept": PIP_ACCEPT})[2])
        assert doc["versions"] == ["1.0", "3.0"]
        files = {f["filename"]: f for f in doc["files"]}
        assert files[tree.beta1_whl.name]["yanked"] is True
        assert isinstance(files[tree.beta1_whl.name]["core-metadata"], dict)  # kept
        assert files[beta3.name]["core-metadata"] is False
        gamma = build_wheel(tmp_path, "gamma", "0.1")
        up.add_files([gamma])
        assert _get(up.simple_url + "gamma/")[0] == 200
        assert b'data-yanked=""' in _get(up.simple_url + "beta/")[2]
    # closed: the port no longer answers
    with pytest.raises(urllib.error.URLError):
        _get(up.simple_url, timeout=1)


def test_uv_installs_from_upstream_index(tree: Tree, upstream: Upstream, tmp_path: Path) -> None:
    uv = Path(sys.executable).parent / "uv"
    assert uv.exists(), "uv is a dev dependency: run `make venv`"
    env = _pip_env()
    env.update(UV_NO_CONFIG="1", UV_CACHE_DIR=str(tmp_path / "uv-cache"), UV_OFFLINE="0")
    env.pop("UV_INDEX_URL", None)
    env.pop("UV_DEFAULT_INDEX", None)
    # fmt: off
    cmd = [
        str(uv), "pip", "install", "--python", sys.executable, "--index-url",
        upstream.simple_url, "--target", str(tmp_path / "t"), "alpha-pkg",
    ]
    # fmt: on
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "t" / "beta" / "__init__.py").read_text() == '__version__ = "2.0"\n'
    assert upstream.count(f"/files/{tree.alpha_whl.name}.metadata") == 1
