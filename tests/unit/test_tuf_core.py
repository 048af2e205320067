"""core/tuf.py: target paths, hashed bins and the documents python-tuf reads back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from securesystemslib.signer import CryptoSigner, SSlibKey
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import Metadata, Root, Targets

from stockade.core import tuf as T


def _signer() -> CryptoSigner:
    key = Ed25519PrivateKey.generate()
    return CryptoSigner(key, SSlibKey.from_crypto(key.public_key()))


def test_bins_and_paths() -> None:
    assert T.bit_length_for(16384) == 14
    for bad in (0, 1, 3, 1000, 2**17):
        with pytest.raises(ValueError, match="power of two"):
            T.bit_length_for(bad)
    bins = T.all_bins(4)
    assert len(bins) == 16 and bins[0] == "bins-0" and bins[-1] == "bins-f"
    assert T.bin_of(T.page_path("thing", json=False), 4) in bins
    assert T.page_path("thing", json=True) == "simple/thing/index.json"
    sha = "a" * 64
    assert T.split_target_url(f"files/thing/{sha}.thing-1.0.tar.gz") == (
        "files/thing/thing-1.0.tar.gz",
        sha,
    )
    assert T.split_target_url("files/thing/nothash.thing-1.0.tar.gz") is None
    assert T.split_target_url(f"{sha}.noslash") is None


def test_documents_verify_with_python_tuf() -> None:
    keys = {r: _signer() for r in T.KEY_ROLES}
    exp = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    root = T.build_root({r: keys[r].public_key for r in T.TOP_ROLES}, 1, exp, [keys["root"]])
    md_root = Metadata[Root].from_bytes(root)
    md_root.signed.verify_delegate("root", md_root.signed_bytes, md_root.signatures)
    assert T.root_keys(root)["timestamp"].keyid == keys["timestamp"].public_key.keyid
    targets = T.build_targets(keys["bins"].public_key, 3, 1, exp, keys["targets"])
    md_targets = Metadata[Targets].from_bytes(targets)
    md_root.signed.verify_delegate("targets", md_targets.signed_bytes, md_targets.signatures)
    assert T.bins_keyid(targets) == keys["bins"].public_key.keyid
    t = T.Target("files/thing/thing-1.0.tar.gz", 10, "b" * 64)
    name = T.bin_of(t.path, 3)
    bin_doc = Metadata[Targets].from_bytes(T.build_bin([t], 2, exp, keys["bins"]))
    md_targets.signed.verify_delegate(name, bin_doc.signed_bytes, bin_doc.signatures)
    assert bin_doc.signed.targets[t.path].hashes == {"sha256": "b" * 64}
    snap = T.build_snapshot({"targets": 1, name: 2}, 5, exp, keys["snapshot"])
    assert T.snapshot_versions(snap) == {"targets": 1, name: 2}
    ts = T.build_timestamp(snap, 5, 7, exp, keys["timestamp"])
    assert T.version_of(ts) == 7 and T.expires_of(ts) == exp


def test_fast_canonical_signing_matches_what_clients_verify() -> None:
    """Signatures are made over orjson bytes when they equal canonical JSON, and over
    securesystemslib's encoding otherwise; python-tuf's verification (canonical) accepts both."""
    keys = {r: _signer() for r in ("targets", "bins")}
    exp = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    md_targets = Metadata[Targets].from_bytes(
        T.build_targets(keys["bins"].public_key, 1, 1, exp, keys["targets"])
    )
    for path in ("files/a/a-1.0.tar.gz", 'files/é/\\"odd\tname'):
        doc = Metadata[Targets].from_bytes(
            T.build_bin([T.Target(path, 1, "c" * 64)], 1, exp, keys["bins"])
        )
        md_targets.signed.verify_delegate(T.bin_of(path, 1), doc.signed_bytes, doc.signatures)


def test_root_threshold_and_rotation_signatures() -> None:
    """A root with 3 keys and threshold 2 verifies only with 2 signatures; the next root, with
    new keys, must carry a threshold of the old keys (checked by the old root) and of the new."""
    keys = {r: _signer() for r in T.TOP_ROLES}
    exp = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    pub = {r: keys[r].public_key for r in T.TOP_ROLES}
    old = [_signer() for _ in range(3)]
    with pytest.raises(ValueError, match="threshold"):
        T.build_root(pub, 1, exp, old, root_keys=[s.public_key for s in old], root_threshold=4)
    one = T.build_root(
        pub, 1, exp, old[:1], root_keys=[s.public_key for s in old], root_threshold=2
    )
    md1 = Metadata[Root].from_bytes(one)
    with pytest.raises(UnsignedMetadataError):
        md1.signed.verify_delegate("root", md1.signed_bytes, md1.signatures)
    v1 = T.build_root(pub, 1, exp, old[:2], root_keys=[s.public_key for s in old], root_threshold=2)
    md1 = Metadata[Root].from_bytes(v1)
    md1.signed.verify_delegate("root", md1.signed_bytes, md1.signatures)
    listed, threshold = T.root_role(v1)
    assert threshold == 2 and [k.keyid for k in listed] == [s.public_key.keyid for s in old]
    new = [_signer() for _ in range(3)]
    v2 = T.build_root(
        pub, 2, exp, [*old[1:], *new], root_keys=[s.public_key for s in new], root_threshold=2
    )
    md2 = Metadata[Root].from_bytes(v2)
    md1.signed.verify_delegate("root", md2.signed_bytes, md2.signatures)  # the old root's rule
    md2.signed.verify_delegate("root", md2.signed_bytes, md2.signatures)  # and the new one's
