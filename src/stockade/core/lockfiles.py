"""Read what an environment pins, from lock files, requirement files or an installed environment.

Supported inputs (``kind``):

* ``requirements`` -- pip requirement files (``-r`` includes followed, cycles ignored);
* ``pylock`` -- PEP 751 ``pylock.toml`` / ``pylock.<name>.toml``;
* ``uv.lock`` and ``poetry.lock``;
* ``environment.yml`` -- conda environment files, including their ``pip:`` sub-list;
* ``conda-explicit`` -- ``conda list --explicit`` output (``@EXPLICIT`` followed by URLs);
* ``python-env`` -- an installed Python environment (a venv root or a site-packages directory);
* ``conda-prefix`` -- a conda environment (``conda-meta/*.json``, plus dists pip installed in it).

Every reader returns an :class:`Inventory`: the exact pins (name and version known), the entries
whose version is not pinned (ranges, wildcards, URLs, local paths, editables -- listed, never
guessed) and one warning per entry that was skipped or could not be pinned. With
``details=True`` each entry also carries :class:`Details` (licence, supplier, download location,
purl qualifiers, what it depends on) as far as the input states them: what an SBOM needs.

The module is pure: it reads the files it is given (and, for ``-r`` includes and environments,
the files they name) with bounded reads, and never imports, executes or fetches anything.
Unreadable input raises :class:`~stockade.errors.InvalidRequest` (or its subclass
:class:`~stockade.errors.PayloadTooLarge` for a file over 50 MB).
"""

from __future__ import annotations

import codecs
import email.message
import email.parser
import email.policy
import json
import os
import re
import shlex
import stat
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final

import yaml
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from stockade.core.policy.licenses import license_from_fields, normalize_expression
from stockade.errors import InvalidRequest, PayloadTooLarge

__all__ = [
    "KINDS",
    "MAX_FILE_SIZE",
    "Details",
    "Inventory",
    "Pin",
    "detect_kind",
    "metadata_details",
    "read_inventory",
]

PYPI: Final = "PyPI"
CONDA: Final = "conda"

KINDS: Final = (
    "requirements",
    "pylock",
    "uv.lock",
    "poetry.lock",
    "environment.yml",
    "conda-explicit",
    "python-env",
    "conda-prefix",
)
_FILE_KINDS: Final = frozenset(KINDS[:6])
_DIR_KINDS: Final = frozenset(KINDS[6:])

MAX_FILE_SIZE: Final = 50 * 1024**2
_MAX_METADATA_READ: Final = 1024**2  # METADATA / PKG-INFO headers come first; the body is skipped
_MAX_SMALL_FILE: Final = 64 * 1024  # INSTALLER, direct_url.json
_MAX_INCLUDE_DEPTH: Final = 64

_SUPPORTED: Final = (
    "supported: requirements files (requirements*.txt, *.in), pylock.toml / pylock.<name>.toml, "
    "uv.lock, poetry.lock, conda environment.yml, `conda list --explicit` output, "
    "an installed Python environment (venv or site-packages directory) or a conda prefix"
)
_HINT_FIX: Final = "fix the file (or regenerate it with the tool that wrote it) and retry"
_HINT_TEXT: Final = "save the file as UTF-8 text"


@dataclass(frozen=True, slots=True)
class Details:
    """What the input says about a package beyond its pin (read only when asked for)."""

    version: str | None = None  # the version an unpinned entry states (direct URL install…)
    license: str | None = None  # normalized SPDX expression
    license_raw: str | None = None  # what was declared, kept when it is not an SPDX expression
    supplier: str | None = None  # author or maintainer, "Name <email>"
    summary: str | None = None
    homepage: str | None = None
    download_url: str | None = None
    requires: tuple[str, ...] = ()  # names (same ecosystem) this package depends on
    qualifiers: tuple[tuple[str, str], ...] = ()  # purl qualifiers (conda channel, subdir, build)


@dataclass(frozen=True, slots=True)
class Pin:
    """One package of an environment, pinned (``version`` known) or not."""

    ecosystem: str  # "PyPI" or "conda"
    name: str  # PyPI: canonicalized; conda: lower-case; "" for a URL/path that names nothing
    version: str | None  # None = not pinned (listed separately, never guessed)
    source: str  # "requirements.txt:12", "uv.lock", "lib/python3.11/site-packages/x.dist-info"
    hashes: tuple[str, ...] = ()  # "sha256:<hex>" as given
    spec: str | None = None  # for unpinned entries: the requirement text
    details: Details | None = field(default=None, compare=False)  # read_inventory(details=True)


@dataclass(frozen=True, slots=True)
class Inventory:
    """Everything one lock file or environment pins."""

    kind: str
    pins: tuple[Pin, ...]  # version known; de-duplicated; sorted by (ecosystem, name, version)
    unpinned: tuple[Pin, ...]
    warnings: tuple[str, ...]  # entries skipped or left unpinned, and why


# ------------------------------------------------------------------------------------------------
# Public API
# ------------------------------------------------------------------------------------------------


def detect_kind(path: Path) -> str:
    """Tell which format ``path`` is: by its name, then (for ambiguous names) by its content."""
    if path.is_dir():
        return _detect_dir(path)
    if not path.exists():
        raise InvalidRequest(f"{path} does not exist", "check the path")
    by_name = _kind_by_name(path.name)
    if by_name is not None:
        return by_name
    return _sniff(path, _read_text(path))


def read_inventory(path: Path, kind: str | None = None, *, details: bool = False) -> Inventory:
    """Read the pins of a lock / requirement file, or of an environment directory.

    ``details=True`` also reads what an SBOM needs (:class:`Details` on each pin)."""
    if kind is not None and kind not in KINDS:
        raise InvalidRequest(f"unknown inventory kind {kind!r}", f"use one of {', '.join(KINDS)}")
    if path.is_dir():
        if kind is None:
            kind = _detect_dir(path)
        elif kind not in _DIR_KINDS:
            raise InvalidRequest(
                f"{path} is a directory, but {kind} is read from a file", f"give the {kind} file"
            )
        acc = _Acc(want=details)
        if kind == "conda-prefix":
            _read_conda_prefix(path, acc)
        else:
            _read_python_env(path, acc)
        return acc.inventory(kind)
    if kind in _DIR_KINDS:
        raise InvalidRequest(
            f"{path} is not a directory, but {kind} is read from one",
            "give the environment's root directory (or its site-packages directory)",
        )
    text = _read_text(path)
    if kind is None:
        kind = _kind_by_name(path.name) or _sniff(path, text)
    acc = _Acc(want=details)
    label = path.name
    if kind == "requirements":
        _RequirementsReader(acc, path.parent).read_text(path, text, label)
    elif kind == "pylock":
        _read_pylock(_load_toml(path, text), label, acc)
    elif kind == "uv.lock":
        _read_uv_lock(_load_toml(path, text), label, acc)
    elif kind == "poetry.lock":
        _read_poetry_lock(_load_toml(path, text), label, acc)
    elif kind == "environment.yml":
        _read_environment_yml(path, text, label, acc)
    else:
        _read_conda_explicit(path, text, label, acc)
    return acc.inventory(kind)


