"""repodata.json and its derived forms: filtered JSON, ``.zst`` and gzip variants, CEP-16 shards.

Upstream repodata can be hundreds of MB (conda-forge linux-64). It is never held as several
copies: the bytes are read from a file and parsed once with orjson (the bytes are dropped right
after), records are filtered in place, and every output is written to a file — the JSON once,
then compressed from that file as a stream. Shards (CEP-16: one zstd-compressed msgpack document
per package name, addressed by its sha256) are handed to ``put_blob`` one at a time.

No network, no database: callers give paths and a blob sink.
"""

from __future__ import annotations

import gzip
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import orjson
import zstandard

from stockade.errors import UpstreamError

RECORD_KEYS = ("packages", "packages.conda")
REPODATA = "repodata.json"
SHARDS_INDEX = "repodata_shards.msgpack.zst"
ZST_LEVEL = 6
MAX_SHARD = 64 * 1024**2  # bytes of one decompressed shard or shard index we agree to read

Keep = Callable[[str, dict[str, Any]], bool]  # (filename, record) → keep it in the output
PutBlob = Callable[[bytes], str]  # stores bytes, returns their sha256 (hex)
Sign = Callable[[dict[str, Any]], object]  # sets data["signatures"] over the served records


class RepodataError(UpstreamError):
    """An upstream repodata document is not what conda clients expect."""


@dataclass(frozen=True, slots=True)
class DerivedRepodata:
    json: Path
    zst: Path
    gz: Path
    shards_index: Path | None  # None when shards were not asked for
    packages: int  # records served
    unverifiable: int  # dropped: no sha256 to check the file against
    filtered: int  # dropped by ``keep`` (policy)


def empty_repodata(subdir: str) -> dict[str, Any]:
    return {
        "info": {"subdir": subdir},
        "packages": {},
        "packages.conda": {},
        "removed": [],
        "repodata_version": 1,
    }


def load_repodata(path: Path, *, what: str = REPODATA) -> dict[str, Any]:
    """Parse a repodata document from a file (one orjson pass; the raw bytes are released)."""
    raw = path.read_bytes()
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RepodataError(
            f"upstream {what} is not JSON ({exc})", "check the channel URL of the mirror"
        ) from exc
    finally:
        del raw
    if not isinstance(data, dict):
        raise RepodataError(f"upstream {what} is not a JSON object")
    for key in RECORD_KEYS:
        if not isinstance(data.get(key, {}), dict):
            raise RepodataError(f"upstream {what}: {key!r} is not an object")
    return data


def add_record(data: dict[str, Any], filename: str, record: dict[str, Any]) -> None:
    key = "packages.conda" if filename.endswith(".conda") else "packages"
    data.setdefault(key, {})[filename] = record


