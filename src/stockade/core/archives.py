"""Static validation of uploaded Python distributions (wheels and PEP 625 sdists).

Nothing here executes, installs or extracts an archive. A wheel is inspected through its zip
central directory and local headers; an sdist is streamed through ``tarfile`` header by header.
The only member bytes ever decompressed are the core metadata file (``METADATA`` / ``PKG-INFO``)
and the wheel's ``WHEEL`` file, each read with a hard cap, so memory stays bounded whatever the
archive declares. Sizes are checked against the *declared* sizes before anything is skipped, so a
zip or gzip bomb costs no more than the limits allow.

Every failure is a :class:`~stockade.errors.UploadRejected` (malformed or hostile content) or a
:class:`~stockade.errors.PayloadTooLarge` (a configured cap was exceeded); any other exception
raised by ``zipfile``, ``tarfile``, ``gzip`` or ``email`` is converted into ``UploadRejected``.

The module is pure: apart from reading the file at the given path it does no I/O.
"""

from __future__ import annotations

import email.message
import email.parser
import email.policy
import gzip
import io
import os
import re
import stat
import struct
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final, Literal, Self

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    NormalizedName,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from stockade.errors import PayloadTooLarge, StockadeError, UploadRejected
from stockade.types import DistMeta

__all__ = ["ArchiveLimits", "read_wheel_metadata", "validate_distribution"]

_MIB: Final = 1024**2


@dataclass(frozen=True, slots=True)
class ArchiveLimits:
    """Caps applied while inspecting an archive (all sizes in bytes)."""

    max_members: int = 100_000  # real wheels (cmeel-boost, lm-eval) exceed 10k
    max_total_uncompressed: int = 2 * 1024**3  # summed over members
    max_member_size: int = 1024**3
    # uncompressed/compressed, only for members > 1 MiB; deflate peaks near 1032:1 and real
    # wheels ship 600:1 test data (onnx), so only near-pure zero fill is refused
    max_ratio: float = 1000.0
    max_metadata_size: int = 4 * 1024**2


_DEFAULT_LIMITS: Final = ArchiveLimits()

# Members (or, for sdists, whole archives) smaller than this are exempt from the ratio check.
_RATIO_THRESHOLD: Final = 1 * _MIB
# A single pax / GNU long-name header; real ones are a few hundred bytes. Kept small because
# CPython's pax parser uses regular expressions that are quadratic on hostile input.
_MAX_EXT_HEADER: Final = 16 * 1024
_MAX_EXT_HEADERS_TOTAL: Final = 16 * _MIB
# Zero padding tolerated after the tar end-of-archive marker (tar records are 10 KiB).
_MAX_TAR_TRAILER: Final = 1 * _MIB
_MAX_WHEEL_FILE: Final = 64 * 1024
_MAX_FILENAME_LEN: Final = 255
_MAX_MEMBER_NAME_LEN: Final = 4096
_MAX_STEM_LEN: Final = 1024

_PROJECT_NAME_RE: Final = re.compile(
    r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$", re.IGNORECASE | re.ASCII
)
_CONTROL_RE: Final = re.compile(r"[\x00-\x1f\x7f]")
_DRIVE_RE: Final = re.compile(r"^[A-Za-z]:")
_LONG_DIGIT_RUN_RE: Final = re.compile(rb"[0-9]{65}")
_WHEEL_VERSION_RE: Final = re.compile(r"^(\d+)\.(\d+)$", re.ASCII)

# zip compression methods CPython (and so pip) can read: stored, deflate, bzip2, lzma.
_ZIP_METHODS: Final = frozenset({0, 8, 12, 14})
_ZIP_FLAG_ENCRYPTED: Final = 0x1
_ZIP_FLAG_UTF8: Final = 0x800
_ZIP_LOCAL_HEADER: Final = struct.Struct("<4s2B4HL2L2H")
_ZIP_CENTRAL_HEADER_SIZE: Final = 46
_ZIP64_TRAILER_SIZE: Final = 56 + 20  # zip64 end record + zip64 locator

_PAX_TYPES: Final = frozenset({tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE})
_EXT_HEADER_TYPES: Final = _PAX_TYPES | {tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK}
# Raised by tarfile at a clean end of the archive (zero block, or no more data).
_TAR_END_ERRORS: Final[tuple[type[Exception], ...]] = (
    tarfile.EOFHeaderError,  # type: ignore[attr-defined]
    tarfile.EmptyHeaderError,  # type: ignore[attr-defined]
)

_ACCEPTED_TYPES: Final = "wheels (.whl) and PEP 625 source distributions (.tar.gz)"
_HINT_BUILD: Final = "build distributions with `python -m build`, which produces both"
_HINT_WHEEL: Final = (
    "rebuild the wheel with `python -m build --wheel` (or `pip wheel`) instead of assembling "
    "or editing the archive by hand"
)
_HINT_SDIST: Final = (
    "rebuild the sdist with `python -m build --sdist` instead of assembling or editing the "
    "archive by hand"
)
_HINT_SIZE: Final = (
    "remove large data files from the distribution, or ask an administrator to raise the "
    "archive limits"
)
_HINT_METADATA: Final = (
    "the metadata is written by the build backend from pyproject.toml; fix the project "
    "there and rebuild with `python -m build`"
)