# ------------------------------------------------------------------------------------------------
# Accumulator
# ------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Acc:
    pins: dict[tuple[str, str, str], Pin] = field(default_factory=dict)
    unpinned: list[Pin] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    want: bool = False  # read Details too

    def pin(
        self,
        ecosystem: str,
        name: str,
        version: str,
        source: str,
        hashes: Iterable[str] = (),
        details: Details | None = None,
    ) -> None:
        key = (ecosystem, name, version)
        found = self.pins.get(key)
        if found is None:
            self.pins[key] = Pin(
                ecosystem, name, version, source, tuple(dict.fromkeys(hashes)), details=details
            )
        else:  # the same pin twice (e.g. an include): keep the first source, merge the hashes
            merged = tuple(dict.fromkeys((*found.hashes, *hashes)))
            self.pins[key] = Pin(
                ecosystem, name, version, found.source, merged, details=found.details or details
            )

    def loose(
        self,
        ecosystem: str,
        name: str,
        spec: str,
        source: str,
        warning: str | None = None,
        hashes: Iterable[str] = (),
        details: Details | None = None,
    ) -> None:
        self.unpinned.append(
            Pin(ecosystem, name, None, source, tuple(dict.fromkeys(hashes)), spec, details)
        )
        if warning is not None:
            self.warn(warning)

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def inventory(self, kind: str) -> Inventory:
        pins = sorted(self.pins.values(), key=lambda p: (p.ecosystem, p.name, p.version or ""))
        unpinned = sorted(
            dict.fromkeys(self.unpinned),
            key=lambda p: (p.ecosystem, p.name, p.spec or "", p.source),
        )
        return Inventory(kind, tuple(pins), tuple(unpinned), tuple(dict.fromkeys(self.warnings)))


def _pypi_version(text: str) -> str:
    """PEP 440-normalize a version when it is valid, else keep it as given."""
    try:
        return str(Version(text))
    except InvalidVersion:
        return text


# ------------------------------------------------------------------------------------------------
# Reading files
# ------------------------------------------------------------------------------------------------


