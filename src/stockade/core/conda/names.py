"""conda file names and subdirs (pure string rules, no I/O)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from stockade.errors import InvalidRequest

EXTENSIONS = (".conda", ".tar.bz2")
_SUBDIR_RE = re.compile(r"^(noarch|[a-z0-9]+-[a-z0-9_]+)$")
_PART_RE = re.compile(r"^[A-Za-z0-9_.+!]+$")  # version and build: no '-'
_NAME_RE = re.compile(r"^[a-z0-9_][a-z0-9_.\-]*$")
COMMON_SUBDIRS = (
    "noarch",
    "linux-64",
    "linux-aarch64",
    "linux-ppc64le",
    "osx-64",
    "osx-arm64",
    "win-64",
)


@dataclass(frozen=True, slots=True)
class CondaFilename:
    name: str
    version: str
    build: str
    ext: str  # ".conda" or ".tar.bz2"

    @property
    def filename(self) -> str:
        return f"{self.name}-{self.version}-{self.build}{self.ext}"


def check_subdir(subdir: str) -> str:
    if not _SUBDIR_RE.match(subdir):
        raise InvalidRequest(
            f"{subdir!r} is not a conda subdir",
            "use noarch or a platform such as linux-64, osx-arm64, win-64",
        )
    return subdir


def parse_subdirs(text: str) -> list[str]:
    """``"noarch,linux-64"`` → ``["noarch", "linux-64"]`` (checked, de-duplicated, in order)."""
    out: list[str] = []
    for part in text.split(","):
        s = part.strip()
        if s and check_subdir(s) not in out:
            out.append(s)
    if not out:
        raise InvalidRequest("no subdirs given", "--subdirs noarch,linux-64")
    return out


def parse_filename(filename: str) -> CondaFilename | None:
    """``name-version-build.conda`` → parts, or None when it is not a conda package name."""
    if "/" in filename or "\\" in filename:
        return None
    ext = next((e for e in EXTENSIONS if filename.endswith(e)), None)
    if ext is None:
        return None
    stem = filename[: -len(ext)]
    parts = stem.rsplit("-", 2)
    if len(parts) != 3:
        return None
    name, version, build = parts
    if not (_NAME_RE.match(name) and _PART_RE.match(version) and _PART_RE.match(build)):
        return None
    return CondaFilename(name, version, build, ext)


def require_filename(filename: str) -> CondaFilename:
    parsed = parse_filename(filename)
    if parsed is None:
        raise InvalidRequest(
            f"{filename!r} is not a conda package file name",
            "conda packages are named NAME-VERSION-BUILD.conda or NAME-VERSION-BUILD.tar.bz2",
        )
    return parsed
