"""conda channels: mirror channels (fetch-through with TTL) and private channels (uploads).

A channel is an index of kind ``conda-mirror`` or ``conda-private`` (so tokens, teams, audit and
anonymous read work unchanged); ``conda_channels`` adds the mirrored subdirs.

Served documents (``<subdir>/repodata.json`` with its ``.zst``/gzip forms and CEP-16 shards,
``current_repodata.json``, ``channeldata.json``) are blobs in the BlobStore, named by a
``conda_repodata`` row that is switched in one UPDATE once every blob is written: a reader sees
the old document or the new one, never half of one.

* mirror: upstream bytes are streamed into the blob store (``repodata.json.zst`` preferred,
  decompressed while written), then parsed once in a worker thread; revalidated with
  If-None-Match/If-Modified-Since after ``page_ttl``; served stale (flagged) when the upstream
  fails. Package files are fetched on first request (one fetch per sha256, shared by every
  reader), checked against size, sha256 and md5 of the record, and only then stored.
* private: uploads are validated (``core.conda.package``), recorded, and the subdir's repodata
  is regenerated incrementally (the current document plus the new record) under a lock that
  spans processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import orjson
import zstandard
from securesystemslib.signer import Signer
from sqlalchemy.exc import IntegrityError as DBIntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from stockade.core.conda import repodata as rd
from stockade.core.conda import trust
from stockade.core.conda.names import check_subdir, parse_filename, require_filename
from stockade.core.conda.package import CondaLimits, validate_conda_package
from stockade.core.policy.model import Decision, Policy
from stockade.core.ports import BlobStore, BlobWriter
from stockade.errors import (
    BlobMissing,
    ConfigError,
    Conflict,
    IntegrityError,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    PolicyBlocked,
    StockadeError,
    UploadRejected,
    UpstreamError,
    UpstreamUnavailable,
)
from stockade.services import conda_repo, repo
from stockade.services.audit import AuditLog
from stockade.services.conda_policy import CondaPolicy
from stockade.services.conda_repo import CondaPackageInfo, RepodataState
from stockade.services.coordination import Coordination, hold
from stockade.services.files import CHUNK, Fetch, StoredFile, Streaming, claim_fetch
from stockade.services.indexes import IndexService, check_index_name
from stockade.services.policy_check import DraftReport, ProjectChange
from stockade.services.repo import IndexInfo
from stockade.services.threats import ThreatService
from stockade.settings import Settings
from stockade.types import IndexKind

if TYPE_CHECKING:
    from stockade.services.conda_trust import CondaTrust

log = logging.getLogger("stockade.conda")
STALE_RETRY = 30.0
CHANNELDATA = "channeldata.json"
CURRENT = "current_repodata.json"
DOCS = (rd.REPODATA, CURRENT)
SHARD_CACHE = 64
POLICY_RECHECK = 300.0  # seconds a private document under a policy is trusted in-process


def _blocked(ch: CondaChannel, filename: str, decision: Decision) -> PolicyBlocked:
    """The 403 for a record the channel's policy leaves out, naming every blocking rule."""
    rules = [r.line() for r in decision.blocks]
    return PolicyBlocked(
        f"{filename} is blocked by the policy of conda channel {ch.name!r}: " + "; ".join(rules),
        f"see `stockade policy show {ch.name}`; an admin can grant an exception",
        rules,
        False,
    )


@dataclass(frozen=True, slots=True)
class CondaChannel:
    index: IndexInfo
    subdirs: tuple[str, ...]  # mirrors: the mirrored subdirs; private: those with packages
    signed_at: datetime | None = None  # conda content trust: records signed since

    @property
    def name(self) -> str:
        return self.index.name

    @property
    def mirror(self) -> bool:
        return self.index.kind is IndexKind.CONDA_MIRROR

    def as_dict(self) -> dict[str, Any]:
        d = self.index.as_dict()
        d["subdirs"] = list(self.subdirs)
        d["url"] = f"/conda/{self.name}/"
        d["signed"] = self.signed_at is not None
        return d


@dataclass(frozen=True, slots=True)
class ServedDoc:
    """Blobs of one document as served now (``stale``: why it could not be revalidated)."""

    json: str
    zst: str | None
    gz: str | None
    shards: str | None
    packages: int
    stale: str | None = None


@dataclass(slots=True)
class _Cached:
    doc: ServedDoc
    fresh_until: float


