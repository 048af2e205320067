"""Validation of an uploaded conda package (``.conda`` or ``.tar.bz2``), bounded, never extracted.

The containers are opened with ``conda-package-streaming`` (the reader conda itself uses); this
module only looks at what it yields: member names, types, sizes and ``info/index.json``. Every
member of every component is read through to the end, so a corrupt zstd or bz2 stream anywhere
in the file is found before anything is stored.
"""

from __future__ import annotations

import json
import posixpath
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

from conda_package_streaming import package_streaming  # type: ignore[import-untyped]

from stockade.core.conda.names import check_subdir, require_filename
from stockade.errors import InvalidRequest, PayloadTooLarge, UploadRejected

INDEX_JSON = "info/index.json"
_CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class CondaLimits:
    max_members: int = 200_000
    max_unpacked: int = 16 * 1024**3  # total uncompressed bytes of all members
    max_member: int = 4 * 1024**3
    max_index_json: int = 1024**2


@dataclass(frozen=True, slots=True)
class CondaPackageMeta:
    filename: str
    name: str
    version: str
    build: str
    subdir: str
    index: dict[str, Any]  # info/index.json as read
    members: int
    unpacked: int


def _bad(filename: str, why: str, hint: str | None = None) -> UploadRejected:
    return UploadRejected(
        f"{filename}: {why}; nothing was stored",
        hint or "rebuild the package with conda-build or rattler-build and upload it again",
    )


def _check_member(filename: str, m: tarfile.TarInfo) -> None:
    name = m.name
    if "\\" in name or name.startswith("/") or "\x00" in name:
        raise _bad(filename, f"member {name!r} has an absolute or unusual path")
    norm = posixpath.normpath(name)
    if norm == ".." or norm.startswith("../") or "/../" in f"/{name}/":
        raise _bad(filename, f"member {name!r} points outside the package (path traversal)")
    if m.issym() or m.islnk():
        target = m.linkname
        if target.startswith("/") or "\\" in target:
            raise _bad(filename, f"link {name!r} points to the absolute path {target!r}")
        base = posixpath.dirname(norm) if m.issym() else ""
        resolved = posixpath.normpath(posixpath.join(base, target))
        if resolved == ".." or resolved.startswith("../"):
            raise _bad(filename, f"link {name!r} → {target!r} points outside the package")
    elif not (m.isfile() or m.isdir()):
        raise _bad(filename, f"member {name!r} is a device, fifo or other special file")


def _members(
    filename: str, fileobj: BinaryIO, zf: zipfile.ZipFile | None
) -> Iterator[tuple[tarfile.TarFile, tarfile.TarInfo]]:
    if zf is None:  # .tar.bz2: one tar holds everything
        yield from package_streaming.stream_conda_component(filename, fileobj)
        return
    for component in ("info", "pkg"):
        yield from package_streaming.stream_conda_component(filename, fileobj, component, zf=zf)


def _check_zip(filename: str, zf: zipfile.ZipFile) -> None:
    stem = filename[: -len(".conda")]
    allowed = {"metadata.json", f"info-{stem}.tar.zst", f"pkg-{stem}.tar.zst"}
    names = [i.filename for i in zf.infolist()]
    extra = sorted(set(names) - allowed)
    if extra:
        raise _bad(filename, f"unexpected entries in the .conda container: {extra[:3]}")
    for needed in (f"info-{stem}.tar.zst", f"pkg-{stem}.tar.zst"):
        if needed not in names:
            raise _bad(filename, f"the .conda container has no {needed}")
    if len(names) != len(set(names)):
        raise _bad(filename, "the .conda container lists an entry twice")


def _read_all(filename: str, f: IO[bytes], cap: int) -> bytes:
    data = f.read(cap + 1)
    if len(data) > cap:
        raise _bad(filename, f"{INDEX_JSON} is over {cap} bytes")
    return data


