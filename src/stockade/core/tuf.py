"""TUF metadata for a PyPI index, as PEP 458 lays it out, built with python-tuf's Metadata API.

Roles: ``root`` (offline key), ``targets`` (offline-capable key) which delegates every target
to hashed bins through one succinct delegation (TAP 15: ``bins-000`` … ``bins-fff``, a target
belongs to the bin named by the leading bits of the sha256 of its path), the bins (online key),
``snapshot`` and ``timestamp`` (online keys). Consistent snapshots: metadata is published as
``<version>.<role>.json`` and targets as ``<dir>/<sha256>.<name>``.

Target paths of an index:

* ``simple/<project>/index.html`` and ``simple/<project>/index.json``: the project page exactly
  as served (after the index's policy);
* ``files/<project>/<filename>``: a distribution file listed on that page.

Pure: no I/O. Signers are securesystemslib ``Signer`` objects (file keys by default; the same
interface fronts KMS and HSM keys).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

import orjson
from securesystemslib.signer import Key, Signer
from tuf.api.metadata import (
    Delegations,
    Metadata,
    MetaFile,
    Role,
    Root,
    Signed,
    Snapshot,
    SuccinctRoles,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization import SignedSerializer
from tuf.api.serialization.json import CanonicalJSONSerializer

TOP_ROLES = ("root", "targets", "snapshot", "timestamp")
KEY_ROLES = ("root", "targets", "snapshot", "timestamp", "bins")  # one key file per name
ONLINE_ROLES = ("snapshot", "timestamp", "bins")
BIN_PREFIX = "bins"
SPEC_VERSION = "1.0.31"

ROOT_EXPIRY = timedelta(days=365)
TARGETS_EXPIRY = timedelta(days=365)
BINS_EXPIRY = timedelta(days=90)
SNAPSHOT_EXPIRY = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class Target:
    """One target: path relative to the targets URL, length and sha256."""

    path: str
    length: int
    sha256: str


def page_path(project: str, json: bool) -> str:
    return f"simple/{project}/index.{'json' if json else 'html'}"


def file_path(project: str, filename: str) -> str:
    return f"files/{project}/{filename}"


def split_target_url(path: str) -> tuple[str, str] | None:
    """``dir/<sha256>.<name>`` (a consistent-snapshot target URL) → (``dir/name``, sha256)."""
    dirname, sep, base = path.rpartition("/")
    sha, dot, name = base.partition(".")
    if not sep or not dot or not name or len(sha) != 64:
        return None
    try:
        int(sha, 16)
    except ValueError:
        return None
    return f"{dirname}/{name}", sha.lower()


def bit_length_for(bins: int) -> int:
    """Number of bins (a power of two, 2 … 2**16) → the succinct delegation's bit length."""
    if bins < 2 or bins > 65536 or bins & (bins - 1):
        raise ValueError(f"the bin count must be a power of two from 2 to 65536, not {bins}")
    return bins.bit_length() - 1


def succinct(bins_keyid: str, bit_length: int) -> SuccinctRoles:
    return SuccinctRoles([bins_keyid], 1, bit_length, BIN_PREFIX)


def bin_of(path: str, bit_length: int) -> str:
    return succinct("", bit_length).get_role_for_target(path)


def all_bins(bit_length: int) -> list[str]:
    return list(succinct("", bit_length).get_roles())


def role_file(role: str, version: int) -> str:
    return f"{version}.{role}.json"


_S = TypeVar("_S", Root, Targets, Snapshot, Timestamp)


class _Canonical(SignedSerializer):
    """OLPC canonical JSON (what TUF signs and ngclient verifies), fast: orjson with sorted keys
    gives the same bytes whenever nothing needs escaping (ASCII, no backslash or control
    character: role names, digits, digests, dates, PyPI file names); anything else goes
    through securesystemslib's encoder. Snapshots of 16,384 bins sign in milliseconds."""

    _slow = CanonicalJSONSerializer()

    def serialize(self, signed_obj: Signed) -> bytes:
        data = orjson.dumps(signed_obj.to_dict(), option=orjson.OPT_SORT_KEYS)
        if data.isascii() and b"\\" not in data:
            return data
        return self._slow.serialize(signed_obj)


_CANONICAL = _Canonical()


