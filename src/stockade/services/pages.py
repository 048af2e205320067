"""Project pages for every index kind, cached as rendered bytes.

* private: built from the files table;
* mirror: the upstream page, parsed into the page model, kept in ``mirror_pages`` and revalidated
  (conditional GET) after ``page_ttl``; served stale, flagged, when the upstream fails;
* virtual: the members combined by :func:`stockade.core.virtual.merge` (private first).
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from stockade.adapters.pypi import UpstreamIndex
from stockade.core.policy.model import Decision, Reason, member_block
from stockade.core.simple import (
    JSON_V1,
    FileEntry,
    ProjectPage,
    blocked_metadata,
    render_html,
    render_json,
    version_from_filename,
)
from stockade.core.virtual import MemberPage, merge
from stockade.errors import InvalidRequest, NotFound, StockadeError, UpstreamError
from stockade.services import repo
from stockade.services.audit import AuditLog
from stockade.services.indexes import IndexService
from stockade.services.policies import PolicyService, parse_time
from stockade.services.provenance import STORED, ProvenanceService
from stockade.services.repo import IndexInfo
from stockade.settings import Settings
from stockade.types import IndexKind, NormalizedName

log = logging.getLogger("stockade.pages")
STALE_RETRY = 30.0  # seconds before a failed upstream is tried again for a stale page
FAIL_RETRY = 5.0  # seconds a failure (with nothing cached) is answered without asking again
POLICY_RECHECK = 300.0  # seconds: pages under time-based rules are re-decided this often
MAX_ENTRIES = 50_000  # pages (and remembered misses) kept per process; oldest go first
MAX_DEPTH = 8


@dataclass(slots=True)
class Rendered:
    body: bytes
    etag: str
    gz: bytes | None = None

    def gzipped(self) -> bytes:
        if self.gz is None:
            self.gz = gzip.compress(self.body, compresslevel=6, mtime=0)
        return self.gz


@dataclass(slots=True)
class ServedPage:
    page: ProjectPage
    kind: IndexKind
    fresh_until: float  # time.monotonic() deadline; inf for private
    stale: str | None = None  # reason the page is stale, if it is
    renders: dict[str, Rendered] = field(default_factory=dict)
    # Policy decisions for every file of the unfiltered page (empty: the index has no policy).
    decisions: dict[str, Decision] = field(default_factory=dict)
    unfiltered: ProjectPage | None = None  # the page before the policy (None: no policy)

    def blocked(self, filename: str) -> Decision | None:
        d = self.decisions.get(filename)
        if d is not None:
            return None if d.allowed else d
        entry = self.page.file(filename)  # listed as blocked by a member index's policy
        if entry is not None and entry.blocked is not None:
            return member_block(entry.origin, entry.blocked)
        return None

    def explain(self, version: str | None = None) -> list[dict[str, Any]]:
        """Per file (listed or hidden): allowed or blocked, by which rule, with which data."""
        names = dict.fromkeys([*self.decisions, *(f.filename for f in self.page.files)])
        rows = []
        for filename in names:
            file_version = version_from_filename(filename)
            if version is not None and file_version != version:
                continue
            d = self.decisions.get(filename) or self.blocked(filename)
            rows.append(
                {
                    "filename": filename,
                    "version": file_version,
                    "allowed": d is None or d.allowed,
                    "blocked_by": [x.line() for x in d.blocks] if d else [],
                    "warnings": [x.line() for x in d.warnings] if d else [],
                    "exception": d.exception if d else None,
                }
            )
        return rows

    def render(self, ctype: str) -> Rendered:
        key = "json" if ctype == JSON_V1 else "html"
        r = self.renders.get(key)
        if r is None:
            body = render_json(self.page) if key == "json" else render_html(self.page)
            r = Rendered(body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')
            self.renders[key] = r
        return r


class PageService:
    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        indexes: IndexService,
        upstreams: dict[str, UpstreamIndex],
        upstream_factory: object,
        audit: AuditLog,
        policies: PolicyService,
    ) -> None:
        self._settings = settings
        self._sessions = sessions
        self._indexes = indexes
        self._upstream_factory = upstream_factory
        self._upstreams = upstreams
        self._audit = audit
        self._policies = policies
        self._cache: dict[tuple[str, str], ServedPage | None] = {}
        self._neg_until: dict[tuple[str, str], float] = {}
        self._failed: dict[tuple[str, str], tuple[float, UpstreamError]] = {}
        self._inflight: dict[tuple[str, str], asyncio.Task[ServedPage | None]] = {}
        # Called with every page a mirror fetched or revalidated upstream (identity checks).
        self.on_mirror_page: Callable[[IndexInfo, ProjectPage], None] | None = None
        # Called with every page built (None: the index has no such project): TUF signing.
        self.on_page: Callable[[IndexInfo, str, ServedPage | None], None] | None = None
        # PEP 740: files whose provenance failed verification are refused, policy or not.
        self.provenance: ProvenanceService | None = None

    def clear(self, index: str | None = None) -> None:
        if index is None:
            self._cache.clear()
            self._neg_until.clear()
            self._failed.clear()
            return
        for key in [k for k in self._cache if k[0] == index]:
            del self._cache[key]

    def clear_project(self, project: str) -> None:
        for key in [k for k in self._cache if k[1] == project]:
            del self._cache[key]
        for key in [k for k in self._neg_until if k[1] == project]:
            del self._neg_until[key]

    def upstream(self, index: IndexInfo) -> UpstreamIndex:
        up = self._upstreams.get(index.name)
        if up is None or up.simple_url != index.upstream_url:
            assert callable(self._upstream_factory)
            up = self._upstream_factory(index.upstream_url)
            assert isinstance(up, UpstreamIndex)
            self._upstreams[index.name] = up
        return up

    def cached(self, index: str, project: str) -> ServedPage | None:
        """A fresh cached page, or None (no I/O): the web fast path's only page lookup."""
        served = self._cache.get((index, project))
        if served is not None and served.fresh_until > time.monotonic():
            return served
        return None

    async def needs_scan(self, index: IndexInfo, depth: int = 0) -> bool:
        """Whether a file served through ``index`` must have a scanner verdict first."""
        policy = await self._policies.current(index.name)
        if policy is not None and policy.needs_scan:
            return True
        if index.kind is IndexKind.VIRTUAL and depth <= MAX_DEPTH:
            for m in index.members:
                if await self.needs_scan(await self._indexes.get(m), depth + 1):
                    return True
        return False

    async def project_page(self, index: IndexInfo, project: NormalizedName) -> ServedPage:
        served = await self._page(index, project, 0)
        if served is None:
            raise NotFound(f"project {project!r} is not on index {index.name!r}")
        return served

    async def explain(
        self, index: IndexInfo, project: NormalizedName, version: str | None = None
    ) -> list[dict[str, Any]]:
        """``policy explain``: the page's decisions, with every rule evaluated (serving skips
        custom rules on files other rules already block)."""
        served = await self.project_page(index, project)
        policy = await self._policies.current(index.name)
        if policy is not None and served.unfiltered is not None and policy.has_custom:
            decisions = await self._policies.decide(policy, served.unfiltered, index=index.name)
            served = replace(served, decisions=decisions)
        return served.explain(version)

    async def _page(
        self, index: IndexInfo, project: NormalizedName, depth: int
    ) -> ServedPage | None:
        if depth > MAX_DEPTH:
            raise InvalidRequest(f"virtual index {index.name!r} nests too deeply (a cycle?)")
        key = (index.name, project)
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and cached.fresh_until > now:
            return cached
        if cached is None and key in self._cache and self._neg_until.get(key, 0) > now:
            return None
        if index.kind is IndexKind.PRIVATE:
            served = await self._private(index, project)
        elif index.kind is IndexKind.MIRROR:
            failed = self._failed.get(key)
            if failed is not None and failed[0] > now:
                raise failed[1]  # the upstream failed moments ago: do not hammer it
            task = self._inflight.get(key)
            if task is None:
                task = asyncio.create_task(self._mirror(index, project))
                self._inflight[key] = task
                task.add_done_callback(lambda _t: self._inflight.pop(key, None))
            served = await asyncio.shield(task)
        else:
            served = await self._virtual(index, project, depth)
        if served is not None:
            served = await self._apply_policy(index, served)
        self._remember(key, served)
        if self.on_page is not None:
            self.on_page(index, project, served)
        if served is None:
            ttl = self._settings.page_ttl if index.kind is not IndexKind.PRIVATE else 3600.0
            self._neg_until[key] = now + min(ttl, 60.0)
        return served

    async def _apply_policy(self, index: IndexInfo, served: ServedPage) -> ServedPage:
        """Keep only the files the index's policy allows; remember every decision. Files
        whose PEP 740 provenance failed verification are blocked whatever the policy says."""
        policy = await self._policies.current(index.name)
        refused = (
            await self.provenance.failures(index.name, served.page)
            if self.provenance is not None
            else {}
        )
        if policy is None and not refused:
            return served
        if policy is not None:
            decisions = await self._policies.decide(
                policy, served.page, index=index.name, complete=False
            )
        else:
            decisions = {f.filename: _ALLOWED for f in served.page.files}
        for name, why in refused.items():
            decisions[name] = Decision(False, (Reason(0, "provenance", "enforce", why),))
        if policy is None:
            listed = tuple(
                f
                if decisions[f.filename].allowed
                else _listed_blocked(served.page, f, decisions[f.filename])
                for f in served.page.files
            )
            return ServedPage(
                page=replace(served.page, files=listed),
                kind=served.kind,
                fresh_until=served.fresh_until,
                stale=served.stale,
                decisions=decisions,
                unfiltered=served.page,
            )
        if policy.show_blocked:
            listed = tuple(
                f
                if decisions[f.filename].allowed
                else _listed_blocked(served.page, f, decisions[f.filename])
                for f in served.page.files
            )
        else:
            listed = tuple(f for f in served.page.files if decisions[f.filename].allowed)
        if decisions and all(
            not d.allowed and any(r.requestable for r in d.blocks) for d in decisions.values()
        ):  # someone looked for a project the allow-list refuses altogether
            await self._policies.note_request(index.name, served.page.name, None, None)
        for name, d in decisions.items():
            if d.warnings:
                self._audit.record(
                    "policy.warn",
                    index=index.name,
                    project=served.page.name,
                    filename=name,
                    outcome="warned",
                    rules=[r.line() for r in d.warnings],
                )
        fresh_until = served.fresh_until
        if policy.time_based:  # quarantine and grace periods end by themselves
            fresh_until = min(fresh_until, time.monotonic() + POLICY_RECHECK)
            now = repo.utcnow()
            times = [t for f in served.page.files if (t := parse_time(f.upload_time))]
            ends = policy.next_change(times, now)
            if ends is not None:  # re-decide the moment a quarantine ends
                left = (ends - now).total_seconds()
                fresh_until = min(fresh_until, time.monotonic() + max(left, 0.0))
        expiry = await self._policies.next_expiry(index.name)
        if expiry is not None:  # so do exceptions
            left = (expiry - repo.utcnow()).total_seconds()
            fresh_until = min(fresh_until, time.monotonic() + max(left, 0.0))
        return ServedPage(
            page=replace(served.page, files=listed),
            kind=served.kind,
            fresh_until=fresh_until,
            stale=served.stale,
            decisions=decisions,
            unfiltered=served.page,
        )

    def _remember(self, key: tuple[str, str], served: ServedPage | None) -> None:
        self._cache.pop(key, None)
        self._cache[key] = served
        if len(self._cache) > MAX_ENTRIES:
            for old in list(self._cache)[: MAX_ENTRIES // 10]:
                del self._cache[old]
                self._neg_until.pop(old, None)
        if len(self._failed) > MAX_ENTRIES:
            self._failed.clear()

    async def _private(self, index: IndexInfo, project: NormalizedName) -> ServedPage | None:
        async with self._sessions() as s:
            files = await repo.list_files(s, index.id, project)
        if not files:
            return None
        attested = (
            await self.provenance.stored_files(index.name, project)
            if self.provenance is not None
            else set()
        )
        entries = tuple(
            FileEntry(
                filename=f.filename,
                sha256=f.sha256,
                requires_python=f.requires_python,
                yanked=f.yanked,
                yanked_reason=f.yanked_reason,
                metadata_sha256=f.metadata_sha256,
                has_metadata=f.metadata_sha256 is not None,
                size=f.size,
                upload_time=f.upload_time.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                origin=index.name,
                provenance=STORED if f.filename in attested else None,
            )
            for f in files
        )
        page = ProjectPage(name=project, files=entries)
        return ServedPage(page, IndexKind.PRIVATE, float("inf"))

    async def _mirror(self, index: IndexInfo, project: NormalizedName) -> ServedPage | None:
        ttl = float(self._settings.page_ttl)
        up = self.upstream(index)
        async with self._sessions() as s:
            rec = await repo.get_page(s, index.id, project)
        now_wall = repo.utcnow()
        if rec is not None:
            age = (now_wall - rec.fetched_at).total_seconds()
            if age < ttl:  # another process (or an earlier run) refreshed it recently
                if not rec.exists_upstream:
                    return None
                return self._mirror_served(index, up, rec.data, ttl - age)
        try:
            got = await up.fetch_page(
                project,
                etag=rec.etag if rec and rec.exists_upstream else None,
                last_modified=rec.last_modified if rec and rec.exists_upstream else None,
            )
        except StockadeError as exc:
            if rec is not None and rec.exists_upstream and rec.data:
                log.warning("serving stale %s/%s: %s", index.name, project, exc.message)
                self._audit.record(
                    "upstream.stale", index=index.name, project=project, reason=exc.message
                )
                served = self._mirror_served(index, up, rec.data, STALE_RETRY)
                served.stale = exc.message
                return served
            err = exc if isinstance(exc, UpstreamError) else UpstreamError(exc.message, exc.hint)
            self._failed[(index.name, project)] = (time.monotonic() + FAIL_RETRY, err)
            raise err from exc
        async with self._sessions() as s, s.begin():
            if got.status == "not_found":
                await repo.upsert_page(
                    s,
                    index.id,
                    project,
                    data=None,
                    etag=None,
                    last_modified=None,
                    exists_upstream=False,
                )
                return None
            if got.status == "not_modified" and rec is not None:
                await repo.upsert_page(
                    s,
                    index.id,
                    project,
                    data=None,
                    etag=got.etag or rec.etag,
                    last_modified=got.last_modified or rec.last_modified,
                    exists_upstream=True,
                )
                return self._observed(index, self._mirror_served(index, up, rec.data, ttl))
            assert got.page is not None
            pinned = await self._pin_stored(s, index, got.page)
            data = pinned.to_json().decode()
            await repo.upsert_page(
                s,
                index.id,
                project,
                data=data,
                etag=got.etag,
                last_modified=got.last_modified,
                exists_upstream=True,
            )
        return self._observed(index, self._mirror_served(index, up, data, ttl))

    def _observed(self, index: IndexInfo, served: ServedPage) -> ServedPage:
        if self.on_mirror_page is not None:
            self.on_mirror_page(index, served.page)
        return served

    async def _pin_stored(
        self, s: AsyncSession, index: IndexInfo, page: ProjectPage
    ) -> ProjectPage:
        """Keep serving the verified bytes of files already stored when the upstream now
        publishes another digest for the same filename (PyPI files are immutable: a changed
        digest means the upstream or the path to it was tampered with)."""
        stored = {f.filename: f for f in await repo.list_files(s, index.id, page.name)}
        if not stored:
            return page
        files = []
        for f in page.files:
            mine = stored.get(f.filename)
            if mine is not None and f.sha256 and f.sha256.lower() != mine.sha256:
                log.warning("upstream digest changed for %s on %s", f.filename, index.name)
                self._audit.record(
                    "upstream.digest_changed",
                    index=index.name,
                    project=page.name,
                    filename=f.filename,
                    outcome="blocked",
                    stored=mine.sha256,
                    published=f.sha256.lower(),
                )
                f = replace(f, sha256=mine.sha256, size=mine.size)
            files.append(f)
        return replace(page, files=tuple(files))

    def _mirror_served(
        self, index: IndexInfo, up: UpstreamIndex, data: str, ttl: float
    ) -> ServedPage:
        page = ProjectPage.from_json(data).with_origin(index.name)
        page = ProjectPage(
            name=page.name,
            files=page.files,
            tracks=(up.project_url(page.name),),
            extra_versions=page.extra_versions,
        )
        return ServedPage(page, IndexKind.MIRROR, time.monotonic() + ttl)

    async def _virtual(
        self, index: IndexInfo, project: NormalizedName, depth: int
    ) -> ServedPage | None:
        members = [await self._indexes.get(m) for m in index.members]
        # Pass 1: private members (and nested virtuals that resolve privately). Mirrors are not
        # even asked when a private member has the name: dependency confusion by construction.
        found: list[MemberPage] = []
        for m in members:
            if m.kind is IndexKind.MIRROR:
                continue
            sp = await self._page(m, project, depth + 1)
            if sp is not None and sp.kind is IndexKind.PRIVATE:
                found.append(MemberPage(m.name, IndexKind.PRIVATE, sp.page))
        if not found:
            for m in members:
                if m.kind is IndexKind.PRIVATE:
                    continue
                sp = await self._page(m, project, depth + 1)
                if sp is not None:
                    found.append(MemberPage(m.name, IndexKind.MIRROR, sp.page))
                    res = merge(project, found)
                    assert res is not None
                    page = ProjectPage(
                        name=project,
                        files=res.page.files,
                        tracks=sp.page.tracks,
                        extra_versions=sp.page.extra_versions,
                    )
                    return ServedPage(page, IndexKind.MIRROR, sp.fresh_until, stale=sp.stale)
            return None
        res = merge(project, found)
        assert res is not None
        return ServedPage(res.page, IndexKind.PRIVATE, float("inf"))

    async def project_list(self, index: IndexInfo, depth: int = 0) -> list[str]:
        """Projects an index can list without asking any upstream for its full name list."""
        if depth > MAX_DEPTH:
            return []
        if index.kind is IndexKind.VIRTUAL:
            names: set[str] = set()
            for m in index.members:
                names.update(await self.project_list(await self._indexes.get(m), depth + 1))
            return sorted(names)
        async with self._sessions() as s:
            if index.kind is IndexKind.PRIVATE:
                return await repo.list_projects(s, index.id)
            return await repo.mirror_projects(s, index.id)


_ALLOWED = Decision(True)


def _listed_blocked(page: ProjectPage, f: FileEntry, decision: Decision) -> FileEntry:
    """A blocked file as its page lists it: yanked with the reason, and with core metadata
    (Stockade's own when the upstream has none) so pip resolves far enough to print it."""
    why = _why(decision)
    if f.has_metadata or f.version is None:
        return replace(f, blocked=why)
    meta = blocked_metadata(page.name, f.version, why)
    return replace(
        f,
        blocked=why,
        has_metadata=True,
        metadata_sha256=hashlib.sha256(meta).hexdigest(),
        synthetic_metadata=True,
    )


def _why(decision: Decision) -> str:
    """The one line a client shows for a blocked file."""
    return "; ".join(r.line() for r in decision.blocks)
