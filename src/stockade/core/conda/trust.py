"""conda content trust: the metadata and signatures conda's signature verification checks.

The format is conda-content-trust's (conda's ``signature_verification`` calls its
``verify_root`` and ``verify_delegation``; conda-content-trust itself is not installable, so this
module implements the format with ``cryptography``'s Ed25519 behind securesystemslib ``Signer``s):

* A **signable** is ``{"signatures": {<public key hex>: {"signature": <hex>}}, "signed": X}``.
* What is signed is :func:`canonserialize` of ``X``: ``json.dumps(X, indent=2, sort_keys=True)``
  encoded as UTF-8 (ASCII escapes). This is conda-content-trust's serialisation, *not* TUF's
  canonical JSON (securesystemslib ``encode_canonical``): a signature over that form would not
  verify in conda, and the published vectors (tests/fixtures/conda_trust) prove which one it is.
* **root** (``<version>.root.json``) delegates ``root`` and ``key_mgr`` (public keys + threshold);
  it is signed by the root keys in the OpenPGP form (``other_headers`` hashed with the data,
  Ed25519 over the SHA-256 digest), because conda checks new roots with ``gpg=True``.
* **key_mgr** (``key_mgr.json``), signed by the key_mgr keys, delegates ``pkg_mgr``.
* **Packages**: repodata.json has a top-level ``signatures`` map, filename →
  ``{<pkg_mgr public key hex>: {"signature": <hex>}}``, each over :func:`canonserialize` of the
  record exactly as served in ``packages``/``packages.conda``.

Pure: no I/O, no database, no network.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from securesystemslib.signer import Signer

SPEC_VERSION = "0.6.0"  # conda-content-trust's SECURITY_METADATA_SPEC_VERSION
ROOT_EXPIRY = timedelta(days=365)
KEY_MGR_EXPIRY = timedelta(days=365)
KEY_MGR_FILE = "key_mgr.json"
ROLES = ("root", "key_mgr", "pkg_mgr")
_RECORD_KEYS = ("packages", "packages.conda")


class TrustError(Exception):
    """Metadata or a signature does not verify (the message says why)."""


# -- serialisation and keys --------------------------------------------------------------------


def canonserialize(obj: Any) -> bytes:
    """The bytes conda-content-trust signs and verifies for ``obj``."""
    return json.dumps(obj, indent=2, sort_keys=True).encode("utf-8")


def public_hex(signer: Signer) -> str:
    """The raw Ed25519 public key of ``signer`` as 64 lower-case hex characters (conda's key
    id)."""
    key = signer.public_key
    if key.keytype != "ed25519":
        raise TrustError(f"conda content trust needs Ed25519 keys, not {key.keytype}")
    value = str(key.keyval["public"]).lower()
    if len(value) != 64:
        raise TrustError("an Ed25519 public key is 32 bytes")
    return value


def iso(dt: datetime) -> str:
    """``2026-11-26T12:00:00Z``: the only time format the metadata allows."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


# -- signing -----------------------------------------------------------------------------------


def sign_bytes(signer: Signer, data: bytes) -> str:
    return str(signer.sign(data).signature)


