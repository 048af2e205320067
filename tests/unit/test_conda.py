"""core.conda: file names, package validation (real packages made by cph, hostile ones) and
derived repodata (filtering, compressed forms, CEP-16 shards)."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path
from typing import Any

import msgpack
import orjson
import pytest
import zstandard

from stockade.core.conda import repodata as rd
from stockade.core.conda.names import parse_filename, parse_subdirs
from stockade.core.conda.package import CondaLimits, validate_conda_package
from stockade.errors import InvalidRequest, PayloadTooLarge, UploadRejected
from tests.conda_builders import (
    build_conda,
    corrupt_bytes,
    corrupt_conda_pkg_stream,
    hostile_tar_bz2,
    index_json,
    package_record,
)


def test_filenames_and_subdirs() -> None:
    p = parse_filename("python-dateutil-2.9.0-pyhd8ed1ab_0.conda")
    assert p is not None
    assert (p.name, p.version, p.build, p.ext) == (
        "python-dateutil",
        "2.9.0",
        "pyhd8ed1ab_0",
        ".conda",
    )
    assert parse_filename("openssl-3.0.1-h0_0.tar.bz2") is not None
    for bad in ("x.whl", "x-1.conda", "../x-1-0.conda", "a/b-1-0.conda", "X-1-0.conda"):
        assert parse_filename(bad) is None, bad
    assert parse_subdirs("noarch, linux-64,noarch") == ["noarch", "linux-64"]
    with pytest.raises(InvalidRequest):
        parse_subdirs("linux 64")
    with pytest.raises(InvalidRequest):
        parse_subdirs(",")


@pytest.mark.parametrize("fmt", [".conda", ".tar.bz2"])
def test_real_packages_validate(tmp_path: Path, fmt: str) -> None:
    pkg = build_conda(tmp_path, "app", "2.0", subdir="linux-64", depends=["lib >=1"], fmt=fmt)
    meta = validate_conda_package(pkg, pkg.name)
    assert (meta.name, meta.version, meta.build, meta.subdir) == ("app", "2.0", "0", "linux-64")
    assert meta.index["depends"] == ["lib >=1"]
    with pytest.raises(UploadRejected, match="uploaded for 'noarch'"):
        validate_conda_package(pkg, pkg.name, expected_subdir="noarch")


def _reject(path: Path, needle: str, limits: CondaLimits | None = None) -> None:
    with pytest.raises(UploadRejected) as exc:
        validate_conda_package(path, path.name, limits=limits)
    assert needle in exc.value.message and "nothing was stored" in exc.value.message
    assert exc.value.hint


def test_hostile_packages(tmp_path: Path) -> None:
    good = build_conda(tmp_path / "ok", "app", "2.0", subdir="linux-64")
    good_bz2 = build_conda(tmp_path / "ok", "lib", "1.0", fmt=".tar.bz2")
    _reject(corrupt_conda_pkg_stream(good, tmp_path / "z"), "zstd")
    _reject(corrupt_bytes(good_bz2, tmp_path / "b"), "corrupt")
    liar = build_conda(
        tmp_path / "l", "x", "1.0", index=index_json("x", "9.9"), filename="x-1.0-0.conda"
    )
    _reject(liar, "says version '9.9'")
    idx = index_json("evil", "1.0")
    _reject(
        hostile_tar_bz2(tmp_path / "t", "evil-1.0-0.tar.bz2", idx, [("a/../../x", b"")]),
        "path traversal",
    )
    _reject(
        hostile_tar_bz2(tmp_path / "a", "evil-1.0-0.tar.bz2", idx, [("/etc/passwd", b"")]),
        "absolute",
    )
    _reject(
        hostile_tar_bz2(tmp_path / "s", "evil-1.0-0.tar.bz2", idx, symlinks=[("x", "/etc")]),
        "absolute path",
    )
    inside = hostile_tar_bz2(
        tmp_path / "ok2", "evil-1.0-0.tar.bz2", idx, symlinks=[("lib/a.so", "b.so")]
    )
    assert validate_conda_package(inside, inside.name).members == 2
    _reject(hostile_tar_bz2(tmp_path / "n", "evil-1.0-0.tar.bz2", {"name": "evil"}), "says")
    bomb = hostile_tar_bz2(tmp_path / "bomb", "evil-1.0-0.tar.bz2", idx, sparse_zeros=8 << 20)
    assert bomb.stat().st_size < 64 * 1024
    with pytest.raises(PayloadTooLarge, match="unpacks to more"):
        validate_conda_package(bomb, bomb.name, limits=CondaLimits(max_unpacked=1 << 20))


def _repodata(tmp_path: Path) -> tuple[dict[str, Any], dict[str, Path]]:
    pkgs = {
        "lib": build_conda(tmp_path / "d", "lib", "1.0", fmt=".tar.bz2"),
        "lib2": build_conda(tmp_path / "d", "lib", "2.0"),
        "app": build_conda(tmp_path / "d", "app", "2.0"),
    }
    data: dict[str, Any] = {
        "info": {"subdir": "noarch", "base_url": "https://elsewhere.example/"},
        "repodata_version": 2,
    }
    for p in pkgs.values():
        rd.add_record(data, p.name, package_record(p)[1])
    rd.add_record(data, "nosha-1.0-0.tar.bz2", {"name": "nosha", "version": "1.0", "md5": "0"})
    return data, pkgs


def test_derive_writes_every_form_and_shards(tmp_path: Path) -> None:
    data, pkgs = _repodata(tmp_path)
    blobs: dict[str, bytes] = {}

    def put(b: bytes) -> str:
        sha = hashlib.sha256(b).hexdigest()
        blobs[sha] = b
        return sha

    src = tmp_path / "upstream.json"
    src.write_bytes(orjson.dumps(data))
    loaded = rd.load_repodata(src)
    out = rd.derive(loaded, tmp_path / "out", subdir="noarch", put_blob=put)
    assert (out.packages, out.unverifiable, out.filtered) == (3, 1, 0)
    served = json.loads(out.json.read_bytes())
    assert "base_url" not in served["info"]
    assert set(served["packages"]) == {"lib-1.0-0.tar.bz2"}
    assert set(served["packages.conda"]) == {"lib-2.0-0.conda", "app-2.0-0.conda"}
    assert json.loads(gzip.decompress(out.gz.read_bytes())) == served
    zst = zstandard.ZstdDecompressor().decompressobj().decompress(out.zst.read_bytes())
    assert json.loads(zst) == served
    assert out.shards_index is not None
    index = rd.read_shard_index(out.shards_index.read_bytes())
    assert set(index) == {"lib", "app"}
    lib = rd.read_shard(blobs[index["lib"]])
    assert set(lib) == {"lib-1.0-0.tar.bz2", "lib-2.0-0.conda"}
    assert lib["lib-2.0-0.conda"]["sha256"] == hashlib.sha256(pkgs["lib2"].read_bytes()).hexdigest()
    raw = msgpack.unpackb(zstandard.ZstdDecompressor().decompress(blobs[index["app"]]))
    assert isinstance(raw["packages.conda"]["app-2.0-0.conda"]["sha256"], bytes)  # CEP-16
    raw_index = msgpack.unpackb(
        zstandard.ZstdDecompressor().decompressobj().decompress(out.shards_index.read_bytes())
    )
    assert raw_index["info"]["shards_base_url"] == "./shards/"
    assert isinstance(raw_index["shards"]["app"], bytes) and len(raw_index["shards"]["app"]) == 32


def test_derive_keep_filters_records(tmp_path: Path) -> None:
    data, _ = _repodata(tmp_path)
    out = rd.derive(
        data,
        tmp_path / "out",
        subdir="noarch",
        put_blob=None,
        keep=lambda fn, rec: rec["name"] != "app",
    )
    assert (out.packages, out.filtered, out.shards_index) == (2, 1, None)
    assert "app-2.0-0.conda" not in json.loads(out.json.read_bytes())["packages.conda"]


def test_load_repodata_refuses_non_repodata(tmp_path: Path) -> None:
    bad = tmp_path / "r.json"
    bad.write_bytes(b"<html>")
    with pytest.raises(rd.RepodataError, match="not JSON"):
        rd.load_repodata(bad)
    bad.write_bytes(b'{"packages": []}')
    with pytest.raises(rd.RepodataError, match="not an object"):
        rd.load_repodata(bad)


def test_private_channeldata() -> None:
    a: dict[str, Any] = {}
    rd.add_record(a, "x-1.0-0.conda", {"name": "x", "version": "1.0", "timestamp": 1})
    rd.add_record(a, "x-2.0-0.conda", {"name": "x", "version": "2.0", "timestamp": 2})
    cd = rd.private_channeldata({"noarch": a, "linux-64": dict(a)})
    assert cd["packages"]["x"] == {"subdirs": ["linux-64", "noarch"], "version": "2.0"}
