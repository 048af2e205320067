"""Signed PyPI indexes: TUF metadata (PEP 458) kept current with what each index serves.

**Keys** are Ed25519 files in ``STOCKADE_HOME/keys/tuf`` (mode 0600, created exclusively, never
in the database): ``root`` and ``targets`` are only needed by ``stockade tuf init`` and
``stockade tuf rotate`` (move them offline between those), ``snapshot``, ``timestamp`` and
``bins`` are the server's online keys. One key set signs every index; each index has its own
metadata. Signers are securesystemslib ``Signer`` objects, the port a KMS or HSM plugs into.

**Metadata** lives in ``tuf_metadata`` (one immutable row per ``<version>.<role>.json``);
``tuf_targets`` lists the targets of each bin (the served page as HTML and JSON, and the files
on it); ``tuf_repos`` holds the current versions and is the signers' lock.

**Following the index.** ``PageService.on_page`` reports every page it (re)builds (mirror
fetch or revalidation, policy re-decision, a private page after a change);
``UploadService.on_change`` and ``FileService.on_stored`` report projects whose files changed,
and ``index_changed`` (a policy change) revisits every project of an index. A background task
turns those reports into target rows: a page whose targets equal the last signed ones costs
one comparison; otherwise, in one transaction that first updates the index's ``tuf_repos`` row
(the row lock on PostgreSQL, the write lock on SQLite: processes sign in turn, never twice for
the same change), the changed rows are written, only the bins they fall in are re-signed, then
a new snapshot and timestamp. Readers (any process) see the old set or the new one, never a
snapshot naming a bin version that is not there. Signing never happens on a request.

**Freshness.** Every process runs a refresh loop (``tuf_refresh_interval``) which re-signs the
timestamp when half its life (``tuf_timestamp_expiry``) is gone, the snapshot likewise, and the
bins a month before they expire; the lock and a re-check make one process do it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)
from securesystemslib.signer import CryptoSigner, Key, Signer, SSlibKey
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from stockade.core import tuf as T
from stockade.core.ports import BlobStore
from stockade.core.simple import JSON_V1, TEXT_HTML
from stockade.db.models import TufMetadataRow, TufRepoRow, TufTargetRow
from stockade.errors import ConfigError, Conflict, InvalidRequest, NotFound, StockadeError
from stockade.services import repo
from stockade.services.audit import AuditLog
from stockade.services.indexes import IndexService
from stockade.services.pages import PageService, ServedPage
from stockade.services.repo import IndexInfo
from stockade.settings import Settings
from stockade.types import IndexKind, NormalizedName

log = logging.getLogger("stockade.tuf")
KEEP_VERSIONS = 20  # older snapshot/timestamp/bin versions are deleted (roots are kept)
BINS_RESIGN_BEFORE = timedelta(days=30)
DEFAULT_BINS = 1024


def _now() -> datetime:
    return repo.utcnow().replace(microsecond=0)


# -- keys --------------------------------------------------------------------------------------


class TufKeys:
    """Ed25519 key files, one per role name (root, targets, snapshot, timestamp, bins); the
    root role may have several keys (``root-ed25519.pem``, ``root-2-ed25519.pem``, …, or the
    files given with ``--root-key``), of which a threshold signs each root."""

    def __init__(self, directory: Path, root_keys: Sequence[Path] = ()) -> None:
        self.directory = directory
        self.root_keys: list[Path] = list(root_keys)  # explicit root key files, in order
        self._signers: dict[str, CryptoSigner] = {}

    @property
    def root_key(self) -> Path | None:
        return self.root_keys[0] if self.root_keys else None

    @root_key.setter
    def root_key(self, path: Path | None) -> None:
        self.root_keys = [] if path is None else [path]

    def path(self, role: str) -> Path:
        if role == "root":
            return self.root_path(0)
        return self.directory / f"{role}-ed25519.pem"

    def root_path(self, i: int) -> Path:
        """Where the ``i``-th root key (from 0) is."""
        if self.root_keys:
            if i >= len(self.root_keys):
                raise ConfigError(
                    f"root key {i + 1} is needed but only {len(self.root_keys)} --root-key "
                    "file(s) were given",
                    "pass --root-key PATH once per root key",
                )
            return self.root_keys[i]
        return self.directory / ("root-ed25519.pem" if i == 0 else f"root-{i + 1}-ed25519.pem")

    def exists(self, role: str) -> bool:
        return self.path(role).exists()

    def create(self, role: str) -> bool:
        """Create the role's key unless it exists; True when created."""
        path = self.path(role)
        if path.exists():
            return False
        _write_key(path, Ed25519PrivateKey.generate())
        return True

    def create_root(self, count: int) -> list[str]:
        """The first ``count`` root keys, created where missing; the names of those created."""
        created = []
        for i in range(count):
            path = self.root_path(i)
            if not path.exists():
                _write_key(path, Ed25519PrivateKey.generate())
                created.append("root" if i == 0 else f"root-{i + 1}")
        return created

    def signer(self, role: str) -> CryptoSigner:
        got = self._signers.get(role)
        if got is None:
            got = _load_signer(self.path(role), role)
            self._signers[role] = got
        return got

    def root_signer(self, i: int) -> CryptoSigner:
        return _load_signer(self.root_path(i), "root")

    def root_files(self) -> dict[str, tuple[Path, CryptoSigner]]:
        """keyid → (file, signer) of every root key file present here (or given)."""
        if self.root_keys:
            paths = [p for p in self.root_keys if p.exists()]
        else:
            paths = sorted(self.directory.glob("root*-ed25519.pem"))
        out: dict[str, tuple[Path, CryptoSigner]] = {}
        for path in paths:
            signer = _load_signer(path, "root")
            out.setdefault(signer.public_key.keyid, (path, signer))
        return out

    def root_signers(self, keys: Sequence[Key], threshold: int) -> list[CryptoSigner]:
        """Signers for ``threshold`` (at least) of the root ``keys``, or a ConfigError saying
        how many are missing."""
        files = self.root_files()
        found = [files[k.keyid][1] for k in keys if k.keyid in files]
        if len(found) < threshold:
            where = ", ".join(str(p) for p in self.root_keys) or str(self.directory)
            raise ConfigError(
                f"signing a new root needs {threshold} of the {len(keys)} root keys; "
                f"{len(found)} found (in {where})",
                "put the offline root keys back there for this command (or pass --root-key "
                "PATH once per key)",
            )
        return found

    def public(self, role: str) -> Key:
        return self.signer(role).public_key

    def clear(self) -> None:
        self._signers.clear()

    def stage(self, role: str) -> tuple[Path, CryptoSigner]:
        """A new key for ``role`` beside the current one (``….pem.new``), not yet in use."""
        return self.stage_at(self.path(role), role)

    def stage_at(self, current: Path, role: str) -> tuple[Path, CryptoSigner]:
        path = current.with_name(current.name + ".new")
        path.unlink(missing_ok=True)
        _write_key(path, Ed25519PrivateKey.generate())
        return path, _load_signer(path, role)

    def promote(self, role: str, staged: Path, old_keyid: str) -> Path | None:
        """Retire the current key file (kept as ``….<keyid>.retired.pem`` for the admin to
        destroy or archive) and put the staged one in its place."""
        return self.promote_at(self.path(role), staged, old_keyid)

    def promote_at(self, current: Path, staged: Path, old_keyid: str | None) -> Path | None:
        """``promote`` for any key file; the retired file, None when there was none (a lost
        root key replaced)."""
        retired = None
        if current.exists():
            if old_keyid is None:
                old_keyid = _load_signer(current, "root").public_key.keyid
            stem = current.name.removesuffix(".pem")
            retired = current.with_name(f"{stem}.{old_keyid[:16]}.retired.pem")
            os.replace(current, retired)
        os.replace(staged, current)
        self._signers.clear()
        return retired


