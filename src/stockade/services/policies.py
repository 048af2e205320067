"""Policies per index: versioned storage, a per-process cache, and explanations."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from stockade.core.policy import FileFacts, Policy, VulnFact, evaluate, parse_policy
from stockade.core.policy.model import Decision
from stockade.core.simple import ProjectPage
from stockade.db.models import PolicyRow
from stockade.errors import NotFound
from stockade.services.repo import aware, utcnow
from stockade.services.vulndb import VulnDB


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


class PolicyService:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], vulns: VulnDB) -> None:
        self._sessions = sessions
        self._vulns = vulns
        self._cache: dict[str, Policy | None] = {}

    def clear(self) -> None:
        self._cache.clear()

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

    async def decide(
        self, policy: Policy, page: ProjectPage, now: datetime | None = None
    ) -> dict[str, Decision]:
        """The decision for every file on a page (vulnerabilities looked up once per version)."""
        now = now or utcnow()
        versions = sorted({f.version for f in page.files if f.version})
        found = await self._vulns.query_many(("PyPI", page.name, v) for v in versions)
        by_version = {
            v: tuple(
                VulnFact(f.id, f.severity, f.score, f.status, f.fixed_versions, f.published)
                for f in found.get(("PyPI", page.name, v), ())
            )
            for v in versions
        }
        out: dict[str, Decision] = {}
        for f in page.files:
            uploaded = None
            if f.upload_time:
                try:
                    uploaded = datetime.fromisoformat(f.upload_time.replace("Z", "+00:00"))
                except ValueError:
                    uploaded = None
            facts = FileFacts(
                project=page.name,
                version=f.version,
                filename=f.filename,
                yanked=f.yanked,
                upload_time=uploaded,
                vulns=by_version.get(f.version or "", ()),
            )
            out[f.filename] = evaluate(policy, facts, now)
        return out