class CondaService:
    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        store: BlobStore,
        indexes: IndexService,
        audit: AuditLog,
        client: httpx.AsyncClient,
        changed: Callable[[], None] | None = None,
        limits: CondaLimits | None = None,
    ) -> None:
        self._settings = settings
        self._sessions = sessions
        self._store = store
        self._indexes = indexes
        self._audit = audit
        self._client = client
        self._changed = changed
        self._limits = limits or CondaLimits()
        self._subdirs: dict[int, tuple[list[str], datetime | None]] | None = None
        self._docs: dict[tuple[str, str], _Cached] = {}
        self._refreshing: dict[tuple[str, str], asyncio.Task[ServedDoc | None]] = {}
        self._shard_indexes: OrderedDict[str, dict[str, str]] = OrderedDict()
        self._fetches: dict[str, Fetch] = {}
        self.coord: Coordination | None = None  # set by the runtime: cross-process claims
        self._tasks: set[asyncio.Task[None]] = set()
        self._locks: dict[tuple[int, str], asyncio.Lock] = {}
        self.policy: CondaPolicy | None = None  # set by the Runtime: policies on channels
        self.trust: CondaTrust | None = None  # set by the Runtime: conda content trust keys
        self.threats: ThreatService | None = None  # set by the Runtime: the malware scanner

    def clear(self) -> None:
        self._subdirs = None
        self._docs.clear()

    def forget(self, channel: str) -> None:
        """Drop the documents of ``channel`` this process remembers (another process replaced
        one: it is read again from the database)."""
        for key in [k for k in self._docs if k[0] == channel]:
            self._docs.pop(key, None)

    # -- channels ------------------------------------------------------------------------------

    async def _subdir_map(self) -> dict[int, tuple[list[str], datetime | None]]:
        subdirs = self._subdirs
        if subdirs is None:
            async with self._sessions() as s:
                subdirs = await conda_repo.channel_subdirs(s)
            self._subdirs = subdirs  # (a clear() during the session's close must not leave None)
        return subdirs

    async def as_channel(self, index: IndexInfo) -> CondaChannel:
        if not index.kind.is_conda:
            raise NotFound(
                f"index {index.name!r} is a {index.kind.value} index, not a conda channel",
                f"use /pypi/{index.name}/simple/ for it, or see `stockade conda channel list`",
            )
        subdirs, signed_at = (await self._subdir_map()).get(index.id, ([], None))
        return CondaChannel(index, tuple(subdirs), signed_at)

    async def channel(self, name: str) -> CondaChannel:
        index = await self._indexes.find(name)
        if index is None:
            raise NotFound(f"no conda channel named {name!r}", "see `stockade conda channel list`")
        return await self.as_channel(index)

    async def channels(self) -> list[CondaChannel]:
        return [await self.as_channel(i) for i in await self._indexes.list() if i.kind.is_conda]

    async def create_channel(
        self,
        name: str,
        *,
        mirror: str | None = None,
        subdirs: list[str] | None = None,
        private: bool = False,
        anonymous_read: bool = False,
        description: str | None = None,
    ) -> CondaChannel:
        check_index_name(name)
        if bool(mirror) == private:
            raise InvalidRequest(
                "say what kind of conda channel to create",
                "give exactly one of --mirror CHANNEL_URL (with --subdirs) or --private",
            )
        subdirs = [check_subdir(s) for s in subdirs or []]
        if mirror:
            url = mirror if mirror.endswith("/") else mirror + "/"
            if not url.startswith(("http://", "https://")) or "://" not in url[:10]:
                raise InvalidRequest(
                    f"mirror upstream {mirror!r} is not an http(s) URL",
                    "give the channel URL, e.g. https://conda.anaconda.org/conda-forge/",
                )
            if not subdirs:
                raise InvalidRequest(
                    "a mirror channel needs the subdirs to mirror", "--subdirs noarch,linux-64"
                )
            kind = IndexKind.CONDA_MIRROR
        else:
            if subdirs:
                raise InvalidRequest(
                    "--subdirs is for mirror channels",
                    "a private channel serves every subdir it has packages for",
                )
            url = None
            kind = IndexKind.CONDA_PRIVATE
        async with self._sessions() as s, s.begin():
            if await repo.get_index(s, name):
                raise Conflict(f"index or channel {name!r} already exists", "pick another name")
            try:
                info = await repo.insert_index(
                    s,
                    name=name,
                    kind=kind,
                    upstream_url=url,
                    members=[],
                    anonymous_read=anonymous_read,
                    description=description,
                )
                await conda_repo.insert_channel(s, info.id, subdirs)
            except DBIntegrityError as exc:
                raise Conflict(f"index or channel {name!r} already exists") from exc
        self._indexes.clear()
        self.clear()
        return CondaChannel(info, tuple(subdirs))

    # -- documents -----------------------------------------------------------------------------

    async def repodata(self, ch: CondaChannel, subdir: str, doc: str = rd.REPODATA) -> ServedDoc:
        """``doc`` is ``repodata.json`` or ``current_repodata.json`` of ``subdir``."""
        check_subdir(subdir)
        if ch.mirror:
            if subdir not in ch.subdirs:
                raise NotFound(
                    f"conda channel {ch.name!r} does not mirror subdir {subdir!r}",
                    f"it mirrors {', '.join(ch.subdirs)}; an admin can create a channel with "
                    f"--subdirs {','.join([*ch.subdirs, subdir])}",
                )
            got = await self._mirror_doc(ch, f"{subdir}/{doc}")
            if got is None and doc == CURRENT:  # upstream has none: the full one is a superset
                got = await self._mirror_doc(ch, f"{subdir}/{rd.REPODATA}")
            if got is None:
                raise NotFound(f"the upstream channel of {ch.name!r} has no {subdir}/{doc}")
            return got
        return await self._private_doc(ch, subdir)

    async def channeldata(self, ch: CondaChannel) -> ServedDoc:
        if ch.mirror:
            got = await self._mirror_doc(ch, CHANNELDATA)
            if got is None:
                raise NotFound(f"the upstream channel of {ch.name!r} has no {CHANNELDATA}")
            return got
        key = (ch.name, CHANNELDATA)
        cached = self._docs.get(key)
        if cached is not None:
            return cached.doc
        async with self._sessions() as s:
            pkgs = await conda_repo.list_packages(s, ch.index.id)
        by_subdir: dict[str, dict[str, Any]] = {}
        for p in pkgs:
            if p.yanked_at is None:
                rd.add_record(by_subdir.setdefault(p.subdir, {}), p.filename, p.record)
        body = orjson.dumps(rd.private_channeldata(by_subdir))
        served = ServedDoc(self._store.put_bytes(body), None, None, None, len(pkgs))
        self._docs[key] = _Cached(served, float("inf"))
        return served

    async def shard_allowed(self, ch: CondaChannel, subdir: str, sha: str) -> bool:
        """Whether ``sha`` is a shard of the subdir's current shard index (nothing else is
        served from the shard URL, so it never exposes another channel's blobs)."""
        doc = await self.repodata(ch, subdir)
        if doc.shards is None:
            return False
        return sha in (await self._shard_index(doc.shards)).values()

    async def _shard_index(self, sha: str) -> dict[str, str]:
        got = self._shard_indexes.get(sha)
        if got is None:
            blob = await anyio.to_thread.run_sync(self._store.read_bytes, sha)
            got = rd.read_shard_index(blob)
            self._shard_indexes[sha] = got
            while len(self._shard_indexes) > SHARD_CACHE:
                self._shard_indexes.popitem(last=False)
        else:
            self._shard_indexes.move_to_end(sha)
        return got

    async def record(self, ch: CondaChannel, subdir: str, filename: str) -> dict[str, Any]:
        """The served repodata record of ``filename`` (looked up through its name's shard)."""
        parsed = require_filename(filename)
        for attempt in range(2):
            doc = await self.repodata(ch, subdir)
            if doc.shards is None:
                break
            try:
                shard_sha = (await self._shard_index(doc.shards)).get(parsed.name)
                if shard_sha is None:
                    break
                blob = await anyio.to_thread.run_sync(self._store.read_bytes, shard_sha)
            except BlobMissing:  # another process replaced the document: look it up again
                if attempt:
                    raise
                self.forget(ch.name)
                continue
            rec = rd.read_shard(blob).get(filename)
            if rec is not None:
                return rec
            break
        blocked = await self._blocked_decision(ch, subdir, filename)
        if blocked is not None:
            raise _blocked(ch, filename, blocked)
        raise NotFound(
            f"{subdir}/{filename} is not in the repodata of conda channel {ch.name!r}",
            "check the name, version and build (a mirror lists what its upstream lists; a "
            "channel's policy may leave files out)",
        )

    async def pin_verdict(
        self, ch: CondaChannel, name: str, version: str
    ) -> tuple[bool, list[str]]:
        """Whether the channel serves a record of ``name`` at ``version`` in any of its subdirs
        (as filtered by its policy now), else the policy's reasons for the records it left out
        (empty: no such record at all). Reads one shard per subdir, not whole repodata."""
        name = name.lower()
        reasons: list[str] = []
        subdirs = (
            ch.subdirs
            if ch.mirror
            else tuple(sorted({p.subdir for p in await self.packages(ch, name=name)}))
        )
        for subdir in subdirs:
            try:
                doc = await self.repodata(ch, subdir)
            except NotFound:
                continue
            records: dict[str, dict[str, Any]] = {}
            if doc.shards is not None:
                shard_sha = (await self._shard_index(doc.shards)).get(name)
                if shard_sha is not None:
                    blob = await anyio.to_thread.run_sync(self._store.read_bytes, shard_sha)
                    records = rd.read_shard(blob)
            else:
                blob = await anyio.to_thread.run_sync(self._store.read_bytes, doc.json)
                data = orjson.loads(blob)
                for key in rd.RECORD_KEYS:
                    records.update(
                        (fn, rec)
                        for fn, rec in (data.get(key) or {}).items()
                        if str(rec.get("name", "")).lower() == name
                    )
            if any(str(r.get("version")) == version for r in records.values()):
                return True, []
            if self.policy is not None:
                for fn, decision in self.policy.blocked_in(ch.name, subdir).items():
                    parsed = parse_filename(fn)
                    if parsed is not None and (parsed.name.lower(), parsed.version) == (
                        name,
                        version,
                    ):
                        reasons.extend(f"{fn}: {r.line()}" for r in decision.blocks)
        return False, reasons

    async def verdicts(
        self, ch: CondaChannel, pkgs: list[CondaPackageInfo]
    ) -> dict[tuple[str, str], Decision]:
        """The channel policy's decision on each of ``pkgs`` by (subdir, filename), as
        filtering makes it (exceptions applied); empty when the channel has no policy."""
        assert self.policy is not None
        policy = await self.policy.current(ch.index)
        if policy is None or not pkgs:
            return {}
        by_subdir: dict[str, dict[str, dict[str, Any]]] = {}
        for p in pkgs:
            by_subdir.setdefault(p.subdir, {})[p.filename] = p.record
        out: dict[tuple[str, str], Decision] = {}
        for subdir, recs in by_subdir.items():
            data = rd.empty_repodata(subdir)
            for fn, rec in recs.items():
                rd.add_record(data, fn, rec)
            decide = await self.policy.decider(ch.index, policy, data)
            for fn, rec in recs.items():
                out[(subdir, fn)] = decide(fn, rec)
        return out

    # -- policy explain / draft test ---------------------------------------------------------

    async def _explain_subdirs(self, ch: CondaChannel) -> list[str]:
        if ch.mirror:
            return list(ch.subdirs)
        return sorted({p.subdir for p in await self.packages(ch)})

    async def raw_records(self, ch: CondaChannel, subdir: str) -> dict[str, Any]:
        """The subdir's repodata before any policy: the upstream document (mirror, fetched or
        revalidated as a client read would) or the channel's stored records (private)."""
        path = f"{subdir}/{rd.REPODATA}"
        if ch.mirror:
            await self.repodata(ch, subdir)
            async with self._sessions() as s:
                state = await conda_repo.get_state(s, ch.index.id, path)
            if state is None or not state.source_sha256:
                return rd.empty_repodata(subdir)
            async with self._store.open_local(state.source_sha256) as source:
                loaded: dict[str, Any] = await anyio.to_thread.run_sync(
                    lambda: rd.load_repodata(source, what=f"{ch.name}/{path}")
                )
            return loaded
        data = rd.empty_repodata(subdir)
        for p in await self.packages(ch, subdir):
            if p.yanked_at is None:  # a yanked record is not served: nothing to decide
                rd.add_record(data, p.filename, p.record)
        return data

    async def explain(
        self, ch: CondaChannel, name: str, version: str | None = None
    ) -> list[dict[str, Any]]:
        """``policy explain`` for a conda package: per record of ``name`` (and ``version``) in
        every subdir, allowed or blocked, by which rule, with the facts the rules read."""
        assert self.policy is not None
        policy = await self.policy.current(ch.index)
        rows: list[dict[str, Any]] = []
        want = name.strip().lower()
        for subdir in await self._explain_subdirs(ch):
            full = await self.raw_records(ch, subdir)
            data = rd.empty_repodata(subdir)
            for key in rd.RECORD_KEYS:
                for fn, rec in (full.get(key) or {}).items():
                    if not isinstance(rec, dict) or str(rec.get("name", "")).lower() != want:
                        continue
                    if version is not None and str(rec.get("version")) != version:
                        continue
                    data[key][fn] = rec
            del full
            facts_of = await self.policy.facts(ch.index, data)
            decide = await self.policy.decider(ch.index, policy, data) if policy else None
            for key in rd.RECORD_KEYS:
                for fn, rec in sorted(data[key].items()):
                    facts = facts_of(fn, rec)
                    sha = rec.get("sha256")
                    row: dict[str, Any] = {
                        "filename": fn,
                        "subdir": subdir,
                        "version": facts.version,
                        "build": rec.get("build"),
                        "allowed": True,
                        "blocked_by": [],
                        "warnings": [],
                        "exception": None,
                        "data": {
                            "sha256": sha,
                            "size": facts.size,
                            "license": rec.get("license"),
                            "license_spdx": facts.license,
                            "timestamp": (
                                facts.upload_time.isoformat() if facts.upload_time else None
                            ),
                            "vulns": [f"{v.id} ({v.severity})" for v in facts.vulns],
                            "findings": [
                                f"{f.rule} ({f.tier}): {f.message}" for f in facts.findings
                            ],
                        },
                    }
                    if not isinstance(sha, str) or len(sha) != 64:
                        row["allowed"] = False
                        row["blocked_by"] = ["no sha256 in the record: never served"]
                    elif decide is not None:
                        d = decide(fn, rec)
                        row["allowed"] = d.allowed
                        row["blocked_by"] = [x.line() for x in d.blocks]
                        row["warnings"] = [x.line() for x in d.warnings]
                        row["exception"] = d.exception
                    rows.append(row)
        return rows

    async def draft_report(
        self,
        ch: CondaChannel,
        draft: Policy,
        progress: Callable[[int, int], None] | None = None,
    ) -> DraftReport:
        """``policy test`` for a channel: every record of every subdir decided by the policy in
        force and by ``draft`` (exceptions in force apply to both); changes per package."""
        assert self.policy is not None
        current = await self.policy.current(ch.index)
        report = DraftReport(ch.name)
        changes: dict[str, ProjectChange] = {}
        subdirs = await self._explain_subdirs(ch)
        for n, subdir in enumerate(subdirs, 1):
            if progress is not None:
                progress(n, len(subdirs))
            try:
                data = await self.raw_records(ch, subdir)
            except StockadeError as exc:
                report.errors.append((subdir, exc.message))
                continue
            before = await self.policy.decider(ch.index, current, data) if current else None
            after = await self.policy.decider(ch.index, draft, data)
            for key in rd.RECORD_KEYS:
                for fn, rec in (data.get(key) or {}).items():
                    if not isinstance(rec, dict) or not isinstance(rec.get("sha256"), str):
                        continue
                    name = str(rec.get("name", ""))
                    change = changes.get(name)
                    if change is None:
                        change = changes[name] = ProjectChange(name, 0, 0, 0)
                    old = before(fn, rec) if before is not None else None
                    new = after(fn, rec)
                    was_blocked = old is not None and not old.allowed
                    change.files += 1
                    change.blocked_before += was_blocked
                    change.blocked_after += not new.allowed
                    shown = f"{subdir}/{fn}"
                    if not was_blocked and not new.allowed:
                        change.newly_blocked.append((shown, new.summary()))
                    elif was_blocked and new.allowed:
                        assert old is not None
                        change.newly_allowed.append((shown, old.summary()))
            del data
        for name in sorted(changes):
            c = changes[name]
            report.projects += 1
            report.files += c.files
            report.blocked_before += c.blocked_before
            report.blocked_after += c.blocked_after
            if c.newly_blocked or c.newly_allowed:
                c.newly_blocked.sort()
                c.newly_allowed.sort()
                report.changes.append(c)
        return report

    async def _blocked_decision(
        self, ch: CondaChannel, subdir: str, filename: str
    ) -> Decision | None:
        """Why ``filename`` is not served: the decision remembered when this process filtered
        the document, else decided now (another process may have derived the document)."""
        if self.policy is None:
            return None
        got = self.policy.blocked(ch.name, subdir, filename)
        if got is not None:
            return got
        policy = await self.policy.current(ch.index)
        if policy is None:
            return None
        rec: dict[str, Any] | None = None
        if ch.mirror:
            full = await self.raw_records(ch, subdir)
            for key in rd.RECORD_KEYS:
                found = (full.get(key) or {}).get(filename)
                rec = found if isinstance(found, dict) else rec
            del full
        else:
            async with self._sessions() as s:
                pkg = await conda_repo.get_package(s, ch.index.id, subdir, filename)
            rec = pkg.record if pkg is not None and pkg.yanked_at is None else None
        if rec is None:
            return None
        data = rd.empty_repodata(subdir)
        rd.add_record(data, filename, rec)
        decision = (await self.policy.decider(ch.index, policy, data))(filename, rec)
        return None if decision.allowed else decision

    # -- mirror documents ----------------------------------------------------------------------

    async def _mirror_doc(self, ch: CondaChannel, path: str) -> ServedDoc | None:
        key = (ch.name, path)
        cached = self._docs.get(key)
        if cached is not None and cached.fresh_until > time.monotonic():
            return cached.doc
        task = self._refreshing.get(key)
        if task is None:
            task = asyncio.create_task(self._refresh(ch, path))
            self._refreshing[key] = task
            task.add_done_callback(lambda _t: self._refreshing.pop(key, None))
        return await asyncio.shield(task)

    def _remember(self, ch: CondaChannel, path: str, doc: ServedDoc, ttl: float) -> ServedDoc:
        self._docs[(ch.name, path)] = _Cached(doc, time.monotonic() + ttl)
        return doc

    @staticmethod
    def _doc(state: RepodataState, stale: str | None = None) -> ServedDoc | None:
        if not state.json_sha256:
            return None
        return ServedDoc(
            state.json_sha256,
            state.zst_sha256,
            state.gz_sha256,
            state.shards_sha256,
            state.packages,
            stale,
        )

    async def _refresh(self, ch: CondaChannel, path: str) -> ServedDoc | None:
        ttl = float(self._settings.page_ttl)
        async with self._sessions() as s:
            state = await conda_repo.get_state(s, ch.index.id, path)
        if state is not None:
            age = (repo.utcnow() - state.fetched_at).total_seconds()
            usable = not state.exists_upstream or all(
                self._store.exists(b) for b in state.blobs() if b
            )
            if age < ttl and usable:
                key = await self._policy_key(ch, path)
                if key != state.policy_key and state.source_sha256 and state.exists_upstream:
                    return await self._install_mirror_doc(  # the policy changed: filter again
                        ch, path, state, state.source_sha256, state.etag, state.last_modified,
                        state.variant or "json", ttl - age, state.fetched_at,
                    )  # fmt: skip
                doc = self._doc(state)
                return self._remember(ch, path, doc, ttl - age) if doc else None
        try:
            return await self._fetch_doc(ch, path, state, ttl)
        except StockadeError as exc:
            doc = self._doc(state, exc.message) if state is not None else None
            if doc is None or not all(self._store.exists(b) for b in (doc.json, doc.zst) if b):
                raise
            self._audit.record(
                "conda.stale", index=ch.name, filename=path, outcome="error", reason=exc.message
            )
            log.warning("serving stale %s of %s: %s", path, ch.name, exc.message)
            return self._remember(ch, path, doc, STALE_RETRY)

    async def _fetch_doc(
        self, ch: CondaChannel, path: str, state: RepodataState | None, ttl: float
    ) -> ServedDoc | None:
        assert ch.index.upstream_url is not None
        base = ch.index.upstream_url + path
        variants = ["zst", "json"] if path.endswith(rd.REPODATA) else ["json"]
        if state is not None and state.variant in variants:  # what worked last time, first
            variants.remove(state.variant)
            variants.insert(0, state.variant)
        for variant in variants:
            url = base + ".zst" if variant == "zst" else base
            headers: dict[str, str] = {}
            if state is not None and state.variant == variant and state.json_sha256:
                if state.etag:
                    headers["If-None-Match"] = state.etag
                if state.last_modified:
                    headers["If-Modified-Since"] = state.last_modified
            got = await self._download(url, headers, decompress=variant == "zst", what=path)
            if got == 404:
                continue
            if got == 304:
                assert state is not None
                key = await self._policy_key(ch, path)
                if key != state.policy_key and state.source_sha256:
                    return await self._install_mirror_doc(
                        ch, path, state, state.source_sha256, state.etag, state.last_modified,
                        variant, ttl,
                    )  # fmt: skip
                async with self._sessions() as s, s.begin():
                    state = await conda_repo.put_state(
                        s, ch.index.id, path, fetched_at=repo.utcnow()
                    )
                doc = self._doc(state)
                return self._remember(ch, path, doc, ttl) if doc else None
            assert isinstance(got, tuple)
            raw_sha, etag, last_modified = got
            return await self._install_mirror_doc(
                ch, path, state, raw_sha, etag, last_modified, variant, ttl
            )
        # Not upstream in any form.
        async with self._sessions() as s, s.begin():
            await conda_repo.put_state(
                s,
                ch.index.id,
                path,
                fetched_at=repo.utcnow(),
                exists_upstream=False,
                json_sha256=None,
                zst_sha256=None,
                gz_sha256=None,
                shards_sha256=None,
                source_sha256=None,
                etag=None,
                last_modified=None,
                variant=None,
                packages=0,
            )
        self._docs.pop((ch.name, path), None)
        return None

    async def _download(
        self, url: str, headers: dict[str, str], *, decompress: bool, what: str
    ) -> int | tuple[str, str | None, str | None]:
        """GET ``url`` into the blob store: 304, 404, or (sha256, etag, last-modified)."""
        cap = self._settings.max_file_size
        writer = self._store.open_writer()
        try:
            async with self._client.stream("GET", url, headers=headers) as resp:
                if resp.status_code in (304, 404):
                    writer.abort()
                    return resp.status_code
                if resp.status_code == 403 and decompress:
                    writer.abort()
                    return 404  # some hosts forbid what they do not have
                if resp.status_code != 200:
                    raise UpstreamUnavailable(
                        f"upstream answered {resp.status_code} for {what} ({url})",
                        "try again later; the upstream may be down",
                    )
                dobj = zstandard.ZstdDecompressor().decompressobj() if decompress else None
                async for chunk in resp.aiter_bytes(CHUNK):
                    data = dobj.decompress(chunk) if dobj is not None else chunk
                    if data:
                        writer.write(data)
                    if writer.size > cap:
                        raise PayloadTooLarge(
                            f"upstream {what} is over max_file_size ({cap} bytes)",
                            "raise max_file_size in stockade.toml",
                        )
                if dobj is not None and not dobj.eof:
                    raise UpstreamError(f"upstream {what}.zst ended before its zstd frame did")
                etag = resp.headers.get("etag")
                last_modified = resp.headers.get("last-modified")
            sha = writer.hexdigest()
            if self._store.exists(sha):
                writer.abort()
            else:
                await anyio.to_thread.run_sync(writer.commit, sha)  # S3: an upload
            return sha, etag, last_modified
        except zstandard.ZstdError as exc:
            writer.abort()
            raise UpstreamError(f"upstream {what}.zst is not valid zstd: {exc}") from exc
        except httpx.HTTPError as exc:
            writer.abort()
            raise UpstreamUnavailable(
                f"cannot fetch {what} from the upstream channel: {type(exc).__name__}",
                "check the channel's upstream URL and the network; retry later",
            ) from exc
        except BaseException:
            writer.abort()
            raise

    def _commit_file(self, path: Path) -> str:
        """Copy a derived file into the blob store (temp file + rename); return its sha256."""
        writer = self._store.open_writer()
        try:
            with path.open("rb") as f:
                while chunk := f.read(CHUNK):
                    writer.write(chunk)
            sha = writer.hexdigest()
            if self._store.exists(sha):
                writer.abort()
            else:
                writer.commit(sha)
            return sha
        except BaseException:
            writer.abort()
            raise

    def _derive_files(
        self,
        source: Path | None,
        data: dict[str, Any] | None,
        path: str,
        keep: Any,
        sign: rd.Sign | None = None,
    ) -> tuple[dict[str, str | None], int, int]:
        """In a worker thread: parse (once), derive, commit every output to the blob store."""
        subdir, _, doc = path.rpartition("/")
        with tempfile.TemporaryDirectory(prefix="conda-", dir=self._tmp_dir()) as tmp:
            out = Path(tmp)
            if doc == CHANNELDATA:
                assert source is not None
                rd.load_repodata(source, what=CHANNELDATA)  # a JSON object, or raise
                derived = _plain(source, out)
            else:
                if data is None:
                    assert source is not None
                    data = rd.load_repodata(source, what=path)
                shards: list[bytes] = []

                def put(blob: bytes) -> str:  # stored below, all at once
                    shards.append(blob)
                    return hashlib.sha256(blob).hexdigest()

                derived = rd.derive(
                    data,
                    out,
                    subdir=subdir,
                    put_blob=put if doc == rd.REPODATA else None,
                    keep=keep,
                    sign=sign,
                )
                del data
                if shards:  # durable before the index that names them is committed
                    self._store.put_many(shards)
                    del shards
            shas: dict[str, str | None] = {
                "json_sha256": self._commit_file(derived.json),
                "zst_sha256": self._commit_file(derived.zst),
                "gz_sha256": self._commit_file(derived.gz),
                "shards_sha256": (
                    self._commit_file(derived.shards_index) if derived.shards_index else None
                ),
            }
            return shas, derived.packages, derived.unverifiable

    def _tmp_dir(self) -> Path | None:
        tmp = getattr(self._store, "tmp_dir", None)
        return Path(tmp) if tmp is not None else None

    async def _policy_key(self, ch: CondaChannel, path: str) -> str | None:
        """What a served document was derived under: the policy's key, and for a signed
        channel the pkg_mgr key (``sign:<key>``); a change derives the document again."""
        if "/" not in path:  # channeldata.json is neither filtered nor signed
            return None
        key = await self.policy.key(ch.index) if self.policy is not None else None
        signer = self._pkg_signer(ch)
        if signer is not None:
            sign = f"sign:{trust.public_hex(signer)[:16]}"
            key = f"{key}|{sign}" if key else sign
        return key

    def _pkg_signer(self, ch: CondaChannel) -> Signer | None:
        """The pkg_mgr signer of a signed channel (a missing key is an error, never an unsigned
        document served as if signing were off)."""
        if ch.signed_at is None:
            return None
        if self.trust is None:
            raise ConfigError(f"conda channel {ch.name!r} is signed but no trust keys are set up")
        return self.trust.pkg_signer()

    def _sign(self, ch: CondaChannel, path: str) -> rd.Sign | None:
        signer = self._pkg_signer(ch) if "/" in path else None
        if signer is None:
            return None
        return lambda data: trust.sign_repodata(data, signer)

    async def _keep(self, ch: CondaChannel, subdir: str, data: dict[str, Any]) -> Any:
        return await self.policy.keep(ch.index, subdir, data) if self.policy else None

    async def _install_mirror_doc(
        self,
        ch: CondaChannel,
        path: str,
        state: RepodataState | None,
        raw_sha: str,
        etag: str | None,
        last_modified: str | None,
        variant: str,
        ttl: float,
        fetched_at: Any = None,
    ) -> ServedDoc | None:
        subdir = path.rpartition("/")[0]
        key = await self._policy_key(ch, path)
        data: dict[str, Any] | None = None
        keep = None
        async with self._store.open_local(raw_sha) as source:
            if subdir:  # parse here (once) so that the policy can see every record first
                data = await anyio.to_thread.run_sync(
                    lambda: rd.load_repodata(source, what=f"{ch.name}/{path}")
                )
                keep = await self._keep(ch, subdir, data)
            shas, packages, unverifiable = await anyio.to_thread.run_sync(
                self._derive_files, source, data, path, keep, self._sign(ch, path)
            )
        del data
        if unverifiable:
            log.warning(
                "%s of %s: %d records without sha256 are not served", path, ch.name, unverifiable
            )
        async with self._sessions() as s, s.begin():
            new = await conda_repo.put_state(
                s,
                ch.index.id,
                path,
                source_sha256=raw_sha,
                etag=etag,
                last_modified=last_modified,
                variant=variant,
                fetched_at=fetched_at or repo.utcnow(),
                exists_upstream=True,
                packages=packages,
                policy_key=key,
                **shas,
            )
        if state is not None:
            await self._drop_blobs(state.blobs() - new.blobs())
        doc = self._doc(new)
        return self._remember(ch, path, doc, ttl) if doc else None

    async def _drop_blobs(self, shas: set[str]) -> None:
        """Delete blobs no conda row uses any more (another process may still stream an open
        file; on POSIX that read completes)."""
        for sha in shas:
            async with self._sessions() as s:
                if await conda_repo.blob_in_use(s, sha) or await repo.sha_in_use(s, sha):
                    continue
            self._store.delete(sha)

    # -- private documents ---------------------------------------------------------------------

    async def _private_doc(self, ch: CondaChannel, subdir: str) -> ServedDoc:
        key = (ch.name, f"{subdir}/{rd.REPODATA}")
        cached = self._docs.get(key)
        if cached is not None and cached.fresh_until > time.monotonic():
            return cached.doc
        async with self._sessions() as s:
            state = await conda_repo.get_state(s, ch.index.id, f"{subdir}/{rd.REPODATA}")
        doc = self._doc(state) if state is not None else None
        pkey = await self._policy_key(ch, f"{subdir}/{rd.REPODATA}")
        stale_policy = state is not None and state.policy_key != pkey
        if doc is None or stale_policy or not self._store.exists(doc.json):
            doc = await self._regenerate(ch, subdir, None)
        # Under a policy, look again every few minutes (quarantines end; exceptions expire).
        until = float("inf") if pkey is None else time.monotonic() + POLICY_RECHECK
        self._docs[key] = _Cached(doc, until)
        return doc

    @contextlib.asynccontextmanager
    async def _lock(self, ch: CondaChannel, subdir: str) -> Any:
        """Writers of one subdir's repodata, across tasks and processes."""
        lock = self._locks.setdefault((ch.index.id, subdir), asyncio.Lock())
        async with lock:
            if self.coord is not None:  # every process of the deployment, on any machine
                async with hold(self.coord, f"conda-repodata:{ch.index.id}:{subdir}"):
                    yield
                return
            self._settings.run_dir.mkdir(parents=True, exist_ok=True)
            path = self._settings.run_dir / f"conda-{ch.index.id}-{subdir}.lock"
            with path.open("a") as f:
                await anyio.to_thread.run_sync(fcntl.flock, f, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(f, fcntl.LOCK_UN)

    async def _regenerate(
        self, ch: CondaChannel, subdir: str, added: CondaPackageInfo | None
    ) -> ServedDoc:
        """Write the subdir's repodata: the current document plus ``added`` when there is one
        (incremental), else rebuilt from every stored record."""
        path = f"{subdir}/{rd.REPODATA}"
        async with self._lock(ch, subdir):
            async with self._sessions() as s:
                state = await conda_repo.get_state(s, ch.index.id, path)
            current = state.json_sha256 if state is not None and state.json_sha256 else None
            key = await self._policy_key(ch, path)
            loaded: dict[str, Any] | None = None
            # incremental when no policy filters (a signed document is re-signed whole)
            unfiltered = key is None or key.startswith("sign:")
            incremental = unfiltered and state is not None and state.policy_key == key
            if incremental and added is not None and current is not None:
                with contextlib.suppress(BlobMissing):  # gone: rebuild from the records
                    async with self._store.open_local(current) as source:
                        loaded = await anyio.to_thread.run_sync(rd.load_repodata, source)
            data: dict[str, Any]
            if loaded is not None and added is not None:
                data = loaded
                rd.add_record(data, added.filename, added.record)
            else:
                async with self._sessions() as s:
                    pkgs = await conda_repo.list_packages(s, ch.index.id, subdir)
                data = rd.empty_repodata(subdir)
                for p in pkgs:
                    if p.yanked_at is None:
                        rd.add_record(data, p.filename, p.record)
                    else:  # conda's own list of files kept on the channel but not offered
                        data["removed"].append(p.filename)
                data["removed"].sort()
            keep = await self._keep(ch, subdir, data)
            shas, packages, _ = await anyio.to_thread.run_sync(
                self._derive_files, None, data, path, keep, self._sign(ch, path)
            )
            async with self._sessions() as s, s.begin():
                new = await conda_repo.put_state(
                    s,
                    ch.index.id,
                    path,
                    fetched_at=repo.utcnow(),
                    exists_upstream=True,
                    packages=packages,
                    policy_key=key,
                    **shas,
                )
            if state is not None:
                await self._drop_blobs(state.blobs() - new.blobs())
        doc = self._doc(new)
        assert doc is not None
        until = float("inf") if key is None else time.monotonic() + POLICY_RECHECK
        self._docs[(ch.name, path)] = _Cached(doc, until)
        self._docs.pop((ch.name, CHANNELDATA), None)
        return doc

    # -- remove / yank (private channels) -----------------------------------------------------

    async def _stored(
        self, ch: CondaChannel, filename: str, subdir: str | None
    ) -> CondaPackageInfo:
        if ch.mirror:
            raise InvalidRequest(
                f"conda channel {ch.name!r} is a mirror; packages are removed or yanked on "
                "private channels",
                "a mirror serves what its upstream lists; a policy can block records "
                "(`stockade policy set`)",
            )
        require_filename(filename)
        if subdir is not None:
            check_subdir(subdir)
        found = [p for p in await self.packages(ch, subdir) if p.filename == filename]
        if not found:
            where = f"{subdir}/" if subdir else ""
            raise NotFound(
                f"{where}{filename} is not a package of conda channel {ch.name!r}",
                f"see `stockade conda packages {ch.name}`",
            )
        if len(found) > 1:
            raise InvalidRequest(
                f"{filename} is in several subdirs of {ch.name!r}: "
                + ", ".join(p.subdir for p in found),
                "say which with --subdir",
            )
        return found[0]

    async def remove(
        self, ch: CondaChannel, filename: str, *, subdir: str | None = None, actor: str | None
    ) -> CondaPackageInfo:
        """Delete a package of a private channel: its record goes, the subdir's repodata is
        rebuilt (switched atomically, like every document), and its bytes are deleted once no
        row uses them (the URL answers 404 from then on)."""
        pkg = await self._stored(ch, filename, subdir)
        async with self._sessions() as s, s.begin():
            await conda_repo.delete_package(s, ch.index.id, pkg.subdir, pkg.filename)
        await self._regenerate(ch, pkg.subdir, None)
        self._docs.pop((ch.name, CHANNELDATA), None)
        await self._drop_blobs({pkg.sha256})
        self._audit.record(
            "conda.remove",
            actor=actor,
            index=ch.name,
            project=pkg.name,
            filename=f"{pkg.subdir}/{pkg.filename}",
            sha256=pkg.sha256,
            version=pkg.version,
        )
        if self._changed is not None:
            self._changed()
        return pkg

    async def yank(
        self,
        ch: CondaChannel,
        filename: str,
        *,
        subdir: str | None = None,
        reason: str | None = None,
        actor: str | None,
        undo: bool = False,
    ) -> CondaPackageInfo:
        """Yank (``undo``: unyank) a package of a private channel. A yanked record leaves
        repodata.json and the shards, so solvers no longer pick it, and is listed in the
        document's ``removed`` list; its file stays downloadable by exact URL for existing
        locks."""
        pkg = await self._stored(ch, filename, subdir)
        async with self._sessions() as s, s.begin():
            got = await conda_repo.set_yanked(
                s, ch.index.id, pkg.subdir, pkg.filename, reason, not undo
            )
        assert got is not None
        await self._regenerate(ch, pkg.subdir, None)
        self._docs.pop((ch.name, CHANNELDATA), None)
        self._audit.record(
            "conda.unyank" if undo else "conda.yank",
            actor=actor,
            index=ch.name,
            project=pkg.name,
            filename=f"{pkg.subdir}/{pkg.filename}",
            sha256=pkg.sha256,
            version=pkg.version,
            reason=reason,
        )
        if self._changed is not None:
            self._changed()
        return got

    async def _needs_scan(self, ch: CondaChannel) -> bool:
        policy = await self.policy.current(ch.index) if self.policy is not None else None
        return policy is not None and policy.needs_scan

    async def _scan(self, ch: CondaChannel, sha: str, filename: str) -> bool:
        """Scan a stored package with the malware scanner (in its worker process): waited for
        when the channel's policy has a ``threats`` rule, else in the background. Whether the
        verdict is malicious or suspicious."""
        if self.threats is None:
            return False
        if not await self._needs_scan(ch):
            if not self.threats.known(sha):
                self.threats.enqueue(sha, filename)
            return False
        report = await self.threats.ensure(sha, filename)
        return report is not None and report.verdict in ("malicious", "suspicious")

    async def _yanked_record(self, ch: CondaChannel, subdir: str, filename: str) -> dict[str, Any]:
        """The record of a yanked file (decided by the channel's policy like a listed one)."""
        async with self._sessions() as s:
            pkg = await conda_repo.get_package(s, ch.index.id, subdir, filename)
        if pkg is None or pkg.yanked_at is None:
            raise NotFound(
                f"{subdir}/{filename} is not in the repodata of conda channel {ch.name!r}",
                "check the name, version and build (a channel's policy may leave files out)",
            )
        policy = await self.policy.current(ch.index) if self.policy else None
        if self.policy is not None and policy is not None:
            data = rd.empty_repodata(subdir)
            rd.add_record(data, filename, pkg.record)
            decision = (await self.policy.decider(ch.index, policy, data))(filename, pkg.record)
            if not decision.allowed:
                raise _blocked(ch, filename, decision)
        return pkg.record

    # -- package files -------------------------------------------------------------------------

    async def open_package(
        self, ch: CondaChannel, subdir: str, filename: str
    ) -> StoredFile | Streaming:
        check_subdir(subdir)
        parsed = parse_filename(filename)
        if parsed is None:
            raise NotFound(f"{filename!r} is not a file of conda channel {ch.name!r}")
        # Only what the served repodata lists (a policy may have left a file out: 403), and
        # yanked files of private channels, by their exact URL (existing locks still install).
        try:
            rec = await self.record(ch, subdir, filename)
        except NotFound:
            if ch.mirror:
                raise
            rec = await self._yanked_record(ch, subdir, filename)
        sha = str(rec["sha256"]).lower()
        if not ch.mirror:
            if not self._store.exists(sha):
                raise NotFound(f"{filename} is listed but its bytes are missing from storage")
            return StoredFile(sha, self._store.size(sha))
        got = await self._open_mirrored(ch, subdir, filename, rec, sha)
        if self.threats is None or (isinstance(got, StoredFile) and self.threats.known(sha)):
            return got
        if not await self._needs_scan(ch):
            if isinstance(got, StoredFile):
                self.threats.enqueue(sha, filename)
            else:  # scanned once the fetch has stored the file
                fetch = got.fetch

                async def later() -> None:
                    await fetch.done.wait()
                    if fetch.error is None and self.threats is not None:
                        self.threats.enqueue(sha, filename)

                task = asyncio.create_task(later())
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            return got
        # The policy blocks on the scanner's verdict: have the whole file, scan it, decide again.
        if isinstance(got, Streaming):
            await got.fetch.done.wait()
            if got.fetch.error is not None:
                raise got.fetch.error
            got = StoredFile(sha, self._store.size(sha))
        if await self._scan(ch, sha, filename):
            self.forget(ch.name)  # the verdict changed the policy key: filtered again
            await self.record(ch, subdir, filename)  # raises PolicyBlocked if the rule blocks
        return got

    async def _open_mirrored(
        self, ch: CondaChannel, subdir: str, filename: str, rec: dict[str, Any], sha: str
    ) -> StoredFile | Streaming:
        if self._store.exists(sha):
            return StoredFile(sha, self._store.size(sha))
        fetch = self._fetches.get(sha)
        if fetch is None:
            claim = await claim_fetch(
                self.coord, self._store, sha, self._fetches, self._settings.fetch_wait
            )
            if isinstance(claim, StoredFile):  # another process fetched it meanwhile
                return claim
            fetch = self._fetches.get(sha)
            if fetch is None:
                fetch = self._start_fetch(ch, subdir, filename, rec, sha)
                fetch.lock = claim
            elif claim is not None:
                await claim.release()
        await fetch.headers_ready.wait()
        size = fetch.expected_size
        if fetch.done.is_set() or size is None or size <= self._settings.buffer_below:
            await fetch.done.wait()
            if fetch.error is not None:
                raise fetch.error
            return StoredFile(sha, self._store.size(sha))
        return Streaming(fetch, size)

    def _start_fetch(
        self, ch: CondaChannel, subdir: str, filename: str, rec: dict[str, Any], sha: str
    ) -> Fetch:
        size = rec.get("size")
        fetch = Fetch(self._store.open_writer(), size if isinstance(size, int) else None)
        self._fetches[sha] = fetch
        task = asyncio.create_task(self._run_fetch(fetch, ch, subdir, filename, rec, sha))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return fetch

    async def _run_fetch(
        self,
        fetch: Fetch,
        ch: CondaChannel,
        subdir: str,
        filename: str,
        rec: dict[str, Any],
        sha: str,
    ) -> None:
        assert ch.index.upstream_url is not None
        url = f"{ch.index.upstream_url}{subdir}/{filename}"
        cap = self._settings.max_file_size
        md5 = hashlib.md5(usedforsecurity=False)
        try:
            if fetch.expected_size is not None and fetch.expected_size > cap:
                raise PayloadTooLarge(
                    f"{filename} is {fetch.expected_size} bytes, over max_file_size",
                    "raise max_file_size in stockade.toml",
                )
            async with self._client.stream("GET", url) as resp:
                if resp.status_code != 200:
                    raise UpstreamUnavailable(
                        f"upstream answered {resp.status_code} for {subdir}/{filename}",
                        "try again later; the upstream channel may be down",
                    )
                fetch.headers_ready.set()
                async for chunk in resp.aiter_bytes(CHUNK):
                    fetch.writer.write(chunk)
                    md5.update(chunk)
                    fetch.written += len(chunk)
                    if fetch.written > cap or (
                        fetch.expected_size is not None and fetch.written > fetch.expected_size
                    ):
                        raise IntegrityError(
                            f"upstream sends more than the {fetch.expected_size} bytes the "
                            f"repodata lists for {filename}; not served, not stored",
                            "the upstream file or repodata was tampered with or corrupted",
                        )
                    fetch.notify()
            if fetch.expected_size is not None and fetch.written != fetch.expected_size:
                raise IntegrityError(
                    f"upstream sent {fetch.written} of {fetch.expected_size} bytes for {filename}",
                    "the upstream connection broke, or the file changed; retry",
                )
            got_sha, got_md5 = fetch.writer.hexdigest(), md5.hexdigest()
            want_md5 = rec.get("md5")
            if got_sha != sha or (isinstance(want_md5, str) and want_md5.lower() != got_md5):
                self._audit.record(
                    "integrity.mismatch",
                    index=ch.name,
                    project=str(rec.get("name")),
                    filename=f"{subdir}/{filename}",
                    outcome="blocked",
                    expected=sha,
                    got=got_sha,
                    expected_md5=want_md5,
                    got_md5=got_md5,
                    url=url,
                )
                raise IntegrityError(
                    f"{filename} from the upstream channel hashes to sha256 {got_sha[:16]}… / "
                    f"md5 {got_md5[:12]}…, but its repodata record says {sha[:16]}… / "
                    f"{str(want_md5)[:12]}…; not served, not stored",
                    "the upstream file or repodata was tampered with or corrupted; alert security",
                )
            await anyio.to_thread.run_sync(fetch.writer.commit, sha)  # S3: an upload
            await self._record_mirrored(ch, subdir, filename, rec, sha, got_md5, fetch.written)
        except StockadeError as exc:
            fetch.error = exc
            fetch.writer.abort()
        except httpx.HTTPError as exc:
            fetch.error = UpstreamUnavailable(
                f"download of {filename} from the upstream channel failed: {type(exc).__name__}",
                "retry; nothing was stored",
            )
            fetch.writer.abort()
        except Exception as exc:  # never leave readers waiting forever
            log.exception("fetch of %s failed", filename)
            fetch.error = UpstreamError(f"download of {filename} failed: {exc}")
            fetch.writer.abort()
        finally:
            self._fetches.pop(sha, None)
            fetch.headers_ready.set()
            fetch.done.set()
            fetch.notify()
            if fetch.lock is not None:
                with contextlib.suppress(Exception):  # the lock dies with its connection
                    await fetch.lock.release()

    async def _record_mirrored(
        self,
        ch: CondaChannel,
        subdir: str,
        filename: str,
        rec: dict[str, Any],
        sha: str,
        md5: str,
        size: int,
    ) -> None:
        parsed = require_filename(filename)
        try:
            async with self._sessions() as s, s.begin():
                if await conda_repo.get_package(s, ch.index.id, subdir, filename) is None:
                    await conda_repo.insert_package(
                        s,
                        index_id=ch.index.id,
                        subdir=subdir,
                        filename=filename,
                        name=parsed.name,
                        version=parsed.version,
                        build=parsed.build,
                        sha256=sha,
                        md5=md5,
                        size=size,
                        record=rec,
                        source="mirror",
                        uploaded_by=None,
                    )
        except DBIntegrityError:
            pass  # another process recorded it first

    # -- uploads -------------------------------------------------------------------------------

    async def upload(
        self,
        ch: CondaChannel,
        filename: str,
        writer: BlobWriter,
        *,
        md5: str,
        actor: str | None,
        subdir: str | None = None,
    ) -> CondaPackageInfo:
        """Validate the package held in ``writer`` and publish it; the writer is always
        finished (committed or aborted)."""
        try:
            if ch.mirror:
                raise InvalidRequest(
                    f"conda channel {ch.name!r} is a mirror; uploads go to private channels",
                    "create one with `stockade conda channel create NAME --private`",
                )
            require_filename(filename)
            if writer.size == 0:
                raise UploadRejected(f"{filename}: the uploaded file is empty")
            if writer.size > self._settings.max_upload_size:
                raise PayloadTooLarge(
                    f"{filename} is over max_upload_size ({self._settings.max_upload_size} bytes)",
                    "raise max_upload_size in stockade.toml if this file is legitimate",
                )
            meta = await anyio.to_thread.run_sync(
                lambda: validate_conda_package(
                    writer.path, filename, expected_subdir=subdir, limits=self._limits
                )
            )
            sha = writer.hexdigest()
            record = dict(meta.index)
            record.update(sha256=sha, md5=md5, size=writer.size)
            record.setdefault("timestamp", int(time.time() * 1000))
            stored = False
            try:
                async with self._sessions() as s, s.begin():
                    try:
                        info = await conda_repo.insert_package(
                            s,
                            index_id=ch.index.id,
                            subdir=meta.subdir,
                            filename=filename,
                            name=meta.name,
                            version=meta.version,
                            build=meta.build,
                            sha256=sha,
                            md5=md5,
                            size=writer.size,
                            record=record,
                            source="upload",
                            uploaded_by=actor,
                        )
                    except DBIntegrityError as exc:
                        raise self._exists(ch, meta.subdir, filename) from exc
                    if not self._store.exists(sha):
                        await anyio.to_thread.run_sync(writer.commit, sha)  # S3: an upload
                        stored = True
            except DBIntegrityError as exc:  # lost a race at commit time (PostgreSQL)
                if stored:
                    await self._drop_blobs({sha})
                raise self._exists(ch, meta.subdir, filename) from exc
            except BaseException:
                if stored:
                    await self._drop_blobs({sha})
                raise
        finally:
            writer.abort()  # no-op once committed
        await self._scan(ch, sha, filename)
        try:
            await self._regenerate(ch, meta.subdir, info)
        except Exception as exc:
            # The package is stored; forget the served document so that the next read
            # rebuilds it from every stored record instead of serving one without it.
            log.exception("repodata of %s/%s not regenerated", ch.name, meta.subdir)
            async with self._sessions() as s, s.begin():
                await conda_repo.put_state(
                    s,
                    ch.index.id,
                    f"{meta.subdir}/{rd.REPODATA}",
                    fetched_at=repo.utcnow(),
                    exists_upstream=True,
                    json_sha256=None,
                    policy_key=None,
                )
            self._docs.pop((ch.name, f"{meta.subdir}/{rd.REPODATA}"), None)
            raise StockadeError(
                f"{filename} was stored, but the repodata of {meta.subdir} could not be "
                f"regenerated ({type(exc).__name__}); it is rebuilt on the next read",
                "retry the read; if it fails again, see the server log",
            ) from exc
        self._audit.record(
            "upload",
            actor=actor,
            index=ch.name,
            project=meta.name,
            filename=f"{meta.subdir}/{filename}",
            sha256=sha,
            size=info.size,
            version=meta.version,
        )
        if self._changed is not None:
            self._changed()  # other processes drop their cached documents of this channel
        return info

    async def upload_path(
        self, ch: CondaChannel, path: Path, *, actor: str | None, subdir: str | None = None
    ) -> CondaPackageInfo:
        """Upload a local file (the CLI)."""
        writer = self._store.open_writer()
        md5 = hashlib.md5(usedforsecurity=False)
        try:
            with path.open("rb") as f:
                while chunk := f.read(CHUNK):
                    writer.write(chunk)
                    md5.update(chunk)
                    if writer.size > self._settings.max_upload_size:
                        break
        except BaseException:
            writer.abort()
            raise
        return await self.upload(
            ch, path.name, writer, md5=md5.hexdigest(), actor=actor, subdir=subdir
        )

    @staticmethod
    def _exists(ch: CondaChannel, subdir: str, filename: str) -> Conflict:
        return Conflict(
            f"{subdir}/{filename} already exists on conda channel {ch.name!r}; files are immutable",
            "bump the build number (or version) and upload the new build",
        )

    async def packages(
        self, ch: CondaChannel, subdir: str | None = None, name: str | None = None
    ) -> list[CondaPackageInfo]:
        async with self._sessions() as s:
            return await conda_repo.list_packages(s, ch.index.id, subdir, name)

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t


def _plain(source: Path, out: Path) -> rd.DerivedRepodata:
    """channeldata.json as fetched (validated as a JSON object), with .zst and gzip forms."""
    import gzip
    import shutil

    json_path = out / CHANNELDATA
    shutil.copyfile(source, json_path)
    zst = out / (CHANNELDATA + ".zst")
    with json_path.open("rb") as src, zst.open("wb") as dst:
        zstandard.ZstdCompressor(level=rd.ZST_LEVEL).copy_stream(src, dst)
    gz = out / (CHANNELDATA + ".gz")
    with json_path.open("rb") as src, gzip.GzipFile(gz, "wb", 6, mtime=0) as gdst:
        shutil.copyfileobj(src, gdst, 1024 * 1024)
    return rd.DerivedRepodata(json_path, zst, gz, None, 0, 0, 0)


__all__ = ["CondaChannel", "CondaService", "ServedDoc"]