def _open_regular(path: Path) -> int:
    """Open ``path`` read-only without blocking (FIFOs) and check it is a regular file."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise InvalidRequest(f"{path} does not exist", "check the path") from None
    except OSError as exc:
        raise InvalidRequest(
            f"cannot read {path}: {exc.strerror or exc}", "check the path and its permissions"
        ) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InvalidRequest(
                f"{path} is not a regular file", "give a lock or requirements file"
            )
    except BaseException:
        os.close(fd)
        raise
    return fd


def _read_bytes(path: Path, limit: int = MAX_FILE_SIZE) -> bytes:
    fd = _open_regular(path)
    with os.fdopen(fd, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        data = b"" if size > limit else handle.read(limit + 1)
    if size > limit or len(data) > limit:
        raise PayloadTooLarge(
            f"{path} is larger than {limit // 1024**2} MB; refusing to read it",
            "lock and requirement files are far smaller; check that this is the right file",
        )
    return data


def _read_prefix(path: Path, limit: int) -> bytes | None:
    """Up to ``limit`` bytes of a regular file, or None if it cannot be read."""
    try:
        fd = _open_regular(path)
    except InvalidRequest:
        return None
    try:
        with os.fdopen(fd, "rb") as handle:
            return handle.read(limit)
    except OSError:
        return None


_BOMS: Final = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),  # `pip freeze > requirements.txt` in Windows PowerShell
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def _decode(path: Path, data: bytes) -> str:
    encoding = next((enc for bom, enc in _BOMS if data.startswith(bom)), "utf-8")
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InvalidRequest(f"{path}:{line}: not {encoding.upper()} text", _HINT_TEXT) from None
    if "\x00" in text:
        raise InvalidRequest(f"{path} is binary, not a text file", _SUPPORTED)
    return text


def _read_text(path: Path) -> str:
    return _decode(path, _read_bytes(path))


def _load_toml(path: Path, text: str) -> dict[str, object]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidRequest(f"{path}: not valid TOML: {exc}", _HINT_FIX) from None


def _relative(path: Path, base: Path) -> str:
    try:
        return Path(os.path.relpath(path, base)).as_posix()
    except ValueError:  # another drive on Windows
        return path.as_posix()


# ------------------------------------------------------------------------------------------------
# Detection
# ------------------------------------------------------------------------------------------------

_PYLOCK_NAME_RE: Final = re.compile(r"^pylock\.[^/\\]+\.toml$")


def _kind_by_name(name: str) -> str | None:
    """The kind a file name alone decides (None when the content must be looked at)."""
    lower = name.lower()
    if lower == "uv.lock":
        return "uv.lock"
    if lower == "poetry.lock":
        return "poetry.lock"
    if lower == "pylock.toml" or _PYLOCK_NAME_RE.match(lower):
        return "pylock"
    if lower in ("environment.yml", "environment.yaml"):
        return "environment.yml"
    return None


def _detect_dir(path: Path) -> str:
    return "conda-prefix" if (path / "conda-meta").is_dir() else "python-env"


def _sniff(path: Path, text: str) -> str:
    lower = path.name.lower()
    if _is_explicit(text):
        return "conda-explicit"
    if lower.endswith((".txt", ".in")):
        return "requirements"
    if lower.endswith((".yml", ".yaml")):
        if _looks_like_environment_yml(text):
            return "environment.yml"
    elif (kind := _sniff_toml(text)) is not None:
        return kind
    elif _looks_like_environment_yml(text):
        return "environment.yml"
    elif _looks_like_requirements(text):
        return "requirements"
    raise InvalidRequest(f"cannot tell what kind of file {path} is", _SUPPORTED)


def _is_explicit(text: str) -> bool:
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            return line == "@EXPLICIT"
    return False


def _sniff_toml(text: str) -> str | None:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return None
    if "lock-version" in data and isinstance(data.get("packages", []), list):
        return "pylock"
    if isinstance(data.get("package"), list):
        metadata = data.get("metadata")
        if isinstance(metadata, dict) and "content-hash" in metadata:
            return "poetry.lock"
        if isinstance(data.get("version"), int):
            return "uv.lock"
    return None


def _looks_like_environment_yml(text: str) -> bool:
    if not re.search(r"^dependencies\s*:", text, re.MULTILINE):
        return False
    try:
        return _dependencies_node(yaml.compose(text, Loader=yaml.SafeLoader)) is not None
    except yaml.YAMLError:
        return False


def _looks_like_requirements(text: str) -> bool:
    seen = False
    for _, line in _logical_lines(text):
        if line.startswith("-"):
            continue
        head = line.split(" --", 1)[0].strip()
        try:
            Requirement(head)
        except InvalidRequirement:
            return False
        seen = True
    return seen


# ------------------------------------------------------------------------------------------------
# requirements.txt (pip's format)
# ------------------------------------------------------------------------------------------------

# pip: a comment starts a line or follows whitespace (so `url#egg=x` is no comment).
_COMMENT_RE: Final = re.compile(r"(^|\s+)#.*$")
_URL_RE: Final = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.-]*://|(?:git|hg|svn|bzr)\+|file:)")
_EGG_RE: Final = re.compile(r"[#&]egg=([A-Za-z0-9][A-Za-z0-9._-]*)")
_ARCHIVE_EXTS: Final = (
    ".whl",
    ".tar.gz",
    ".tgz",
    ".tar.bz2",
    ".tbz",
    ".tar.xz",
    ".txz",
    ".tar",
    ".zip",
)
_HASH_RE: Final = re.compile(r"^[A-Za-z0-9_-]+:[0-9A-Fa-f]+$")

# option -> (takes a value, action); actions other than "skip" are handled specially
_OPTIONS: Final[Mapping[str, tuple[bool, str]]] = {
    "-r": (True, "include"),
    "--requirement": (True, "include"),
    "-c": (True, "constraint"),
    "--constraint": (True, "constraint"),
    "-e": (True, "editable"),
    "--editable": (True, "editable"),
    "-i": (True, "skip"),
    "--index-url": (True, "skip"),
    "--extra-index-url": (True, "skip"),
    "--no-index": (False, "skip"),
    "-f": (True, "skip"),
    "--find-links": (True, "skip"),
    "--trusted-host": (True, "skip"),
    "--no-binary": (True, "skip"),
    "--only-binary": (True, "skip"),
    "--prefer-binary": (False, "skip"),
    "--require-hashes": (False, "skip"),
    "--pre": (False, "skip"),
    "--use-feature": (True, "skip"),
    "--config-settings": (True, "skip"),
    "-Z": (False, "skip"),
    "--always-unzip": (False, "skip"),
}


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """pip's preprocessing: join ``\\`` continuations, then drop comments and blank lines."""
    start = 0
    parts: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        is_comment = _COMMENT_RE.match(line) is not None
        if line.endswith("\\") and not is_comment:
            if not parts:
                start = number
            parts.append(line[:-1])
            continue
        if parts:
            parts.append(" " + line if is_comment else line)
            joined, number = "".join(parts), start
            parts = []
        else:
            joined = line
        cleaned = _COMMENT_RE.sub("", joined).strip()
        if cleaned:
            yield number, cleaned
    if parts:
        cleaned = _COMMENT_RE.sub("", "".join(parts)).strip()
        if cleaned:
            yield start, cleaned


def _split_args_options(line: str) -> tuple[str, str]:
    """pip's split: the requirement runs up to the first token starting with ``-``."""
    tokens = line.split(" ")
    for index, token in enumerate(tokens):
        if token.startswith("-"):
            return " ".join(tokens[:index]).strip(), " ".join(tokens[index:]).strip()
    return line.strip(), ""


def _looks_like_path(text: str) -> bool:
    return text.startswith((".", "/", "~")) or "/" in text or "\\" in text


def _is_location(head: str) -> bool:
    """pip's rule: URLs, paths and archive file names are not PEP 508 requirements."""
    if _URL_RE.match(head):
        return True
    before, at, _ = head.partition("@")
    if at:  # `name @ url` is PEP 508 unless the part before the @ looks like a path
        return _looks_like_path(before.strip())
    return _looks_like_path(head) or head.lower().endswith(_ARCHIVE_EXTS)


def _name_from_location(location: str) -> str:
    """A project name a URL or path states itself (``#egg=``, an archive file name), or ""."""
    egg = _EGG_RE.search(location)
    if egg:
        return canonicalize_name(egg.group(1))
    filename = location.split("#", 1)[0].split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    try:
        if filename.endswith(".whl"):
            return str(parse_wheel_filename(filename)[0])
        if filename.endswith((".tar.gz", ".zip")):
            return str(parse_sdist_filename(filename)[0])
    except (InvalidWheelFilename, InvalidSdistFilename):
        pass
    return ""


