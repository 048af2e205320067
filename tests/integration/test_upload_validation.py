"""Bad uploads: each one gets a clear 4xx that explains the problem, and nothing is stored.

"Nothing stored" is checked four ways: the project page still 404s, ``stockade package list``
is unchanged, no blob appeared under ``files/sha256`` and no temporary file is left under
``files/tmp``. A few representative cases run on both databases (``server``); the long tail runs
on SQLite only, on one server, to keep the run short (each ``stockade`` CLI call costs seconds).
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import json
import re
import socket
import subprocess
import tarfile
import time
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from stockade.core.archives import ArchiveLimits
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
    wheel_metadata,
)
from tests.conftest import VENV_BIN, Server, client_env

WHEEL = "alpha-1.0-py3-none-any.whl"
SDIST = "alpha-1.0.tar.gz"
LIMITS = ArchiveLimits()  # the server's defaults
BOMB = 20 * 1024**2  # zeros deflate ~1030:1, so a small bomb is enough for the ratio limit


# -- helpers -----------------------------------------------------------------------------------


def form_for(filename: str, data: bytes, **overrides: str) -> dict[str, str]:
    """The legacy-API fields twine sends (project alpha 1.0 unless overridden)."""
    fields = {
        ":action": "file_upload",
        "protocol_version": "1",
        "name": "alpha",
        "version": "1.0",
        "filetype": "sdist" if filename.endswith(".tar.gz") else "bdist_wheel",
        "pyversion": "source" if filename.endswith(".tar.gz") else "py3",
        "metadata_version": "2.1",
        "sha256_digest": hashlib.sha256(data).hexdigest(),
        "md5_digest": hashlib.md5(data).hexdigest(),
    }
    fields.update(overrides)
    return fields


def post(
    client: httpx.Client, index: str, filename: str, data: bytes, **overrides: str
) -> httpx.Response:
    return client.post(
        f"/pypi/{index}/",
        data=form_for(filename, data, **overrides),
        files={"content": (filename, data, "application/octet-stream")},
    )


def admin_client(server: Server) -> httpx.Client:
    return httpx.Client(
        base_url=server.url,
        headers={"Authorization": f"Bearer {server.admin_token}"},
        timeout=60,
    )


def create_index(client: httpx.Client, name: str, kind: str, **extra: Any) -> None:
    r = client.post("/api/v1/indexes", json={"name": name, "kind": kind, **extra})
    assert r.status_code == 201, r.text


def blobs(server: Server) -> set[str]:
    root = server.home / "files" / "sha256"
    return {p.name for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def leftovers(server: Server) -> list[str]:
    tmp = server.home / "files" / "tmp"
    return sorted(p.name for p in tmp.iterdir()) if tmp.exists() else []


def package_list(server: Server, index: str = "priv") -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = json.loads(server.cli("package", "list", index, "--json").stdout)
    return out


def wait_for_no_leftovers(server: Server, timeout: float = 3.0) -> list[str]:
    """Temp files of an upload the server is still unwinding get a moment to disappear."""
    deadline = time.monotonic() + timeout
    while (left := leftovers(server)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


# -- the cases ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[Path], tuple[str, bytes]]  # -> (upload filename, bytes)
    status: int
    words: tuple[str, ...]
    form: dict[str, str] = field(default_factory=dict)
    projects: tuple[str, ...] = ("alpha",)  # project pages that must still 404


def _file(builder: Callable[..., Path], *args: Any, **kwargs: Any) -> Callable[[Path], Any]:
    def build(d: Path) -> tuple[str, bytes]:
        path = builder(d, *args, **kwargs)
        return path.name, path.read_bytes()

    return build


def _truncated_wheel(d: Path) -> tuple[str, bytes]:
    data = build_wheel(d, "alpha", "1.0").read_bytes()
    return WHEEL, data[: len(data) // 2]


def _renamed(filename: str) -> Callable[[Path], tuple[str, bytes]]:
    def build(d: Path) -> tuple[str, bytes]:
        return filename, build_wheel(d, "alpha", "1.0").read_bytes()

    return build


def _empty(d: Path) -> tuple[str, bytes]:
    return WHEEL, b""


def _zip_bomb(member: str | None = None) -> Callable[[Path], tuple[str, bytes]]:
    def build(d: Path) -> tuple[str, bytes]:
        path = build_zip_bomb_wheel(d, "alpha", "1.0", BOMB, member=member)
        with zipfile.ZipFile(path) as zf:
            info = max(zf.infolist(), key=lambda i: i.file_size)
        ratio = info.file_size / info.compress_size
        assert ratio > LIMITS.max_ratio, f"bomb is only {ratio:.0f}:1; make it bigger"
        return path.name, path.read_bytes()

    return build


def _gzip_bomb_sdist(d: Path) -> tuple[str, bytes]:
    """A well-formed sdist whose one data member is 20 MiB of zeros (~1030:1 compressed)."""
    pkg_info = b"Metadata-Version: 2.1\nName: alpha\nVersion: 1.0\n"
    members = [("alpha-1.0/PKG-INFO", pkg_info), ("alpha-1.0/zeros.bin", bytes(BOMB))]
    buf = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tf,
    ):
        top = tarfile.TarInfo("alpha-1.0")
        top.type = tarfile.DIRTYPE
        tf.addfile(top)
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    ratio = BOMB / len(buf.getvalue())
    assert ratio > LIMITS.max_ratio, f"bomb is only {ratio:.0f}:1; make it bigger"
    return SDIST, buf.getvalue()


def _duplicate_member_wheel(d: Path) -> tuple[str, bytes]:
    """A valid wheel plus a second, different copy of its package module."""
    data = build_wheel(d, "alpha", "1.0").read_bytes()
    buf = io.BytesIO(data)
    with warnings.catch_warnings(), zipfile.ZipFile(buf, "a") as zf:
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name
        zf.writestr("alpha/__init__.py", "import os; os.system('true')\n")
    return WHEEL, buf.getvalue()


CASES = [
    Case(
        "metadata-name-mismatch",
        _file(build_wheel, "alpha", "1.0", metadata_name="beta"),
        400,
        ("'beta'", "name"),
        projects=("alpha", "beta"),
    ),
    Case(
        "metadata-version-mismatch",
        _file(build_wheel, "alpha", "1.0", metadata_version_override="2.0"),
        400,
        ("version", "2.0"),
    ),
    Case(
        "sdist-pkg-info-name-mismatch",
        _file(build_sdist, "alpha", "1.0", pkg_info_name="beta"),
        400,
        ("PKG-INFO", "'beta'"),
        projects=("alpha", "beta"),
    ),
    Case(
        "form-name-disagrees",
        _file(build_wheel, "alpha", "1.0"),
        400,
        ("form field name", "'beta'"),
        form={"name": "beta"},
        projects=("alpha", "beta"),
    ),
    Case(
        "form-version-disagrees",
        _file(build_wheel, "alpha", "1.0"),
        400,
        ("form field version", "9.9"),
        form={"version": "9.9"},
    ),
    Case("corrupt-zip", _file(build_corrupt_wheel, "alpha", "1.0"), 400, ("not a valid zip",)),
    Case(
        "zip-without-central-directory",
        _file(build_corrupt_wheel, "alpha", "1.0", mode="no-central-directory"),
        400,
        ("zip",),
    ),
    Case("truncated-wheel", _truncated_wheel, 400, ("zip", "truncated")),
    Case(
        "wheel-dotdot-member",
        _file(build_traversal_wheel, "alpha", "1.0", member="../evil.py"),
        400,
        ("'../evil.py'", "traversal"),
    ),
    Case(
        "wheel-nested-dotdot-member",
        _file(build_traversal_wheel, "alpha", "1.0", member="alpha/../../evil.py"),
        400,
        ("traversal",),
    ),
    Case(
        "wheel-absolute-member",
        _file(build_traversal_wheel, "alpha", "1.0", member="/etc/evil"),
        400,
        ("'/etc/evil'", "absolute"),
    ),
    Case(
        "wheel-symlink",
        _file(build_symlink_wheel, "alpha", "1.0"),
        400,
        ("evil_link", "symbolic link"),
    ),
    Case(
        "sdist-symlink",
        _file(build_symlink_sdist, "alpha", "1.0"),
        400,
        ("evil_link", "symbolic link"),
    ),
    Case(
        "sdist-hardlink",
        _file(build_symlink_sdist, "alpha", "1.0", link_type="hardlink"),
        400,
        ("evil_link", "hard link"),
    ),
    Case(
        "sdist-dotdot-member",
        _file(build_traversal_sdist, "alpha", "1.0", member="../x"),
        400,
        ("'../x'", "traversal"),
    ),
    Case(
        "sdist-absolute-member",
        _file(build_traversal_sdist, "alpha", "1.0", member="/tmp/x"),
        400,
        ("'/tmp/x'", "absolute"),
    ),
    Case(
        "missing-metadata",
        _file(build_wheel_without_metadata, "alpha", "1.0"),
        400,
        ("METADATA",),
    ),
    # Default limits: 1 GiB per member, 2 GiB in total and a ratio limit for members over
    # 1 MiB. Only the ratio limit can be hit by a bomb small enough to build in a test.
    Case("zip-bomb", _zip_bomb(), 413, ("zip bomb", "zeros.bin")),
    Case(
        "metadata-zip-bomb",
        _zip_bomb(member="alpha-1.0.dist-info/METADATA"),
        413,
        ("METADATA",),
    ),
    Case("sdist-gzip-bomb", _gzip_bomb_sdist, 413, ("gzip bomb", "zeros.bin")),
    Case(
        "duplicate-member",
        _duplicate_member_wheel,
        400,
        ("'alpha/__init__.py'", "more than once"),
    ),
    Case(
        "too-many-members",
        _file(build_many_members_wheel, "alpha", "1.0", LIMITS.max_members + 1),
        413,
        ("members", str(LIMITS.max_members)),
    ),
    Case("wrong-extension", _renamed("alpha-1.0.exe"), 400, ("unsupported file type", ".exe")),
    Case("path-in-filename", _renamed(f"../{WHEEL}"), 400, ("filename",)),
    Case(
        "bad-sha256-digest",
        _file(build_wheel, "alpha", "1.0"),
        400,
        ("sha256_digest", "does not match"),
        form={"sha256_digest": "0" * 64},
    ),
    Case(
        "bad-md5-digest",
        _file(build_wheel, "alpha", "1.0"),
        400,
        ("md5_digest", "does not match"),
        form={"md5_digest": "0" * 32},
    ),
    Case("empty-file", _empty, 400, ("empty",)),
    Case(
        "unsupported-action",
        _file(build_wheel, "alpha", "1.0"),
        400,
        (":action", "remove_pkg"),
        form={":action": "remove_pkg"},
    ),
]
BOTH_DATABASES = {"metadata-name-mismatch", "wheel-dotdot-member", "zip-bomb", "bad-sha256-digest"}


def run_cases(
    server: Server, client: httpx.Client, cases: list[Case], dist: Path, problems: list[str]
) -> None:
    """Upload each case to ``priv``; collect every way a case was not cleanly refused."""
    for case in cases:
        before = blobs(server)
        filename, data = case.build(dist / case.id)
        r = post(client, "priv", filename, data, **case.form)
        tag = f"[{case.id}]"
        if r.status_code != case.status:
            problems.append(f"{tag} expected {case.status}, got {r.status_code}: {r.text!r}")
        else:
            for word in case.words:
                if word.lower() not in r.text.lower():
                    problems.append(f"{tag} {r.status_code} does not mention {word!r}: {r.text!r}")
        if new := blobs(server) - before:
            problems.append(f"{tag} stored blob(s) {sorted(new)}")
        if left := wait_for_no_leftovers(server):
            problems.append(f"{tag} left temporary files {left}")
        for project in case.projects:
            page = client.get(f"/pypi/priv/simple/{project}/")
            if page.status_code != 404:
                problems.append(f"{tag} page of {project!r} answers {page.status_code}")


# -- both databases ----------------------------------------------------------------------------


def test_rejections_store_nothing_on_both_databases(server: Server, tmp_path: Path) -> None:
    client = admin_client(server)
    create_index(client, "priv", "private")
    create_index(client, "mir", "mirror", upstream="http://127.0.0.1:9/simple/")
    create_index(client, "virt", "virtual", members=["priv"])
    problems: list[str] = []

    run_cases(server, client, [c for c in CASES if c.id in BOTH_DATABASES], tmp_path, problems)

    # uploads to a mirror or a virtual index are refused with a pointer to a private index
    good = build_wheel(tmp_path / "good", "alpha", "1.0")
    for index, kind in (("mir", "mirror"), ("virt", "virtual")):
        r = post(client, index, good.name, good.read_bytes())
        if r.status_code != 400 or kind not in r.text or "private" not in r.text:
            problems.append(f"[upload to {kind}] expected a 400 naming private: {r.text!r}")
    assert not blobs(server)
    assert not wait_for_no_leftovers(server)

    # a second upload of a filename is a 409, whatever its bytes; the original stays served
    original = good.read_bytes()
    r = post(client, "priv", WHEEL, original)
    assert r.status_code == 200, r.text
    stored = blobs(server)
    assert hashlib.sha256(original).hexdigest() in stored
    rebuilt = build_wheel(tmp_path / "rebuilt", "alpha", "1.0", summary="sneaky").read_bytes()
    assert rebuilt != original
    for label, data in (("same bytes", original), ("different bytes", rebuilt)):
        r = post(client, "priv", WHEEL, data)
        if r.status_code != 409 or "already exists" not in r.text:
            problems.append(f"[duplicate, {label}] expected 409 already exists: {r.text!r}")
    assert blobs(server) == stored
    assert not wait_for_no_leftovers(server)
    # the database holds the one good upload and nothing any rejected upload brought
    listed = package_list(server)
    assert [(f["filename"], f["sha256"]) for f in listed] == [
        (WHEEL, hashlib.sha256(original).hexdigest())
    ]
    r = client.get(f"/pypi/priv/files/alpha/{WHEEL}")
    assert r.status_code == 200, r.text
    assert r.content == original

    assert not problems, f"{len(problems)} problem(s):\n" + "\n".join(problems)


async def _race(server: Server, datas: list[bytes]) -> list[httpx.Response]:
    headers = {"Authorization": f"Bearer {server.admin_token}"}
    async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=60) as client:
        return await asyncio.gather(
            *(
                client.post(
                    "/pypi/priv/",
                    data=form_for(WHEEL, data),
                    files={"content": (WHEEL, data, "application/octet-stream")},
                )
                for data in datas
            )
        )


def test_concurrent_uploads_of_one_filename_store_one_file(server: Server, tmp_path: Path) -> None:
    """Eight different builds of one filename at once: one wins, seven get a 409 and leave
    nothing behind -- no blob of theirs in storage, no temp file."""
    client = admin_client(server)
    create_index(client, "priv", "private")
    variants = [
        build_wheel(tmp_path / str(i), "alpha", "1.0", summary=f"variant {i}") for i in range(8)
    ]
    responses = asyncio.run(_race(server, [v.read_bytes() for v in variants]))

    statuses = [r.status_code for r in responses]
    assert sorted(statuses) == [200] + [409] * 7, [(r.status_code, r.text) for r in responses]
    for r in responses:
        assert r.status_code == 200 or "already exists" in r.text, r.text
    winner = variants[statuses.index(200)]
    winner_sha = hashlib.sha256(winner.read_bytes()).hexdigest()
    r = client.get(f"/pypi/priv/files/alpha/{WHEEL}")
    assert r.status_code == 200, r.text
    assert r.content == winner.read_bytes()
    assert [f["sha256"] for f in package_list(server)] == [winner_sha]
    assert not wait_for_no_leftovers(server)
    # storage holds the winner and its METADATA (served for PEP 658), nothing from the losers
    expected = {winner_sha, hashlib.sha256(wheel_metadata(winner)).hexdigest()}
    orphans = blobs(server) - expected
    assert not orphans, f"{len(orphans)} blob(s) left by uploads refused with 409"
    assert blobs(server) == expected


# -- the long tail, SQLite ---------------------------------------------------------------------


def raw_request(server: Server, head: str, body: bytes, *, half_close: bool) -> bytes:
    """Send a hand-made request; return whatever the server answers before closing."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head.encode() + body)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
                head, sep, rest = answer.partition(b"\r\n\r\n")
                if sep and not half_close:
                    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                    if length and len(rest) >= int(length.group(1)):
                        break
        except (TimeoutError, ConnectionResetError):
            pass
    return answer


