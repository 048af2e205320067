"""OSV record parsing and reading (stockade.core.vulns.osv)."""

from __future__ import annotations

import copy
import json
import zipfile
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from stockade.core.vulns.osv import (
    Advisory,
    Affected,
    Event,
    OsvError,
    Range,
    Severity,
    iter_records,
    parse_datetime,
    parse_osv,
)
from stockade.errors import InvalidRequest

V3_CRITICAL = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"  # 9.8
V4_CRITICAL = "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N"  # 9.3
V2_HIGH = "AV:N/AC:L/Au:N/C:P/I:P/A:P"  # 7.5


def record(**extra: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "schema_version": "1.6.0",
        "id": "PYSEC-2024-1",
        "modified": "2024-01-02T03:04:05Z",
        "published": "2024-01-01T02:00:00+02:00",
        "aliases": ["CVE-2024-0001", "GHSA-aaaa-bbbb-cccc"],
        "summary": "Remote code execution in Foo",
        "details": "Long text.",
        "affected": [
            {
                "package": {"ecosystem": "PyPI", "name": "Foo_Bar", "purl": "pkg:pypi/foo-bar"},
                "ranges": [
                    {"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1.5"}]},
                    {
                        "type": "GIT",
                        "repo": "https://github.com/foo/bar",
                        "events": [{"introduced": "0"}, {"fixed": "a" * 40}],
                    },
                ],
                "versions": ["1.0", "1.4"],
            }
        ],
        "references": [{"type": "WEB", "url": "https://example.org/advisory"}],
    }
    rec.update(extra)
    return rec


# ------------------------------------------------------------------------------------------------
# parse_osv: fields
# ------------------------------------------------------------------------------------------------


def test_parse_basic_record() -> None:
    adv = parse_osv(record(), "foo.json")
    assert adv.id == "PYSEC-2024-1"
    assert adv.aliases == ("CVE-2024-0001", "GHSA-aaaa-bbbb-cccc")
    assert adv.summary == "Remote code execution in Foo"
    assert adv.details == "Long text."
    assert adv.modified == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert adv.published == datetime(2024, 1, 1, 0, 0, tzinfo=UTC)  # +02:00 converted to UTC
    assert adv.published is not None and adv.published.utcoffset() is not None
    assert adv.withdrawn is None
    assert adv.references == (("WEB", "https://example.org/advisory"),)
    [aff] = adv.affected
    assert aff == Affected(
        ecosystem="PyPI",
        name="foo-bar",  # canonicalized
        ranges=(
            Range("ECOSYSTEM", (Event("introduced", "0"), Event("fixed", "1.5"))),
            Range(
                "GIT",
                (Event("introduced", "0"), Event("fixed", "a" * 40)),
                repo="https://github.com/foo/bar",
            ),
        ),
        versions=("1.0", "1.4"),
        purl="pkg:pypi/foo-bar",
    )
    assert adv.severity == ()
    assert adv.best_severity() is None
    assert adv.raw["schema_version"] == "1.6.0"  # unknown-to-us fields are kept in raw


def test_optional_fields_absent() -> None:
    adv = parse_osv({"id": "X-1", "modified": "2024-01-01T00:00:00Z"})
    assert adv.aliases == () and adv.affected == () and adv.references == ()
    assert adv.summary is None and adv.details is None and adv.published is None


def test_withdrawn_and_null_optionals() -> None:
    adv = parse_osv(record(withdrawn="2024-03-01T12:00:00.123456789Z", aliases=None, summary=None))
    assert adv.withdrawn == datetime(2024, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert adv.aliases == ()
    assert adv.summary is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-02T03:04:05Z", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2024-01-02t03:04:05z", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2024-01-02T03:04:05.5Z", datetime(2024, 1, 2, 3, 4, 5, 500000, tzinfo=UTC)),
        ("2024-01-02T03:04:05-05:30", datetime(2024, 1, 2, 8, 34, 5, tzinfo=UTC)),
        ("2024-01-02T03:04:05+0100", datetime(2024, 1, 2, 2, 4, 5, tzinfo=UTC)),
        ("2024-01-02T03:04:05", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),  # no offset: UTC
        ("2024-01-02", datetime(2024, 1, 2, tzinfo=UTC)),
        ("2016-12-31T23:59:60Z", datetime(2016, 12, 31, 23, 59, 59, tzinfo=UTC)),  # leap second
    ],
)
def test_parse_datetime(text: str, expected: datetime) -> None:
    got = parse_datetime(text)
    assert got == expected
    assert got.tzinfo is UTC