class _RequirementsReader:
    """Reads one requirements file and its ``-r`` includes into an accumulator."""

    def __init__(self, acc: _Acc, base: Path) -> None:
        self.acc = acc
        self.base = base  # labels of included files are relative to this directory
        self.seen: set[Path] = set()
        self.stack: list[Path] = []

    def read_text(self, path: Path, text: str, label: str) -> None:
        key = path.resolve()
        self.seen.add(key)
        self.stack.append(key)
        try:
            for number, line in _logical_lines(text):
                self.line(line, f"{label}:{number}", path.parent)
        finally:
            self.stack.pop()

    def include(self, target: str, source: str, directory: Path) -> None:
        if _URL_RE.match(target):
            self.acc.warn(f"{source}: -r {target}: remote requirement files are not fetched")
            return
        path = Path(target).expanduser()
        if not path.is_absolute():
            path = directory / path
        key = path.resolve()
        if key in self.stack:
            self.acc.warn(f"{source}: -r {target}: include cycle, already being read")
            return
        if key in self.seen:
            return  # included twice (not a cycle): its pins are in already
        if len(self.stack) >= _MAX_INCLUDE_DEPTH:
            raise InvalidRequest(
                f"{source}: -r {target}: requirement files nest more than "
                f"{_MAX_INCLUDE_DEPTH} deep",
                "flatten the -r includes",
            )
        try:
            text = _read_text(path)
        except InvalidRequest as exc:  # PayloadTooLarge stays PayloadTooLarge
            hint = exc.hint or "fix the include, or scan the file it was meant to name"
            raise type(exc)(f"{source}: -r {target}: {exc.message}", hint) from None
        self.read_text(path, text, _relative(path, self.base))

    def line(self, line: str, source: str, directory: Path) -> None:
        args, options = _split_args_options(line)
        if args:
            self.requirement(args, options, source)
        else:
            self.options(line, source, directory)

    def options(self, line: str, source: str, directory: Path) -> None:
        try:
            tokens = shlex.split(line)
        except ValueError as exc:
            self.acc.warn(f"{source}: {line}: cannot be parsed ({exc}); skipped")
            return
        index = 0
        while index < len(tokens):
            token = tokens[index]
            index += 1
            name, value = token, None
            if token.startswith("--") and "=" in token:
                name, value = token.split("=", 1)
            elif not token.startswith("--") and len(token) > 2 and token[:2] in _OPTIONS:
                name, value = token[:2], token[2:]
            known = _OPTIONS.get(name)
            if known is None:
                self.acc.warn(f"{source}: {line}: unrecognized option {name}; line skipped")
                return
            takes_value, action = known
            if takes_value and value is None:
                if index >= len(tokens):
                    self.acc.warn(f"{source}: {line}: {name} needs a value; line skipped")
                    return
                value = tokens[index]
                index += 1
            if action == "include" and value is not None:
                self.include(value, source, directory)
            elif action == "constraint":
                self.acc.warn(f"{source}: -c {value}: constraints file, installs nothing; not read")
            elif action == "editable" and value is not None:
                self.acc.loose(
                    PYPI,
                    _name_from_location(value),
                    f"-e {value}",
                    source,
                    f"{source}: -e {value}: editable, not a package version",
                )

    def requirement(self, text: str, options: str, source: str) -> None:
        hashes = self.hashes(options, source)
        head = re.split(r"\s;|;\s", text, maxsplit=1)[0].strip()
        if _is_location(head):
            self.acc.loose(
                PYPI,
                _name_from_location(head),
                text,
                source,
                f"{source}: {text}: a direct URL or path, not a package version",
                hashes,
            )
            return
        try:
            req = Requirement(text)
        except InvalidRequirement as exc:
            self.acc.warn(f"{source}: {text}: not a valid requirement ({exc}); skipped")
            return
        name = canonicalize_name(req.name)
        if req.url:
            self.acc.loose(
                PYPI,
                name,
                text,
                source,
                f"{source}: {text}: a direct URL or path, not a package version",
                hashes,
            )
            return
        version = _exact_version(req)
        if version is None:
            self.acc.loose(PYPI, name, text, source, None, hashes)
        else:
            self.acc.pin(PYPI, name, version, source, hashes)

    def hashes(self, options: str, source: str) -> list[str]:
        found: list[str] = []
        if not options:
            return found
        try:
            args = shlex.split(options)
        except ValueError:
            args = options.split()
        index = 0
        while index < len(args):
            arg = args[index]
            index += 1
            if arg == "--hash" and index < len(args):
                value = args[index]
                index += 1
            elif arg.startswith("--hash="):
                value = arg.split("=", 1)[1]
            else:
                continue
            if _HASH_RE.match(value):
                found.append(value)
            else:
                self.acc.warn(f"{source}: --hash={value}: not <algorithm>:<hex>; ignored")
        return found


def _exact_version(req: Requirement) -> str | None:
    """The one version ``req`` allows, when its specifiers name exactly one; else None."""
    specs = list(req.specifier)
    exact = [s for s in specs if s.operator in ("==", "===") and not s.version.endswith(".*")]
    if len(exact) != 1:
        return None
    only = exact[0]
    if only.operator == "===":
        return only.version if len(specs) == 1 else None
    try:
        version = Version(only.version)
    except InvalidVersion:
        return None
    if not req.specifier.contains(version, prereleases=True):
        return None  # e.g. ==1.0,!=1.0: nothing installs
    return str(version)


# ------------------------------------------------------------------------------------------------
# TOML lock files: pylock.toml (PEP 751), uv.lock, poetry.lock
# ------------------------------------------------------------------------------------------------


def _tables(value: object, what: str, label: str) -> list[dict[str, object]]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise InvalidRequest(f"{label}: {what} is not an array of tables", _HINT_FIX)
    return value


def _str(table: Mapping[str, object], key: str) -> str | None:
    value = table.get(key)
    return value if isinstance(value, str) and value.strip() else None


def _entry_name(table: Mapping[str, object], label: str, index: int, acc: _Acc) -> str | None:
    name = _str(table, "name")
    if name is None:
        acc.warn(f"{label}: package #{index + 1} has no name; skipped")
        return None
    return canonicalize_name(name)


def _hash_table(value: object) -> list[str]:
    """PEP 751 ``hashes = {sha256 = "..."}``."""
    if not isinstance(value, dict):
        return []
    return [f"{algo}:{digest}" for algo, digest in value.items() if isinstance(digest, str)]


