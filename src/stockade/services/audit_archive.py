"""Audit retention: old audit events move from the database to storage, never silently away.

``archive(before)`` takes the oldest run of chained events written before ``before`` (at most
:data:`SEGMENT_EVENTS` per segment), checks the chain over it (a broken chain is never archived:
that would launder an edit), writes it to the blob store as gzip'd JSON lines with every field
the chain hashes, signs a checkpoint over its last event with the server's audit key, and in one
transaction records the segment (``audit_segments``) and deletes the archived rows. The blob is
self-describing: a header line, one line per event, a trailer with the last hash and the
signature, so an auditor holding the segment and the audit public key can check it offline.

``verify`` walks every segment (blob hash, chain inside, continuity with the segment before,
signature) and hands the database walk its starting point (the newest segment's end), so
``stockade audit verify`` covers the whole history. Deleting a segment's row leaves a gap the
database walk reports; editing a blob changes its sha256; rewriting one consistently needs the
audit key.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import logging
import zlib
from collections.abc import AsyncIterator, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from stockade.core.auditchain import (
    FIELDS,
    GENESIS,
    Break,
    ChainEvent,
    VerifyReport,
    checkpoint_message,
    event_hash,
    format_at,
    key_id,
    sign_checkpoint,
    verify_chain,
)
from stockade.core.ports import BlobStore
from stockade.db.models import AuditChainRow, AuditRow, AuditSegmentRow
from stockade.errors import BlobMissing, Conflict
from stockade.services import repo
from stockade.services.audit import AuditLog

log = logging.getLogger("stockade.audit")

FORMAT = "stockade-audit-segment/1"
SEGMENT_EVENTS = 50_000  # events per archived segment at most
_BATCH = 5_000


@dataclass(frozen=True, slots=True)
class Segment:
    id: int
    first_seq: int
    last_seq: int
    prev_hash: str
    last_hash: str
    events: int
    first_at: datetime
    last_at: datetime
    blob_sha256: str
    size: int
    key_id: str
    signature: str
    created_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "events": self.events,
            "first_at": self.first_at.isoformat(),
            "last_at": self.last_at.isoformat(),
            "prev_hash": self.prev_hash,
            "last_hash": self.last_hash,
            "blob_sha256": self.blob_sha256,
            "size": self.size,
            "key_id": self.key_id,
            "signature": self.signature,
            "archived_at": self.created_at.isoformat(),
        }


def _segment(r: AuditSegmentRow) -> Segment:
    now = repo.utcnow()
    return Segment(
        r.id,
        r.first_seq,
        r.last_seq,
        r.prev_hash,
        r.last_hash,
        r.events,
        repo.aware(r.first_at) or now,
        repo.aware(r.last_at) or now,
        r.blob_sha256,
        r.size,
        r.key_id,
        r.signature,
        repo.aware(r.created_at) or now,
    )


def _line(r: AuditRow) -> dict[str, Any]:
    out: dict[str, Any] = {"id": r.id, "seq": r.seq, "prev_hash": r.prev_hash, "hash": r.hash}
    for name in FIELDS:
        value = getattr(r, name)
        out[name] = format_at(value) if name == "at" else value
    out["detail"] = r.detail or {}
    return out


def _chain_event(line: Mapping[str, Any]) -> ChainEvent:
    fields = {name: line.get(name) for name in FIELDS}
    fields["detail"] = line.get("detail") or {}
    return ChainEvent(
        int(line.get("id") or 0), line.get("seq"), line.get("prev_hash"), line.get("hash"), fields
    )


def event_view(line: Mapping[str, Any]) -> dict[str, Any]:
    """An archived event as ``audit list/export`` print events (services.audit.event_dict)."""
    at = datetime.strptime(str(line["at"]), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    return {
        "id": line.get("id"),
        "seq": line.get("seq"),
        "at": at.isoformat(),
        "actor": line.get("actor"),
        "action": line.get("action"),
        "index": line.get("index_name"),
        "project": line.get("project"),
        "filename": line.get("filename"),
        "outcome": line.get("outcome"),
        "client": line.get("client"),
        "detail": line.get("detail") or {},
        "hash": line.get("hash"),
        "archived": True,
    }


class SegmentError(Exception):
    """An archived segment cannot be read as one (missing blob, not gzip, not our format)."""


def _read_lines(data: bytes) -> list[dict[str, Any]]:
    try:
        text = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise SegmentError(f"not a gzip stream ({exc})") from None
    out = []
    for n, raw in enumerate(text.splitlines(), 1):
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise SegmentError(f"line {n} is not JSON") from None
        if not isinstance(doc, dict):
            raise SegmentError(f"line {n} is not a JSON object")
        out.append(doc)
    if not out or out[0].get("format") != FORMAT:
        raise SegmentError(f"the first line does not name the format {FORMAT}")
    return out


class AuditArchive:
    """Archive, list, read and verify audit segments (see the module docstring)."""

    def __init__(
        self,
        audit: AuditLog,
        sessions: async_sessionmaker[AsyncSession],
        store: BlobStore,
    ):
        self._audit = audit
        self._sessions = sessions
        self._store = store

    async def segments(self) -> list[Segment]:
        async with self._sessions() as s:
            q = select(AuditSegmentRow).order_by(AuditSegmentRow.first_seq)
            return [_segment(r) for r in (await s.execute(q)).scalars()]

    async def _plan(self, before: datetime) -> tuple[int, str, int] | None:
        """(archived through seq, its hash, last seq to archive now) or None."""
        async with self._sessions() as s:
            q = select(AuditSegmentRow).order_by(AuditSegmentRow.last_seq.desc()).limit(1)
            last = (await s.execute(q)).scalar_one_or_none()
            through, prev = (last.last_seq, last.last_hash) if last else (0, GENESIS)
            head = (
                await s.execute(select(AuditChainRow).where(AuditChainRow.id == 1))
            ).scalar_one_or_none()
            if head is None or head.last_seq <= through:
                return None
            # Events get their seq in batches, so time order and seq order may differ a little:
            # stop before the first event (by seq) written at or after ``before``.
            newer = await s.scalar(
                select(func.min(AuditRow.seq)).where(AuditRow.seq > through, AuditRow.at >= before)
            )
            end = head.last_seq if newer is None else int(newer) - 1
            end = min(end, through + SEGMENT_EVENTS)
            return (through, prev, end) if end > through else None

    async def pending(self, before: datetime) -> dict[str, Any]:
        """What ``archive(before)`` would move (a dry run)."""
        async with self._sessions() as s:
            through = await s.scalar(select(func.max(AuditSegmentRow.last_seq))) or 0
            q = select(func.count(), func.min(AuditRow.seq), func.max(AuditRow.seq)).where(
                AuditRow.seq > through, AuditRow.at < before
            )
            count, first, last = (await s.execute(q)).one()
        return {"events": int(count or 0), "first_seq": first, "last_seq": last}

    async def archive(self, before: datetime, *, actor: str | None = None) -> list[Segment]:
        """Archive every chained event written before ``before`` (oldest first, in segments).
        Raises ``Conflict`` when the chain over those events is broken: nothing is archived."""
        await self._audit.flush()
        made: list[Segment] = []
        while (plan := await self._plan(before)) is not None:
            seg = await self._archive_one(*plan)
            if seg is None:  # another process archived this run first: plan again
                continue
            made.append(seg)
            self._audit.record(
                "audit.archive",
                actor=actor,
                first_seq=seg.first_seq,
                last_seq=seg.last_seq,
                events=seg.events,
                blob_sha256=seg.blob_sha256,
            )
        if made:
            await self._audit.flush()
        return made

    async def _archive_one(self, through: int, prev: str, end: int) -> Segment | None:
        key = self._audit.signing_key()
        writer = await asyncio.to_thread(self._store.open_writer)
        gz = zlib.compressobj(6, zlib.DEFLATED, 31)  # gzip framing
        header = {"format": FORMAT, "first_seq": through + 1, "last_seq": end, "prev_hash": prev}
        try:
            await asyncio.to_thread(writer.write, gz.compress(orjson.dumps(header) + b"\n"))
            expected, last_hash, count = through + 1, prev, 0
            first_at = last_at = None
            async with self._sessions() as s:
                while expected <= end:
                    q = (
                        select(AuditRow)
                        .where(AuditRow.seq >= expected, AuditRow.seq <= end)
                        .order_by(AuditRow.seq, AuditRow.id)
                        .limit(_BATCH)
                    )
                    rows = list((await s.execute(q)).scalars())
                    if not rows:
                        break
                    chunk = bytearray()
                    for r in rows:
                        line = _line(r)
                        problem = None
                        if r.seq != expected:
                            problem = f"seq {expected} is missing or seq {r.seq} is out of place"
                        elif r.prev_hash != last_hash:
                            problem = f"seq {r.seq} does not follow the event before it"
                        elif event_hash(last_hash, r.seq, line) != r.hash:
                            problem = f"seq {r.seq} was changed after it was written"
                        if problem is not None:
                            raise Conflict(
                                f"the audit chain is broken: {problem}; nothing was archived",
                                "run `stockade audit verify` and investigate before archiving",
                            )
                        chunk += orjson.dumps(line) + b"\n"
                        last_hash, expected, count = r.hash or "", expected + 1, count + 1
                        at = repo.aware(r.at) or repo.utcnow()
                        first_at = first_at or at
                        last_at = at
                    await asyncio.to_thread(writer.write, gz.compress(bytes(chunk)))
            if count != end - through or first_at is None or last_at is None:
                raise Conflict(
                    f"the audit chain is broken: events {expected}-{end} are missing; "
                    "nothing was archived",
                    "run `stockade audit verify` and investigate before archiving",
                )
            signature = sign_checkpoint(key, end, last_hash)
            kid = key_id(key.public_key())
            trailer = {"end": True, "last_seq": end, "last_hash": last_hash, "events": count}
            trailer |= {"key_id": kid, "signature": signature}
            tail = gz.compress(orjson.dumps(trailer) + b"\n") + gz.flush()
            await asyncio.to_thread(writer.write, tail)
            sha = writer.hexdigest()
            size = writer.size
            await asyncio.to_thread(writer.commit, sha)
        except BaseException:
            await asyncio.to_thread(writer.abort)
            raise
        row = AuditSegmentRow(
            first_seq=through + 1,
            last_seq=end,
            prev_hash=prev,
            last_hash=last_hash,
            events=count,
            first_at=first_at,
            last_at=last_at,
            blob_sha256=sha,
            size=size,
            key_id=kid,
            signature=signature,
            created_at=repo.utcnow(),
        )
        try:
            async with self._sessions() as s, s.begin():
                s.add(row)
                await s.flush()
                gone = await s.execute(
                    delete(AuditRow).where(AuditRow.seq > through, AuditRow.seq <= end)
                )
                if gone.rowcount != count:  # type: ignore[attr-defined]
                    raise Conflict(
                        f"events {through + 1}-{end} changed while they were archived; "
                        "nothing was archived",
                        "run `stockade audit archive` again",
                    )
        except IntegrityError:
            return None
        log.info("archived audit events %d-%d to blob %s", through + 1, end, sha)
        return _segment(row)

    async def read(self, seg: Segment) -> list[dict[str, Any]]:
        """The segment's event lines (header and trailer dropped). Raises ``SegmentError``."""
        try:
            data = await asyncio.to_thread(self._store.read_bytes, seg.blob_sha256)
        except BlobMissing:
            raise SegmentError(f"blob {seg.blob_sha256} is missing from storage") from None
        if hashlib.sha256(data).hexdigest() != seg.blob_sha256:
            raise SegmentError("its blob was changed in storage (sha256 differs)")
        lines = await asyncio.to_thread(_read_lines, data)
        return [line for line in lines[1:] if not line.get("end")]

    async def events(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        actors: Collection[str] | None = None,
        index: str | None = None,
        project: str | None = None,
        action: str | None = None,
        outcome: str | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Archived events matching the filters, oldest first (``audit export --archived``)."""
        wanted = {"index": index, "project": project, "action": action, "outcome": outcome}
        for seg in await self.segments():
            if (since is not None and seg.last_at < since) or (
                until is not None and seg.first_at >= until
            ):
                continue
            for line in await self.read(seg):
                e = event_view(line)
                at = datetime.fromisoformat(e["at"])
                if (since is not None and at < since) or (until is not None and at >= until):
                    continue
                if actors is not None and e["actor"] not in actors:
                    continue
                if any(v is not None and e[k] != v for k, v in wanted.items()):
                    continue
                yield e

    async def verify(
        self,
        report: VerifyReport,
        keys: Mapping[str, Ed25519PublicKey],
        *,
        want: Collection[int] = (),
        read: bool = True,
    ) -> tuple[tuple[int, str], dict[int, str]]:
        """Check every segment into ``report`` (``read=False``: rows and signatures only, not
        the blobs); return where the database's chain starts and the archived hashes at the
        ``want`` seqs (checkpoints over archived events)."""
        start: tuple[int, str] = (0, GENESIS)
        known: dict[int, str] = {}
        for seg in await self.segments():
            report.segments += 1
            name = f"archived segment {seg.first_seq}-{seg.last_seq}"
            ok = True
            if (seg.first_seq, seg.prev_hash) != (start[0] + 1, start[1]):
                ok = False
                report.breaks.append(
                    Break(
                        seg.first_seq,
                        None,
                        f"{name} does not follow what comes before it "
                        f"(expected it to start at seq {start[0] + 1}; a segment deleted?)",
                    )
                )
            key = keys.get(seg.key_id)
            try:
                if key is None:
                    raise InvalidSignature
                key.verify(
                    bytes.fromhex(seg.signature), checkpoint_message(seg.last_seq, seg.last_hash)
                )
            except (InvalidSignature, ValueError):
                ok = False
                report.breaks.append(
                    Break(seg.last_seq, None, f"{name}: its checkpoint signature does not verify")
                )
            if read:
                try:
                    lines = await self.read(seg)
                except SegmentError as exc:
                    ok = False
                    report.breaks.append(Break(seg.first_seq, None, f"{name}: {exc}"))
                else:
                    inner = verify_chain(
                        (_chain_event(line) for line in lines),
                        start=(seg.first_seq - 1, seg.prev_hash),
                    )
                    report.archived_events += inner.events
                    for b in inner.breaks:
                        report.breaks.append(Break(b.seq, b.id, f"{name}: {b.problem}"))
                    if (inner.last_seq, inner.last_hash) != (seg.last_seq, seg.last_hash):
                        report.breaks.append(
                            Break(
                                seg.last_seq,
                                None,
                                f"{name}: its events end at seq {inner.last_seq}, not at the "
                                f"signed seq {seg.last_seq} with the signed hash",
                            )
                        )
                    ok = ok and not inner.breaks
                    wanted = set(want)
                    known.update(
                        {e["seq"]: str(e["hash"]) for e in lines if e.get("seq") in wanted}
                    )
            else:
                report.archived_events += seg.events
                known[seg.last_seq] = seg.last_hash
            if ok:
                report.segments_ok += 1
            start = (seg.last_seq, seg.last_hash)
        return start, known
