"""The license rule: what a file's core metadata says its license is, and whether that license
passes an index's allow/deny lists. Pure: no I/O. SPDX expressions are parsed and normalized
with ``license-expression`` (its SPDX license list, built once, lazily).

Reading the license (:func:`license_from_fields`, :func:`license_from_metadata`)
--------------------------------------------------------------------------------
The first of these that yields a license wins:

1. ``License-Expression`` (PEP 639), normalized: ``mit or apache-2.0`` → ``MIT OR Apache-2.0``,
   deprecated ids → current ones (``GPL-2.0+`` → ``GPL-2.0-or-later``). When the field is present
   but is not a valid SPDX expression the license is *unknown* (``expression=None``, ``raw`` and
   ``source`` set): a broken PEP 639 field is reported, not papered over with the classifiers.
2. ``License``, when it is a valid SPDX id or expression; or a spelling in
   :data:`LICENSE_ALIASES` (compared after light normalization: case, spacing, a leading "The",
   a trailing "License"/"Licence", a trailing parenthesis such as "(MIT)"); or, when the field
   spans several lines, a full license text whose first line(s) are a known title (see
   :data:`_TITLES`: "MIT License", "Apache License / Version 2.0", "BSD 3-Clause License", the GNU
   licenses with their version, ...). A text that starts otherwise (e.g. a copyright line, then
   "Permission is hereby granted...") is not guessed at. An unrecognized License field falls
   through to the classifiers.
3. ``Classifier: License :: ...`` through :data:`CLASSIFIER_LICENSES`. Several license
   classifiers are combined with OR (a package listing MIT and Apache classifiers is
   dual-licensed). Classifiers mapped to ``None`` (too vague, or categories such as bare
   ``License :: OSI Approved``) and unlisted ones are left out; leaving out a choice of an OR can
   only make the check stricter. When only such classifiers are present the license is unknown.

``UNKNOWN``, ``None`` and empty values (any case) count as absent.

Decisions for spellings without a precise version (the same in both tables):

* A version without "or later" maps to ``-only`` (``GPLv3`` → ``GPL-3.0-only``): what was said.
* GPL/LGPL/AGPL with no version at all map to ``-or-later`` of the first version (``GPL`` →
  ``GPL-1.0-or-later``, ``LGPL`` → ``LGPL-2.0-or-later``, ``AGPL`` → ``AGPL-3.0-or-later``):
  these licenses say that when no version is specified, any version ever published may be used.
  A deny entry ``GPL-*`` catches them all.
* ``BSD License`` / ``BSD`` → ``BSD-3-Clause``: the classifier does not tell 2- from 3-clause;
  3-clause is by far the most common on PyPI and the stricter of the two (it adds the
  non-endorsement clause), so this never makes a package look more permissive than BSD-2-Clause.
* ``Apache Software License`` / ``Apache`` → ``Apache-2.0`` (1.x is not in use on PyPI),
  ``Zope Public License`` → ``ZPL-2.1`` (what Zope Foundation packages use), ``Artistic License``
  → ``Artistic-2.0`` (the version OSI recommends), ``Public Domain`` →
  ``LicenseRef-Public-Domain`` (SPDX has no id for it), ``Other/Proprietary License`` and the
  non-free "Free For ... Use"/"Freeware" classifiers → ``LicenseRef-Proprietary``.
* Left unknown (``None``): AFL, Apple, Eiffel, FDL, Netscape, GUST, Repoze, Jabber, CVW (several
  versions with different terms, or no SPDX id), "DFSG approved", "Freely Distributable".

Hostile metadata: only the first :data:`MAX_FIELD_CHARS` characters of a field are looked at, an
expression longer than that, with control characters or nested deeper than
:data:`MAX_DEPTH` is unknown, ``raw`` is truncated to :data:`MAX_RAW_CHARS` with control
characters (but newline and tab) replaced by U+FFFD; nothing here raises on bad input.

Checking it (:class:`LicenseMatcher`)
-------------------------------------
Allow and deny entries are SPDX license ids (case-insensitive; normalized like expressions, so
``gpl-2.0`` means ``GPL-2.0-only``), ``X WITH Y`` terms, SPDX expressions, or globs over license
ids (``GPL-*``, ``AGPL-*``, ``*-only``, ``LicenseRef-Acme-*``: one id pattern with ``*`` and
``?``, matched case-insensitively with fnmatch). ``LicenseRef-*`` ids are accepted as written.
Anything else raises ``ValueError("<entry>: <why>")`` — including a glob that matches no SPDX id
(a typo such as ``GLP-*``) unless it starts with a wildcard or ``LicenseRef-``.

An expression is expanded into its *choices* (disjunctive normal form): ``A OR B`` offers two
choices, ``A AND B`` is one choice that needs both, ``(A OR B) AND C`` is ``A AND C`` or ``B AND
C``. A ``X WITH Y`` term counts as license ``X`` for ids and globs (deny ``GPL-2.0-only`` catches
``GPL-2.0-only WITH Classpath-exception-2.0``), while an entry written as ``X WITH Y`` matches only
that exact term. An entry that is itself an expression stands for its choices: a choice of the
checked license is *denied* by it when the choice contains all the terms of one of the entry's
choices (for a plain id: contains that id), and a term is *allowed* by it when one of the
entry's choices that the checked choice contains includes the term (for a plain id: the term is
that id). So allow ``MIT AND BSD-2-Clause`` accepts exactly that combination, not MIT alone.

Verdict: a choice is acceptable when nothing in it is denied and — if the allow-list is not
empty — every term in it is allowed. The deny-list is checked first: ``denied`` when every choice
has a denied term; else ``not_allowed`` when no remaining choice is fully allowed; else ``ok``.
No license (``None``) or an expression that does not parse is ``unknown``, as is one with more
than :data:`MAX_ALTERNATIVES` choices (so hostile metadata cannot blow up time or memory).

Parsing is cached (:func:`_parse_cached`, an lru_cache keyed by the expression string) and each
matcher caches its verdicts, so checking thousands of files that share a few dozen expressions
costs little more than dict lookups.
"""