def _read_pylock(data: dict[str, object], label: str, acc: _Acc) -> None:
    lock_version = data.get("lock-version")
    if not isinstance(lock_version, str):
        raise InvalidRequest(
            f"{label}: no lock-version; not a PEP 751 lock file", "check that this is a pylock.toml"
        )
    if lock_version.split(".", 1)[0] != "1":
        raise InvalidRequest(
            f"{label}: lock-version {lock_version} is not supported (only 1.x is)",
            "export the lock with a tool that writes PEP 751 lock-version 1.0",
        )
    for index, package in enumerate(_tables(data.get("packages"), "packages", label)):
        name = _entry_name(package, label, index, acc)
        if name is None:
            continue
        version = _str(package, "version")
        hashes: list[str] = []
        sdist = package.get("sdist")
        if isinstance(sdist, dict):
            hashes += _hash_table(sdist.get("hashes"))
        for wheel in _tables(package.get("wheels"), f"{name}: wheels", label):
            hashes += _hash_table(wheel.get("hashes"))
        vcs, directory, archive = (
            package.get("vcs"),
            package.get("directory"),
            package.get("archive"),
        )
        if isinstance(directory, dict) and directory.get("path") == ".":
            acc.warn(f"{label}: {name}: the project itself (directory '.'), not scanned")
            continue
        location = None
        if isinstance(vcs, dict):
            url = _str(vcs, "url") or _str(vcs, "path") or "?"
            commit = _str(vcs, "commit-id")
            kind = _str(vcs, "type") or "vcs"
            location = f"{kind}+{url}" + (f"@{commit}" if commit else "")
        elif isinstance(directory, dict):
            location = _str(directory, "path") or "?"
        elif isinstance(archive, dict):
            location = _str(archive, "url") or _str(archive, "path") or "?"
            hashes += _hash_table(archive.get("hashes"))
        stated = f" (states version {version})" if version else ""
        info = None
        if acc.want:
            info = Details(
                version=_pypi_version(version) if version else None,
                download_url=location
                or _first_url(sdist, package.get("wheels"))
                or _str(package, "index"),
                requires=_dependency_names(package.get("dependencies")),
            )
        _add_locked(
            acc, label, name, version, location, hashes, why=f"not from an index{stated}", info=info
        )


def _first_url(sdist: object, wheels: object) -> str | None:
    """The URL of a lock entry's sdist, else of its first wheel."""
    for table in (sdist, *(wheels if isinstance(wheels, list) else ())):
        if isinstance(table, dict) and _str(table, "url"):
            return _str(table, "url")
    return None


def _dependency_names(value: object) -> tuple[str, ...]:
    """Names in a lock's ``dependencies``: an array of tables with ``name`` (pylock, uv.lock)
    or a table keyed by name (poetry.lock)."""
    names: list[str] = []
    if isinstance(value, dict):
        names = [str(key) for key in value]
    elif isinstance(value, list):
        names = [str(v["name"]) for v in value if isinstance(v, dict) and _str(v, "name")]
    return tuple(dict.fromkeys(canonicalize_name(n) for n in names))


def _add_locked(
    acc: _Acc,
    label: str,
    name: str,
    version: str | None,
    location: str | None,
    hashes: tuple[str, ...] | list[str],
    *,
    why: str = "not from an index",
    info: Details | None = None,
) -> None:
    """One locked PyPI package: a pin, or unpinned when it comes from outside an index
    (``why`` says where it comes from instead)."""
    if location is not None:
        acc.loose(
            PYPI,
            name,
            f"{name} @ {location}",
            label,
            f"{label}: {name} @ {location}: {why}, not a package version",
            hashes,
            info,
        )
    elif version is None:
        acc.loose(PYPI, name, name, label, f"{label}: {name}: no version in the lock", hashes, info)
    else:
        acc.pin(PYPI, name, _pypi_version(version), label, hashes, info)


def _read_uv_lock(data: dict[str, object], label: str, acc: _Acc) -> None:
    lock_version = data.get("version")
    if not isinstance(lock_version, int):
        raise InvalidRequest(
            f"{label}: no lock version; not a uv.lock", "regenerate it with `uv lock`"
        )
    if lock_version != 1:
        acc.warn(f"{label}: lock version {lock_version} is newer than this reader knows (1)")
    for index, package in enumerate(_tables(data.get("package"), "package", label)):
        name = _entry_name(package, label, index, acc)
        if name is None:
            continue
        version = _str(package, "version")
        hashes: list[str] = []
        sdist = package.get("sdist")
        if isinstance(sdist, dict) and isinstance(sdist.get("hash"), str):
            hashes.append(str(sdist["hash"]))
        for wheel in _tables(package.get("wheels"), f"{name}: wheels", label):
            if isinstance(wheel.get("hash"), str):
                hashes.append(str(wheel["hash"]))
        raw_source = package.get("source")
        source: dict[str, object] = raw_source if isinstance(raw_source, dict) else {}
        shown = f"{name} {version}" if version else name
        local = _str(source, "editable") or _str(source, "virtual")
        if local is not None:
            how = "editable" if "editable" in source else "virtual"
            if local == ".":
                acc.warn(f"{label}: {shown}: the project itself ({how} source '.'), not scanned")
            else:
                acc.loose(
                    PYPI,
                    name,
                    f"{name} @ {local}",
                    label,
                    f"{label}: {shown}: {how} local source {local}, not a package version",
                )
            continue
        location = None
        if _str(source, "git"):
            location = f"git+{source['git']}"
        else:
            location = _str(source, "url") or _str(source, "path") or _str(source, "directory")
        info = None
        if acc.want:
            info = Details(
                version=_pypi_version(version) if version else None,
                download_url=location or _first_url(sdist, package.get("wheels")),
                requires=_dependency_names(package.get("dependencies")),
            )
        _add_locked(acc, label, name, version, location, hashes, info=info)


_POETRY_NON_INDEX: Final = frozenset({"git", "directory", "file", "url"})


def _read_poetry_lock(data: dict[str, object], label: str, acc: _Acc) -> None:
    metadata = data.get("metadata")
    old_files: dict[str, list[str]] = {}
    if isinstance(metadata, dict) and isinstance(metadata.get("files"), dict):
        for key, entries in metadata["files"].items():
            old_files[canonicalize_name(str(key))] = _poetry_hashes(entries)
    for index, package in enumerate(_tables(data.get("package"), "package", label)):
        name = _entry_name(package, label, index, acc)
        if name is None:
            continue
        version = _str(package, "version")
        hashes = _poetry_hashes(package.get("files")) + old_files.get(name, [])
        source = package.get("source")
        kind = _str(source, "type") if isinstance(source, dict) else None
        info = None
        if acc.want:
            info = Details(
                version=_pypi_version(version) if version else None,
                summary=_str(package, "description"),
                requires=_dependency_names(package.get("dependencies")),
            )
        if isinstance(source, dict) and kind in _POETRY_NON_INDEX:
            url = _str(source, "url") or "?"
            ref = _str(source, "resolved_reference") or _str(source, "reference")
            location = f"git+{url}" + (f"@{ref}" if ref else "") if kind == "git" else url
            if info is not None:
                info = replace(info, download_url=location)
            _add_locked(
                acc, label, name, version, location, hashes, why=f"{kind} source", info=info
            )
        else:
            _add_locked(acc, label, name, version, None, hashes, info=info)