def derive(
    data: dict[str, Any],
    out_dir: Path,
    *,
    subdir: str,
    put_blob: PutBlob | None,
    keep: Keep | None = None,
    sign: Sign | None = None,
) -> DerivedRepodata:
    """Write the served forms of ``data`` (modified in place) into ``out_dir``.

    ``info.base_url`` is removed so that clients fetch packages through Stockade; records
    without a sha256 are dropped (their files could not be verified, so they are never served);
    ``keep`` may drop more. ``sign`` then signs the records that are left, exactly as served
    (conda content trust: the top-level ``signatures`` map of repodata.json; CEP-16 shards have
    no place for signatures and carry none). With ``put_blob`` the CEP-16 shards are written
    through it and the shard index goes to ``out_dir``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    info = data.get("info")
    info = dict(info) if isinstance(info, dict) else {}
    info.pop("base_url", None)
    info["subdir"] = subdir
    data["info"] = info
    total = unverifiable = filtered = 0
    for key in RECORD_KEYS:
        records = data.get(key) or {}
        kept: dict[str, Any] = {}
        for fn, rec in records.items():
            if not isinstance(rec, dict) or not isinstance(rec.get("name"), str):
                unverifiable += 1
                continue
            sha = rec.get("sha256")
            if not isinstance(sha, str) or len(sha) != 64:
                unverifiable += 1
                continue
            if keep is not None and not keep(fn, rec):
                filtered += 1
                continue
            kept[fn] = rec
        data[key] = kept
        total += len(kept)
    if sign is not None:
        sign(data)
    json_path = out_dir / REPODATA
    json_path.write_bytes(orjson.dumps(data))
    zst_path = out_dir / (REPODATA + ".zst")
    with json_path.open("rb") as src, zst_path.open("wb") as dst:
        zstandard.ZstdCompressor(level=ZST_LEVEL).copy_stream(src, dst)
    gz_path = out_dir / (REPODATA + ".gz")
    with json_path.open("rb") as src, gzip.GzipFile(gz_path, "wb", 6, mtime=0) as gdst:
        shutil.copyfileobj(src, gdst, 1024 * 1024)
    index_path: Path | None = None
    if put_blob is not None:
        index_path = out_dir / SHARDS_INDEX
        index_path.write_bytes(write_shards(data, subdir=subdir, put_blob=put_blob))
    return DerivedRepodata(json_path, zst_path, gz_path, index_path, total, unverifiable, filtered)


def _binary_digests(rec: dict[str, Any]) -> dict[str, Any]:
    out = dict(rec)
    for key in ("sha256", "md5"):
        value = out.get(key)
        if isinstance(value, str):
            try:
                out[key] = bytes.fromhex(value)
            except ValueError:
                out.pop(key)
    return out


def write_shards(data: dict[str, Any], *, subdir: str, put_blob: PutBlob) -> bytes:
    """Store one shard per package name (CEP-16) and return the compressed shard index."""
    by_name: dict[str, dict[str, dict[str, Any]]] = {}
    for key in RECORD_KEYS:
        for fn, rec in (data.get(key) or {}).items():
            shard = by_name.setdefault(rec["name"], {"packages": {}, "packages.conda": {}})
            shard[key][fn] = _binary_digests(rec)
    cctx = zstandard.ZstdCompressor(level=ZST_LEVEL)
    shards: dict[str, bytes] = {}
    for name in sorted(by_name):
        doc = {**by_name[name], "removed": []}
        packed = msgpack.packb(doc, use_bin_type=True)
        shards[name] = bytes.fromhex(put_blob(cctx.compress(packed)))
    index = {
        "version": 1,
        "info": {"subdir": subdir, "base_url": "./", "shards_base_url": "./shards/"},
        "shards": shards,
    }
    return cctx.compress(msgpack.packb(index, use_bin_type=True))


def _unpack(blob: bytes) -> Any:
    try:
        raw = zstandard.ZstdDecompressor().decompress(blob, max_output_size=MAX_SHARD)
        return msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except (zstandard.ZstdError, ValueError, msgpack.UnpackException) as exc:
        raise RepodataError(f"a stored shard cannot be read: {exc}") from exc


def read_shard_index(blob: bytes) -> dict[str, str]:
    """Package name → shard sha256 (hex) from a compressed shard index."""
    doc = _unpack(blob)
    shards = doc.get("shards", {}) if isinstance(doc, dict) else {}
    return {str(k): bytes(v).hex() for k, v in shards.items()}


def read_shard(blob: bytes) -> dict[str, dict[str, Any]]:
    """Filename → record (digests as hex, as in repodata.json) from a compressed shard."""
    doc = _unpack(blob)
    out: dict[str, dict[str, Any]] = {}
    for key in RECORD_KEYS:
        for fn, rec in (doc.get(key) or {}).items():
            rec = dict(rec)
            for d in ("sha256", "md5"):
                if isinstance(rec.get(d), bytes):
                    rec[d] = rec[d].hex()
            out[str(fn)] = rec
    return out


def private_channeldata(subdirs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A minimal channeldata.json: per package, its subdirs and newest version string."""
    packages: dict[str, dict[str, Any]] = {}
    for subdir, data in sorted(subdirs.items()):
        for key in RECORD_KEYS:
            for rec in (data.get(key) or {}).values():
                entry = packages.setdefault(rec["name"], {"subdirs": [], "version": None})
                if subdir not in entry["subdirs"]:
                    entry["subdirs"].append(subdir)
                if rec.get("timestamp", 0) >= entry.get("timestamp", -1):
                    entry["version"] = rec.get("version")
                    entry["timestamp"] = rec.get("timestamp", 0)
    for entry in packages.values():
        entry.pop("timestamp", None)
    return {"channeldata_version": 1, "packages": packages, "subdirs": sorted(subdirs)}