def record_signature(signer: Signer, record: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """The ``signatures[filename]`` entry of one repodata record."""
    return {public_hex(signer): {"signature": sign_bytes(signer, canonserialize(record))}}


def sign_repodata(data: dict[str, Any], signer: Signer) -> int:
    """Replace ``data["signatures"]`` with a signature over every record it serves (an upstream's
    own signatures are dropped: they are by keys the channel's key_mgr does not delegate to).
    Returns the number of records signed."""
    key = public_hex(signer)
    signatures: dict[str, Any] = {}
    for kind in _RECORD_KEYS:
        for fn, rec in (data.get(kind) or {}).items():
            sig = sign_bytes(signer, canonserialize(rec))
            signatures[fn] = {key: {"signature": sig}}
    data["signatures"] = signatures
    return len(signatures)


def wrap(signed: Any) -> dict[str, Any]:
    return {"signatures": {}, "signed": signed}


def sign_envelope(envelope: dict[str, Any], signer: Signer) -> None:
    """Add ``signer``'s raw Ed25519 signature over ``envelope["signed"]``."""
    envelope["signatures"][public_hex(signer)] = {
        "signature": sign_bytes(signer, canonserialize(envelope["signed"]))
    }


def _gpg_digest(data: bytes, other_headers: bytes) -> bytes:
    """RFC 4880 §5.2.4: the data, the hashed signature headers, then a v4 trailer."""
    h = hashlib.sha256()
    h.update(data)
    h.update(other_headers)
    h.update(b"\x04\xff")
    h.update(struct.pack(">I", len(other_headers)))
    return h.digest()


def openpgp_fingerprint(public: str, created: int = 0) -> str:
    """The v4 OpenPGP fingerprint of an Ed25519 public key (RFC 4880bis EdDSA key packet)."""
    oid = bytes.fromhex("2b06010401da470f01")
    body = (
        b"\x04"
        + struct.pack(">I", created)
        + b"\x16"
        + bytes([len(oid)])
        + oid
        + b"\x01\x07\x40"  # MPI of 263 bits: the 0x40 prefix and the 32 key bytes
        + bytes.fromhex(public)
    )
    # OpenPGP v4 fingerprints are SHA-1 by definition (an identifier here, not a security check)
    return hashlib.sha1(
        b"\x99" + struct.pack(">H", len(body)) + body, usedforsecurity=False
    ).hexdigest()


def openpgp_headers(public: str, when: datetime) -> bytes:
    """The hashed part of a v4 OpenPGP signature packet over binary data (version 4, type 0x00,
    EdDSA, SHA-256) with an issuer fingerprint and a creation time, as conda's root signatures
    carry it."""
    subpackets = (
        b"\x16\x21\x04"
        + bytes.fromhex(openpgp_fingerprint(public))
        + b"\x05\x02"
        + struct.pack(">I", int(when.timestamp()))
    )
    return b"\x04\x00\x16\x08" + struct.pack(">H", len(subpackets)) + subpackets


def sign_envelope_openpgp(envelope: dict[str, Any], signer: Signer, when: datetime) -> None:
    """Add ``signer``'s signature in the OpenPGP form conda checks root metadata with."""
    public = public_hex(signer)
    headers = openpgp_headers(public, when)
    digest = _gpg_digest(canonserialize(envelope["signed"]), headers)
    envelope["signatures"][public] = {
        "other_headers": headers.hex(),
        "signature": sign_bytes(signer, digest),
    }


# -- metadata ----------------------------------------------------------------------------------


def delegating(
    kind: str,
    delegations: Mapping[str, tuple[Iterable[str], int]],
    *,
    version: int,
    now: datetime,
    expires: datetime,
) -> dict[str, Any]:
    """The ``signed`` part of root or key_mgr metadata."""
    return {
        "delegations": {
            role: {"pubkeys": sorted(set(keys)), "threshold": threshold}
            for role, (keys, threshold) in delegations.items()
        },
        "expiration": iso(expires),
        "metadata_spec_version": SPEC_VERSION,
        "timestamp": iso(now),
        "type": kind,
        "version": version,
    }


def build_root(
    root_signers: list[Signer],
    key_mgr_keys: list[str],
    *,
    version: int,
    now: datetime,
    root_keys: list[str] | None = None,
    root_threshold: int = 1,
    key_mgr_threshold: int = 1,
    expires: datetime | None = None,
) -> dict[str, Any]:
    """``<version>.root.json``, signed (OpenPGP form) by ``root_signers``: for version N+1 the
    keys of root N and of root N+1 (conda checks both)."""
    keys = root_keys if root_keys is not None else [public_hex(s) for s in root_signers]
    signed = delegating(
        "root",
        {"root": (keys, root_threshold), "key_mgr": (key_mgr_keys, key_mgr_threshold)},
        version=version,
        now=now,
        expires=expires or now + ROOT_EXPIRY,
    )
    env = wrap(signed)
    for s in root_signers:
        sign_envelope_openpgp(env, s, now)
    return env


def build_key_mgr(
    key_mgr_signers: list[Signer],
    pkg_mgr_keys: list[str],
    *,
    version: int,
    now: datetime,
    threshold: int = 1,
    expires: datetime | None = None,
) -> dict[str, Any]:
    """``key_mgr.json``, signed by ``key_mgr_signers``, delegating ``pkg_mgr``."""
    signed = delegating(
        "key_mgr",
        {"pkg_mgr": (pkg_mgr_keys, threshold)},
        version=version,
        now=now,
        expires=expires or now + KEY_MGR_EXPIRY,
    )
    env = wrap(signed)
    for s in key_mgr_signers:
        sign_envelope(env, s)
    return env


def dumps(envelope: Mapping[str, Any]) -> bytes:
    """Metadata as conda-content-trust writes it to files (its ``write_metadata_to_file``)."""
    return canonserialize(envelope)


# -- verification ------------------------------------------------------------------------------


def _is_hex(value: Any, length: int) -> bool:
    return (
        isinstance(value, str)
        and len(value) == length
        and all(c in "0123456789abcdef" for c in value)
    )


def verify_raw(public: str, signature: str, data: bytes) -> bool:
    if not _is_hex(public, 64) or not _is_hex(signature, 128):
        return False
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(public)).verify(
            bytes.fromhex(signature), data
        )
    except InvalidSignature:
        return False
    return True


