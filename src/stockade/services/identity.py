"""Author impersonation: record who publishes each mirrored project, and find changes.

When a mirror builds a project page, :meth:`IdentityService.observe_later` schedules (at most once
per :data:`OBSERVE_EVERY` per project and process, in the background, bounded) a look at

* the upstream's JSON API (``<upstream>/../pypi/<project>/json``, PyPI's layout): owners
  (``ownership``), author/maintainer e-mails, project URLs, first upload. A row is appended to
  ``project_owners`` only when something changed;
* the PEP 740 provenance of the newest :data:`PROVENANCE_VERSIONS` versions not seen yet (the
  ``provenance`` URL the simple API gives per file): the Trusted Publisher, one row per version
  in ``version_identities``.

:meth:`findings` assesses the history with :func:`stockade.core.identity.assess`; the policy
engine adds the findings to the files of the versions they name (``threats`` rules block the
``suspicious`` tier when told to). New findings are audited (``threat.finding``) and make every
process re-decide its pages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from packaging.utils import canonicalize_name
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from stockade.core.identity import (
    IdentityFinding,
    Owners,
    ProjectInfo,
    VersionIdentity,
    assess,
    parse_project_json,
    parse_provenance,
)
from stockade.core.simple import FileEntry, ProjectPage, version_key
from stockade.core.threats.typosquat import PopularNames
from stockade.db.models import ProjectOwnersRow, VersionIdentityRow
from stockade.errors import StockadeError
from stockade.services.audit import AuditLog
from stockade.services.provenance import ProvenanceService
from stockade.services.repo import IndexInfo, aware, utcnow
from stockade.types import IndexKind

log = logging.getLogger("stockade.identity")

OBSERVE_EVERY = 6 * 3600.0  # seconds between looks at one project (per process)
PROVENANCE_VERSIONS = 10  # newest versions whose provenance one look fetches
JSON_MAX = 32 * 1024**2  # PyPI's JSON for projects with thousands of releases is large
PROVENANCE_MAX = 1024**2
CONCURRENCY = 4
POPULAR_TOP = 5000  # "popular": among the top 5,000 of the popular-projects list


def json_api_url(upstream: str | None, project: str) -> str | None:
    """PyPI's JSON API URL for a project, from a mirror's simple URL (``…/simple/`` →
    ``…/pypi/<project>/json``); None when the upstream does not look like PyPI's layout."""
    if not upstream:
        return None
    parts = urlsplit(upstream)
    path = parts.path.rstrip("/")
    if not path.endswith("/simple") and path != "simple":
        return None
    base = path[: -len("simple")]
    return urlunsplit((parts.scheme, parts.netloc, f"{base}pypi/{project}/json", "", ""))


class _Popular:
    """``name in popular``: among the top of the popular-projects list."""

    def __init__(self, names: PopularNames) -> None:
        self._names = names

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        rank = self._names.rank(name)
        return rank is not None and rank <= POPULAR_TOP


