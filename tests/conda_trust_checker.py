"""An independent checker of conda content trust, written from the algorithm conda runs
(conda-content-trust's ``verify_root``, ``verify_delegation`` and ``verify_signable``, called by
conda's signature verification) and deliberately sharing no code with
``stockade.core.conda.trust``: the tests check Stockade's output with this, and this with the
vectors conda-content-trust publishes.

The chain: a trusted root (installed out of band) → ``key_mgr.json`` signed by the keys root
delegates ``key_mgr`` to → each repodata record signed by a key key_mgr delegates ``pkg_mgr`` to.
Root N+1 must be signed (OpenPGP form) by root N's root keys and by its own.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

HEX = set("0123456789abcdef")


class Untrusted(Exception):
    pass


def serialize(obj: Any) -> bytes:
    return json.dumps(obj, indent=2, sort_keys=True).encode("utf-8")


def _ed25519_ok(key_hex: str, sig_hex: str, message: bytes) -> bool:
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(bytes.fromhex(key_hex)).verify(
            bytes.fromhex(sig_hex), message
        )
        return True
    except (InvalidSignature, ValueError):
        return False


def _openpgp_message(data: bytes, headers_hex: str) -> bytes:
    headers = bytes.fromhex(headers_hex)
    return hashlib.sha256(data + headers + b"\x04\xff" + len(headers).to_bytes(4, "big")).digest()


def check_signable(env: dict[str, Any], keys: list[str], threshold: int, gpg: bool) -> None:
    if not isinstance(env, dict) or sorted(env) != ["signatures", "signed"]:
        raise Untrusted("not a signable")
    if threshold < 1:
        raise Untrusted("bad threshold")
    data = serialize(env["signed"])
    good = set()
    for key, sig in env["signatures"].items():
        if key not in keys or len(key) != 64 or not set(key) <= HEX:
            continue
        value = sig.get("signature", "")
        if len(value) != 128 or not set(value) <= HEX:
            continue
        if gpg:
            if "other_headers" not in sig:
                continue
            message = _openpgp_message(data, sig["other_headers"])
        else:
            message = data
        if _ed25519_ok(key, value, message):
            good.add(key)
    if len(good) < threshold:
        raise Untrusted(f"{len(good)} of {threshold} signatures")


def _rule(md: dict[str, Any], role: str) -> tuple[list[str], int]:
    d = md["signed"]["delegations"][role]
    return d["pubkeys"], d["threshold"]


def check_root_update(trusted: dict[str, Any], new: dict[str, Any]) -> None:
    if trusted["signed"]["type"] != "root" or new["signed"]["type"] != "root":
        raise Untrusted("not root metadata")
    if new["signed"]["version"] != trusted["signed"]["version"] + 1:
        raise Untrusted("root version skipped")
    check_signable(new, *_rule(trusted, "root"), gpg=True)
    check_signable(new, *_rule(new, "root"), gpg=True)


def check_key_mgr(root: dict[str, Any], key_mgr: dict[str, Any]) -> None:
    if key_mgr["signed"]["type"] != "key_mgr":
        raise Untrusted("not key_mgr metadata")
    check_signable(key_mgr, *_rule(root, "key_mgr"), gpg=False)


def check_package(repodata: dict[str, Any], fn: str, key_mgr: dict[str, Any]) -> None:
    kind = "packages.conda" if fn.endswith(".conda") else "packages"
    info = repodata[kind][fn]
    sigs = repodata.get("signatures", {}).get(fn)
    if sigs is None:
        raise Untrusted(f"no signature for {fn}")
    check_signable({"signatures": sigs, "signed": info}, *_rule(key_mgr, "pkg_mgr"), gpg=False)


def check_all(repodata: dict[str, Any], root: dict[str, Any], key_mgr: dict[str, Any]) -> int:
    """The whole chain for every record: returns how many records were checked."""
    check_key_mgr(root, key_mgr)
    n = 0
    for kind in ("packages", "packages.conda"):
        for fn in repodata.get(kind, {}):
            check_package(repodata, fn, key_mgr)
            n += 1
    return n
