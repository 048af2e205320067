"""Build real (and deliberately hostile) Python distributions for tests.

Everything here is stdlib-only apart from ``packaging`` (used to parse
distribution filenames when laying out a static index).  All archives are
reproducible: the same arguments always give byte-identical files.

Typical use::

    wheel = build_wheel(tmp_path, "alpha", "1.0", requires_dist=["beta>=1"])
    sdist = build_sdist(tmp_path, "alpha", "1.0")
    write_simple_tree(tmp_path / "upstream", [wheel, sdist], with_metadata={wheel.name})
"""

from __future__ import annotations

import base64
import csv
import gzip
import hashlib
import html
import io
import json
import os
import re
import shutil
import stat
import struct
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Literal
from urllib.parse import quote

from packaging.utils import (
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

__all__ = [
    "UPLOAD_TIME",
    "build_corrupt_wheel",
    "build_many_members_wheel",
    "build_sdist",
    "build_symlink_sdist",
    "build_symlink_wheel",
    "build_traversal_sdist",
    "build_traversal_wheel",
    "build_wheel",
    "build_wheel_without_metadata",
    "build_zip_bomb_wheel",
    "extend_simple_tree",
    "record_hash",
    "sdist_basename",
    "sdist_pkg_info",
    "sha256_bytes",
    "sha256_file",
    "wheel_dist_name",
    "wheel_metadata",
    "write_simple_tree",
]

#: ``upload-time`` advertised for every file in the generated PEP 691 pages.
UPLOAD_TIME = "2024-01-02T03:04:05.000000Z"

_ZIP_DATE = (2024, 1, 2, 3, 4, 6)  # zip timestamps have 2 s resolution
_TAR_MTIME = 1704164645  # 2024-01-02T03:04:05Z
_CHUNK = 1024 * 1024
_STATE_FILE = ".tree-state.json"
_MAX_SNIFF_METADATA = 1024 * 1024

# --------------------------------------------------------------------------- helpers


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """Hex sha256 of the file at ``path`` (streamed)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def record_hash(data: bytes) -> str:
    """Hash in wheel RECORD form: ``sha256=<urlsafe b64, no padding>``."""
    return _record_digest(hashlib.sha256(data).digest())


def _record_digest(digest: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def wheel_dist_name(name: str) -> str:
    """Escape a project name for use in a wheel filename (runs of ``-_.`` -> ``_``).

    Case is preserved, as in the brief; ``packaging`` accepts either case.
    """
    return re.sub(r"[-_.]+", "_", name)


def sdist_basename(name: str, version: str) -> str:
    """PEP 625 sdist stem: normalised name with ``_`` separators, then ``-version``."""
    return f"{canonicalize_name(name).replace('-', '_')}-{version}"


def _extras_from_requirements(requires_dist: Iterable[str]) -> list[str]:
    extras: list[str] = []
    for req in requires_dist:
        for match in re.finditer(r"""extra\s*==\s*['"]([^'"]+)['"]""", req):
            extra = match.group(1)
            if extra not in extras:
                extras.append(extra)
    return extras


def _core_metadata(
    *,
    name: str,
    version: str,
    summary: str,
    requires_dist: Sequence[str],
    requires_python: str | None,
    license: str | None,
    description: str | None,
    headers: Sequence[str] = (),
) -> bytes:
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {name}",
        f"Version: {version}",
        f"Summary: {summary}",
    ]
    if license is not None:
        lines.append(f"License: {license}")
    lines.extend(headers)  # e.g. "License-Expression: MIT", "Classifier: License :: …"
    if requires_python is not None:
        lines.append(f"Requires-Python: {requires_python}")
    lines.extend(f"Provides-Extra: {extra}" for extra in _extras_from_requirements(requires_dist))
    lines.extend(f"Requires-Dist: {req}" for req in requires_dist)
    text = "\n".join(lines) + "\n"
    if description is not None:
        text += "\n" + description.rstrip("\n") + "\n"
    return text.encode("utf-8")


def _default_modules(dist: str, version: str) -> dict[str, str]:
    return {f"{dist.lower()}/__init__.py": f'__version__ = "{version}"\n'}


# --------------------------------------------------------------------------- zip writing


def _zipinfo(
    arcname: str,
    *,
    mode: int = stat.S_IFREG | 0o644,
    compress_type: int = zipfile.ZIP_DEFLATED,
) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(arcname, date_time=_ZIP_DATE)
    info.create_system = 3  # unix, so external_attr mode bits are honoured
    info.external_attr = (mode & 0xFFFF) << 16
    info.compress_type = compress_type
    return info


@dataclass(frozen=True)
class _Entry:
    """One archive member: a name (or a fully specified ZipInfo) and its bytes."""

    name: str
    data: bytes
    info: zipfile.ZipInfo | None = None


RecordRow = tuple[str, str, str]
_StreamHook = Callable[[zipfile.ZipFile], list[RecordRow]]


def _write_wheel_zip(
    path: Path,
    entries: Sequence[_Entry],
    *,
    dist_info: str,
    write_record: bool = True,
    stream_hook: _StreamHook | None = None,
) -> Path:
    """Write ``entries`` (+ optional streamed members) and a matching RECORD."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows: list[RecordRow] = []
    with zipfile.ZipFile(path, "w") as zf:
        for entry in entries:
            info = entry.info if entry.info is not None else _zipinfo(entry.name)
            zf.writestr(info, entry.data)
            rows.append((info.filename, record_hash(entry.data), str(len(entry.data))))
        if stream_hook is not None:
            rows.extend(stream_hook(zf))
        if write_record:
            record_name = f"{dist_info}/RECORD"
            buf = io.StringIO()
            writer = csv.writer(buf, lineterminator="\n")
            writer.writerows(rows)
            writer.writerow((record_name, "", ""))
            zf.writestr(_zipinfo(record_name), buf.getvalue().encode("utf-8"))
    return path


def _wheel_entries(
    name: str,
    version: str,
    *,
    requires_dist: Sequence[str] = (),
    requires_python: str | None = None,
    modules: Mapping[str, str] | None = None,
    summary: str = "A test distribution",
    license: str | None = None,
    metadata_name: str | None = None,
    metadata_version_override: str | None = None,
    description: str | None = None,
    include_metadata: bool = True,
    headers: Sequence[str] = (),
) -> tuple[str, str, list[_Entry]]:
    """Return ``(filename, dist_info_dir, entries-without-RECORD)``."""
    dist = wheel_dist_name(name)
    dist_info = f"{dist}-{version}.dist-info"
    filename = f"{dist}-{version}-py3-none-any.whl"
    mods = dict(modules) if modules is not None else _default_modules(dist, version)
    entries = [_Entry(arc, text.encode("utf-8")) for arc, text in mods.items()]
    if include_metadata:
        metadata = _core_metadata(
            name=metadata_name if metadata_name is not None else name,
            version=metadata_version_override if metadata_version_override is not None else version,
            summary=summary,
            requires_dist=requires_dist,
            requires_python=requires_python,
            license=license,
            description=description,
            headers=headers,
        )
        entries.append(_Entry(f"{dist_info}/METADATA", metadata))
    wheel_file = (
        "Wheel-Version: 1.0\n"
        "Generator: stockade-tests (0.1)\n"
        "Root-Is-Purelib: true\n"
        "Tag: py3-none-any\n"
    )
    entries.append(_Entry(f"{dist_info}/WHEEL", wheel_file.encode("utf-8")))
    return filename, dist_info, entries


# --------------------------------------------------------------------------- wheels


def build_wheel(
    dest_dir: Path,
    name: str,
    version: str,
    *,
    requires_dist: Sequence[str] = (),
    requires_python: str | None = None,
    modules: Mapping[str, str] | None = None,
    summary: str = "A test distribution",
    license: str | None = None,
    metadata_name: str | None = None,
    metadata_version_override: str | None = None,
    description: str | None = None,
    headers: Sequence[str] = (),
) -> Path:
    """Build a valid, pip-installable pure-Python wheel and return its path.

    ``modules`` maps archive paths (``"pkg/__init__.py"``) to source text; the
    default is a single package ``{dist.lower()}/__init__.py`` holding
    ``__version__``.  ``metadata_name`` / ``metadata_version_override`` put a
    different Name / Version in METADATA than in the filename.  ``Provides-Extra``
    lines are derived from ``extra == "..."`` markers in ``requires_dist``.
    """
    filename, dist_info, entries = _wheel_entries(
        name,
        version,
        requires_dist=requires_dist,
        requires_python=requires_python,
        modules=modules,
        summary=summary,
        license=license,
        metadata_name=metadata_name,
        metadata_version_override=metadata_version_override,
        description=description,
        headers=headers,
    )
    return _write_wheel_zip(Path(dest_dir) / filename, entries, dist_info=dist_info)


def wheel_metadata(path: Path) -> bytes:
    """The raw ``*.dist-info/METADATA`` bytes of a wheel (top-level dist-info only)."""
    with zipfile.ZipFile(path) as zf:
        candidates = [
            n
            for n in zf.namelist()
            if n.count("/") == 1 and n.endswith("/METADATA") and ".dist-info/" in n
        ]
        if len(candidates) != 1:
            raise ValueError(f"{path}: expected exactly one dist-info/METADATA, got {candidates}")
        return zf.read(candidates[0])


# --------------------------------------------------------------------------- sdists


def _tarinfo(name: str, *, size: int = 0, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.type = kind
    info.mtime = _TAR_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info


_TarEntry = tuple[tarfile.TarInfo, bytes | None]


def _write_tar_gz(path: Path, entries: Sequence[_TarEntry]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with (
        path.open("wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tf,
    ):
        for info, data in entries:
            if data is None:
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return path


def _sdist_entries(
    name: str,
    version: str,
    *,
    requires_python: str | None,
    requires_dist: Sequence[str],
    pkg_info_name: str | None,
    summary: str,
) -> tuple[str, str, list[_TarEntry]]:
    """Return ``(filename, top_dir, entries)`` for a plausible setuptools sdist."""
    top = sdist_basename(name, version)
    pkg = canonicalize_name(name).replace("-", "_")
    pkg_info = _core_metadata(
        name=pkg_info_name if pkg_info_name is not None else name,
        version=version,
        summary=summary,
        requires_dist=requires_dist,
        requires_python=requires_python,
        license=None,
        description=None,
    )
    deps = ", ".join(json.dumps(r) for r in requires_dist)
    pyproject = (
        "[build-system]\n"
        'requires = ["setuptools>=61"]\n'
        'build-backend = "setuptools.build_meta"\n'
        "\n"
        "[project]\n"
        f"name = {json.dumps(name)}\n"
        f"version = {json.dumps(version)}\n"
        f"description = {json.dumps(summary)}\n"
        f"dependencies = [{deps}]\n"
    )
    if requires_python is not None:
        pyproject += f"requires-python = {json.dumps(requires_python)}\n"
    source = f'__version__ = "{version}"\n'.encode()
    entries: list[_TarEntry] = [
        (_tarinfo(top, kind=tarfile.DIRTYPE), None),
        (_tarinfo(f"{top}/PKG-INFO"), pkg_info),
        (_tarinfo(f"{top}/pyproject.toml"), pyproject.encode("utf-8")),
        (_tarinfo(f"{top}/{pkg}", kind=tarfile.DIRTYPE), None),
        (_tarinfo(f"{top}/{pkg}/__init__.py"), source),
    ]
    return f"{top}.tar.gz", top, entries


def build_sdist(
    dest_dir: Path,
    name: str,
    version: str,
    *,
    requires_python: str | None = None,
    requires_dist: Sequence[str] = (),
    pkg_info_name: str | None = None,
    summary: str = "A test distribution",
) -> Path:
    """Build ``{normalized_name}-{version}.tar.gz`` (PEP 625) with PKG-INFO,
    pyproject.toml (setuptools backend) and a one-module package.  Not meant
    to be built offline.  ``pkg_info_name`` puts a different Name in PKG-INFO.
    """
    filename, _top, entries = _sdist_entries(
        name,
        version,
        requires_python=requires_python,
        requires_dist=requires_dist,
        pkg_info_name=pkg_info_name,
        summary=summary,
    )
    return _write_tar_gz(Path(dest_dir) / filename, entries)


def sdist_pkg_info(path: Path) -> bytes:
    """The ``{top}/PKG-INFO`` bytes of an sdist built by :func:`build_sdist`."""
    with tarfile.open(path, "r:gz") as tf:
        for member in tf.getmembers():
            if (
                member.isfile()
                and member.name.count("/") == 1
                and member.name.endswith("/PKG-INFO")
            ):
                fh = tf.extractfile(member)
                assert fh is not None
                return fh.read()
    raise ValueError(f"{path}: no top-level PKG-INFO")


# --------------------------------------------------------------------------- hostile archives


def build_corrupt_wheel(
    dest_dir: Path,
    name: str,
    version: str,
    *,
    mode: Literal["garbage", "no-central-directory"] = "garbage",
) -> Path:
    """A ``.whl`` that is not a readable zip.

    ``mode="garbage"``: plain bytes, no zip structure at all.
    ``mode="no-central-directory"``: a real wheel cut just before its central
    directory (local headers intact, so it *starts* like a zip).
    """
    filename = f"{wheel_dist_name(name)}-{version}-py3-none-any.whl"
    path = Path(dest_dir) / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "garbage":
        path.write_bytes(b"this is definitely not a zip archive\n" * 64)
        return path
    with tempfile.TemporaryDirectory() as tmp:
        data = build_wheel(Path(tmp), name, version).read_bytes()
    # End-of-central-directory record is the last 22 bytes (no archive comment).
    eocd = data[-22:]
    if eocd[:4] != b"PK\x05\x06":
        raise AssertionError("unexpected zip layout")
    (cd_offset,) = struct.unpack("<I", eocd[16:20])
    path.write_bytes(data[:cd_offset])
    return path


def build_traversal_wheel(
    dest_dir: Path, name: str, version: str, member: str = "../evil.py"
) -> Path:
    """A valid wheel plus an extra member named ``member`` (listed in RECORD).

    Use ``member="/etc/evil"`` for the absolute-path variant, or e.g.
    ``"pkg/../../evil.py"`` for a nested one.
    """
    filename, dist_info, entries = _wheel_entries(name, version)
    entries.append(_Entry(member, b"print('pwned')\n", _zipinfo(member)))
    return _write_wheel_zip(Path(dest_dir) / filename, entries, dist_info=dist_info)


def build_symlink_wheel(
    dest_dir: Path, name: str, version: str, target: str = "/etc/passwd"
) -> Path:
    """A valid wheel plus ``{pkg}/evil_link``, a unix symlink (mode 0o120777) to ``target``."""
    filename, dist_info, entries = _wheel_entries(name, version)
    arcname = f"{wheel_dist_name(name).lower()}/evil_link"
    info = _zipinfo(arcname, mode=0o120777, compress_type=zipfile.ZIP_STORED)
    entries.append(_Entry(arcname, target.encode("utf-8"), info))
    return _write_wheel_zip(Path(dest_dir) / filename, entries, dist_info=dist_info)


def build_wheel_without_metadata(dest_dir: Path, name: str, version: str) -> Path:
    """A well-formed zip with a dist-info (WHEEL, RECORD) but no METADATA."""
    filename, dist_info, entries = _wheel_entries(name, version, include_metadata=False)
    return _write_wheel_zip(Path(dest_dir) / filename, entries, dist_info=dist_info)


def build_zip_bomb_wheel(
    dest_dir: Path,
    name: str,
    version: str,
    uncompressed_size: int = 200 * 1024 * 1024,
    *,
    member: str | None = None,
) -> Path:
    """A valid wheel with one member of ``uncompressed_size`` zero bytes.

    The member is streamed (zip64, deflate) so memory stays low and the
    file is roughly ``uncompressed_size / 1000`` bytes.  ``member`` defaults to
    ``{pkg}/zeros.bin``; pass the ``*.dist-info/METADATA`` path to make METADATA
    itself the bomb (it then replaces the normal METADATA).
    """
    filename, dist_info, entries = _wheel_entries(name, version)
    arcname = member if member is not None else f"{wheel_dist_name(name).lower()}/zeros.bin"
    entries = [e for e in entries if e.name != arcname]

    def stream(zf: zipfile.ZipFile) -> list[RecordRow]:
        info = _zipinfo(arcname)
        info.file_size = uncompressed_size
        digest = hashlib.sha256()
        zero = bytes(min(_CHUNK, uncompressed_size))
        remaining = uncompressed_size
        with zf.open(info, "w", force_zip64=True) as out:
            while remaining > 0:
                piece = zero if remaining >= len(zero) else zero[:remaining]
                out.write(piece)
                digest.update(piece)
                remaining -= len(piece)
        return [(arcname, _record_digest(digest.digest()), str(uncompressed_size))]

    return _write_wheel_zip(
        Path(dest_dir) / filename, entries, dist_info=dist_info, stream_hook=stream
    )


def build_many_members_wheel(dest_dir: Path, name: str, version: str, count: int = 20000) -> Path:
    """A valid wheel with ``count`` extra (empty, stored) members, all in RECORD."""
    filename, dist_info, entries = _wheel_entries(name, version)
    pkg = wheel_dist_name(name).lower()
    empty_hash = record_hash(b"")

    def stream(zf: zipfile.ZipFile) -> list[RecordRow]:
        rows: list[RecordRow] = []
        for i in range(count):
            arcname = f"{pkg}/m/f{i:06d}.py"
            zf.writestr(_zipinfo(arcname, compress_type=zipfile.ZIP_STORED), b"")
            rows.append((arcname, empty_hash, "0"))
        return rows

    return _write_wheel_zip(
        Path(dest_dir) / filename, entries, dist_info=dist_info, stream_hook=stream
    )


def build_symlink_sdist(
    dest_dir: Path,
    name: str,
    version: str,
    target: str = "../../etc/passwd",
    *,
    link_type: Literal["symlink", "hardlink"] = "symlink",
) -> Path:
    """A normal sdist plus ``{top}/evil_link``: a SYMTYPE (or LNKTYPE) member to ``target``."""
    filename, top, entries = _sdist_entries(
        name,
        version,
        requires_python=None,
        requires_dist=(),
        pkg_info_name=None,
        summary="A test distribution",
    )
    kind = tarfile.SYMTYPE if link_type == "symlink" else tarfile.LNKTYPE
    link = _tarinfo(f"{top}/evil_link", kind=kind)
    link.linkname = target
    link.mode = 0o777
    entries.append((link, None))
    return _write_tar_gz(Path(dest_dir) / filename, entries)


def build_traversal_sdist(dest_dir: Path, name: str, version: str, member: str = "../x") -> Path:
    """A normal sdist plus a regular-file member named ``member`` (e.g. ``../x``, ``/tmp/x``)."""
    filename, _top, entries = _sdist_entries(
        name,
        version,
        requires_python=None,
        requires_dist=(),
        pkg_info_name=None,
        summary="A test distribution",
    )
    entries.append((_tarinfo(member), b"pwned\n"))
    return _write_tar_gz(Path(dest_dir) / filename, entries)


# --------------------------------------------------------------------------- static index


@dataclass
class _FileRecord:
    filename: str
    project: str
    version: str
    sha256: str
    size: int
    requires_python: str | None
    yanked: str | None
    metadata_sha256: str | None
    upload_time: str = UPLOAD_TIME


def _parse_dist_filename(filename: str) -> tuple[str, str]:
    """``(canonical project name, version string)`` for a wheel or sdist filename."""
    if filename.endswith(".whl"):
        name, version, _build, _tags = parse_wheel_filename(filename)
    elif filename.endswith((".tar.gz", ".zip")):
        name, version = parse_sdist_filename(filename)
    else:
        raise ValueError(f"not a distribution filename: {filename!r}")
    return canonicalize_name(name), str(version)


def _sniff_requires_python(path: Path) -> str | None:
    """Requires-Python from a wheel's METADATA / sdist's PKG-INFO; None on any problem."""
    try:
        if path.name.endswith(".whl"):
            with zipfile.ZipFile(path) as zf:
                names = [
                    i
                    for i in zf.infolist()
                    if i.filename.count("/") == 1 and i.filename.endswith(".dist-info/METADATA")
                ]
                if len(names) != 1 or names[0].file_size > _MAX_SNIFF_METADATA:
                    return None
                raw = zf.read(names[0])
        elif path.name.endswith(".tar.gz"):
            raw = sdist_pkg_info(path)
        else:
            return None
    except (OSError, ValueError, zipfile.BadZipFile, tarfile.TarError, EOFError):
        return None
    value = BytesHeaderParser().parsebytes(raw).get("Requires-Python")
    return str(value) if value else None


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _version_key(version: str) -> tuple[int, Version | str]:
    try:
        return (1, Version(version))
    except InvalidVersion:
        return (0, version)


def _attr(value: str) -> str:
    return html.escape(value, quote=True)


def _project_html(project: str, records: Sequence[_FileRecord], base_files_url: str) -> str:
    anchors = []
    for rec in records:
        attrs = [f'href="{_attr(base_files_url + quote(rec.filename))}#sha256={rec.sha256}"']
        if rec.requires_python is not None:
            attrs.append(f'data-requires-python="{_attr(rec.requires_python)}"')
        if rec.yanked is not None:
            attrs.append(f'data-yanked="{_attr(rec.yanked)}"')
        if rec.metadata_sha256 is not None:
            attrs.append(f'data-dist-info-metadata="sha256={rec.metadata_sha256}"')
            attrs.append(f'data-core-metadata="sha256={rec.metadata_sha256}"')
        anchors.append(f"    <a {' '.join(attrs)}>{html.escape(rec.filename)}</a><br/>")
    return (
        "<!DOCTYPE html>\n<html>\n  <head>\n"
        '    <meta charset="utf-8">\n'
        '    <meta name="pypi:repository-version" content="1.1">\n'
        f"    <title>Links for {html.escape(project)}</title>\n"
        "  </head>\n  <body>\n"
        f"    <h1>Links for {html.escape(project)}</h1>\n"
        + "\n".join(anchors)
        + "\n  </body>\n</html>\n"
    )


def _project_json(project: str, records: Sequence[_FileRecord], base_files_url: str) -> str:
    files: list[dict[str, object]] = []
    for rec in records:
        entry: dict[str, object] = {
            "filename": rec.filename,
            "url": base_files_url + quote(rec.filename),
            "hashes": {"sha256": rec.sha256},
        }
        if rec.requires_python is not None:
            entry["requires-python"] = rec.requires_python
        meta: object = {"sha256": rec.metadata_sha256} if rec.metadata_sha256 is not None else False
        entry["core-metadata"] = meta
        entry["dist-info-metadata"] = meta
        entry["yanked"] = (rec.yanked or True) if rec.yanked is not None else False
        entry["size"] = rec.size
        entry["upload-time"] = rec.upload_time
        files.append(entry)
    versions = sorted({rec.version for rec in records}, key=_version_key)
    doc = {"meta": {"api-version": "1.1"}, "name": project, "versions": versions, "files": files}
    return json.dumps(doc, indent=2) + "\n"


def _root_html(projects: Sequence[str]) -> str:
    links = "\n".join(f'    <a href="{_attr(p)}/">{html.escape(p)}</a><br/>' for p in projects)
    return (
        "<!DOCTYPE html>\n<html>\n  <head>\n"
        '    <meta charset="utf-8">\n'
        '    <meta name="pypi:repository-version" content="1.1">\n'
        "    <title>Simple index</title>\n"
        "  </head>\n  <body>\n" + links + "\n  </body>\n</html>\n"
    )


def _root_json(projects: Sequence[str]) -> str:
    doc = {"meta": {"api-version": "1.1"}, "projects": [{"name": p} for p in projects]}
    return json.dumps(doc, indent=2) + "\n"


def write_simple_tree(
    root: Path,
    files: Sequence[Path],
    *,
    yanked: Mapping[str, str] | None = None,
    with_metadata: Collection[str] = frozenset(),
    requires_python: Mapping[str, str] | None = None,
    base_files_url: str = "../../files/",
    upload_times: Mapping[str, str] | None = None,
) -> None:
    """Write a static PEP 503 / PEP 691 (v1.1) index for exactly ``files`` under ``root``.

    Layout: ``root/files/<filename>`` (copies; plus ``<filename>.metadata`` for
    wheels named in ``with_metadata``), ``root/simple/index.{html,json}`` and
    ``root/simple/<project>/index.{html,json}``.

    ``yanked`` maps filename -> reason (``""`` = yanked without reason).
    ``requires_python`` maps filename -> specifier; files not listed get the
    Requires-Python found in their own METADATA/PKG-INFO (as PyPI does); map a
    file to ``""`` to advertise none.  ``upload_times`` maps filename -> ISO 8601
    ``upload-time`` (default :data:`UPLOAD_TIME`).  Keys of all must be in ``files``.
    Project pages not in ``files`` are removed; old files stay on disk.
    """
    root = Path(root)
    yanked = dict(yanked or {})
    requires_python = dict(requires_python or {})
    names = [Path(f).name for f in files]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate filenames: {names}")
    for label, keys in (
        ("yanked", yanked),
        ("with_metadata", with_metadata),
        ("requires_python", requires_python),
    ):
        unknown = set(keys) - set(names)
        if unknown:
            raise ValueError(f"{label} names files not being published: {sorted(unknown)}")

    files_dir = root / "files"
    simple_dir = root / "simple"
    files_dir.mkdir(parents=True, exist_ok=True)
    simple_dir.mkdir(parents=True, exist_ok=True)

    by_project: dict[str, list[_FileRecord]] = {}
    for src in files:
        src = Path(src)
        project, version = _parse_dist_filename(src.name)
        dst = files_dir / src.name
        if not (dst.exists() and dst.resolve() == src.resolve()):
            tmp = files_dir / f".tmp-{src.name}"
            shutil.copyfile(src, tmp)
            tmp.replace(dst)
        metadata_sha: str | None = None
        meta_path = files_dir / f"{src.name}.metadata"
        if src.name in with_metadata:
            if not src.name.endswith(".whl"):
                raise ValueError(f"with_metadata only applies to wheels: {src.name}")
            metadata = wheel_metadata(dst)
            _atomic_write(meta_path, metadata)
            metadata_sha = sha256_bytes(metadata)
        else:
            meta_path.unlink(missing_ok=True)
        if src.name in requires_python:
            rp: str | None = requires_python[src.name] or None
        else:
            rp = _sniff_requires_python(dst)
        by_project.setdefault(project, []).append(
            _FileRecord(
                filename=src.name,
                project=project,
                version=version,
                sha256=sha256_file(dst),
                size=dst.stat().st_size,
                requires_python=rp,
                yanked=yanked.get(src.name),
                metadata_sha256=metadata_sha,
                upload_time=(upload_times or {}).get(src.name, UPLOAD_TIME),
            )
        )

    projects = sorted(by_project)
    for stale in simple_dir.iterdir():
        if stale.is_dir() and stale.name not in by_project:
            shutil.rmtree(stale)
    for project in projects:
        records = sorted(by_project[project], key=lambda r: r.filename)
        page_dir = simple_dir / project
        _atomic_write(
            page_dir / "index.html",
            _project_html(project, records, base_files_url).encode("utf-8"),
        )
        _atomic_write(
            page_dir / "index.json",
            _project_json(project, records, base_files_url).encode("utf-8"),
        )
    _atomic_write(simple_dir / "index.html", _root_html(projects).encode("utf-8"))
    _atomic_write(simple_dir / "index.json", _root_json(projects).encode("utf-8"))

    state = {
        "files": sorted(names),
        "yanked": yanked,
        "with_metadata": sorted(with_metadata),
        "requires_python": requires_python,
        "base_files_url": base_files_url,
    }
    _atomic_write(root / _STATE_FILE, json.dumps(state, indent=2).encode("utf-8"))


def extend_simple_tree(
    root: Path,
    files: Sequence[Path],
    *,
    yanked: Mapping[str, str] | None = None,
    with_metadata: Collection[str] = frozenset(),
    requires_python: Mapping[str, str] | None = None,
    base_files_url: str | None = None,
) -> None:
    """Publish ``files`` in addition to what is already in the tree at ``root``.

    Options merge with those of the previous write (``yanked`` /
    ``requires_python`` entries override, ``with_metadata`` is unioned,
    ``base_files_url`` kept unless given).  Re-listing an existing filename
    replaces its bytes.  ``extend_simple_tree(root, [], yanked={f: "bad"})``
    yanks an already published file.
    """
    root = Path(root)
    state_path = root / _STATE_FILE
    if state_path.exists():
        state = json.loads(state_path.read_text("utf-8"))
    else:
        state = {"files": [], "yanked": {}, "with_metadata": [], "requires_python": {}}
    new_names = {Path(f).name for f in files}
    merged: list[Path] = [root / "files" / n for n in state["files"] if n not in new_names]
    merged.extend(Path(f) for f in files)
    write_simple_tree(
        root,
        merged,
        yanked={**state["yanked"], **(yanked or {})},
        with_metadata=set(state["with_metadata"]) | set(with_metadata),
        requires_python={**state["requires_python"], **(requires_python or {})},
        base_files_url=(
            base_files_url
            if base_files_url is not None
            else state.get("base_files_url", "../../files/")
        ),
    )