def _write_key(path: Path, key: Ed25519PrivateKey) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)


def _load_signer(path: Path, role: str) -> CryptoSigner:
    try:
        loaded = load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        offline = role in ("root", "targets")
        raise ConfigError(
            f"the TUF {role} key is not at {path}",
            (
                "put the offline key back there for this command (or pass --root-key PATH)"
                if offline
                else "run `stockade tuf init INDEX` to create the online keys"
            ),
        ) from None
    except ValueError as exc:
        raise ConfigError(f"{path} is not a readable PEM private key: {exc}") from exc
    if not isinstance(loaded, Ed25519PrivateKey):
        raise ConfigError(f"{path} is not an Ed25519 key", "move it away and create a new one")
    public = SSlibKey.from_crypto(loaded.public_key())
    return CryptoSigner(loaded, public)


# -- the service -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TufStatus:
    index: str
    bins: int
    versions: dict[str, int]
    expires: dict[str, str]
    keys: dict[str, dict[str, Any]]
    targets: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "bins": self.bins,
            "versions": self.versions,
            "expires": self.expires,
            "keys": self.keys,
            "targets": self.targets,
        }


class TufService:
    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        store: BlobStore,
        indexes: IndexService,
        pages: PageService,
        audit: AuditLog,
    ) -> None:
        self._settings = settings
        self._sessions = sessions
        self._store = store
        self._indexes = indexes
        self._pages = pages
        self._audit = audit
        self.keys = TufKeys(settings.key_dir / "tuf")
        self._enabled: dict[str, int] | None = None  # index name → id
        self._built: dict[tuple[str, str], ServedPage | None] = {}
        self._touched: set[tuple[str, str]] = set()
        self._reindex: set[str] = set()
        self._known: dict[tuple[str, str], frozenset[T.Target]] = {}
        self._meta: dict[tuple[int, str, int], bytes] = {}
        # index id → (sha256 of a snapshot, role versions in it): saves parsing a large one
        self._snapshots: dict[int, tuple[bytes, dict[str, int]]] = {}
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def timestamp_expiry(self) -> timedelta:
        return timedelta(seconds=self._settings.tuf_timestamp_expiry)

    # hooks (synchronous, cheap: they only queue) ---------------------------------------------

    def page_built(self, index: IndexInfo, project: str, served: ServedPage | None) -> None:
        if self._enabled is not None and not self._enabled:
            return
        if self._enabled is None or index.name in self._enabled:
            self._built[(index.name, project)] = served
            self._wake.set()

    def project_changed(self, index: IndexInfo, project: str) -> None:
        if self._enabled is not None and not self._enabled:
            return
        self._touched.add((index.name, project))
        self._wake.set()

    def index_changed(self, index: str) -> None:
        self._reindex.add(index)
        self._wake.set()

    def clear(self) -> None:
        """Configuration changed (maybe in another process): reload the enabled indexes and the
        keys (a rotation), and compare pages against the database again."""
        self._enabled = None
        self._known.clear()
        self.keys.clear()

    # lifecycle -------------------------------------------------------------------------------

    def start(self, refresh: bool = True) -> None:
        """The signer task and, with ``refresh``, the refresh loop (the procrastinate queue
        refreshes with a periodic ``tuf.refresh`` job instead)."""
        if not self._tasks:
            self._tasks.append(asyncio.create_task(self._run(), name="tuf-signer"))
            if refresh and self._settings.tuf_refresh_interval > 0:
                self._tasks.append(asyncio.create_task(self._refresh_loop(), name="tuf-refresh"))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        try:
            await self.flush()
        except Exception:
            log.exception("TUF: signing the last changes failed")

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(0.05)  # let a burst of changes arrive together
            try:
                await self.flush()
            except Exception:
                log.exception("TUF: signing failed; the next change tries again")

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self._settings.tuf_refresh_interval)
            try:
                self._enabled = None  # `tuf init` in another process, even with no request
                await self.refresh_expiring()
            except Exception:
                log.exception("TUF: refreshing expiring metadata failed")

    async def enabled(self) -> dict[str, int]:
        if self._enabled is None:
            async with self._sessions() as s:
                rows = await s.execute(select(TufRepoRow.index_id))
                ids = {r[0] for r in rows}
            self._enabled = {i.name: i.id for i in await self._indexes.list() if i.id in ids}
        return self._enabled

    # following the index ---------------------------------------------------------------------

    async def flush(self) -> None:
        """Sign whatever the hooks reported (and what it implies for virtual indexes)."""
        if not (self._built or self._touched or self._reindex):
            return
        async with self._lock:
            built, self._built = self._built, {}
            touched, self._touched = self._touched, set()
            reindex, self._reindex = self._reindex, set()
            try:
                await self._flush(built, touched, reindex)
            except Exception:  # e.g. the database is busy: nothing reported is lost
                self._touched.update(touched)
                self._touched.update(built)
                self._reindex.update(reindex)
                with contextlib.suppress(RuntimeError):  # no loop: a CLI's last flush
                    asyncio.get_running_loop().call_later(1.0, self._wake.set)
                raise

    async def _flush(
        self,
        built: dict[tuple[str, str], ServedPage | None],
        touched: set[tuple[str, str]],
        reindex: set[str],
    ) -> None:
        enabled = await self.enabled()
        if not enabled:
            return
        for name in reindex:
            if name in enabled:
                touched.update((name, p) for p in await self._projects(name))
        for name, project in list(touched):
            for parent in await self._containing(name, enabled):
                touched.add((parent, project))
        for key in touched:
            if key[0] in enabled:
                # Files changed: build afresh (a build that started before the change may
                # have put the old page back into this process's cache meanwhile).
                self._pages.clear_project(key[1])
                try:
                    built[key] = await self._current(key[0], NormalizedName(key[1]))
                except StockadeError:
                    continue  # logged; the signed targets stay until the page is built
        by_index: dict[str, dict[str, ServedPage | None]] = {}
        for (name, project), served in built.items():
            if name in enabled:
                by_index.setdefault(name, {})[project] = served
        for name, pages in by_index.items():
            await self._sign_pages(await self._indexes.get(name), pages)

    async def _sign_pages(self, index: IndexInfo, pages: dict[str, ServedPage | None]) -> None:
        """Sign ``pages``; then build the ones that changed again, fresh, and sign again if they
        differ: a page built here before another process committed a newer state (and signed
        it) must not stay signed. The last signer always checks after its commit, so the newest
        state wins."""
        for _attempt in range(3):
            try:
                signed = await self._record(index, pages)
            except Exception as exc:  # e.g. the database is busy: try again in a moment
                log.warning("TUF: cannot sign %s now (%s); retrying", index.name, exc)
                self._touched.update((index.name, p) for p in pages)
                with contextlib.suppress(RuntimeError):  # no loop: a CLI's last flush
                    asyncio.get_running_loop().call_later(1.0, self._wake.set)
                return
            if not signed:
                return
            pages = {}
            for project in signed:
                self._pages.clear_project(project)
                with contextlib.suppress(StockadeError):
                    pages[project] = await self._current(index.name, NormalizedName(project))

    async def _projects(self, name: str) -> set[str]:
        index = await self._indexes.get(name)
        projects = set(await self._pages.project_list(index))
        async with self._sessions() as s:
            rows = await s.execute(
                select(TufTargetRow.project).where(TufTargetRow.index_id == index.id).distinct()
            )
            projects.update(r[0] for r in rows)
        return projects

    async def _containing(self, name: str, enabled: dict[str, int]) -> list[str]:
        """Enabled virtual indexes that serve ``name``'s pages (directly or nested)."""
        out = []
        for other in enabled:
            if other == name:
                continue
            info = await self._indexes.get(other)
            if info.kind is IndexKind.VIRTUAL and await self._reaches(info, name, 0):
                out.append(other)
        return out

    async def _reaches(self, index: IndexInfo, name: str, depth: int) -> bool:
        if depth > 8:
            return False
        for m in index.members:
            if m == name:
                return True
            member = await self._indexes.get(m)
            if member.kind is IndexKind.VIRTUAL and await self._reaches(member, name, depth + 1):
                return True
        return False

    async def _current(self, name: str, project: NormalizedName) -> ServedPage | None:
        try:
            index = await self._indexes.get(name)
            return await self._pages.project_page(index, project)
        except NotFound:
            return None
        except StockadeError as exc:  # e.g. the upstream is down: keep the signed targets
            log.warning("TUF: page %s/%s not rebuilt: %s", name, project, exc.message)
            raise

    async def _targets(self, index: IndexInfo, project: str, served: ServedPage) -> set[T.Target]:
        """The page as served (HTML and JSON, stored as blobs so the targets URL serves exactly
        the signed bytes) and every downloadable file on it whose length is known."""
        out: set[T.Target] = set()
        for json in (False, True):
            body = served.render(JSON_V1 if json else TEXT_HTML).body
            sha = self._store.put_bytes(body)
            out.add(T.Target(T.page_path(project, json), len(body), sha))
        unknown: dict[str, list[str]] = {}
        for f in served.page.files:
            if f.blocked is not None or not f.sha256:
                continue
            if f.size is None:
                unknown.setdefault(f.origin or index.name, []).append(f.filename)
                continue
            out.add(T.Target(T.file_path(project, f.filename), f.size, f.sha256.lower()))
        if unknown:  # sizes of stored files (a mirror page without sizes)
            sizes: dict[str, tuple[int, str]] = {}
            async with self._sessions() as s:
                for origin, names in unknown.items():
                    info = await self._indexes.get(origin)
                    for rec in await repo.list_files(s, info.id, project):
                        if rec.filename in names:
                            sizes[rec.filename] = (rec.size, rec.sha256)
            for f in served.page.files:
                got = sizes.get(f.filename)
                if got is not None and f.sha256 and f.sha256.lower() == got[1]:
                    out.add(T.Target(T.file_path(project, f.filename), got[0], got[1]))
        return out

    async def _record(self, index: IndexInfo, pages: dict[str, ServedPage | None]) -> list[str]:
        """Sign the targets of ``pages`` where they differ from the signed ones; the projects
        whose targets were written."""
        wanted: dict[str, frozenset[T.Target]] = {}
        for project, served in pages.items():
            targets = frozenset() if served is None else frozenset(
                await self._targets(index, project, served)
            )  # fmt: skip
            if self._known.get((index.name, project)) != targets:
                wanted[project] = targets
        if not wanted:
            return []
        if not await self._differs(index.id, wanted):
            for project, targets in wanted.items():
                self._known[(index.name, project)] = targets
            return []
        async with self._sessions() as s, s.begin():
            row = await self._lock_repo(s, index.id)
            if row is None:
                return []
            bins = await self._apply(s, index.id, row.bit_length, wanted)
            if bins:
                await self._publish(s, row, bins)
        for project, targets in wanted.items():
            self._known[(index.name, project)] = targets
        if bins:
            log.info("TUF: %s re-signed %d bin(s)", index.name, len(bins))
        return list(wanted) if bins else []

    async def _rows(
        self, s: AsyncSession, index_id: int, projects: Iterable[str]
    ) -> dict[str, TufTargetRow]:
        out: dict[str, TufTargetRow] = {}
        names = list(projects)
        for i in range(0, len(names), 500):
            q = select(TufTargetRow).where(
                TufTargetRow.index_id == index_id, TufTargetRow.project.in_(names[i : i + 500])
            )
            out.update((r.path, r) for r in (await s.execute(q)).scalars())
        return out

    async def _differs(self, index_id: int, wanted: dict[str, frozenset[T.Target]]) -> bool:
        async with self._sessions() as s:
            rows = await self._rows(s, index_id, wanted)
        have = {T.Target(r.path, r.length, r.sha256) for r in rows.values()}
        return have != set().union(*wanted.values())

    async def _apply(
        self,
        s: AsyncSession,
        index_id: int,
        bit_length: int,
        wanted: dict[str, frozenset[T.Target]],
    ) -> set[str]:
        """Write the target rows of ``wanted``'s projects; the bins that changed."""
        rows = await self._rows(s, index_id, wanted)
        now = repo.utcnow()
        bins: set[str] = set()
        new: dict[str, tuple[str, T.Target]] = {
            t.path: (project, t) for project, ts in wanted.items() for t in ts
        }
        for path, row in rows.items():
            if path not in new:
                bins.add(row.bin)
                await s.delete(row)
        for path, (project, t) in new.items():
            old = rows.get(path)
            if old is None:
                b = T.bin_of(path, bit_length)
                s.add(
                    TufTargetRow(
                        index_id=index_id,
                        project=project,
                        path=path,
                        bin=b,
                        length=t.length,
                        sha256=t.sha256,
                        prev_sha256=None,
                        updated_at=now,
                    )
                )
                bins.add(b)
            elif old.sha256 != t.sha256 or old.length != t.length:
                old.prev_sha256, old.sha256, old.length, old.updated_at = (
                    old.sha256,
                    t.sha256,
                    t.length,
                    now,
                )
                bins.add(old.bin)
        await s.flush()
        return bins

    async def _lock_repo(self, s: AsyncSession, index_id: int) -> TufRepoRow | None:
        """Take the signers' lock for one index (the UPDATE comes first, as in the audit log)."""
        done = await s.execute(
            update(TufRepoRow).where(TufRepoRow.index_id == index_id).values(updated_at=_now())
        )
        if not done.rowcount:  # type: ignore[attr-defined]
            return None
        q = select(TufRepoRow).where(TufRepoRow.index_id == index_id)
        return (await s.execute(q)).scalar_one()

    async def _load(self, s: AsyncSession, index_id: int, role: str, version: int) -> bytes:
        key = (index_id, role, version)
        data = self._meta.get(key)
        if data is None:
            q = select(TufMetadataRow.data).where(
                TufMetadataRow.index_id == index_id,
                TufMetadataRow.role == role,
                TufMetadataRow.version == version,
            )
            data = (await s.execute(q)).scalar_one_or_none()
            if data is None:
                raise NotFound(f"no TUF metadata {version}.{role}.json")
            if len(self._meta) > 4096:
                self._meta.clear()
            self._meta[key] = data
        return data

    def _put(
        self,
        s: AsyncSession,
        index_id: int,
        role: str,
        version: int,
        data: bytes,
        expires: datetime | None = None,
    ) -> None:
        s.add(
            TufMetadataRow(
                index_id=index_id,
                role=role,
                version=version,
                data=data,
                expires=expires or T.expires_of(data),
                created_at=repo.utcnow(),
            )
        )

    async def _publish(
        self,
        s: AsyncSession,
        row: TufRepoRow,
        bins: Iterable[str],
        *,
        targets: bytes | None = None,
    ) -> None:
        """Re-sign ``bins`` (from their target rows), then a new snapshot and timestamp, in the
        caller's transaction (which holds the lock)."""
        now = _now()
        versions = await self._versions(s, row)
        if targets is not None:
            row.targets_version += 1
            self._put(s, row.index_id, "targets", row.targets_version, targets)
            versions["targets"] = row.targets_version
        bins_signer = self.keys.signer("bins")
        for b in sorted(set(bins)):
            q = select(TufTargetRow).where(
                TufTargetRow.index_id == row.index_id, TufTargetRow.bin == b
            )
            listed = [T.Target(r.path, r.length, r.sha256) for r in (await s.execute(q)).scalars()]
            v = versions.get(b, 0) + 1
            expires = now + T.BINS_EXPIRY
            self._put(s, row.index_id, b, v, T.build_bin(listed, v, expires, bins_signer), expires)
            versions[b] = v
            await s.execute(
                delete(TufMetadataRow).where(
                    TufMetadataRow.index_id == row.index_id,
                    TufMetadataRow.role == b,
                    TufMetadataRow.version <= v - KEEP_VERSIONS,
                )
            )
        await self._sign_snapshot(s, row, versions, now)

    async def _versions(self, s: AsyncSession, row: TufRepoRow) -> dict[str, int]:
        """Role → version in the current snapshot (parsed once per snapshot per process)."""
        snap = await self._load(s, row.index_id, "snapshot", row.snapshot_version)
        digest = hashlib.sha256(snap).digest()  # the committed document, not a rolled-back one
        got = self._snapshots.get(row.index_id)
        if got is not None and got[0] == digest:
            return dict(got[1])
        return T.snapshot_versions(snap)

    async def _sign_snapshot(
        self, s: AsyncSession, row: TufRepoRow, versions: dict[str, int], now: datetime
    ) -> None:
        row.snapshot_version += 1
        row.snapshot_expires = now + T.SNAPSHOT_EXPIRY
        snap = T.build_snapshot(
            versions, row.snapshot_version, row.snapshot_expires, self.keys.signer("snapshot")
        )
        self._put(s, row.index_id, "snapshot", row.snapshot_version, snap, row.snapshot_expires)
        self._snapshots[row.index_id] = (hashlib.sha256(snap).digest(), dict(versions))
        await self._sign_timestamp(s, row, snap, now)

    async def _sign_timestamp(
        self, s: AsyncSession, row: TufRepoRow, snap: bytes, now: datetime
    ) -> None:
        row.timestamp_version += 1
        row.timestamp_expires = now + self.timestamp_expiry
        ts = T.build_timestamp(
            snap,
            row.snapshot_version,
            row.timestamp_version,
            row.timestamp_expires,
            self.keys.signer("timestamp"),
        )
        self._put(s, row.index_id, "timestamp", row.timestamp_version, ts, row.timestamp_expires)
        row.updated_at = now
        for role, current in (
            ("snapshot", row.snapshot_version),
            ("timestamp", row.timestamp_version),
        ):
            await s.execute(
                delete(TufMetadataRow).where(
                    TufMetadataRow.index_id == row.index_id,
                    TufMetadataRow.role == role,
                    TufMetadataRow.version <= current - KEEP_VERSIONS,
                )
            )

    # freshness -------------------------------------------------------------------------------

    async def refresh_expiring(self) -> list[str]:
        """Re-sign timestamps, snapshots and bins that are close to expiry; what was signed."""
        done: list[str] = []
        for name, index_id in (await self.enabled()).items():
            async with self._lock, self._sessions() as s, s.begin():
                row = await self._lock_repo(s, index_id)
                if row is None:
                    continue
                now = _now()
                if repo.aware(row.bins_expire) - now < BINS_RESIGN_BEFORE:  # type: ignore[operator]
                    bins = T.all_bins(row.bit_length)
                    row.bins_expire = now + T.BINS_EXPIRY
                    await self._publish(s, row, bins)
                    done.append(f"{name}: bins, snapshot, timestamp")
                elif repo.aware(row.snapshot_expires) - now < T.SNAPSHOT_EXPIRY / 2:  # type: ignore[operator]
                    await self._sign_snapshot(s, row, await self._versions(s, row), now)
                    done.append(f"{name}: snapshot, timestamp")
                elif repo.aware(row.timestamp_expires) - now < self.timestamp_expiry / 2:  # type: ignore[operator]
                    snap = await self._load(s, index_id, "snapshot", row.snapshot_version)
                    await self._sign_timestamp(s, row, snap, now)
                    done.append(f"{name}: timestamp")
        return done

    # admin: init, rotate, status -------------------------------------------------------------

    async def init_index(
        self,
        index: IndexInfo,
        bins: int = DEFAULT_BINS,
        root_keys: int = 1,
        root_threshold: int = 1,
    ) -> list[str]:
        """Start publishing signed metadata for ``index``: keys created when missing (``root_keys``
        root keys, ``root_threshold`` of which sign each root), root, targets, every bin,
        snapshot and timestamp signed, then every project the index can list signed. Returns
        the key roles created."""
        if index.kind.is_conda:
            raise InvalidRequest(
                f"{index.name!r} is a conda channel", "TUF signing covers PyPI indexes"
            )
        try:
            bit_length = T.bit_length_for(bins)
        except ValueError as exc:
            raise InvalidRequest(str(exc), "e.g. --bins 1024 (PEP 458 suggests 16384)") from None
        if not 1 <= root_threshold <= root_keys:
            raise InvalidRequest(
                f"a root threshold of {root_threshold} with {root_keys} root key(s)",
                "the threshold is 1 to the number of root keys, e.g. --root-keys 3 "
                "--root-threshold 2",
            )
        created = self.keys.create_root(root_keys)
        created += [role for role in T.KEY_ROLES if role != "root" and self.keys.create(role)]
        keys = {role: self.keys.public(role) for role in T.TOP_ROLES}
        root_signers = [self.keys.root_signer(i) for i in range(root_keys)]
        now = _now()
        async with self._lock, self._sessions() as s, s.begin():
            exists = await s.get(TufRepoRow, index.id)
            if exists is not None:
                raise Conflict(
                    f"index {index.name!r} already publishes TUF metadata",
                    f"see `stockade tuf status {index.name}`; keys change with "
                    "`stockade tuf rotate ROLE`",
                )
            root = T.build_root(
                keys,
                1,
                now + T.ROOT_EXPIRY,
                root_signers,
                root_keys=[signer.public_key for signer in root_signers],
                root_threshold=root_threshold,
            )
            targets = T.build_targets(
                self.keys.public("bins"),
                bit_length,
                1,
                now + T.TARGETS_EXPIRY,
                self.keys.signer("targets"),
            )
            self._put(s, index.id, "root", 1, root)
            self._put(s, index.id, "targets", 1, targets)
            versions = {"targets": 1}
            bins_signer = self.keys.signer("bins")
            for b in T.all_bins(bit_length):
                self._put(s, index.id, b, 1, T.build_bin([], 1, now + T.BINS_EXPIRY, bins_signer))
                versions[b] = 1
            row = TufRepoRow(
                index_id=index.id,
                bit_length=bit_length,
                root_version=1,
                targets_version=1,
                snapshot_version=0,
                timestamp_version=0,
                timestamp_expires=now,
                snapshot_expires=now,
                bins_expire=now + T.BINS_EXPIRY,
                updated_at=now,
            )
            s.add(row)
            await self._sign_snapshot(s, row, versions, now)
        self._enabled = None
        self._audit.record(
            "tuf.init",
            index=index.name,
            bins=bins,
            keys={r: self.keys.public(r).keyid for r in T.KEY_ROLES},
            root_keys=[signer.public_key.keyid for signer in root_signers],
            root_threshold=root_threshold,
            created=created,
        )
        self.index_changed(index.name)
        await self.flush()
        return created

    async def rotate(self, role: str) -> dict[str, Any]:
        """Replace ``role``'s key in every signed index: a new root version and the documents
        the role signs re-signed. Every new root is signed by a threshold of the current root
        keys; rotating ``root`` replaces each root key (the same count and threshold) and the
        new root carries the signatures of the old keys and of the new ones, as TUF requires
        for clients holding the old root to follow the chain."""
        if role not in T.KEY_ROLES:
            raise InvalidRequest(f"unknown TUF role {role!r}", f"one of {', '.join(T.KEY_ROLES)}")
        enabled = await self.enabled()
        if not enabled:
            raise NotFound("no index publishes TUF metadata", "run `stockade tuf init INDEX`")
        old = None if role == "root" else self.keys.signer(role)
        if not self.keys.root_files():  # fails early (and says where) when they are offline
            self.keys.signer("root")
        targets_signer = self.keys.signer("targets") if role in ("targets", "bins") else None
        staged: dict[Path, tuple[Path, CryptoSigner]] = {}  # current file → the new key

        def stage(current: Path) -> CryptoSigner:
            got = staged.get(current)
            if got is None:
                got = staged[current] = self.keys.stage_at(current, role)
            return got[1]

        new = None if role == "root" else stage(self.keys.path(role))
        roots: dict[str, list[str]] = {"old": [], "new": []}
        try:
            async with self._lock, self._sessions() as s, s.begin():
                for index_id in enabled.values():
                    row = await self._lock_repo(s, index_id)
                    if row is None:
                        continue
                    await self._rotate_one(s, row, role, new, stage, targets_signer, roots)
        except BaseException:
            for path, _ in staged.values():
                path.unlink(missing_ok=True)
            raise
        old_ids = [old.public_key.keyid] if old is not None else list(dict.fromkeys(roots["old"]))
        new_ids = [signer.public_key.keyid for _, signer in staged.values()]
        retired = [
            str(done)
            for current, (path, _) in staged.items()
            if (done := self.keys.promote_at(current, path, old.public_key.keyid if old else None))
        ]
        self._meta.clear()
        self._audit.record(
            "tuf.rotate",
            role=role,
            old_keyid=old_ids[0],
            new_keyid=new_ids[0],
            old_keyids=old_ids,
            new_keyids=new_ids,
            indexes=sorted(enabled),
        )
        await self._audit.flush()
        return {
            "role": role,
            "old_keyid": old_ids[0],
            "new_keyid": new_ids[0],
            "old_keyids": old_ids,
            "new_keyids": new_ids,
            "indexes": sorted(enabled),
            "retired_key": retired[0] if retired else None,
            "retired_keys": retired,
        }

    async def _rotate_one(
        self,
        s: AsyncSession,
        row: TufRepoRow,
        role: str,
        new: CryptoSigner | None,
        stage: Callable[[Path], CryptoSigner],
        targets_signer: Signer | None,
        roots: dict[str, list[str]],
    ) -> None:
        now = _now()
        root = await self._load(s, row.index_id, "root", row.root_version)
        keys = T.root_keys(root)
        root_keys, threshold = T.root_role(root)
        if role != "bins":
            signers = self.keys.root_signers(root_keys, threshold)
            if role == "root":
                roots["old"] += [k.keyid for k in root_keys]
                fresh = [stage(self.keys.root_path(i)) for i in range(len(root_keys))]
                root_keys = [signer.public_key for signer in fresh]
                signers += fresh
            else:
                assert new is not None
                keys[role] = new.public_key
            row.root_version += 1
            doc = T.build_root(
                keys,
                row.root_version,
                now + T.ROOT_EXPIRY,
                signers,
                root_keys=root_keys,
                root_threshold=threshold,
            )
            self._put(s, row.index_id, "root", row.root_version, doc)
        targets: bytes | None = None
        bins: list[str] = []
        if role in ("targets", "bins"):
            assert new is not None
            bins_key = new.public_key if role == "bins" else self.keys.public("bins")
            signer = new if role == "targets" else targets_signer
            assert signer is not None
            targets = T.build_targets(
                bins_key, row.bit_length, row.targets_version + 1, now + T.TARGETS_EXPIRY, signer
            )
        if role == "bins":
            bins = T.all_bins(row.bit_length)
            row.bins_expire = now + T.BINS_EXPIRY
        # The online signers of this transaction are the new keys where they changed.
        saved = dict(self.keys._signers)
        if role in T.ONLINE_ROLES:
            assert new is not None
            self.keys._signers[role] = new
        try:
            await self._publish(s, row, bins, targets=targets)
        finally:
            self.keys._signers = saved

    async def status(self, index: IndexInfo) -> TufStatus:
        async with self._sessions() as s:
            row = await s.get(TufRepoRow, index.id)
            if row is None:
                raise NotFound(
                    f"index {index.name!r} publishes no TUF metadata",
                    f"turn signing on with `stockade tuf init {index.name}`",
                )
            root = await self._load(s, index.id, "root", row.root_version)
            targets = await self._load(s, index.id, "targets", row.targets_version)
            count = (
                await s.execute(select(TufTargetRow.id).where(TufTargetRow.index_id == index.id))
            ).all()
        keys: dict[str, dict[str, Any]] = {}
        for role, key in T.root_keys(root).items():
            keys[role] = {"keyid": key.keyid, "key_file": self._key_file(role, key.keyid)}
        root_keys, threshold = T.root_role(root)
        try:
            files = self.keys.root_files()
        except StockadeError:
            files = {}
        keys["root"]["threshold"] = threshold
        keys["root"]["keys"] = []
        for k in root_keys:
            where = str(files[k.keyid][0]) if k.keyid in files else "offline"
            keys["root"]["keys"].append({"keyid": k.keyid, "key_file": where})
        bins_id = T.bins_keyid(targets)
        keys["bins"] = {"keyid": bins_id, "key_file": self._key_file("bins", bins_id)}
        return TufStatus(
            index=index.name,
            bins=2**row.bit_length,
            versions={
                "root": row.root_version,
                "targets": row.targets_version,
                "snapshot": row.snapshot_version,
                "timestamp": row.timestamp_version,
            },
            expires={
                "root": T.expires_of(root).isoformat(),
                "targets": T.expires_of(targets).isoformat(),
                "bins": repo.aware(row.bins_expire).isoformat(),  # type: ignore[union-attr]
                "snapshot": repo.aware(row.snapshot_expires).isoformat(),  # type: ignore[union-attr]
                "timestamp": repo.aware(row.timestamp_expires).isoformat(),  # type: ignore[union-attr]
            },
            keys=keys,
            targets=len(count),
        )

    def _key_file(self, role: str, keyid: str) -> str:
        """Where the private key is, or that it is offline (not on this machine)."""
        path = self.keys.path(role)
        try:
            if path.exists() and self.keys.signer(role).public_key.keyid == keyid:
                return str(path)
        except StockadeError:
            pass
        return "offline" if role in ("root", "targets") else f"missing (expected at {path})"

    # serving ---------------------------------------------------------------------------------

    async def metadata(self, index: IndexInfo, name: str) -> bytes:
        """``timestamp.json``, ``root.json`` (the newest: for bootstrapping out of band) or
        ``<version>.<role>.json``."""
        enabled = await self.enabled()
        if index.name not in enabled:
            raise NotFound(
                f"index {index.name!r} publishes no TUF metadata",
                f"an admin turns signing on with `stockade tuf init {index.name}`",
            )
        if name in ("timestamp.json", "root.json"):
            role = name.removesuffix(".json")
            async with self._sessions() as s:
                q = (
                    select(TufMetadataRow.data)
                    .where(TufMetadataRow.index_id == index.id, TufMetadataRow.role == role)
                    .order_by(TufMetadataRow.version.desc())
                    .limit(1)
                )
                data = (await s.execute(q)).scalar_one_or_none()
            if data is None:
                raise NotFound(f"no {name} for index {index.name!r}")
            return data
        version, dot, rest = name.partition(".")
        role = rest.removesuffix(".json")
        if not dot or not version.isdigit() or not rest.endswith(".json") or not role:
            raise NotFound(
                f"no TUF metadata named {name!r}",
                "metadata is <version>.<role>.json, or timestamp.json",
            )
        async with self._sessions() as s:
            return await self._load(s, index.id, role, int(version))

    async def target(self, index: IndexInfo, url_path: str) -> tuple[str, str, str]:
        """A consistent-snapshot target URL → (kind ``simple``/``files``, project, name or
        sha256): only targets the index's bins list now or listed just before."""
        split = T.split_target_url(url_path)
        enabled = await self.enabled()
        if split is None or index.name not in enabled:
            raise NotFound(f"no TUF target {url_path!r} on index {index.name!r}")
        path, sha = split
        async with self._sessions() as s:
            q = select(TufTargetRow).where(
                TufTargetRow.index_id == index.id, TufTargetRow.path == path
            )
            row = (await s.execute(q)).scalar_one_or_none()
        if row is None or sha not in (row.sha256, row.prev_sha256):
            raise NotFound(
                f"no TUF target {url_path!r} on index {index.name!r}",
                "refresh the TUF metadata (timestamp.json) and ask again",
            )
        kind, _, rest = path.partition("/")
        project, _, name = rest.partition("/")
        return kind, project, sha if kind == "simple" else name