def validate_conda_package(
    path: Path,
    filename: str,
    *,
    expected_subdir: str | None = None,
    limits: CondaLimits | None = None,
) -> CondaPackageMeta:
    """Check the package at ``path`` (uploaded as ``filename``); raise UploadRejected."""
    limits = limits or CondaLimits()
    parsed = require_filename(filename)
    if expected_subdir is not None:
        check_subdir(expected_subdir)
    index_raw: bytes | None = None
    members = 0
    unpacked = 0
    with path.open("rb") as fileobj:
        zf: zipfile.ZipFile | None = None
        try:
            if parsed.ext == ".conda":
                zf = zipfile.ZipFile(fileobj)
                _check_zip(filename, zf)
            for tar, m in _members(filename, fileobj, zf):
                members += 1
                if members > limits.max_members:
                    raise _bad(filename, f"more than {limits.max_members} members")
                _check_member(filename, m)
                if m.size > limits.max_member or unpacked + m.size > limits.max_unpacked:
                    raise PayloadTooLarge(
                        f"{filename}: unpacks to more than the allowed size "
                        f"({limits.max_unpacked} bytes in all, {limits.max_member} per member); "
                        "nothing was stored",
                        "is this a decompression bomb? a legitimate package this large needs "
                        "higher limits",
                    )
                unpacked += m.size
                if not m.isfile():
                    continue
                f = tar.extractfile(m)
                if f is None:
                    continue
                if posixpath.normpath(m.name) == INDEX_JSON:
                    if index_raw is not None:
                        raise _bad(filename, f"{INDEX_JSON} appears twice")
                    index_raw = _read_all(filename, f, limits.max_index_json)
                else:
                    while f.read(_CHUNK):  # decompress through: finds corrupt streams
                        pass
        except (UploadRejected, PayloadTooLarge):
            raise
        except (
            zipfile.BadZipFile,
            tarfile.TarError,
            EOFError,
            OSError,
            zlib.error,
            LookupError,
            ValueError,
            RuntimeError,
        ) as exc:
            raise _bad(
                filename,
                f"the archive is corrupt or not a conda package ({type(exc).__name__}: "
                f"{str(exc)[:200]})",
            ) from exc
        except Exception as exc:  # zstd errors have no common base across implementations
            if type(exc).__module__.split(".")[0] in ("backports", "compression", "_zstd"):
                raise _bad(filename, f"the zstd stream is corrupt ({exc})") from exc
            raise
        finally:
            if zf is not None:
                zf.close()
    if index_raw is None:
        raise _bad(filename, f"the package has no {INDEX_JSON}")
    index = _parse_index(filename, index_raw)
    for key, want in (("name", parsed.name), ("version", parsed.version), ("build", parsed.build)):
        if str(index.get(key)) != want:
            raise _bad(
                filename,
                f"{INDEX_JSON} says {key} {index.get(key)!r} but the file name says {want!r}",
                "name the file NAME-VERSION-BUILD from its own info/index.json",
            )
    subdir = index.get("subdir")
    if not isinstance(subdir, str):
        raise _bad(filename, f"{INDEX_JSON} has no subdir")
    try:
        check_subdir(subdir)
    except InvalidRequest as exc:
        raise _bad(filename, f"{INDEX_JSON} has an invalid subdir {subdir!r}") from exc
    if index.get("noarch") and subdir != "noarch":
        raise _bad(filename, f"{INDEX_JSON} is noarch but says subdir {subdir!r}")
    if expected_subdir is not None and subdir != expected_subdir:
        raise _bad(
            filename,
            f"{INDEX_JSON} says subdir {subdir!r}, but it was uploaded for {expected_subdir!r}",
            f"upload it to {subdir!r} (or leave the subdir out: it is read from the package)",
        )
    return CondaPackageMeta(
        filename=filename,
        name=parsed.name,
        version=parsed.version,
        build=parsed.build,
        subdir=subdir,
        index=index,
        members=members,
        unpacked=unpacked,
    )


def _parse_index(filename: str, raw: bytes) -> dict[str, Any]:
    try:
        index = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad(filename, f"{INDEX_JSON} is not JSON: {exc}") from exc
    if not isinstance(index, dict):
        raise _bad(filename, f"{INDEX_JSON} is not a JSON object")
    if not isinstance(index.get("build_number", 0), int):
        raise _bad(filename, f"{INDEX_JSON}: build_number is not an integer")
    for key in ("depends", "constrains"):
        value = index.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _bad(filename, f"{INDEX_JSON}: {key} is not a list of strings")
    return index


__all__ = ["CondaLimits", "CondaPackageMeta", "validate_conda_package"]
