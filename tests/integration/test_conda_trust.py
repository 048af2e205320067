"""Signed conda channels end to end: `stockade conda trust init` on a real server, then every
repodata form the server serves is checked with an independent implementation of conda's
verification (tests/conda_trust_checker.py) from the root written by ``--root-out``.

Every test runs on SQLite and PostgreSQL (the ``server`` fixture follows ``db_url``).
"""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import msgpack
import pytest
import rattler
import zstandard

from tests import conda_trust_checker as conda
from tests.conda_builders import CondaUpstream, build_conda, write_channel
from tests.conftest import Server

pytestmark = pytest.mark.slow


def _unzstd(b: bytes) -> bytes:
    return zstandard.ZstdDecompressor().decompress(b, max_output_size=1 << 26)


def _packages(out: Path) -> dict[str, Path]:
    return {
        "lib": build_conda(out, "lib", "1.0", fmt=".tar.bz2"),
        "lib2": build_conda(out, "lib", "2.0"),
        "app": build_conda(out, "app", "2.0", subdir="linux-64", depends=["lib >=1.0,<2"]),
    }


def _trust_init(server: Server, channel: str, out: Path) -> dict[str, Any]:
    got: dict[str, Any] = json.loads(
        server.cli("conda", "trust", "init", channel, "--root-out", str(out), "--json").stdout
    )
    return got


