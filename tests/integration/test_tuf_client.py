"""``stockade client download`` (issue 9): pinned requirements fetched from a signed index, each
page and file verified by python-tuf's client from a root handed over out of band, then
installed by pip with no index at all.

test_tuf.py checks the metadata itself with ngclient (tampered blobs, an expired or replayed
timestamp, key rotation); these tests go through the command a CI job runs, against a real
server: what it writes to DIR, what it refuses and how it says so.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.builders import build_sdist, build_wheel, sha256_file
from tests.conftest import STOCKADE, Server, client_env, make_server


def _upload(srv: Server, index: str, dist: Path) -> None:
    with srv.http(srv.admin_token) as c:
        r = c.post(
            f"/pypi/{index}/",
            data={":action": "file_upload"},
            files={"content": (dist.name, dist.read_bytes())},
        )
        assert r.status_code == 200, r.text + srv.log()[-5000:]


def _blob(srv: Server, sha: str) -> Path:
    return srv.home / "files" / "sha256" / sha[:2] / sha[2:4] / sha


def _tamper(path: Path, old: bytes | None = None, new: bytes | None = None) -> bytes:
    """Change a stored blob behind the server's back; returns the original bytes."""
    original = path.read_bytes()
    path.chmod(0o644)
    if old is not None and new is not None:
        assert old in original
        path.write_bytes(original.replace(old, new))
    else:
        path.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    return original


class Client:
    """``stockade client download`` as a CI job runs it: no STOCKADE_HOME, isolated pip."""

    def __init__(self, srv: Server, index: str, token: str, root: Path, work: Path) -> None:
        self.srv, self.index, self.token, self.root, self.work = srv, index, token, root, work
        self.meta = work / "tuf-cache"
        self.env = client_env(XDG_CACHE_HOME=str(work / "xdg"), HOME=str(work))

    def download(
        self, reqs: Path, dest: Path, *extra: str, meta: Path | None = None, **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        args = [
            STOCKADE,
            "client",
            "download",
            "-r",
            str(reqs),
            "-d",
            str(dest),
            "--index",
            f"{self.srv.url}/pypi/{self.index}/simple/",
            "--root",
            str(kw.get("root", self.root)),
            "--token",
            self.token,
            "--metadata-dir",
            str(meta or self.meta),
            *extra,
        ]
        return subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=120)

    def ok(self, reqs: Path, dest: Path, **kw: Any) -> dict[str, Any]:
        res = self.download(reqs, dest, "--json", **kw)
        assert res.returncode == 0, res.stdout + res.stderr + self.srv.log()[-4000:]
        got: dict[str, Any] = orjson.loads(res.stdout)
        return got

    def refused(self, reqs: Path, dest: Path, **kw: Any) -> str:
        before = sorted(p.name for p in dest.iterdir()) if dest.exists() else []
        res = self.download(reqs, dest, **kw)
        assert res.returncode != 0, res.stdout + res.stderr
        after = sorted(p.name for p in dest.iterdir()) if dest.exists() else []
        assert after == before, f"{dest} changed: {before} → {after}"  # nor a temp dir left
        return res.stderr


def _reqs(path: Path, *lines: str) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def _pip_install(find_links: Path, reqs: Path, target: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--isolated",
            "--no-index",
            "--find-links",
            str(find_links),
            "--target",
            str(target),
            "-r",
            str(reqs),
        ],
        env=client_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def _timestamps(srv: Server) -> list[tuple[int, bytes]]:
    """The stored timestamp versions (SQLite), newest first."""
    with sqlite3.connect(srv.db_url.removeprefix("sqlite:///")) as db:
        rows = db.execute(
            "SELECT version, data FROM tuf_metadata WHERE role = 'timestamp' ORDER BY version DESC"
        ).fetchall()
    return [(int(v), bytes(d)) for v, d in rows]


def _sql(srv: Server, statement: str, *params: Any) -> None:
    with sqlite3.connect(srv.db_url.removeprefix("sqlite:///")) as db:
        db.execute(statement, params)


