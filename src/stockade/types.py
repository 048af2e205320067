"""Pure values shared by every layer (stdlib and packaging only)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NewType

from packaging.utils import NormalizedName, canonicalize_name

__all__ = [
    "IndexKind",
    "IndexName",
    "NormalizedName",
    "Scope",
    "Sha256",
    "canonicalize_name",
]

IndexName = NewType("IndexName", str)
Sha256 = NewType("Sha256", str)  # lower-case hex


class IndexKind(enum.StrEnum):
    MIRROR = "mirror"
    PRIVATE = "private"
    VIRTUAL = "virtual"
    CONDA_MIRROR = "conda-mirror"  # a conda channel fetched through from an upstream channel
    CONDA_PRIVATE = "conda-private"  # a hosted conda channel for uploads

    @property
    def is_conda(self) -> bool:
        return self in (IndexKind.CONDA_MIRROR, IndexKind.CONDA_PRIVATE)


class Scope(enum.StrEnum):
    """Token scopes, ordered: each includes the ones before it."""

    READ = "read"
    WRITE = "write"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return {"read": 0, "write": 1, "admin": 2}[self.value]

    def allows(self, needed: Scope) -> bool:
        return self.rank >= needed.rank


@dataclass(frozen=True, slots=True)
class DistMeta:
    """What validation learned from a distribution archive."""

    name: NormalizedName
    display_name: str
    version: str  # normalized PEP 440 string
    packagetype: str  # "bdist_wheel" | "sdist"
    requires_python: str | None
    metadata: bytes  # raw METADATA / PKG-INFO bytes
    summary: str | None = None
