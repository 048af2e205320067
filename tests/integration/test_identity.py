"""Author impersonation through a mirror: owners recorded, changes found, and a policy blocking
the suspicious versions with the rule named; publishers only from verified PEP 740 provenance.

The upstream is the test's own: simple pages whose files carry ``provenance`` URLs, the
provenance documents, and a PyPI-style JSON API answer per project.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.builders import build_wheel, write_simple_tree
from tests.conftest import Server
from tests.upstream import Upstream

NOW = datetime.now(UTC)


def iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def provenance(repository: str) -> dict[str, Any]:
    return {
        "version": 1,
        "attestation_bundles": [
            {
                "publisher": {
                    "kind": "GitHub",
                    "repository": repository,
                    "workflow": "release.yml",
                    "environment": "pypi",
                },
                "attestations": [],
            }
        ],
    }


def json_api(
    name: str, owners: list[str], home: str, uploads: dict[str, datetime]
) -> dict[str, Any]:
    return {
        "info": {
            "name": name,
            "author_email": f"Team <team@{name}.example>",
            "home_page": home,
            "project_urls": {"Source": home},
        },
        "ownership": {
            "organization": None,
            "roles": [{"role": "Owner", "user": u} for u in owners],
        },
        "releases": {v: [{"upload_time_iso_8601": iso(t)}] for v, t in uploads.items()},
    }


@pytest.fixture
def identity_upstream(tmp_path: Path) -> Iterator[Upstream]:
    dist = tmp_path / "idist"
    dist.mkdir()
    acme_times = {
        "1.0": NOW - timedelta(days=400),
        "1.1": NOW - timedelta(days=200),
        "1.2": NOW - timedelta(days=20),  # published from another repository
    }
    squat_times = {"0.1": NOW - timedelta(days=15)}
    acme = {v: build_wheel(dist, "acme-tool", v) for v in acme_times}
    squat = {v: build_wheel(dist, "fastreq-helpers", v) for v in squat_times}
    files = [*acme.values(), *squat.values()]
    uploads = {acme[v].name: iso(t) for v, t in acme_times.items()}
    uploads |= {squat[v].name: iso(t) for v, t in squat_times.items()}
    root = tmp_path / "identity"
    write_simple_tree(root, files, with_metadata={f.name for f in files}, upload_times=uploads)
    # PEP 740: every acme file names its provenance; 1.2's publisher is another repository
    page = root / "simple" / "acme-tool" / "index.json"
    doc = json.loads(page.read_text())
    for entry in doc["files"]:
        version = entry["filename"].split("-")[1]
        where = f"integrity/acme-tool/{version}/{entry['filename']}/provenance"
        repo = "acme/acme-tool" if version != "1.2" else "mallory/acme-tool"
        (root / where).parent.mkdir(parents=True, exist_ok=True)
        (root / where).write_text(json.dumps(provenance(repo)))
        entry["provenance"] = f"/{where}"
    page.write_text(json.dumps(doc))
    for name, owners, home, times in (
        ("acme-tool", ["alice"], "https://github.com/acme/acme-tool", acme_times),
        # a new, unknown project pointing at a popular project's repository
        ("fastreq-helpers", ["mallory"], "https://github.com/psf/requests", squat_times),
    ):
        api = root / "pypi" / name / "json"
        api.parent.mkdir(parents=True, exist_ok=True)
        api.write_text(json.dumps(json_api(name, owners, home, times)))
    up = Upstream(root)
    try:
        yield up
    finally:
        up.close()


def report(srv: Server, project: str, *extra: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(
        srv.cli("threats", "identity", "up", project, "--json", *extra).stdout
    )
    return out


def test_unsigned_provenance_names_no_publisher_and_its_files_are_refused(
    server: Server, identity_upstream: Upstream, tmp_path: Path
) -> None:
    """Publishers come from verified PEP 740 provenance only: these documents name
    publishers but carry no attestations, so no publisher is recorded (no publisher-changed
    finding from a claim anyone can write) and their files are refused with the reason. The
    publisher-change finding from verified provenance is in test_provenance.py."""
    srv = server
    srv.cli("index", "create", "up", "--mirror", identity_upstream.simple_url)
    policy = tmp_path / "p.toml"
    policy.write_text('[[rules]]\nkind = "threats"\nblock = ["malicious", "suspicious"]\n')
    srv.cli("policy", "set", "up", "--file", str(policy))
    token = srv.token("up")
    with srv.http(token) as c:
        assert c.get("/pypi/up/simple/acme-tool/").status_code == 200
    rep = report(srv, "acme-tool", "--refresh")
    assert {v["version"]: (v["publisher"], v["provenance"]) for v in rep["versions"]} == {
        "1.0": (None, False),
        "1.1": (None, False),
        "1.2": (None, False),
    }
    assert rep["owners"][0]["users"] == ["alice"]
    assert rep["findings"] == []
    with srv.http(token) as c:
        r = c.get("/pypi/up/files/acme-tool/acme_tool-1.1-py3-none-any.whl")
        assert r.status_code == 403, r.text
        assert "failed verification" in r.text
        assert "has no attestations" in r.text
    found = json.loads(srv.cli("audit", "list", "--action", "provenance.rejected", "--json").stdout)
    assert found and {e["project"] for e in found} == {"acme-tool"}


def test_new_project_claiming_a_popular_homepage_is_flagged(
    server: Server, identity_upstream: Upstream, tmp_path: Path
) -> None:
    srv = server
    srv.cli("index", "create", "up", "--mirror", identity_upstream.simple_url)
    rep = report(srv, "fastreq-helpers", "--refresh")
    assert [f["rule"] for f in rep["findings"]] == ["impersonation:homepage"]
    assert rep["findings"][0]["version"] is None  # every version
    assert "popular project requests" in rep["findings"][0]["message"]
    # without a threats rule nothing is blocked; with one, every version is
    token = srv.token("up")
    with srv.http(token) as c:
        assert (
            c.get("/pypi/up/files/fastreq-helpers/fastreq_helpers-0.1-py3-none-any.whl").status_code
            == 200
        )
    policy = tmp_path / "p.toml"
    policy.write_text('[[rules]]\nkind = "threats"\nblock = ["suspicious"]\n')
    srv.cli("policy", "set", "up", "--file", str(policy))
    with srv.http(token) as c:
        r = c.get("/pypi/up/files/fastreq-helpers/fastreq_helpers-0.1-py3-none-any.whl")
        assert r.status_code == 403
        assert "impersonation:homepage" in r.text
    # the long-standing project with one repository throughout is not flagged for its homepage
    acme = report(srv, "acme-tool", "--refresh")
    assert all(f["rule"] != "impersonation:homepage" for f in acme["findings"])


def test_identity_of_a_non_mirror_index_is_refused_clearly(server: Server) -> None:
    srv = server
    srv.cli("index", "create", "priv", "--private")
    res = srv.cli("threats", "identity", "priv", "x", check=False)
    assert res.returncode != 0
    assert "mirror" in (res.stderr + res.stdout)
