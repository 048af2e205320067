"""SBOMs from lock files, environments and distributions: every output is valid by the official
validators (spdx-tools, cyclonedx-python-lib's strict JSON validator), round-trips, and is
byte-identical for the same input with --reproducible."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from spdx_tools.spdx.parser.parse_anything import parse_file
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

from stockade.core.archives import validate_distribution
from stockade.core.lockfiles import read_inventory
from stockade.core.sbom.cyclonedx import to_cyclonedx
from stockade.core.sbom.model import Bom, Vuln, from_distribution, from_inventory
from stockade.core.sbom.openvex import statements_from, to_openvex
from stockade.core.sbom.read import read_sbom
from stockade.core.sbom.spdx import Stamp, spdx_document, to_spdx_json, to_spdx_tagvalue
from stockade.errors import InvalidRequest
from tests.builders import build_sdist, build_wheel, sha256_file

LOCKS = Path(__file__).resolve().parent / "lockfiles"
ALL_LOCKS = sorted(p.name for p in LOCKS.iterdir())


def curated(bom: Bom) -> Bom:
    """The BOM with a feed finding and a curated (not_affected) one on its first component."""
    ref = bom.components[0].ref
    return bom.with_vulns(
        [
            Vuln(id="TEST-1", ref=ref, aliases=("CVE-2024-0001",), severity="high", score=7.5),
            Vuln(
                id="TEST-2",
                ref=ref,
                status="not_affected",
                decided_by="curation",
                justification="vulnerable_code_not_in_execute_path",
                detail="never called",
                author="sec-team",
                decided_at="2024-01-02T03:04:05+00:00",
                fixed_versions=("9.9",),
            ),
        ]
    )


def check_all_formats(bom: Bom, tmp_path: Path) -> None:
    stamp = Stamp.make(bom, reproducible=True)
    messages = validate_full_spdx_document(spdx_document(bom, stamp, with_vulns=True))
    assert [m.validation_message for m in messages] == []
    spdx_path = tmp_path / "out.spdx.json"
    spdx_path.write_text(to_spdx_json(bom, stamp, with_vulns=True))
    parsed = parse_file(str(spdx_path))  # round trip through spdx-tools' parser
    assert validate_full_spdx_document(parsed) == []
    assert {(p.name, p.version) for p in parsed.packages} == {
        (c.name, c.version) for c in bom.components
    }
    tv_path = tmp_path / "out.spdx"
    tv_path.write_text(to_spdx_tagvalue(bom, stamp, with_vulns=True))
    parsed_tv = parse_file(str(tv_path))
    assert validate_full_spdx_document(parsed_tv) == []
    assert len(parsed_tv.packages) == len(bom.components)
    cdx = to_cyclonedx(bom, stamp, with_vulns=True)
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(cdx) is None
    assert {(c["name"], c.get("version")) for c in json.loads(cdx).get("components", [])} == {
        (c.name, c.version) for c in bom.components
    }


@pytest.mark.parametrize("name", ALL_LOCKS)
def test_lock_files_give_valid_sboms(name: str, tmp_path: Path) -> None:
    inv = read_inventory(LOCKS / name, details=True)
    bom = curated(from_inventory(inv, name))
    assert {(c.name, c.version) for c in bom.components} >= {(p.name, p.version) for p in inv.pins}
    check_all_formats(bom, tmp_path)


def test_uv_lock_details_dependencies_and_hashes() -> None:
    bom = from_inventory(read_inventory(LOCKS / "uv.lock", details=True), "uv.lock")
    by_name = {c.name: c for c in bom.components}
    requests = by_name["requests"]
    assert requests.purl == f"pkg:pypi/requests@{requests.version}"
    assert by_name["certifi"].ref in requests.depends_on
    assert all(c.hashes for c in bom.components if c.version)
    assert requests.download_url and requests.download_url.startswith("https://")


def test_conda_purls_carry_channel_and_subdir() -> None:
    bom = from_inventory(read_inventory(LOCKS / "conda-explicit.txt", details=True), "x")
    purls = [c.purl for c in bom.components]
    assert any(
        p.startswith("pkg:conda/") and "channel=conda-forge" in p and "subdir=" in p for p in purls
    )


def test_cyclonedx_vex_and_openvex_carry_the_curation(tmp_path: Path) -> None:
    bom = curated(from_inventory(read_inventory(LOCKS / "requirements.txt", details=True), "r"))
    stamp = Stamp.make(bom, reproducible=True)
    cdx = json.loads(to_cyclonedx(bom, stamp, with_vulns=True))
    vulns = {v["id"]: v for v in cdx["vulnerabilities"]}
    assert "analysis" not in vulns["TEST-1"]  # a feed verdict: nobody analysed it
    analysis = vulns["TEST-2"]["analysis"]
    assert (analysis["state"], analysis["justification"]) == ("not_affected", "code_not_reachable")
    assert "vulnerable_code_not_in_execute_path" in analysis["detail"]
    assert vulns["TEST-1"]["ratings"][0]["severity"] == "high"
    vex = json.loads(
        to_openvex(statements_from(bom), doc_id="urn:x", author="a", created=stamp.created)
    )
    st = {s["vulnerability"]["name"]: s for s in vex["statements"]}
    assert st["TEST-2"]["status"] == "not_affected"
    assert st["TEST-2"]["justification"] == "vulnerable_code_not_in_execute_path"
    assert st["TEST-1"]["status"] == "affected" and st["TEST-1"]["action_statement"]
    assert st["TEST-1"]["products"] == [{"@id": bom.components[0].purl}]


def test_reproducible_output_is_byte_identical_and_default_is_not() -> None:
    inv = read_inventory(LOCKS / "poetry.lock", details=True)
    a, b = from_inventory(inv, "poetry.lock"), from_inventory(inv, "poetry.lock")
    for write in (to_spdx_json, to_spdx_tagvalue, to_cyclonedx):
        one = write(a, Stamp.make(a, reproducible=True))
        two = write(b, Stamp.make(b, reproducible=True))
        assert one == two
        assert write(a, Stamp.make(a, reproducible=False)) != one  # serial / namespace differ
    other = from_inventory(read_inventory(LOCKS / "uv.lock", details=True), "uv.lock")
    assert Stamp.make(other, reproducible=True).serial != Stamp.make(a, reproducible=True).serial


def test_a_wheel_and_an_sdist(tmp_path: Path) -> None:
    wheel = build_wheel(
        tmp_path,
        "Some_Lib",
        "1.2.0",
        headers=["License-Expression: MIT OR Apache-2.0", "Author-email: Ann <ann@example.org>"],
        requires_dist=["alpha>=1"],
    )
    meta = validate_distribution(wheel, wheel.name)
    bom = from_distribution(meta, wheel.name, sha256_file(wheel))
    [c] = bom.components
    assert (c.name, c.version, c.license) == ("some-lib", "1.2.0", "MIT OR Apache-2.0")
    assert c.hashes == (("sha256", sha256_file(wheel)),)
    assert c.supplier == "Ann <ann@example.org>"
    assert c.ref.endswith(f"file_name={wheel.name}") and c.purl == "pkg:pypi/some-lib@1.2.0"
    check_all_formats(curated(bom), tmp_path)
    sdist = build_sdist(tmp_path, "other", "0.1")
    meta = validate_distribution(sdist, sdist.name)
    assert from_distribution(meta, sdist.name, sha256_file(sdist)).kind == "sdist"


def test_licence_text_that_is_no_spdx_expression_is_kept(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path, "odd", "1.0", license="Proprietary, ask legal@example.org")
    bom = from_distribution(validate_distribution(wheel, wheel.name), wheel.name, "0" * 64)
    [c] = bom.components
    assert c.license is None and c.license_raw == "Proprietary, ask legal@example.org"
    check_all_formats(bom, tmp_path)
    cdx = json.loads(to_cyclonedx(bom, Stamp.make(bom, reproducible=True)))
    assert cdx["components"][0]["licenses"][0]["license"]["name"].startswith("Proprietary")


@pytest.mark.parametrize(
    ("name", "text", "where"),
    [
        ("uv.lock", 'version = 1\n[[package]]\nname = "x"\nversion = "1\n', "line 4"),
        ("environment.yml", "dependencies:\n  - numpy=1\n  - [unclosed\n", "line"),
        ("pylock.toml", 'lock-version = "1.0"\npackages = 3\n', "packages"),
    ],
)
def test_malformed_lock_files_name_the_file_and_line(
    name: str, text: str, where: str, tmp_path: Path
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InvalidRequest) as info:
        read_inventory(path, details=True)
    assert name in info.value.message and where in info.value.message


def test_read_sbom_of_ours_and_foreign_documents(tmp_path: Path) -> None:
    bom = from_inventory(read_inventory(LOCKS / "conda-explicit.txt", details=True), "c")
    stamp = Stamp.make(bom, reproducible=True)
    want = {(c.ecosystem, c.name, c.version) for c in bom.components}
    for text in (to_spdx_json(bom, stamp), to_cyclonedx(bom, stamp), to_spdx_tagvalue(bom, stamp)):
        got = read_sbom(text.encode(), "x")
        assert set(got.pins) == want
    foreign = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.4",
        "components": [
            {"name": "a", "purl": "pkg:pypi/Jinja2@2.10"},
            {"name": "b", "purl": "pkg:npm/left-pad@1.0.0"},
            {"name": "c", "components": [{"name": "d", "purl": "pkg:pypi/six@1.0"}]},
        ],
    }
    got = read_sbom(json.dumps(foreign).encode(), "f.json")
    assert got.pins == (("PyPI", "jinja2", "2.10"), ("PyPI", "six", "1.0"))
    assert any("npm" in s for s in got.skipped) and any(s.startswith("c:") for s in got.skipped)
    with pytest.raises(InvalidRequest, match="neither SPDX"):
        read_sbom(b'{"hello": 1}', "x.json")
    with pytest.raises(InvalidRequest, match=r"x\.json: not JSON"):
        read_sbom(b"{", "x.json")


def test_conda_prefix_records(tmp_path: Path) -> None:
    meta = tmp_path / "conda-meta"
    meta.mkdir()
    record = {
        "name": "numpy",
        "version": "1.26.4",
        "build": "py311h64a7726_0",
        "channel": "https://conda.anaconda.org/conda-forge/linux-64",
        "subdir": "linux-64",
        "license": "BSD-3-Clause",
        "url": "https://conda.anaconda.org/conda-forge/linux-64/numpy-1.26.4-py311h64a7726_0.conda",
        "sha256": "ab" * 32,
        "depends": ["python >=3.11,<3.12.0a0", "libblas >=3.9.0"],
        "files": [],
    }
    (meta / "numpy-1.26.4-py311h64a7726_0.json").write_text(json.dumps(record))
    python = {"name": "python", "version": "3.11.8", "build": "x", "channel": "conda-forge"}
    (meta / "python-3.11.8-x.json").write_text(json.dumps(python))
    bom = from_inventory(read_inventory(tmp_path, details=True), "prefix")
    numpy = next(c for c in bom.components if c.name == "numpy")
    assert numpy.purl == (
        "pkg:conda/numpy@1.26.4?build=py311h64a7726_0&channel=conda-forge&subdir=linux-64"
        "&type=conda"
    )
    assert numpy.license == "BSD-3-Clause" and numpy.hashes == (("sha256", "ab" * 32),)
    python_ref = next(c.ref for c in bom.components if c.name == "python")
    assert numpy.depends_on == (python_ref,)  # libblas is not installed: no edge
    check_all_formats(curated(bom), tmp_path)


def test_pylock_dependencies_and_a_direct_url_install(tmp_path: Path) -> None:
    lock = tmp_path / "pylock.toml"
    lock.write_text(
        'lock-version = "1.0"\ncreated-by = "x"\n'
        '[[packages]]\nname = "a"\nversion = "1.0"\ndependencies = [{name = "b"}]\n'
        '[packages.sdist]\nurl = "https://example.org/a-1.0.tar.gz"\n'
        f'hashes = {{sha256 = "{"1" * 64}"}}\n'
        '[[packages]]\nname = "b"\nversion = "2.0"\n'
        f'wheels = [{{url = "https://example.org/b-2.0-py3-none-any.whl", '
        f'hashes = {{sha256 = "{"2" * 64}"}}}}]\n'
    )
    bom = from_inventory(read_inventory(lock, details=True), "pylock.toml")
    a, b = bom.components
    assert a.depends_on == (b.ref,) and a.download_url == "https://example.org/a-1.0.tar.gz"
    assert b.hashes == (("sha256", "2" * 64),)
    site = tmp_path / "venv" / "lib" / "python3.11" / "site-packages"
    info = site / "c-3.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: c\nVersion: 3.0\nLicense: MIT\n")
    (info / "direct_url.json").write_text(
        json.dumps(
            {
                "url": "https://example.org/c-3.0-py3-none-any.whl",
                "archive_info": {"hashes": {"sha256": "3" * 64}},
            }
        )
    )
    [c] = from_inventory(read_inventory(tmp_path / "venv", details=True), "venv").components
    assert (c.name, c.version, c.license, c.hashes) == ("c", "3.0", "MIT", (("sha256", "3" * 64),))
    assert c.download_url == "https://example.org/c-3.0-py3-none-any.whl"