# ------------------------------------------------------------------------------------------------
# Public API
# ------------------------------------------------------------------------------------------------


def validate_distribution(
    path: Path,
    filename: str,
    *,
    limits: ArchiveLimits = _DEFAULT_LIMITS,
    expected_name: str | None = None,
    expected_version: str | None = None,
) -> DistMeta:
    """Check an uploaded wheel or sdist without executing or extracting it.

    ``filename`` is the name the client uploaded under (``path`` may be a temporary file).
    ``expected_name`` / ``expected_version`` are the upload form's fields, compared after
    normalization when given. Returns what the archive's core metadata says.

    Raises :class:`UploadRejected` or :class:`PayloadTooLarge` -- and nothing but
    :class:`StockadeError` subclasses -- whatever the file contains.
    """
    try:
        return _validate(path, filename, limits, expected_name, expected_version)
    except StockadeError:
        raise
    except Exception as exc:  # anything the stdlib parsers let slip through
        raise UploadRejected(
            f"{_show(filename)} could not be read as a Python distribution ({_describe(exc)})",
            _HINT_BUILD,
        ) from exc


def read_wheel_metadata(path: Path, filename: str, max_size: int = 4 * 1024**2) -> bytes:
    """Return a wheel's ``.dist-info/METADATA`` bytes (for PEP 658 serving), fully validated."""
    if not filename.endswith(".whl"):
        raise UploadRejected(
            f"{_show(filename)} is not a wheel; only wheels have a METADATA file to serve",
            "PEP 658 metadata is only served for .whl files",
        )
    limits = ArchiveLimits(max_metadata_size=max_size)
    return validate_distribution(path, filename, limits=limits).metadata


# ------------------------------------------------------------------------------------------------
# Orchestration
# ------------------------------------------------------------------------------------------------

_Kind = Literal["wheel", "sdist"]


@dataclass(frozen=True, slots=True)
class _Expected:
    filename: str
    kind: _Kind
    name: NormalizedName
    version: str  # normalized


@dataclass(frozen=True, slots=True)
class _CoreMetadata:
    display_name: str
    version: str
    requires_python: str | None
    summary: str | None


def _validate(
    path: Path,
    filename: str,
    limits: ArchiveLimits,
    expected_name: str | None,
    expected_version: str | None,
) -> DistMeta:
    expected = _parse_filename(filename)
    try:
        fp = path.open("rb")
    except OSError as exc:  # a server-side problem, not the uploader's
        raise StockadeError(
            f"could not open the uploaded file for {_show(filename)}: {exc.strerror or exc}"
        ) from exc
    with fp:
        if expected.kind == "wheel":
            raw, label = _scan_wheel(fp, expected, limits)
        else:
            raw, label = _scan_sdist(fp, expected, limits)
    core = _parse_core_metadata(raw, label, expected)
    _check_form_fields(core, expected_name, expected_version)
    return DistMeta(
        name=canonicalize_name(core.display_name),
        display_name=core.display_name,
        version=core.version,
        packagetype="bdist_wheel" if expected.kind == "wheel" else "sdist",
        requires_python=core.requires_python,
        metadata=raw,
        summary=core.summary,
    )


def _parse_filename(filename: str) -> _Expected:
    if (
        not filename
        or any(ch in filename for ch in "/\\\x00")
        or filename.startswith(".")
        or _CONTROL_RE.search(filename)
    ):
        raise UploadRejected(
            f"invalid filename {_show(filename)}: it must be a plain file name, without '/', "
            "'\\', NUL or control characters, and must not start with '.'",
            "upload the file under the name the build tool gave it",
        )
    if len(filename) > _MAX_FILENAME_LEN:
        raise UploadRejected(
            f"filename {_show(filename)} is longer than {_MAX_FILENAME_LEN} characters",
            "shorten the project name or version",
        )
    if filename.endswith(".whl"):
        try:
            name, version, _build, _tags = parse_wheel_filename(filename)
        except (InvalidWheelFilename, InvalidVersion) as exc:
            raise UploadRejected(
                f"invalid wheel filename {_show(filename)}: {exc}",
                "expected {name}-{version}(-{build tag})?-{python tag}-{abi tag}-{platform tag}"
                ".whl, e.g. foo_bar-1.0-py3-none-any.whl; " + _HINT_WHEEL,
            ) from None
        name_part = filename.split("-", 1)[0]
        kind: _Kind = "wheel"
    elif filename.endswith(".tar.gz"):
        try:
            name, version = parse_sdist_filename(filename)
        except (InvalidSdistFilename, InvalidVersion) as exc:
            raise UploadRejected(
                f"invalid sdist filename {_show(filename)}: {exc}",
                "expected {name}-{version}.tar.gz with a PEP 440 version, e.g. "
                "foo_bar-1.0.tar.gz; " + _HINT_SDIST,
            ) from None
        name_part = filename[: -len(".tar.gz")].rpartition("-")[0]
        kind = "sdist"
    else:
        raise UploadRejected(
            f"unsupported file type {_show(filename)}: only {_ACCEPTED_TYPES} are accepted",
            _HINT_BUILD,
        )
    if not _PROJECT_NAME_RE.match(name_part):
        raise UploadRejected(
            f"invalid {kind} filename {_show(filename)}: {name_part!r} is not a valid project "
            "name (ASCII letters, digits, '.', '_' and '-', starting and ending with a letter "
            "or digit)",
            _HINT_BUILD,
        )
    return _Expected(filename=filename, kind=kind, name=name, version=str(version))


