"""How a virtual index combines its members, with dependency-confusion protection.

Rule: if any *private* member (directly, or through a nested virtual member) has a project, the
virtual index serves that project from its private members only, whatever versions any mirror
offers. Otherwise the first mirror member (in the configured order) that has the project serves
it. Private members are merged in order; on a duplicate filename the earlier member wins.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from stockade.core.simple import ProjectPage
from stockade.types import IndexKind, NormalizedName


@dataclass(frozen=True, slots=True)
class MemberPage:
    member: str  # index name the page came from
    kind: IndexKind  # PRIVATE or MIRROR (a nested virtual reports the kind it resolved to)
    page: ProjectPage
    url: str | None = None  # absolute URL of the member's project page, for PEP 708


@dataclass(frozen=True, slots=True)
class Resolution:
    page: ProjectPage
    kind: IndexKind
    sources: tuple[str, ...]
    shadowed: tuple[str, ...]  # mirror members that also had the name but were ignored


def merge(project: NormalizedName, members: list[MemberPage]) -> Resolution | None:
    """Combine the member pages (in member order); None when no member has the project."""
    private = [m for m in members if m.kind is IndexKind.PRIVATE]
    mirrors = [m for m in members if m.kind is IndexKind.MIRROR]
    if private:
        seen: set[str] = set()
        files = []
        for m in private:
            for f in m.page.files:
                if f.filename not in seen:
                    seen.add(f.filename)
                    files.append(f if f.origin else replace(f, origin=m.member))
        alternates = tuple(m.url for m in private if m.url) if len(private) > 1 else ()
        page = ProjectPage(name=project, files=tuple(files), alternate_locations=alternates)
        return Resolution(
            page=page,
            kind=IndexKind.PRIVATE,
            sources=tuple(m.member for m in private),
            shadowed=tuple(m.member for m in mirrors),
        )
    if mirrors:
        first = mirrors[0]
        page = first.page if _has_origin(first.page) else first.page.with_origin(first.member)
        return Resolution(page=page, kind=IndexKind.MIRROR, sources=(first.member,), shadowed=())
    return None


def _has_origin(page: ProjectPage) -> bool:
    return all(f.origin for f in page.files)
