"""conda content trust format: Stockade's signer and verifier against the vectors published by
conda-content-trust (tests/fixtures/conda_trust), and Stockade's signatures checked by an
independent re-implementation of conda's verification (tests/conda_trust_checker.py)."""

from __future__ import annotations

import copy
import gzip
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import zstandard
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from securesystemslib.formats import encode_canonical
from securesystemslib.signer import CryptoSigner, SSlibKey

from stockade.core.conda import repodata as rd
from stockade.core.conda import trust as T
from tests import conda_trust_checker as conda

FIXTURES = Path(__file__).parent.parent / "fixtures" / "conda_trust"
NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
ROOT1_KEY = "bfbeb6554fca9558da7aa05c5e9952b7a1aa3995dede93f3bb89f0abecc7dc07"
ROOT2_KEY = "d16d07f038e49de3b3bd8661523ef0948181e3109902a9c739beeb69628940c4"


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return data


def _signer(private: Ed25519PrivateKey | None = None) -> CryptoSigner:
    key = private or Ed25519PrivateKey.generate()
    return CryptoSigner(key, SSlibKey.from_crypto(key.public_key()))


def _record(name: str, version: str, sha: str = "ab" * 32) -> dict[str, Any]:
    return {
        "build": "0",
        "build_number": 0,
        "depends": ["python >=3.8"],
        "license": "MIT",
        "md5": "cd" * 16,
        "name": name,
        "sha256": sha,
        "size": 1234,
        "subdir": "noarch",
        "timestamp": 1700000000000,
        "version": version,
        "description": "ünïcode ✓",  # escapes must round-trip through the served JSON
    }


def _repodata() -> dict[str, Any]:
    data = rd.empty_repodata("noarch")
    rd.add_record(data, "lib-1.0-0.tar.bz2", _record("lib", "1.0"))
    rd.add_record(data, "lib-2.0-0.conda", _record("lib", "2.0", "ef" * 32))
    rd.add_record(data, "app-2.0-0.conda", _record("app", "2.0", "12" * 32))
    return data


@pytest.fixture
def chain() -> dict[str, Any]:
    root_s, km_s, pkg_s = _signer(), _signer(), _signer()
    root = T.build_root([root_s], [T.public_hex(km_s)], version=1, now=NOW)
    key_mgr = T.build_key_mgr([km_s], [T.public_hex(pkg_s)], version=1, now=NOW)
    return {"root_s": root_s, "km_s": km_s, "pkg_s": pkg_s, "root": root, "key_mgr": key_mgr}


# -- published vectors -------------------------------------------------------------------------


def test_vector_signature_and_signer_port() -> None:
    kp = _load("keypair.json")
    message = bytes.fromhex(kp["message_hex"])
    assert T.verify_raw(kp["public_hex"], kp["signature_hex"], message)
    assert not T.verify_raw(kp["public_hex"], kp["signature_hex"], message + b"x")
    # The securesystemslib Signer port signs the message itself (pure Ed25519): same bytes.
    signer = _signer(Ed25519PrivateKey.from_private_bytes(bytes.fromhex(kp["private_hex"])))
    assert T.public_hex(signer) == kp["public_hex"]
    assert T.sign_bytes(signer, message) == kp["signature_hex"]


def test_vector_key_mgr_verifies_with_conda_serialisation_only() -> None:
    kp = _load("keypair.json")
    key_mgr = _load("key_mgr.json")
    T.verify_signable(key_mgr, [kp["public_hex"]], 1)
    conda.check_signable(key_mgr, [kp["public_hex"]], 1, gpg=False)
    root_like = {
        "signed": {"delegations": {"key_mgr": {"pubkeys": [kp["public_hex"]], "threshold": 1}}}
    }
    T.verify_delegation("key_mgr", key_mgr, root_like)
    # TUF's canonical JSON is a different byte string: a signature over it would not verify.
    sig = key_mgr["signatures"][kp["public_hex"]]["signature"]
    assert not T.verify_raw(kp["public_hex"], sig, encode_canonical(key_mgr["signed"]).encode())
    # The same signer re-signing the same content reproduces the published signature.
    signer = _signer(Ed25519PrivateKey.from_private_bytes(bytes.fromhex(kp["private_hex"])))
    env = T.wrap(copy.deepcopy(key_mgr["signed"]))
    T.sign_envelope(env, signer)
    assert env["signatures"] == key_mgr["signatures"]
    tampered = copy.deepcopy(key_mgr)
    tampered["signed"]["delegations"]["pkg_mgr"]["pubkeys"] = ["00" * 32]
    with pytest.raises(T.TrustError):
        T.verify_signable(tampered, [kp["public_hex"]], 1)
    with pytest.raises(conda.Untrusted):
        conda.check_signable(tampered, [kp["public_hex"]], 1, gpg=False)


