"""PEP 740 provenance at the door, through real servers (SQLite and PostgreSQL).

The test upstream serves pages whose files carry ``provenance`` URLs:

* ``sigstore`` and ``gcb-attestation-test`` list the real distributions (by their real sha256)
  with PyPI's real provenance (tests/fixtures/pep740): verified, stored and served by Stockade.
  Their bytes are not available here, so these files are never downloaded: verification binds
  the filename and the digest the page publishes, which is all the mirror checks before serving;
* ``forged`` is a locally built wheel whose page points at sigstore's provenance: it cannot
  verify (another file's attestation), so the file is refused with the reason;
* ``plainpkg`` offers no provenance and is served as before, unless a policy requires it.

Private uploads: attestations that do not verify for the uploaded bytes are a 400 and nothing is
stored. The success path of an upload needs a file whose digest a real attestation binds, which
cannot be built here: it is exercised in-process (``test_private_provenance_…``) from the step
after the digest check (the stored provenance, its page, its publisher, a publisher change).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from stockade.core.simple import JSON_V1, render_json
from stockade.db.engine import upgrade
from stockade.services import repo
from stockade.services.provenance import (
    STORED,
    ProvenanceService,
    verify_attestations,
    verify_provenance,
)
from stockade.settings import Settings
from stockade.types import IndexKind, canonicalize_name
from tests.builders import build_wheel, sha256_file, write_simple_tree
from tests.conftest import Server
from tests.integration.test_upload_validation import blobs, post
from tests.upstream import Upstream

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "pep740"
SIGSTORE = "sigstore-3.6.1.tar.gz"
SIGSTORE_SHA = "ee60fdc9236fd6709271ad53b44027461360c3fde155d2af15482e4c451ff865"
GCB = "gcb_attestation_test-0.0.0.tar.gz"
GCB_SHA = "461317362419124b6012e855423a9078d6de8aed3e74fa78cc74d669b23dc6cf"
MEDIA = "application/vnd.pypi.integrity.v1+json"
JSON_ACCEPT = {"Accept": JSON_V1}


def document(filename: str) -> bytes:
    return (FIXTURES / f"{filename}.provenance").read_bytes()


def attestations(filename: str) -> str:
    return json.dumps(json.loads(document(filename))["attestation_bundles"][0]["attestations"])


def audit(srv: Server, action: str) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 5
    while True:
        events: list[dict[str, Any]] = json.loads(
            srv.cli("audit", "list", "--action", action, "--json").stdout
        )
        if events or time.monotonic() > deadline:
            return events
        time.sleep(0.3)


def _real_page(root: Path, project: str, filename: str, sha: str, version: str) -> None:
    where = f"integrity/{project}/{version}/{filename}/provenance"
    (root / where).parent.mkdir(parents=True, exist_ok=True)
    (root / where).write_bytes(document(filename))
    page = root / "simple" / project
    page.mkdir(parents=True, exist_ok=True)
    entry = {
        "filename": filename,
        "url": f"../../files/{filename}",
        "hashes": {"sha256": sha},
        "provenance": f"/{where}",
    }
    doc = {"meta": {"api-version": "1.1"}, "name": project, "versions": [version], "files": [entry]}
    (page / "index.json").write_text(json.dumps(doc))
    (page / "index.html").write_text(
        f'<a href="../../files/{filename}#sha256={sha}" data-provenance="/{where}">{filename}</a>'
    )


@pytest.fixture
def pep740_upstream(tmp_path: Path) -> Iterator[tuple[Upstream, dict[str, Path]]]:
    dist = tmp_path / "dist"
    dist.mkdir()
    built = {
        "plainpkg": build_wheel(dist, "plainpkg", "1.0"),
        "forged": build_wheel(dist, "forged", "1.0"),
    }
    root = tmp_path / "pep740"
    write_simple_tree(root, list(built.values()), with_metadata={p.name for p in built.values()})
    # forged: its page points at a real provenance, signed for another file
    page = root / "simple" / "forged" / "index.json"
    doc = json.loads(page.read_text())
    where = f"integrity/forged/1.0/{built['forged'].name}/provenance"
    (root / where).parent.mkdir(parents=True, exist_ok=True)
    (root / where).write_bytes(document(SIGSTORE))
    doc["files"][0]["provenance"] = f"/{where}"
    page.write_text(json.dumps(doc))
    _real_page(root, "sigstore", SIGSTORE, SIGSTORE_SHA, "3.6.1")
    _real_page(root, "gcb-attestation-test", GCB, GCB_SHA, "0.0.0")
    up = Upstream(root)
    try:
        yield up, built
    finally:
        up.close()


def test_mirror_serves_verified_provenance_and_refuses_a_forged_one(
    server: Server, pep740_upstream: tuple[Upstream, dict[str, Path]]
) -> None:
    srv = server
    up, built = pep740_upstream
    srv.cli("index", "create", "up", "--mirror", up.simple_url)
    token = srv.token("up")
    href = f"../../integrity/sigstore/{SIGSTORE}/provenance"
    with srv.http(token) as c:
        # PEP 740 on both page formats
        files = c.get("/pypi/up/simple/sigstore/", headers=JSON_ACCEPT).json()["files"]
        assert files[0]["provenance"] == href
        assert files[0]["yanked"] is False
        html = c.get("/pypi/up/simple/sigstore/", headers={"Accept": "text/html"}).text
        assert f'data-provenance="{href}"' in html
        # the document, verified on first request, served as PEP 740 says
        r = c.get(f"/pypi/up/integrity/sigstore/{SIGSTORE}/provenance")
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith(MEDIA)
        assert r.json() == json.loads(document(SIGSTORE))
        assert r.json()["attestation_bundles"][0]["publisher"]["repository"] == (
            "sigstore/sigstore-python"
        )
        r = c.get(f"/pypi/up/integrity/gcb-attestation-test/{GCB}/provenance")
        assert r.status_code == 200, r.text
        assert verify_provenance(r.content, GCB, GCB_SHA).publishers[0].kind == "Google"
        # a file without provenance: served as before, no provenance advertised
        plain = built["plainpkg"]
        page = c.get("/pypi/up/simple/plainpkg/", headers=JSON_ACCEPT).json()
        assert "provenance" not in page["files"][0]
        r = c.get(f"/pypi/up/files/plainpkg/{plain.name}")
        assert r.status_code == 200
        assert r.content == plain.read_bytes()
        assert c.get(f"/pypi/up/integrity/plainpkg/{plain.name}/provenance").status_code == 404
        # a provenance that does not verify: the file is refused, with the reason, twice
        forged = built["forged"]
        for _ in range(2):
            r = c.get(f"/pypi/up/files/forged/{forged.name}")
            assert r.status_code == 403, r.text
            assert f"provenance of {forged.name} failed verification" in r.text
            assert "does not match distribution name" in r.text
        assert up.count(f"/files/{forged.name}") == 0  # refused before a byte was fetched
        assert sha256_file(forged) not in blobs(srv)
        r = c.get(f"/pypi/up/integrity/forged/{forged.name}/provenance")
        assert r.status_code == 502
        assert "failed verification" in r.text
        listed = c.get("/pypi/up/simple/forged/", headers=JSON_ACCEPT).json()["files"][0]
        assert "failed verification" in listed["yanked"]  # resolvers skip it, pins show why
        rows = c.get("/api/v1/indexes/up/provenance/forged").json()
        assert [(r["filename"], r["status"]) for r in rows] == [(forged.name, "failed")]
        assert "does not match distribution name" in rows[0]["reason"]
    rejected = audit(srv, "provenance.rejected")
    assert [(e["project"], e["filename"]) for e in rejected] == [("forged", forged.name)]
    assert "does not match distribution name" in rejected[0]["detail"]["reason"]


def test_provenance_policy_rules_block_with_the_rule_named(
    sqlite_server: Server, pep740_upstream: tuple[Upstream, dict[str, Path]], tmp_path: Path
) -> None:
    srv = sqlite_server
    up, built = pep740_upstream
    srv.cli("index", "create", "up", "--mirror", up.simple_url)
    policy = tmp_path / "p.toml"
    policy.write_text(
        "[[rules]]\n"
        'kind = "require_provenance"\n'
        'projects = ["plainpkg", "sigstore", "gcb-*"]\n'
        "\n[[rules]]\n"
        'kind = "publisher"\n'
        'project = "sigstore"\n'
        'repository = "pypa/sigstore-python"\n'
    )
    srv.cli("policy", "set", "up", "--file", str(policy))
    token = srv.token("up")
    plain = built["plainpkg"]
    with srv.http(token) as c:
        r = c.get(f"/pypi/up/files/plainpkg/{plain.name}")
        assert r.status_code == 403
        assert "rule 1 (require_provenance)" in r.text
        assert "has no verified PEP 740 provenance" in r.text
        listed = c.get("/pypi/up/simple/sigstore/", headers=JSON_ACCEPT).json()["files"][0]
        assert listed["yanked"] == (
            "blocked by policy: rule 2 (publisher): sigstore must be published by a Trusted "
            "Publisher pypa/sigstore-python; sigstore-3.6.1.tar.gz was published by "
            "GitHub:sigstore/sigstore-python (release.yml)"
        )
        gcb = c.get("/pypi/up/simple/gcb-attestation-test/", headers=JSON_ACCEPT).json()
        assert gcb["files"][0]["yanked"] is False  # verified while the policy decided
    text = policy.read_text()
    policy.write_text(text.replace("pypa/sigstore-python", "sigstore/sigstore-python"))
    srv.cli("policy", "set", "up", "--file", str(policy))
    explained = json.loads(srv.cli("policy", "explain", "up", "sigstore", "--json").stdout)
    assert explained[0]["allowed"] is True
    rows = json.loads(srv.cli("threats", "provenance", "up", "sigstore", "--json").stdout)
    assert [(r["filename"], r["status"], r["publishers"][0]["repository"]) for r in rows] == [
        (SIGSTORE, "verified", "sigstore/sigstore-python")
    ]
    shown = srv.cli("threats", "provenance", "up", "plainpkg").stdout
    assert plain.name in shown and "none" in shown


def test_upload_with_attestations_that_do_not_verify_is_refused(
    server: Server, tmp_path: Path
) -> None:
    srv = server
    srv.cli("index", "create", "priv", "--private")
    token = srv.token("priv", "write")
    wheel = build_wheel(tmp_path, "alpha", "1.0")
    data = wheel.read_bytes()
    with httpx.Client(base_url=srv.url, auth=("__token__", token), timeout=60) as c:
        # a real attestation, of another file: the digest and the name do not match
        r = post(c, "priv", wheel.name, data, attestations=attestations(SIGSTORE))
        assert r.status_code == 400, r.text
        assert f"attestations of {wheel.name} refused" in r.text
        assert "does not match distribution name" in r.text
        r = post(c, "priv", wheel.name, data, attestations="[not json")
        assert r.status_code == 400
        assert "not JSON" in r.text
        assert c.get("/pypi/priv/simple/alpha/").status_code == 404  # nothing stored
        assert sha256_file(wheel) not in blobs(srv)
        # without attestations, as before; no provenance to advertise
        assert post(c, "priv", wheel.name, data).status_code == 200
        page = c.get("/pypi/priv/simple/alpha/", headers=JSON_ACCEPT).json()
        assert "provenance" not in page["files"][0]
        r = c.get(f"/pypi/priv/integrity/alpha/{wheel.name}/provenance")
        assert r.status_code == 404


def test_private_provenance_is_stored_served_and_publisher_changes_found(
    tmp_path: Path, db_url: str
) -> None:
    """From the step after an upload's digest check: the verified attestations of the real
    ``sigstore-3.6.1.tar.gz`` stored with its file row, on its page, as a document, as the
    version's publisher (a later version from another repository is a threat finding), in
    policy decisions, and gone with the file."""
    from stockade.services.runtime import Runtime

    upgrade(db_url)

    async def scenario() -> None:
        rt = Runtime(Settings.load(home=tmp_path / "home", database_url=db_url))
        try:
            priv = await rt.indexes.create("internal", IndexKind.PRIVATE)
            verified = verify_attestations(attestations(SIGSTORE), SIGSTORE, SIGSTORE_SHA)
            async with rt.sessions() as s, s.begin():
                await repo.insert_file(
                    s,
                    index_id=priv.id,
                    project="sigstore",
                    display_name="sigstore",
                    version="3.6.1",
                    filename=SIGSTORE,
                    packagetype="sdist",
                    sha256=SIGSTORE_SHA,
                    size=1,
                    requires_python=None,
                    metadata_sha256=None,
                    yanked=False,
                    upload_time=repo.utcnow(),
                    uploaded_by=None,
                )
                await ProvenanceService.record_upload(
                    s, "internal", "sigstore", SIGSTORE, SIGSTORE_SHA, verified
                )
            name = canonicalize_name("sigstore")
            served = await rt.pages.project_page(priv, name)
            assert served.page.files[0].provenance == STORED
            rendered = json.loads(render_json(served.page))
            assert rendered["files"][0]["provenance"] == (
                f"../../integrity/sigstore/{SIGSTORE}/provenance"
            )
            doc = await rt.provenance.document("internal", SIGSTORE)
            assert doc is not None
            assert verify_provenance(doc, SIGSTORE, SIGSTORE_SHA).publishers == verified.publishers
            rec = (await rt.provenance.known("internal", "sigstore"))[SIGSTORE]
            assert rec.verified and rec.publisher is not None
            assert (rec.publisher.kind, rec.publisher.repository, rec.publisher.workflow) == (
                "GitHub",
                "sigstore/sigstore-python",
                "release.yml",
            )
            # the publisher of each version; another repository later is a finding
            label = verified.publishers[0].label
            assert (
                await rt.identity.record_version("internal", "sigstore", "3.6.1", label, True, None)
                == []
            )
            new = await rt.identity.record_version(
                "internal", "sigstore", "3.7.0", "GitHub:mallory/sigstore-python", True, None
            )
            assert [(f.rule, f.version) for f in new] == [
                ("impersonation:publisher-changed", "3.7.0")
            ]
            # policies decide on the stored provenance
            await rt.policies.set(
                "internal",
                '[[rules]]\nkind = "publisher"\nproject = "sigstore"\n'
                'repository = "sigstore/sigstore-python"\n'
                '[[rules]]\nkind = "require_provenance"\n',
                None,
            )
            rt.pages.clear()
            decided = await rt.pages.project_page(priv, name)
            assert decided.decisions[SIGSTORE].allowed
            # deleting the file deletes its provenance
            await rt.uploads.delete(priv, "sigstore", "3.6.1")
            assert await rt.provenance.document("internal", SIGSTORE) is None
            await rt.audit.flush()
            async with rt.sessions() as s:
                events = await repo.list_audit(s, limit=100)
            assert any(
                e["action"] == "threat.finding"
                and e["detail"]["rule"] == "impersonation:publisher-changed"
                for e in events
            )
        finally:
            await rt.close()

    asyncio.run(scenario())