def _poetry_hashes(entries: object) -> list[str]:
    if not isinstance(entries, list):
        return []
    return [
        str(entry["hash"])
        for entry in entries
        if isinstance(entry, dict) and isinstance(entry.get("hash"), str)
    ]


# ------------------------------------------------------------------------------------------------
# conda: environment.yml and explicit locks
# ------------------------------------------------------------------------------------------------

_CONDA_NAME_RE: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")
_CONDA_NOT_EXACT_RE: Final = re.compile(r"[*<>!~|,^$?\s]")
_BRACKET_VERSION_RE: Final = re.compile(r"""(?:^|,)\s*version\s*=\s*["']?([^"',\]]+)["']?""")


def _parse_conda_spec(text: str) -> tuple[str, str | None]:
    """``(name, exact version or None)`` of a conda match spec; ValueError if it is not one.

    ``numpy=1.26.4``, ``numpy==1.26.4``, ``numpy=1.26.4=py311h_0``, ``numpy 1.26.4 py311h_0``
    and ``conda-forge::numpy=1.26.4`` pin; ``numpy``, ``numpy>=1.2`` and ``numpy=1.26.*`` don't.
    """
    spec = text.strip()
    if "::" in spec:
        spec = spec.rsplit("::", 1)[1]
    bracket = ""
    if "[" in spec:
        if not spec.endswith("]"):
            raise ValueError("unbalanced [")
        spec, bracket = spec[:-1].split("[", 1)
    match = _CONDA_NAME_RE.match(spec)
    if match is None:
        raise ValueError("no package name")
    name = match.group(0).lower()
    rest = spec[match.end() :]
    version: str | None
    if rest.startswith("=="):
        version = rest[2:].split("=", 1)[0]
    elif rest.startswith("="):
        version = rest[1:].split("=", 1)[0]
    elif rest[:1].isspace():
        version = rest.split()[0]
    elif rest == "":
        found = _BRACKET_VERSION_RE.search(bracket)
        version = found.group(1).strip() if found else None
    elif rest[0] in "<>!~":
        version = None
    else:
        raise ValueError(f"unexpected {rest[0]!r} after the name")
    if version is not None and (not version or _CONDA_NOT_EXACT_RE.search(version)):
        version = None
    return name, version


def _dependencies_node(root: yaml.Node | None) -> yaml.SequenceNode | None:
    """The ``dependencies:`` sequence of a composed (never constructed) YAML document."""
    found = None
    if isinstance(root, yaml.MappingNode):
        for key, value in root.value:
            if isinstance(key, yaml.ScalarNode) and key.value == "dependencies":
                found = value
    return found if isinstance(found, yaml.SequenceNode) else None


def _read_environment_yml(path: Path, text: str, label: str, acc: _Acc) -> None:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InvalidRequest(f"{path}: not valid YAML{where}: {problem}", _HINT_FIX) from None
    dependencies = _dependencies_node(root)
    if dependencies is None:
        raise InvalidRequest(
            f"{path}: no `dependencies:` list; not a conda environment file",
            "give an environment.yml as written by `conda env export`",
        )
    pip = _RequirementsReader(acc, path.parent)
    pip.seen.add(path.resolve())
    walked: set[int] = set()  # YAML aliases share nodes: read each pip list once
    channels = _channels(root)
    for item in dependencies.value:
        source = f"{label}:{item.start_mark.line + 1}"
        if isinstance(item, yaml.ScalarNode):
            _conda_dependency(item.value, source, acc, channels)
        elif isinstance(item, yaml.MappingNode):
            for key, value in item.value:
                key_text = key.value if isinstance(key, yaml.ScalarNode) else "?"
                if key_text != "pip" or not isinstance(value, yaml.SequenceNode):
                    acc.warn(f"{source}: `{key_text}:` entry is not a dependency; skipped")
                    continue
                if id(value) in walked:  # an alias of a list already read
                    continue
                walked.add(id(value))
                for entry in value.value:
                    entry_source = f"{label}:{entry.start_mark.line + 1}"
                    if not isinstance(entry, yaml.ScalarNode):
                        acc.warn(f"{entry_source}: pip entry is not a string; skipped")
                        continue
                    for _, line in _logical_lines(str(entry.value)):
                        pip.line(line, entry_source, path.parent)
        else:
            acc.warn(f"{source}: dependency is not a string; skipped")


def _conda_dependency(text: str, source: str, acc: _Acc, channels: tuple[str, ...]) -> None:
    try:
        name, version = _parse_conda_spec(text)
    except ValueError as exc:
        acc.warn(f"{source}: {text}: not a conda match spec ({exc}); skipped")
        return
    info = None
    if acc.want:
        channel = text.strip().rsplit("::", 1)[0] if "::" in text else None
        channel = channel or (channels[0] if channels else None)
        info = Details(qualifiers=(("channel", channel),) if channel else ())
    if version is None:
        acc.loose(CONDA, name, text.strip(), source, details=info)
    else:
        acc.pin(CONDA, name, version, source, details=info)


def _channels(root: yaml.Node | None) -> tuple[str, ...]:
    """The ``channels:`` of a composed environment.yml (names or URLs, in order)."""
    if isinstance(root, yaml.MappingNode):
        for key, value in root.value:
            if (
                isinstance(key, yaml.ScalarNode)
                and key.value == "channels"
                and isinstance(value, yaml.SequenceNode)
            ):
                return tuple(str(v.value) for v in value.value if isinstance(v, yaml.ScalarNode))
    return ()


# conda's own pattern for explicit lines: [url/]<name>-<version>-<build>.(conda|tar.bz2)[#hash]
_EXPLICIT_RE: Final = re.compile(
    r"^(?:.*[/\\])?(?P<fn>[^/\\#]+?)(?P<ext>\.conda|\.tar\.bz2)(?:#(?P<checksum>\S*))?$"
)
_MD5_RE: Final = re.compile(r"^[0-9a-fA-F]{32}$")
_SHA256_RE: Final = re.compile(r"^[0-9a-fA-F]{64}$")