def test_vector_roots_openpgp_signatures() -> None:
    root1, root2 = _load("1.root.json"), _load("2.root.json")
    T.verify_signable(root1, [ROOT1_KEY], 1, openpgp=True)
    T.verify_signable(root2, [ROOT1_KEY, ROOT2_KEY], 2, openpgp=True)
    conda.check_signable(root2, [ROOT1_KEY, ROOT2_KEY], 2, gpg=True)
    # Chaining 1 → 2 under root 1's rule (these vectors name the role "root.json").
    T.verify_signable(
        root2, root1["signed"]["delegations"]["root.json"]["pubkeys"], 1, openpgp=True
    )
    # An OpenPGP signature is not a raw one, and a changed document fails.
    with pytest.raises(T.TrustError):
        T.verify_signable(root1, [ROOT1_KEY], 1)
    changed = copy.deepcopy(root2)
    changed["signed"]["expiration"] = "2099-01-01T00:00:00Z"
    with pytest.raises(T.TrustError):
        T.verify_signable(changed, [ROOT1_KEY], 1, openpgp=True)
    with pytest.raises(conda.Untrusted):
        conda.check_signable(changed, [ROOT1_KEY], 1, gpg=True)


# -- Stockade's metadata, checked by the independent checker -----------------------------------


def test_generated_chain_verifies_with_conda_algorithm(chain: dict[str, Any]) -> None:
    root, key_mgr = chain["root"], chain["key_mgr"]
    signed = root["signed"]
    assert signed["type"] == "root" and signed["version"] == 1
    assert signed["metadata_spec_version"] == T.SPEC_VERSION
    assert set(signed["delegations"]) == {"root", "key_mgr"}
    assert signed["timestamp"] == "2026-11-26T12:00:00Z"
    assert set(key_mgr["signed"]["delegations"]) == {"pkg_mgr"}
    conda.check_signable(root, *conda._rule(root, "root"), gpg=True)  # self-signed root
    conda.check_key_mgr(root, key_mgr)
    T.verify_delegation("key_mgr", key_mgr, root)
    # The files are what conda-content-trust writes, and parse back to the same document.
    assert json.loads(T.dumps(root)) == root
    assert T.dumps(key_mgr) == json.dumps(key_mgr, indent=2, sort_keys=True).encode()


def test_signed_records_verify_and_tampering_fails(chain: dict[str, Any]) -> None:
    data = _repodata()
    data["signatures"] = {"lib-1.0-0.tar.bz2": {"ff" * 32: {"signature": "00" * 64}}}  # upstream's
    assert T.sign_repodata(data, chain["pkg_s"]) == 3
    served = orjson.loads(orjson.dumps(data))  # what a client parses
    assert conda.check_all(served, chain["root"], chain["key_mgr"]) == 3
    assert T.verify_repodata(served, chain["key_mgr"]) == 3
    for fn, sigs in served["signatures"].items():
        assert list(sigs) == [T.public_hex(chain["pkg_s"])], fn  # upstream signatures dropped

    tampered = copy.deepcopy(served)
    tampered["packages.conda"]["app-2.0-0.conda"]["sha256"] = "00" * 32
    with pytest.raises(conda.Untrusted):
        conda.check_package(tampered, "app-2.0-0.conda", chain["key_mgr"])
    with pytest.raises(T.TrustError):
        T.verify_record(tampered, "app-2.0-0.conda", chain["key_mgr"])
    conda.check_package(tampered, "lib-2.0-0.conda", chain["key_mgr"])  # others still fine

    swapped = copy.deepcopy(served)  # a record's signature does not vouch for another record
    swapped["signatures"]["lib-2.0-0.conda"] = swapped["signatures"]["app-2.0-0.conda"]
    with pytest.raises(conda.Untrusted):
        conda.check_package(swapped, "lib-2.0-0.conda", chain["key_mgr"])

    other = _signer()  # a key key_mgr does not delegate to
    rogue = copy.deepcopy(served)
    T.sign_repodata(rogue, other)
    with pytest.raises(conda.Untrusted):
        conda.check_all(rogue, chain["root"], chain["key_mgr"])