# ------------------------------------------------------------------------------------------------
# Helpers shared by both formats
# ------------------------------------------------------------------------------------------------


def _show(text: str, limit: int = 200) -> str:
    """repr() of client-controlled text, cut short so messages stay readable."""
    if len(text) > limit:
        return repr(text[:limit]) + "..."
    return repr(text)


def _describe(exc: BaseException) -> str:
    detail = str(exc)
    if len(detail) > 200:
        detail = detail[:200] + "..."
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def _name_problem(name: str, *, allow_trailing_slash: bool) -> str | None:
    """What is unsafe about an archive member name, or None if it is fine."""
    if not name:
        return "has an empty name"
    if "\x00" in name:
        return "has a NUL byte in its name"
    if _CONTROL_RE.search(name):
        return "has a control character in its name"
    if "\\" in name:
        return "contains a backslash (Windows path separator) in its name"
    if name.startswith("/"):
        return "is an absolute path"
    if _DRIVE_RE.match(name):
        return "is an absolute path (it starts with a drive letter)"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "has a name that is not valid UTF-8"
    if len(name) > _MAX_MEMBER_NAME_LEN:
        return f"has a name longer than {_MAX_MEMBER_NAME_LEN} characters"
    parts = name.split("/")
    if allow_trailing_slash and len(parts) > 1 and parts[-1] == "":
        parts.pop()
    if ".." in parts:
        return "contains a '..' path component (path traversal)"
    if "" in parts or "." in parts:
        return "is not a normalized path (it has an empty or '.' component)"
    return None


def _version_str(text: str) -> str | None:
    try:
        return str(Version(text))
    except InvalidVersion:
        return None


def _stem_matches(stem: str, name: NormalizedName, version: str) -> bool:
    """Whether ``stem`` is ``{name}-{version}`` for the given normalized name and version."""
    if len(stem) > _MAX_STEM_LEN:
        return False
    pos = stem.find("-")
    while pos > 0:
        if canonicalize_name(stem[:pos]) == name and _version_str(stem[pos + 1 :]) == version:
            return True
        pos = stem.find("-", pos + 1)
    return False


def _check_sizes(
    filename: str,
    member: str,
    size: int,
    running_total: int,
    limits: ArchiveLimits,
) -> None:
    if size > limits.max_member_size:
        raise PayloadTooLarge(
            f"{filename}: member {_show(member)} is {_size(size)} uncompressed, more than the "
            f"{_size(limits.max_member_size)} limit per member",
            _HINT_SIZE,
        )
    if running_total > limits.max_total_uncompressed:
        raise PayloadTooLarge(
            f"{filename}: members add up to more than {_size(limits.max_total_uncompressed)} "
            f"uncompressed (limit exceeded at member {_show(member)})",
            _HINT_SIZE,
        )


def _parse_headers(data: bytes, label: str, filename: str) -> email.message.Message:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UploadRejected(
            f"{filename}: {label} is not valid UTF-8 (bad byte at offset {exc.start})",
            "core metadata must be UTF-8 encoded; " + _HINT_METADATA,
        ) from None
    parser = email.parser.Parser(policy=email.policy.compat32)
    return parser.parsestr(text, headersonly=True)


def _single_field(msg: email.message.Message, field: str, label: str, filename: str) -> str | None:
    values = msg.get_all(field) or []
    if len(values) > 1:
        raise UploadRejected(
            f"{filename}: {label} has {len(values)} {field} fields; exactly one is allowed",
            _HINT_METADATA,
        )
    if not values:
        return None
    value = str(values[0]).strip()
    return value or None


