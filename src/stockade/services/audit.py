"""Audit log writer: events are queued and written in batches, off the request path, on a
hash chain (core/auditchain.py) with checkpoints signed by the server's audit key.

Writers of every process append through the chain head row (``audit_chain``, id 1): the batch's
transaction updates it first, which takes the row's lock (PostgreSQL) or the database's write
lock (SQLite), so batches from several processes queue up and the chain stays linear.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Collection
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)
from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from stockade.core.auditchain import (
    FIELDS,
    GENESIS,
    ChainEvent,
    Checkpoint,
    VerifyReport,
    event_hash,
    key_id,
    sign_checkpoint,
    verify_chain,
)
from stockade.db.models import AuditChainRow, AuditCheckpointRow, AuditRow
from stockade.errors import InvalidRequest
from stockade.services import repo

if TYPE_CHECKING:
    from stockade.services.audit_archive import AuditArchive

log = logging.getLogger("stockade.audit")

CHECKPOINT_EVERY = 1000  # events between signed checkpoints
CHECKPOINT_AGE = timedelta(hours=1)  # …or this long since the last one, when events came


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """The server's audit signing key (Ed25519, PEM, mode 0600), created on first use. Two
    processes creating it at once agree: the file is created exclusively, the loser reads it."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
            return key
    loaded = load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, Ed25519PrivateKey):
        raise InvalidRequest(
            f"{path} is not an Ed25519 private key", "move it away to make a new one"
        )
    return loaded


class AuditLog:
    """Append-only audit events (download, upload, refusal, token changes…)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        flush_every: float = 0.25,
        key_path: Path | None = None,
    ):
        self._sessions = sessions
        self._flush_lock = asyncio.Lock()
        self._key_path = key_path
        self._key: Ed25519PrivateKey | None = None
        self._queue: list[dict[str, Any]] = []
        self._touch: dict[str, datetime] = {}
        self._flush_every = flush_every
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        # Where retention moves old segments (services/audit_archive.py; set by the Runtime).
        self.archive: AuditArchive | None = None

    def record(
        self,
        action: str,
        *,
        actor: str | None = None,
        index: str | None = None,
        project: str | None = None,
        filename: str | None = None,
        outcome: str = "ok",
        client: str | None = None,
        **detail: Any,
    ) -> None:
        self._queue.append(
            {
                "at": repo.utcnow(),
                "actor": actor,
                "action": action,
                "index_name": index,
                "project": project,
                "filename": filename,
                "outcome": outcome,
                "client": client,
                "detail": {k: v for k, v in detail.items() if v is not None},
            }
        )
        self._wake.set()

    def token_used(self, token_id: str, at: datetime) -> None:
        self._touch[token_id] = at
        self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="audit-writer")

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(self._flush_every)
            try:
                await self.flush()
            except Exception as exc:  # keep the writer alive; events stay queued
                log.warning("audit flush failed (%s); retrying in a second", exc)
                await asyncio.sleep(1.0)
                self._wake.set()

    async def flush(self) -> None:
        """Write what is queued; returns once every event recorded before the call is in the
        database (a flush already under way is waited for, not overtaken)."""
        async with self._flush_lock:
            await self._flush()

    async def _flush(self) -> None:
        if not self._queue and not self._touch:
            return
        events, self._queue = self._queue, []
        touch, self._touch = self._touch, {}
        due = False
        try:
            async with self._sessions() as s, s.begin():
                if events:
                    due = await self._append(s, events)
                if touch:
                    await repo.touch_tokens(s, touch)
        except Exception:
            self._queue[:0] = events
            for k, v in touch.items():
                self._touch.setdefault(k, v)
            raise
        if due:
            try:
                await self.checkpoint()
            except Exception:  # the events are written; the next batch tries again
                log.exception("audit checkpoint failed")

    async def _append(self, s: AsyncSession, events: list[dict[str, Any]]) -> bool:
        """Chain and insert a batch; True when a checkpoint is due."""
        now = repo.utcnow()
        # The UPDATE comes first: it takes the lock every writer needs before reading the head.
        locked = await s.execute(
            update(AuditChainRow).where(AuditChainRow.id == 1).values(updated_at=now)
        )
        if not locked.rowcount:  # type: ignore[attr-defined]
            s.add(AuditChainRow(id=1, last_seq=0, last_hash=GENESIS, updated_at=now))
            await s.flush()
        head = (await s.execute(select(AuditChainRow).where(AuditChainRow.id == 1))).scalar_one()
        seq, prev = head.last_seq, head.last_hash
        for e in events:
            seq += 1
            digest = event_hash(prev, seq, e)
            e.update(seq=seq, prev_hash=prev, hash=digest)
            prev = digest
        await repo.insert_audit(s, events)
        head.last_seq, head.last_hash = seq, prev
        if self._key_path is None:
            return False
        q = select(AuditCheckpointRow).order_by(AuditCheckpointRow.id.desc()).limit(1)
        last = (await s.execute(q)).scalar_one_or_none()
        if last is None:
            return True
        at = repo.aware(last.at) or now
        return seq - last.seq >= CHECKPOINT_EVERY or now - at >= CHECKPOINT_AGE

    def signing_key(self) -> Ed25519PrivateKey:
        if self._key is None:
            if self._key_path is None:
                raise InvalidRequest("no audit key configured", "run through `stockade`")
            self._key = load_or_create_key(self._key_path)
        return self._key

    async def checkpoint(self) -> Checkpoint | None:
        """Sign the chain's head now (None when the chain is empty or already signed there)."""
        key = self.signing_key()
        async with self._sessions() as s, s.begin():
            head = (
                await s.execute(select(AuditChainRow).where(AuditChainRow.id == 1))
            ).scalar_one_or_none()
            if head is None or head.last_seq == 0:
                return None
            q = select(AuditCheckpointRow).order_by(AuditCheckpointRow.id.desc()).limit(1)
            last = (await s.execute(q)).scalar_one_or_none()
            if last is not None and last.seq == head.last_seq:
                return None
            row = AuditCheckpointRow(
                seq=head.last_seq,
                hash=head.last_hash,
                at=repo.utcnow(),
                key_id=key_id(key.public_key()),
                signature=sign_checkpoint(key, head.last_seq, head.last_hash),
            )
            s.add(row)
            await s.flush()
            return _checkpoint(row)

    async def verify(self, *, read_archives: bool = True) -> VerifyReport:
        """Walk the whole chain and every checkpoint (streamed in batches): the archived
        segments first when there is an archive (``read_archives=False``: their rows and
        signatures, not their blobs), then the events still in the database."""
        archive = self.archive
        keys = {}
        if self._key_path is not None and self._key_path.exists():
            public = self.signing_key().public_key()
            keys[key_id(public)] = public
        async with self._sessions() as s:
            q = select(AuditCheckpointRow).order_by(AuditCheckpointRow.id)
            checkpoints = [_checkpoint(r) for r in (await s.execute(q)).scalars()]
        report = VerifyReport()
        start: tuple[int, str] = (0, GENESIS)
        known: dict[int, str] = {}
        if archive is not None:
            start, known = await archive.verify(
                report, keys, want={c.seq for c in checkpoints}, read=read_archives
            )
            if not read_archives:  # only the segments' ends are known: check what can be
                checkpoints = [c for c in checkpoints if c.seq > start[0] or c.seq in known]
        events = [e async for e in self._chain_events()]
        return verify_chain(
            events, checkpoints, keys, start=start, known_hashes=known, report=report
        )

    async def _chain_events(self, batch: int = 5000) -> AsyncIterator[ChainEvent]:
        last: tuple[int, int] = (-1, -1)  # (seq or -1 for unchained, id)
        async with self._sessions() as s:
            unchained = select(AuditRow).where(AuditRow.seq.is_(None)).order_by(AuditRow.id)
            for r in (await s.execute(unchained)).scalars():
                yield _chain_event(r)
            while True:
                q = (
                    select(AuditRow)
                    .where(
                        AuditRow.seq.is_not(None),
                        or_(
                            AuditRow.seq > last[0],
                            and_(AuditRow.seq == last[0], AuditRow.id > last[1]),
                        ),
                    )
                    .order_by(AuditRow.seq, AuditRow.id)
                    .limit(batch)
                )
                rows = list((await s.execute(q)).scalars())
                if not rows:
                    return
                for r in rows:
                    yield _chain_event(r)
                last = (rows[-1].seq or 0, rows[-1].id)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()