@pytest.mark.parametrize(
    "text", ["", "yesterday", "2024-13-01T00:00:00Z", "2024-01-02T25:00:00Z", "2024-01-02T03:04"]
)
def test_parse_datetime_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_datetime(text)


def test_names_per_ecosystem() -> None:
    rec = record(
        affected=[
            {"package": {"ecosystem": "PyPI", "name": "Zope.Interface"}, "versions": ["1"]},
            {"package": {"ecosystem": "conda", "name": "OpenSSL"}, "versions": ["1"]},
            {"package": {"ecosystem": "npm", "name": "@Scope/Pkg_x"}, "versions": ["1"]},
            {"ranges": [{"type": "GIT", "repo": "r", "events": [{"introduced": "abc"}]}]},
        ]
    )
    affs = parse_osv(rec).affected
    assert [(a.ecosystem, a.name) for a in affs] == [
        ("PyPI", "zope-interface"),
        ("conda", "openssl"),
        ("npm", "@scope/pkg_x"),
        ("", ""),  # GIT-only entry without a package
    ]


def test_unparseable_event_values_are_kept() -> None:
    events = [{"introduced": "0"}, {"fixed": "not a version!"}, {"limit": "*"}]
    rec = record(affected=[{"package": {"ecosystem": "PyPI", "name": "x"}, "ranges": [
        {"type": "ECOSYSTEM", "events": events}]}])  # fmt: skip
    [aff] = parse_osv(rec).affected
    assert [e.value for e in aff.ranges[0].events] == ["0", "not a version!", "*"]


# ------------------------------------------------------------------------------------------------
# severity
# ------------------------------------------------------------------------------------------------


def test_severity_v3_v4_v2() -> None:
    rec = record(
        severity=[
            {"type": "CVSS_V3", "score": V3_CRITICAL},
            {"type": "CVSS_V4", "score": V4_CRITICAL},
            {"type": "CVSS_V2", "score": V2_HIGH},
        ]
    )
    adv = parse_osv(rec)
    by_type = {s.type: s for s in adv.severity}
    assert by_type["CVSS_V3"] == Severity("CVSS_V3", V3_CRITICAL, 9.8, "critical")
    assert by_type["CVSS_V4"] == Severity("CVSS_V4", V4_CRITICAL, 9.3, "critical")
    assert by_type["CVSS_V2"] == Severity("CVSS_V2", V2_HIGH, 7.5, "high")
    assert adv.best_severity() == by_type["CVSS_V3"]  # 9.8 beats 9.3


@pytest.mark.parametrize(
    ("vector", "score", "rating"),
    [
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N", 6.1, "medium"),
        ("CVSS:3.0/AV:L/AC:H/PR:H/UI:R/S:U/C:L/I:N/A:N", 1.8, "low"),
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:N", 0.0, "none"),
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N", 7.5, "high"),
    ],
)
def test_cvss3_scores(vector: str, score: float, rating: str) -> None:
    [sev] = parse_osv(record(severity=[{"type": "CVSS_V3", "score": vector}])).severity
    assert (sev.score, sev.rating) == (score, rating)


def test_cvss_vector_normalized_and_garbage_kept() -> None:
    shuffled = "CVSS:3.1/A:H/I:H/C:H/S:U/UI:N/PR:N/AC:L/AV:N"
    rec = record(
        severity=[{"type": "CVSS_V3", "score": shuffled}, {"type": "CVSS_V3", "score": "junk"}]
    )
    good, bad = parse_osv(rec).severity
    assert good.vector == V3_CRITICAL and good.score == 9.8
    assert bad == Severity("CVSS_V3", "junk", None, None)


