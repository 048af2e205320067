"""License, custom (CEL) and threat rules against a real server and real pip, both databases."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.builders import build_sdist, build_wheel, write_simple_tree
from tests.conftest import Server, UpstreamSet
from tests.integration.test_clients import installed, pip
from tests.upstream import Upstream

LICENSES = """
[[rules]]
kind = "license"
deny = ["GPL-*", "AGPL-*"]
unknown = "block"
"""


@pytest.fixture
def licensed(tmp_path: Path) -> Iterator[Upstream]:
    """Projects whose real METADATA states licences in each of the ways packages do."""
    dist = tmp_path / "ldist"
    dist.mkdir()
    files = [
        build_wheel(dist, "relicensed", "1.0", headers=["License-Expression: MIT"]),
        build_wheel(dist, "relicensed", "2.0", headers=["License-Expression: GPL-3.0-only"]),
        build_wheel(
            dist,
            "classy",
            "1.0",
            headers=["Classifier: License :: OSI Approved :: MIT License"],
        ),
        build_wheel(dist, "dual", "1.0", headers=["License-Expression: GPL-2.0-only OR MIT"]),
        build_wheel(dist, "freetext", "1.0", license="Apache License 2.0"),
        build_wheel(dist, "nolicense", "1.0"),
        # no PEP 658 metadata advertised: Stockade reads the (small) file itself
        build_wheel(dist, "hidden-meta", "1.0", headers=["License-Expression: AGPL-3.0-only"]),
        build_wheel(dist, "hidden-meta", "0.9", headers=["License-Expression: BSD-3-Clause"]),
        build_sdist(dist, "sdist-only", "1.0"),
    ]
    root = tmp_path / "licensed"
    write_simple_tree(
        root,
        files,
        with_metadata={f.name for f in files if "hidden" not in f.name and f.suffix == ".whl"},
    )
    up = Upstream(root)
    try:
        yield up
    finally:
        up.close()


def test_license_rule_reads_real_metadata(
    server: Server, licensed: Upstream, tmp_path: Path
) -> None:
    srv = server
    srv.cli("index", "create", "up", "--mirror", licensed.simple_url)
    policy = tmp_path / "licenses.toml"
    policy.write_text(LICENSES)
    srv.cli("policy", "set", "up", "--file", str(policy))
    token = srv.token("up")
    url = srv.index_url("up", token)
    # 2.0 was relicensed under the GPL: the resolver falls back to the MIT release
    pip("install", "--index-url", url, "--target", str(tmp_path / "a"), "relicensed")
    assert installed(tmp_path / "a") == {"relicensed-1.0.dist-info"}
    pip("install", "--index-url", url, "--target", str(tmp_path / "b"), "classy", "dual")
    assert installed(tmp_path / "b") == {"classy-1.0.dist-info", "dual-1.0.dist-info"}
    pip("install", "--index-url", url, "--target", str(tmp_path / "c"), "freetext")
    # no PEP 658 metadata upstream: Stockade fetched the small wheels and read them
    pip("install", "--index-url", url, "--target", str(tmp_path / "d"), "hidden-meta")
    assert installed(tmp_path / "d") == {"hidden_meta-0.9.dist-info"}

    def explain(project: str) -> dict[str, dict[str, object]]:
        rows = json.loads(srv.cli("policy", "explain", "up", project, "--json").stdout)
        return {r["filename"]: r for r in rows}

    gpl = explain("relicensed")["relicensed-2.0-py3-none-any.whl"]
    assert gpl["allowed"] is False
    assert len(gpl["blocked_by"]) == 1
    assert "rule 1 (license): GPL-3.0-only" in gpl["blocked_by"][0]
    none = explain("nolicense")["nolicense-1.0-py3-none-any.whl"]
    assert none["blocked_by"] == ["rule 1 (license): no licence in the metadata (unknown = block)"]
    assert "AGPL-3.0-only" in str(explain("hidden-meta")["hidden_meta-1.0-py3-none-any.whl"])
    # an sdist's PKG-INFO is read the same way (this one states no licence)
    assert explain("sdist-only")["sdist_only-1.0.tar.gz"]["allowed"] is False
    unpinned = pip(
        "install", "--index-url", url, "--target", str(tmp_path / "e"), "nolicense", check=False
    )
    assert unpinned.returncode != 0
    assert "Ignored the following yanked versions: 1.0" in unpinned.stderr
    pinned = pip(
        "install",
        "--index-url",
        url,
        "--target",
        str(tmp_path / "e"),
        "nolicense==1.0",
        check=False,
    )
    assert pinned.returncode != 0
    assert "no licence in the metadata" in pinned.stdout + pinned.stderr
    # the upstream has no PEP 658 metadata for this blocked wheel: Stockade advertises its own
    # (name, version, reason), so pip still gets far enough to print the reason
    agpl = pip(
        "install",
        "--index-url",
        url,
        "--target",
        str(tmp_path / "f"),
        "hidden-meta==1.0",
        check=False,
    )
    assert agpl.returncode != 0
    assert "blocked by policy: rule 1 (license): AGPL-3.0-only" in agpl.stdout + agpl.stderr
    with srv.http(token) as c:
        page = c.get(
            "/pypi/up/simple/hidden-meta/",
            headers={"Accept": "application/vnd.pypi.simple.v1+json"},
        ).json()
        entry = next(f for f in page["files"] if f["filename"].startswith("hidden_meta-1.0"))
        meta = c.get("/pypi/up/files/hidden-meta/hidden_meta-1.0-py3-none-any.whl.metadata")
        assert meta.status_code == 200
        assert hashlib.sha256(meta.content).hexdigest() == entry["core-metadata"]["sha256"]
        assert b"Name: hidden-meta\nVersion: 1.0\n" in meta.content
        allowed = next(f for f in page["files"] if f["filename"].startswith("hidden_meta-0.9"))
        assert "core-metadata" not in allowed  # nothing invented for files that are served


CEL_AND_THREATS = """
[[rules]]
kind = "custom"
name = "wheels-only"
block_if = 'kind == "sdist"'
message = "sdists run code at install time; wheels only"