def _explicit_hash(checksum: str) -> str | None:
    if _MD5_RE.match(checksum):
        return f"md5:{checksum}"
    if _SHA256_RE.match(checksum):
        return f"sha256:{checksum}"
    for algo, pattern in (("md5", _MD5_RE), ("sha256", _SHA256_RE)):
        for sep in (":", "="):
            prefix = algo + sep
            if checksum.startswith(prefix) and pattern.match(checksum[len(prefix) :]):
                return f"{algo}:{checksum[len(prefix) :]}"
    return None


def _read_conda_explicit(path: Path, text: str, label: str, acc: _Acc) -> None:
    if not _is_explicit(text):
        raise InvalidRequest(
            f"{path}: no @EXPLICIT line; not a `conda list --explicit` file",
            "generate it with `conda list --explicit > explicit.txt`",
        )
    started = False
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not started:
            started = line == "@EXPLICIT"
            continue
        source = f"{label}:{number}"
        match = _EXPLICIT_RE.match(line)
        parts = match.group("fn").rsplit("-", 2) if match else []
        if match is None or len(parts) != 3 or not all(parts):
            acc.warn(f"{source}: {line}: not a conda package URL; skipped")
            continue
        name, version, _build = parts
        hashes: list[str] = []
        checksum = match.group("checksum")
        if checksum:
            found = _explicit_hash(checksum)
            if found is None:
                acc.warn(f"{source}: #{checksum}: not an md5 or sha256 digest; ignored")
            else:
                hashes.append(found)
        info = None
        if acc.want:
            url = line.split("#", 1)[0]
            info = Details(
                download_url=url if _URL_RE.match(url) else None,
                qualifiers=_conda_qualifiers(url, _build, match.group("ext")),
            )
        acc.pin(CONDA, name.lower(), version, source, hashes, info)


_SUBDIR_RE: Final = re.compile(r"^(?:noarch|[a-z0-9]+-[a-z0-9_]+)$")


def _conda_qualifiers(url: str, build: str, ext: str) -> tuple[tuple[str, str], ...]:
    """purl qualifiers of a conda package URL: ``.../<channel>/<subdir>/<file>``."""
    parts = url.replace("\\", "/").split("/")
    found: list[tuple[str, str]] = [("build", build)] if build else []
    if len(parts) >= 3 and _SUBDIR_RE.match(parts[-2]):
        found.append(("subdir", parts[-2]))
        channel = parts[-3]
        if channel and ":" not in channel:
            found.append(("channel", channel))
    found.append(("type", "conda" if ext == ".conda" else "tar.bz2"))
    return tuple(sorted(found))


# ------------------------------------------------------------------------------------------------
# Installed environments
# ------------------------------------------------------------------------------------------------

_SITE_GLOBS: Final = (
    "lib/python3*/site-packages",
    "lib64/python3*/site-packages",
    "lib/pypy3*/site-packages",
    "Lib/site-packages",
)


def _holds_dists(directory: Path) -> bool:
    try:
        with os.scandir(directory) as entries:
            return any(e.name.endswith((".dist-info", ".egg-info")) for e in entries)
    except OSError:
        return False


def _site_packages(root: Path, *, itself: bool = True) -> list[Path]:
    """The site-packages directories of an environment (``root`` itself if it is one)."""
    if itself and (root.name in ("site-packages", "dist-packages") or _holds_dists(root)):
        return [root]
    found: dict[Path, Path] = {}
    for pattern in _SITE_GLOBS:
        for candidate in sorted(root.glob(pattern)):
            if candidate.is_dir():
                found.setdefault(candidate.resolve(), candidate)
    return list(found.values())


@dataclass(frozen=True, slots=True)
class _Dist:
    path: Path  # the .dist-info / .egg-info directory (or legacy .egg-info file)
    metadata: Path


def _dists(site: Path) -> list[_Dist]:
    try:
        with os.scandir(site) as entries:
            names = sorted(e.name for e in entries)
    except OSError:
        return []
    dists: list[_Dist] = []
    for name in names:
        path = site / name
        if name.endswith(".dist-info") and path.is_dir():
            dists.append(_Dist(path, path / "METADATA"))
        elif name.endswith(".egg-info"):
            dists.append(_Dist(path, path / "PKG-INFO" if path.is_dir() else path))
    return dists


def _small_text(path: Path) -> str | None:
    data = _read_prefix(path, _MAX_SMALL_FILE)
    return None if data is None else data.decode("utf-8", "replace")


def _read_dist(dist: _Dist, root: Path, acc: _Acc) -> None:
    source = _relative(dist.path, root)
    data = _read_prefix(dist.metadata, _MAX_METADATA_READ)
    if data is None:
        acc.warn(f"{source}: no readable {dist.metadata.name}; skipped")
        return
    headers = email.parser.Parser(policy=email.policy.compat32).parsestr(
        data.decode("utf-8", "replace"), headersonly=True
    )
    raw_name, raw_version = headers.get("Name"), headers.get("Version")
    if not isinstance(raw_name, str) or not raw_name.strip():
        acc.warn(f"{source}: {dist.metadata.name} has no Name; skipped")
        return
    name = canonicalize_name(raw_name.strip())
    if not isinstance(raw_version, str) or not raw_version.strip():
        acc.loose(PYPI, name, name, source, f"{source}: {dist.metadata.name} has no Version")
        return
    version = _pypi_version(raw_version.strip())
    direct = _direct_url(dist.path / "direct_url.json") if dist.path.is_dir() else None
    info = metadata_details(headers) if acc.want else None
    if direct is not None:
        what, location, hashes = direct
        if info is not None:
            info = replace(info, version=version, download_url=location)
        acc.loose(
            PYPI,
            name,
            f"{'-e ' if what == 'editable' else f'{name} @ '}{location}",
            source,
            f"{source}: {name} {version} installed from {what} {location}, not a package version",
            hashes,
            info,
        )
        return
    acc.pin(PYPI, name, version, source, details=info)


def _person(name: object, email: object) -> str | None:
    parts = [str(v).strip() for v in (name, email) if isinstance(v, str) and v.strip()]
    if len(parts) == 2 and "<" not in parts[1]:
        return f"{parts[0]} <{parts[1]}>"
    return parts[-1] if parts and "<" in parts[-1] else (parts[0] if parts else None)


_HOME_LABELS: Final = ("homepage", "home", "home-page", "source", "repository", "source code")