def verify_openpgp(public: str, sig: Mapping[str, Any], data: bytes) -> bool:
    headers = sig.get("other_headers")
    if not isinstance(headers, str) or not all(c in "0123456789abcdef" for c in headers):
        return False
    return verify_raw(public, str(sig.get("signature")), _gpg_digest(data, bytes.fromhex(headers)))


def verify_signable(
    envelope: Mapping[str, Any], pubkeys: list[str], threshold: int, *, openpgp: bool = False
) -> None:
    """Raise :class:`TrustError` unless ``threshold`` distinct ``pubkeys`` signed
    ``envelope["signed"]`` (raw Ed25519, or the OpenPGP form for root metadata)."""
    if not (
        isinstance(envelope, Mapping)
        and set(envelope) == {"signatures", "signed"}
        and isinstance(envelope["signatures"], Mapping)
    ):
        raise TrustError("not a signable envelope ({'signatures': {...}, 'signed': ...})")
    if not isinstance(threshold, int) or threshold < 1 or len(set(pubkeys)) < threshold:
        raise TrustError(f"threshold {threshold!r} cannot be met by {len(set(pubkeys))} keys")
    data = canonserialize(envelope["signed"])
    good: set[str] = set()
    for key, sig in envelope["signatures"].items():
        if key not in pubkeys or not isinstance(sig, Mapping):
            continue
        if openpgp:
            ok = verify_openpgp(key, sig, data)
        else:
            ok = verify_raw(key, str(sig.get("signature")), data)
        if ok:
            good.add(key)
    if len(good) < threshold:
        raise TrustError(
            f"{len(good)} good signature(s) from authorized keys, {threshold} needed "
            f"({len(envelope['signatures'])} present)"
        )


def _delegation(metadata: Mapping[str, Any], role: str) -> tuple[list[str], int]:
    try:
        d = metadata["signed"]["delegations"][role]
        keys, threshold = list(d["pubkeys"]), int(d["threshold"])
    except (KeyError, TypeError, ValueError) as exc:
        raise TrustError(f"the delegating metadata has no usable delegation to {role!r}") from exc
    if not all(_is_hex(k, 64) for k in keys) or len(set(keys)) != len(keys):
        raise TrustError(f"the delegation to {role!r} lists malformed or duplicate keys")
    return keys, threshold


def verify_root(trusted: Mapping[str, Any], untrusted: Mapping[str, Any]) -> None:
    """Root chaining: root N+1 must be signed by root N's root keys *and* its own."""
    if trusted["signed"].get("type") != "root" or untrusted["signed"].get("type") != "root":
        raise TrustError("both documents must be root metadata")
    if untrusted["signed"].get("version") != trusted["signed"].get("version", 0) + 1:
        raise TrustError("root versions must advance by exactly one")
    verify_signable(untrusted, *_delegation(trusted, "root"), openpgp=True)
    verify_signable(untrusted, *_delegation(untrusted, "root"), openpgp=True)


def verify_delegation(role: str, untrusted: Mapping[str, Any], trusted: Mapping[str, Any]) -> None:
    """``untrusted`` is signed as ``trusted`` delegates ``role`` (key_mgr by root, pkg_mgr
    signatures by key_mgr)."""
    signed = untrusted.get("signed")
    if isinstance(signed, Mapping) and "delegations" in signed and signed.get("type") != role:
        raise TrustError(f"metadata claims type {signed.get('type')!r}, expected {role!r}")
    verify_signable(untrusted, *_delegation(trusted, role))


def verify_record(repodata: Mapping[str, Any], filename: str, key_mgr: Mapping[str, Any]) -> None:
    """The check conda makes per package it installs, made strict (a missing signature fails)."""
    kind = "packages.conda" if filename.endswith(".conda") else "packages"
    record = (repodata.get(kind) or {}).get(filename)
    if record is None:
        raise TrustError(f"{filename} is not in the repodata")
    signatures = (repodata.get("signatures") or {}).get(filename)
    if not isinstance(signatures, Mapping):
        raise TrustError(f"{filename} has no signature")
    verify_delegation("pkg_mgr", {"signatures": signatures, "signed": record}, key_mgr)


def verify_repodata(repodata: Mapping[str, Any], key_mgr: Mapping[str, Any]) -> int:
    """Every served record has a good pkg_mgr signature; returns how many were checked."""
    n = 0
    for kind in _RECORD_KEYS:
        for fn in repodata.get(kind) or {}:
            verify_record(repodata, fn, key_mgr)
            n += 1
    return n


def expired(metadata: Mapping[str, Any], now: datetime) -> bool:
    return parse_iso(str(metadata["signed"]["expiration"])) <= now
