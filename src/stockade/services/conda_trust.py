"""Signed conda channels (conda content trust): the keys, the trust metadata, the opt-in.

**Keys** are Ed25519 PEM files in ``<keys_dir>/conda-trust`` (mode 0600, created exclusively),
kept by the same ``TufKeys`` class the TUF service uses, so the service only sees securesystemslib
``Signer``s (the port a KMS or HSM signer plugs into): ``root`` and ``key_mgr`` are needed only
when their documents are written (`stockade conda trust init`; move them offline afterwards),
``pkg_mgr`` is the servers' online key that signs repodata records.

**One key set for the server.** conda trusts one root (the ``N.root.json`` files in its trust
directory) and fetches ``key_mgr.json`` from one ``signing_metadata_url_base``; with one key set
every signed channel of this Stockade verifies under that one root, so a client that mixes two
channels sees both as trusted. Every signed channel serves the same documents.

**Documents** live in ``conda_trust_metadata`` (immutable rows: every root version, every
key_mgr version; the newest key_mgr is served). ``conda_channels.signed_at`` is the opt-in; the
channel's served documents carry the pkg_mgr key in their derivation key, so turning signing on
(or a new pkg_mgr key) derives every document again, from the stored upstream copy (mirror) or
the stored records (private), without an upstream request.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from securesystemslib.signer import Signer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from stockade.core.conda import trust as T
from stockade.errors import ConfigError, Conflict, NotFound
from stockade.services import conda_repo, repo
from stockade.services.audit import AuditLog
from stockade.services.tuf import TufKeys
from stockade.settings import Settings

if TYPE_CHECKING:
    from stockade.services.conda import CondaChannel

KEY_SUBDIR = "conda-trust"
ROOT_SUFFIX = ".root.json"


@dataclass(frozen=True, slots=True)
class TrustStatus:
    channel: str
    signed: bool
    signed_since: datetime | None
    root_version: int | None
    root_expires: datetime | None
    key_mgr_version: int | None
    key_mgr_expires: datetime | None
    root_keys: list[str]
    key_mgr_keys: list[str]
    pkg_mgr_keys: list[str]
    key_dir: str
    pkg_mgr_key_present: bool

    def as_dict(self) -> dict[str, Any]:
        base = f"/conda/{self.channel}"
        return {
            "channel": self.channel,
            "signed": self.signed,
            "signed_since": self.signed_since.isoformat() if self.signed_since else None,
            "root_version": self.root_version,
            "root_expires": self.root_expires.isoformat() if self.root_expires else None,
            "key_mgr_version": self.key_mgr_version,
            "key_mgr_expires": self.key_mgr_expires.isoformat() if self.key_mgr_expires else None,
            "keys": {
                "root": self.root_keys,
                "key_mgr": self.key_mgr_keys,
                "pkg_mgr": self.pkg_mgr_keys,
            },
            "key_dir": self.key_dir,
            "pkg_mgr_key_present": self.pkg_mgr_key_present,
            "signing_metadata_url_base": base,
            "root_url": f"{base}/{self.root_version or 1}{ROOT_SUFFIX}",
            "key_mgr_url": f"{base}/{T.KEY_MGR_FILE}",
        }


def _delegated(doc: dict[str, Any] | None, role: str) -> list[str]:
    if doc is None:
        return []
    return list(doc["signed"]["delegations"].get(role, {}).get("pubkeys", []))


class CondaTrust:
    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        audit: AuditLog,
    ) -> None:
        self.keys = TufKeys(settings.key_dir / KEY_SUBDIR)
        self._sessions = sessions
        self._audit = audit
        self._docs: dict[str, bytes] = {}

    def clear(self) -> None:
        self._docs.clear()
        self.keys.clear()  # a key replaced on disk by another process is read again

    def pkg_signer(self) -> Signer:
        if not self.keys.exists("pkg_mgr"):
            raise ConfigError(
                f"the conda trust pkg_mgr key is not at {self.keys.path('pkg_mgr')}",
                "every server needs the keys directory of `stockade conda trust init` "
                "(keys_dir / STOCKADE_KEYS_DIR)",
            )
        return self.keys.signer("pkg_mgr")

    # -- documents -----------------------------------------------------------------------------

    async def _latest(self, s: AsyncSession, role: str) -> tuple[int, dict[str, Any], datetime]:
        docs = await conda_repo.trust_documents(s, role)
        if not docs:
            raise NotFound(f"no conda trust {role} metadata yet")
        version, data, expires = docs[-1]
        return version, json.loads(data), expires

    async def document(self, name: str) -> bytes:
        """``<N>.root.json`` or ``key_mgr.json`` as stored (the bytes that were signed over are
        inside; the file is conda-content-trust's serialisation of the envelope)."""
        got = self._docs.get(name)
        if got is not None:
            return got
        async with self._sessions() as s:
            if name == T.KEY_MGR_FILE:
                docs = await conda_repo.trust_documents(s, "key_mgr")
                data = docs[-1][1] if docs else None
            elif name.endswith(ROOT_SUFFIX) and name[: -len(ROOT_SUFFIX)].isdigit():
                version = int(name[: -len(ROOT_SUFFIX)])
                docs = await conda_repo.trust_documents(s, "root")
                data = next((d for v, d, _ in docs if v == version), None)
            else:
                data = None
        if data is None:
            raise NotFound(
                f"no conda trust metadata {name!r}",
                "roots are 1.root.json, 2.root.json, … (a 404 tells conda it has the newest); "
                "the key manager is key_mgr.json",
            )
        self._docs[name] = data
        return data

    # -- turning signing on --------------------------------------------------------------------

    async def init_channel(self, ch: CondaChannel, *, actor: str | None = None) -> list[str]:
        """Sign ``ch``: create missing keys and the root/key_mgr documents when there are none
        (or a key_mgr naming the current pkg_mgr key), then mark the channel signed. Returns
        the roles whose keys were created. Idempotent."""
        created: list[str] = []
        now = repo.utcnow().replace(microsecond=0)
        async with self._sessions() as s, s.begin():
            roots = await conda_repo.trust_documents(s, "root")
            if not roots:
                for role in ("root", "key_mgr"):
                    if self.keys.create(role):
                        created.append(role)
                root = T.build_root(
                    [self.keys.signer("root")],
                    [T.public_hex(self.keys.signer("key_mgr"))],
                    version=1,
                    now=now,
                )
                expires = T.parse_iso(root["signed"]["expiration"])
                await conda_repo.add_trust_document(s, "root", 1, T.dumps(root), expires)
            else:
                root = json.loads(roots[-1][1])
            if self.keys.create("pkg_mgr"):
                created.append("pkg_mgr")
            pkg_key = T.public_hex(self.keys.signer("pkg_mgr"))
            key_mgrs = await conda_repo.trust_documents(s, "key_mgr")
            current = json.loads(key_mgrs[-1][1]) if key_mgrs else None
            if pkg_key not in _delegated(current, "pkg_mgr"):
                if not self.keys.exists("key_mgr"):
                    raise ConfigError(
                        f"key_mgr.json must be signed again (it does not delegate to the "
                        f"pkg_mgr key), but the key_mgr key is not at {self.keys.path('key_mgr')}",
                        "put the offline key_mgr key back there for this command",
                    )
                km_signer = self.keys.signer("key_mgr")
                if T.public_hex(km_signer) not in _delegated(root, "key_mgr"):
                    raise Conflict(
                        "the key_mgr key on disk is not the one the trusted root delegates to",
                        f"restore the key_mgr key the root names into {self.keys.directory}",
                    )
                version = (key_mgrs[-1][0] + 1) if key_mgrs else 1
                km = T.build_key_mgr([km_signer], [pkg_key], version=version, now=now)
                expires = T.parse_iso(km["signed"]["expiration"])
                await conda_repo.add_trust_document(s, "key_mgr", version, T.dumps(km), expires)
            if ch.signed_at is None and not await conda_repo.set_signed(s, ch.index.id, now):
                raise NotFound(f"no conda channel {ch.name!r}")
        self._docs.clear()
        self._audit.record(
            "conda.trust.init", actor=actor, index=ch.name, created_keys=created, pkg_mgr=pkg_key
        )
        return created

    async def status(self, ch: CondaChannel) -> TrustStatus:
        async with self._sessions() as s:
            roots = await conda_repo.trust_documents(s, "root")
            kms = await conda_repo.trust_documents(s, "key_mgr")
        root = json.loads(roots[-1][1]) if roots else None
        km = json.loads(kms[-1][1]) if kms else None
        return TrustStatus(
            channel=ch.name,
            signed=ch.signed_at is not None,
            signed_since=ch.signed_at,
            root_version=roots[-1][0] if roots else None,
            root_expires=roots[-1][2] if roots else None,
            key_mgr_version=kms[-1][0] if kms else None,
            key_mgr_expires=kms[-1][2] if kms else None,
            root_keys=_delegated(root, "root"),
            key_mgr_keys=_delegated(root, "key_mgr"),
            pkg_mgr_keys=_delegated(km, "pkg_mgr"),
            key_dir=str(self.keys.directory),
            pkg_mgr_key_present=self.keys.exists("pkg_mgr"),
        )
