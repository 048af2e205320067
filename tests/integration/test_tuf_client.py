"""``stockade client download`` (issue 9): pinned requirements fetched from a signed index, each
page and file verified by python-tuf's client from a root handed over out of band, then
installed by pip with no index at all.

test_tuf.py checks the metadata itself with ngclient (tampered blobs, an expired or replayed
timestamp, key rotation); these tests go through the command a CI job runs, against a real
server: what it writes to DIR, what it refuses and how it says so.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import create_engine, text

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


def _query(srv: Server, statement: str, *params: Any) -> list[Any]:
    """Run SQL on the server's database (SQLite or PostgreSQL) behind its back; ``?``
    placeholders, in order."""
    named = {f"p{i}": v for i, v in enumerate(params)}
    parts = statement.split("?")
    sql = "".join(part + (f":p{i}" if i < len(params) else "") for i, part in enumerate(parts))
    engine = create_engine(srv.db_url)
    try:
        with engine.begin() as conn:
            result = conn.execute(text(sql), named)
            return list(result) if result.returns_rows else []
    finally:
        engine.dispose()


def _timestamps(srv: Server) -> list[tuple[int, bytes]]:
    """The stored timestamp versions, newest first."""
    rows = _query(
        srv, "SELECT version, data FROM tuf_metadata WHERE role = 'timestamp' ORDER BY version DESC"
    )
    return [(int(v), bytes(d)) for v, d in rows]


def _sql(srv: Server, statement: str, *params: Any) -> None:
    _query(srv, statement, *params)


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
    server: Server, tmp_path: Path
) -> None:
    srv = server
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
def frozen_server(tmp_path: Path, db_url: str) -> Iterator[Server]:
    """Timestamps live 6 s and nothing re-signs them by itself (no refresh loop)."""
    home = tmp_path / "home"
    srv = make_server(home, db_url, tuf_timestamp_expiry=6, tuf_refresh_interval=0)
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


def test_root_threshold_two_key_rotations_and_root_chain(server: Server, tmp_path: Path) -> None:
    """Three root keys, two of which sign each root. Rotating the online and targets keys, and
    then every root key with one of them lost, keeps the client working: it follows root
    v1 → vN, each new root carrying a threshold of the old keys' signatures and of the new."""
    srv = server
    srv.cli("index", "create", "p", "--private")
    wheel = build_wheel(tmp_path, "thing", "1.0")
    _upload(srv, "p", wheel)
    root = tmp_path / "root.json"
    bad = srv.cli("tuf", "init", "p", "--root-keys", "2", "--root-threshold", "3", check=False)
    assert bad.returncode != 0 and "threshold" in bad.stderr
    srv.cli(
        "tuf", "init", "p", "--bins", "4", "--root-keys", "3", "--root-threshold", "2",
        "--root-out", str(root),
    )  # fmt: skip
    keydir = srv.home / "keys" / "tuf"
    files = [keydir / n for n in ("root-ed25519.pem", "root-2-ed25519.pem", "root-3-ed25519.pem")]
    assert all(oct(f.stat().st_mode)[-3:] == "600" for f in files)
    v1 = orjson.loads(root.read_bytes())
    assert v1["signed"]["roles"]["root"]["threshold"] == 2
    assert len(v1["signed"]["roles"]["root"]["keyids"]) == 3 and len(v1["signatures"]) == 3
    status = orjson.loads(srv.cli("tuf", "status", "p", "--json").stdout)
    assert status["keys"]["root"]["threshold"] == 2
    assert [k["key_file"] for k in status["keys"]["root"]["keys"]] == [str(f) for f in files]

    client = Client(srv, "p", srv.token("p"), root, tmp_path)
    reqs = _reqs(tmp_path / "requirements.txt", "thing==1.0")
    n = 0

    def fetch(meta: Path | None = None) -> None:
        nonlocal n
        n += 1
        got = client.ok(reqs, tmp_path / f"dl{n}", meta=meta)
        assert got["files"][0]["sha256"] == sha256_file(wheel) and not got["files"][0]["cached"]

    fetch()
    # Online and targets keys rotated: new roots signed by 2 of the 3 root keys.
    for role in ("timestamp", "snapshot", "targets", "bins"):
        srv.cli("tuf", "rotate", role)
        fetch()
    # Two root keys offline: a new root cannot be signed, and the command says why.
    away = tmp_path / "offline"
    away.mkdir()
    for f in files[1:]:
        f.rename(away / f.name)
    res = srv.cli("tuf", "rotate", "root", check=False)
    assert res.returncode != 0 and "2 of the 3 root keys" in res.stderr and "1 found" in res.stderr
    # One back (the other lost for good): 2 of 3 are enough to rotate every root key.
    (away / files[2].name).rename(files[2])
    out = orjson.loads(srv.cli("tuf", "rotate", "root", "--json").stdout)
    assert len(out["old_keyids"]) == 3 and len(out["new_keyids"]) == 3
    assert not set(out["old_keyids"]) & set(out["new_keyids"])
    assert sorted(Path(p).name.split(".")[0] for p in out["retired_keys"]) == [
        "root-3-ed25519",
        "root-ed25519",
    ]  # the lost key had no file to retire
    status = orjson.loads(srv.cli("tuf", "status", "p", "--json").stdout)
    newest = status["versions"]["root"]
    assert newest == 5  # 1 + timestamp, snapshot, targets, root (bins are named by targets)
    assert status["keys"]["root"]["threshold"] == 2
    assert [k["keyid"] for k in status["keys"]["root"]["keys"]] == out["new_keyids"]
    with srv.http(client.token) as c:
        vn = orjson.loads(c.get(f"/pypi/p/tuf/{newest}.root.json").content)
    assert len(vn["signatures"]) == 5  # the 2 old keys still here, and the 3 new ones
    assert vn["signed"]["roles"]["root"]["keyids"] == out["new_keyids"]

    fetch()  # the client that trusted v4 follows to v5
    fresh = tmp_path / "fresh-meta"
    fetch(meta=fresh)  # a new client from the v1 file chains v1 → v5
    assert sorted(p.name for p in (fresh / "root_history").iterdir()) == [
        f"{v}.root.json" for v in range(1, newest + 1)
    ]

    # A new root carrying only one of the old keys' signatures breaks the chain: refused.
    ((data,),) = _query(
        srv, "SELECT data FROM tuf_metadata WHERE role = 'root' AND version = ?", newest
    )
    doc = orjson.loads(data)
    old_ids = set(out["old_keyids"])
    kept_old = [sig for sig in doc["signatures"] if sig["keyid"] in old_ids][:1]
    doc["signatures"] = kept_old + [s for s in doc["signatures"] if s["keyid"] not in old_ids]
    _sql(srv, "UPDATE tuf_metadata SET data = ? WHERE role = 'root' AND version = ?",
         orjson.dumps(doc), newest)  # fmt: skip
    srv.stop()  # the server keeps versioned metadata it has read in memory
    srv.start()
    err = client.refused(reqs, tmp_path / "broken", meta=tmp_path / "broken-meta")
    assert "root" in err and "signature" in err