def test_key_mgr_signed_by_wrong_key_and_thresholds(chain: dict[str, Any]) -> None:
    fake = T.build_key_mgr([_signer()], [T.public_hex(chain["pkg_s"])], version=2, now=NOW)
    with pytest.raises(conda.Untrusted):
        conda.check_key_mgr(chain["root"], fake)
    with pytest.raises(T.TrustError):
        T.verify_delegation("key_mgr", fake, chain["root"])
    with pytest.raises(T.TrustError):  # a root claiming to be key_mgr
        T.verify_delegation("key_mgr", chain["root"], chain["root"])
    two = [_signer(), _signer()]
    keys = [T.public_hex(s) for s in two]
    env = T.wrap({"x": 1})
    T.sign_envelope(env, two[0])
    with pytest.raises(T.TrustError):
        T.verify_signable(env, keys, 2)
    T.sign_envelope(env, two[1])
    T.verify_signable(env, keys, 2)
    conda.check_signable(env, keys, 2, gpg=False)


def test_root_rotation_chains(chain: dict[str, Any]) -> None:
    new_root = _signer()
    km = T.public_hex(chain["km_s"])
    root2 = T.build_root(
        [chain["root_s"], new_root],
        [km],
        version=2,
        now=NOW,
        root_keys=[T.public_hex(new_root)],
    )
    conda.check_root_update(chain["root"], root2)
    T.verify_root(chain["root"], root2)
    only_new = T.build_root([new_root], [km], version=2, now=NOW)
    with pytest.raises(conda.Untrusted):
        conda.check_root_update(chain["root"], only_new)
    with pytest.raises(T.TrustError):
        T.verify_root(chain["root"], only_new)
    skipped = T.build_root([chain["root_s"]], [km], version=3, now=NOW)
    with pytest.raises(T.TrustError):
        T.verify_root(chain["root"], skipped)


def test_derive_signs_served_records_in_every_form(tmp_path: Path, chain: dict[str, Any]) -> None:
    data = _repodata()
    data["packages"]["nosha-1.0-0.tar.bz2"] = {"name": "nosha", "version": "1.0"}  # dropped
    blobs: dict[str, bytes] = {}

    def put(b: bytes) -> str:
        import hashlib

        sha = hashlib.sha256(b).hexdigest()
        blobs[sha] = b
        return sha

    derived = rd.derive(
        data,
        tmp_path,
        subdir="noarch",
        put_blob=put,
        keep=lambda fn, rec: fn != "app-2.0-0.conda",  # a policy leaves app out
        sign=lambda d: T.sign_repodata(d, chain["pkg_s"]),
    )
    served = orjson.loads(derived.json.read_bytes())
    assert sorted(served["signatures"]) == ["lib-1.0-0.tar.bz2", "lib-2.0-0.conda"]
    assert conda.check_all(served, chain["root"], chain["key_mgr"]) == 2
    zst = zstandard.ZstdDecompressor().decompress(derived.zst.read_bytes(), max_output_size=1 << 24)
    assert zst == derived.json.read_bytes()
    assert gzip.decompress(derived.gz.read_bytes()) == derived.json.read_bytes()
    # CEP-16 shards carry the same records and no signatures (the format has no place for them).
    assert derived.shards_index is not None
    index = rd.read_shard_index(derived.shards_index.read_bytes())
    shard = rd.read_shard(blobs[index["lib"]])
    assert shard["lib-2.0-0.conda"] == served["packages.conda"]["lib-2.0-0.conda"]
    raw = zstandard.ZstdDecompressor().decompress(blobs[index["lib"]], max_output_size=1 << 24)
    assert b"signatures" not in raw