def _wait_signed(client: Client, reqs: Path, tmp: Path, timeout: float = 20.0) -> dict[str, Any]:
    """Download into a scratch dir until the latest upload is signed."""
    deadline = time.monotonic() + timeout
    while True:
        res = client.download(reqs, tmp / "scratch", "--json", meta=tmp / "scratch-meta")
        if res.returncode == 0:
            got: dict[str, Any] = orjson.loads(res.stdout)
            return got
        if time.monotonic() > deadline:
            raise AssertionError(res.stderr + client.srv.log()[-4000:])
        time.sleep(0.3)


def test_download_verified_then_pip_installs_offline_tampering_and_rollback_refused(
    sqlite_server: Server, tmp_path: Path
) -> None:
    srv = sqlite_server
    srv.cli("index", "create", "p", "--private")
    dist = tmp_path / "dist"
    dist.mkdir()
    wheel = build_wheel(dist, "thing", "1.0", requires_dist=["helper==2.0"])
    sdist = build_sdist(dist, "thing", "1.0")
    helper = build_wheel(dist, "helper", "2.0")
    only_sdist = build_sdist(dist, "Src.Only", "3.0")
    for d in (wheel, sdist, helper, only_sdist):
        _upload(srv, "p", d)
    root = tmp_path / "root.json"
    srv.cli("tuf", "init", "p", "--bins", "16", "--root-out", str(root))
    client = Client(srv, "p", srv.token("p"), root, tmp_path)

    # Pinned, with a --hash for one: the wheel is preferred, the sdist taken when alone.
    reqs = _reqs(
        tmp_path / "requirements.txt",
        "# resolved with uv pip compile",
        f"thing==1.0 \\\n    --hash=sha256:{sha256_file(wheel)} \\\n"
        f"    --hash=sha256:{sha256_file(sdist)}",
        "helper==2.0",
        "src-only==3.0",
    )
    dest = tmp_path / "wheelhouse"
    got = client.ok(reqs, dest)
    files = {f["filename"]: f for f in got["files"]}
    assert sorted(files) == sorted([wheel.name, helper.name, only_sdist.name])
    for built in (wheel, helper, only_sdist):
        f = files[built.name]
        assert f["sha256"] == sha256_file(built) and f["length"] == built.stat().st_size
        assert (dest / built.name).read_bytes() == built.read_bytes()
        assert f["cached"] is False and f["path"] == str(dest / built.name)
    assert files[wheel.name]["target"] == f"files/thing/{wheel.name}"
    assert files[wheel.name]["page_target"] == "simple/thing/index.json"
    assert files[only_sdist.name]["target"] == f"files/src-only/{only_sdist.name}"
    assert sorted(p.name for p in dest.iterdir()) == sorted(files)  # no temp dir, no pages

    # pip installs them with no index at all (its config isolated: nothing else reachable).
    install = _reqs(tmp_path / "install.txt", "thing==1.0", "helper==2.0")
    res = _pip_install(dest, install, tmp_path / "site")
    assert res.returncode == 0, res.stdout + res.stderr
    assert (tmp_path / "site" / "thing" / "__init__.py").exists()
    assert (tmp_path / "site" / "helper" / "__init__.py").exists()

    # Again: files already in DIR that match the signed metadata are not downloaded again.
    again = client.ok(reqs, dest)
    assert all(f["cached"] for f in again["files"])
    # The human form: a table, and how to install.
    res = client.download(reqs, dest)
    assert res.returncode == 0 and "pip install --no-index --find-links" in res.stdout

    # Unpinned requirements are refused, naming them and what to do.
    err = client.refused(_reqs(tmp_path / "loose.txt", "thing>=1.0", "helper==2.0"), dest)
    assert "thing>=1.0" in err and "pin" in err and "uv pip compile" in err
    # A --hash that the signed file does not match: refused, nothing written.
    bad_hash = _reqs(tmp_path / "badhash.txt", f"helper==2.0 --hash=sha256:{'ab' * 32}")
    err = client.refused(bad_hash, tmp_path / "bad-hash")
    assert "helper==2.0" in err and "--hash" in err
    # Not on the index: named.
    err = client.refused(_reqs(tmp_path / "absent.txt", "nothere==1.0"), tmp_path / "absent")
    assert "simple/nothere/index.json" in err
    # No root, or someone else's root: no trust on first use.
    err = client.refused(reqs, tmp_path / "noroot", root=tmp_path / "missing.json")
    assert "trusted root" in err and "stockade tuf root" in err

    # A stored file tampered with behind the server's back: refused, named, nothing written
    # (not even the other, intact files of the same run).
    fresh = tmp_path / "fresh"
    original = _tamper(_blob(srv, sha256_file(helper)))
    err = client.refused(reqs, fresh)
    assert f"files/helper/{helper.name}" in err and "length or sha256" in err
    assert "nothing was written" in err
    assert not fresh.exists() or not any(fresh.iterdir())
    _blob(srv, sha256_file(helper)).write_bytes(original)
    # A file in DIR that differs from the signed one is replaced by the verified one.
    (dest / helper.name).write_bytes(b"not the wheel")
    got = client.ok(reqs, dest)
    assert (dest / helper.name).read_bytes() == helper.read_bytes()

    # The stored simple page tampered with (a new version slipped in): refused.
    page_sha = {f["project"]: f["page_sha256"] for f in got["files"]}["thing"]
    original = _tamper(_blob(srv, page_sha), b"thing-1.0", b"thing-6.6")
    err = client.refused(reqs, fresh)
    assert "the page simple/thing/index.json" in err and "length or sha256" in err
    _blob(srv, page_sha).write_bytes(original)

    # Stored metadata tampered with (the newest timestamp's version bumped without the key).
    (ts_version, ts_data), *_ = _timestamps(srv)
    forged = ts_data.replace(
        f'"version":{ts_version}'.encode(), f'"version":{ts_version + 100}'.encode()
    )
    assert forged != ts_data
    _sql(srv, "UPDATE tuf_metadata SET data = ? WHERE role = 'timestamp' AND version = ?",
         forged, ts_version)  # fmt: skip
    err = client.refused(reqs, fresh, meta=tmp_path / "forged-meta")
    assert "timestamp" in err and "signature" in err
    _sql(srv, "UPDATE tuf_metadata SET data = ? WHERE role = 'timestamp' AND version = ?",
         ts_data, ts_version)  # fmt: skip

    # Rollback: the client saw a newer timestamp; the server goes back to an old one (the newer
    # versions removed from storage, the old one still unexpired). A client that remembers
    # refuses it.
    _upload(srv, "p", build_wheel(dist, "helper", "2.1"))
    _wait_signed(client, _reqs(tmp_path / "h21.txt", "helper==2.1"), tmp_path)
    client.ok(reqs, dest)  # the client's cache now trusts the newest timestamp
    newest = _timestamps(srv)[0][0]
    assert newest > ts_version
    _sql(srv, "DELETE FROM tuf_metadata WHERE role = 'timestamp' AND version > ?", ts_version)
    err = client.refused(reqs, fresh)
    assert "rollback" in err and "timestamp" in err


