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

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from itertools import chain
from typing import Any, Final

from packaging.version import Version

from stockade.core.vulns.osv import Affected, Range
from stockade.core.vulns.versions import PYPI, VersionScheme, scheme_for, strip_v

__all__ = ["CompiledAffected", "VersionBatch", "is_affected"]

_INTRODUCED: Final = 0
_FIXED: Final = 1
_LAST_AFFECTED: Final = 2
_KIND_CODES: Final = {"introduced": _INTRODUCED, "fixed": _FIXED, "last_affected": _LAST_AFFECTED}


def _cmp_key(v: Any) -> Any:
    """What a parsed version sorts by, cheap to compare: a PEP 440 version's own key tuple
    (``Version.__lt__`` compares exactly these), else the version itself. Bisections over a
    page's versions compare keys, which is several times faster than ``Version.__lt__``."""
    return v._key if isinstance(v, Version) else v


class _CompiledRange:
    """One ECOSYSTEM/SEMVER range with its event versions parsed and sorted."""

    __slots__ = ("always_introduced", "event_keys", "events", "limits", "semver", "unlimited")

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
        self.event_keys: tuple[tuple[Any, int], ...] = tuple(
            (_cmp_key(v), kind) for v, kind in parsed
        )

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

    def spans(self, ordered: Sequence[Any]) -> list[tuple[int, int]]:
        """The slices ``[lo, hi)`` of the sorted versions that ``contains()``; ``ordered`` holds
        their comparison keys (:func:`_cmp_key`), as :meth:`VersionBatch.ordered` gives them.

        Piecewise evaluation: between two event versions the state is what every earlier event
        left; at an event version ``last_affected`` has not ended it yet. Bisecting each piece
        costs O(events x log versions) instead of one walk over the events per version.
        """
        n = len(ordered)
        end = n
        if not self.unlimited:
            if not self.limits:
                return []
            end = bisect_left(ordered, _cmp_key(max(self.limits)))
        out: list[tuple[int, int]] = []

        def add(lo: int, hi: int) -> None:
            hi = min(hi, end)
            if lo < hi:
                out.append((lo, hi))

        state = self.always_introduced  # before the first event
        lo = 0
        events = self.event_keys
        i = 0
        while i < len(events):
            boundary = events[i][0]
            at = bisect_left(ordered, boundary)
            if state:
                add(lo, at)
            equal = state  # v == boundary: last_affected does not end it yet
            after = state  # v > boundary: every event at it applies
            while i < len(events) and events[i][0] == boundary:
                kind = events[i][1]
                if kind == _INTRODUCED:
                    equal = after = True
                elif kind == _FIXED:
                    equal = after = False
                else:
                    after = False
                i += 1
            past = bisect_right(ordered, boundary, lo=at)
            if equal:
                add(at, past)
            state, lo = after, past
        if state:
            add(lo, n)
        return out


class VersionBatch:
    """The versions of one package, parsed once and sorted, for :meth:`CompiledAffected.
    matching`: every advisory entry of the package is then checked with a few bisections
    instead of a comparison per version."""

    __slots__ = ("_plain", "_semver", "by_parsed", "by_text", "scheme", "versions")
    # by_parsed: PEP 440 comparison key (:func:`_cmp_key`) -> indices of equal versions

    def __init__(self, scheme: VersionScheme | None, versions: Sequence[str]) -> None:
        self.scheme = scheme
        self.versions = tuple(versions)
        self.by_text: dict[str, int] = {v: i for i, v in enumerate(self.versions)}
        self.by_parsed: dict[Any, list[int]] = {}
        self._plain: tuple[list[Any], list[int]] | None = None
        self._semver: tuple[list[Any], list[int]] | None = None
        if scheme is not None:
            self._plain = self._sorted(scheme, self.versions, self.by_parsed, scheme is PYPI)

    @staticmethod
    def _sorted(
        scheme: VersionScheme,
        texts: Sequence[str],
        by_parsed: dict[Any, list[int]] | None = None,
        index_parsed: bool = False,
    ) -> tuple[list[Any], list[int]]:
        """(comparison keys in order, the version index of each)."""
        parsed: list[tuple[Any, int]] = []
        for i, text in enumerate(texts):
            try:
                v = scheme.parse(text)
            except ValueError:
                continue  # unparseable: matched through ``versions`` only
            key = _cmp_key(v)
            if index_parsed and by_parsed is not None:
                by_parsed.setdefault(key, []).append(i)
            parsed.append((key, i))
        parsed.sort(key=lambda pair: pair[0])
        return [k for k, _ in parsed], [i for _, i in parsed]

    def ordered(self, semver: bool) -> tuple[list[Any], list[int]]:
        if not semver or self.scheme is None:
            return self._plain or ([], [])
        if self._semver is None:
            self._semver = self._sorted(self.scheme, [strip_v(v) for v in self.versions])
        return self._semver


class CompiledAffected:
    """An :class:`Affected` entry prepared for repeated queries (parsed once, reused)."""

    __slots__ = ("_listed", "_listed_keys", "_listed_parsed", "_ranges", "_scheme", "affected")

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
        self._listed_keys = frozenset(_cmp_key(p) for p in listed_parsed)

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

    def matching(self, batch: VersionBatch) -> set[int]:
        """Indices of ``batch.versions`` this entry affects: ``affects()`` for all at once.

        ``batch`` must have been built with this entry's scheme.
        """
        # set intersections and lookups mapped in C rather than a Python step per listed
        # version: PyPA entries list hundreds of versions each
        by_text = batch.by_text
        hits: set[int] = set(map(by_text.__getitem__, self._listed & by_text.keys()))
        if self._listed_keys:
            by_parsed = batch.by_parsed
            found = self._listed_keys & by_parsed.keys()
            hits.update(chain.from_iterable(map(by_parsed.__getitem__, found)))
        for rng in self._ranges:
            ordered, index = batch.ordered(rng.semver)
            for lo, hi in rng.spans(ordered):
                hits.update(index[lo:hi])
        return hits

    @property
    def scheme(self) -> VersionScheme | None:
        return self._scheme


_UNPARSEABLE: Final = object()


def is_affected(affected: Affected, version: str) -> bool:
    """One-off check; build a :class:`CompiledAffected` to query an entry repeatedly."""
    return CompiledAffected(affected).affects(version)
