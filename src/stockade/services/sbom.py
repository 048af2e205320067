"""SBOMs of what Stockade knows: an index (what its policy allows now), what tokens or teams
downloaded (the audit table), and any BOM's vulnerabilities and curated VEX statements.

Built on the public services only: ``PageService.project_page`` (the policy-filtered pages),
``MetadataService.get_many`` (licences per sha256) and ``VulnDB.query_many`` (curated findings).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion
from sqlalchemy import select

from stockade.core.lockfiles import Details
from stockade.core.sbom.model import CONDA, PYPI, Bom, Component, Vuln, component, purl_for
from stockade.core.sbom.openvex import Statement
from stockade.core.simple import version_from_filename
from stockade.db.models import AdvisoryAliasRow, AuditRow, CurationRow, FileRow
from stockade.errors import InvalidRequest, NotFound, StockadeError
from stockade.services.metadata import facts_by_file
from stockade.services.repo import IndexInfo, aware
from stockade.services.vulndb import Finding, normalize_package
from stockade.types import NormalizedName

if TYPE_CHECKING:
    from stockade.services.runtime import Runtime

Progress = Callable[[int, int], None]
MAX_DOWNLOAD_EVENTS = 1_000_000


def vuln_of(ref: str, f: Finding) -> Vuln:
    c = f.curation
    detail = "; ".join(x for x in (c.reason, c.note) if x) if c is not None else None
    return Vuln(
        id=f.id,
        ref=ref,
        aliases=f.aliases,
        summary=f.summary,
        severity=f.severity,
        score=f.score,
        fixed_versions=f.fixed_versions,
        status=f.status,
        decided_by=f.decided_by,
        justification=c.justification if c is not None else None,
        detail=detail or None,
        author=c.author if c is not None else None,
        decided_at=c.created_at.isoformat() if c is not None else None,
        published=f.published.isoformat() if f.published is not None else None,
    )


class SbomService:
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    # -- enrichment ----------------------------------------------------------------------------

    async def with_vulns(self, bom: Bom) -> Bom:
        """The BOM with the curated database's findings for every versioned component."""
        keyed = [
            (c, (*normalize_package(c.ecosystem, c.name), c.version))
            for c in bom.components
            if c.version
        ]
        found = await self._rt.vulns.query_many(k for _, k in keyed)
        vulns = [vuln_of(c.ref, f) for c, key in keyed for f in found.get(key, ())]
        return bom.with_vulns(vulns)

    async def with_licenses(self, bom: Bom) -> Bom:
        """Licences Stockade read from the files themselves, for components that name a sha256
        of a file Stockade has seen but whose input stated no licence (lock files)."""
        wanted = {h for c in bom.components if not c.license for a, h in c.hashes if a == "sha256"}
        if not wanted:
            return bom
        facts = await self._rt.metadata.get_many(wanted)
        out = []
        for c in bom.components:
            if not c.license:
                got = next(
                    (
                        facts[h]
                        for a, h in c.hashes
                        if a == "sha256" and h in facts and facts[h].error is None
                    ),
                    None,
                )
                if got is not None and (got.license or got.license_raw):
                    c = replace(
                        c,
                        license=got.license,
                        license_raw=None if got.license else got.license_raw,
                    )
            out.append(c)
        return bom.with_components(out)

    # -- an index ------------------------------------------------------------------------------

    async def index_bom(
        self, name: str, *, base_url: str = "", progress: Progress | None = None
    ) -> Bom:
        """Every file the index serves now (its policy applied), one component per file."""
        rt = self._rt
        index = await rt.indexes.get(name)
        projects = await rt.pages.project_list(index)
        components: list[Component] = []
        warnings: list[str] = []
        for n, project in enumerate(projects, start=1):
            if progress is not None:
                progress(n, len(projects))
            try:
                served = await rt.pages.project_page(index, NormalizedName(project))
            except StockadeError as exc:
                warnings.append(f"{project}: {exc.message}; left out")
                continue
            page = served.page
            files = [f for f in page.files if f.blocked is None]
            known = await rt.metadata.get_many(f.sha256 for f in files if f.sha256)
            facts = facts_by_file(page, known)
            for f in files:
                fact = facts.get(f.filename)
                url = f"{base_url}/pypi/{index.name}/files/{page.name}/{f.filename}"
                components.append(
                    component(
                        PYPI,
                        page.name,
                        f.version,
                        hashes=[f"sha256:{f.sha256}"] if f.sha256 else (),
                        details=Details(
                            license=fact.license if fact else None,
                            license_raw=fact.license_raw if fact else None,
                            download_url=url if base_url else None,
                        ),
                        filename=f.filename,
                        source=f"index {index.name}"
                        + (f" via {f.origin}" if f.origin and f.origin != index.name else ""),
                    )
                )
        bom = Bom(f"index {index.name}", "index", (), (), tuple(warnings))
        return bom.with_components(components)

    # -- downloads -----------------------------------------------------------------------------

    async def downloads_bom(
        self,
        *,
        since: dt.datetime,
        until: dt.datetime | None = None,
        token: str | None = None,
        team: str | None = None,
        index: str | None = None,
    ) -> Bom:
        """The files downloaded (successfully) in a time window, by a token or a team's tokens,
        from the audit log; one component per file."""
        rt = self._rt
        await rt.audit.flush()
        actors: list[str] | None = None
        if token is not None:
            actors = [token]
        if team is not None:
            team_tokens = [t.info.id for t in await rt.tokens.list(team=team)]
            if not team_tokens and team not in {t.name for t in await rt.teams.list()}:
                raise NotFound(f"no team named {team!r}", "see `stockade team list`")
            actors = team_tokens if actors is None else [a for a in actors if a in team_tokens]
        q = select(AuditRow.index_name, AuditRow.project, AuditRow.filename).where(
            AuditRow.action == "download", AuditRow.outcome == "ok", AuditRow.at >= since
        )
        if until is not None:
            q = q.where(AuditRow.at < until)
        if actors is not None:
            q = q.where(AuditRow.actor.in_(actors or ["-"]))
        if index is not None:
            q = q.where(AuditRow.index_name == index)
        async with rt.sessions() as s:
            rows = (await s.execute(q.distinct().limit(MAX_DOWNLOAD_EVENTS))).all()
            names = sorted({r.filename for r in rows if r.filename})
            shas: dict[str, str] = {}
            for i in range(0, len(names), 500):
                fq = select(FileRow.filename, FileRow.sha256).where(
                    FileRow.filename.in_(names[i : i + 500])
                )
                for filename, sha in (await s.execute(fq)).all():
                    shas.setdefault(filename, sha)
        facts = await rt.metadata.get_many(shas.values())
        components = []
        for index_name, project, filename in rows:
            if not filename or not project:
                continue
            sha = shas.get(filename)
            fact = facts.get(sha) if sha else None
            components.append(
                component(
                    PYPI,
                    project,
                    version_from_filename(filename),
                    hashes=[f"sha256:{sha}"] if sha else (),
                    details=Details(
                        license=fact.license if fact else None,
                        license_raw=fact.license_raw if fact else None,
                    ),
                    filename=filename,
                    source=f"downloaded from index {index_name}",
                )
            )
        who = f"token {token}" if token else f"team {team}" if team else "everyone"
        bom = Bom(f"downloads of {who} since {since.date().isoformat()}", "downloads", ())
        return bom.with_components(components)

    # -- the curated VEX feed ------------------------------------------------------------------

    async def vex_statements(self, index_name: str) -> tuple[list[Statement], int]:
        """The experts' current decisions (newest curation per advisory, package and version
        set), with products as purls: every version when a curation covers all of them, else
        the listed conda versions, or the versions of the project the index serves that a
        PEP 440 range covers. Also the id of the newest curation (the feed's version)."""
        rt = self._rt
        index = await rt.indexes.get(index_name)
        async with rt.sessions() as s:
            rows = list(
                (await s.execute(select(CurationRow).order_by(CurationRow.id.desc()))).scalars()
            )
            last = rows[0].id if rows else 0
            newest: dict[tuple[str, str, str, str], CurationRow] = {}
            for row in rows:
                key = (row.advisory_id, row.ecosystem, row.package, row.versions or "")
                newest.setdefault(key, row)
            ids = sorted({k[0] for k in newest})
            aliases: dict[str, list[str]] = {}
            for i in range(0, len(ids), 500):
                aq = select(AdvisoryAliasRow.advisory_id, AdvisoryAliasRow.alias).where(
                    AdvisoryAliasRow.advisory_id.in_(ids[i : i + 500])
                )
                for adv, alias in (await s.execute(aq)).all():
                    aliases.setdefault(adv, []).append(alias)
        out = []
        for (adv, eco, package, versions), row in sorted(newest.items()):
            if row.status == "feed":
                continue
            products = await self._products(index, eco, package, versions)
            if not products:
                continue
            when = aware(row.created_at)
            out.append(
                Statement(
                    vulnerability=adv,
                    aliases=tuple(sorted(aliases.get(adv, ()))),
                    products=tuple(products),
                    status=row.status,
                    justification=row.justification if row.status == "not_affected" else None,
                    impact="; ".join(x for x in (row.reason, row.note) if x) or None,
                    timestamp=when.isoformat() if when else None,
                    author=row.author,
                )
            )
        return out, last

    async def _products(self, index: IndexInfo, eco: str, package: str, versions: str) -> list[str]:
        if not versions:
            return [purl_for(eco, package, None)]
        if eco == CONDA or eco != PYPI:
            return [purl_for(eco, package, v.strip()) for v in versions.split(",") if v.strip()]
        try:
            spec = SpecifierSet(versions)
            served = await self._rt.pages.project_page(index, NormalizedName(package))
        except (InvalidSpecifier, StockadeError):
            return []
        found = []
        for v in served.page.versions:
            try:
                if spec.contains(v, prereleases=True):
                    found.append(purl_for(PYPI, package, v))
            except InvalidVersion:
                continue
        return found


def parse_since(text: str, now: dt.datetime) -> dt.datetime:
    """``7d``, ``12h``, ``2w`` (before now) or an ISO date/time."""
    from stockade.core.auth import parse_duration

    try:
        return now - parse_duration(text)
    except (ValueError, InvalidRequest):
        pass
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise InvalidRequest(
            f"--since {text!r} is neither a duration nor a date",
            "use e.g. 7d, 12h, 2w or 2026-01-31",
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)