def test_database_specific_severity() -> None:
    adv = parse_osv(record(database_specific={"severity": "MODERATE", "cwe_ids": ["CWE-79"]}))
    assert adv.severity == (Severity("DATABASE", "MODERATE", None, "medium"),)
    assert adv.best_severity() == adv.severity[0]
    adv = parse_osv(record(database_specific={"severity": "HIGH"}))
    assert adv.severity[0].rating == "high"


def test_scored_entry_beats_database_rating() -> None:
    rec = record(
        severity=[{"type": "CVSS_V3", "score": "CVSS:3.1/AV:L/AC:H/PR:H/UI:R/S:U/C:L/I:N/A:N"}],
        database_specific={"severity": "CRITICAL"},
    )
    best = parse_osv(rec).best_severity()
    assert best is not None and best.type == "CVSS_V3" and best.score == 1.8


def test_best_severity_prefers_v4_on_tie() -> None:
    adv = parse_osv(record())
    v3 = Severity("CVSS_V3", "x", 9.3, "critical")
    v4 = Severity("CVSS_V4", "y", 9.3, "critical")
    assert replace(adv, severity=(v3, v4)).best_severity() == v4
    assert replace(adv, severity=(v4, v3)).best_severity() == v4


def test_per_package_severity_collected_and_deduplicated() -> None:
    rec = record(severity=[{"type": "CVSS_V3", "score": V3_CRITICAL}])
    rec["affected"][0]["severity"] = [
        {"type": "CVSS_V3", "score": V3_CRITICAL},
        {"type": "CVSS_V4", "score": V4_CRITICAL},
        {"type": "Ubuntu", "score": "Medium"},
    ]
    sev = parse_osv(rec).severity
    assert [s.type for s in sev] == ["CVSS_V3", "CVSS_V4", "Ubuntu"]
    assert sev[2] == Severity("Ubuntu", "Medium", None, "medium")


# ------------------------------------------------------------------------------------------------
# fixed_versions
# ------------------------------------------------------------------------------------------------


def test_fixed_versions_sorted_and_deduplicated() -> None:
    rec = record(
        affected=[
            {
                "package": {"ecosystem": "PyPI", "name": "Foo_Bar"},
                "ranges": [
                    {
                        "type": "ECOSYSTEM",
                        "events": [
                            {"introduced": "2.0"},
                            {"fixed": "2.0.10"},
                            {"introduced": "0"},
                            {"fixed": "1.9"},
                            {"introduced": "1.10"},
                            {"fixed": "1.10.post1"},
                            {"fixed": "weird fix"},
                        ],
                    },
                    {"type": "GIT", "repo": "r", "events": [{"fixed": "deadbeef"}]},
                    {"type": "SEMVER", "events": [{"fixed": "v3.0.0"}, {"fixed": "1.9.0"}]},
                ],
            },
            {
                "package": {"ecosystem": "PyPI", "name": "foo-bar"},
                "ranges": [{"type": "ECOSYSTEM", "events": [{"fixed": "2.0.10"}]}],
            },
            {
                "package": {"ecosystem": "PyPI", "name": "other"},
                "ranges": [{"type": "ECOSYSTEM", "events": [{"fixed": "0.1"}]}],
            },
        ]
    )
    adv = parse_osv(rec)
    # 1.9.0 == 1.9 (PEP 440) and 2.0.10 appears twice: one each; GIT hashes never listed
    assert adv.fixed_versions("PyPI", "FOO.bar") == [
        "1.9",
        "1.10.post1",
        "2.0.10",
        "v3.0.0",
        "weird fix",
    ]
    assert adv.fixed_versions("pypi", "other") == ["0.1"]
    assert adv.fixed_versions("PyPI", "missing") == []
    assert adv.fixed_versions("npm", "foo-bar") == []