def metadata_details(headers: Mapping[str, object] | email.message.Message) -> Details:
    """:class:`Details` from core metadata headers (METADATA / PKG-INFO, already parsed)."""
    get_all = getattr(headers, "get_all", None)

    def many(key: str) -> list[str]:
        values = get_all(key) if get_all is not None else None
        return [" ".join(str(v).split()) for v in values or ()]

    def one(key: str) -> str | None:
        value = headers.get(key)
        text = str(value).strip() if value is not None else ""
        return text if text and text.lower() not in ("unknown", "none") else None

    info = license_from_fields(one("License-Expression"), one("License"), many("Classifier"))
    requires: list[str] = []
    for text in many("Requires-Dist"):
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        if req.marker is not None and "extra" in str(req.marker):
            continue  # only with an extra the environment may not have asked for
        requires.append(canonicalize_name(req.name))
    homepage = one("Home-page")
    for entry in many("Project-URL"):
        label, _, url = entry.partition(",")
        if homepage is None and label.strip().lower() in _HOME_LABELS and url.strip():
            homepage = url.strip()
    supplier = _person(one("Author"), one("Author-email")) or _person(
        one("Maintainer"), one("Maintainer-email")
    )
    return Details(
        license=info.expression,
        license_raw=info.raw,
        supplier=supplier,
        summary=one("Summary"),
        homepage=homepage,
        requires=tuple(dict.fromkeys(requires)),
    )


def _direct_url(path: Path) -> tuple[str, str, list[str]] | None:
    """PEP 610: ``(what, location, hashes)`` for a dist installed from a URL, path or VCS,
    else None."""
    text = _small_text(path)
    if text is None:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("url"), str):
        return None
    url = str(data["url"])
    vcs = data.get("vcs_info")
    if isinstance(vcs, dict):
        commit = vcs.get("commit_id")
        where = f"{vcs.get('vcs', 'vcs')}+{url}" + (f"@{commit}" if commit else "")
        return "a VCS", where, []
    directory = data.get("dir_info")
    if isinstance(directory, dict):
        return ("editable" if directory.get("editable") else "a local directory"), url, []
    archive = data.get("archive_info")
    hashes: list[str] = []
    if isinstance(archive, dict):
        hashes = _hash_table(archive.get("hashes"))
        legacy = archive.get("hash")
        if not hashes and isinstance(legacy, str) and "=" in legacy:
            algo, _, digest = legacy.partition("=")
            hashes = [f"{algo}:{digest}"]
    return "a direct URL", url, hashes


def _read_python_env(root: Path, acc: _Acc) -> None:
    sites = _site_packages(root)
    if not sites:
        raise InvalidRequest(
            f"no site-packages directory under {root}",
            "give a virtual environment's root, its site-packages directory or a conda prefix",
        )
    for site in sites:
        for dist in _dists(site):
            _read_dist(dist, root, acc)


def _read_conda_prefix(root: Path, acc: _Acc) -> None:
    meta = root / "conda-meta"
    managed: set[str] = set()
    try:
        records = sorted(p for p in meta.iterdir() if p.name.endswith(".json"))
    except OSError as exc:
        raise InvalidRequest(
            f"cannot list {meta}: {exc.strerror or exc}", "check the path and its permissions"
        ) from None
    for record in records:
        source = f"conda-meta/{record.name}"
        try:
            data = json.loads(_read_text(record))
        except InvalidRequest as exc:
            acc.warn(f"{source}: {exc.message}; skipped")
            continue
        except ValueError as exc:
            acc.warn(f"{source}: not valid JSON ({exc}); skipped")
            continue
        if not isinstance(data, dict):
            acc.warn(f"{source}: not a package record; skipped")
            continue
        name, version = _str(data, "name"), _str(data, "version")
        if name is None or version is None:
            acc.warn(f"{source}: record has no name or version; skipped")
            continue
        hashes = [f"{algo}:{data[algo]}" for algo in ("sha256", "md5") if _str(data, algo)]
        acc.pin(CONDA, name.lower(), version, source, hashes, _conda_record_details(data))
        files = data.get("files")
        if isinstance(files, list):
            managed.update(_dist_dirs(f for f in files if isinstance(f, str)))
    # Python dists conda installed are in the records above; add only those pip (or uv...) put in.
    for site in _site_packages(root, itself=False):
        for dist in _dists(site):
            if _relative(dist.path, root) in managed:
                continue
            installer = _small_text(dist.path / "INSTALLER") if dist.path.is_dir() else None
            if installer is not None and installer.strip() == "conda":
                continue
            _read_dist(dist, root, acc)


def _conda_record_details(data: Mapping[str, object]) -> Details:
    """SBOM facts of one ``conda-meta/*.json`` record."""
    raw = _str(data, "license")
    expression = normalize_expression(raw) if raw else None
    if raw and expression is None:
        expression = license_from_fields(None, raw, ()).expression
    depends = data.get("depends")
    requires = (
        [str(d).split()[0].lower() for d in depends if isinstance(d, str) and d.strip()]
        if isinstance(depends, list)
        else []
    )
    qualifiers: list[tuple[str, str]] = []
    channel = _str(data, "channel")
    if channel:  # a name, or a URL ending in the channel (and sometimes the subdir)
        parts = [p for p in channel.rstrip("/").split("/") if p]
        if parts and _SUBDIR_RE.match(parts[-1]) and len(parts) > 1:
            parts = parts[:-1]
        if parts:
            qualifiers.append(("channel", parts[-1]))
    for key in ("subdir", "build"):
        if _str(data, key):
            qualifiers.append((key, str(data[key])))
    url = _str(data, "url")
    if url:
        qualifiers.append(("type", "conda" if url.endswith(".conda") else "tar.bz2"))
    return Details(
        license=expression,
        license_raw=raw,
        download_url=url,
        requires=tuple(dict.fromkeys(requires)),
        qualifiers=tuple(sorted(qualifiers)),
    )


def _dist_dirs(files: Iterable[str]) -> Iterator[str]:
    """The ``.dist-info`` / ``.egg-info`` entries a conda package's file list installs."""
    for file in files:
        parts = file.replace("\\", "/").split("/")
        for index, part in enumerate(parts):
            if part.endswith((".dist-info", ".egg-info")):
                yield "/".join(parts[: index + 1])
                break
