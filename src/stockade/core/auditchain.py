"""The audit log's hash chain and signed checkpoints (pure: no I/O).

Every audit event gets a position ``seq`` (1, 2, 3, … with no gaps) and
``hash = sha256(canonical JSON of {seq, prev, at, actor, action, index, project, filename,
outcome, client, detail})`` where ``prev`` is the hash of event ``seq - 1`` (:data:`GENESIS` for
the first). Editing an event changes its hash; deleting one leaves a gap in ``seq`` and a ``prev``
that no longer matches; moving one breaks both. A checkpoint is an Ed25519 signature over
``"stockade-audit-checkpoint:v1:<seq>:<hash>"`` by the server's audit key: rewriting the whole
chain after a checkpoint would need that key, and events cut from the end before a checkpoint's
``seq`` are missed by it.

The digest must never change: stored hashes are computed with it. A new format gets a new
checkpoint prefix and a version recorded with the events.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "FIELDS",
    "GENESIS",
    "Break",
    "ChainEvent",
    "Checkpoint",
    "VerifyReport",
    "checkpoint_message",
    "event_hash",
    "format_at",
    "key_id",
    "sign_checkpoint",
    "verify_chain",
]

GENESIS = "0" * 64
# The audit columns an event's hash covers (with ``detail``), in the database's names.
FIELDS = ("at", "actor", "action", "index_name", "project", "filename", "outcome", "client")


def format_at(value: datetime) -> str:
    """An event time as the hash sees it (UTC, microseconds, ``Z``)."""
    when = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_hash(prev: str, seq: int, event: Mapping[str, Any]) -> str:
    """The chain hash of one event (``event`` has the audit columns; ``at`` a datetime)."""
    doc: dict[str, Any] = {"v": 1, "seq": seq, "prev": prev}
    for name in FIELDS:
        value = event.get(name)
        doc[name] = format_at(value) if name == "at" and isinstance(value, datetime) else value
    doc["detail"] = event.get("detail") or {}
    canonical = orjson.dumps(doc, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    return hashlib.sha256(canonical).hexdigest()


def checkpoint_message(seq: int, chain_hash: str) -> bytes:
    return f"stockade-audit-checkpoint:v1:{seq}:{chain_hash}".encode()


def key_id(public: Ed25519PublicKey) -> str:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    raw = public.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def sign_checkpoint(key: Ed25519PrivateKey, seq: int, chain_hash: str) -> str:
    return key.sign(checkpoint_message(seq, chain_hash)).hex()


@dataclass(frozen=True, slots=True)
class ChainEvent:
    id: int
    seq: int | None
    prev_hash: str | None
    hash: str | None
    fields: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Checkpoint:
    id: int
    seq: int
    hash: str
    at: datetime
    key_id: str
    signature: str


@dataclass(frozen=True, slots=True)
class Break:
    seq: int | None
    id: int | None
    problem: str

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "id": self.id, "problem": self.problem}


@dataclass(slots=True)
class VerifyReport:
    events: int = 0
    last_seq: int = 0
    last_hash: str = GENESIS
    checkpoints: int = 0
    checkpoints_ok: int = 0
    segments: int = 0  # archived segments (retention), each checked on its own
    segments_ok: int = 0
    archived_events: int = 0
    breaks: list[Break] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.breaks

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "events": self.events,
            "last_seq": self.last_seq,
            "last_hash": self.last_hash,
            "checkpoints": self.checkpoints,
            "checkpoints_verified": self.checkpoints_ok,
            "archived_segments": self.segments,
            "archived_segments_verified": self.segments_ok,
            "archived_events": self.archived_events,
            "first_break": self.breaks[0].as_dict() if self.breaks else None,
            "breaks": [b.as_dict() for b in self.breaks[:100]],
        }


def verify_chain(
    events: Iterable[ChainEvent],
    checkpoints: Iterable[Checkpoint] = (),
    public_keys: Mapping[str, Ed25519PublicKey] | None = None,
    *,
    max_breaks: int = 100,
    start: tuple[int, str] = (0, GENESIS),
    known_hashes: Mapping[int, str] | None = None,
    report: VerifyReport | None = None,
) -> VerifyReport:
    """Walk ``events`` in ``seq`` order (then id) and report every place the chain breaks,
    then check each checkpoint's signature (with ``public_keys`` by key id) and that the event
    at its ``seq`` still has the hash it signed.

    ``start`` is the (seq, hash) the events follow: an archived segment's end when older
    events were archived (:func:`verify_chain` of each segment checks those); checkpoints at or
    before it are checked against ``known_hashes`` (the archived events' hashes at their
    seqs). ``report`` collects into an existing report (segments, then the database)."""
    report = report if report is not None else VerifyReport()
    prev = start[1]
    expected = start[0] + 1
    if start[0] > report.last_seq:
        report.last_seq, report.last_hash = start
    hashes: dict[int, str] = dict(known_hashes or {})

    def broken(seq: int | None, ident: int | None, problem: str) -> None:
        if len(report.breaks) < max_breaks:
            report.breaks.append(Break(seq, ident, problem))

    for e in events:
        report.events += 1
        if e.seq is None or e.hash is None:
            broken(None, e.id, f"event id {e.id} is not on the chain (no seq/hash)")
            continue
        if e.seq != expected:
            if e.seq > expected:
                missing = f"{expected}" if e.seq == expected + 1 else f"{expected}-{e.seq - 1}"
                broken(e.seq, e.id, f"event(s) {missing} missing before seq {e.seq} (deleted?)")
            else:
                broken(e.seq, e.id, f"seq {e.seq} appears again or out of order (moved?)")
        if e.prev_hash != prev:
            broken(
                e.seq, e.id, f"seq {e.seq} does not follow the event before it (prev hash differs)"
            )
        computed = event_hash(e.prev_hash or "", e.seq, e.fields)
        if computed != e.hash:
            broken(e.seq, e.id, f"seq {e.seq} was changed after it was written (hash differs)")
        hashes[e.seq] = e.hash
        prev = e.hash
        expected = e.seq + 1
        report.last_seq = e.seq
        report.last_hash = e.hash
    keys = public_keys or {}
    for cp in checkpoints:
        report.checkpoints += 1
        key = keys.get(cp.key_id)
        if key is None:
            broken(cp.seq, None, f"checkpoint #{cp.id} is signed by unknown key {cp.key_id}")
            continue
        try:
            key.verify(bytes.fromhex(cp.signature), checkpoint_message(cp.seq, cp.hash))
        except (InvalidSignature, ValueError):
            broken(cp.seq, None, f"checkpoint #{cp.id} has an invalid signature")
            continue
        if cp.seq > report.last_seq:
            broken(
                cp.seq,
                None,
                f"checkpoint #{cp.id} covers seq {cp.seq} but the chain ends at "
                f"{report.last_seq} (events cut from the end)",
            )
            continue
        if cp.seq not in hashes:
            broken(
                cp.seq,
                None,
                f"seq {cp.seq}, signed by checkpoint #{cp.id}, is missing (deleted, or its "
                "archived segment was removed?)",
            )
            continue
        if hashes.get(cp.seq) != cp.hash:
            broken(cp.seq, None, f"seq {cp.seq} differs from checkpoint #{cp.id} (chain rewritten)")
            continue
        report.checkpoints_ok += 1
    report.breaks.sort(key=lambda b: (b.seq is None, b.seq or 0))
    return report