def _parse_core_metadata(data: bytes, label: str, expected: _Expected) -> _CoreMetadata:
    filename = expected.filename
    msg = _parse_headers(data, label, filename)

    display_name = _single_field(msg, "Name", label, filename)
    if display_name is None:
        raise UploadRejected(f"{filename}: {label} has no Name field", _HINT_METADATA)
    if not _PROJECT_NAME_RE.match(display_name):
        raise UploadRejected(
            f"{filename}: {label} declares Name {_show(display_name)}, which is not a valid "
            "project name",
            _HINT_METADATA,
        )
    if canonicalize_name(display_name) != expected.name:
        raise UploadRejected(
            f"{filename}: {label} declares Name {_show(display_name)}, but the filename is "
            f"for project {expected.name!r} (names are compared after normalization)",
            "rename the file to match the metadata, or fix the project name and rebuild",
        )

    raw_version = _single_field(msg, "Version", label, filename)
    if raw_version is None:
        raise UploadRejected(f"{filename}: {label} has no Version field", _HINT_METADATA)
    version = _version_str(raw_version)
    if version is None:
        raise UploadRejected(
            f"{filename}: {label} declares Version {_show(raw_version)}, which is not a valid "
            "PEP 440 version",
            _HINT_METADATA,
        )
    if version != expected.version:
        raise UploadRejected(
            f"{filename}: {label} declares Version {_show(raw_version)}, but the filename is "
            f"for version {expected.version!r} (versions are compared after normalization)",
            "rename the file to match the metadata, or fix the version and rebuild",
        )

    requires_python = _single_field(msg, "Requires-Python", label, filename)
    if requires_python is not None:
        try:
            SpecifierSet(requires_python)
        except InvalidSpecifier:
            raise UploadRejected(
                f"{filename}: {label} declares Requires-Python {_show(requires_python)}, which "
                "is not a valid version specifier",
                "use a PEP 440 specifier such as '>=3.9'; " + _HINT_METADATA,
            ) from None

    summary = msg.get("Summary")
    summary_text = str(summary).strip() if summary is not None else ""
    return _CoreMetadata(
        display_name=display_name,
        version=version,
        requires_python=requires_python,
        summary=summary_text or None,
    )


def _check_form_fields(
    core: _CoreMetadata, expected_name: str | None, expected_version: str | None
) -> None:
    hint = "the upload client must send the name and version from the distribution's metadata"
    if expected_name is not None and canonicalize_name(expected_name) != canonicalize_name(
        core.display_name
    ):
        raise UploadRejected(
            f"form field name {_show(expected_name)} does not match the file's metadata name "
            f"{_show(core.display_name)}",
            hint,
        )
    if expected_version is not None:
        form_version = _version_str(expected_version.strip())
        if form_version is None:
            raise UploadRejected(
                f"form field version {_show(expected_version)} is not a valid PEP 440 version",
                hint,
            )
        if form_version != core.version:
            raise UploadRejected(
                f"form field version {_show(expected_version)} does not match the file's "
                f"metadata version {core.version!r}",
                hint,
            )


# ------------------------------------------------------------------------------------------------
# Wheels
# ------------------------------------------------------------------------------------------------


def _not_a_zip(filename: str, exc: BaseException | None = None) -> UploadRejected:
    detail = f" ({_describe(exc)})" if exc is not None else ""
    return UploadRejected(
        f"{filename} is not a valid zip archive{detail}",
        "the upload may have been truncated or corrupted; " + _HINT_WHEEL,
    )


def _scan_wheel(fp: BinaryIO, expected: _Expected, limits: ArchiveLimits) -> tuple[bytes, str]:
    filename = expected.filename
    try:
        _precheck_zip_directory(fp, filename, limits)
        zf = zipfile.ZipFile(fp)
    except StockadeError:
        raise
    except Exception as exc:
        raise _not_a_zip(filename, exc) from exc
    with zf:
        try:
            infos = zf.infolist()
            files = _check_zip_members(infos, filename, limits)
            _check_zip_layout(fp, infos, zf.start_dir, filename)
            dist_info = _find_dist_info(infos, expected)
            metadata_label = f"{dist_info}/METADATA"
            metadata_info = files.get(metadata_label)
            if metadata_info is None:
                raise UploadRejected(
                    f"{filename}: the wheel has no {metadata_label} file",
                    _HINT_WHEEL,
                )
            wheel_info = files.get(f"{dist_info}/WHEEL")
            if wheel_info is None:
                raise UploadRejected(
                    f"{filename}: the wheel has no {dist_info}/WHEEL file",
                    _HINT_WHEEL,
                )
            _check_wheel_file(_read_zip_member(zf, wheel_info, _MAX_WHEEL_FILE, filename), filename)
            data = _read_zip_member(zf, metadata_info, limits.max_metadata_size, filename)
        except StockadeError:
            raise
        except Exception as exc:
            raise _not_a_zip(filename, exc) from exc
    return data, metadata_label


