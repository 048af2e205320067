"""Version orderings per ecosystem, for evaluating OSV ranges.

Two schemes exist: :data:`PYPI` (PEP 440, through ``packaging``) and :data:`CONDA` (conda's
``VersionOrder``, reimplemented here in pure Python). Every other ecosystem has no scheme:
:func:`scheme_for` returns ``None`` and callers match such records by their explicit ``versions``
list only.

conda's ordering, as conda documents it:

* ``N!`` is an epoch (default 0), ``+local`` a local version compared only on a tie;
* the rest is split into components at ``.`` and ``_`` (``-`` counts as ``_`` when the string has
  no ``_``), and each component into runs of digits and non-digits; digits become integers and
  strings are lower-cased; a component that starts with a letter gets a leading ``0`` so that
  ``1.1.a1 == 1.1.0a1``; a trailing ``_`` stays attached to the last component (openssl-like
  ``1.1.1_ < 1.1.1a``);
* sub-components compare as: strings < integers, ``dev`` < every other string, ``post`` >
  everything; strings compare case-insensitively; a missing sub-component or component counts as
  ``0``, so ``1.1 == 1.1.0``.
"""

from __future__ import annotations

import re
from functools import lru_cache
from itertools import zip_longest
from typing import Any, Final, Protocol

from packaging.version import Version

__all__ = ["CONDA", "PYPI", "CondaVersion", "VersionScheme", "scheme_for", "strip_v"]


class VersionScheme(Protocol):
    """Parses version strings of one ecosystem into totally ordered values."""

    @property
    def name(self) -> str: ...

    def parse(self, v: str) -> Any:
        """Parse ``v``; raise :class:`ValueError` when it is not a version of this scheme."""
        ...


def strip_v(v: str) -> str:
    """Drop one leading ``v``/``V`` in front of a digit (``v1.2.3`` -> ``1.2.3``)."""
    if len(v) > 1 and v[0] in "vV" and v[1].isdigit():
        return v[1:]
    return v


# --- PyPI -------------------------------------------------------------------------------------


@lru_cache(maxsize=8192)
def _parse_pypi(v: str) -> Version:
    return Version(v)  # InvalidVersion is a ValueError


class _PyPIScheme:
    __slots__ = ()

    @property
    def name(self) -> str:
        return "PyPI"

    def parse(self, v: str) -> Version:
        return _parse_pypi(v)

    def __repr__(self) -> str:
        return "PYPI"


# --- conda ------------------------------------------------------------------------------------

# A sub-component: int (digits), float("inf") ("post"), or str (lower-case; "dev" -> "DEV", which
# sorts before every lower-case string and "_").
_Part = int | float | str
_Component = tuple[_Part, ...]

_VALID: Final = re.compile(r"[.+!_0-9a-z]+")
_RUNS: Final = re.compile(r"[0-9]+|[^0-9]+")
_POST: Final = float("inf")
_DEV: Final = "DEV"


def _split_component(text: str, original: str) -> _Component:
    runs = _RUNS.findall(text)
    if not runs:
        raise ValueError(f"invalid conda version {original!r}: empty version component")
    parts: list[_Part] = []
    for run in runs:
        if run.isdigit():
            parts.append(int(run))
        elif run == "post":
            parts.append(_POST)
        elif run == "dev":
            parts.append(_DEV)
        else:
            parts.append(run)
    if not text[0].isdigit():
        parts.insert(0, 0)  # keep numbers and strings in phase: 1.1.a1 == 1.1.0a1
    return tuple(parts)


def _canonical(components: list[_Component]) -> tuple[_Component, ...]:
    """Strip the implicit zero padding, so equal versions have equal representations."""
    out = []
    for comp in components:
        end = len(comp)
        while end and comp[end - 1] == 0:
            end -= 1
        out.append(comp[:end])
    while out and not out[-1]:
        out.pop()
    return tuple(out)


def _part_lt(a: _Part, b: _Part) -> bool:
    if isinstance(a, str):
        return a < b if isinstance(b, str) else True  # strings sort before numbers
    if isinstance(b, str):
        return False
    return a < b


