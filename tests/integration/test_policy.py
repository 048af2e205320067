"""Policies enforced on a mirror, with real pip, on SQLite and PostgreSQL."""

from __future__ import annotations

import html
import json
import time
from pathlib import Path

from tests.conftest import Server, UpstreamSet
from tests.integration.test_clients import installed, pip, uv

STRICT = '[[rules]]\nkind = "vulnerabilities"\nseverity = "high"\n'
WARN = '[[rules]]\nkind = "vulnerabilities"\nseverity = "high"\nmode = "warn"\n'


def pip_install(srv: Server, index: str, token: str, target: Path, *reqs: str) -> set[str]:
    pip("install", "--index-url", srv.index_url(index, token), "--target", str(target), *reqs)
    return installed(target)


def test_policy_blocks_vulnerable_versions_and_explains(
    server: Server, upstream: UpstreamSet, tmp_path: Path
) -> None:
    srv = server
    srv.cli("index", "create", "up", "--mirror", upstream.upstream.simple_url)
    feed = tmp_path / "feed"
    feed.mkdir()
    (feed / "TEST-A.json").write_text(
        json.dumps(
            {
                "id": "TEST-A",
                "modified": "2024-01-01T00:00:00Z",
                "aliases": ["CVE-2024-9999"],
                "severity": [
                    {"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}
                ],
                "affected": [
                    {
                        "package": {"ecosystem": "PyPI", "name": "alpha"},
                        "ranges": [
                            {
                                "type": "ECOSYSTEM",
                                "events": [{"introduced": "1.1"}, {"fixed": "1.2"}],
                            }
                        ],
                    }
                ],
            }
        )
    )
    srv.cli("vulndb", "import", str(feed))
    policy = tmp_path / "strict.toml"
    policy.write_text(STRICT)
    srv.cli("policy", "set", "up", "--file", str(policy))
    token = srv.token("up")
    # 1.1 is vulnerable, 2.0 is yanked: the resolver falls back to 1.0
    assert pip_install(srv, "up", token, tmp_path / "a", "beta") == {
        "alpha-1.0.dist-info",
        "beta-1.0.dist-info",
    }
    reason = "rule 1 (vulnerabilities): TEST-A (critical, CVSS 9.8) ≥ high; fixed in 1.2"
    # a pinned blocked version fails, and pip and uv both show why
    pinned = pip(
        "install",
        "--index-url",
        srv.index_url("up", token),
        "--target",
        str(tmp_path / "p"),
        "alpha==1.1",
        check=False,
    )
    assert pinned.returncode != 0
    assert f"blocked by policy: {reason}" in pinned.stdout + pinned.stderr
    assert "403" in pinned.stdout + pinned.stderr
    assert not installed(tmp_path / "p")
    uv_pinned = uv(
        "pip",
        "install",
        "--no-cache",
        "--index-url",
        srv.index_url("up", token),
        "--target",
        str(tmp_path / "u"),
        "alpha==1.1",
        check=False,
    )
    assert uv_pinned.returncode != 0  # uv names the 403 but not the page's yank reason
    assert "403 Forbidden" in uv_pinned.stderr
    assert not installed(tmp_path / "u")
    # uv resolves ranges to the newest allowed version
    uv(
        "pip",
        "install",
        "--no-cache",
        "--index-url",
        srv.index_url("up", token),
        "--target",
        str(tmp_path / "u2"),
        "alpha<2",
    )
    assert installed(tmp_path / "u2") == {"alpha-1.0.dist-info"}
    with srv.http(token) as c:
        # listed as yanked (PEP 592) with the reason, so resolvers skip it
        page = c.get("/pypi/up/simple/alpha/").text
        assert f'data-yanked="blocked by policy: {reason}">alpha-1.1-py3-none-any.whl' in page
        assert "alpha-1.0-py3-none-any.whl</a>" in page
        as_json = c.get(
            "/pypi/up/simple/alpha/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
        ).json()
        yanked = {f["filename"]: f["yanked"] for f in as_json["files"]}
        assert yanked["alpha-1.1-py3-none-any.whl"] == f"blocked by policy: {reason}"
        assert yanked["alpha-1.0-py3-none-any.whl"] is False
        r = c.get("/pypi/up/files/alpha/alpha-1.1-py3-none-any.whl")
        assert r.status_code == 403
        assert "rule 1 (vulnerabilities)" in r.text
        assert "TEST-A (critical, CVSS 9.8) ≥ high" in r.text
    explained = srv.cli("policy", "explain", "up", "alpha").stdout
    assert "BLOCKED  alpha-1.1-py3-none-any.whl" in explained
    assert "allowed  alpha-1.0-py3-none-any.whl" in explained
    as_json = json.loads(srv.cli("policy", "explain", "up", "alpha", "1.1", "--json").stdout)
    assert {row["allowed"] for row in as_json} == {False}

    # blocked_files = "hidden": blocked files are left off the pages altogether
    policy.write_text('blocked_files = "hidden"\n' + STRICT)
    srv.cli("policy", "set", "up", "--file", str(policy))
    with srv.http(token) as c:
        assert "alpha-1.1-py3-none-any.whl" not in c.get("/pypi/up/simple/alpha/").text
        assert c.get("/pypi/up/files/alpha/alpha-1.1-py3-none-any.whl").status_code == 403
    assert "BLOCKED  alpha-1.1" in srv.cli("policy", "explain", "up", "alpha").stdout
    policy.write_text(STRICT)

    # a malformed policy is rejected with its line; the previous one stays in force
    bad = tmp_path / "bad.toml"
    bad.write_text('[[rules]]\nkind = "vulnerabilities"\n\n[[rules]]\nkind = "nope"\n')
    res = srv.cli("policy", "set", "up", "--file", str(bad), check=False)
    assert res.returncode == 1
    assert "rule 2 (line 4): unknown kind 'nope'" in res.stderr
    assert len(json.loads(srv.cli("policy", "history", "up", "--json").stdout)) == 2

    # curation unblocks at once (also in the running server)
    srv.cli(
        "vuln",
        "curate",
        "TEST-A",
        "--package",
        "alpha",
        "--status",
        "not_affected",
        "--justification",
        "vulnerable_code_not_present",
        "--reason",
        "patched build",
    )
    with srv.http(token) as c:
        assert c.get("/pypi/up/files/alpha/alpha-1.1-py3-none-any.whl").status_code == 200
    assert pip_install(srv, "up", token, tmp_path / "b", "beta") == {
        "alpha-1.1.dist-info",
        "beta-1.0.dist-info",
    }

    # warn mode logs without blocking
    srv.cli("vuln", "curate", "TEST-A", "--package", "alpha", "--status", "feed")
    policy.write_text(WARN)
    srv.cli("policy", "set", "up", "--file", str(policy))
    with srv.http(token) as c:
        assert c.get("/pypi/up/files/alpha/alpha-1.1-py3-none-any.whl").status_code == 200
    deadline = time.monotonic() + 5
    while True:
        events = json.loads(srv.cli("audit", "list", "--json", "--action", "policy.warn").stdout)
        if events or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert any(e["filename"] == "alpha-1.1-py3-none-any.whl" for e in events)
    versions = json.loads(srv.cli("policy", "history", "up", "--json").stdout)
    assert [v["version"] for v in versions] == [1, 2, 3]


def test_names_policy_on_a_virtual_index(
    server: Server, upstream: UpstreamSet, tmp_path: Path
) -> None:
    srv = server
    srv.cli("index", "create", "up", "--mirror", upstream.upstream.simple_url)
    srv.cli("index", "create", "internal", "--private")
    srv.cli("index", "create", "prod", "--virtual", "internal,up")
    policy = tmp_path / "names.toml"
    policy.write_text(
        '[[rules]]\nkind = "names"\nallow = ["alpha", "beta>=1"]\nallow_only = true\n'
    )
    srv.cli("policy", "set", "prod", "--file", str(policy))
    token = srv.token("prod")
    with srv.http(token) as c:
        page = c.get("/pypi/prod/simple/gamma/")
        assert page.status_code == 200  # listed, every file marked blocked
        assert 'data-yanked="blocked by policy: rule 1 (names): gamma 1.0 is not on' in page.text
        r = c.get("/pypi/prod/files/gamma/gamma-1.0-py3-none-any.whl")
        assert r.status_code == 403
        assert "not on the allow-list" in r.text
        # the member index itself is not affected by the virtual index's policy
    with srv.http(srv.admin_token) as c:
        assert c.get("/pypi/up/files/gamma/gamma-1.0-py3-none-any.whl").status_code == 200
    assert pip_install(srv, "prod", token, tmp_path / "t", "beta") == {
        "alpha-1.1.dist-info",
        "beta-1.0.dist-info",
    }


def test_exception_unblocks_until_it_expires(
    server: Server, upstream: UpstreamSet, tmp_path: Path
) -> None:
    srv = server
    srv.cli("index", "create", "up", "--mirror", upstream.upstream.simple_url)
    policy = tmp_path / "deny.toml"
    policy.write_text('[[rules]]\nkind = "names"\ndeny = ["alpha<2"]\n')
    srv.cli("policy", "set", "up", "--file", str(policy))
    token = srv.token("up")
    url = "/pypi/up/files/alpha/alpha-1.1-py3-none-any.whl"
    with srv.http(token) as c:
        assert c.get(url).status_code == 403
    made = json.loads(
        srv.cli(
            "policy",
            "allow",
            "up",
            "alpha==1.1",
            "--reason",
            "vendor patch",
            "--expires",
            "12s",  # long enough for the CLI calls below on a loaded machine
            "--json",
        ).stdout
    )
    made_at = time.monotonic()  # the exception was created before this: it ends by +12 s
    assert (made["project"], made["specifier"]) == ("alpha", "==1.1")
    with srv.http(token) as c:
        assert c.get(url).status_code == 200
        assert c.get("/pypi/up/files/alpha/alpha-1.0-py3-none-any.whl").status_code == 403
    explained = srv.cli("policy", "explain", "up", "alpha", "1.1").stdout
    assert "exception #" in explained
    assert "vendor patch" in explained
    deadline = made_at + 12.5
    time.sleep(max(0.0, deadline - time.monotonic()))
    with srv.http(token) as c:
        assert c.get(url).status_code == 403  # expired: blocked again, no action needed
    listed = json.loads(srv.cli("policy", "exceptions", "up", "--json").stdout)
    assert [e["reason"] for e in listed] == ["vendor patch"]
    no_reason = srv.cli("policy", "allow", "up", "alpha", "--reason", " ", check=False)
    assert no_reason.returncode == 1
    assert "reason" in no_reason.stderr
    forever = json.loads(
        srv.cli("policy", "allow", "up", "alpha", "--reason", "all of it", "--json").stdout
    )
    with srv.http(token) as c:
        assert c.get("/pypi/up/files/alpha/alpha-1.0-py3-none-any.whl").status_code == 200
    srv.cli("policy", "revoke-exception", str(forever["id"]))
    with srv.http(token) as c:
        assert c.get("/pypi/up/files/alpha/alpha-1.0-py3-none-any.whl").status_code == 403


def test_a_member_index_s_blocks_hold_through_a_virtual_index(
    server: Server, upstream: UpstreamSet, tmp_path: Path
) -> None:
    srv = server
    srv.cli("index", "create", "up", "--mirror", upstream.upstream.simple_url)
    srv.cli("index", "create", "internal", "--private")
    srv.cli("index", "create", "prod", "--virtual", "internal,up")  # no policy of its own
    policy = tmp_path / "deny.toml"
    policy.write_text('[[rules]]\nkind = "names"\ndeny = ["alpha==1.1"]\n')
    srv.cli("policy", "set", "up", "--file", str(policy))
    token = srv.token("prod")
    with srv.http(token) as c:
        page = html.unescape(c.get("/pypi/prod/simple/alpha/").text)
        assert (
            "blocked by policy: rule 1 (names): alpha 1.1 matches deny pattern 'alpha==1.1'" in page
        )
        r = c.get("/pypi/prod/files/alpha/alpha-1.1-py3-none-any.whl")
        assert r.status_code == 403
        assert "(policy of index 'up')" in r.text
    explained = srv.cli("policy", "explain", "prod", "alpha", "1.1").stdout
    assert "BLOCKED  alpha-1.1-py3-none-any.whl" in explained
    assert pip_install(srv, "prod", token, tmp_path / "t", "beta") == {
        "alpha-1.0.dist-info",
        "beta-1.0.dist-info",
    }


def test_policy_api_and_draft_test(server: Server, upstream: UpstreamSet, tmp_path: Path) -> None:
    srv = server
    srv.cli("index", "create", "up", "--mirror", upstream.upstream.simple_url)
    reader = srv.token("up")
    with srv.http(reader) as c:  # pages the draft test will look at
        assert c.get("/pypi/up/simple/alpha/").status_code == 200
        assert c.get("/pypi/up/simple/gamma/").status_code == 200
    with srv.http(srv.admin_token) as c:
        assert c.get("/api/v1/indexes/up/policy").status_code == 404
        deny_alpha = '[[rules]]\nkind = "names"\ndeny = ["alpha<2"]\n'
        r = c.put("/api/v1/indexes/up/policy", content=deny_alpha)
        assert r.status_code == 201
        assert r.json()["version"] == 1
        bad = c.put("/api/v1/indexes/up/policy", content='[[rules]]\nkind = "nope"\n')
        assert bad.status_code == 400
        assert "rule 1 (line 1): unknown kind 'nope'" in bad.text
        assert c.get("/api/v1/indexes/up/policy").json()["text"] == deny_alpha
        assert [v["version"] for v in c.get("/api/v1/indexes/up/policy/history").json()] == [1]
        rows = c.get("/api/v1/indexes/up/policy/explain?project=alpha&version=1.0").json()
        assert rows == [
            {
                "filename": "alpha-1.0-py3-none-any.whl",
                "version": "1.0",
                "allowed": False,
                "blocked_by": ["rule 1 (names): alpha 1.0 matches deny pattern 'alpha<2'"],
                "warnings": [],
                "exception": None,
            }
        ]
        # a draft: stop denying alpha, deny gamma instead
        draft = '[[rules]]\nkind = "names"\ndeny = ["gamma"]\n'
        report = c.post("/api/v1/indexes/up/policy/test", content=draft).json()
        assert report["projects_checked"] == 2
        assert report["newly_allowed"] == 3  # alpha 1.0, 1.1 wheel and 1.1 sdist
        assert report["newly_blocked"] == 2  # gamma 1.0 and 9.0
        by_project = {ch["project"]: ch for ch in report["changes"]}
        assert {f["filename"] for f in by_project["gamma"]["newly_blocked"]} == {
            "gamma-1.0-py3-none-any.whl",
            "gamma-9.0-py3-none-any.whl",
        }
        # nothing was stored by the test
        assert [v["version"] for v in c.get("/api/v1/indexes/up/policy/history").json()] == [1]
        # exceptions through the API
        made = c.post(
            "/api/v1/indexes/up/policy/exceptions",
            json={"requirement": "alpha==1.0", "reason": "vendor fork", "expires": "1d"},
        )
        assert made.status_code == 201
        with srv.http(reader) as rc:
            assert rc.get("/pypi/up/files/alpha/alpha-1.0-py3-none-any.whl").status_code == 200
        gone = c.delete(f"/api/v1/indexes/up/policy/exceptions/{made.json()['id']}")
        assert gone.status_code == 200
        assert gone.json()["revoked_at"] is not None
        with srv.http(reader) as rc:
            assert rc.get("/pypi/up/files/alpha/alpha-1.0-py3-none-any.whl").status_code == 403
    with srv.http(reader) as c:  # a read token may look, not change
        assert c.get("/api/v1/indexes/up/policy").status_code == 200
        assert c.put("/api/v1/indexes/up/policy", content="").status_code == 403
    draft_file = tmp_path / "draft.toml"
    draft_file.write_text('[[rules]]\nkind = "names"\ndeny = ["gamma"]\n')
    out = srv.cli("policy", "test", "up", "--file", str(draft_file)).stdout
    assert "2 projects, 6 files checked on 'up'" in out
    assert "(2 newly blocked, 3 newly allowed)" in out
    assert "+ blocked gamma-1.0-py3-none-any.whl: blocked by rule 1 (names)" in out
    assert "- blocked alpha-1.0-py3-none-any.whl" in out


def test_allow_only_index_with_request_approval_flow(
    server: Server, upstream: UpstreamSet, tmp_path: Path
) -> None:
    srv = server
    srv.cli("index", "create", "up", "--mirror", upstream.upstream.simple_url)
    policy = tmp_path / "approved-only.toml"
    policy.write_text(
        '[[rules]]\nkind = "names"\nallow = ["beta"]\nallow_only = true\n'
        '\n[[rules]]\nkind = "names"\ndeny = ["alpha==1.1"]\n'
    )
    srv.cli("policy", "set", "up", "--file", str(policy))
    token = srv.token("up")
    # beta is approved but needs alpha, which is not: the install fails...
    res = pip(
        "install",
        "--index-url",
        srv.index_url("up", token),
        "--target",
        str(tmp_path / "a"),
        "beta",
        check=False,
    )
    assert res.returncode != 0
    # ...and a pinned download of alpha is refused with a reason and recorded as a request
    with srv.http(token) as c:
        r = c.get("/pypi/up/files/alpha/alpha-1.0-py3-none-any.whl")
        assert r.status_code == 403
        assert "an admin can approve it" in r.text
        assert "your request was recorded" in r.text
    requests = json.loads(srv.cli("policy", "requests", "up", "--json").stdout)
    asked = {(q["project"], q["version"]) for q in requests}
    assert ("alpha", None) in asked  # the page pip looked at
    assert ("alpha", "1.0") in asked  # the download
    assert {q["status"] for q in requests} == {"pending"}
    listed = srv.cli("policy", "requests", "up").stdout
    assert "alpha" in listed
    assert "pending" in listed
    # an admin approves alpha: beta installs; the deny rule still keeps alpha 1.1 out
    made = json.loads(
        srv.cli("policy", "approve", "up", "alpha", "--reason", "reviewed", "--json").stdout
    )
    pip(
        "install",
        "--index-url",
        srv.index_url("up", token),
        "--target",
        str(tmp_path / "b"),
        "beta",
    )
    assert installed(tmp_path / "b") == {"alpha-1.0.dist-info", "beta-1.0.dist-info"}
    assert json.loads(srv.cli("policy", "requests", "up", "--json").stdout) == []
    everything = json.loads(srv.cli("policy", "requests", "up", "--all", "--json").stdout)
    assert {q["status"] for q in everything} == {"approved"}
    with srv.http(token) as c:
        assert c.get("/pypi/up/files/alpha/alpha-1.1-py3-none-any.whl").status_code == 403
    with srv.http(srv.admin_token) as c:
        assert [a["project"] for a in c.get("/api/v1/indexes/up/policy/approvals").json()] == [
            "alpha"
        ]
        r = c.delete(f"/api/v1/indexes/up/policy/approvals/{made['id']}")
        assert r.status_code == 200
    with srv.http(token) as c:
        assert c.get("/pypi/up/files/alpha/alpha-1.0-py3-none-any.whl").status_code == 403
    events = json.loads(srv.cli("audit", "list", "--json", "--action", "download").stdout)
    blocked = [e for e in events if e.get("outcome") == "blocked"]
    assert blocked
    assert any("not on the allow-list" in str(e.get("detail")) for e in blocked)