def _precheck_zip_directory(fp: BinaryIO, filename: str, limits: ArchiveLimits) -> None:
    """Count central-directory entries before ``zipfile`` builds an object for each one.

    ``zipfile.ZipFile`` materialises the whole directory up front, so a tiny file with millions
    of entries would cost a lot of memory. Structural problems are left for ``zipfile`` to report.
    """
    end_rec_data: Callable[[BinaryIO], list[object] | None] | None = getattr(
        zipfile, "_EndRecData", None
    )
    if end_rec_data is None:  # pragma: no cover - future CPython
        return
    endrec = end_rec_data(fp)
    if not endrec:
        return
    signature, entries, size_cd, location = endrec[0], endrec[4], endrec[5], endrec[9]
    if not (isinstance(entries, int) and isinstance(size_cd, int) and isinstance(location, int)):
        return
    too_many = PayloadTooLarge(
        f"{filename}: the wheel has more than {limits.max_members} members",
        _HINT_SIZE,
    )
    if entries > limits.max_members:
        raise too_many
    start = location - size_cd - (_ZIP64_TRAILER_SIZE if signature == b"PK\x06\x06" else 0)
    if start < 0:
        return
    fp.seek(start)
    consumed = count = 0
    while consumed < size_cd:
        header = fp.read(_ZIP_CENTRAL_HEADER_SIZE)
        if len(header) != _ZIP_CENTRAL_HEADER_SIZE or header[:4] != b"PK\x01\x02":
            break
        name_len, extra_len, comment_len = struct.unpack_from("<3H", header, 28)
        variable = name_len + extra_len + comment_len
        consumed += _ZIP_CENTRAL_HEADER_SIZE + variable
        count += 1
        if count > limits.max_members:
            raise too_many
        fp.seek(variable, os.SEEK_CUR)
    fp.seek(0)


def _check_zip_members(
    infos: list[zipfile.ZipInfo], filename: str, limits: ArchiveLimits
) -> dict[str, zipfile.ZipInfo]:
    """Per-member checks; returns the regular files by name."""
    if len(infos) > limits.max_members:
        raise PayloadTooLarge(
            f"{filename}: the wheel has {len(infos)} members, more than the limit of "
            f"{limits.max_members}",
            _HINT_SIZE,
        )
    if not infos:
        raise UploadRejected(f"{filename}: the zip archive is empty", _HINT_WHEEL)
    seen: set[str] = set()
    files: dict[str, zipfile.ZipInfo] = {}
    total = 0
    for info in infos:
        name = info.orig_filename  # .filename is cut at the first NUL byte
        shown = _show(name)
        problem = _name_problem(name, allow_trailing_slash=True)
        if problem is not None:
            raise UploadRejected(f"{filename}: member {shown} {problem}", _HINT_WHEEL)
        key = name.rstrip("/")
        if key in seen:
            raise UploadRejected(
                f"{filename}: member {shown} appears more than once in the zip archive "
                "(duplicate entries let different tools see different files)",
                _HINT_WHEEL,
            )
        seen.add(key)
        file_type = stat.S_IFMT(info.external_attr >> 16)
        if file_type == stat.S_IFLNK:
            raise UploadRejected(
                f"{filename}: member {shown} is a symbolic link; links are not allowed in wheels",
                "replace the link with a copy of the file; " + _HINT_WHEEL,
            )
        if file_type not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise UploadRejected(
                f"{filename}: member {shown} is a special file (device, FIFO or socket)",
                _HINT_WHEEL,
            )
        if info.flag_bits & _ZIP_FLAG_ENCRYPTED:
            raise UploadRejected(
                f"{filename}: member {shown} is encrypted; wheels must not be encrypted",
                _HINT_WHEEL,
            )
        if info.compress_type not in _ZIP_METHODS:
            raise UploadRejected(
                f"{filename}: member {shown} uses unsupported zip compression method "
                f"{info.compress_type}",
                "wheels may only use stored, deflate, bzip2 or lzma compression; " + _HINT_WHEEL,
            )
        total += info.file_size
        _check_sizes(filename, name, info.file_size, total, limits)
        if info.file_size > _RATIO_THRESHOLD:
            ratio = info.file_size / max(info.compress_size, 1)
            if ratio > limits.max_ratio:
                raise PayloadTooLarge(
                    f"{filename}: member {shown} expands {ratio:.0f}-fold "
                    f"({_size(info.compress_size)} to {_size(info.file_size)}), more than the "
                    f"{limits.max_ratio:g}:1 limit for members over 1 MiB (possible zip bomb)",
                    _HINT_SIZE,
                )
        if not name.endswith("/"):
            files[name] = info
    return files


def _check_zip_layout(
    fp: BinaryIO, infos: list[zipfile.ZipInfo], start_dir: int, filename: str
) -> None:
    """Local headers must agree with the central directory and members must not overlap."""
    ordered = sorted(infos, key=lambda info: info.header_offset)
    for index, info in enumerate(ordered):
        shown = _show(info.orig_filename)
        fp.seek(info.header_offset)
        header = fp.read(_ZIP_LOCAL_HEADER.size)
        if len(header) != _ZIP_LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
            raise UploadRejected(
                f"{filename}: member {shown} has no valid local file header",
                "the upload may have been truncated or corrupted; " + _HINT_WHEEL,
            )
        fields = _ZIP_LOCAL_HEADER.unpack(header)
        flags, name_len, extra_len = fields[3], fields[10], fields[11]
        raw_name = fp.read(name_len)
        try:
            local_name = raw_name.decode("utf-8" if flags & _ZIP_FLAG_UTF8 else "cp437")
        except UnicodeDecodeError:
            local_name = None
        if local_name != info.orig_filename:
            raise UploadRejected(
                f"{filename}: member {shown} is called "
                f"{_show(raw_name.decode('utf-8', 'backslashreplace'))} in its local "
                "file header; the central directory and local headers disagree, which lets "
                "different tools see different files",
                _HINT_WHEEL,
            )
        data_end = info.header_offset + _ZIP_LOCAL_HEADER.size + name_len + extra_len
        data_end += info.compress_size
        if index + 1 < len(ordered):
            following = ordered[index + 1]
            limit, what = following.header_offset, f"member {_show(following.orig_filename)}"
        else:
            limit, what = start_dir, "the zip central directory"
        if data_end > limit:
            raise UploadRejected(
                f"{filename}: member {shown} overlaps {what} (overlapping entries are a zip "
                "bomb and smuggling technique)",
                _HINT_WHEEL,
            )


