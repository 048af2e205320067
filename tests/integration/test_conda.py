"""conda channels end to end: py-rattler solves and installs through Stockade (mirror and
private channels), tokens in ``/t/<token>/`` URLs; integrity, auth and malformed uploads.

Every test runs on SQLite and PostgreSQL (the ``server`` fixture follows ``db_url``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgpack
import pytest
import rattler
import zstandard

from tests.conda_builders import (
    CondaUpstream,
    build_conda,
    corrupt_bytes,
    corrupt_conda_pkg_stream,
    hostile_tar_bz2,
    index_json,
    write_channel,
)
from tests.conftest import Server, make_server

pytestmark = pytest.mark.slow


@dataclass
class Channel:
    upstream: CondaUpstream
    pkgs: dict[str, Path]


def _packages(out: Path) -> dict[str, Path]:
    return {
        "lib": build_conda(out, "lib", "1.0", fmt=".tar.bz2"),  # noarch, old format
        "lib2": build_conda(out, "lib", "2.0"),  # noarch, .conda
        "app": build_conda(out, "app", "2.0", subdir="linux-64", depends=["lib >=1.0,<2"]),
        "tool": build_conda(out, "tool", "0.1", subdir="linux-64", fmt=".tar.bz2"),
    }


@pytest.fixture
def channel(tmp_path: Path) -> Iterator[Channel]:
    pkgs = _packages(tmp_path / "dist")
    root = write_channel(tmp_path / "channel", list(pkgs.values()))
    up = CondaUpstream(root)
    try:
        yield Channel(up, pkgs)
    finally:
        up.close()


def _host(server: Server) -> str:
    return server.url.split("://", 1)[1]


def _channel_url(server: Server, name: str, token: str) -> str:
    return f"http://{_host(server)}/t/{token}/conda/{name}"


def _solve_install(
    url: str, specs: list[str], tmp: Path, *, sharded: bool = False, install: bool = True
) -> list[Any]:
    async def go() -> list[Any]:
        gateway = rattler.Gateway(
            cache_dir=tmp / "repodata-cache",
            default_config=rattler.SourceConfig(sharded_enabled=sharded),
        )
        records = await rattler.solve(
            [url], specs, gateway=gateway, platforms=["linux-64", "noarch"]
        )
        if install:
            await rattler.install(
                records, tmp / "prefix", cache_dir=tmp / "pkgs-cache", show_progress=False
            )
        return list(records)

    return asyncio.run(go())


def _names(records: list[Any]) -> dict[str, str]:
    return {str(r.name.normalized): str(r.version) for r in records}


def _audit(server: Server, **filters: str) -> list[dict[str, Any]]:
    args = ["audit", "list", "--json", "--limit", "200"]
    for k, v in filters.items():
        args += [f"--{k}", v]
    out: list[dict[str, Any]] = json.loads(server.cli(*args).stdout)
    return out


# -- mirror ------------------------------------------------------------------------------------


def test_mirror_channel_solve_and_install(server: Server, channel: Channel, tmp_path: Path) -> None:
    created = json.loads(
        server.cli(
            "conda", "channel", "create", "cf", "--mirror", channel.upstream.url,
            "--subdirs", "noarch,linux-64", "--json",
        ).stdout
    )  # fmt: skip
    assert created["kind"] == "conda-mirror" and created["subdirs"] == ["noarch", "linux-64"]
    listed = json.loads(server.cli("conda", "channel", "list", "--json").stdout)
    assert [c["name"] for c in listed] == ["cf"]
    token = server.token("cf", "read")

    records = _solve_install(_channel_url(server, "cf", token), ["app"], tmp_path / "c1")
    assert _names(records) == {"app": "2.0", "lib": "1.0"}  # lib 2.0 excluded by app's pin
    prefix = tmp_path / "c1" / "prefix"
    assert (prefix / "share" / "app" / "app.txt").read_text() == "app 2.0\n"
    assert (prefix / "share" / "lib" / "lib.txt").read_text() == "lib 1.0\n"
    assert (prefix / "conda-meta").is_dir()
    # The URLs rattler used point at Stockade, not the upstream.
    assert all("/conda/cf/" in str(r.url) and _host(server) in str(r.url) for r in records)

    stored = json.loads(server.cli("conda", "packages", "cf", "--json").stdout)
    assert {p["filename"] for p in stored} == {"app-2.0-0.conda", "lib-1.0-0.tar.bz2"}
    assert {p["source"] for p in stored} == {"mirror"}

    # A second client with a cold cache: files come from Stockade's storage.
    before = channel.upstream.count("/linux-64/app-2.0-0.conda")
    _solve_install(_channel_url(server, "cf", token), ["app", "tool"], tmp_path / "c2")
    assert channel.upstream.count("/linux-64/app-2.0-0.conda") == before == 1
    downloads = [e for e in _audit(server, action="download") if e["outcome"] == "ok"]
    assert any(e["filename"] == "linux-64/app-2.0-0.conda" for e in downloads)

    # Conditional revalidation is not needed inside the TTL: one upstream fetch per document.
    assert channel.upstream.count("/noarch/repodata.json") <= 2  # .zst tried (404), then json


def test_mirror_repodata_forms(server: Server, channel: Channel) -> None:
    server.cli(
        "conda", "channel", "create", "cf", "--mirror", channel.upstream.url,
        "--subdirs", "noarch,linux-64",
    )  # fmt: skip
    token = server.token("cf", "read")
    with server.http(token) as c:
        plain = c.get("/conda/cf/linux-64/repodata.json", headers={"Accept-Encoding": "identity"})
        assert plain.status_code == 200
        data = plain.json()
        assert set(data["packages.conda"]) == {"app-2.0-0.conda"}
        assert set(data["packages"]) == {"tool-0.1-0.tar.bz2"}
        assert "base_url" not in data["info"]
        etag = plain.headers["etag"]
        assert (
            c.get("/conda/cf/linux-64/repodata.json", headers={"If-None-Match": etag}).status_code
            == 304
        )
        gz = c.get("/conda/cf/linux-64/repodata.json", headers={"Accept-Encoding": "gzip"})
        assert gz.headers.get("content-encoding") == "gzip" and gz.json() == data
        zst = c.get("/conda/cf/linux-64/repodata.json.zst")
        assert zst.status_code == 200
        assert json.loads(_unzstd(zst.content)) == data
        current = c.get("/conda/cf/linux-64/current_repodata.json")  # upstream has none
        assert current.status_code == 200 and current.json() == data
        assert c.get("/conda/cf/channeldata.json").json()["channeldata_version"] == 1
        index = msgpack.unpackb(
            _unzstd(c.get("/conda/cf/linux-64/repodata_shards.msgpack.zst").content)
        )
        assert set(index["shards"]) == {"app", "tool"}
        missing = c.get("/conda/cf/osx-arm64/repodata.json")
        assert missing.status_code == 404 and "does not mirror subdir" in missing.text
        assert c.get("/conda/cf/linux-64/nothing-1.0-0.conda").status_code == 404
        # A conda channel is not a PyPI index.
        r = c.get("/pypi/cf/simple/")
        assert r.status_code == 404 and "/conda/cf/" in r.text


def test_mirror_revalidates_and_serves_stale(tmp_path: Path, db_url: str) -> None:
    pkgs = _packages(tmp_path / "dist")
    root = write_channel(tmp_path / "channel", list(pkgs.values()))
    srv = make_server(tmp_path / "home", db_url, page_ttl=1)
    try:
        with CondaUpstream(root) as up:
            srv.cli(
                "conda", "channel", "create", "cf", "--mirror", up.url, "--subdirs", "noarch",
            )  # fmt: skip
            token = srv.token("cf", "read")
            with srv.http(token) as c:
                assert c.get("/conda/cf/noarch/repodata.json").status_code == 200
                import time

                time.sleep(1.2)
                assert c.get("/conda/cf/noarch/repodata.json").status_code == 200
                conditional = [
                    h for _, p, h in up.requests
                    if p == "/noarch/repodata.json" and "If-None-Match" in h
                ]  # fmt: skip
                assert conditional, up.requests
                up.down = True
                time.sleep(1.2)
                stale = c.get("/conda/cf/noarch/repodata.json")
                assert stale.status_code == 200
                assert "503" in stale.headers["x-stockade-stale"]
                assert set(stale.json()["packages"]) == {"lib-1.0-0.tar.bz2"}
                # Nothing cached for a file: a clear 502.
                r = c.get("/conda/cf/noarch/lib-1.0-0.tar.bz2")
                assert r.status_code == 502 and "503" in r.text
    finally:
        srv.stop()


def test_tampered_upstream_package_is_not_served_nor_stored(
    server: Server, channel: Channel
) -> None:
    server.cli(
        "conda", "channel", "create", "cf", "--mirror", channel.upstream.url,
        "--subdirs", "noarch,linux-64",
    )  # fmt: skip
    channel.upstream.tamper("app-2.0-0.conda")
    token = server.token("cf", "read")
    with server.http(token) as c:
        for _ in range(2):
            r = c.get("/conda/cf/linux-64/app-2.0-0.conda")
            assert r.status_code == 502
            assert "hashes to sha256" in r.text and "not served, not stored" in r.text
        assert c.get("/conda/cf/noarch/lib-1.0-0.tar.bz2").status_code == 200
    stored = json.loads(server.cli("conda", "packages", "cf", "--json").stdout)
    assert [p["filename"] for p in stored] == ["lib-1.0-0.tar.bz2"]
    events = _audit(server, action="integrity.mismatch")
    assert events and events[0]["filename"] == "linux-64/app-2.0-0.conda"
    blobs = list((server.home / "files" / "sha256").rglob("*"))
    app_sha = json.loads((channel.upstream.root / "linux-64" / "repodata.json").read_text())[
        "packages.conda"
    ]["app-2.0-0.conda"]["sha256"]
    assert not any(b.name == app_sha for b in blobs)


# -- private -----------------------------------------------------------------------------------


def test_private_channel_upload_solve_and_install(server: Server, tmp_path: Path) -> None:
    pkgs = _packages(tmp_path / "dist")
    server.cli("conda", "channel", "create", "internal", "--private")
    up = json.loads(
        server.cli(
            "conda", "upload", "--channel", "internal", str(pkgs["lib"]), str(pkgs["lib2"]),
            "--json",
        ).stdout
    )  # fmt: skip
    assert [p["subdir"] for p in up] == ["noarch", "noarch"]
    writer = server.token("internal", "write")
    with server.http(writer) as c:
        r = c.post(
            "/api/v1/conda/internal/packages",
            files={"file": (pkgs["app"].name, pkgs["app"].read_bytes())},
        )
        assert r.status_code == 201, r.text
        assert r.json()["subdir"] == "linux-64"
        again = c.post(
            "/api/v1/conda/internal/packages",
            files={"file": (pkgs["app"].name, pkgs["app"].read_bytes())},
        )
        assert again.status_code == 409 and "already exists" in again.json()["error"]
        dup_cli = server.cli("conda", "upload", "-c", "internal", str(pkgs["lib"]), check=False)
        assert dup_cli.returncode == 1 and "already exists" in dup_cli.stderr
        data = c.get("/conda/internal/noarch/repodata.json").json()
        assert set(data["packages"]) == {"lib-1.0-0.tar.bz2"}
        assert set(data["packages.conda"]) == {"lib-2.0-0.conda"}
        empty = c.get("/conda/internal/osx-arm64/repodata.json")
        assert empty.status_code == 200 and empty.json()["packages"] == {}
        cd = c.get("/conda/internal/channeldata.json").json()
        assert cd["packages"]["app"]["subdirs"] == ["linux-64"]

    reader = server.token("internal", "read")
    records = _solve_install(_channel_url(server, "internal", reader), ["app"], tmp_path / "c")
    assert _names(records) == {"app": "2.0", "lib": "1.0"}
    assert (tmp_path / "c" / "prefix" / "share" / "lib" / "lib.txt").read_text() == "lib 1.0\n"
    latest = _solve_install(
        _channel_url(server, "internal", reader), ["lib"], tmp_path / "d", install=False
    )
    assert _names(latest) == {"lib": "2.0"}
    uploads = [e for e in _audit(server, action="upload") if e["index"] == "internal"]
    assert sorted(e["outcome"] for e in uploads) == ["ok", "ok", "ok", "rejected"]


def test_private_channel_shards_cep16(tmp_path: Path, db_url: str) -> None:
    pkgs = _packages(tmp_path / "dist")
    server = make_server(tmp_path / "home", db_url, access_log="true")
    try:
        _check_shards(server, pkgs, tmp_path)
    finally:
        server.stop()


def _check_shards(server: Server, pkgs: dict[str, Path], tmp_path: Path) -> None:
    server.cli("conda", "channel", "create", "internal", "--private")
    server.cli("conda", "upload", "-c", "internal", *(str(p) for p in pkgs.values()))
    token = server.token("internal", "read")
    with server.http(token) as c:
        r = c.get("/conda/internal/linux-64/repodata_shards.msgpack.zst")
        assert r.status_code == 200
        index = msgpack.unpackb(_unzstd(r.content))
        assert index["info"]["shards_base_url"] == "./shards/"
        assert set(index["shards"]) == {"app", "tool"}
        sha = index["shards"]["app"].hex()
        s = c.get(f"/conda/internal/linux-64/shards/{sha}.msgpack.zst")
        assert s.status_code == 200 and "immutable" in s.headers["cache-control"]
        shard = msgpack.unpackb(_unzstd(s.content))
        rec = shard["packages.conda"]["app-2.0-0.conda"]
        assert rec["sha256"] == hashlib.sha256(pkgs["app"].read_bytes()).digest()
        # A blob that is not a current shard of this subdir is never served from /shards/.
        noarch = msgpack.unpackb(
            _unzstd(c.get("/conda/internal/noarch/repodata_shards.msgpack.zst").content)
        )
        other = noarch["shards"]["lib"].hex()
        assert c.get(f"/conda/internal/linux-64/shards/{other}.msgpack.zst").status_code == 404
    # rattler's gateway with sharded repodata enabled solves from the shards alone.
    mark = len(server.log())
    records = _solve_install(
        _channel_url(server, "internal", token), ["app"], tmp_path / "c", sharded=True
    )
    assert _names(records) == {"app": "2.0", "lib": "1.0"}
    log = server.log()[mark:]
    assert "/conda/internal/linux-64/repodata_shards.msgpack.zst" in log, log
    assert "/conda/internal/noarch/shards/" in log and "/conda/internal/linux-64/shards/" in log
    assert "/repodata.json" not in log, log
    assert token not in server.log()


# -- auth --------------------------------------------------------------------------------------


def test_channel_auth(server: Server, channel: Channel, tmp_path: Path) -> None:
    server.cli("conda", "channel", "create", "internal", "--private")
    server.cli("conda", "channel", "create", "open", "--private", "--anonymous-read")
    server.cli(
        "conda", "channel", "create", "cf", "--mirror", channel.upstream.url,
        "--subdirs", "noarch",
    )  # fmt: skip
    other = server.token("cf", "read")
    reader = server.token("internal", "read")
    with httpx.Client(base_url=server.url, timeout=30) as c:
        r = c.get("/conda/internal/noarch/repodata.json")
        assert r.status_code == 401 and "WWW-Authenticate" in r.headers
        bad = "stk_0123456789abcdef_" + "x" * 43
        assert c.get(f"/t/{bad}/conda/internal/noarch/repodata.json").status_code == 401
        wrong = c.get(f"/t/{other}/conda/internal/noarch/repodata.json")
        assert wrong.status_code == 403 and "not 'internal'" in wrong.text
        assert c.get(f"/t/{reader}/conda/internal/noarch/repodata.json").status_code == 200
        basic = c.get("/conda/internal/noarch/repodata.json", auth=("__token__", reader))
        assert basic.status_code == 200
        assert c.get("/conda/open/noarch/repodata.json").status_code == 200  # anonymous read
        assert c.get("/conda/nope/noarch/repodata.json").status_code == 401  # no name oracle
        up = c.post(
            f"/t/{reader}/api/v1/conda/internal/packages",
            files={"file": (channel.pkgs["lib"].name, channel.pkgs["lib"].read_bytes())},
        )
        assert up.status_code == 403 and "scope" in up.json()["error"]
        to_mirror = c.post(
            "/api/v1/conda/cf/packages",
            headers={"Authorization": f"Bearer {server.admin_token}"},
            files={"file": (channel.pkgs["lib"].name, channel.pkgs["lib"].read_bytes())},
        )
        assert to_mirror.status_code == 400 and "mirror" in to_mirror.json()["error"]
    # A wrong token through rattler fails, and nothing is installed.
    with pytest.raises(Exception):  # noqa: B017 - rattler raises its own error types
        _solve_install(_channel_url(server, "internal", bad), ["lib"], tmp_path / "x")
    refused = [e for e in _audit(server, action="refused") if e["index"] == "internal"]
    assert refused


def test_team_grants_apply_to_channels(server: Server) -> None:
    server.cli("conda", "channel", "create", "internal", "--private")
    server.cli("team", "create", "data")
    token = server.token("*", "read", "--team", "data")
    with httpx.Client(base_url=server.url, timeout=30) as c:
        r = c.get(f"/t/{token}/conda/internal/noarch/repodata.json")
        assert r.status_code == 403 and "no grant" in r.text
        server.cli("team", "grant", "data", "internal", "--scope", "read")
        assert c.get(f"/t/{token}/conda/internal/noarch/repodata.json").status_code == 200


# -- malformed uploads -------------------------------------------------------------------------


def test_malformed_uploads_are_refused(server: Server, tmp_path: Path) -> None:
    good = _packages(tmp_path / "dist")
    bad = tmp_path / "bad"
    liar = build_conda(
        bad / "liar", "x", "1.0",
        index=index_json("other", "1.0"), filename="x-1.0-0.conda",
    )  # fmt: skip
    cases: dict[str, tuple[Path, str]] = {
        "corrupt zstd": (corrupt_conda_pkg_stream(good["app"], bad / "zstd"), "zstd"),
        "corrupt bz2": (corrupt_bytes(good["lib"], bad / "bz2"), "corrupt"),
        "index.json lies": (liar, "says name 'other'"),
        "traversal": (
            hostile_tar_bz2(
                bad / "trav",
                "evil-1.0-0.tar.bz2",
                index_json("evil", "1.0"),
                [("../../etc/cron.d/evil", b"* * * * * root sh\n")],
            ),
            "path traversal",
        ),
        "symlink out": (
            hostile_tar_bz2(
                bad / "link",
                "evil-1.0-0.tar.bz2",
                index_json("evil", "1.0"),
                symlinks=[("share/x", "../../../etc/passwd")],
            ),
            "outside the package",
        ),
        "noarch in linux-64": (
            hostile_tar_bz2(
                bad / "sub",
                "evil-1.0-0.tar.bz2",
                {**index_json("evil", "1.0"), "subdir": "linux-64"},
            ),
            "is noarch",
        ),
        "not a package": (_write(bad / "junk" / "junk-1.0-0.conda", b"PK\x03\x04junk"), "corrupt"),
        "bad name": (_write(bad / "name" / "setup.py", b"print()"), "not a conda package"),
    }
    server.cli("conda", "channel", "create", "internal", "--private")
    writer = server.token("internal", "write")
    with server.http(writer) as c:
        for what, (path, needle) in cases.items():
            r = c.post(
                "/api/v1/conda/internal/packages", files={"file": (path.name, path.read_bytes())}
            )
            assert r.status_code == 400, (what, r.status_code, r.text)
            assert needle in r.json()["error"], (what, r.json())
            assert r.json()["hint"], what
        wrong_subdir = c.post(
            "/api/v1/conda/internal/packages",
            data={"subdir": "noarch"},
            files={"file": (good["app"].name, good["app"].read_bytes())},
        )
        assert wrong_subdir.status_code == 400 and "linux-64" in wrong_subdir.json()["error"]
        for subdir in ("noarch", "linux-64"):
            data = c.get(f"/conda/internal/{subdir}/repodata.json").json()
            assert data["packages"] == {} and data["packages.conda"] == {}
    assert json.loads(server.cli("conda", "packages", "internal", "--json").stdout) == []
    res = server.cli("conda", "upload", "-c", "internal", str(cases["traversal"][0]), check=False)
    assert res.returncode == 1 and "path traversal" in res.stderr and "hint:" in res.stderr


def test_huge_upload_is_refused(tmp_path: Path, db_url: str) -> None:
    srv = make_server(tmp_path / "home", db_url, max_upload_size=4096)
    try:
        srv.cli("conda", "channel", "create", "internal", "--private")
        big = build_conda(
            tmp_path / "dist", "big", "1.0",
            files={"share/big.bin": __import__("os").urandom(64 * 1024)},
        )  # fmt: skip
        with srv.http(srv.token("internal", "write")) as c:
            r = c.post(
                "/api/v1/conda/internal/packages", files={"file": (big.name, big.read_bytes())}
            )
            assert r.status_code == 413 and "max_upload_size" in r.json()["error"]
        assert json.loads(srv.cli("conda", "packages", "internal", "--json").stdout) == []
    finally:
        srv.stop()


def test_cli_errors_say_how_to_fix(server: Server) -> None:
    r = server.cli("conda", "channel", "create", "x", check=False)
    assert r.returncode == 1 and "--private" in r.stderr
    r = server.cli(
        "conda", "channel", "create", "x", "--mirror", "http://127.0.0.1:9/", check=False
    )
    assert r.returncode == 1 and "--subdirs" in r.stderr
    r = server.cli(
        "conda", "channel", "create", "x", "--mirror", "ftp://x/", "--subdirs", "noarch",
        check=False,
    )  # fmt: skip
    assert r.returncode == 1 and "http(s)" in r.stderr
    r = server.cli("conda", "channel", "create", "x", "--private", "--subdirs", "x y", check=False)
    assert r.returncode == 1 and "conda subdir" in r.stderr
    r = server.cli("conda", "upload", "-c", "nope", __file__, check=False)
    assert r.returncode == 1 and "no conda channel" in r.stderr
    r = server.cli("index", "create", "v", "--virtual", "nope", check=False)
    assert r.returncode == 1
    server.cli("conda", "channel", "create", "internal", "--private")
    r = server.cli("index", "create", "v", "--virtual", "internal", check=False)
    assert r.returncode == 1 and "conda channel" in r.stderr
    with server.http(server.admin_token) as c:
        r = c.post("/api/v1/indexes", json={"name": "y", "kind": "conda-private"})
        assert r.status_code == 400 and "conda channel create" in r.json()["hint"]
        r = c.post("/api/v1/conda/channels", json={"name": "y", "kind": "private"})
        assert r.status_code == 201 and r.json()["kind"] == "conda-private"


def _unzstd(data: bytes) -> bytes:
    return zstandard.ZstdDecompressor().decompressobj().decompress(data)


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# -- policies (phase 3) ------------------------------------------------------------------------

CONDA_POLICY = """
[[rules]]
kind = "names"
deny = ["lib<2"]

