"""Real conda packages for tests (made with conda-package-handling's ``create``), hostile ones,
and a local upstream channel served on 127.0.0.1.

    pkg = build_conda(tmp, "lib", "1.0", fmt=".tar.bz2")
    app = build_conda(tmp, "app", "2.0", subdir="linux-64", depends=["lib >=1.0"])
    with CondaUpstream(write_channel(tmp / "channel", [pkg, app])) as up:
        up.url                     # http://127.0.0.1:PORT/  (the channel URL)
        up.tamper("app-2.0-0.conda"); up.down = True; up.count("/linux-64/app")
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import io
import json
import shutil
import tarfile
import tempfile
import threading
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from conda_package_handling import api as cph

TIMESTAMP = 1704164645000


def index_json(
    name: str,
    version: str,
    build: str = "0",
    *,
    subdir: str = "noarch",
    depends: Sequence[str] = (),
    **extra: Any,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": name,
        "version": version,
        "build": build,
        "build_number": 0,
        "depends": list(depends),
        "license": "MIT",
        "subdir": subdir,
        "timestamp": TIMESTAMP,
    }
    if subdir == "noarch":
        data["noarch"] = "generic"
    else:
        data["arch"] = "x86_64"
        data["platform"] = "linux"
    data.update(extra)
    return data


def _write_prefix(prefix: Path, index: Mapping[str, Any], files: Mapping[str, bytes]) -> list[str]:
    paths = []
    for rel, data in files.items():
        target = prefix / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        paths.append(
            {
                "_path": rel,
                "path_type": "hardlink",
                "sha256": hashlib.sha256(data).hexdigest(),
                "size_in_bytes": len(data),
            }
        )
    info = prefix / "info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "index.json").write_text(json.dumps(index, indent=2))
    (info / "files").write_text("".join(f"{p}\n" for p in files))
    (info / "paths.json").write_text(json.dumps({"paths": paths, "paths_version": 1}))
    return [*files, "info/index.json", "info/files", "info/paths.json"]


def build_conda(
    out_dir: Path,
    name: str,
    version: str,
    build: str = "0",
    *,
    subdir: str = "noarch",
    depends: Sequence[str] = (),
    fmt: str = ".conda",
    files: Mapping[str, bytes] | None = None,
    index: Mapping[str, Any] | None = None,
    filename: str | None = None,
) -> Path:
    """A real package made by ``cph create``; ``index`` replaces info/index.json (to lie)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = (
        dict(index)
        if index is not None
        else index_json(name, version, build, subdir=subdir, depends=depends)
    )
    content = (
        dict(files)
        if files is not None
        else {f"share/{name}/{name}.txt": f"{name} {version}\n".encode()}
    )
    out_name = filename or f"{name}-{version}-{build}{fmt}"
    with tempfile.TemporaryDirectory() as tmp:
        prefix = Path(tmp)
        listed = _write_prefix(prefix, meta, content)
        cph.create(str(prefix), listed, out_name, out_folder=str(out_dir))
    return out_dir / out_name


def corrupt_conda_pkg_stream(pkg: Path, out_dir: Path) -> Path:
    """Same name; the zstd stream of the pkg component has garbage in its middle."""
    out = out_dir / pkg.name
    out_dir.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(pkg) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename.startswith("pkg-"):
                mid = len(data) // 2
                data = data[:mid] + b"\xff" * 16 + data[mid + 16 :]
            zout.writestr(item, data)
    return out


def corrupt_bytes(pkg: Path, out_dir: Path) -> Path:
    """Same name; 32 bytes in the middle of the file flipped."""
    out_dir.mkdir(parents=True, exist_ok=True)
    data = bytearray(pkg.read_bytes())
    mid = len(data) // 2
    for i in range(mid, min(mid + 32, len(data))):
        data[i] ^= 0xFF
    out = out_dir / pkg.name
    out.write_bytes(bytes(data))
    return out