def test_fixed_versions_conda_and_unknown_ecosystems() -> None:
    rec = record(
        affected=[
            {
                "package": {"ecosystem": "conda", "name": "openssl"},
                "ranges": [
                    {
                        "type": "ECOSYSTEM",
                        "events": [{"fixed": "3.0.0"}, {"fixed": "1.1.1l"}, {"fixed": "3.0.0a1"}],
                    }
                ],
            },
            {
                "package": {"ecosystem": "npm", "name": "left-pad"},
                "ranges": [{"type": "SEMVER", "events": [{"fixed": "2.0.0"}, {"fixed": "1.0.0"}]}],
            },
        ]
    )
    adv = parse_osv(rec)
    assert adv.fixed_versions("conda", "OpenSSL") == ["1.1.1l", "3.0.0a1", "3.0.0"]
    assert adv.fixed_versions("npm", "left-pad") == ["2.0.0", "1.0.0"]  # no ordering: as given


# ------------------------------------------------------------------------------------------------
# malformed records
# ------------------------------------------------------------------------------------------------


def _set(path: str, value: Any) -> dict[str, Any]:
    """A valid record with the value at a dotted path replaced (None deletes it)."""
    rec = copy.deepcopy(record())
    keys: list[str | int] = [int(k) if k.isdigit() else k for k in path.split(".")]
    target: Any = rec
    for k in keys[:-1]:
        target = target[k]
    if value is None:
        del target[keys[-1]]
    else:
        target[keys[-1]] = value
    return rec


@pytest.mark.parametrize(
    ("rec", "field"),
    [
        (_set("id", None), "id"),
        (_set("id", ""), "id"),
        (_set("id", 42), "id"),
        (_set("modified", None), "modified"),
        (_set("modified", "last tuesday"), "modified"),
        (_set("modified", 1704067200), "modified"),
        (_set("published", "2024-02-30T00:00:00Z"), "published"),
        (_set("withdrawn", "soon"), "withdrawn"),
        (_set("aliases", "CVE-1"), "aliases"),
        (_set("aliases", ["CVE-1", 7]), "aliases[1]"),
        (_set("summary", ["x"]), "summary"),
        (_set("affected", {"package": {}}), "affected"),
        (_set("affected.0", "PyPI"), "affected[0]"),
        (_set("affected.0.package", "foo"), "affected[0].package"),
        (_set("affected.0.package.name", None), "affected[0].package.name"),
        (_set("affected.0.package.ecosystem", None), "affected[0].package.ecosystem"),
        (_set("affected.0.ranges", {"type": "ECOSYSTEM"}), "affected[0].ranges"),
        (_set("affected.0.ranges.0.type", None), "affected[0].ranges[0].type"),
        (_set("affected.0.ranges.0.events", None), "affected[0].ranges[0].events"),
        (_set("affected.0.ranges.0.events", {"introduced": "0"}), "affected[0].ranges[0].events"),
        (_set("affected.0.ranges.0.events.1", "1.5"), "affected[0].ranges[0].events[1]"),
        (
            _set("affected.0.ranges.0.events.1", {"introduced": "1", "fixed": "2"}),
            "affected[0].ranges[0].events[1]",
        ),
        (
            _set("affected.0.ranges.0.events.1", {"patched": "2"}),
            "affected[0].ranges[0].events[1].patched",
        ),
        (
            _set("affected.0.ranges.0.events.1", {"fixed": 1.5}),
            "affected[0].ranges[0].events[1].fixed",
        ),
        (_set("affected.0.versions.1", 1.4), "affected[0].versions[1]"),
        (_set("affected.0.ranges.1.repo", ["r"]), "affected[0].ranges[1].repo"),
        (_set("severity", [{"type": "CVSS_V3"}]), "severity[0].score"),
        (_set("severity", {"type": "CVSS_V3"}), "severity"),
        (_set("references.0.url", None), "references[0].url"),
        (_set("references", ["https://x"]), "references[0]"),
    ],
)
def test_malformed_records_name_the_field(rec: dict[str, Any], field: str) -> None:
    with pytest.raises(OsvError) as info:
        parse_osv(rec, "vulns/foo/PYSEC-1.json")
    err = info.value
    assert isinstance(err, InvalidRequest) and err.http_status == 400
    assert err.field == field
    assert err.source == "vulns/foo/PYSEC-1.json"
    assert "vulns/foo/PYSEC-1.json" in err.message and field in err.message


