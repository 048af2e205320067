"""Vulnerability response: who downloaded a version an advisory affects, and what to move to.

Reads the audit log's successful ``download`` events of every PyPI project the advisory names
(through the project column, indexed by time), decides each downloaded version with the
curated database (the same verdicts policies use: feed overlaid with curations, so a version
curated ``not_affected`` is not listed) and groups them per token, index and version.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from stockade.core.simple import version_from_filename
from stockade.services.audit import query_events
from stockade.services.tokens import TokenService
from stockade.services.vulndb import VulnDB

OPEN = ("affected", "under_investigation")


@dataclass(slots=True)
class AffectedDownload:
    actor: str | None
    team: str | None
    index: str | None
    project: str
    version: str
    first: str
    last: str
    count: int
    files: set[str]
    fixed: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "token": self.actor,
            "team": self.team,
            "index": self.index,
            "project": self.project,
            "version": self.version,
            "first_download": self.first,
            "last_download": self.last,
            "downloads": self.count,
            "files": sorted(self.files),
            "fixed_in": list(self.fixed),
        }


async def affected_downloads(
    sessions: async_sessionmaker[AsyncSession],
    vulns: VulnDB,
    tokens: TokenService,
    ident: str,
) -> dict[str, Any]:
    """``audit affected``: downloads of versions the advisory ``ident`` affects."""
    advisory = await vulns.show(ident)  # NotFound names the id when it is unknown
    teams = {t.info.id: t.info.team for t in await tokens.list()}
    names = sorted({a["name"] for a in advisory["affected"] if a["ecosystem"] == "PyPI"})
    verdicts: dict[tuple[str, str], tuple[bool, tuple[str, ...]]] = {}
    groups: dict[tuple[str | None, str | None, str, str], AffectedDownload] = {}
    for name in names:
        async for e in query_events(sessions, action="download", outcome="ok", project=name):
            version = version_from_filename(e["filename"] or "")
            if version is None:
                continue
            key = (name, version)
            if key not in verdicts:
                hits = [
                    f
                    for f in await vulns.query("PyPI", name, version)
                    if f.id == advisory["id"] and f.status in OPEN
                ]
                verdicts[key] = (bool(hits), hits[0].fixed_versions if hits else ())
            affected, fixed = verdicts[key]
            if not affected:
                continue
            team = (e["detail"] or {}).get("team") or teams.get(e["actor"] or "")
            gkey = (e["actor"], e["index"], name, version)
            got = groups.get(gkey)
            if got is None:
                groups[gkey] = AffectedDownload(
                    e["actor"], team, e["index"], name, version, e["at"], e["at"], 1,
                    {e["filename"]}, fixed,
                )  # fmt: skip
            else:
                got.last = e["at"]
                got.count += 1
                got.files.add(e["filename"])
    rows = sorted(groups.values(), key=lambda g: (g.last, g.actor or ""), reverse=True)
    return {
        "advisory": advisory["id"],
        "aliases": advisory["aliases"],
        "summary": advisory["summary"],
        "projects": names,
        "downloads": [r.as_dict() for r in rows],
        "tokens": sorted({r.actor for r in rows if r.actor}),
        "teams": sorted({r.team for r in rows if r.team}),
        "anonymous": any(r.actor is None for r in rows),
    }
