"""Dependency-confusion report: private project names that a mirror's upstream also publishes.

Virtual indexes already serve a private project's files only, whatever its mirrors publish
(core/virtual.py). This report finds the collisions so a security team can see the traps laid
for it: for every virtual index, each private member's project names are looked up on each
mirror member's upstream, one project at a time.

Asking an upstream for a private name tells that upstream the name, so the report runs only
when an admin asks for it (``stockade threats confusion``), never by itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stockade.errors import NotFound, StockadeError
from stockade.services.indexes import IndexService
from stockade.services.pages import MAX_DEPTH, PageService
from stockade.services.repo import IndexInfo
from stockade.types import IndexKind, NormalizedName


@dataclass(frozen=True, slots=True)
class Collision:
    project: str
    private_index: str
    mirror_index: str
    virtual_indexes: tuple[str, ...]
    upstream_versions: tuple[str, ...]  # newest last, at most ten

    def as_dict(self) -> dict[str, Any]:
        return {
            "project": self.project,
            "private_index": self.private_index,
            "mirror_index": self.mirror_index,
            "virtual_indexes": list(self.virtual_indexes),
            "upstream_versions": list(self.upstream_versions),
        }


async def _leaves(
    indexes: IndexService, index: IndexInfo, depth: int = 0
) -> tuple[set[str], set[str]]:
    """(private, mirror) member names reachable from a virtual index."""
    private: set[str] = set()
    mirrors: set[str] = set()
    if depth > MAX_DEPTH:
        return private, mirrors
    for name in index.members:
        m = await indexes.get(name)
        if m.kind is IndexKind.PRIVATE:
            private.add(m.name)
        elif m.kind is IndexKind.MIRROR:
            mirrors.add(m.name)
        else:
            p, r = await _leaves(indexes, m, depth + 1)
            private |= p
            mirrors |= r
    return private, mirrors


async def find_collisions(
    indexes: IndexService,
    pages: PageService,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[Collision], list[tuple[str, str, str]]]:
    """Collisions, and the lookups that failed as (project, mirror, why)."""
    pairs: dict[tuple[str, str], set[str]] = {}  # (private, mirror) -> virtual indexes
    for index in await indexes.list():
        if index.kind is IndexKind.VIRTUAL:
            private, mirrors = await _leaves(indexes, index)
            for p in private:
                for m in mirrors:
                    pairs.setdefault((p, m), set()).add(index.name)
    work: list[tuple[str, str, str, tuple[str, ...]]] = []
    for (p, m), through in sorted(pairs.items()):
        for project in await pages.project_list(await indexes.get(p)):
            work.append((project, p, m, tuple(sorted(through))))
    found: list[Collision] = []
    failed: list[tuple[str, str, str]] = []
    for n, (project, p, m, virtuals) in enumerate(work, 1):
        if progress is not None:
            progress(n, len(work))
        try:
            served = await pages.project_page(await indexes.get(m), NormalizedName(project))
        except NotFound:
            continue
        except StockadeError as exc:
            failed.append((project, m, exc.message))
            continue
        page = served.unfiltered or served.page
        found.append(Collision(project, p, m, virtuals, tuple(page.versions[-10:])))
    return found, failed