def test_malformed_not_an_object() -> None:
    bad: tuple[object, ...] = (None, [], "id: x", 3)
    for obj in bad:
        with pytest.raises(OsvError, match="expected an object"):
            parse_osv(obj, "x.json")


def test_float_version_gets_a_yaml_hint() -> None:
    with pytest.raises(OsvError) as info:
        parse_osv(_set("affected.0.versions.0", 1.1))
    assert info.value.hint == "quote version strings in YAML"


def test_non_json_values_rejected() -> None:
    with pytest.raises(OsvError, match="not a JSON value"):
        parse_osv(record(extra={1, 2}))
    with pytest.raises(OsvError, match="keys must be strings"):
        parse_osv(record(database_specific={1: "x"}))
    with pytest.raises(OsvError, match="finite"):
        parse_osv(record(database_specific={"score": float("nan")}))


def test_yaml_datetimes_become_iso_strings_in_raw() -> None:
    rec = record(
        modified=datetime(2024, 1, 2, 3, 4, 5, 120000, tzinfo=UTC),
        published=datetime(2024, 1, 1, 0, 0),  # naive: treated as UTC
    )
    adv = parse_osv(rec)
    assert adv.modified == datetime(2024, 1, 2, 3, 4, 5, 120000, tzinfo=UTC)
    assert adv.published == datetime(2024, 1, 1, tzinfo=UTC)
    assert adv.raw["modified"] == "2024-01-02T03:04:05.120000Z"
    assert adv.raw["published"] == "2024-01-01T00:00:00"
    json.dumps(adv.raw)  # JSON-compatible
    assert rec["modified"] == datetime(2024, 1, 2, 3, 4, 5, 120000, tzinfo=UTC)  # input untouched


def test_advisory_is_hashable_and_raw_not_compared() -> None:
    a = parse_osv(record())
    b = parse_osv(record(schema_version="1.0.0"))
    assert a == b and hash(a) == hash(b)
    assert isinstance(a, Advisory)
    assert "raw=" not in repr(a)


# ------------------------------------------------------------------------------------------------
# iter_records
# ------------------------------------------------------------------------------------------------

YAML_RECORD = """\
id: PYSEC-2024-2
modified: 2024-01-02T03:04:05.5Z
published: "2024-01-01T00:00:00Z"
affected:
- package: {ecosystem: PyPI, name: foo}
  ranges:
  - type: ECOSYSTEM
    events:
    - introduced: "0"
    - fixed: "1.0"
"""


def _tree(root: Path) -> Path:
    (root / "foo").mkdir(parents=True)
    (root / "foo" / "PYSEC-2024-1.json").write_text(json.dumps(record()))
    (root / "foo" / "PYSEC-2024-2.yaml").write_text(YAML_RECORD)
    (root / "bar.yml").write_text(YAML_RECORD.replace("PYSEC-2024-2", "PYSEC-2024-3"))
    (root / "LICENSE").write_text("Apache")
    (root / "README.md").write_text("# advisories")
    (root / ".hidden.json").write_text("{not json")
    (root / ".git").mkdir()
    (root / ".git" / "config.json").write_text("{}")
    (root / "broken.yaml").write_text("id: [unterminated\n  - x: : :")
    (root / "broken.json").write_text('{"id": "X",')
    (root / "list.json").write_text("[1, 2]")
    (root / "empty.yaml").write_text("")
    return root