def _served_chain(c: Any, channel: str, root_out: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The trusted root (from --root-out, as a client installs it) and the served key_mgr."""
    root = json.loads(root_out.read_text())
    served_root = c.get(f"/conda/{channel}/1.root.json")
    assert served_root.status_code == 200, served_root.text
    assert served_root.json() == root
    assert c.get(f"/conda/{channel}/2.root.json").status_code == 404  # conda's walk ends here
    key_mgr = c.get(f"/conda/{channel}/key_mgr.json")
    assert key_mgr.status_code == 200 and key_mgr.headers["content-type"] == "application/json"
    doc: dict[str, Any] = key_mgr.json()
    conda.check_signable(root, *conda._rule(root, "root"), gpg=True)
    conda.check_key_mgr(root, doc)
    return root, doc


def _every_form(c: Any, channel: str, subdir: str) -> list[dict[str, Any]]:
    """repodata.json plain and gzip, repodata.json.zst and current_repodata.json."""
    plain = c.get(
        f"/conda/{channel}/{subdir}/repodata.json", headers={"Accept-Encoding": "identity"}
    )
    gz = c.get(f"/conda/{channel}/{subdir}/repodata.json", headers={"Accept-Encoding": "gzip"})
    assert gz.headers.get("content-encoding") == "gzip"
    zst = c.get(f"/conda/{channel}/{subdir}/repodata.json.zst")
    current = c.get(f"/conda/{channel}/{subdir}/current_repodata.json")
    for r in (plain, gz, zst, current):
        assert r.status_code == 200, r.text
    return [plain.json(), gz.json(), json.loads(_unzstd(zst.content)), current.json()]


def _check_shards_match(c: Any, channel: str, subdir: str, repodata: dict[str, Any]) -> None:
    """CEP-16 shards carry the signed records unchanged (and no signatures of their own)."""
    index = msgpack.unpackb(
        _unzstd(c.get(f"/conda/{channel}/{subdir}/repodata_shards.msgpack.zst").content)
    )
    for name, sha in index["shards"].items():
        shard = msgpack.unpackb(
            _unzstd(c.get(f"/conda/{channel}/{subdir}/shards/{sha.hex()}.msgpack.zst").content)
        )
        assert "signatures" not in shard
        for kind in ("packages", "packages.conda"):
            for fn, rec in shard[kind].items():
                rec = {k: v.hex() if isinstance(v, bytes) else v for k, v in rec.items()}
                assert rec == repodata[kind][fn], (name, fn)


def test_signed_mirror_channel(server: Server, tmp_path: Path) -> None:
    pkgs = _packages(tmp_path / "dist")
    root_dir = write_channel(tmp_path / "channel", list(pkgs.values()))
    # The upstream signs with its own key: those signatures must not reach Stockade's clients.
    up_doc = json.loads((root_dir / "noarch" / "repodata.json").read_text())
    up_doc["signatures"] = {fn: {"ee" * 32: {"signature": "00" * 64}} for fn in up_doc["packages"]}
    (root_dir / "noarch" / "repodata.json").write_text(json.dumps(up_doc))
    with CondaUpstream(root_dir) as up:
        server.cli(
            "conda", "channel", "create", "cf", "--mirror", up.url, "--subdirs", "noarch,linux-64",
        )  # fmt: skip
        token = server.token("cf", "read")
        with server.http(token) as c:
            before = c.get("/conda/cf/noarch/repodata.json").json()
            assert set(before["signatures"]) == {
                "lib-1.0-0.tar.bz2"
            }  # upstream's, unsigned channel
            assert c.get("/conda/cf/key_mgr.json").status_code == 404
            assert c.get("/conda/cf/1.root.json").status_code == 404
            fetched = up.count("/noarch/repodata.json")

            status = _trust_init(server, "cf", tmp_path / "1.root.json")
            assert status["signed"] and status["root_version"] == 1
            assert status["key_mgr_version"] == 1
            assert sorted(status["created_keys"]) == ["key_mgr", "pkg_mgr", "root"]
            assert status["signing_metadata_url_base"] == "/conda/cf"
            keys = server.home / "keys" / "conda-trust"
            for role in ("root", "key_mgr", "pkg_mgr"):
                assert (keys / f"{role}-ed25519.pem").stat().st_mode & 0o777 == 0o600

            root, key_mgr = _served_chain(c, "cf", tmp_path / "1.root.json")
            assert (
                key_mgr["signed"]["delegations"]["pkg_mgr"]["pubkeys"] == status["keys"]["pkg_mgr"]
            )
            for subdir, expected in (("noarch", 2), ("linux-64", 1)):
                forms = _every_form(c, "cf", subdir)
                for doc in forms:
                    assert doc == forms[0]
                    assert conda.check_all(doc, root, key_mgr) == expected
                    assert set(doc["signatures"]) == set(doc["packages"]) | set(
                        doc["packages.conda"]
                    )
                _check_shards_match(c, "cf", subdir, forms[0])
            # Re-signed from the stored upstream copy: no new upstream request.
            assert up.count("/noarch/repodata.json") == fetched

            # One altered record fails; the others still verify.
            doc = _every_form(c, "cf", "noarch")[0]
            bad = copy.deepcopy(doc)
            bad["packages"]["lib-1.0-0.tar.bz2"]["depends"] = ["evil"]
            with pytest.raises(conda.Untrusted):
                conda.check_package(bad, "lib-1.0-0.tar.bz2", key_mgr)
            conda.check_package(bad, "lib-2.0-0.conda", key_mgr)

        # A conda-compatible client still solves and installs through the signed channel.
        url = f"http://{server.url.split('://', 1)[1]}/t/{token}/conda/cf"
        records = asyncio.run(
            rattler.solve(
                [url],
                ["app"],
                gateway=rattler.Gateway(cache_dir=tmp_path / "cache"),
                platforms=["linux-64", "noarch"],
            )
        )
        assert {str(r.name.normalized) for r in records} == {"app", "lib"}
        with server.http(token) as c:  # the file was verified on fetch; its record is signed
            assert c.get("/conda/cf/linux-64/app-2.0-0.conda").status_code == 200
            doc = c.get("/conda/cf/linux-64/repodata.json").json()
            conda.check_package(doc, "app-2.0-0.conda", key_mgr)

    again = _trust_init(server, "cf", tmp_path / "again.json")  # idempotent: same documents
    assert again["created_keys"] == [] and again["key_mgr_version"] == 1
    assert (tmp_path / "again.json").read_bytes() == (tmp_path / "1.root.json").read_bytes()
    shown = json.loads(server.cli("conda", "trust", "status", "cf", "--json").stdout)
    assert shown["signed"] and shown["keys"] == status["keys"]
    listed = json.loads(server.cli("conda", "channel", "show", "cf", "--json").stdout)
    assert listed["signed"] is True


def test_signed_private_channel(server: Server, tmp_path: Path) -> None:
    pkgs = _packages(tmp_path / "dist")
    server.cli("conda", "channel", "create", "internal", "--private")
    server.cli("conda", "channel", "create", "plain", "--private")
    unsigned = json.loads(server.cli("conda", "trust", "status", "plain", "--json").stdout)
    assert unsigned["signed"] is False
    server.cli("conda", "upload", "-c", "internal", str(pkgs["lib"]))
    _trust_init(server, "internal", tmp_path / "root.json")
    token = server.token("internal", "read")
    with server.http(token) as c:
        root, key_mgr = _served_chain(c, "internal", tmp_path / "root.json")
        forms = _every_form(c, "internal", "noarch")
        for doc in forms:
            assert conda.check_all(doc, root, key_mgr) == 1
        # Uploads after signing is on are signed too (the incremental regeneration).
        server.cli("conda", "upload", "-c", "internal", str(pkgs["lib2"]), str(pkgs["app"]))
        for subdir, expected in (("noarch", 2), ("linux-64", 1)):
            for doc in _every_form(c, "internal", subdir):
                assert conda.check_all(doc, root, key_mgr) == expected
            _check_shards_match(c, "internal", subdir, _every_form(c, "internal", subdir)[0])
        doc = _every_form(c, "internal", "linux-64")[0]
        doc["packages.conda"]["app-2.0-0.conda"]["sha256"] = "00" * 32
        with pytest.raises(conda.Untrusted):
            conda.check_all(doc, root, key_mgr)
    # The same root and key_mgr serve every signed channel (one key set per server).
    server.cli("conda", "upload", "-c", "plain", str(pkgs["lib"]))
    second = _trust_init(server, "plain", tmp_path / "root2.json")
    assert second["created_keys"] == []
    assert (tmp_path / "root2.json").read_bytes() == (tmp_path / "root.json").read_bytes()
    with server.http(server.token("plain", "read")) as c:
        assert conda.check_all(_every_form(c, "plain", "noarch")[0], root, key_mgr) == 1
    events = [
        e
        for e in json.loads(server.cli("audit", "list", "--json", "--limit", "50").stdout)
        if e["action"] == "conda.trust.init"
    ]
    assert {e["index"] for e in events} == {"internal", "plain"}


def test_trust_verify_cli_checks_what_a_client_gets(server: Server, tmp_path: Path) -> None:
    """`stockade conda trust verify`: a client-side check from the root file; a record altered
    between the server and the client (here by a proxy) fails, naming the file."""
    import http.server
    import threading

    import httpx

    from tests.conftest import STOCKADE, client_env

    pkgs = _packages(tmp_path / "dist")
    server.cli("conda", "channel", "create", "internal", "--private")
    server.cli("conda", "upload", "-c", "internal", *(str(p) for p in pkgs.values()))
    token = server.token("internal", "read")
    unsigned_url = f"{server.url}/t/{token}/conda/internal"
    root = tmp_path / "root.json"

    def verify(url: str, *extra: str) -> Any:
        import subprocess

        return subprocess.run(
            [STOCKADE, "conda", "trust", "verify", url, "--root", str(root), *extra],
            capture_output=True, text=True, env=client_env(), timeout=120, check=False,
        )  # fmt: skip

    _trust_init(server, "internal", root)
    ok = verify(unsigned_url, "--json")
    assert ok.returncode == 0, ok.stderr
    got = json.loads(ok.stdout)
    assert got["ok"] and got["root_version"] == 1
    assert got["subdirs"] == {
        "noarch": {"verified": 2, "failed": 0},
        "linux-64": {"verified": 1, "failed": 0},
    }

    class Tamper(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            r = httpx.get(f"{server.url}{self.path}")
            body = r.content
            if self.path.endswith("linux-64/repodata.json"):
                doc = json.loads(body)
                doc["packages.conda"]["app-2.0-0.conda"]["depends"] = ["evil"]
                body = json.dumps(doc).encode()
            self.send_response(r.status_code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Tamper)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        bad = verify(f"http://127.0.0.1:{proxy.server_port}/t/{token}/conda/internal")
    finally:
        proxy.shutdown()
    assert bad.returncode == 1
    assert "linux-64/app-2.0-0.conda" in bad.stderr and "signature" in bad.stderr
    assert "noarch: 2 records verified, 0 failed" in bad.stdout
    other = tmp_path / "other-root.json"
    doc = json.loads(root.read_text())
    doc["signed"]["delegations"]["key_mgr"]["pubkeys"] = ["ab" * 32]  # another key set
    other.write_text(json.dumps(doc))
    root = other
    wrong = verify(unsigned_url)
    assert wrong.returncode != 0 and "does not verify" in wrong.stderr