def _find_dist_info(infos: list[zipfile.ZipInfo], expected: _Expected) -> str:
    filename = expected.filename
    tops = {info.orig_filename.split("/", 1)[0] for info in infos if "/" in info.orig_filename}
    dirs = sorted(top for top in tops if top.endswith(".dist-info"))
    if not dirs:
        raise UploadRejected(
            f"{filename}: the wheel has no top-level .dist-info directory (so no METADATA)",
            _HINT_WHEEL,
        )
    if len(dirs) > 1:
        raise UploadRejected(
            f"{filename}: the wheel has {len(dirs)} top-level .dist-info directories "
            f"({', '.join(_show(d) for d in dirs[:5])}); exactly one is allowed",
            _HINT_WHEEL,
        )
    dist_info = dirs[0]
    if not _stem_matches(dist_info[: -len(".dist-info")], expected.name, expected.version):
        raise UploadRejected(
            f"{filename}: the wheel's metadata directory {_show(dist_info)} does not match the "
            f"filename's project {expected.name!r} version {expected.version!r}",
            "rename the file to match its contents, or " + _HINT_WHEEL,
        )
    return dist_info


def _read_zip_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, cap: int, filename: str) -> bytes:
    shown = _show(info.orig_filename)
    if info.file_size > cap:
        raise PayloadTooLarge(
            f"{filename}: member {shown} is {_size(info.file_size)}, more than the "
            f"{_size(cap)} allowed for it",
            _HINT_SIZE,
        )
    try:
        with zf.open(info) as member:
            data = member.read(cap + 1)  # never trust the declared size
    except Exception as exc:
        raise UploadRejected(
            f"{filename}: member {shown} could not be decompressed ({_describe(exc)})",
            "the upload may have been truncated or corrupted; " + _HINT_WHEEL,
        ) from exc
    if len(data) > cap:
        raise PayloadTooLarge(
            f"{filename}: member {shown} is more than the {_size(cap)} allowed for it",
            _HINT_SIZE,
        )
    return data


def _check_wheel_file(data: bytes, filename: str) -> None:
    label = "WHEEL"
    msg = _parse_headers(data, label, filename)
    value = _single_field(msg, "Wheel-Version", label, filename)
    match = _WHEEL_VERSION_RE.match(value or "")
    if match is None or match.group(1) != "1":
        raise UploadRejected(
            f"{filename}: the WHEEL file has Wheel-Version {value!r}; only 1.x is supported",
            _HINT_WHEEL,
        )


# ------------------------------------------------------------------------------------------------
# Sdists
# ------------------------------------------------------------------------------------------------


