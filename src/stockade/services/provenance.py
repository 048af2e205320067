"""PEP 740 provenance at the door: verified before anything is served as attested.

* **Mirrors**: a file whose upstream page names a ``provenance`` URL has that document fetched
  (through the mirror's upstream client, at most :data:`DOCUMENT_MAX` bytes), parsed as a
  pypi-attestations ``Provenance`` and every attestation of every bundle verified with sigstore
  (offline, against the trust root sigstore ships) for the file's name and the sha256 its page
  publishes, with the bundle's publisher as the expected identity. The outcome is stored per
  file (``file_provenance``): verified (publisher and document kept, the document served to
  clients) or failed (the reason kept; the file is refused, audited as
  ``provenance.rejected``). Verification happens before the first download of such a file,
  when its provenance URL is asked for, when a policy needs provenance facts, and for the
  newest versions the impersonation checks look at.
* **Private uploads**: the ``attestations`` field ``twine upload --attestations`` sends (a JSON
  array of attestation objects) is verified against the uploaded file's sha256; the publisher
  is read from the signing certificate (see :func:`publisher_from_certificate`): only Trusted
  Publisher identities (GitHub Actions, GitLab CI/CD, Google Cloud) are accepted. Which
  publisher a project *must* have is a policy matter (the ``publisher`` rule kind).

Nothing here serves a document that has not verified: a failed or unreachable provenance is
never rendered as verified.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import anyio
import orjson
from cryptography import x509
from pypi_attestations import (
    Attestation,
    AttestationBundle,
    Distribution,
    GitHubPublisher,
    GitLabPublisher,
    GooglePublisher,
    Provenance,
)
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError as DBIntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from stockade.adapters.pypi import UpstreamIndex
from stockade.core.provenance import Publisher
from stockade.core.simple import FileEntry, ProjectPage, version_from_filename
from stockade.db.models import FileProvenanceRow
from stockade.errors import StockadeError
from stockade.services.audit import AuditLog
from stockade.services.repo import IndexInfo, utcnow
from stockade.types import IndexKind

log = logging.getLogger("stockade.provenance")

DOCUMENT_MAX = 1024**2  # bytes of one provenance document (PyPI's are a few KiB)
MAX_ATTESTATIONS = 16  # per upload or bundle: twine sends one or two
LEARN_MAX = 256  # provenance documents one page decision fetches; the rest wait for the next
CONCURRENCY = 8
STORED = "stored"  # FileEntry.provenance of a private file uploaded with attestations

_ISSUER = "1.3.6.1.4.1.57264.1.8"
_SOURCE_REPOSITORY = "1.3.6.1.4.1.57264.1.12"
_BUILD_CONFIG = "1.3.6.1.4.1.57264.1.18"
_GITHUB = "https://token.actions.githubusercontent.com"
_GITLAB = "https://gitlab.com"
_GOOGLE = "https://accounts.google.com"


class ProvenanceError(ValueError):
    """A provenance document or attestation does not verify; the message says why."""


@dataclass(frozen=True, slots=True)
class Verified:
    document: bytes  # the PEP 740 provenance object, as served to clients
    publishers: tuple[Publisher, ...]


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:400] + ("…" if len(text) > 400 else "")


def _distribution(filename: str, sha256: str) -> Distribution:
    try:
        return Distribution(name=filename, digest=sha256.lower())
    except ValueError as exc:
        raise ProvenanceError(f"{filename} is not a distribution filename: {_short(exc)}") from exc


def _publisher(model: Any) -> Publisher:
    return Publisher.from_dict(model.model_dump())


def _verify_one(att: Attestation, identity: Any, dist: Distribution, who: str) -> None:
    try:
        att.verify(identity, dist, offline=True)
    except Exception as exc:  # AttestationError, sigstore errors, malformed material: refuse
        raise ProvenanceError(
            f"an attestation of {dist.name} by {who} does not verify: {_short(exc)}"
        ) from exc


def verify_provenance(data: bytes, filename: str, sha256: str) -> Verified:
    """Verify a PEP 740 provenance object for the distribution ``filename`` with ``sha256``:
    every attestation of every bundle, with the bundle's publisher as the expected identity.
    ProvenanceError says what failed."""
    try:
        prov = Provenance.model_validate_json(data)
    except ValueError as exc:
        raise ProvenanceError(f"not a PEP 740 provenance object: {_short(exc)}") from exc
    if not prov.attestation_bundles:
        raise ProvenanceError("the provenance object has no attestation bundles")
    dist = _distribution(filename, sha256)
    publishers: list[Publisher] = []
    for bundle in prov.attestation_bundles:
        who = _publisher(bundle.publisher)
        if not bundle.attestations:
            raise ProvenanceError(f"the bundle of publisher {who.label} has no attestations")
        if len(bundle.attestations) > MAX_ATTESTATIONS:
            raise ProvenanceError(f"the bundle of {who.label} has over {MAX_ATTESTATIONS}")
        for att in bundle.attestations:
            _verify_one(att, bundle.publisher, dist, who.label)
        if who not in publishers:
            publishers.append(who)
    return Verified(bytes(data), tuple(publishers))


def publisher_from_certificate(
    att: Attestation,
) -> GitHubPublisher | GitLabPublisher | GooglePublisher:
    """The Trusted Publisher whose identity signed ``att``, read from its Fulcio certificate
    (issuer, source repository and build config claims; the e-mail of a Google service
    account). Other identities (a person's e-mail, another CI) are refused: an upload is
    attested only by a publisher a policy can name."""
    try:
        claims = att.certificate_claims
    except Exception as exc:
        raise ProvenanceError(
            f"the attestation's certificate is unreadable: {_short(exc)}"
        ) from exc
    issuer = claims.get(_ISSUER)
    source = claims.get(_SOURCE_REPOSITORY, "")
    build = claims.get(_BUILD_CONFIG, "")
    if issuer == _GITHUB and source.startswith("https://github.com/"):
        repository = source.removeprefix("https://github.com/")
        prefix = f"https://github.com/{repository}/.github/workflows/"
        if build.startswith(prefix) and "@" in build:
            workflow = build[len(prefix) :].split("@", 1)[0]
            return GitHubPublisher(repository=repository, workflow=workflow)
    elif issuer == _GITLAB and source.startswith("https://gitlab.com/"):
        repository = source.removeprefix("https://gitlab.com/")
        prefix = f"https://gitlab.com/{repository}//"
        if build.startswith(prefix) and "@" in build:
            path = build[len(prefix) :].rsplit("@", 1)[0]
            return GitLabPublisher(repository=repository, workflow_filepath=path)
    elif issuer == _GOOGLE:
        cert = x509.load_der_x509_certificate(att.verification_material.certificate)
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            emails = san.value.get_values_for_type(x509.RFC822Name)
        except x509.ExtensionNotFound:
            emails = []
        if emails:
            return GooglePublisher(email=emails[0])
    raise ProvenanceError(
        f"the attestation was signed by an identity that is not a Trusted Publisher "
        f"(issuer {issuer or 'unknown'}); Stockade accepts GitHub Actions, GitLab CI/CD and "
        "Google Cloud workload identities",
    )


def verify_attestations(data: str | bytes, filename: str, sha256: str) -> Verified:
    """Verify the ``attestations`` field of an upload (a JSON array of PEP 740 attestation
    objects) for ``filename`` with ``sha256``; the result is a provenance object with one
    bundle per publisher. ProvenanceError says what failed."""
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ProvenanceError(f"attestations are not JSON: {_short(exc)}") from exc
    if not isinstance(raw, list) or not raw:
        raise ProvenanceError("attestations must be a non-empty JSON array of attestation objects")
    if len(raw) > MAX_ATTESTATIONS:
        raise ProvenanceError(f"more than {MAX_ATTESTATIONS} attestations")
    dist = _distribution(filename, sha256)
    bundles: dict[Publisher, tuple[Any, list[Attestation]]] = {}
    for i, item in enumerate(raw, 1):
        try:
            att = Attestation.model_validate(item)
        except ValueError as exc:
            raise ProvenanceError(f"attestation {i} is malformed: {_short(exc)}") from exc
        model = publisher_from_certificate(att)
        who = _publisher(model)
        _verify_one(att, model, dist, who.label)
        bundles.setdefault(who, (model, []))[1].append(att)
    prov = Provenance(
        attestation_bundles=[
            AttestationBundle(publisher=model, attestations=atts)
            for model, atts in bundles.values()
        ]
    )
    return Verified(prov.model_dump_json().encode(), tuple(bundles))


# -- the service -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProvenanceRecord:
    index: str
    project: str
    filename: str
    sha256: str
    status: str  # verified | failed
    publishers: tuple[Publisher, ...] = ()
    reason: str | None = None
    source: str | None = None
    verified_at: datetime | None = None

    @property
    def verified(self) -> bool:
        return self.status == "verified"

    @property
    def publisher(self) -> Publisher | None:
        return self.publishers[0] if self.publishers else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "project": self.project,
            "filename": self.filename,
            "sha256": self.sha256,
            "status": self.status,
            "publishers": [p.as_dict() for p in self.publishers],
            "reason": self.reason,
            "source": self.source,
            "verified_at": self.verified_at.isoformat() if self.verified_at else None,
        }


def _record(row: FileProvenanceRow) -> ProvenanceRecord:
    return ProvenanceRecord(
        index=row.index_name,
        project=row.project,
        filename=row.filename,
        sha256=row.sha256,
        status=row.status,
        publishers=tuple(Publisher.from_dict(p) for p in row.publishers or ()),
        reason=row.reason,
        source=row.source,
        verified_at=row.verified_at,
    )


def _row(
    index: str,
    project: str,
    filename: str,
    sha256: str,
    *,
    verified: Verified | None,
    reason: str | None,
    source: str | None,
) -> FileProvenanceRow:
    first = verified.publishers[0] if verified and verified.publishers else None
    return FileProvenanceRow(
        index_name=index,
        project=project,
        version=version_from_filename(filename),
        filename=filename,
        sha256=sha256.lower(),
        status="verified" if verified is not None else "failed",
        publisher_kind=first.kind if first else None,
        publisher_repository=(first.repository or first.email) if first else None,
        publisher_workflow=first.workflow if first else None,
        publisher_environment=first.environment if first else None,
        publishers=[p.as_dict() for p in verified.publishers] if verified else [],
        document=verified.document.decode() if verified else None,
        reason=reason,
        source=source,
        verified_at=utcnow(),
    )


class ProvenanceService:
    """Verified provenance per file of an index; see the module docstring."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        audit: AuditLog,
        index_info: Callable[[str], Any],
        upstream: Callable[[IndexInfo], UpstreamIndex],
    ) -> None:
        self._sessions = sessions
        self._audit = audit
        self._index_info = index_info  # IndexService.get (async)
        self._upstream = upstream
        self._known: dict[tuple[str, str], ProvenanceRecord] = {}
        self._inflight: dict[tuple[str, str], asyncio.Task[ProvenanceRecord]] = {}
        self._sem = asyncio.Semaphore(CONCURRENCY)

    def clear(self) -> None:
        self._known.clear()

    def _remember(self, rec: ProvenanceRecord) -> None:
        if len(self._known) > 100_000:
            self._known.clear()
        self._known[(rec.index, rec.filename)] = rec

    async def known(self, index: str, project: str) -> dict[str, ProvenanceRecord]:
        """What is recorded for a project's files on ``index`` (one query)."""
        async with self._sessions() as s:
            q = select(FileProvenanceRow).where(
                FileProvenanceRow.index_name == index, FileProvenanceRow.project == project
            )
            rows = [_record(r) for r in (await s.execute(q)).scalars()]
        for rec in rows:
            self._remember(rec)
        return {r.filename: r for r in rows}

    async def _lookup(self, index: str, project: str, entry: FileEntry) -> ProvenanceRecord | None:
        sha = (entry.sha256 or "").lower()
        rec = self._known.get((index, entry.filename))
        if rec is None:
            rec = (await self.known(index, project)).get(entry.filename)
        return rec if rec is not None and rec.sha256 == sha else None

    async def ensure(
        self, origin: IndexInfo, project: str, entry: FileEntry
    ) -> ProvenanceRecord | None:
        """The verified (or refused) provenance of a file of ``origin``; None when the file has
        none. A mirrored file's provenance is fetched and verified the first time (one fetch
        per file and process at a time); an upstream that cannot give it raises
        UpstreamUnavailable (nothing is recorded: the next request tries again)."""
        if entry.provenance is None:
            return None
        rec = await self._lookup(origin.name, project, entry)
        if rec is not None or origin.kind is not IndexKind.MIRROR:
            return rec
        key = (origin.name, entry.filename)
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.create_task(self._fetch_and_verify(origin, project, entry))
            self._inflight[key] = task
            task.add_done_callback(lambda _t: self._inflight.pop(key, None))
        return await asyncio.shield(task)

    async def _fetch_and_verify(
        self, origin: IndexInfo, project: str, entry: FileEntry
    ) -> ProvenanceRecord:
        assert entry.provenance is not None
        if not entry.sha256:
            reason = "the upstream publishes no sha256 for the file: no provenance can bind it"
            return await self._store(origin, project, entry, None, reason)
        why: str | None = None
        async with self._sem:
            body = await self._upstream(origin).fetch_document(entry.provenance, DOCUMENT_MAX)
            try:
                verified: Verified | None = await anyio.to_thread.run_sync(
                    verify_provenance, body, entry.filename, entry.sha256
                )
            except ProvenanceError as exc:
                verified, why = None, str(exc)
        return await self._store(origin, project, entry, verified, why)

    async def _store(
        self,
        origin: IndexInfo,
        project: str,
        entry: FileEntry,
        verified: Verified | None,
        reason: str | None,
    ) -> ProvenanceRecord:
        sha = (entry.sha256 or "").lower()
        row = _row(
            origin.name,
            project,
            entry.filename,
            sha,
            verified=verified,
            reason=reason,
            source=entry.provenance,
        )
        try:
            async with self._sessions() as s, s.begin():
                await s.execute(
                    delete(FileProvenanceRow).where(
                        FileProvenanceRow.index_name == origin.name,
                        FileProvenanceRow.filename == entry.filename,
                    )
                )
                s.add(row)
        except DBIntegrityError:  # another process recorded it first: theirs stands
            got = (await self.known(origin.name, project)).get(entry.filename)
            if got is not None:
                return got
            raise
        rec = _record(row)
        self._remember(rec)
        if verified is None:
            log.warning("provenance of %s on %s refused: %s", entry.filename, origin.name, reason)
            self._audit.record(
                "provenance.rejected",
                index=origin.name,
                project=project,
                filename=entry.filename,
                outcome="blocked",
                reason=reason,
                url=entry.provenance,
            )
        return rec

    async def learn(self, index: str, page: ProjectPage) -> dict[str, ProvenanceRecord]:
        """Provenance of a page's files (for policy decisions): what is recorded, and the
        mirrored files not verified yet (at most :data:`LEARN_MAX` per call, in parallel).
        A file left out (not fetched yet, upstream unreachable) has no verified provenance."""
        out: dict[str, ProvenanceRecord] = {}
        offered = [f for f in page.files if f.provenance is not None]
        if not offered:
            return out
        origins: dict[str, dict[str, ProvenanceRecord]] = {}
        todo: list[tuple[IndexInfo, FileEntry]] = []
        for f in offered:
            origin = f.origin or index
            if origin not in origins:
                origins[origin] = await self.known(origin, page.name)
            rec = origins[origin].get(f.filename)
            if rec is not None and rec.sha256 == (f.sha256 or "").lower():
                out[f.filename] = rec
            elif len(todo) < LEARN_MAX:
                info = await self._index_info(origin)
                if info.kind is IndexKind.MIRROR:
                    todo.append((info, f))

        async def one(info: IndexInfo, f: FileEntry) -> None:
            try:
                rec = await self.ensure(info, page.name, f)
            except StockadeError as exc:
                log.info("provenance of %s not verified yet: %s", f.filename, exc.message)
                return
            if rec is not None:
                out[f.filename] = rec

        if todo:
            await asyncio.gather(*(one(info, f) for info, f in todo))
        return out

    async def failures(self, index: str, page: ProjectPage) -> dict[str, str]:
        """Files of a page whose provenance was refused, with the reason (they are not served)."""
        out: dict[str, str] = {}
        pending: set[str] = set()
        for f in page.files:
            if f.provenance is None or f.provenance == STORED:
                continue
            origin = f.origin or index
            rec = self._known.get((origin, f.filename))
            if rec is None:
                pending.add(origin)
            elif rec.status == "failed" and rec.sha256 == (f.sha256 or "").lower():
                out[f.filename] = _refusal(f.filename, rec)
        for origin in pending:
            for name, rec in (await self.known(origin, page.name)).items():
                listed = page.file(name)
                if (
                    listed is not None
                    and rec.status == "failed"
                    and (listed.origin or index) == origin
                    and rec.sha256 == (listed.sha256 or "").lower()
                ):
                    out[name] = _refusal(name, rec)
        return out

    async def report(
        self, index: str, page: ProjectPage, *, verify: bool = False
    ) -> list[dict[str, Any]]:
        """Per file of a page: its provenance status (verified | failed | pending: offered,
        not verified yet | none), publishers and the reason of a refusal. ``verify`` first
        verifies what is not verified yet (as a policy decision does)."""
        recs = await self.learn(index, page) if verify else {}
        known: dict[str, dict[str, ProvenanceRecord]] = {}
        out: list[dict[str, Any]] = []
        for f in page.files:
            origin = f.origin or index
            rec = recs.get(f.filename)
            if rec is None and f.provenance is not None:
                if origin not in known:
                    known[origin] = await self.known(origin, page.name)
                got = known[origin].get(f.filename)
                if got is not None and got.sha256 == (f.sha256 or "").lower():
                    rec = got
            status = rec.status if rec else ("pending" if f.provenance is not None else "none")
            out.append(
                {
                    "filename": f.filename,
                    "index": origin,
                    "status": status,
                    "publishers": [p.as_dict() for p in rec.publishers] if rec else [],
                    "reason": rec.reason if rec else None,
                    "verified_at": rec.verified_at.isoformat() if rec and rec.verified_at else None,
                }
            )
        return out

    async def document(self, index: str, filename: str) -> bytes | None:
        """The verified provenance object of a file, as served to clients."""
        async with self._sessions() as s:
            q = select(FileProvenanceRow.document).where(
                FileProvenanceRow.index_name == index,
                FileProvenanceRow.filename == filename,
                FileProvenanceRow.status == "verified",
            )
            doc = (await s.execute(q)).scalar_one_or_none()
        return doc.encode() if doc is not None else None

    async def stored_files(self, index: str, project: str) -> set[str]:
        """Files of a private project that were uploaded with verified attestations."""
        return {n for n, r in (await self.known(index, project)).items() if r.verified}

    @staticmethod
    async def record_upload(
        s: AsyncSession, index: str, project: str, filename: str, sha256: str, verified: Verified
    ) -> None:
        """Store an upload's verified attestations (inside the upload's transaction)."""
        await s.execute(
            delete(FileProvenanceRow).where(
                FileProvenanceRow.index_name == index, FileProvenanceRow.filename == filename
            )
        )
        s.add(
            _row(index, project, filename, sha256, verified=verified, reason=None, source="upload")
        )

    async def forget_in(self, s: AsyncSession, index: str, filenames: Sequence[str]) -> None:
        """Deleted files of a private index lose their provenance (in the delete's
        transaction)."""
        if not filenames:
            return
        await s.execute(
            delete(FileProvenanceRow).where(
                FileProvenanceRow.index_name == index,
                FileProvenanceRow.filename.in_(list(filenames)),
            )
        )
        for name in filenames:
            self._known.pop((index, name), None)


def _refusal(filename: str, rec: ProvenanceRecord) -> str:
    return f"provenance of {filename} failed verification: {rec.reason}; not served"
