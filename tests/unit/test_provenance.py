"""PEP 740 provenance: real attestations (from the public test assets of pypi-attestations)
verified offline for the right digest, refused for any other digest, name or identity; the
policy rule kinds over provenance facts; rendering of the provenance URL on simple pages.

The fixtures in tests/fixtures/pep740 are PyPI's provenance of ``sigstore-3.6.1.tar.gz``
(GitHub Trusted Publisher sigstore/sigstore-python, workflow release.yml) and of
``gcb_attestation_test-0.0.0.tar.gz`` (Google Cloud Build service account); the distributions
themselves are not needed: verification binds the filename and the sha256 digest.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from stockade.core.policy import FileFacts, evaluate, parse_policy
from stockade.core.policy.model import PolicyError
from stockade.core.provenance import MEDIA_TYPE, Publisher, provenance_href
from stockade.core.simple import FileEntry, ProjectPage, parse_json_page, render_html, render_json
from stockade.services.provenance import (
    ProvenanceError,
    verify_attestations,
    verify_provenance,
)
from stockade.types import NormalizedName

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "pep740"
SIGSTORE = "sigstore-3.6.1.tar.gz"
SIGSTORE_SHA = "ee60fdc9236fd6709271ad53b44027461360c3fde155d2af15482e4c451ff865"
GCB = "gcb_attestation_test-0.0.0.tar.gz"
GCB_SHA = "461317362419124b6012e855423a9078d6de8aed3e74fa78cc74d669b23dc6cf"
NOW = datetime(2026, 6, 1, tzinfo=UTC)


def document(filename: str) -> bytes:
    return (FIXTURES / f"{filename}.provenance").read_bytes()


def attestations(filename: str) -> list[dict[str, Any]]:
    doc = json.loads(document(filename))
    out: list[dict[str, Any]] = doc["attestation_bundles"][0]["attestations"]
    return out


def edited(filename: str, change: Any) -> bytes:
    doc = json.loads(document(filename))
    change(doc)
    return json.dumps(doc).encode()


# -- verification ------------------------------------------------------------------------------


def test_real_provenance_verifies_offline_for_its_digest() -> None:
    got = verify_provenance(document(SIGSTORE), SIGSTORE, SIGSTORE_SHA)
    assert got.publishers == (
        Publisher("GitHub", "sigstore/sigstore-python", "release.yml", None, None),
    )
    assert got.publishers[0].label == "GitHub:sigstore/sigstore-python"
    assert got.document == document(SIGSTORE)  # served as received, once verified
    google = verify_provenance(document(GCB), GCB, GCB_SHA.upper())  # digest case does not matter
    assert google.publishers[0].kind == "Google"
    assert google.publishers[0].label == (
        "Google:919436158236-compute@developer.gserviceaccount.com"
    )


@pytest.mark.parametrize(
    ("filename", "sha", "words"),
    [
        (SIGSTORE, "0" * 64, "does not match distribution digest"),
        (SIGSTORE, GCB_SHA, "does not match distribution digest"),
        ("sigstore-3.6.2.tar.gz", SIGSTORE_SHA, "does not match distribution name"),
        ("acme-1.0-py3-none-any.whl", SIGSTORE_SHA, "does not match distribution name"),
        ("not a distribution", SIGSTORE_SHA, "not a distribution filename"),
    ],
)
def test_another_digest_or_file_is_refused(filename: str, sha: str, words: str) -> None:
    with pytest.raises(ProvenanceError, match=words):
        verify_provenance(document(SIGSTORE), filename, sha)


def _publisher(repo: str | None = None, workflow: str | None = None) -> Any:
    def change(doc: dict[str, Any]) -> None:
        pub = doc["attestation_bundles"][0]["publisher"]
        if repo:
            pub["repository"] = repo
        if workflow:
            pub["workflow"] = workflow

    return change


def _signature(doc: dict[str, Any]) -> None:
    env = doc["attestation_bundles"][0]["attestations"][0]["envelope"]
    sig = bytearray(base64.b64decode(env["signature"]))
    sig[-1] ^= 1
    env["signature"] = base64.b64encode(bytes(sig)).decode()


def _statement(doc: dict[str, Any]) -> None:
    """A statement naming another digest: the signature no longer covers it."""
    env = doc["attestation_bundles"][0]["attestations"][0]["envelope"]
    stmt = json.loads(base64.b64decode(env["statement"]))
    stmt["subject"][0]["digest"]["sha256"] = "1" * 64
    env["statement"] = base64.b64encode(json.dumps(stmt).encode()).decode()


def _empty_bundle(doc: dict[str, Any]) -> None:
    doc["attestation_bundles"][0]["attestations"] = []


def _no_bundles(doc: dict[str, Any]) -> None:
    doc["attestation_bundles"] = []


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (_publisher(repo="mallory/sigstore-python"), "does not verify"),  # another identity
        (_publisher(workflow="evil.yml"), "does not match expected Trusted Publisher"),
        (_signature, "does not verify"),
        (_statement, "does not verify"),
        (_empty_bundle, "has no attestations"),
        (_no_bundles, "no attestation bundles"),
    ],
    ids=["repository", "workflow", "signature", "statement", "empty-bundle", "no-bundles"],
)
def test_tampered_or_mismatched_provenance_is_refused(change: Any, words: str) -> None:
    with pytest.raises(ProvenanceError, match=words):
        verify_provenance(edited(SIGSTORE, change), SIGSTORE, SIGSTORE_SHA)


def test_not_a_provenance_object_is_refused() -> None:
    for data in (b"not json", b"{}", b'{"version": 1, "attestation_bundles": [{}]}'):
        with pytest.raises(ProvenanceError, match="not a PEP 740 provenance object"):
            verify_provenance(data, SIGSTORE, SIGSTORE_SHA)


def test_upload_attestations_take_the_publisher_from_the_certificate() -> None:
    got = verify_attestations(json.dumps(attestations(SIGSTORE)), SIGSTORE, SIGSTORE_SHA)
    assert got.publishers == (Publisher("GitHub", "sigstore/sigstore-python", "release.yml"),)
    # the stored provenance object is one bundle per publisher, and verifies by itself
    again = verify_provenance(got.document, SIGSTORE, SIGSTORE_SHA)
    assert again.publishers == got.publishers
    assert json.loads(got.document)["attestation_bundles"][0]["publisher"]["kind"] == "GitHub"
    google = verify_attestations(json.dumps(attestations(GCB)), GCB, GCB_SHA)
    assert google.publishers[0].email == "919436158236-compute@developer.gserviceaccount.com"


@pytest.mark.parametrize(
    ("data", "filename", "sha", "words"),
    [
        (None, SIGSTORE, "0" * 64, "does not match distribution digest"),
        (None, "sigstore-3.6.1-py3-none-any.whl", SIGSTORE_SHA, "distribution name"),
        ("[]", SIGSTORE, SIGSTORE_SHA, "non-empty JSON array"),
        ("{}", SIGSTORE, SIGSTORE_SHA, "non-empty JSON array"),
        ("nope", SIGSTORE, SIGSTORE_SHA, "not JSON"),
        ('[{"version": 1}]', SIGSTORE, SIGSTORE_SHA, "attestation 1 is malformed"),
    ],
)
def test_bad_upload_attestations_are_refused(
    data: str | None, filename: str, sha: str, words: str
) -> None:
    raw = data if data is not None else json.dumps(attestations(SIGSTORE))
    with pytest.raises(ProvenanceError, match=words):
        verify_attestations(raw, filename, sha)


# -- policy rules ------------------------------------------------------------------------------

SIGSTORE_PUB = Publisher("GitHub", "sigstore/sigstore-python", "release.yml")


def facts(
    project: str = "sigstore",
    provenance: bool | None = True,
    publishers: tuple[Publisher, ...] = (SIGSTORE_PUB,),
) -> FileFacts:
    return FileFacts(
        project=project,
        version="3.6.1",
        filename=f"{project}-3.6.1.tar.gz",
        provenance=provenance,
        publishers=publishers if provenance else (),
    )


def test_require_provenance_blocks_files_without_verified_provenance() -> None:
    policy = parse_policy('[[rules]]\nkind = "require_provenance"\nprojects = ["sig*", "acme"]\n')
    assert policy.needs_provenance
    assert evaluate(policy, facts(), NOW).allowed
    d = evaluate(policy, facts(provenance=False), NOW)
    assert not d.allowed
    assert d.blocks[0].line() == (
        "rule 1 (require_provenance): sigstore-3.6.1.tar.gz has no verified PEP 740 provenance "
        "(attestations)"
    )
    pending = evaluate(policy, facts(provenance=None), NOW)
    assert "not verified yet" in pending.blocks[0].message
    assert evaluate(policy, facts("other", provenance=False), NOW).allowed  # not named
    everything = parse_policy('[[rules]]\nkind = "require_provenance"\n')
    assert not evaluate(everything, facts("other", provenance=False), NOW).allowed


def test_publisher_rule_names_the_expected_and_the_actual_publisher() -> None:
    ok = parse_policy(
        '[[rules]]\nkind = "publisher"\nproject = "sigstore"\n'
        'repository = "Sigstore/Sigstore-Python"\nworkflow = "release.yml"\n'
    )
    assert ok.needs_provenance
    assert evaluate(ok, facts(), NOW).allowed
    assert evaluate(ok, facts("other", provenance=False), NOW).allowed  # another project
    other = parse_policy(
        '[[rules]]\nkind = "publisher"\nname = "sigstore"\nrepository = "pypa/sigstore"\n'
        'publisher = "GitHub"\n'
    )
    d = evaluate(other, facts(), NOW)
    assert d.blocks[0].line() == (
        "rule 1 (publisher): sigstore must be published by GitHub pypa/sigstore; "
        "sigstore-3.6.1.tar.gz was published by GitHub:sigstore/sigstore-python (release.yml)"
    )
    d = evaluate(other, facts(provenance=False), NOW)
    assert "has no verified PEP 740 provenance" in d.blocks[0].message
    wrong_workflow = parse_policy(
        '[[rules]]\nkind = "publisher"\nproject = "sigstore"\n'
        'repository = "sigstore/sigstore-python"\nworkflow = "other.yml"\nmode = "warn"\n'
    )
    d = evaluate(wrong_workflow, facts(), NOW)
    assert d.allowed and d.warnings[0].kind == "publisher"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('kind = "publisher"\nrepository = "a/b"', "needs project"),
        ('kind = "publisher"\nproject = "x"', "needs repository"),
        ('kind = "publisher"\nproject = "x"\nrepository = "a/b"\npublisher = "Gitea"', "Gitea"),
        ('kind = "publisher"\nproject = "x"\nrepository = "a/b"\nowner = "y"', "unknown option"),
        ('kind = "require_provenance"\nprojects = []', "at least one"),
        ('kind = "require_provenance"\nprojects = "x"', "must be a list"),
    ],
)
def test_bad_provenance_rules_name_the_problem(text: str, words: str) -> None:
    with pytest.raises(PolicyError, match=words):
        parse_policy("[[rules]]\n" + text + "\n")


def test_custom_rules_read_provenance_and_publisher() -> None:
    policy = parse_policy(
        '[[rules]]\nkind = "custom"\nname = "sigstore-from-home"\n'
        'block_if = \'name == "sigstore" && publisher != "GitHub:sigstore/sigstore-python"\'\n'
    )
    assert policy.needs_provenance
    assert evaluate(policy, facts(), NOW).allowed
    assert not evaluate(policy, facts(provenance=False), NOW).allowed
    impostor = (Publisher("GitHub", "mallory/sigstore-python", "release.yml"),)
    assert not evaluate(policy, facts(publishers=impostor), NOW).allowed


# -- rendering ---------------------------------------------------------------------------------


def test_pages_point_at_stockade_provenance_url() -> None:
    page = ProjectPage(
        NormalizedName("sigstore"),
        (
            FileEntry(SIGSTORE, SIGSTORE_SHA, provenance="https://up.example/integrity/x"),
            FileEntry("sigstore-3.6.0.tar.gz", "ab" * 32),
        ),
    )
    doc = orjson.loads(render_json(page))
    href = provenance_href("sigstore", SIGSTORE)
    assert href == "../../integrity/sigstore/sigstore-3.6.1.tar.gz/provenance"
    assert doc["files"][0]["provenance"] == href
    assert "provenance" not in doc["files"][1]
    html = render_html(page).decode()
    assert f'data-provenance="{href}"' in html
    assert html.count("data-provenance") == 1
    # what Stockade renders, a client (or a Stockade mirror of Stockade) reads back
    parsed = parse_json_page(render_json(page), "https://s.example/simple/sigstore/", page.name)
    assert parsed.files[0].provenance == (
        "https://s.example/integrity/sigstore/sigstore-3.6.1.tar.gz/provenance"
    )
    assert MEDIA_TYPE == "application/vnd.pypi.integrity.v1+json"