def twine_upload(
    server: Server, token: str, path: Path, *options: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(VENV_BIN / "twine"),
            "upload",
            *options,
            "--non-interactive",
            "--disable-progress-bar",
            "--repository-url",
            f"{server.url}/pypi/priv/",
            "-u",
            "__token__",
            "-p",
            token,
            str(path),
        ],
        env=client_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_long_tail_of_bad_uploads_then_twine(sqlite_server: Server, tmp_path: Path) -> None:
    server = sqlite_server
    client = admin_client(server)
    create_index(client, "priv", "private")
    problems: list[str] = []

    run_cases(server, client, [c for c in CASES if c.id not in BOTH_DATABASES], tmp_path, problems)

    # a body that is not a multipart form at all
    r = client.post("/pypi/priv/", content=b"name=alpha", headers={"Content-Type": "text/plain"})
    if r.status_code != 400 or "content" not in r.text:
        problems.append(f"[not multipart] expected 400 about the content part: {r.text!r}")

    # a declared Content-Length beyond max_upload_size is refused before the body is read
    good = build_wheel(tmp_path / "good", "alpha", "1.0").read_bytes()
    request = httpx.Request(
        "POST",
        f"{server.url}/pypi/priv/",
        data=form_for(WHEEL, good),
        files={"content": (WHEEL, good, "application/octet-stream")},
    )
    body = request.read()
    ctype = request.headers["content-type"]
    auth = f"Authorization: Bearer {server.admin_token}\r\n"

    def head(length: int) -> str:
        return (
            f"POST /pypi/priv/ HTTP/1.1\r\nHost: stockade\r\n{auth}"
            f"Content-Type: {ctype}\r\nContent-Length: {length}\r\n\r\n"
        )

    started = time.monotonic()
    answer = raw_request(server, head(10_000_000_000_000), body[:1000], half_close=False)
    elapsed = time.monotonic() - started
    if not answer.startswith(b"HTTP/1.1 413") or b"max_upload_size" not in answer:
        problems.append(f"[huge Content-Length] expected 413 about max_upload_size: {answer!r}")
    if elapsed > 5:
        problems.append(f"[huge Content-Length] the 413 took {elapsed:.1f}s")

    # bodies cut short: the client announces more than it sends, then closes its side
    for label, sent in (("half the body", body[: len(body) // 2]), ("the whole form", body)):
        answer = raw_request(server, head(len(body) + 100), sent, half_close=True)
        if answer and not answer.startswith(b"HTTP/1.1 4"):
            problems.append(f"[truncated body: {label}] answered {answer[:200]!r}")
    # a complete HTTP request whose multipart form is cut before the file part ends
    cut = body[: len(body) - 200]
    answer = raw_request(server, head(len(cut)), cut, half_close=False)
    if not answer.startswith(b"HTTP/1.1 400"):
        problems.append(f"[multipart cut inside the file] expected 400: {answer[:300]!r}")

    assert client.get("/health").status_code == 200, "server unhealthy after truncated bodies"
    assert not blobs(server), sorted(blobs(server))
    assert not wait_for_no_leftovers(server)
    assert client.get("/pypi/priv/simple/alpha/").status_code == 404

    # twine: a good wheel goes in; the same file again is a 409
    r = client.post("/api/v1/tokens", json={"index": "priv", "scope": "write"})
    assert r.status_code == 201, r.text
    token = r.json()["token"]
    wheel = build_wheel(tmp_path / "twine", "alpha", "1.0")
    data = wheel.read_bytes()
    first = twine_upload(server, token, wheel)
    assert first.returncode == 0, first.stdout + first.stderr
    r = client.get(f"/pypi/priv/files/alpha/{WHEEL}")
    assert r.status_code == 200, r.text
    assert r.content == data
    stored = blobs(server)
    # twine shows the status line (an ASGI server cannot set a reason phrase), and the body
    # with the server's explanation under --verbose
    again = twine_upload(server, token, wheel, "--verbose")
    output = again.stdout + again.stderr
    assert again.returncode != 0, output
    assert "409 Conflict" in output, output
    assert "already exists" in output, output
    assert blobs(server) == stored
    assert client.get(f"/pypi/priv/files/alpha/{WHEEL}").content == data

    # the database holds twine's upload and nothing any rejected upload brought
    listed = package_list(server)
    assert [(f["filename"], f["sha256"]) for f in listed] == [
        (WHEEL, hashlib.sha256(data).hexdigest())
    ]
    assert not problems, f"{len(problems)} problem(s):\n" + "\n".join(problems)