[[rules]]
kind = "vulnerabilities"
severity = "high"
"""


def test_policy_filters_channel_repodata(server: Server, channel: Channel, tmp_path: Path) -> None:
    feed = tmp_path / "feed"
    feed.mkdir()
    (feed / "TEST-C.json").write_text(
        json.dumps(
            {
                "id": "TEST-C",
                "modified": "2024-01-01T00:00:00Z",
                "severity": [
                    {"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}
                ],
                "affected": [
                    {"package": {"ecosystem": "conda", "name": "tool"}, "versions": ["0.1"]}
                ],
            }
        )
    )
    server.cli("vulndb", "import", str(feed))
    policy = tmp_path / "p.toml"
    policy.write_text(CONDA_POLICY)
    server.cli("conda", "channel", "create", "internal", "--private")
    server.cli("conda", "upload", "-c", "internal", *(str(p) for p in channel.pkgs.values()))
    server.cli(
        "conda", "channel", "create", "cf", "--mirror", channel.upstream.url,
        "--subdirs", "noarch,linux-64",
    )  # fmt: skip
    token = server.token("*", "read")
    with server.http(token) as c:
        before = c.get("/conda/internal/noarch/repodata.json").json()
        assert "lib-1.0-0.tar.bz2" in before["packages"]
        for name in ("internal", "cf"):
            server.cli("policy", "set", name, "--file", str(policy))
            noarch = c.get(f"/conda/{name}/noarch/repodata.json").json()
            assert noarch["packages"] == {} and set(noarch["packages.conda"]) == {"lib-2.0-0.conda"}
            linux = c.get(f"/conda/{name}/linux-64/repodata.json").json()
            assert set(linux["packages"]) == set()  # tool 0.1 has a critical advisory
            assert set(linux["packages.conda"]) == {"app-2.0-0.conda"}
            shards = msgpack.unpackb(
                _unzstd(c.get(f"/conda/{name}/noarch/repodata_shards.msgpack.zst").content)
            )
            lib = msgpack.unpackb(
                _unzstd(
                    c.get(
                        f"/conda/{name}/noarch/shards/{shards['shards']['lib'].hex()}.msgpack.zst"
                    ).content
                )
            )
            assert set(lib["packages"]) == set()
            r = c.get(f"/conda/{name}/noarch/lib-1.0-0.tar.bz2")
            assert r.status_code == 403 and "deny pattern 'lib<2'" in r.text
            r = c.get(f"/conda/{name}/linux-64/tool-0.1-0.tar.bz2")
            assert r.status_code == 403 and "TEST-C" in r.text
    blocked = [e for e in _audit(server, action="download") if e["outcome"] == "blocked"]
    assert {e["filename"] for e in blocked} == {
        "noarch/lib-1.0-0.tar.bz2",
        "linux-64/tool-0.1-0.tar.bz2",
    }
    url = _channel_url(server, "internal", token)
    assert _names(_solve_install(url, ["lib"], tmp_path / "a", install=False)) == {"lib": "2.0"}
    with pytest.raises(Exception, match="lib"):
        _solve_install(url, ["app"], tmp_path / "b", install=False)
    # An exception lets the blocked version through again.
    server.cli("policy", "allow", "internal", "lib<2", "--reason", "pinned by the app team")
    with server.http(token) as c:
        noarch = c.get("/conda/internal/noarch/repodata.json").json()
        assert set(noarch["packages"]) == {"lib-1.0-0.tar.bz2"}
        assert c.get("/conda/internal/noarch/lib-1.0-0.tar.bz2").status_code == 200
    # No policy: everything is served again (the private channel is rebuilt from its records).
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    server.cli("policy", "set", "internal", "--file", str(empty))
    with server.http(token) as c:
        linux = c.get("/conda/internal/linux-64/repodata.json").json()
        assert set(linux["packages"]) == {"tool-0.1-0.tar.bz2"}
