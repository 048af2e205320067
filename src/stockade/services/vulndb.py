"""The vulnerability database: OSV import, indexed queries, expert curation.

Storage: one row per advisory (``advisories``), its aliases (``advisory_aliases``, indexed) and one
row per ``affected[]`` entry (``advisory_packages``, indexed by ecosystem and name), so a query for
one package version is an index lookup followed by evaluating that package's few ranges.
Curations (``curations``) are append-only: the effective answer is the feed overlaid with the
newest curation that covers the version, and every finding says which of the two decided it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import io
import time
import zipfile
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson
import yaml
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from stockade.core.policy.model import VulnFact
from stockade.core.vulns.conda_names import CondaNames, shipped
from stockade.core.vulns.match import CompiledAffected, VersionBatch
from stockade.core.vulns.osv import Advisory, Affected, Event, OsvError, Range, parse_osv
from stockade.db.models import (
    AdvisoryAliasRow,
    AdvisoryPackageRow,
    AdvisoryRow,
    CondaNameRow,
    CurationRow,
)
from stockade.errors import Conflict, InvalidRequest, NotFound
from stockade.services.repo import aware, utcnow

RECORD_SUFFIXES = (".json", ".yaml", ".yml")
MAX_RECORD = 16 * 1024**2
STATUSES = ("affected", "not_affected", "under_investigation", "fixed", "feed")
JUSTIFICATIONS = (
    "component_not_present",
    "vulnerable_code_not_present",
    "vulnerable_code_cannot_be_controlled_by_adversary",
    "vulnerable_code_not_in_execute_path",
    "inline_mitigations_already_exist",
)
RATINGS = ("none", "low", "medium", "high", "critical")
Progress = Callable[[int, int], None]


# -- reading records ---------------------------------------------------------------------------


def iter_sources(path: Path) -> Iterator[tuple[str, bytes]]:
    """``(name, bytes)`` of every record file in a directory, a zip, or one file."""
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            rel = p.relative_to(path)
            if p.suffix in RECORD_SUFFIXES and p.is_file() and not _hidden(rel.parts):
                yield str(rel), p.read_bytes()
        return
    if not path.exists():
        raise InvalidRequest(f"{path} does not exist", "give a directory, a .zip or an OSV file")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                parts = info.filename.split("/")
                if info.is_dir() or not info.filename.endswith(RECORD_SUFFIXES):
                    continue
                if _hidden(parts) or info.file_size > MAX_RECORD:
                    continue
                yield info.filename, zf.read(info)
        return
    if path.suffix in RECORD_SUFFIXES:
        yield path.name, path.read_bytes()
        return
    raise InvalidRequest(
        f"{path} is not a directory, a zip or a .json/.yaml record",
        "give the advisory database folder or OSV's per-ecosystem all.zip",
    )


def count_sources(path: Path) -> int:
    if path.is_dir():
        return sum(
            1
            for p in path.rglob("*")
            if p.suffix in RECORD_SUFFIXES and not _hidden(p.relative_to(path).parts)
        )
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            return sum(1 for n in zf.namelist() if n.endswith(RECORD_SUFFIXES))
    return 1


def _hidden(parts: Iterable[str]) -> bool:
    return any(p.startswith(".") for p in parts)


_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def decode(name: str, data: bytes) -> Any:
    """JSON or YAML to plain data; YAML timestamps become ISO strings."""
    if name.endswith(".json"):
        return orjson.loads(data)
    return _plain(yaml.load(io.BytesIO(data), Loader=_Loader))  # noqa: S506 - safe loader


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    if isinstance(obj, dt.datetime):
        return (obj if obj.tzinfo else obj.replace(tzinfo=dt.UTC)).isoformat()
    if isinstance(obj, dt.date):
        return obj.isoformat()
    return obj


# -- results -----------------------------------------------------------------------------------


@dataclass
class ImportReport:
    total: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    withdrawn: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    changed: list[str] = field(default_factory=list)  # ids added or updated

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "withdrawn": self.withdrawn,
            "skipped": [{"source": s, "reason": r} for s, r in self.skipped],
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True, slots=True)
class Curation:
    id: int
    advisory_id: str
    ecosystem: str
    package: str
    versions: str | None
    status: str
    justification: str | None
    severity_score: float | None
    severity_rating: str | None
    reason: str | None
    note: str | None
    author: str | None
    created_at: dt.datetime

    def covers(self, version: str) -> bool:
        if not self.versions:
            return True
        if self.ecosystem == "PyPI":
            try:
                return _specifier(self.versions).contains(version, prereleases=True)
            except (InvalidSpecifier, InvalidVersion):
                return False
        return version in {v.strip() for v in self.versions.split(",")}

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "advisory": self.advisory_id,
            "ecosystem": self.ecosystem,
            "package": self.package,
            "versions": self.versions,
            "status": self.status,
            "justification": self.justification,
            "severity_score": self.severity_score,
            "severity_rating": self.severity_rating,
            "reason": self.reason,
            "note": self.note,
            "author": self.author,
            "created_at": self.created_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class Finding:
    ecosystem: str
    package: str
    version: str
    id: str
    aliases: tuple[str, ...]
    summary: str | None
    severity: str | None  # rating: none|low|medium|high|critical, or None when unknown
    score: float | None
    fixed_versions: tuple[str, ...]
    status: str  # affected | not_affected | under_investigation | fixed
    decided_by: str  # "feed" | "curation"
    curation: Curation | None = None
    published: dt.datetime | None = None

    @property
    def counts(self) -> bool:
        """Whether this finding should fail a scan (the experts did not clear it)."""
        return self.status in ("affected", "under_investigation")

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "package": self.package,
            "ecosystem": self.ecosystem,
            "version": self.version,
            "id": self.id,
            "aliases": list(self.aliases),
            "summary": self.summary,
            "severity": self.severity,
            "score": self.score,
            "fixed_versions": list(self.fixed_versions),
            "status": self.status,
            "decided_by": self.decided_by,
        }
        if self.curation is not None:
            c = self.curation
            out["curation"] = {
                "justification": c.justification,
                "reason": c.reason,
                "note": c.note,
                "author": c.author,
                "at": c.created_at.isoformat(),
            }
        return out


@lru_cache(maxsize=4096)
def _specifier(text: str) -> SpecifierSet:
    return SpecifierSet(text)


@dataclass(frozen=True, slots=True)
class PolicyHit:
    """An advisory affecting a version, as a policy reads it; shared by every version the
    advisory affects alike (same curation), so a page of many versions builds few of them."""

    fact: VulnFact
    summary: str | None


@dataclass(frozen=True, slots=True)
class _AdvisoryMeta:
    id: str
    summary: str | None
    score: float | None
    rating: str | None
    withdrawn: bool
    aliases: tuple[str, ...]
    published: dt.datetime | None = None


class _Entry:
    """One affected[] entry of the snapshot; compiled on first use."""

    __slots__ = ("_compiled", "data", "ecosystem", "fixed", "meta", "name")

    def __init__(self, meta: _AdvisoryMeta, ecosystem: str, name: str, data: str) -> None:
        self.meta = meta
        self.ecosystem = ecosystem
        self.name = name
        self.data = data
        self.fixed: tuple[str, ...] = tuple(orjson.loads(data).get("fixed", ()))
        self._compiled: CompiledAffected | None = None

    def compiled(self) -> CompiledAffected:
        if self._compiled is None:
            aff, _ = _affected_from(self.ecosystem, self.name, self.data)
            self._compiled = CompiledAffected(aff)
        return self._compiled


MATCH_CACHE_MAX = 500_000


@dataclass(frozen=True, slots=True)
class _Snapshot:
    packages: dict[tuple[str, str], list[_Entry]]
    curations: dict[tuple[str, str, str], list[Curation]]
    names: CondaNames
    # Findings per (ecosystem, name, version), computed once per snapshot: the snapshot is
    # immutable, and any import or curation replaces it (bounded by MATCH_CACHE_MAX).
    matches: dict[tuple[str, str, str], list[Finding]] = field(default_factory=dict)


def _curation(row: CurationRow) -> Curation:
    return Curation(
        id=row.id,
        advisory_id=row.advisory_id,
        ecosystem=row.ecosystem,
        package=row.package,
        versions=row.versions,
        status=row.status,
        justification=row.justification,
        severity_score=row.severity_score,
        severity_rating=row.severity_rating,
        reason=row.reason,
        note=row.note,
        author=row.author,
        created_at=aware(row.created_at) or utcnow(),
    )


def _affected_json(a: Affected, fixed: list[str]) -> str:
    return orjson.dumps(
        {
            "ranges": [
                {
                    "type": r.type,
                    "repo": r.repo,
                    "events": [[e.kind, e.value] for e in r.events],
                }
                for r in a.ranges
            ],
            "versions": list(a.versions),
            "purl": a.purl,
            "fixed": fixed,
        }
    ).decode()


def _affected_from(ecosystem: str, name: str, data: str) -> tuple[Affected, tuple[str, ...]]:
    obj = orjson.loads(data)
    ranges = tuple(
        Range(
            type=r["type"],
            events=tuple(Event(kind=k, value=v) for k, v in r["events"]),
            repo=r.get("repo"),
        )
        for r in obj["ranges"]
    )
    aff = Affected(
        ecosystem=ecosystem,
        name=name,
        ranges=ranges,
        versions=tuple(obj["versions"]),
        purl=obj.get("purl"),
    )
    return aff, tuple(obj.get("fixed", ()))


def normalize_package(ecosystem: str, name: str) -> tuple[str, str]:
    from packaging.utils import canonicalize_name

    eco = "PyPI" if ecosystem.lower() == "pypi" else ecosystem
    if eco.lower() == "conda":
        return "conda", name.lower()
    return eco, canonicalize_name(name) if eco == "PyPI" else name.lower()


# -- the service -------------------------------------------------------------------------------


def _policy_hit(entry: _Entry, cur: Curation | None) -> PolicyHit:
    """An advisory entry's verdict for the versions ``cur`` decides (None: the feed's)."""
    m = entry.meta
    if cur is not None and cur.status == "feed":
        cur = None
    score, rating = m.score, m.rating
    if cur is not None and (cur.severity_rating or cur.severity_score is not None):
        score = cur.severity_score if cur.severity_score is not None else score
        rating = cur.severity_rating or rating
    status = cur.status if cur is not None else "affected"
    return PolicyHit(VulnFact(m.id, rating, score, status, entry.fixed, m.published), m.summary)


class VulnDB:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._snap: _Snapshot | None = None
        self._lock = asyncio.Lock()

    def clear(self) -> None:
        self._snap = None

    # -- import --------------------------------------------------------------------------------

    async def import_path(
        self, path: Path, *, source: str = "feed", progress: Progress | None = None
    ) -> ImportReport:
        """Import OSV records (directory, zip or file). Idempotent and incremental."""
        started = time.perf_counter()
        report = ImportReport()
        total = count_sources(path)
        async with self._sessions() as s:
            existing = {
                r.id: (r.content_hash, r.source)
                for r in (
                    await s.execute(
                        select(AdvisoryRow.id, AdvisoryRow.content_hash, AdvisoryRow.source)
                    )
                ).all()
            }
        known_hashes = {h for h, _ in existing.values()}
        batch: list[tuple[Advisory, str, str]] = []
        done = 0
        for name, data in iter_sources(path):
            done += 1
            report.total += 1
            digest = hashlib.sha256(data).hexdigest()
            if digest in known_hashes:  # byte-identical to a stored record: nothing to parse
                report.unchanged += 1
                if progress and done % 100 == 0:
                    progress(done, total)
                continue
            try:
                obj = decode(name, data)
            except (ValueError, yaml.YAMLError) as exc:
                report.skipped.append((name, f"not valid JSON/YAML: {str(exc).splitlines()[0]}"))
                continue
            if not isinstance(obj, dict) or ("id" not in obj and "modified" not in obj):
                report.skipped.append((name, "not an OSV record (no id/modified)"))
                continue
            known = existing.get(str(obj.get("id")))
            if known is not None and known[0] == digest:
                report.unchanged += 1
                if progress and done % 100 == 0:
                    progress(done, total)
                continue
            try:
                adv = parse_osv(obj, name)
            except OsvError as exc:
                report.skipped.append((name, exc.message))
                continue
            if known is not None and known[1] != source:
                report.skipped.append(
                    (name, f"{adv.id} exists as a {known[1]} advisory; not replaced by {source}")
                )
                continue
            if known is None:
                report.added += 1
            else:
                report.updated += 1
            report.changed.append(adv.id)
            if adv.withdrawn is not None:
                report.withdrawn += 1
            existing[adv.id] = (digest, source)
            batch.append((adv, digest, source))
            if len(batch) >= 500:
                await self._store(batch)
                batch = []
            if progress and done % 100 == 0:
                progress(done, total)
        if batch:
            await self._store(batch)
        if progress:
            progress(done, total)
        self.clear()
        report.seconds = time.perf_counter() - started
        return report

    async def _store(self, batch: list[tuple[Advisory, str, str]]) -> None:
        now = utcnow()
        ids = [adv.id for adv, _, _ in batch]
        async with self._sessions() as s, s.begin():
            await s.execute(delete(AdvisoryAliasRow).where(AdvisoryAliasRow.advisory_id.in_(ids)))
            await s.execute(
                delete(AdvisoryPackageRow).where(AdvisoryPackageRow.advisory_id.in_(ids))
            )
            await s.execute(delete(AdvisoryRow).where(AdvisoryRow.id.in_(ids)))
            rows: list[Any] = []
            for adv, digest, source in batch:
                best = adv.best_severity()
                rows.append(
                    AdvisoryRow(
                        id=adv.id,
                        source=source,
                        summary=adv.summary,
                        details=adv.details,
                        published=adv.published,
                        modified=adv.modified,
                        withdrawn=adv.withdrawn,
                        severity_score=best.score if best else None,
                        severity_rating=best.rating if best else None,
                        severity_vector=best.vector if best else None,
                        content_hash=digest,
                        raw=orjson.dumps(dict(adv.raw)).decode(),
                        imported_at=now,
                    )
                )
            s.add_all(rows)
            await s.flush()
            children: list[Any] = []
            for adv, _, _ in batch:
                children.extend(
                    AdvisoryAliasRow(advisory_id=adv.id, alias=a) for a in sorted(set(adv.aliases))
                )
                for aff in adv.affected:
                    eco, name = normalize_package(aff.ecosystem, aff.name)
                    children.append(
                        AdvisoryPackageRow(
                            advisory_id=adv.id,
                            ecosystem=eco,
                            name=name,
                            data=_affected_json(aff, adv.fixed_versions(aff.ecosystem, aff.name)),
                        )
                    )
            s.add_all(children)

    async def sync(self, url: str, client: Any, progress: Progress | None = None) -> ImportReport:
        """Download an OSV export zip (streamed to a temp file) and import it."""
        import tempfile

        import httpx

        from stockade.errors import UpstreamUnavailable

        with tempfile.TemporaryDirectory() as tmp:
            dest = Path(tmp) / "osv.zip"
            try:
                async with client.stream("GET", url) as resp:
                    if resp.status_code != 200:
                        raise UpstreamUnavailable(
                            f"{url} answered {resp.status_code}",
                            "check vulndb_url (or --url) and the network",
                        )
                    with dest.open("wb") as f:
                        async for chunk in resp.aiter_bytes(1024 * 1024):
                            f.write(chunk)
            except httpx.HTTPError as exc:
                raise UpstreamUnavailable(
                    f"cannot download {url}: {type(exc).__name__}: {exc}",
                    "check vulndb_url (or --url) and the network",
                ) from exc
            return await self.import_path(dest, progress=progress)

    async def add_local(self, path: Path) -> list[str]:
        """Add (or replace) admin-written advisories from an OSV file or folder."""
        ids: list[str] = []
        for name, data in iter_sources(path):
            adv = parse_osv(decode(name, data), name)
            async with self._sessions() as s:
                row = await s.get(AdvisoryRow, adv.id)
            if row is not None and row.source != "local":
                raise Conflict(
                    f"{adv.id} is a feed advisory; local advisories need their own ids",
                    "use an id of your own, e.g. LOCAL-2026-0001, or curate the feed advisory",
                )
            await self._store([(adv, hashlib.sha256(data).hexdigest(), "local")])
            ids.append(adv.id)
        self.clear()
        return ids

    # -- lookup --------------------------------------------------------------------------------

    async def resolve_id(self, s: AsyncSession, ident: str) -> str:
        if await s.get(AdvisoryRow, ident) is not None:
            return ident
        q = select(AdvisoryAliasRow.advisory_id).where(AdvisoryAliasRow.alias == ident)
        found = (await s.execute(q)).scalars().first()
        if found is None:
            raise NotFound(f"no advisory or alias {ident!r}", "see `stockade vuln list`")
        return found

    async def show(self, ident: str) -> dict[str, Any]:
        async with self._sessions() as s:
            adv_id = await self.resolve_id(s, ident)
            row = await s.get(AdvisoryRow, adv_id)
            assert row is not None
            aliases = (
                (
                    await s.execute(
                        select(AdvisoryAliasRow.alias).where(AdvisoryAliasRow.advisory_id == adv_id)
                    )
                )
                .scalars()
                .all()
            )
            pkgs = (
                (
                    await s.execute(
                        select(AdvisoryPackageRow).where(AdvisoryPackageRow.advisory_id == adv_id)
                    )
                )
                .scalars()
                .all()
            )
            cur = (
                (
                    await s.execute(
                        select(CurationRow)
                        .where(CurationRow.advisory_id == adv_id)
                        .order_by(CurationRow.id)
                    )
                )
                .scalars()
                .all()
            )
        return {
            "id": row.id,
            "source": row.source,
            "aliases": sorted(aliases),
            "summary": row.summary,
            "details": row.details,
            "published": _iso(row.published),
            "modified": _iso(row.modified),
            "withdrawn": _iso(row.withdrawn),
            "severity": {
                "score": row.severity_score,
                "rating": row.severity_rating,
                "vector": row.severity_vector,
            },
            "affected": [
                {"ecosystem": p.ecosystem, "name": p.name, **orjson.loads(p.data)} for p in pkgs
            ],
            "references": orjson.loads(row.raw).get("references", []),
            "curation_history": [_curation(c).as_dict() for c in cur],
        }

    async def list_advisories(
        self, *, package: str | None = None, ecosystem: str = "PyPI", limit: int = 100
    ) -> list[dict[str, Any]]:
        async with self._sessions() as s:
            q = select(AdvisoryRow).order_by(AdvisoryRow.modified.desc()).limit(limit)
            if package:
                eco, name = normalize_package(ecosystem, package)
                sub = select(AdvisoryPackageRow.advisory_id).where(
                    AdvisoryPackageRow.ecosystem == eco, AdvisoryPackageRow.name == name
                )
                q = q.where(AdvisoryRow.id.in_(sub))
            rows = (await s.execute(q)).scalars().all()
            ids = [r.id for r in rows]
            aliases = await self._aliases(s, ids)
        return [
            {
                "id": r.id,
                "aliases": list(aliases.get(r.id, ())),
                "summary": r.summary,
                "severity": r.severity_rating,
                "score": r.severity_score,
                "modified": (aware(r.modified) or utcnow()).isoformat(),
                "withdrawn": r.withdrawn is not None,
                "source": r.source,
            }
            for r in rows
        ]

    async def _aliases(self, s: AsyncSession, ids: list[str]) -> dict[str, tuple[str, ...]]:
        out: dict[str, list[str]] = defaultdict(list)
        for chunk in _chunks(ids, 500):
            q = select(AdvisoryAliasRow.advisory_id, AdvisoryAliasRow.alias).where(
                AdvisoryAliasRow.advisory_id.in_(chunk)
            )
            for adv_id, alias in (await s.execute(q)).all():
                out[adv_id].append(alias)
        return {k: tuple(sorted(v)) for k, v in out.items()}

    async def packages_of(self, ids: Iterable[str]) -> set[tuple[str, str]]:
        """(ecosystem, name) of every package these advisories name."""
        wanted = sorted(set(ids))
        out: set[tuple[str, str]] = set()
        async with self._sessions() as s:
            for i in range(0, len(wanted), 500):
                q = select(AdvisoryPackageRow.ecosystem, AdvisoryPackageRow.name).where(
                    AdvisoryPackageRow.advisory_id.in_(wanted[i : i + 500])
                )
                out.update((e, n) for e, n in (await s.execute(q)).tuples())
        return out

    async def query(self, ecosystem: str, name: str, version: str) -> list[Finding]:
        return (await self.query_many([(ecosystem, name, version)]))[
            (*normalize_package(ecosystem, name), version)
        ]

    async def query_many(
        self, pins: Iterable[tuple[str, str, str]]
    ) -> dict[tuple[str, str, str], list[Finding]]:
        """Findings for many (ecosystem, name, version): lookups in the loaded snapshot.

        The versions of one package are matched together: each advisory entry is checked
        against all of them at once (sorted and bisected, see ``VersionBatch``).
        """
        snap = await self._snapshot()
        result: dict[tuple[str, str, str], list[Finding]] = {}
        todo: dict[tuple[str, str], list[str]] = {}
        for e, n, version in pins:
            eco, name = normalize_package(e, n)
            key = (eco, name, version)
            findings = snap.matches.get(key)
            if findings is None:
                todo.setdefault((eco, name), []).append(version)
            else:
                result[key] = list(findings)
        for (eco, name), listed in todo.items():
            versions = list(dict.fromkeys(listed))
            found: list[list[Finding]] = [[] for _ in versions]
            for entry, via, indices in self._matches(snap, eco, name, versions):
                for i in indices:
                    found[i].append(self._finding(snap, entry, eco, name, versions[i], via))
            if len(snap.matches) + len(versions) > MATCH_CACHE_MAX:
                snap.matches.clear()
            for version, findings in zip(versions, found, strict=True):
                findings.sort(key=lambda f: (-(f.score or 0.0), f.id))
                snap.matches[(eco, name, version)] = findings
                result[(eco, name, version)] = list(findings)
        return result

    async def policy_hits(
        self, ecosystem: str, name: str, versions: Iterable[str]
    ) -> dict[str, tuple[PolicyHit, ...]]:
        """What a policy needs to know of the advisories affecting each version of a package:
        ``query_many()``'s verdicts (feed overlaid with the newest covering curation), built
        once per advisory and curation rather than once per version, highest score first."""
        snap = await self._snapshot()
        eco, norm = normalize_package(ecosystem, name)
        ordered = list(dict.fromkeys(versions))
        found: list[list[PolicyHit]] = [[] for _ in ordered]
        for entry, via, indices in self._matches(snap, eco, norm, ordered):
            curs = snap.curations.get((entry.meta.id, *via))
            if not curs or not curs[0].versions:
                # the feed decides, or the newest curation covers every version: one hit
                # shared by every affected version
                hit = _policy_hit(entry, curs[0] if curs else None)
                for i in indices:
                    found[i].append(hit)
                continue
            shared: dict[int, PolicyHit] = {}  # per deciding curation (-1: none, the feed)
            for i in indices:
                cur = next((c for c in curs if c.covers(ordered[i])), None)
                if cur is not None and cur.status == "feed":
                    cur = None
                key = cur.id if cur is not None else -1
                hit = shared.get(key)  # type: ignore[assignment]
                if hit is None:
                    hit = shared[key] = _policy_hit(entry, cur)
                found[i].append(hit)
        out: dict[str, tuple[PolicyHit, ...]] = {}
        done: dict[tuple[int, ...], tuple[PolicyHit, ...]] = {}  # versions of one range agree
        for version, hits in zip(ordered, found, strict=True):
            same = tuple(map(id, hits))
            got = done.get(same)
            if got is None:
                if len(hits) > 1:
                    hits.sort(key=lambda h: (-(h.fact.score or 0.0), h.fact.id))
                got = done[same] = tuple(hits)
            out[version] = got
        return out

    def _matches(
        self, snap: _Snapshot, eco: str, name: str, versions: list[str]
    ) -> Iterator[tuple[_Entry, tuple[str, str], set[int]]]:
        """Every advisory entry that affects some of ``versions``: the entry, the package it
        names, and the indices of the versions it affects."""
        batches: dict[int, VersionBatch] = {}
        for entry, via in self._candidates(snap, eco, name):
            compiled = entry.compiled()
            batch = batches.get(id(compiled.scheme))
            if batch is None:
                batch = batches[id(compiled.scheme)] = VersionBatch(compiled.scheme, versions)
            indices = compiled.matching(batch)
            if indices:
                yield entry, via, indices

    @staticmethod
    def _candidates(
        snap: _Snapshot, eco: str, name: str
    ) -> Iterator[tuple[_Entry, tuple[str, str]]]:
        """Advisory entries that may concern a package, with the (ecosystem, name) they name.

        A conda package is checked against conda advisories (conda's version ordering) and
        against the PyPI project it ships, through the conda name mapping (PEP 440 ordering).
        """
        for entry in snap.packages.get((eco, name), ()):
            yield entry, (eco, name)
        if eco == "conda":
            pypi = snap.names.pypi_name(name)
            if pypi is not None:
                for entry in snap.packages.get(("PyPI", pypi), ()):
                    yield entry, ("PyPI", pypi)

    @staticmethod
    def _finding(
        snap: _Snapshot,
        entry: _Entry,
        eco: str,
        name: str,
        version: str,
        via: tuple[str, str],
    ) -> Finding:
        m = entry.meta
        cur = next((c for c in snap.curations.get((m.id, *via), ()) if c.covers(version)), None)
        if cur is not None and cur.status == "feed":
            cur = None
        score, rating = m.score, m.rating
        if cur is not None and (cur.severity_rating or cur.severity_score is not None):
            score = cur.severity_score if cur.severity_score is not None else score
            rating = cur.severity_rating or rating
        return Finding(
            ecosystem=eco,
            package=name,
            version=version,
            id=m.id,
            aliases=m.aliases,
            summary=m.summary,
            severity=rating,
            score=score,
            fixed_versions=entry.fixed,
            status=cur.status if cur else "affected",
            decided_by="curation" if cur else "feed",
            curation=cur,
            published=m.published,
        )

    async def _snapshot(self) -> _Snapshot:
        """This process's whole matching index, loaded on first use (a few MB for the PyPI
        feed) and dropped by ``clear()`` when an import or a curation changes the data."""
        if self._snap is None:
            async with self._lock:
                if self._snap is None:
                    self._snap = await self._load_snapshot()
        return self._snap

    async def _load_snapshot(self) -> _Snapshot:
        async with self._sessions() as s:
            cols = (
                AdvisoryRow.id,
                AdvisoryRow.summary,
                AdvisoryRow.severity_score,
                AdvisoryRow.severity_rating,
                AdvisoryRow.published,
            )
            live = (await s.execute(select(*cols).where(AdvisoryRow.withdrawn.is_(None)))).all()
            aliases: dict[str, list[str]] = defaultdict(list)
            q = select(AdvisoryAliasRow.advisory_id, AdvisoryAliasRow.alias)
            for adv_id, alias in (await s.execute(q)).all():
                aliases[adv_id].append(alias)
            metas = {
                r.id: _AdvisoryMeta(
                    r.id,
                    r.summary,
                    r.severity_score,
                    r.severity_rating,
                    False,
                    tuple(sorted(aliases.get(r.id, ()))),
                    aware(r.published),
                )
                for r in live
            }
            packages: dict[tuple[str, str], list[_Entry]] = defaultdict(list)
            q2 = select(
                AdvisoryPackageRow.advisory_id,
                AdvisoryPackageRow.ecosystem,
                AdvisoryPackageRow.name,
                AdvisoryPackageRow.data,
            )
            for adv_id, eco, name, data in (await s.execute(q2)).all():
                meta = metas.get(adv_id)
                if meta is not None:  # withdrawn advisories never match
                    packages[(eco, name)].append(_Entry(meta, eco, name, data))
            curations: dict[tuple[str, str, str], list[Curation]] = defaultdict(list)
            q3 = select(CurationRow).order_by(CurationRow.id.desc())
            for row in (await s.execute(q3)).scalars():
                c = _curation(row)
                curations[(c.advisory_id, c.ecosystem, c.package)].append(c)
            overrides = {
                r.conda_name: r.pypi_name for r in (await s.execute(select(CondaNameRow))).scalars()
            }
        return _Snapshot(dict(packages), dict(curations), CondaNames(overrides))

    # -- curation ------------------------------------------------------------------------------

    async def curate(
        self,
        ident: str,
        *,
        package: str,
        ecosystem: str = "PyPI",
        versions: str | None = None,
        status: str | None = None,
        justification: str | None = None,
        severity: str | None = None,
        score: float | None = None,
        reason: str | None = None,
        note: str | None = None,
        author: str | None = None,
    ) -> Curation:
        """Append a curation; the newest one covering a version decides it."""
        if status is not None and status not in STATUSES:
            raise InvalidRequest(f"unknown status {status!r}", f"use one of {', '.join(STATUSES)}")
        if status == "not_affected" and justification not in JUSTIFICATIONS:
            raise InvalidRequest(
                "not_affected needs a VEX justification",
                f"--justification one of {', '.join(JUSTIFICATIONS)}",
            )
        if justification is not None and justification not in JUSTIFICATIONS:
            raise InvalidRequest(
                f"unknown justification {justification!r}",
                f"use one of {', '.join(JUSTIFICATIONS)}",
            )
        if severity is not None and severity not in RATINGS:
            raise InvalidRequest(
                f"unknown severity {severity!r}", f"use one of {', '.join(RATINGS)}"
            )
        if (severity is not None or score is not None) and not reason:
            raise InvalidRequest("a severity override needs a --reason")
        if status is None and severity is None and score is None and not note:
            raise InvalidRequest("nothing to record", "give --status, --severity or --note")
        eco, name = normalize_package(ecosystem, package)
        if versions and eco == "PyPI":
            try:
                SpecifierSet(versions)
            except InvalidSpecifier as exc:
                raise InvalidRequest(
                    f"--versions {versions!r} is not a PEP 440 specifier", "e.g. '>=1.0,<2'"
                ) from exc
        async with self._sessions() as s, s.begin():
            adv_id = await self.resolve_id(s, ident)
            q = select(AdvisoryPackageRow.id).where(
                AdvisoryPackageRow.advisory_id == adv_id,
                AdvisoryPackageRow.ecosystem == eco,
                AdvisoryPackageRow.name == name,
            )
            if (await s.execute(q)).first() is None:
                raise NotFound(
                    f"{adv_id} does not name package {name!r} ({eco})",
                    "curate a package the advisory lists; `stockade vuln show` lists them",
                )
            if status is None:  # a note or severity override keeps the current status
                prev = (
                    (
                        await s.execute(
                            select(CurationRow.status)
                            .where(
                                CurationRow.advisory_id == adv_id,
                                CurationRow.ecosystem == eco,
                                CurationRow.package == name,
                            )
                            .order_by(CurationRow.id.desc())
                        )
                    )
                    .scalars()
                    .first()
                )
                status = prev or "affected"
            row = CurationRow(
                advisory_id=adv_id,
                ecosystem=eco,
                package=name,
                versions=versions,
                status=status,
                justification=justification,
                severity_score=score,
                severity_rating=severity,
                reason=reason,
                note=note,
                author=author,
                created_at=utcnow(),
            )
            s.add(row)
            await s.flush()
            made = _curation(row)
        self.clear()
        return made

    async def map_conda(self, conda_name: str, pypi_name: str | None, author: str | None) -> None:
        """Record that conda package ``conda_name`` ships PyPI project ``pypi_name`` (None: it
        is not a Python project); overrides the shipped table."""
        key = conda_name.strip().lower()
        if not key:
            raise InvalidRequest("a conda package name is required")
        async with self._sessions() as s, s.begin():
            row = await s.get(CondaNameRow, key)
            if row is None:
                s.add(
                    CondaNameRow(
                        conda_name=key, pypi_name=pypi_name, author=author, created_at=utcnow()
                    )
                )
            else:
                row.pypi_name, row.author, row.created_at = pypi_name, author, utcnow()
        self.clear()

    async def conda_mapping(self, conda_name: str) -> tuple[str | None, str]:
        """``(pypi name or None, "admin" | "shipped" | "same name")`` for a conda package."""
        snap = await self._snapshot()
        key = conda_name.lower()
        async with self._sessions() as s:
            if await s.get(CondaNameRow, key) is not None:
                return snap.names.pypi_name(key), "admin"
        if key in shipped():
            return snap.names.pypi_name(key), "shipped"
        return snap.names.pypi_name(key), "same name"

    async def history(self, ident: str, package: str | None = None) -> list[Curation]:
        async with self._sessions() as s:
            adv_id = await self.resolve_id(s, ident)
            q = select(CurationRow).where(CurationRow.advisory_id == adv_id)
            if package:
                q = q.where(CurationRow.package == normalize_package("PyPI", package)[1])
            return [_curation(r) for r in (await s.execute(q.order_by(CurationRow.id))).scalars()]


def _iso(when: dt.datetime | None) -> str | None:
    got = aware(when)
    return got.isoformat() if got is not None else None


def _chunks(items: list[Any], n: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]