class IdentityService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        client: httpx.AsyncClient,
        audit: AuditLog,
        changed: Callable[[], None],
        popular: Callable[[], PopularNames],
    ) -> None:
        self._sessions = sessions
        self._client = client
        self._audit = audit
        self._changed = changed
        self._popular = popular
        self._last: dict[tuple[str, str], float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._sem = asyncio.Semaphore(CONCURRENCY)
        self._cache: dict[tuple[str, str], list[IdentityFinding]] = {}
        # PEP 740: publishers are taken from verified provenance only (None: as reported).
        self.provenance: ProvenanceService | None = None

    def clear(self) -> None:
        self._cache.clear()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # -- observing -----------------------------------------------------------------------------

    def observe_later(self, index: IndexInfo, page: ProjectPage) -> None:
        """Schedule a look at a mirrored project (throttled per project and process)."""
        if index.kind is not IndexKind.MIRROR:
            return
        key = (index.name, page.name)
        now = time.monotonic()
        if now - self._last.get(key, -OBSERVE_EVERY) < OBSERVE_EVERY:
            return
        self._last[key] = now
        task = asyncio.create_task(self._observe_quietly(index, page))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _observe_quietly(self, index: IndexInfo, page: ProjectPage) -> None:
        try:
            async with self._sem:
                await self.observe(index, page)
        except Exception as exc:  # a background look must never break serving
            log.warning("identity of %s/%s: %s", index.name, page.name, exc)

    async def observe(self, index: IndexInfo, page: ProjectPage) -> list[IdentityFinding]:
        """Look at a mirrored project now; returns the findings that are new."""
        before = await self.findings(index.name, page.name)
        info = await self._project_info(index, page.name)
        rows = await self._version_rows(index, page)  # network first, then one write
        now = utcnow()
        async with self._sessions() as s, s.begin():
            if info is not None:
                await self._record_owners(s, index.name, page.name, info, now)
            for row in rows:
                row.observed_at = now
                try:
                    async with s.begin_nested():
                        s.add(row)
                except IntegrityError:  # another process recorded it first
                    continue
        return await self._announce(index.name, page.name, before)

    async def _announce(
        self, index: str, project: str, before: list[IdentityFinding]
    ) -> list[IdentityFinding]:
        """Audit the findings that are new since ``before``; re-decide pages if any."""
        self._cache.pop((index, project), None)
        after = await self.findings(index, project)
        known = {(f.rule, f.version) for f in before}
        new = [f for f in after if (f.rule, f.version) not in known]
        for f in new:
            self._audit.record(
                "threat.finding",
                index=index,
                project=project,
                version=f.version,
                rule=f.rule,
                tier=f.tier,
                reason=f.message,
            )
        if new:
            self._changed()
        return new

    async def record_version(
        self,
        index: str,
        project: str,
        version: str,
        publisher: str | None,
        provenance: bool,
        uploaded: datetime | None,
    ) -> list[IdentityFinding]:
        """Record who published a version (a private upload, with or without verified
        attestations); the first file of a version decides. Returns the new findings."""
        before = await self.findings(index, project)
        try:
            async with self._sessions() as s, s.begin():
                s.add(
                    VersionIdentityRow(
                        index_name=index,
                        project=project,
                        version=version,
                        publisher=publisher,
                        provenance=provenance,
                        uploaded_at=uploaded,
                        observed_at=utcnow(),
                    )
                )
        except IntegrityError:  # the version is recorded already
            return []
        return await self._announce(index, project, before)

    async def _get(self, url: str, cap: int) -> bytes | None:
        try:
            async with self._client.stream("GET", url, headers={"Accept": "application/json"}) as r:
                if r.status_code != 200:
                    log.info("identity: %s answered %s", url, r.status_code)
                    return None
                body = bytearray()
                async for chunk in r.aiter_bytes():
                    body.extend(chunk)
                    if len(body) > cap:
                        log.info("identity: %s is larger than %d bytes; skipped", url, cap)
                        return None
                return bytes(body)
        except httpx.HTTPError as exc:
            log.info("identity: %s: %s", url, exc)
            return None

    async def _project_info(self, index: IndexInfo, project: str) -> ProjectInfo | None:
        url = json_api_url(index.upstream_url, project)
        if url is None:
            return None
        body = await self._get(url, JSON_MAX)
        if body is None:
            return None
        try:
            return parse_project_json(body)
        except (ValueError, TypeError, AttributeError) as exc:
            log.info("identity: %s is not a JSON API answer: %s", url, exc)
            return None

    async def _record_owners(
        self, s: AsyncSession, index: str, project: str, info: ProjectInfo, now: datetime
    ) -> None:
        q = (
            select(ProjectOwnersRow)
            .where(ProjectOwnersRow.index_name == index, ProjectOwnersRow.project == project)
            .order_by(ProjectOwnersRow.id.desc())
            .limit(1)
        )
        last = (await s.execute(q)).scalar_one_or_none()
        owners = list(info.owners) if info.owners is not None else None
        same = last is not None and (
            last.owners == owners
            and last.organization == info.organization
            and list(last.emails) == list(info.emails)
            and list(last.urls) == list(info.urls)
        )
        if same:
            return
        s.add(
            ProjectOwnersRow(
                index_name=index,
                project=project,
                owners=owners,
                organization=info.organization,
                emails=list(info.emails),
                urls=list(info.urls),
                first_upload=info.first_upload,
                observed_at=now,
            )
        )

    async def _version_rows(self, info: IndexInfo, page: ProjectPage) -> list[VersionIdentityRow]:
        """Rows for the newest versions not recorded yet, with their provenance's publisher
        (verified: a refused provenance counts as none)."""
        index = info.name
        async with self._sessions() as s:
            q = select(VersionIdentityRow.version).where(
                VersionIdentityRow.index_name == index, VersionIdentityRow.project == page.name
            )
            seen = set((await s.execute(q)).scalars())
        speaks_pep740 = any(f.provenance for f in page.files)
        by_version: dict[str, list[FileEntry]] = {}
        for f in page.files:
            if f.version and f.version not in seen:
                by_version.setdefault(f.version, []).append(f)
        newest = sorted(by_version, key=version_key, reverse=True)[:PROVENANCE_VERSIONS]
        out: list[VersionIdentityRow] = []
        for version in newest:
            files = by_version[version]
            times = [t for f in files if (t := _time(f.upload_time))]
            publisher: str | None = None
            provenance: bool | None = False if speaks_pep740 else None
            attested = next((f for f in files if f.provenance), None)
            if attested is not None and self.provenance is not None:
                try:
                    rec = await self.provenance.ensure(info, page.name, attested)
                except StockadeError as exc:
                    log.info("identity: provenance of %s: %s", attested.filename, exc.message)
                    continue  # try again on the next look
                provenance = rec is not None and rec.verified
                publisher = rec.publisher.label if rec and rec.publisher else None
            elif attested is not None and attested.provenance:
                body = await self._get(attested.provenance, PROVENANCE_MAX)
                if body is None:
                    continue  # try again on the next look
                try:
                    publishers = parse_provenance(body)
                except (ValueError, TypeError, AttributeError) as exc:
                    log.info("identity: provenance of %s: %s", attested.filename, exc)
                    publishers = []
                provenance = bool(publishers)
                publisher = publishers[0] if publishers else None
            out.append(
                VersionIdentityRow(
                    index_name=index,
                    project=page.name,
                    version=version,
                    publisher=publisher,
                    provenance=provenance,
                    uploaded_at=min(times) if times else None,
                )
            )
        return out

    # -- reading -------------------------------------------------------------------------------

    async def findings(self, index: str, project: str) -> list[IdentityFinding]:
        key = (index, project)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        versions, owners, info = await self._history(index, project)
        popular_emails = await self._popular_emails(index, info) if info else None
        found = assess(
            project,
            versions,
            owners,
            info,
            popular=_Popular(self._popular()),
            popular_emails=popular_emails,
        )
        self._cache[key] = found
        return found

    async def _history(
        self, index: str, project: str
    ) -> tuple[list[VersionIdentity], list[Owners], ProjectInfo | None]:
        async with self._sessions() as s:
            q = select(VersionIdentityRow).where(
                VersionIdentityRow.index_name == index, VersionIdentityRow.project == project
            )
            rows = list((await s.execute(q)).scalars())
            q2 = (
                select(ProjectOwnersRow)
                .where(ProjectOwnersRow.index_name == index, ProjectOwnersRow.project == project)
                .order_by(ProjectOwnersRow.id)
            )
            owner_rows = list((await s.execute(q2)).scalars())
        rows.sort(key=lambda r: version_key(r.version))
        versions = [
            VersionIdentity(r.version, r.publisher, r.provenance, aware(r.uploaded_at))
            for r in rows
        ]
        owners = [
            Owners(tuple(r.owners), r.organization, aware(r.observed_at) or utcnow())
            for r in owner_rows
            if r.owners is not None
        ]
        info = None
        if owner_rows:
            last = owner_rows[-1]
            info = ProjectInfo(
                tuple(last.owners) if last.owners is not None else None,
                last.organization,
                tuple(last.emails),
                tuple(last.urls),
                aware(last.first_upload),
            )
        return versions, owners, info

    async def _popular_emails(
        self, index: str, info: ProjectInfo
    ) -> dict[str, list[tuple[str, tuple[str, ...]]]]:
        """Popular projects (recorded on this mirror) sharing one of ``info``'s e-mails."""
        if not info.emails:
            return {}
        popular = _Popular(self._popular())
        wanted = set(info.emails)
        latest: dict[str, ProjectOwnersRow] = {}
        async with self._sessions() as s:
            q = (
                select(ProjectOwnersRow)
                .where(ProjectOwnersRow.index_name == index)
                .order_by(ProjectOwnersRow.id)
            )
            for row in (await s.execute(q)).scalars():
                latest[row.project] = row
        out: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
        for name, row in latest.items():
            if name not in popular:
                continue
            for email in set(row.emails) & wanted:
                out.setdefault(email, []).append((name, tuple(row.owners or ())))
        return out

    async def report(self, index: str, project: str) -> dict[str, Any]:
        """What Stockade recorded about a project's publishers and owners, and its findings."""
        name = canonicalize_name(project)
        versions, owners, info = await self._history(index, name)
        found = await self.findings(index, name)
        return {
            "index": index,
            "project": name,
            "versions": [
                {
                    "version": v.version,
                    "publisher": v.publisher,
                    "provenance": v.provenance,
                    "uploaded": v.uploaded.isoformat() if v.uploaded else None,
                }
                for v in versions
            ],
            "owners": [
                {
                    "users": list(o.users),
                    "organization": o.organization,
                    "observed": o.observed.isoformat(),
                }
                for o in owners
            ],
            "emails": list(info.emails) if info else [],
            "urls": list(info.urls) if info else [],
            "first_upload": info.first_upload.isoformat() if info and info.first_upload else None,
            "findings": [
                {
                    "rule": f.rule,
                    "version": f.version,
                    "tier": f.tier,
                    "severity": f.severity,
                    "message": f.message,
                }
                for f in found
            ],
        }


def _time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return aware(datetime.fromisoformat(text.replace("Z", "+00:00")))
    except ValueError:
        return None