[[rules]]
kind = "custom"
name = "no-beta-two"
block_if = 'name == "alpha" && version.startsWith("1.1") && size > 0'
mode = "warn"

[[rules]]
kind = "threats"
block = ["malicious"]
"""


def test_custom_cel_and_threat_rules(server: Server, upstream: UpstreamSet, tmp_path: Path) -> None:
    srv = server
    srv.cli("index", "create", "up", "--mirror", upstream.upstream.simple_url)
    feed = tmp_path / "feed"
    feed.mkdir()
    (feed / "MAL-2026-1.json").write_text(
        json.dumps(
            {
                "id": "MAL-2026-1",
                "modified": "2026-01-01T00:00:00Z",
                "summary": "Malicious code in gamma (PyPI)",
                "affected": [
                    {
                        "package": {"ecosystem": "PyPI", "name": "gamma"},
                        "versions": ["1.0"],
                    }
                ],
            }
        )
    )
    srv.cli("vulndb", "import", str(feed))
    policy = tmp_path / "p.toml"
    policy.write_text(CEL_AND_THREATS)
    srv.cli("policy", "set", "up", "--file", str(policy))
    token = srv.token("up")
    with srv.http(token) as c:
        r = c.get("/pypi/up/files/alpha/alpha-1.1.tar.gz")
        assert r.status_code == 403
        assert "rule 1 (custom): sdists run code at install time; wheels only" in r.text
        assert c.get("/pypi/up/files/alpha/alpha-1.1-py3-none-any.whl").status_code == 200
        r = c.get("/pypi/up/files/gamma/gamma-1.0-py3-none-any.whl")
        assert r.status_code == 403
        assert "rule 3 (threats): malicious: known-malicious-feed (MAL-2026-1" in r.text
    rows = json.loads(srv.cli("policy", "explain", "up", "alpha", "1.1", "--json").stdout)
    wheel = next(r for r in rows if r["filename"].endswith(".whl"))
    assert wheel["allowed"] is True
    assert wheel["warnings"] == [
        'rule 2 (custom, warn): no-beta-two matched: name == "alpha" && '
        'version.startsWith("1.1") && size > 0'
    ]
    pip(
        "install",
        "--index-url",
        srv.index_url("up", token),
        "--target",
        str(tmp_path / "t"),
        "alpha==1.1",
    )
    assert installed(tmp_path / "t") == {"alpha-1.1.dist-info"}

    # a CEL mistake is rejected with its place; the policy in force stays
    policy.write_text('[[rules]]\nkind = "custom"\nblock_if = "nme == 1"\n')
    res = srv.cli("policy", "set", "up", "--file", str(policy), check=False)
    assert res.returncode == 1
    assert "rule 1 (line 1)" in res.stderr
    assert "undeclared reference to 'nme'" in res.stderr
    assert len(json.loads(srv.cli("policy", "history", "up", "--json").stdout)) == 1


def test_quarantine_ends_by_itself(server: Server, tmp_path: Path) -> None:
    """The clock is controlled through the upload times the upstream publishes: 1.0 is old,
    2.0 is published (the tree rewritten) just before the first install, and the quarantine
    lasts twenty seconds from then."""
    srv = server
    dist = tmp_path / "qdist"
    dist.mkdir()
    old = build_wheel(dist, "fresh", "1.0")
    new = build_wheel(dist, "fresh", "2.0")
    root = tmp_path / "quarantine"
    window = timedelta(seconds=20)

    def publish(now: datetime) -> None:
        write_simple_tree(
            root,
            [old, new],
            upload_times={
                old.name: (now - timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                new.name: now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            },
        )

    publish(datetime.now(UTC))
    up = Upstream(root)
    try:
        srv.cli("index", "create", "up", "--mirror", up.simple_url)
        policy = tmp_path / "age.toml"
        policy.write_text(f'[[rules]]\nkind = "age"\nmin_days = {window.total_seconds() / 86400}\n')
        srv.cli("policy", "set", "up", "--file", str(policy))
        token = srv.token("up")
        url = srv.index_url("up", token)
        now = datetime.now(UTC)
        publish(now)  # Stockade has not fetched the page yet: it sees this upload time
        pip("install", "--index-url", url, "--target", str(tmp_path / "a"), "fresh")
        assert installed(tmp_path / "a") == {"fresh-1.0.dist-info"}
        why = srv.cli("policy", "explain", "up", "fresh", "2.0").stdout
        assert "quarantine is" in why
        left = (now + window + timedelta(seconds=0.5) - datetime.now(UTC)).total_seconds()
        assert left > 0, "the test machine is too slow for this quarantine window"
        time.sleep(left)
        # no action needed: the cached page is re-decided when the quarantine ends
        pip("install", "--index-url", url, "--target", str(tmp_path / "b"), "fresh")
        assert installed(tmp_path / "b") == {"fresh-2.0.dist-info"}
    finally:
        up.close()