def hostile_tar_bz2(
    out_dir: Path,
    filename: str,
    index: Mapping[str, Any],
    members: Iterable[tuple[str, bytes]] = (),
    *,
    symlinks: Iterable[tuple[str, str]] = (),
    sparse_zeros: int = 0,
) -> Path:
    """A .tar.bz2 written member by member (traversal names, links out, a bomb member)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / filename
    with tarfile.open(out, "w:bz2") as tar:

        def add(name: str, data: bytes) -> None:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tar.addfile(ti, io.BytesIO(data))

        add("info/index.json", json.dumps(dict(index)).encode())
        for name, data in members:
            add(name, data)
        for name, target in symlinks:
            ti = tarfile.TarInfo(name)
            ti.type = tarfile.SYMTYPE
            ti.linkname = target
            tar.addfile(ti)
        if sparse_zeros:
            ti = tarfile.TarInfo("share/zeros.bin")
            ti.size = sparse_zeros
            tar.addfile(ti, _Zeros(sparse_zeros))
    return out


class _Zeros(io.RawIOBase):
    def __init__(self, n: int) -> None:
        self.left = n

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = min(len(b), self.left)
        b[:n] = b"\0" * n
        self.left -= n
        return n


def package_record(pkg: Path) -> tuple[str, dict[str, Any]]:
    """(subdir, repodata record) of a package built here: its index.json plus digests."""
    data = pkg.read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        cph.extract(str(pkg), dest_dir=tmp, components="info")
        index = json.loads((Path(tmp) / "info" / "index.json").read_text())
    rec = dict(index)
    rec.update(
        sha256=hashlib.sha256(data).hexdigest(),
        md5=hashlib.md5(data).hexdigest(),
        size=len(data),
    )
    return index["subdir"], rec


def write_channel(
    root: Path, packages: Sequence[Path], subdirs: Sequence[str] = ("noarch", "linux-64")
) -> Path:
    """``root/<subdir>/<file>`` and a repodata.json per subdir (written by the test)."""
    repodata = {
        s: {"info": {"subdir": s}, "packages": {}, "packages.conda": {}, "repodata_version": 1}
        for s in subdirs
    }
    for pkg in packages:
        subdir, rec = package_record(pkg)
        (root / subdir).mkdir(parents=True, exist_ok=True)
        shutil.copy(pkg, root / subdir / pkg.name)
        key = "packages.conda" if pkg.name.endswith(".conda") else "packages"
        repodata.setdefault(
            subdir, {"info": {"subdir": subdir}, "packages": {}, "packages.conda": {}}
        )[key][pkg.name] = rec
    for subdir, data in repodata.items():
        (root / subdir).mkdir(parents=True, exist_ok=True)
        (root / subdir / "repodata.json").write_text(json.dumps(data, indent=1))
    (root / "channeldata.json").write_text(
        json.dumps({"channeldata_version": 1, "packages": {}, "subdirs": list(repodata)})
    )
    return root


# -- a local upstream channel ------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    def _send(self, status: int, body: bytes = b"", headers: Mapping[str, str] = {}) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _serve(self, *, head: bool) -> None:
        up = self.server.upstream
        path = unquote(urlsplit(self.path).path)
        with up.lock:
            up.requests.append((self.command, path, dict(self.headers.items())))
            down, tampered = up.down, set(up.tampered)
        if down:
            self._send(503, b"down\n")
            return
        target = (up.root / path.lstrip("/")).resolve()
        if not target.is_file() or up.root.resolve() not in target.parents:
            self._send(404, b"not found\n")
            return
        body = target.read_bytes()
        if target.name in tampered:
            mid = len(body) // 2
            body = body[:mid] + bytes([body[mid] ^ 0xFF]) + body[mid + 1 :]
        etag = f'"{hashlib.sha256(body).hexdigest()[:20]}"'
        mtime = target.stat().st_mtime
        headers = {
            "ETag": etag,
            "Last-Modified": email.utils.formatdate(mtime, usegmt=True),
            "Content-Type": "application/octet-stream",
        }
        if self.headers.get("If-None-Match") == etag:
            self._send(304, b"", headers)
            return
        self._send(200, body, headers)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, upstream: CondaUpstream) -> None:
        self.upstream = upstream
        super().__init__(("127.0.0.1", 0), _Handler)


class CondaUpstream:
    """A static conda channel on 127.0.0.1 with ETags, a request log and failure knobs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.down = False
        self.tampered: set[str] = set()
        self._server = _Server(self)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/"

    def tamper(self, filename: str) -> None:
        with self.lock:
            self.tampered.add(filename)

    def count(self, fragment: str) -> int:
        with self.lock:
            return sum(1 for _, p, _ in self.requests if fragment in p)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        with contextlib.suppress(RuntimeError):
            self._thread.join(5)

    def __enter__(self) -> CondaUpstream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