def event_dict(r: AuditRow) -> dict[str, Any]:
    return {
        "id": r.id,
        "seq": r.seq,
        "at": (repo.aware(r.at) or repo.utcnow()).isoformat(),
        "actor": r.actor,
        "action": r.action,
        "index": r.index_name,
        "project": r.project,
        "filename": r.filename,
        "outcome": r.outcome,
        "client": r.client,
        "detail": r.detail,
        "hash": r.hash,
    }


async def query_events(
    sessions: async_sessionmaker[AsyncSession],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    actors: Collection[str] | None = None,
    index: str | None = None,
    project: str | None = None,
    action: str | None = None,
    outcome: str | None = None,
    limit: int | None = None,
    newest_first: bool = False,
    batch: int = 2000,
) -> AsyncIterator[dict[str, Any]]:
    """Audit events matching every filter given, streamed in batches (oldest first unless
    ``newest_first``); ``actors`` is a set of token ids (a team's tokens)."""
    after: int | None = None
    sent = 0
    async with sessions() as s:
        while limit is None or sent < limit:
            q = select(AuditRow)
            if since is not None:
                q = q.where(AuditRow.at >= since)
            if until is not None:
                q = q.where(AuditRow.at < until)
            if actors is not None:
                q = q.where(AuditRow.actor.in_(sorted(actors)))
            for column, value in (
                (AuditRow.index_name, index),
                (AuditRow.project, project),
                (AuditRow.action, action),
                (AuditRow.outcome, outcome),
            ):
                if value is not None:
                    q = q.where(column == value)
            if after is not None:
                q = q.where(AuditRow.id < after if newest_first else AuditRow.id > after)
            q = q.order_by(AuditRow.id.desc() if newest_first else AuditRow.id)
            size = batch if limit is None else min(batch, limit - sent)
            rows = list((await s.execute(q.limit(size))).scalars())
            if not rows:
                return
            for r in rows:
                yield event_dict(r)
            sent += len(rows)
            after = rows[-1].id


def _chain_event(r: AuditRow) -> ChainEvent:
    fields = {name: getattr(r, name) for name in FIELDS}
    fields["detail"] = r.detail
    return ChainEvent(r.id, r.seq, r.prev_hash, r.hash, fields)


def _checkpoint(r: AuditCheckpointRow) -> Checkpoint:
    return Checkpoint(r.id, r.seq, r.hash, repo.aware(r.at) or repo.utcnow(), r.key_id, r.signature)
