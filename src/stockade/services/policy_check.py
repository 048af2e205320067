"""What a draft policy would change on an index, before it is applied (``policy test``).

Every project the index can list without asking an upstream for its full name list (private
files, mirror pages already fetched, members of virtual indexes) is decided twice: by the policy
in force (its cached decisions) and by the draft, over the same unfiltered page. Exceptions in
force apply to both, as they would once the draft is applied.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from stockade.core.policy import Policy
from stockade.errors import StockadeError
from stockade.services.pages import PageService
from stockade.services.policies import PolicyService
from stockade.services.repo import IndexInfo
from stockade.types import NormalizedName


@dataclass(slots=True)
class ProjectChange:
    project: str
    files: int
    blocked_before: int
    blocked_after: int
    newly_blocked: list[tuple[str, str]] = field(default_factory=list)  # (filename, reason)
    newly_allowed: list[tuple[str, str]] = field(default_factory=list)  # (filename, old reason)

    def as_dict(self) -> dict[str, Any]:
        return {
            "project": self.project,
            "files": self.files,
            "blocked_before": self.blocked_before,
            "blocked_after": self.blocked_after,
            "newly_blocked": [{"filename": f, "reason": r} for f, r in self.newly_blocked],
            "newly_allowed": [{"filename": f, "was": r} for f, r in self.newly_allowed],
        }


@dataclass(slots=True)
class DraftReport:
    index: str
    projects: int = 0
    files: int = 0
    blocked_before: int = 0
    blocked_after: int = 0
    changes: list[ProjectChange] = field(default_factory=list)  # projects that change only
    errors: list[tuple[str, str]] = field(default_factory=list)  # (project, why not checked)

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "projects_checked": self.projects,
            "files_checked": self.files,
            "blocked_before": self.blocked_before,
            "blocked_after": self.blocked_after,
            "newly_blocked": sum(len(c.newly_blocked) for c in self.changes),
            "newly_allowed": sum(len(c.newly_allowed) for c in self.changes),
            "changes": [c.as_dict() for c in self.changes],
            "errors": [{"project": p, "error": e} for p, e in self.errors],
        }


async def compare(
    pages: PageService,
    policies: PolicyService,
    index: IndexInfo,
    draft: Policy,
    progress: Callable[[int, int], None] | None = None,
) -> DraftReport:
    report = DraftReport(index.name)
    projects = await pages.project_list(index)
    for n, name in enumerate(projects, 1):
        if progress is not None:
            progress(n, len(projects))
        try:
            served = await pages.project_page(index, NormalizedName(name))
        except StockadeError as exc:
            report.errors.append((name, exc.message))
            continue
        raw = served.unfiltered or served.page
        after = await policies.decide(draft, raw, index=index.name)
        change = ProjectChange(name, len(raw.files), 0, 0)
        for f in raw.files:
            old = served.decisions.get(f.filename) or served.blocked(f.filename)
            new = after[f.filename]
            was_blocked = old is not None and not old.allowed
            change.blocked_before += was_blocked
            change.blocked_after += not new.allowed
            if not was_blocked and not new.allowed:
                change.newly_blocked.append((f.filename, new.summary()))
            elif was_blocked and new.allowed:
                assert old is not None
                change.newly_allowed.append((f.filename, old.summary()))
        report.projects += 1
        report.files += change.files
        report.blocked_before += change.blocked_before
        report.blocked_after += change.blocked_after
        if change.newly_blocked or change.newly_allowed:
            report.changes.append(change)
    return report