def test_iter_records_directory(tmp_path: Path) -> None:
    results = dict(iter_records(_tree(tmp_path / "feed")))
    assert sorted(results) == [
        "bar.yml",
        "broken.json",
        "broken.yaml",
        "empty.yaml",
        "foo/PYSEC-2024-1.json",
        "foo/PYSEC-2024-2.yaml",
        "list.json",
    ]
    good = {k: v for k, v in results.items() if not isinstance(v, OsvError)}
    assert sorted(good) == ["bar.yml", "foo/PYSEC-2024-1.json", "foo/PYSEC-2024-2.yaml"]
    errors = {k: v for k, v in results.items() if isinstance(v, OsvError)}
    for name, err in errors.items():
        assert err.source == name and name in err.message
    assert "cannot decode" in errors["broken.yaml"].message
    assert "cannot decode" in errors["broken.json"].message
    assert "expected an object" in errors["list.json"].message
    assert "got null" in errors["empty.yaml"].message
    # YAML timestamps came back as ISO strings
    y = good["foo/PYSEC-2024-2.yaml"]
    assert y["modified"] == "2024-01-02T03:04:05.500000Z"
    assert parse_osv(y, "foo/PYSEC-2024-2.yaml").affected[0].ranges[0].events[1].value == "1.0"


def test_iter_records_directory_is_sorted(tmp_path: Path) -> None:
    names = [n for n, _ in iter_records(_tree(tmp_path / "feed"))]
    assert names == sorted(names)


def test_iter_records_single_file(tmp_path: Path) -> None:
    path = tmp_path / "one.yaml"
    path.write_text(YAML_RECORD)
    [(name, rec)] = list(iter_records(path))
    assert name == "one.yaml"
    assert isinstance(rec, dict) and rec["id"] == "PYSEC-2024-2"


def test_iter_records_zip(tmp_path: Path) -> None:
    path = tmp_path / "feed.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("osv/", b"")
        zf.writestr("osv/deep/er/a.json", json.dumps(record()))
        zf.writestr("b.yaml", YAML_RECORD)
        zf.writestr("osv/LICENSE", "x")
        zf.writestr("__MACOSX/osv/._a.json", b"\x00\x05\x16\x07")
        zf.writestr("osv/.hidden.yaml", "x")
        zf.writestr("bad.json", "{")
    results = list(iter_records(path))
    assert [n for n, _ in results] == ["osv/deep/er/a.json", "b.yaml", "bad.json"]
    assert isinstance(results[0][1], dict) and results[0][1]["id"] == "PYSEC-2024-1"
    assert isinstance(results[1][1], dict) and results[1][1]["modified"].endswith("Z")
    assert isinstance(results[2][1], OsvError)


def test_iter_records_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(OsvError, match="does not exist"):
        list(iter_records(tmp_path / "nope"))
    (tmp_path / "x.txt").write_text("{}")
    with pytest.raises(OsvError, match="not a record file"):
        list(iter_records(tmp_path / "x.txt"))
    (tmp_path / "x.zip").write_bytes(b"not a zip")
    with pytest.raises(OsvError, match="cannot open OSV archive"):
        list(iter_records(tmp_path / "x.zip"))


def test_yaml_is_loaded_safely(tmp_path: Path) -> None:
    (tmp_path / "evil.yaml").write_text("id: !!python/object/apply:os.system ['true']\n")
    [(_, err)] = list(iter_records(tmp_path))
    assert isinstance(err, OsvError) and "cannot decode" in err.message


def test_yaml_alias_bomb_is_bounded(tmp_path: Path) -> None:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for i in range(1, 10):
        refs = ", ".join([f"*a{i - 1}"] * 10)
        lines.append(f"a{i}: &a{i} [{refs}]")
    lines.append("id: BOMB\nmodified: '2024-01-01T00:00:00Z'")
    (tmp_path / "bomb.yaml").write_text("\n".join(lines) + "\n")
    [(_, err)] = list(iter_records(tmp_path))
    assert isinstance(err, OsvError) and "too large" in err.message


def test_yaml_recursive_structure_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "loop.yaml").write_text("id: X\nmodified: '2024-01-01T00:00:00Z'\nx: &a [*a]\n")
    [(_, err)] = list(iter_records(tmp_path))
    assert isinstance(err, OsvError) and "nested too deeply" in err.message


def test_severity_type_is_frozen() -> None:
    sev = Severity("CVSS_V3", V3_CRITICAL, 9.8, "critical")
    with pytest.raises(AttributeError):
        sev.score = 1.0  # type: ignore[misc]
