"""Is a version affected? OSV evaluation, as the schema's "Evaluation" section specifies.

A version is affected by an :class:`~stockade.core.vulns.osv.Affected` entry when it is listed in
``versions`` or falls in one of its ECOSYSTEM or SEMVER ``ranges``::

    IncludedInRanges(v, ranges):
      for range in ranges:
        if BeforeLimits(v, range):          # no limit events, or v < some limit ("*" = infinity)
          vulnerable = false
          for evt in sorted(range.events):  # by version; introduced "0" sorts first
            if evt.introduced and v >= evt.introduced:        vulnerable = true
            elif evt.fixed and v >= evt.fixed:                vulnerable = false
            elif evt.last_affected and v > evt.last_affected: vulnerable = false
          if vulnerable: return true

Choices the schema leaves open:

* Versions compare with the ecosystem's ordering (:func:`~stockade.core.vulns.versions.
  scheme_for`); SEMVER ranges use it too, after dropping a leading ``v``. Ecosystems without an
  ordering, and versions the ordering cannot parse, match through ``versions`` only.
* ``versions`` matches by string equality, and on PyPI also by PEP 440 equality (``1.0`` lists
  ``1.0.0``).
* GIT ranges never match a version (they need the repository's commit graph).
* Event values the ordering cannot parse are skipped; the range is evaluated with the rest.
* Events at equal versions keep ``introduced`` first, so ``introduced X, fixed X`` is empty and
  ``introduced X, last_affected X`` is exactly ``X``.
"""

from __future__ import annotations

from typing import Any, Final

from stockade.core.vulns.osv import Affected, Range
from stockade.core.vulns.versions import PYPI, VersionScheme, scheme_for, strip_v

__all__ = ["CompiledAffected", "is_affected"]

_INTRODUCED: Final = 0
_FIXED: Final = 1
_LAST_AFFECTED: Final = 2
_KIND_CODES: Final = {"introduced": _INTRODUCED, "fixed": _FIXED, "last_affected": _LAST_AFFECTED}


class _CompiledRange:
    """One ECOSYSTEM/SEMVER range with its event versions parsed and sorted."""

    __slots__ = ("always_introduced", "events", "limits", "semver", "unlimited")

    def __init__(self, rng: Range, scheme: VersionScheme) -> None:
        self.semver = rng.type == "SEMVER"
        self.always_introduced = False  # an introduced "0": sorts before every version
        parsed: list[tuple[Any, int]] = []
        self.limits: list[Any] = []
        self.unlimited = False  # a limit containing "*" (infinity)
        has_limit = False
        for ev in rng.events:
            value = strip_v(ev.value) if self.semver else ev.value
            if ev.kind == "introduced" and value == "0":
                self.always_introduced = True
                continue
            if ev.kind == "limit" and "*" in value:
                self.unlimited = True
                continue
            try:
                version = scheme.parse(value)
            except ValueError:
                continue  # unparseable event values are skipped
            if ev.kind == "limit":
                has_limit = True
                self.limits.append(version)
            elif ev.kind in _KIND_CODES:
                parsed.append((version, _KIND_CODES[ev.kind]))
        if not has_limit:
            self.unlimited = True  # no limit events: an implicit "*"
        parsed.sort()  # by version, then introduced < fixed < last_affected
        self.events: tuple[tuple[Any, int], ...] = tuple(parsed)

    def contains(self, v: Any) -> bool:
        if not self.unlimited and not any(v < limit for limit in self.limits):
            return False
        vulnerable = self.always_introduced
        for boundary, kind in self.events:
            if v < boundary:
                break  # every later event has a version >= this one: none applies
            if kind == _INTRODUCED:
                vulnerable = True
            elif kind == _FIXED or v > boundary:
                vulnerable = False
        return vulnerable


class CompiledAffected:
    """An :class:`Affected` entry prepared for repeated queries (parsed once, reused)."""

    __slots__ = ("_listed", "_listed_parsed", "_ranges", "_scheme", "affected")

    def __init__(self, affected: Affected) -> None:
        self.affected = affected
        self._scheme = scheme_for(affected.ecosystem)
        self._listed = frozenset(affected.versions)
        listed_parsed: set[Any] = set()
        self._ranges: tuple[_CompiledRange, ...] = ()
        if self._scheme is not None:
            scheme = self._scheme
            if scheme is PYPI:
                for text in affected.versions:
                    try:
                        parsed = scheme.parse(text)
                    except ValueError:
                        continue  # unparseable: still matched by string
                    listed_parsed.add(parsed)
            self._ranges = tuple(
                _CompiledRange(r, scheme)
                for r in affected.ranges
                if r.type in ("ECOSYSTEM", "SEMVER")
            )
        self._listed_parsed = frozenset(listed_parsed)

    def listed(self, version: str) -> bool:
        """``version`` is in the entry's ``versions`` (PyPI: also by PEP 440 equality)."""
        if version in self._listed:
            return True
        if not self._listed_parsed or self._scheme is None:
            return False
        try:
            return self._scheme.parse(version) in self._listed_parsed
        except ValueError:
            return False

    def in_ranges(self, version: str) -> bool:
        """``version`` falls in one of the entry's ECOSYSTEM or SEMVER ranges."""
        if not self._ranges or self._scheme is None:
            return False
        plain: Any = None
        semver: Any = None
        for rng in self._ranges:
            if rng.semver:
                if semver is None:
                    try:
                        semver = self._scheme.parse(strip_v(version))
                    except ValueError:
                        semver = _UNPARSEABLE
                v = semver
            else:
                if plain is None:
                    try:
                        plain = self._scheme.parse(version)
                    except ValueError:
                        plain = _UNPARSEABLE
                v = plain
            if v is not _UNPARSEABLE and rng.contains(v):
                return True
        return False

    def affects(self, version: str) -> bool:
        """OSV's ``IsVulnerable`` for this package entry."""
        return self.listed(version) or self.in_ranges(version)


_UNPARSEABLE: Final = object()


def is_affected(affected: Affected, version: str) -> bool:
    """One-off check; build a :class:`CompiledAffected` to query an entry repeatedly."""
    return CompiledAffected(affected).affects(version)