class _ArchiveProblem(Exception):
    """Raised from inside tarfile callbacks; turned into a StockadeError with the filename."""

    def __init__(
        self, message: str, hint: str, *, too_large: bool = False, corrupt: bool = False
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.too_large = too_large
        self.corrupt = corrupt


class _TarStream:
    """The decompressed tar stream, with a push-back buffer so headers can be inspected first."""

    def __init__(self, raw: gzip.GzipFile) -> None:
        self._raw = raw
        self._pending = b""

    def read(self, size: int = -1, /) -> bytes:
        if size < 0:  # tarfile always asks for a bounded amount; never slurp a bomb
            raise io.UnsupportedOperation("unbounded reads are not supported")
        if not self._pending:
            return self._raw.read(size)
        head, self._pending = self._pending[:size], self._pending[size:]
        if len(head) < size:
            head += self._raw.read(size - len(head))
        return head

    def peek(self, size: int) -> bytes:
        data = self.read(size)
        self._pending = data + self._pending
        return data

    def tell(self) -> int:
        return self._raw.tell() - len(self._pending)

    def seek(self, pos: int, whence: int = io.SEEK_SET, /) -> int:
        if whence != io.SEEK_SET:
            raise io.UnsupportedOperation("only absolute seeks are supported")
        here = self.tell()
        if here <= pos <= self._raw.tell():
            self._pending = self._pending[pos - here :]
            return pos
        self._pending = b""
        return self._raw.seek(pos)

    def write(self, data: bytes, /) -> int:
        raise io.UnsupportedOperation("read-only stream")

    def close(self) -> None:
        """The underlying file is closed by its owner."""


def _check_pax_records(data: bytes, offset: int) -> None:
    """Validate a pax extended header strictly and in linear time, before tarfile parses it.

    CPython's own pax parser is regex-based and quadratic on long digit runs, and it reads GNU
    sparse maps of attacker-chosen length; both are refused here.
    """
    bad = _ArchiveProblem(
        f"the pax extended header at offset {offset} of the tar stream is malformed",
        _HINT_SDIST,
    )
    if _LONG_DIGIT_RUN_RE.search(data):
        raise bad
    pos, end = 0, len(data)
    path: bytes | None = None
    sparse = False
    while pos < end:
        space = data.find(b" ", pos, pos + 21)
        if space <= pos or not data[pos:space].isdigit():
            raise bad
        record_end = pos + int(data[pos:space])
        if record_end <= space + 1 or record_end > end or data[record_end - 1] != 0x0A:
            raise bad
        equals = data.find(b"=", space + 1, record_end - 1)
        if equals <= space + 1:
            raise bad
        keyword = data[space + 1 : equals]
        if keyword == b"path":
            path = data[equals + 1 : record_end - 1]
        sparse = sparse or keyword.startswith(b"GNU.sparse.")
        pos = record_end
    if sparse:
        where = (
            f"member {_show(path.decode('utf-8', 'backslashreplace'))}"
            if path is not None
            else f"the member at offset {offset} of the tar stream"
        )
        raise _ArchiveProblem(
            f"{where} is a sparse file; sparse files are not allowed", _HINT_SDIST
        )


class _GuardedTarInfo(tarfile.TarInfo):
    """TarInfo that refuses oversized extension headers and sparse files before reading them."""

    @classmethod
    def fromtarfile(cls, tarfile_: tarfile.TarFile) -> Self:
        try:
            return super().fromtarfile(tarfile_)
        except _TAR_END_ERRORS:
            raise
        except tarfile.HeaderError as exc:  # tarfile would silently stop iterating
            raise _ArchiveProblem(
                f"corrupt tar header: {exc}",
                "the upload may have been truncated or corrupted; " + _HINT_SDIST,
                corrupt=True,
            ) from None

    def _proc_member(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise _ArchiveProblem(
                f"member {_show(self.name)} is a sparse file; sparse files are not allowed",
                _HINT_SDIST,
            )
        if self.type in _EXT_HEADER_TYPES:
            if self.size > _MAX_EXT_HEADER:
                raise _ArchiveProblem(
                    f"the pax/GNU extended header at offset {self.offset} of the tar stream is "
                    f"{_size(self.size)}, more than the {_size(_MAX_EXT_HEADER)} allowed",
                    _HINT_SDIST,
                    too_large=True,
                )
            if not isinstance(tarfile_, _GuardedTarFile) or not isinstance(
                tarfile_.fileobj, _TarStream
            ):
                raise TypeError("_GuardedTarInfo needs a _GuardedTarFile over a _TarStream")
            tarfile_.ext_header_bytes += self.size
            if tarfile_.ext_header_bytes > _MAX_EXT_HEADERS_TOTAL:
                raise _ArchiveProblem(
                    f"pax/GNU extended headers add up to more than {_size(_MAX_EXT_HEADERS_TOTAL)}",
                    _HINT_SDIST,
                    too_large=True,
                )
            if self.type in _PAX_TYPES:
                _check_pax_records(tarfile_.fileobj.peek(self.size), self.offset)
        result: tarfile.TarInfo = super()._proc_member(tarfile_)  # type: ignore[misc]
        return result


class _GuardedTarFile(tarfile.TarFile):
    tarinfo = _GuardedTarInfo
    ext_header_bytes: int = 0


def _not_a_tar(filename: str, exc: BaseException) -> UploadRejected:
    return UploadRejected(
        f"{filename} is not a valid gzip-compressed tar archive ({_describe(exc)})",
        "the upload may have been truncated or corrupted; " + _HINT_SDIST,
    )


def _scan_sdist(fp: BinaryIO, expected: _Expected, limits: ArchiveLimits) -> tuple[bytes, str]:
    filename = expected.filename
    compressed_size = max(os.fstat(fp.fileno()).st_size, 1)
    try:
        with gzip.GzipFile(fileobj=fp, mode="rb") as gz:
            stream = _TarStream(gz)
            with _GuardedTarFile(
                fileobj=stream, mode="r", encoding="utf-8", errors="surrogateescape"
            ) as tf:
                data, label = _scan_tar_members(tf, stream, expected, limits, compressed_size)
            _check_tar_trailer(stream, filename)
    except StockadeError:
        raise
    except _ArchiveProblem as problem:
        if problem.corrupt:
            message = f"{filename} is not a valid gzip-compressed tar archive ({problem.message})"
        else:
            message = f"{filename}: {problem.message}"
        error = PayloadTooLarge if problem.too_large else UploadRejected
        raise error(message, problem.hint) from None
    except Exception as exc:
        raise _not_a_tar(filename, exc) from exc
    return data, label


def _scan_tar_members(
    tf: _GuardedTarFile,
    stream: _TarStream,
    expected: _Expected,
    limits: ArchiveLimits,
    compressed_size: int,
) -> tuple[bytes, str]:
    filename = expected.filename
    top: str | None = None
    seen: set[str] = set()
    total = 0
    pkg_info: bytes | None = None
    for count, member in enumerate(tf, start=1):
        if count > limits.max_members:
            raise PayloadTooLarge(
                f"{filename}: the sdist has more than {limits.max_members} members",
                _HINT_SIZE,
            )
        name = member.name
        shown = _show(name)
        problem = _name_problem(name, allow_trailing_slash=False)
        if problem is not None:
            raise UploadRejected(f"{filename}: member {shown} {problem}", _HINT_SDIST)
        if member.issym() or member.islnk():
            kind = "symbolic" if member.issym() else "hard"
            raise UploadRejected(
                f"{filename}: member {shown} is a {kind} link (to {_show(member.linkname)}); "
                "links are not allowed in sdists",
                "replace the link with a copy of the file; " + _HINT_SDIST,
            )
        if member.ischr() or member.isblk() or member.isfifo():
            raise UploadRejected(
                f"{filename}: member {shown} is a device or FIFO; only regular files and "
                "directories are allowed in sdists",
                _HINT_SDIST,
            )
        if not (member.isreg() or member.isdir()) or member.sparse is not None:
            raise UploadRejected(
                f"{filename}: member {shown} has unsupported tar entry type {member.type!r}; "
                "only regular files and directories are allowed in sdists",
                _HINT_SDIST,
            )
        first, _, rest = name.partition("/")
        if top is None:
            if not _stem_matches(first, expected.name, expected.version):
                raise UploadRejected(
                    f"{filename}: member {shown} is not inside a top-level directory named "
                    f"after the file (expected {filename[: -len('.tar.gz')]!r}/)",
                    _HINT_SDIST,
                )
            top = first
        elif first != top:
            raise UploadRejected(
                f"{filename}: member {shown} is outside the top-level directory {top!r}/; an "
                "sdist must contain a single top-level directory",
                _HINT_SDIST,
            )
        if not rest and not member.isdir():
            raise UploadRejected(
                f"{filename}: member {shown} must be the top-level directory, not a file",
                _HINT_SDIST,
            )
        if name in seen:
            raise UploadRejected(
                f"{filename}: member {shown} appears more than once in the tar archive "
                "(later copies silently replace earlier ones on extraction)",
                _HINT_SDIST,
            )
        seen.add(name)
        total += member.size
        _check_sizes(filename, name, member.size, total + tf.ext_header_bytes, limits)
        if total > _RATIO_THRESHOLD and total / compressed_size > limits.max_ratio:
            raise PayloadTooLarge(
                f"{filename}: the sdist expands more than {limits.max_ratio:g}-fold "
                f"({_size(compressed_size)} to over {_size(total)}, limit exceeded at member "
                f"{shown}; possible gzip bomb)",
                _HINT_SIZE,
            )
        if rest == "PKG-INFO" and member.isreg():
            pkg_info = _read_tar_member(stream, member, limits.max_metadata_size, filename)
    if top is None:
        raise UploadRejected(f"{filename}: the tar archive is empty", _HINT_SDIST)
    label = f"{top}/PKG-INFO"
    if pkg_info is None:
        raise UploadRejected(
            f"{filename}: the sdist has no {label} file",
            "PKG-INFO holds the core metadata; " + _HINT_SDIST,
        )
    return pkg_info, label


def _read_tar_member(stream: _TarStream, member: tarfile.TarInfo, cap: int, filename: str) -> bytes:
    if member.size > cap:
        raise PayloadTooLarge(
            f"{filename}: member {_show(member.name)} is {_size(member.size)}, more than the "
            f"{_size(cap)} allowed for it",
            _HINT_SIZE,
        )
    stream.seek(member.offset_data)
    data = stream.read(member.size)
    if len(data) != member.size:
        raise UploadRejected(
            f"{filename}: member {_show(member.name)} is truncated",
            "the upload may have been truncated or corrupted; " + _HINT_SDIST,
        )
    return data


def _check_tar_trailer(stream: _TarStream, filename: str) -> None:
    """Read to the end of the gzip stream: verifies its checksum and finds hidden trailing data."""
    trailer = 0
    while chunk := stream.read(64 * 1024):
        trailer += len(chunk)
        if trailer > _MAX_TAR_TRAILER or chunk.strip(b"\x00"):
            raise UploadRejected(
                f"{filename}: there is unexpected data after the end of the tar archive (non-zero "
                f"bytes, or more than {_size(_MAX_TAR_TRAILER)} of padding)",
                _HINT_SDIST,
            )
