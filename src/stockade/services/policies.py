"""Policies per index: versioned storage, a per-process cache, and explanations."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion
from sqlalchemy import func, literal_column, null, select, union_all
from sqlalchemy.exc import IntegrityError as DBIntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from stockade.core.auth import parse_duration
from stockade.core.policy import FileFacts, Policy, VulnFact, evaluate, parse_policy
from stockade.core.policy.model import Decision, FindingFact, add_custom, member_block
from stockade.core.provenance import Publisher
from stockade.core.simple import FileEntry, ProjectPage
from stockade.core.threats.typosquat import PopularNames, check_name
from stockade.core.vulns.versions import PYPI
from stockade.db.models import (
    PolicyApprovalRow,
    PolicyExceptionRow,
    PolicyRequestRow,
    PolicyRow,
)
from stockade.errors import InvalidRequest, NotFound
from stockade.services.metadata import MetadataService
from stockade.services.repo import aware, utcnow
from stockade.services.threats import ScanReport, ThreatService
from stockade.services.vulndb import VulnDB

if TYPE_CHECKING:
    from stockade.services.identity import IdentityService
    from stockade.services.provenance import ProvenanceService


@dataclass(frozen=True, slots=True)
class PolicyException:
    id: int
    index: str
    project: str
    specifier: str | None
    reason: str
    author: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    def active(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)

    def covers(self, project: str, version: str | None) -> bool:
        return _matches(self.project, self.specifier, project, version)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "index": self.index,
            "project": self.project,
            "specifier": self.specifier,
            "reason": self.reason,
            "author": self.author,
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }


@dataclass(frozen=True, slots=True)
class PolicyApproval:
    id: int
    index: str
    project: str
    specifier: str | None
    reason: str | None
    author: str | None
    created_at: datetime
    revoked_at: datetime | None

    def covers(self, project: str, version: str | None) -> bool:
        return self.revoked_at is None and _matches(self.project, self.specifier, project, version)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "index": self.index,
            "project": self.project,
            "specifier": self.specifier,
            "reason": self.reason,
            "author": self.author,
            "created_at": self.created_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }


def _approval(row: PolicyApprovalRow) -> PolicyApproval:
    return PolicyApproval(
        row.id,
        row.index_name,
        row.project,
        row.specifier,
        row.reason,
        row.author,
        aware(row.created_at) or utcnow(),
        aware(row.revoked_at),
    )


@dataclass(frozen=True, slots=True)
class AccessRequest:
    id: int
    index: str
    project: str
    version: str | None
    count: int
    first_at: datetime
    last_at: datetime
    last_actor: str | None
    approval_id: int | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "index": self.index,
            "project": self.project,
            "version": self.version,
            "count": self.count,
            "first_at": self.first_at.isoformat(),
            "last_at": self.last_at.isoformat(),
            "last_actor": self.last_actor,
            "status": "approved" if self.approval_id else "pending",
            "approval": self.approval_id,
        }


def _request(row: PolicyRequestRow) -> AccessRequest:
    return AccessRequest(
        row.id,
        row.index_name,
        row.project,
        row.version or None,
        row.count,
        aware(row.first_at) or utcnow(),
        aware(row.last_at) or utcnow(),
        row.last_actor,
        row.approval_id,
    )


@lru_cache(maxsize=65536)
def parse_time(text: str | None) -> datetime | None:
    """An ISO 8601 upload-time as published (``Z`` or an offset); None when unreadable."""
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _scan_findings(report: ScanReport | None) -> tuple[FindingFact, ...]:
    if report is None or report.verdict not in ("malicious", "suspicious"):
        return ()
    severity = "critical" if report.verdict == "malicious" else "high"
    return (FindingFact("malware-scanner", severity, report.verdict, report.summary()),)


REQUEST_NOTE_EVERY = 60.0  # seconds: a repeated request is counted at most this often


def _requirement(text: str) -> Requirement:
    try:
        return Requirement(text)
    except InvalidRequirement as exc:
        raise InvalidRequest(
            f"cannot read {text!r}: {exc}", "e.g. alpha==1.1 or 'alpha>=1,<2'"
        ) from exc


@lru_cache(maxsize=4096)
def _specifier(text: str) -> SpecifierSet | None:
    try:
        return SpecifierSet(text)
    except InvalidSpecifier:
        return None


def _matches(name: str, specifier: str | None, project: str, version: str | None) -> bool:
    """Whether NAME[specifier] (an exception's or an approval's) covers project==version."""
    if project != name:
        return False
    if not specifier:
        return True
    spec = _specifier(specifier)
    if version is None or spec is None:
        return False
    try:
        return spec.contains(PYPI.parse(version), prereleases=True)
    except InvalidVersion:
        return False


def _exception(row: PolicyExceptionRow) -> PolicyException:
    return PolicyException(
        row.id,
        row.index_name,
        row.project,
        row.specifier,
        row.reason,
        row.author,
        aware(row.created_at) or utcnow(),
        aware(row.expires_at),
        aware(row.revoked_at),
    )


@dataclass(frozen=True, slots=True)
class PolicyVersion:
    index: str
    version: int
    text: str
    author: str | None
    created_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "version": self.version,
            "text": self.text,
            "author": self.author,
            "created_at": self.created_at.isoformat(),
        }


def _version(row: PolicyRow) -> PolicyVersion:
    return PolicyVersion(
        row.index_name, row.version, row.text, row.author, aware(row.created_at) or utcnow()
    )


_UNATTESTED: tuple[bool | None, tuple[Publisher, ...]] = (False, ())  # no provenance offered
_UNVERIFIED: tuple[bool | None, tuple[Publisher, ...]] = (None, ())  # offered, not verified yet

MALICIOUS_PREFIX = "MAL-"  # OSV ids of known-malicious packages (ossf/malicious-packages)


class PolicyService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        vulns: VulnDB,
        metadata: MetadataService | None = None,
        threats: ThreatService | None = None,
        popular_path: Path | None = None,
    ) -> None:
        self._sessions = sessions
        self._vulns = vulns
        self._metadata = metadata
        self._threats = threats
        self._popular_path = popular_path
        self._popular: PopularNames | None = None
        self.identity: IdentityService | None = None  # author-impersonation findings
        self.provenance: ProvenanceService | None = None  # PEP 740 facts
        self._cache: dict[str, Policy | None] = {}
        self._exc_cache: dict[str, list[PolicyException]] = {}
        self._approval_cache: dict[str, list[PolicyApproval]] = {}
        self._noted: dict[tuple[str, str, str], float] = {}

    def clear(self) -> None:
        self._cache.clear()
        self._exc_cache.clear()
        self._approval_cache.clear()

    async def set(self, index: str, text: str, author: str | None) -> PolicyVersion:
        """Validate and store a new version; a malformed document changes nothing."""
        parse_policy(text)  # raises PolicyError naming the line; the previous policy stays
        async with self._sessions() as s, s.begin():
            q = select(func.max(PolicyRow.version)).where(PolicyRow.index_name == index)
            latest = (await s.execute(q)).scalar_one_or_none() or 0
            row = PolicyRow(
                index_name=index,
                version=latest + 1,
                text=text,
                author=author,
                created_at=utcnow(),
            )
            s.add(row)
            await s.flush()
            made = _version(row)
        self.clear()
        return made

    async def history(self, index: str) -> list[PolicyVersion]:
        async with self._sessions() as s:
            q = select(PolicyRow).where(PolicyRow.index_name == index).order_by(PolicyRow.version)
            return [_version(r) for r in (await s.execute(q)).scalars()]

    async def show(self, index: str, version: int | None = None) -> PolicyVersion:
        versions = await self.history(index)
        if not versions:
            raise NotFound(f"index {index!r} has no policy", "stockade policy set INDEX --file F")
        if version is None:
            return versions[-1]
        for v in versions:
            if v.version == version:
                return v
        raise NotFound(f"index {index!r} has no policy version {version}")

    async def current(self, index: str) -> Policy | None:
        """The policy in force (None: no policy, everything allowed)."""
        if index not in self._cache:
            versions = await self.history(index)
            text = versions[-1].text if versions else ""
            self._cache[index] = parse_policy(text) if text.strip() else None
        return self._cache[index]

    async def allow(
        self,
        index: str,
        requirement: str,
        *,
        reason: str,
        expires: str | None,
        author: str | None,
    ) -> PolicyException:
        """Serve ``NAME`` or ``NAME<specifier>`` despite the policy, until ``expires``."""
        req = _requirement(requirement)
        if not reason.strip():
            raise InvalidRequest("an exception needs a --reason")
        expires_at = utcnow() + parse_duration(expires) if expires else None
        async with self._sessions() as s, s.begin():
            row = PolicyExceptionRow(
                index_name=index,
                project=canonicalize_name(req.name),
                specifier=str(req.specifier) or None,
                reason=reason,
                author=author,
                created_at=utcnow(),
                expires_at=expires_at,
            )
            s.add(row)
            await s.flush()
            made = _exception(row)
        self.clear()
        return made

    async def exceptions(self, index: str, active_only: bool = False) -> list[PolicyException]:
        rows = self._exc_cache.get(index)
        if rows is None:
            rows = (await self._load_overrides(index))[0]
        now = utcnow()
        return [e for e in rows if e.active(now)] if active_only else rows

    async def _load_overrides(
        self, index: str
    ) -> tuple[list[PolicyException], list[PolicyApproval]]:
        """An index's exceptions and approvals, read together (one query: a page decision
        after a policy change needs both) and cached until the next ``clear()``."""
        e = PolicyExceptionRow.__table__.c
        a = PolicyApprovalRow.__table__.c
        both = union_all(
            select(
                literal_column("0").label("kind"),
                e.id,
                e.index_name,
                e.project,
                e.specifier,
                e.reason,
                e.author,
                e.created_at,
                e.expires_at,
                e.revoked_at,
            ).where(e.index_name == index),
            select(
                literal_column("1"),
                a.id,
                a.index_name,
                a.project,
                a.specifier,
                a.reason,
                a.author,
                a.created_at,
                null(),
                a.revoked_at,
            ).where(a.index_name == index),
        )
        async with self._sessions() as s:
            rows = sorted(
                (await (await s.connection()).execute(both)).all(), key=lambda r: (r[0], r[1])
            )
        exceptions = [
            PolicyException(
                r.id,
                r.index_name,
                r.project,
                r.specifier,
                r.reason,
                r.author,
                aware(r.created_at) or utcnow(),
                aware(r.expires_at),
                aware(r.revoked_at),
            )
            for r in rows
            if r[0] == 0
        ]
        approvals = [
            PolicyApproval(
                r.id,
                r.index_name,
                r.project,
                r.specifier,
                r.reason,
                r.author,
                aware(r.created_at) or utcnow(),
                aware(r.revoked_at),
            )
            for r in rows
            if r[0] == 1
        ]
        self._exc_cache[index] = exceptions
        self._approval_cache[index] = approvals
        return exceptions, approvals

    async def revoke_exception(self, exception_id: int) -> PolicyException:
        async with self._sessions() as s, s.begin():
            row = await s.get(PolicyExceptionRow, exception_id)
            if row is None:
                raise NotFound(f"no policy exception {exception_id}")
            row.revoked_at = row.revoked_at or utcnow()
            made = _exception(row)
        self.clear()
        return made

    # -- approvals: the request-approval flow of allow-only names rules -----------------------

    async def approve(
        self, index: str, requirement: str, *, reason: str | None, author: str | None
    ) -> PolicyApproval:
        """Add NAME (or NAME<specifier>) to INDEX's allow-lists; pending requests it covers
        are marked approved."""
        req = _requirement(requirement)
        async with self._sessions() as s, s.begin():
            row = PolicyApprovalRow(
                index_name=index,
                project=canonicalize_name(req.name),
                specifier=str(req.specifier) or None,
                reason=reason or None,
                author=author,
                created_at=utcnow(),
            )
            s.add(row)
            await s.flush()
            made = _approval(row)
            q = select(PolicyRequestRow).where(
                PolicyRequestRow.index_name == index,
                PolicyRequestRow.project == made.project,
                PolicyRequestRow.approval_id.is_(None),
            )
            for r in (await s.execute(q)).scalars():
                if made.covers(r.project, r.version or None):
                    r.approval_id = made.id
        self.clear()
        return made

    async def approvals(self, index: str) -> list[PolicyApproval]:
        rows = self._approval_cache.get(index)
        if rows is None:
            rows = (await self._load_overrides(index))[1]
        return rows

    async def revoke_approval(self, approval_id: int) -> PolicyApproval:
        async with self._sessions() as s, s.begin():
            row = await s.get(PolicyApprovalRow, approval_id)
            if row is None:
                raise NotFound(f"no policy approval {approval_id}")
            row.revoked_at = row.revoked_at or utcnow()
            made = _approval(row)
        self.clear()
        return made

    async def note_request(
        self, index: str, project: str, version: str | None, actor: str | None
    ) -> None:
        """Remember that someone asked for a project an allow-list refused (rate-limited)."""
        key = (index, project, version or "")
        now = time.monotonic()
        if self._noted.get(key, 0.0) > now:
            return
        if len(self._noted) > 100_000:
            self._noted.clear()
        self._noted[key] = now + REQUEST_NOTE_EVERY
        at = utcnow()
        for _attempt in range(2):
            try:
                async with self._sessions() as s, s.begin():
                    q = select(PolicyRequestRow).where(
                        PolicyRequestRow.index_name == index,
                        PolicyRequestRow.project == project,
                        PolicyRequestRow.version == (version or ""),
                    )
                    row = (await s.execute(q)).scalar_one_or_none()
                    if row is None:
                        s.add(
                            PolicyRequestRow(
                                index_name=index,
                                project=project,
                                version=version or "",
                                count=1,
                                first_at=at,
                                last_at=at,
                                last_actor=actor,
                            )
                        )
                    else:
                        row.count += 1
                        row.last_at = at
                        row.last_actor = actor or row.last_actor
                return
            except DBIntegrityError:  # another process inserted it first: count on it
                continue

    async def requests(self, index: str, *, pending_only: bool = True) -> list[AccessRequest]:
        async with self._sessions() as s:
            q = select(PolicyRequestRow).where(PolicyRequestRow.index_name == index)
            if pending_only:
                q = q.where(PolicyRequestRow.approval_id.is_(None))
            q = q.order_by(PolicyRequestRow.count.desc(), PolicyRequestRow.id)
            return [_request(r) for r in (await s.execute(q)).scalars()]

    async def decide(
        self,
        policy: Policy,
        page: ProjectPage,
        now: datetime | None = None,
        index: str = "",
        *,
        complete: bool = True,
    ) -> dict[str, Decision]:
        """The decision for every file on a page (vulnerabilities looked up once per version).
        ``complete=False`` lets ``evaluate()`` skip custom rules on files already blocked."""
        now = now or utcnow()
        active = await self.exceptions(index, active_only=True) if index else []
        approved = [a for a in await self.approvals(index) if a.revoked_at is None] if index else []
        versions = (
            [v for v in dict.fromkeys(f.version for f in page.files) if v]
            if policy.needs_advisories
            else []  # no rule reads them: every version without vulnerabilities or findings
        )
        found = await self._vulns.policy_hits("PyPI", page.name, versions) if versions else {}
        by_version: dict[str, tuple[VulnFact, ...]] = {}
        malicious: dict[str, tuple[FindingFact, ...]] = {}
        split: dict[int, tuple[tuple[VulnFact, ...], tuple[FindingFact, ...]]] = {}
        for v in versions:
            hits = found.get(v, ())
            pair = split.get(id(hits))  # versions of one range share their hits tuple
            if pair is None:
                pair = split[id(hits)] = (
                    tuple(h.fact for h in hits if not h.fact.id.startswith(MALICIOUS_PREFIX)),
                    tuple(
                        FindingFact(
                            "known-malicious-feed",
                            "critical",
                            "malicious",
                            f"{h.fact.id}: {h.summary or ''}",
                        )
                        for h in hits
                        if h.fact.id.startswith(MALICIOUS_PREFIX) and h.fact.status == "affected"
                    ),
                )
            by_version[v], malicious[v] = pair
        meta = (
            await self._metadata.learn(page)
            if self._metadata is not None and policy.needs_metadata
            else {}
        )
        scans = (
            await self._threats.reports_many(f.sha256 for f in page.files if f.sha256)
            if self._threats is not None and policy.needs_scan
            else {}
        )
        prov = (
            await self.provenance.learn(index, page)
            if self.provenance is not None and policy.needs_provenance
            else {}
        )
        squats = self._squats(page.name) if policy.needs_scan else ()
        prov_needed = policy.needs_provenance
        posing = await self._impersonation(page, index) if policy.needs_scan else {}
        squats += posing.get(None, ())
        per_version: dict[str | None, tuple[tuple[FindingFact, ...], bool, Any]] = {}
        memo: dict[Any, Any] = {}  # version-level and custom rules' verdicts
        bases: dict[tuple[Any, ...], Decision] = {}  # non-custom verdicts by what they read
        has_custom = policy.has_custom
        ages = [r.options["min_age"] for r in policy.rules if r.kind == "age"]
        recent = max(ages) if ages else timedelta(0)
        cutoff = now - recent if ages else None  # uploaded after it: still in quarantine
        # provenance rules' reasons name the file: their verdicts are not shared between files
        names_file = any(r.kind in ("require_provenance", "publisher") for r in policy.rules)
        out: dict[str, Decision] = {}
        for f in page.files:
            if f.blocked is not None:  # a member index's policy blocked it; it stays blocked
                out[f.filename] = member_block(f.origin, f.blocked)
                continue
            fv = f.version
            shared = per_version.get(fv)
            if shared is None:
                approved_v = any(a.covers(page.name, fv) for a in approved)
                exc_v = next((e for e in active if e.covers(page.name, fv)), None)
                shared = (
                    malicious.get(fv or "", ()) + squats + posing.get(fv, ()),
                    approved_v,
                    exc_v,
                )
                per_version[fv] = shared
            base_findings, approved_v, exc = shared
            scanned = _scan_findings(scans.get((f.sha256 or "").lower())) if scans else ()
            m = meta.get(f.filename)
            recent_upload = None  # the upload time matters only while in quarantine
            if cutoff is not None:
                uploaded = parse_time(f.upload_time)
                if uploaded is not None and uploaded > cutoff:
                    recent_upload = uploaded
            attested = _UNATTESTED
            if prov_needed:
                rec = prov.get(f.filename)
                if rec is not None:
                    attested = (rec.verified, rec.publishers)
                elif f.provenance is not None:
                    attested = _UNVERIFIED
            # Everything the non-custom rules read, beyond the version: files of a version
            # that agree on it get the same verdict, decided once.
            key = (
                fv,
                f.yanked,
                recent_upload,
                m.license if m is not None else None,
                m is not None,
                scanned,
                attested,
                f.filename if names_file else None,
            )
            facts = None
            base = bases.get(key)
            if base is None:
                facts = self._facts(
                    page, f, fv, by_version, m, base_findings, scanned, index, approved_v, attested
                )
                base = bases[key] = evaluate(policy, facts, now, memo, custom=False)
            decision = base
            if has_custom and (complete or not base.blocks):
                if facts is None:
                    facts = self._facts(
                        page,
                        f,
                        fv,
                        by_version,
                        m,
                        base_findings,
                        scanned,
                        index,
                        approved_v,
                        attested,
                    )
                decision = add_custom(policy, base, facts, now, memo)
            if exc is not None and not decision.allowed:
                until = exc.expires_at.isoformat()[:16] if exc.expires_at else "revoked"
                decision = decision.excepted(
                    f"#{exc.id} by {exc.author or 'unknown'} until {until}: {exc.reason}"
                )
            out[f.filename] = decision
        return out

    @staticmethod
    def _facts(
        page: ProjectPage,
        f: FileEntry,
        fv: str | None,
        by_version: dict[str, tuple[VulnFact, ...]],
        m: Any,
        base_findings: tuple[FindingFact, ...],
        scanned: tuple[FindingFact, ...],
        index: str,
        approved: bool,
        attested: tuple[bool | None, tuple[Publisher, ...]],
    ) -> FileFacts:
        return FileFacts(
            page.name,
            fv,
            f.filename,
            f.yanked,
            parse_time(f.upload_time),
            by_version.get(fv or "", ()),
            f.size,
            m.license if m else None,
            m is not None,
            base_findings + scanned if scanned else base_findings,
            attested[0],
            attested[1],
            index,
            approved,
        )

    def popular(self) -> PopularNames:
        """The popular-projects list: the admin's refreshed one in the home, else the shipped."""
        if self._popular is None:
            path = (
                self._popular_path if self._popular_path and self._popular_path.exists() else None
            )
            self._popular = PopularNames.load(path)
        return self._popular

    def _squats(self, name: str) -> tuple[FindingFact, ...]:
        """Typosquat findings for a project name, against the popular-projects list."""
        return tuple(
            FindingFact(f"typosquat:{s.technique}", s.severity, s.tier, s.message)
            for s in check_name(name, self.popular())
        )

    async def _impersonation(
        self, page: ProjectPage, index: str
    ) -> dict[str | None, tuple[FindingFact, ...]]:
        """Author-impersonation findings per version (None: every version), from the mirror
        index each file comes from."""
        if self.identity is None:
            return {}
        out: dict[str | None, tuple[FindingFact, ...]] = {}
        for origin in {f.origin or index for f in page.files}:
            for f in await self.identity.findings(origin, page.name):
                fact = FindingFact(f.rule, f.severity, f.tier, f.message)
                out[f.version] = (*out.get(f.version, ()), fact)
        return out

    async def next_expiry(self, index: str) -> datetime | None:
        """When the earliest active exception of ``index`` ends (pages must re-decide then)."""
        ends = [e.expires_at for e in await self.exceptions(index, True) if e.expires_at]
        return min(ends) if ends else None
