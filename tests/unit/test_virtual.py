"""Dependency-confusion rule of virtual indexes."""

from __future__ import annotations

from stockade.core.simple import FileEntry, ProjectPage
from stockade.core.virtual import MemberPage, merge
from stockade.types import IndexKind, NormalizedName

P = NormalizedName("tool")


def pg(*names: str) -> ProjectPage:
    return ProjectPage(P, tuple(FileEntry(n, "a" * 64) for n in names))


def test_private_wins_whatever_the_versions_and_order() -> None:
    res = merge(
        P,
        [
            MemberPage("pypi", IndexKind.MIRROR, pg("tool-99.0-py3-none-any.whl")),
            MemberPage("internal", IndexKind.PRIVATE, pg("tool-1.0-py3-none-any.whl")),
        ],
    )
    assert res is not None
    assert res.kind is IndexKind.PRIVATE
    assert [f.filename for f in res.page.files] == ["tool-1.0-py3-none-any.whl"]
    assert res.page.files[0].origin == "internal"
    assert res.shadowed == ("pypi",)


def test_private_members_merge_first_wins_on_duplicates() -> None:
    res = merge(
        P,
        [
            MemberPage("a", IndexKind.PRIVATE, pg("tool-1.0.tar.gz", "tool-2.0.tar.gz"), url="u/a"),
            MemberPage("b", IndexKind.PRIVATE, pg("tool-2.0.tar.gz", "tool-3.0.tar.gz"), url="u/b"),
        ],
    )
    assert res is not None
    assert [(f.filename, f.origin) for f in res.page.files] == [
        ("tool-1.0.tar.gz", "a"),
        ("tool-2.0.tar.gz", "a"),
        ("tool-3.0.tar.gz", "b"),
    ]
    assert res.page.alternate_locations == ("u/a", "u/b")


def test_first_mirror_serves_when_no_private_member_has_it() -> None:
    res = merge(
        P,
        [
            MemberPage("m1", IndexKind.MIRROR, pg("tool-1.0.tar.gz")),
            MemberPage("m2", IndexKind.MIRROR, pg("tool-2.0.tar.gz")),
        ],
    )
    assert res is not None
    assert res.sources == ("m1",)
    assert [f.origin for f in res.page.files] == ["m1"]


def test_nobody_has_it() -> None:
    assert merge(P, []) is None