from __future__ import annotations

import email.policy
import fnmatch
import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email.parser import HeaderParser
from typing import Any, Final

import license_expression  # type: ignore[import-untyped]

__all__ = [
    "CLASSIFIER_LICENSES",
    "LICENSE_ALIASES",
    "MAX_ALTERNATIVES",
    "LicenseInfo",
    "LicenseMatcher",
    "LicenseVerdict",
    "license_from_fields",
    "license_from_metadata",
    "normalize_expression",
]

MAX_ALTERNATIVES: Final = 64  # choices (DNF terms) of one expression
MAX_FIELD_CHARS: Final = 10_000  # what is looked at of a field; longer expressions are unknown
MAX_RAW_CHARS: Final = 2_000  # what LicenseInfo.raw keeps
MAX_DEPTH: Final = 32  # parentheses
_MAX_METADATA_CHARS: Final = 4_000_000  # the header block of a METADATA / PKG-INFO file
_MAX_SHORT_FIELD: Final = 1_000  # a one-line License field longer than this is not an expression
_MAX_CACHED_CHARS: Final = 1_000  # longer strings are parsed/checked without caching
_VERDICT_CACHE_SIZE: Final = 4_096
_MAX_CLASSIFIERS: Final = 1_000

SOURCE_EXPRESSION: Final = "License-Expression"
SOURCE_LICENSE: Final = "License"
SOURCE_CLASSIFIER: Final = "classifier"

_ABSENT: Final = frozenset({"", "unknown", "none"})
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # all but \t and \n
_CONTROL_IN_EXPRESSION = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # \t\n\r = space
_LICENSE_REF = re.compile(
    r"(?:DocumentRef-([A-Za-z0-9.\-]+):)?LicenseRef-([A-Za-z0-9.\-]+)", re.IGNORECASE
)
_GLOB = re.compile(r"[A-Za-z0-9.+:\-*?]+")


# -- results ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LicenseInfo:
    """The license a file's metadata declares."""

    expression: str | None  # normalized SPDX expression, e.g. "MIT OR Apache-2.0"; None: unknown
    raw: str | None  # what the metadata said (the field value, or the classifiers joined by "; ")
    source: str | None  # "License-Expression" | "License" | "classifier" | None


@dataclass(frozen=True, slots=True)
class LicenseVerdict:
    """The license rule's answer for one expression."""

    status: str  # "ok" | "denied" | "not_allowed" | "unknown"
    message: str  # one line a user reads


# -- SPDX parsing -------------------------------------------------------------------------------

_Term = tuple[str, str | None]  # (license id, exception id or None), as normalized
_Choice = tuple[_Term, ...]


@dataclass(frozen=True, slots=True)
class _Parsed:
    expression: str | None  # normalized; None when the text is not a valid SPDX expression
    choices: tuple[_Choice, ...] | None  # DNF; None when invalid or too many
    error: str | None  # why expression or choices is None


class _Invalid(Exception):
    pass


@functools.cache
def _licensing() -> Any:
    """The SPDX Licensing object: built on first use, once (building and the tokenizer's
    automaton take a while)."""
    return license_expression.get_spdx_licensing()


@functools.cache
def _known_license_ids() -> tuple[str, ...]:
    """Lower-cased SPDX license ids (not exceptions), to reject globs that match nothing."""
    symbols: dict[str, Any] = _licensing().known_symbols
    return tuple(key.lower() for key, sym in symbols.items() if not sym.is_exception)


def normalize_expression(expression: str) -> str | None:
    """The normalized form of an SPDX expression, or None when it is not one."""
    return _parse(expression).expression


def _parse(text: str) -> _Parsed:
    if len(text) <= _MAX_CACHED_CHARS:
        return _parse_cached(text)
    return _parse_uncached(text)


@functools.lru_cache(maxsize=2_048)
def _parse_cached(text: str) -> _Parsed:
    return _parse_uncached(text)


def _parse_uncached(text: str) -> _Parsed:
    if len(text) > MAX_FIELD_CHARS:
        return _Parsed(None, None, f"it is longer than {MAX_FIELD_CHARS} characters")
    if _CONTROL_IN_EXPRESSION.search(text):
        return _Parsed(None, None, "it contains control characters")
    text = " ".join(text.split())
    if not text:
        return _Parsed(None, None, "it is empty")
    depth = deepest = 0
    for char in text:
        if char == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif char == ")":
            depth -= 1
    if deepest > MAX_DEPTH:
        return _Parsed(None, None, f"parentheses are nested more than {MAX_DEPTH} deep")
    licensing = _licensing()
    try:
        node = licensing.parse(text, strict=True)
        if node is None:
            return _Parsed(None, None, "it is empty")
        normalized = _render(node, licensing)
    except _Invalid as e:
        return _Parsed(None, None, str(e))
    except Exception as e:  # the library's ExpressionError/ParseError, and anything unforeseen
        return _Parsed(None, None, _shorten(str(e).splitlines()[0] if str(e) else type(e).__name__))
    try:
        choices = _choices(node, licensing)
    except _Invalid as e:
        return _Parsed(normalized, None, str(e))
    return _Parsed(normalized, choices, None)


def _license_id(symbol: Any, licensing: Any) -> str:
    key = str(symbol.key)
    known = licensing.known_symbols.get(key)
    if known is not None:
        if known.is_exception:
            raise _Invalid(f"{key} is a license exception; it belongs after WITH")
        return str(known.key)
    ref = _LICENSE_REF.fullmatch(key)
    if ref is None:
        raise _Invalid(f"unknown license id {_shorten(key, 80)!r}")
    document, name = ref.groups()
    return f"DocumentRef-{document}:LicenseRef-{name}" if document else f"LicenseRef-{name}"


