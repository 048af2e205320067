"""core/identity.py: parsing upstream identity data and finding impersonation."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from stockade.core.identity import (
    Owners,
    ProjectInfo,
    VersionIdentity,
    assess,
    parse_project_json,
    parse_provenance,
    repository_of,
)
from stockade.services.identity import json_api_url

T0 = datetime(2025, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 11, 1, tzinfo=UTC)
POPULAR = frozenset({"requests", "numpy", "flask"})


def v(version: str, publisher: str | None, provenance: bool | None, day: int) -> VersionIdentity:
    return VersionIdentity(version, publisher, provenance, T0 + timedelta(days=day))


def rules(found: list[object]) -> list[tuple[str, str | None]]:
    return [(f.rule, f.version) for f in found]  # type: ignore[attr-defined]


def test_provenance_publishers() -> None:
    doc = {
        "version": 1,
        "attestation_bundles": [
            {"publisher": {"kind": "GitHub", "repository": "PSF/Requests"}, "attestations": []},
            {"publisher": {"kind": "GitLab", "repository": "g/r"}, "attestations": []},
        ],
    }
    assert parse_provenance(json.dumps(doc).encode()) == ["GitHub:psf/requests", "GitLab:g/r"]
    with pytest.raises(ValueError, match="provenance"):
        parse_provenance(b'{"hello": 1}')
    with pytest.raises(ValueError):
        parse_provenance(b"not json")


def test_project_json() -> None:
    doc = {
        "info": {
            "author_email": "Jane <JANE@example.org>, bob@example.org",
            "maintainer_email": None,
            "home_page": "https://github.com/psf/requests",
            "project_urls": {"Docs": "https://requests.readthedocs.io", "x": "javascript:1"},
        },
        "ownership": {
            "organization": "psf",
            "roles": [{"role": "Owner", "user": "b"}, {"user": "a"}],
        },
        "releases": {
            "1.0": [{"upload_time_iso_8601": "2020-01-02T00:00:00.000000Z"}],
            "0.9": [{"upload_time_iso_8601": "2019-05-01T00:00:00Z"}],
        },
    }
    info = parse_project_json(json.dumps(doc).encode())
    assert info.owners == ("a", "b")
    assert info.organization == "psf"
    assert info.emails == ("jane@example.org", "bob@example.org")
    assert info.urls == ("https://github.com/psf/requests", "https://requests.readthedocs.io")
    assert info.first_upload == datetime(2019, 5, 1, tzinfo=UTC)
    no_owner = parse_project_json(b'{"info": {}}')
    assert no_owner.owners is None
    with pytest.raises(ValueError, match="JSON API"):
        parse_project_json(b"[]")


def test_repository_of_and_json_api_url() -> None:
    assert repository_of("https://github.com/PSF/requests.git") == ("psf", "requests")
    assert repository_of("https://www.gitlab.com/a/b/-/tree/main") == ("a", "b")
    assert repository_of("https://example.org/psf/requests") is None
    assert repository_of("https://github.com/psf") is None
    assert json_api_url("https://pypi.org/simple/", "x") == "https://pypi.org/pypi/x/json"
    assert (
        json_api_url("http://127.0.0.1:9/root/simple", "x") == "http://127.0.0.1:9/root/pypi/x/json"
    )
    assert json_api_url("https://example.org/packages/", "x") is None


def test_publisher_change_marks_the_change_and_its_review_window() -> None:
    versions = [
        v("1.0", "GitHub:a/p", True, 0),
        v("1.1", "GitHub:a/p", True, 100),
        v("1.2", "GitHub:m/p", True, 200),
        v("1.2.1", "GitHub:m/p", True, 202),  # within the window: an attacker's follow-up
        v("1.3", "GitHub:m/p", True, 300),  # long after: the new repository is established
    ]
    found = assess("p", versions)
    assert rules(found) == [
        ("impersonation:publisher-changed", "1.2"),
        ("impersonation:publisher-changed", "1.2.1"),
    ]
    assert "GitHub:a/p (1.1) to GitHub:m/p" in found[0].message  # type: ignore[attr-defined]
    assert all(f.tier == "suspicious" for f in found)  # type: ignore[attr-defined]


def test_provenance_dropped_after_attested_releases() -> None:
    versions = [v("1.0", "GitHub:a/p", True, 0), v("1.1", None, False, 50)]
    assert rules(assess("p", versions)) == [("impersonation:provenance-dropped", "1.1")]


def test_no_finding_without_a_change() -> None:
    same = [v("1.0", "GitHub:a/p", True, 0), v("1.1", "GitHub:a/p", True, 9)]
    assert assess("p", same) == []
    never = [v("1.0", None, False, 0), v("1.1", None, False, 9)]  # never attested
    assert assess("p", never) == []
    unknown = [v("1.0", "GitHub:a/p", True, 0), v("1.1", None, None, 9)]  # index offers none
    assert assess("p", unknown) == []
    adopted = [v("1.0", None, False, 0), v("1.1", "GitHub:a/p", True, 9)]  # started attesting
    assert assess("p", adopted) == []


def test_owners_replaced_but_not_owners_added() -> None:
    versions = [v("1.0", None, None, 0), v("2.0", None, None, 400)]
    added = [
        Owners(("alice",), None, T0 + timedelta(days=10)),
        Owners(("alice", "bob"), None, T0 + timedelta(days=300)),
    ]
    assert assess("p", versions, added) == []
    replaced = [
        Owners(("alice",), None, T0 + timedelta(days=10)),
        Owners(("mallory",), None, T0 + timedelta(days=300)),
    ]
    assert rules(assess("p", versions, replaced)) == [("impersonation:owners-replaced", "2.0")]


def info(
    urls: tuple[str, ...] = (),
    emails: tuple[str, ...] = (),
    days_old: int = 10,
    owners: tuple[str, ...] | None = ("x",),
) -> ProjectInfo:
    return ProjectInfo(owners, None, emails, urls, NOW - timedelta(days=days_old))


def test_new_project_claiming_a_popular_repository() -> None:
    claim = info(urls=("https://github.com/psf/requests",))
    found = assess("fast-req", [], info=claim, popular=POPULAR, now=NOW)
    assert rules(found) == [("impersonation:homepage", None)]
    # its own repository, an old project, or a popular project itself: nothing
    assert assess("requests", [], info=claim, popular=POPULAR, now=NOW) == []
    old = info(urls=("https://github.com/psf/requests",), days_old=900)
    assert assess("fast-req", [], info=old, popular=POPULAR, now=NOW) == []
    own = info(urls=("https://github.com/me/fast-req",))
    assert assess("fast-req", [], info=own, popular=POPULAR, now=NOW) == []
    # python-/py- prefixed repository names count as the project they name
    prefixed = info(urls=("https://github.com/someone/python-flask",))
    assert rules(assess("flask-fork2", [], info=prefixed, popular=POPULAR, now=NOW)) == [
        ("impersonation:homepage", None)
    ]


def test_new_project_claiming_a_popular_author() -> None:
    claim = info(emails=("core@numpy.org",), owners=("mallory",))
    table = {"core@numpy.org": [("numpy", ("charris", "rgommers"))]}
    found = assess("numpy-turbo", [], info=claim, popular=POPULAR, popular_emails=table, now=NOW)
    assert rules(found) == [("impersonation:author", None)]
    # the same people publishing a new project is not impersonation
    theirs = info(emails=("core@numpy.org",), owners=("rgommers",))
    assert (
        assess("numpy-new", [], info=theirs, popular=POPULAR, popular_emails=table, now=NOW) == []
    )