def _seq_lt(x: tuple[_Component, ...], y: tuple[_Component, ...]) -> bool | None:
    """``True`` if x < y, ``False`` if x > y, ``None`` if equal (missing parts count as 0)."""
    for cx, cy in zip_longest(x, y, fillvalue=()):
        for a, b in zip_longest(cx, cy, fillvalue=0):
            if a == b:
                continue
            return _part_lt(a, b)
    return None


class CondaVersion:
    """A parsed conda version; compares like ``conda.models.version.VersionOrder``."""

    __slots__ = ("_key", "_local", "_version", "text")

    def __init__(self, text: str) -> None:
        original = text
        version = text.strip().lower()
        if not version:
            raise ValueError("invalid conda version: empty string")
        if not _VALID.fullmatch(version) and "-" in version and "_" not in version:
            version = version.replace("-", "_")
        if not _VALID.fullmatch(version):
            raise ValueError(f"invalid conda version {original!r}: invalid character(s)")

        epoch_split = version.split("!")
        if len(epoch_split) > 2:
            raise ValueError(f"invalid conda version {original!r}: duplicated epoch separator")
        if len(epoch_split) == 2:
            if not epoch_split[0].isdigit():
                raise ValueError(f"invalid conda version {original!r}: epoch must be an integer")
            epoch = int(epoch_split[0])
        else:
            epoch = 0

        local_split = epoch_split[-1].split("+")
        if len(local_split) > 2:
            raise ValueError(f"invalid conda version {original!r}: duplicated local separator")
        main = local_split[0]
        if not main:
            raise ValueError(f"invalid conda version {original!r}: missing version")
        if main.endswith("_"):
            # openssl-like: a trailing underscore stays on the last component (1.1.1_ < 1.1.1a)
            texts = main[:-1].replace("_", ".").split(".")
            texts[-1] += "_"
        else:
            texts = main.replace("_", ".").split(".")
        components = [(epoch,)] + [_split_component(t, original) for t in texts]
        local: list[_Component] = []
        if len(local_split) == 2:
            local = [
                _split_component(t, original) for t in local_split[1].replace("_", ".").split(".")
            ]
        self.text = original
        self._version = _canonical(components)
        self._local = _canonical(local)
        self._key = (self._version, self._local)

    def _cmp(self, other: CondaVersion) -> int:
        lt = _seq_lt(self._version, other._version)
        if lt is None:
            lt = _seq_lt(self._local, other._local)
        if lt is None:
            return 0
        return -1 if lt else 1

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CondaVersion):
            return NotImplemented
        return self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)

    def __lt__(self, other: CondaVersion) -> bool:
        return self._cmp(other) < 0

    def __le__(self, other: CondaVersion) -> bool:
        return self._cmp(other) <= 0

    def __gt__(self, other: CondaVersion) -> bool:
        return self._cmp(other) > 0

    def __ge__(self, other: CondaVersion) -> bool:
        return self._cmp(other) >= 0

    def __repr__(self) -> str:
        return f"CondaVersion({self.text!r})"

    def __str__(self) -> str:
        return self.text


@lru_cache(maxsize=8192)
def _parse_conda(v: str) -> CondaVersion:
    return CondaVersion(v)


class _CondaScheme:
    __slots__ = ()

    @property
    def name(self) -> str:
        return "conda"

    def parse(self, v: str) -> CondaVersion:
        return _parse_conda(v)

    def __repr__(self) -> str:
        return "CONDA"


PYPI: Final[VersionScheme] = _PyPIScheme()
CONDA: Final[VersionScheme] = _CondaScheme()

_SCHEMES: Final[dict[str, VersionScheme]] = {"pypi": PYPI, "conda": CONDA}


def scheme_for(ecosystem: str) -> VersionScheme | None:
    """The ordering of ``ecosystem`` (case-insensitive), or ``None`` when Stockade has none."""
    return _SCHEMES.get(ecosystem.lower())