def _exception_id(symbol: Any, licensing: Any) -> str:
    key = str(symbol.key)
    known = licensing.known_symbols.get(key)
    if known is None or not known.is_exception:
        raise _Invalid(f"unknown license exception {_shorten(key, 80)!r}")
    return str(known.key)


def _term(node: Any, licensing: Any) -> _Term | None:
    if isinstance(node, license_expression.LicenseWithExceptionSymbol):
        return (
            _license_id(node.license_symbol, licensing),
            _exception_id(node.exception_symbol, licensing),
        )
    if isinstance(node, license_expression.LicenseSymbol):
        return (_license_id(node, licensing), None)
    return None


def _operands(node: Any, licensing: Any) -> tuple[str, list[Any]]:
    """("AND" | "OR", operands) with nested operands of the same operator flattened."""
    if isinstance(node, licensing.AND):
        op, kind = "AND", licensing.AND
    elif isinstance(node, licensing.OR):
        op, kind = "OR", licensing.OR
    else:
        raise _Invalid(f"unexpected element {type(node).__name__}")
    flat: list[Any] = []
    for arg in node.args:
        if isinstance(arg, kind):
            flat.extend(_operands(arg, licensing)[1])
        else:
            flat.append(arg)
    return op, flat


def _render(node: Any, licensing: Any) -> str:
    term = _term(node, licensing)
    if term is not None:
        return _show(term)
    op, operands = _operands(node, licensing)
    parts = []
    for arg in operands:
        text = _render(arg, licensing)
        parts.append(text if _term(arg, licensing) is not None else f"({text})")
    return f" {op} ".join(parts)


def _choices(node: Any, licensing: Any) -> tuple[_Choice, ...]:
    """The expression's choices (DNF), duplicates removed, capped at MAX_ALTERNATIVES."""
    term = _term(node, licensing)
    if term is not None:
        return ((term,),)
    op, operands = _operands(node, licensing)
    result: dict[frozenset[_Term], _Choice] = {}
    too_many = _Invalid(f"it has more than {MAX_ALTERNATIVES} alternatives")
    if op == "OR":
        for arg in operands:
            for choice in _choices(arg, licensing):
                result.setdefault(frozenset(choice), choice)
                if len(result) > MAX_ALTERNATIVES:
                    raise too_many
        return tuple(result.values())
    acc: tuple[_Choice, ...] = ((),)
    for arg in operands:
        result = {}
        rights = _choices(arg, licensing)  # once: not once per left (exponential when nested)
        for left in acc:
            for right in rights:
                merged = left + tuple(t for t in right if t not in left)
                result.setdefault(frozenset(merged), merged)
                if len(result) > MAX_ALTERNATIVES:
                    raise too_many
        acc = tuple(result.values())
    return acc


def _show(term: _Term) -> str:
    return f"{term[0]} WITH {term[1]}" if term[1] else term[0]