@pytest.fixture
def frozen_server(tmp_path: Path) -> Iterator[Server]:
    """Timestamps live 6 s and nothing re-signs them by itself (no refresh loop)."""
    home = tmp_path / "home"
    srv = make_server(
        home, f"sqlite:///{home / 'stockade.db'}", tuf_timestamp_expiry=6, tuf_refresh_interval=0
    )
    try:
        yield srv
    finally:
        srv.stop()


def test_expired_timestamp_refused_until_resigned(frozen_server: Server, tmp_path: Path) -> None:
    """A freeze attack (or a server that stopped re-signing) serves a timestamp past its expiry:
    the client refuses it, names it, and writes nothing; re-signed, the same run works."""
    srv = frozen_server
    srv.cli("index", "create", "p", "--private")
    wheel = build_wheel(tmp_path, "thing", "1.0")
    _upload(srv, "p", wheel)
    root = tmp_path / "root.json"
    srv.cli("tuf", "init", "p", "--bins", "4", "--root-out", str(root))
    client = Client(srv, "p", srv.token("p"), root, tmp_path)
    reqs = _reqs(tmp_path / "requirements.txt", "thing==1.0")
    time.sleep(7)
    dest = tmp_path / "wheelhouse"
    err = client.refused(reqs, dest)
    assert "timestamp" in err and "expired" in err and "freeze" in err
    assert not dest.exists() or not any(dest.iterdir())
    srv.cli("tuf", "refresh")  # what the server's refresh loop does
    got = client.ok(reqs, dest)
    assert [f["filename"] for f in got["files"]] == [wheel.name]