def _sign(md: Metadata[_S], signers: Iterable[Signer]) -> bytes:
    for signer in signers:
        md.sign(signer, append=True, signed_serializer=_CANONICAL)
    return orjson.dumps(md.to_dict())


def build_root(
    keys: Mapping[str, Key],
    version: int,
    expires: datetime,
    signers: Iterable[Signer],
    *,
    root_keys: Sequence[Key] = (),
    root_threshold: int = 1,
) -> bytes:
    """Root naming one key per top-level role (threshold 1) except the root role itself:
    ``root_keys`` (default ``keys["root"]``) with ``root_threshold`` of them required. Signed
    by ``signers`` (on a root rotation: a threshold of the old root keys and of the new)."""
    root = Root(version=version, spec_version=SPEC_VERSION, expires=expires)
    for role in TOP_ROLES:
        if role == "root" and root_keys:
            for key in root_keys:
                root.add_key(key, role)
        else:
            root.add_key(keys[role], role)
    if not 1 <= root_threshold <= len(root.roles["root"].keyids):
        raise ValueError(
            f"a root threshold of {root_threshold} needs 1 to {len(root.roles['root'].keyids)}"
            " root keys"
        )
    root.roles["root"].threshold = root_threshold
    root.consistent_snapshot = True
    return _sign(Metadata(root), signers)


def root_role(root: bytes) -> tuple[list[Key], int]:
    """The root role's keys (in the order the document lists them) and threshold."""
    md = Metadata[Root].from_bytes(root)
    role = md.signed.roles["root"]
    return [md.signed.keys[k] for k in role.keyids], role.threshold


def build_targets(
    bins_key: Key, bit_length: int, version: int, expires: datetime, signer: Signer
) -> bytes:
    """Top-level targets: no targets of its own, everything delegated to the hashed bins."""
    targets = Targets(version=version, spec_version=SPEC_VERSION, expires=expires)
    targets.delegations = Delegations(
        keys={bins_key.keyid: bins_key}, succinct_roles=succinct(bins_key.keyid, bit_length)
    )
    return _sign(Metadata(targets), [signer])


def build_bin(targets: Iterable[Target], version: int, expires: datetime, signer: Signer) -> bytes:
    signed = Targets(version=version, spec_version=SPEC_VERSION, expires=expires)
    for t in sorted(targets, key=lambda t: t.path):
        signed.targets[t.path] = TargetFile(t.length, {"sha256": t.sha256}, t.path)
    return _sign(Metadata(signed), [signer])


def build_snapshot(
    versions: Mapping[str, int], version: int, expires: datetime, signer: Signer
) -> bytes:
    """``versions``: role name (``targets``, ``bins-…``) → current version."""
    meta = {f"{role}.json": MetaFile(version=v) for role, v in sorted(versions.items())}
    snap = Snapshot(version=version, spec_version=SPEC_VERSION, expires=expires, meta=meta)
    return _sign(Metadata(snap), [signer])


def build_timestamp(
    snapshot: bytes, snapshot_version: int, version: int, expires: datetime, signer: Signer
) -> bytes:
    meta = MetaFile(
        version=snapshot_version,
        length=len(snapshot),
        hashes={"sha256": hashlib.sha256(snapshot).hexdigest()},
    )
    ts = Timestamp(version=version, spec_version=SPEC_VERSION, expires=expires, snapshot_meta=meta)
    return _sign(Metadata(ts), [signer])


def snapshot_versions(snapshot: bytes) -> dict[str, int]:
    md = Metadata[Snapshot].from_bytes(snapshot)
    return {name.removesuffix(".json"): m.version for name, m in md.signed.meta.items()}


def root_keys(root: bytes) -> dict[str, Key]:
    """role → its (first) key in a root document (``root_role`` lists every root key)."""
    md = Metadata[Root].from_bytes(root)
    out: dict[str, Key] = {}
    for role_name in TOP_ROLES:
        role: Role = md.signed.roles[role_name]
        out[role_name] = md.signed.keys[role.keyids[0]]
    return out


def bins_keyid(targets: bytes) -> str:
    md = Metadata[Targets].from_bytes(targets)
    assert md.signed.delegations is not None
    assert md.signed.delegations.succinct_roles
    return md.signed.delegations.succinct_roles.keyids[0]


def expires_of(data: bytes) -> datetime:
    return Metadata.from_bytes(data).signed.expires


def version_of(data: bytes) -> int:
    return Metadata.from_bytes(data).signed.version