def _shorten(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _clip(text: str) -> str:
    """A field value as stored in LicenseInfo.raw: stripped, truncated, no control chars."""
    return _CONTROL.sub("\ufffd", text.strip()[:MAX_RAW_CHARS])


def _absent(value: str | None) -> bool:
    return value is None or value.strip().lower() in _ABSENT


# -- the License field ----------------------------------------------------------------------------

# Free-text License values seen on PyPI → SPDX. Keys are compared after _alias_keys()
# normalization, so "The MIT License (MIT)", "MIT license" and "MIT" all hit "MIT License".
# The last part of every mapped classifier (e.g. "GNU General Public License v3 (GPLv3)") is an
# alias too. Valid SPDX ids need no entry: they are parsed first.
LICENSE_ALIASES: Final[dict[str, str]] = {
    # MIT
    "MIT License": "MIT",
    "Expat": "MIT",
    "Expat License": "MIT",
    "MIT/Expat": "MIT",
    "http://opensource.org/licenses/MIT": "MIT",
    # Apache
    "Apache": "Apache-2.0",
    "Apache 2": "Apache-2.0",
    "Apache 2.0": "Apache-2.0",
    "Apache-2": "Apache-2.0",
    "Apache2": "Apache-2.0",
    "Apache v2": "Apache-2.0",
    "Apache License 2.0": "Apache-2.0",
    "Apache License v2": "Apache-2.0",
    "Apache License v2.0": "Apache-2.0",
    "Apache License, Version 2.0": "Apache-2.0",
    "Apache License Version 2": "Apache-2.0",
    "Apache-2.0 License": "Apache-2.0",
    "Apache Software License": "Apache-2.0",
    "Apache Software License 2.0": "Apache-2.0",
    "Apache Software License, Version 2.0": "Apache-2.0",
    "ASL 2.0": "Apache-2.0",
    "ASL2": "Apache-2.0",
    "http://www.apache.org/licenses/LICENSE-2.0": "Apache-2.0",
    # BSD (see the module docstring for bare "BSD")
    "BSD": "BSD-3-Clause",
    "BSD License": "BSD-3-Clause",
    "New BSD": "BSD-3-Clause",
    "Modified BSD": "BSD-3-Clause",
    "Revised BSD": "BSD-3-Clause",
    "3-Clause BSD": "BSD-3-Clause",
    "BSD 3-Clause": "BSD-3-Clause",
    "BSD 3 Clause": "BSD-3-Clause",
    "BSD-3": "BSD-3-Clause",
    "BSD3": "BSD-3-Clause",
    "BSD 3": "BSD-3-Clause",
    "Simplified BSD": "BSD-2-Clause",
    "FreeBSD": "BSD-2-Clause",
    "2-Clause BSD": "BSD-2-Clause",
    "BSD 2-Clause": "BSD-2-Clause",
    "BSD 2 Clause": "BSD-2-Clause",
    "BSD-2": "BSD-2-Clause",
    "BSD2": "BSD-2-Clause",
    "BSD 2": "BSD-2-Clause",
    "Zero-Clause BSD": "0BSD",
    # GPL (no version: any version, see the module docstring)
    "GPL": "GPL-1.0-or-later",
    "GNU GPL": "GPL-1.0-or-later",
    "GNU General Public License": "GPL-1.0-or-later",
    "GPLv2": "GPL-2.0-only",
    "GPL v2": "GPL-2.0-only",
    "GPL-2": "GPL-2.0-only",
    "GPL2": "GPL-2.0-only",
    "GPL 2": "GPL-2.0-only",
    "GNU GPLv2": "GPL-2.0-only",
    "GNU GPL v2": "GPL-2.0-only",
    "GNU General Public License v2": "GPL-2.0-only",
    "GPLv2+": "GPL-2.0-or-later",
    "GPL v2+": "GPL-2.0-or-later",
    "GPL-2+": "GPL-2.0-or-later",
    "GPLv2 or later": "GPL-2.0-or-later",
    "GPLv3": "GPL-3.0-only",
    "GPL v3": "GPL-3.0-only",
    "GPL-3": "GPL-3.0-only",
    "GPL3": "GPL-3.0-only",
    "GPL 3": "GPL-3.0-only",
    "GPL 3.0": "GPL-3.0-only",
    "GNU GPLv3": "GPL-3.0-only",
    "GNU GPL v3": "GPL-3.0-only",
    "GNU General Public License v3": "GPL-3.0-only",
    "GNU General Public License version 3": "GPL-3.0-only",
    "GPLv3+": "GPL-3.0-or-later",
    "GPL v3+": "GPL-3.0-or-later",
    "GPL-3+": "GPL-3.0-or-later",
    "GPLv3 or later": "GPL-3.0-or-later",
    "GNU GPLv3+": "GPL-3.0-or-later",
    # LGPL
    "LGPL": "LGPL-2.0-or-later",
    "GNU LGPL": "LGPL-2.0-or-later",
    "GNU Lesser General Public License": "LGPL-2.0-or-later",
    "LGPLv2": "LGPL-2.0-only",
    "LGPL-2": "LGPL-2.0-only",
    "LGPLv2+": "LGPL-2.0-or-later",
    "LGPLv2.1": "LGPL-2.1-only",
    "LGPL v2.1": "LGPL-2.1-only",
    "LGPL 2.1": "LGPL-2.1-only",
    "LGPL-2.1": "LGPL-2.1-only",
    "LGPLv2.1+": "LGPL-2.1-or-later",
    "LGPL v2.1+": "LGPL-2.1-or-later",
    "LGPLv3": "LGPL-3.0-only",
    "LGPL v3": "LGPL-3.0-only",
    "LGPL-3": "LGPL-3.0-only",
    "LGPL3": "LGPL-3.0-only",
    "LGPLv3+": "LGPL-3.0-or-later",
    "LGPL v3+": "LGPL-3.0-or-later",
    "LGPL-3+": "LGPL-3.0-or-later",
    # AGPL
    "AGPL": "AGPL-3.0-or-later",
    "GNU AGPL": "AGPL-3.0-or-later",
    "AGPLv3": "AGPL-3.0-only",
    "AGPL v3": "AGPL-3.0-only",
    "AGPL-3": "AGPL-3.0-only",
    "AGPL3": "AGPL-3.0-only",
    "GNU AGPLv3": "AGPL-3.0-only",
    "AGPLv3+": "AGPL-3.0-or-later",
    "AGPL-3+": "AGPL-3.0-or-later",
    # MPL
    "MPL 2.0": "MPL-2.0",
    "MPL 2": "MPL-2.0",
    "MPL-2": "MPL-2.0",
    "MPL2": "MPL-2.0",
    "MPLv2": "MPL-2.0",
    "MPL v2": "MPL-2.0",
    "MPL v2.0": "MPL-2.0",
    "Mozilla Public License 2.0": "MPL-2.0",
    "Mozilla Public License Version 2.0": "MPL-2.0",
    "MPL 1.1": "MPL-1.1",
    "Mozilla Public License 1.1": "MPL-1.1",
    # ISC, PSF, Zope, public domain, proprietary, others
    "ISC License": "ISC",
    "ISCL": "ISC",
    "PSF": "PSF-2.0",
    "PSFL": "PSF-2.0",
    "PSF License": "PSF-2.0",
    "PSF-2": "PSF-2.0",
    "PSF 2.0": "PSF-2.0",
    "PSF License Agreement": "PSF-2.0",
    "Python Software Foundation License": "PSF-2.0",
    "Python Software Foundation License Version 2": "PSF-2.0",
    "ZPL": "ZPL-2.1",
    "ZPL 2.1": "ZPL-2.1",
    "Zope Public License": "ZPL-2.1",
    "Zope Public License 2.1": "ZPL-2.1",
    "The Unlicense": "Unlicense",
    "Public Domain": "LicenseRef-Public-Domain",
    "CC0": "CC0-1.0",
    "CC0 1.0": "CC0-1.0",
    "CC0 1.0 Universal": "CC0-1.0",
    "Proprietary": "LicenseRef-Proprietary",
    "Commercial": "LicenseRef-Proprietary",
    "All Rights Reserved": "LicenseRef-Proprietary",
    "Other/Proprietary": "LicenseRef-Proprietary",
    "Boost": "BSL-1.0",
    "Boost Software License": "BSL-1.0",
    "Boost Software License 1.0": "BSL-1.0",
    "zlib License": "Zlib",
    "zlib/libpng": "Zlib",
    "EPL 2.0": "EPL-2.0",
    "EPL-2": "EPL-2.0",
    "EPL v2": "EPL-2.0",
    "Eclipse Public License 2.0": "EPL-2.0",
    "EPL 1.0": "EPL-1.0",
    "Eclipse Public License 1.0": "EPL-1.0",
    "EUPL 1.2": "EUPL-1.2",
    "EUPL v1.2": "EUPL-1.2",
    "EUPL 1.1": "EUPL-1.1",
    "Artistic 2.0": "Artistic-2.0",
    "Artistic License 2.0": "Artistic-2.0",
}

# Trove license classifiers → SPDX; None: too vague to map (see the module docstring).
CLASSIFIER_LICENSES: Final[dict[str, str | None]] = {
    "License :: Aladdin Free Public License (AFPL)": "Aladdin",
    "License :: CC0 1.0 Universal (CC0 1.0) Public Domain Dedication": "CC0-1.0",
    "License :: CeCILL-B Free Software License Agreement (CECILL-B)": "CECILL-B",
    "License :: CeCILL-C Free Software License Agreement (CECILL-C)": "CECILL-C",
    "License :: DFSG approved": None,  # a property, not a license
    "License :: Eiffel Forum License (EFL)": None,  # EFL-1.0 or EFL-2.0
    # non-free terms: not open source, whatever the details
    "License :: Free For Educational Use": "LicenseRef-Proprietary",
    "License :: Free For Home Use": "LicenseRef-Proprietary",
    "License :: Free To Use But Restricted": "LicenseRef-Proprietary",
    "License :: Free for non-commercial use": "LicenseRef-Proprietary",
    "License :: Freeware": "LicenseRef-Proprietary",
    "License :: Freely Distributable": None,  # a property, not a license
    "License :: GUST Font License 1.0": None,  # no SPDX id
    "License :: GUST Font License 2006-09-30": None,
    "License :: Netscape Public License (NPL)": None,  # NPL-1.0 or NPL-1.1
    "License :: Nokia Open Source License (NOKOS)": "Nokia",
    "License :: OSI Approved": None,  # a category
    "License :: OSI Approved :: Academic Free License (AFL)": None,  # AFL-1.1 ... AFL-3.0
    "License :: OSI Approved :: Apache Software License": "Apache-2.0",  # 1.x: not on PyPI
    "License :: OSI Approved :: Apple Public Source License": None,  # APSL-1.0 ... APSL-2.0
    "License :: OSI Approved :: Artistic License": "Artistic-2.0",  # OSI's recommended version
    "License :: OSI Approved :: Attribution Assurance License": "AAL",
    # 2- or 3-clause: the classifier does not say; 3-clause is the common and stricter one
    "License :: OSI Approved :: BSD License": "BSD-3-Clause",
    "License :: OSI Approved :: Blue Oak Model License (BlueOak-1.0.0)": "BlueOak-1.0.0",
    "License :: OSI Approved :: Boost Software License 1.0 (BSL-1.0)": "BSL-1.0",
    "License :: OSI Approved :: CEA CNRS Inria Logiciel Libre License, version 2.1 (CeCILL-2.1)": (
        "CECILL-2.1"
    ),
    "License :: OSI Approved :: CMU License (MIT-CMU)": "MIT-CMU",
    "License :: OSI Approved :: Common Development and Distribution License 1.0 (CDDL-1.0)": (
        "CDDL-1.0"
    ),
    "License :: OSI Approved :: Common Public License": "CPL-1.0",  # only version
    "License :: OSI Approved :: Eclipse Public License 1.0 (EPL-1.0)": "EPL-1.0",
    "License :: OSI Approved :: Eclipse Public License 2.0 (EPL-2.0)": "EPL-2.0",
    "License :: OSI Approved :: Educational Community License, Version 2.0 (ECL-2.0)": "ECL-2.0",
    "License :: OSI Approved :: Eiffel Forum License": None,  # EFL-1.0 or EFL-2.0
    "License :: OSI Approved :: European Union Public Licence 1.0 (EUPL 1.0)": "EUPL-1.0",
    "License :: OSI Approved :: European Union Public Licence 1.1 (EUPL 1.1)": "EUPL-1.1",
    "License :: OSI Approved :: European Union Public Licence 1.2 (EUPL 1.2)": "EUPL-1.2",
    "License :: OSI Approved :: GNU Affero General Public License v3": "AGPL-3.0-only",
    "License :: OSI Approved :: GNU Affero General Public License v3 or later (AGPLv3+)": (
        "AGPL-3.0-or-later"
    ),
    "License :: OSI Approved :: GNU Free Documentation License (FDL)": None,  # GFDL-1.1 ... 1.3
    # no version: "any version ever published" (the GPL's own rule)
    "License :: OSI Approved :: GNU General Public License (GPL)": "GPL-1.0-or-later",
    "License :: OSI Approved :: GNU General Public License v2 (GPLv2)": "GPL-2.0-only",
    "License :: OSI Approved :: GNU General Public License v2 or later (GPLv2+)": (
        "GPL-2.0-or-later"
    ),
    "License :: OSI Approved :: GNU General Public License v3 (GPLv3)": "GPL-3.0-only",
    "License :: OSI Approved :: GNU General Public License v3 or later (GPLv3+)": (
        "GPL-3.0-or-later"
    ),
    "License :: OSI Approved :: GNU Lesser General Public License v2 (LGPLv2)": "LGPL-2.0-only",
    "License :: OSI Approved :: GNU Lesser General Public License v2 or later (LGPLv2+)": (
        "LGPL-2.0-or-later"
    ),
    "License :: OSI Approved :: GNU Lesser General Public License v3 (LGPLv3)": "LGPL-3.0-only",
    "License :: OSI Approved :: GNU Lesser General Public License v3 or later (LGPLv3+)": (
        "LGPL-3.0-or-later"
    ),
    "License :: OSI Approved :: GNU Library or Lesser General Public License (LGPL)": (
        "LGPL-2.0-or-later"
    ),
    "License :: OSI Approved :: Historical Permission Notice and Disclaimer (HPND)": "HPND",
    "License :: OSI Approved :: IBM Public License": "IPL-1.0",  # only version
    "License :: OSI Approved :: ISC License (ISCL)": "ISC",
    "License :: OSI Approved :: Intel Open Source License": "Intel",
    "License :: OSI Approved :: Jabber Open Source License": None,  # no SPDX id
    "License :: OSI Approved :: MIT License": "MIT",
    "License :: OSI Approved :: MIT No Attribution License (MIT-0)": "MIT-0",
    "License :: OSI Approved :: MITRE Collaborative Virtual Workspace License (CVW)": None,
    "License :: OSI Approved :: MirOS License (MirOS)": "MirOS",
    "License :: OSI Approved :: Motosoto License": "Motosoto",
    "License :: OSI Approved :: Mozilla Public License 1.0 (MPL)": "MPL-1.0",
    "License :: OSI Approved :: Mozilla Public License 1.1 (MPL 1.1)": "MPL-1.1",
    "License :: OSI Approved :: Mozilla Public License 2.0 (MPL 2.0)": "MPL-2.0",
    "License :: OSI Approved :: Mulan Permissive Software License v2 (MulanPSL-2.0)": (
        "MulanPSL-2.0"
    ),
    "License :: OSI Approved :: NASA Open Source Agreement v1.3 (NASA-1.3)": "NASA-1.3",
    "License :: OSI Approved :: Nethack General Public License": "NGPL",
    "License :: OSI Approved :: Nokia Open Source License": "Nokia",
    "License :: OSI Approved :: Open Group Test Suite License": "OGTSL",
    "License :: OSI Approved :: Open Software License 3.0 (OSL-3.0)": "OSL-3.0",
    "License :: OSI Approved :: PostgreSQL License": "PostgreSQL",
    "License :: OSI Approved :: Python License (CNRI Python License)": "CNRI-Python",
    "License :: OSI Approved :: Python Software Foundation License": "PSF-2.0",
    "License :: OSI Approved :: Qt Public License (QPL)": "QPL-1.0",
    "License :: OSI Approved :: Ricoh Source Code Public License": "RSCPL",
    "License :: OSI Approved :: SIL Open Font License 1.1 (OFL-1.1)": "OFL-1.1",
    "License :: OSI Approved :: Sleepycat License": "Sleepycat",
    "License :: OSI Approved :: Sun Industry Standards Source License (SISSL)": "SISSL",
    "License :: OSI Approved :: Sun Public License": "SPL-1.0",
    "License :: OSI Approved :: The Unlicense (Unlicense)": "Unlicense",
    "License :: OSI Approved :: Universal Permissive License (UPL)": "UPL-1.0",
    "License :: OSI Approved :: University of Illinois/NCSA Open Source License": "NCSA",
    "License :: OSI Approved :: Vovida Software License 1.0": "VSL-1.0",
    "License :: OSI Approved :: W3C License": "W3C",
    "License :: OSI Approved :: X.Net License": "Xnet",
    "License :: OSI Approved :: Zero-Clause BSD (0BSD)": "0BSD",
    "License :: OSI Approved :: Zope Public License": "ZPL-2.1",  # Zope Foundation's version
    "License :: OSI Approved :: zlib/libpng License": "Zlib",
    "License :: Other/Proprietary License": "LicenseRef-Proprietary",
    "License :: Public Domain": "LicenseRef-Public-Domain",
    "License :: Repoze Public License": None,  # no SPDX id
}

# Titles that open a full license text pasted into the License field, matched (fullmatch)
# against the first line, then the first two lines, lower-cased with spaces collapsed.
_TITLES: Final[tuple[tuple[re.Pattern[str], str], ...]] = tuple(
    (re.compile(pattern), spdx)
    for pattern, spdx in (
        (r"(?:the )?mit license(?: \(mit\))?", "MIT"),
        (r"apache license,? version 2\.0(?:,.*)?", "Apache-2.0"),
        (
            r"(?:the )?(?:bsd 3-clause|3-clause bsd|new bsd|modified bsd|revised bsd)(?: license)?",
            "BSD-3-Clause",
        ),
        (
            r"(?:the )?(?:bsd 2-clause|2-clause bsd|simplified bsd|freebsd)(?: license)?",
            "BSD-2-Clause",
        ),
        (r"gnu general public license,? version 2(?:,.*)?", "GPL-2.0-only"),
        (r"gnu general public license,? version 3(?:,.*)?", "GPL-3.0-only"),
        (r"gnu library general public license,? version 2(?:,.*)?", "LGPL-2.0-only"),
        (r"gnu lesser general public license,? version 2\.1(?:,.*)?", "LGPL-2.1-only"),
        (r"gnu lesser general public license,? version 3(?:,.*)?", "LGPL-3.0-only"),
        (r"gnu affero general public license,? version 3(?:,.*)?", "AGPL-3.0-only"),
        (r"mozilla public license,? version 2\.0", "MPL-2.0"),
        (r"(?:the )?isc license(?: \(iscl\))?", "ISC"),
        (r"boost software license - version 1\.0(?: - .*)?", "BSL-1.0"),
        (r"python software foundation license,? version 2", "PSF-2.0"),
        (
            r"this is free and unencumbered software released into the public domain\b.*",
            "Unlicense",
        ),
    )
)
_DECORATION = re.compile(r"[\s\-=*#_~]+")  # underlines and rules between title lines


def _alias_keys(text: str) -> list[str]:
    """Lookup keys for a free-text license name: with a trailing "(...)" read as words, then
    without it ("BSD (2-clause)" → "bsd 2-clause"; "The MIT License (MIT)" → "mit")."""
    text = " ".join(text.lower().split()).rstrip(".;").strip()
    for scheme in ("https://", "http://"):
        text = text.removeprefix(scheme)
    text = text.removeprefix("www.").rstrip("/")
    keys = [_alias_key(text.replace("(", " ").replace(")", " "))]
    stripped = re.sub(r"\s*\([^()]*\)$", "", text)
    if stripped != text:
        keys.append(_alias_key(stripped))
    return keys


def _alias_key(text: str) -> str:
    words = text.replace(",", " ").split()
    if words[:1] == ["the"]:
        words = words[1:]
    if len(words) > 1 and words[-1] in ("license", "licence"):
        words = words[:-1]
    return " ".join(words)


# Classifier names too vague as free text: "Python" is more often meant as PSF than CNRI.
_NOT_ALIASES: Final = frozenset({"python"})


def _build_aliases() -> dict[str, str]:
    aliases: dict[str, str] = {}
    for classifier, spdx in CLASSIFIER_LICENSES.items():
        name = classifier.rsplit("::", 1)[-1].strip()
        if spdx is not None:
            for key in _alias_keys(name):
                if key not in _NOT_ALIASES:
                    aliases.setdefault(key, spdx)
    for name, spdx in LICENSE_ALIASES.items():  # explicit spellings win
        for key in _alias_keys(name):
            aliases[key] = spdx
    return aliases


_ALIASES: Final = _build_aliases()


def _classifier_key(classifier: str) -> str:
    return " :: ".join(" ".join(part.split()) for part in classifier.lower().split("::"))


_CLASSIFIERS: Final = {_classifier_key(k): v for k, v in CLASSIFIER_LICENSES.items()}


def _from_license_field(value: str) -> str | None:
    value = value[:MAX_FIELD_CHARS]
    lines = [line.strip() for line in value.strip().splitlines()]
    lines = [line for line in lines if line and not _DECORATION.fullmatch(line)]
    if not lines:
        return None
    if len(lines) == 1:
        line = lines[0]
        if len(line) > _MAX_SHORT_FIELD:
            return None
        parsed = _parse(line)
        if parsed.expression is not None:
            return parsed.expression
        for key in _alias_keys(line):
            if key in _ALIASES:
                return _parse(_ALIASES[key]).expression
            if key and (parsed := _parse(key)).expression is not None:  # "BSD-3-Clause License"
                return parsed.expression
        return None
    heads = (lines[0], f"{lines[0]} {lines[1]}")
    for head in heads:
        head = " ".join(head.lower().split())
        for pattern, spdx in _TITLES:
            if pattern.fullmatch(head):
                return spdx
    return None


def _from_classifiers(classifiers: Iterable[str]) -> tuple[str | None, str | None]:
    """(normalized expression or None, the license classifiers joined by "; " or None)."""
    found: list[str] = []
    ids: dict[str, None] = {}
    for count, classifier in enumerate(classifiers):
        if count >= _MAX_CLASSIFIERS:
            break
        classifier = classifier[:1_000]
        key = _classifier_key(classifier)
        if not key.startswith("license ::"):
            continue
        found.append(" ".join(classifier.split()))
        spdx = _CLASSIFIERS.get(key)
        if spdx is not None:
            ids[spdx] = None
    raw = _clip("; ".join(found)) if found else None
    if not ids:
        return None, raw
    return _parse(" OR ".join(ids)).expression, raw


def license_from_fields(
    license_expression: str | None, license: str | None, classifiers: Iterable[str]
) -> LicenseInfo:
    """The license declared by core metadata fields: License-Expression, else License, else the
    license classifiers (see the module docstring)."""
    if not _absent(license_expression):
        assert license_expression is not None
        return LicenseInfo(
            _parse(license_expression.strip()).expression,
            _clip(license_expression),
            SOURCE_EXPRESSION,
        )
    if _absent(license):
        license = None
    elif license is not None:
        expression = _from_license_field(license)
        if expression is not None:
            return LicenseInfo(expression, _clip(license), SOURCE_LICENSE)
    expression, raw = _from_classifiers(classifiers)
    if expression is not None:
        return LicenseInfo(expression, raw, SOURCE_CLASSIFIER)
    if license is not None:
        return LicenseInfo(None, _clip(license), SOURCE_LICENSE)
    if raw is not None:
        return LicenseInfo(None, raw, SOURCE_CLASSIFIER)
    return LicenseInfo(None, None, None)


def _unfold(value: str) -> str:
    """A multi-line header value without its continuation indent (8 spaces, or distutils'
    7 spaces and "|")."""
    first, *rest = value.split("\n")
    return "\n".join([first, *(re.sub(r"^(?: {7}\|| {1,8}|\t)", "", line) for line in rest)])


def license_from_metadata(metadata: bytes | str) -> LicenseInfo:
    """The license declared by a METADATA / PKG-INFO file (RFC 822 style headers). Undecodable
    bytes are replaced; malformed input gives an unknown license, never an exception."""
    if isinstance(metadata, bytes):
        text = metadata[:_MAX_METADATA_CHARS].decode("utf-8", errors="replace")
    else:
        text = metadata[:_MAX_METADATA_CHARS]
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    headers = text.partition("\n\n")[0]  # the body (description) is not needed
    try:
        message = HeaderParser(policy=email.policy.compat32).parsestr(headers)
        expression = message.get("License-Expression")
        license = message.get("License")
        classifiers = [" ".join(str(c).split()) for c in message.get_all("Classifier") or []]
    except Exception:  # the email package tolerates almost anything; be sure
        return LicenseInfo(None, None, None)
    return license_from_fields(
        None if expression is None else " ".join(str(expression).split()),
        None if license is None else _unfold(str(license)),
        classifiers,
    )


# -- matching -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Element:
    """One term of an allow/deny entry: a license id (any exception), an exact ``X WITH Y``, or
    a glob over license ids (lower-cased throughout)."""

    key: str | None
    exception: str | None
    glob: re.Pattern[str] | None

    def matches(self, term: _Term) -> bool:
        key = term[0].lower()
        if self.glob is not None:
            return self.glob.match(key) is not None
        if key != self.key:
            return False
        return self.exception is None or (term[1] is not None and term[1].lower() == self.exception)


@dataclass(frozen=True, slots=True)
class _Rule:
    entry: str  # as written (stripped)
    choices: tuple[tuple[_Element, ...], ...]


@functools.lru_cache(maxsize=1_024)
def _compile_entry(entry: str) -> _Rule:
    if not entry:
        raise ValueError("'': an empty entry")
    if any(char in entry for char in "*?["):
        if not _GLOB.fullmatch(entry):
            raise ValueError(
                f"{entry}: a glob is one license id pattern: letters, digits, '.', '-', '+', ':'"
                " and the wildcards * and ?"
            )
        glob = re.compile(fnmatch.translate(entry.lower()))
        open_ended = entry[0] in "*?" or entry.lower().startswith(("licenseref-", "documentref-"))
        if not open_ended and not any(glob.match(key) for key in _known_license_ids()):
            raise ValueError(f"{entry}: the glob matches no SPDX license id")
        return _Rule(entry, ((_Element(None, None, glob),),))
    parsed = _parse(entry)
    if parsed.expression is None:
        raise ValueError(f"{entry}: not an SPDX license id, expression or glob ({parsed.error})")
    if parsed.choices is None:
        raise ValueError(f"{entry}: {parsed.error}")
    return _Rule(
        entry,
        tuple(
            tuple(_Element(key.lower(), exc.lower() if exc else None, None) for key, exc in choice)
            for choice in parsed.choices
        ),
    )


def _denial(choice: _Choice, rules: Sequence[_Rule]) -> str | None:
    """Why a choice is denied ("GPL-3.0-only is on the deny-list ('GPL-*')"), or None."""
    for rule in rules:
        for pattern in rule.choices:
            matched: list[str] = []
            for element in pattern:
                term = next((t for t in choice if element.matches(t)), None)
                if term is None:
                    break
                if _show(term) not in matched:
                    matched.append(_show(term))
            else:
                return f"{' AND '.join(matched)} is on the deny-list ({rule.entry!r})"
    return None


def _allowed(term: _Term, choice: _Choice, rules: Sequence[_Rule]) -> bool:
    for rule in rules:
        for pattern in rule.choices:
            if any(element.matches(term) for element in pattern) and all(
                any(element.matches(t) for t in choice) for element in pattern
            ):
                return True
    return False


def _listing(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


class LicenseMatcher:
    """An index's allow/deny lists for licenses (see the module docstring for the semantics)."""

    __slots__ = ("_allow", "_cache", "_deny")

    def __init__(self, allow: Sequence[str], deny: Sequence[str]) -> None:
        if isinstance(allow, str) or isinstance(deny, str):
            raise TypeError("allow and deny are lists of entries, not strings")
        self._allow = tuple(_compile_entry(str(entry).strip()) for entry in allow)
        self._deny = tuple(_compile_entry(str(entry).strip()) for entry in deny)
        self._cache: dict[str, LicenseVerdict] = {}

    @property
    def allow(self) -> tuple[str, ...]:
        return tuple(rule.entry for rule in self._allow)

    @property
    def deny(self) -> tuple[str, ...]:
        return tuple(rule.entry for rule in self._deny)

    def check(self, expression: str | None) -> LicenseVerdict:
        """The verdict for an SPDX expression (normalized or not); None means no license."""
        if expression is None or not expression.strip():
            return LicenseVerdict("unknown", "no license in the metadata")
        cached = self._cache.get(expression)
        if cached is not None:
            return cached
        verdict = self._check(expression)
        if len(expression) <= _MAX_CACHED_CHARS:
            if len(self._cache) >= _VERDICT_CACHE_SIZE:
                self._cache.clear()
            self._cache[expression] = verdict
        return verdict

    def check_info(self, info: LicenseInfo) -> LicenseVerdict:
        """Like :meth:`check`, with a message that says what the metadata had when the license
        is unknown."""
        if info.expression is not None:
            return self.check(info.expression)
        if info.raw is None:
            return LicenseVerdict("unknown", "no license in the metadata")
        raw = _shorten(" ".join(info.raw.split()), 80)
        if info.source == SOURCE_CLASSIFIER:
            why = f"the license classifiers ({raw!r}) do not name an SPDX license"
        else:
            why = f"{info.source or 'the metadata'} {raw!r} is not a recognized SPDX license"
        return LicenseVerdict("unknown", f"unknown license: {why}")

    def _check(self, expression: str) -> LicenseVerdict:
        parsed = _parse(expression)
        if parsed.expression is None:
            shown = _shorten(" ".join(expression.split()), 80)
            return LicenseVerdict(
                "unknown", f"license {shown!r} is not a valid SPDX expression: {parsed.error}"
            )
        shown = _shorten(parsed.expression)
        if parsed.choices is None:
            return LicenseVerdict(
                "unknown", f"license {shown} is too complex to check: {parsed.error}"
            )
        denials: list[str] = []
        candidates: list[_Choice] = []
        for choice in parsed.choices:
            denial = _denial(choice, self._deny)
            if denial is None:
                candidates.append(choice)
            elif denial not in denials:
                denials.append(denial)
        if not candidates:
            if len(denials) == 1:
                return LicenseVerdict("denied", denials[0])
            listed = "; ".join(denials[:3]) + ("; ..." if len(denials) > 3 else "")
            return LicenseVerdict("denied", f"every choice of {shown} is denied: {listed}")
        missing: list[str] = []
        for choice in candidates:
            if self._allow:
                uncovered = [t for t in choice if not _allowed(t, choice, self._allow)]
                if uncovered:
                    missing.extend(_show(t) for t in uncovered if _show(t) not in missing)
                    continue
            if len(parsed.choices) == 1:
                return LicenseVerdict("ok", f"license {shown} is acceptable")
            chosen = " AND ".join(_show(t) for t in choice)
            return LicenseVerdict("ok", f"license {shown} is acceptable by choosing {chosen}")
        if len(parsed.choices) == 1:
            noun = "license" if len(missing) == 1 else "licenses"
            verb = "is" if len(missing) == 1 else "are"
            message = f"{noun} {_listing(missing)} {verb} not on the allow-list"
        else:
            message = (
                f"no choice of {shown} is on the allow-list (not allowed: {_listing(missing)})"
            )
        if denials:
            message += f"; {denials[0]}"
        return LicenseVerdict("not_allowed", message)
