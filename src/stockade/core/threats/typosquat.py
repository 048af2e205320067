"""Typosquat detection: is a project name a lookalike of a far more popular project?

Pure: names in, findings out. The popular projects come from ``stockade/data/popular_pypi.txt``
(the 15,000 most-downloaded PyPI projects, from hugovk/top-pypi-packages) or from an admin's
refreshed copy (``stockade names refresh``). The :data:`MAX_TARGETS` most downloaded are the names
worth imitating, and are never flagged themselves.

How a name is compared with them:

* **Folding.** NFKC, case folding, letters of other scripts that look Latin (Cyrillic ``е``,
  Greek ``ο`` …) mapped to that Latin letter, diacritics dropped, PEP 503 separators unified. The
  *skeleton* drops the separators; the *ultra* key merges ``l``/``1``/``i`` and ``o``/``0`` (PyPI
  refuses new names that collide there); the *visual* key also reads ``rn`` as ``m``, ``vv`` as
  ``w`` and ``cl`` as ``d``.
* **Equal once folded.** ``homoglyph`` (other scripts, ``rn`` for ``m`` …) and ``normalization``
  (``l``/``1``/``i``, ``o``/``0``) are malicious; ``separator`` (``scikitlearn``) is suspicious,
  since old projects of that kind exist (``git-python``).
* **Typos.** One or two edits (restricted Damerau-Levenshtein), each classified: a swapped or
  doubled letter (``swap``, ``repeat``: class 0), a keyboard neighbour or a lookalike digit
  (``keyboard``, ``homoglyph``: 1), a missing letter or another vowel (2), any other letter or a
  plural ``s`` (3). An edit at either end of the name costs one more (project families differ
  there: ``x-transformers``, ``pycryptodomex``); another or an extra first letter is no typo,
  unless a keyboard slip; version digits never are (``urllib``, ``flake7``). Whether the edits
  count, and at which tier, depends on the target's length (:data:`ONE_EDIT_LEN`,
  :data:`TWO_EDITS_LEN`): short names are strict. In a name of several words exactly one word may
  differ and its own length counts (``mypy-boto3-ec2`` is no typo of ``mypy-boto3-s3``). A name
  ending in a version is also compared without it (``beautifulsop`` imitates ``beautifulsoup4``).
* **Affixes and order.** ``prefix-suffix`` (``py-``, ``python-``, ``-py``, ``-sdk`` … and version
  suffixes, ``requests2``) and ``reorder`` (``toolbelt-requests``, best-known targets only) are
  suspicious.
* **Popularity gap.** When the candidate's downloads are known (given, or listed past the
  targets) the target must have :data:`GAP` times as many; otherwise it is judged as a new
  project.

``malicious`` findings are meant to be blocked, ``suspicious`` ones shown. Recall and false
positives are measured by ``bench/typosquat.py``. Lookups are indexed (folded keys, a deletion
neighbourhood for one edit, a pigeonhole partition for two, word contexts, word bags, affixes):
one check costs tens of microseconds.
"""

# ruff: noqa: RUF001, RUF002  (lookalike letters, on purpose)
from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

# -- tunables --------------------------------------------------------------------------------

GAP = 1000
"""When the candidate's downloads are known, the target must have at least GAP times as many:
a typo catches a tiny share of a project's installs, so a project with a real audience of its own
is not a squat."""
MAX_TARGETS = 5000
"""The most popular MAX_TARGETS projects are the imitation targets, and are never flagged
themselves; the rest of the list is judged with its known downloads."""
MIN_LEN_EQUAL = 3  # homoglyph / separator / normalization variants
MIN_LEN_AFFIX = 5  # py-/python- prefixes, -py/-sdk/… and version suffixes
MIN_LEN_STEM = 5  # beautifulsoup4 → beautifulsoup: typos of the name without its version
REORDER_MAX_RANK = 500  # word reordering only imitates the best-known names
SEVERE_RANK = 1000  # findings against the top 1,000 are one severity up
# Shortest target (or target word, in a multi-word name) for its typos to be reported, as
# (suspicious, malicious); None: never. One edit, by its cost (class of _CLASS, +1 at either end
# of the name); two edits, by the sum of (cost + 1) of both.
ONE_EDIT_LEN: dict[int, tuple[int | None, int | None]] = {
    0: (5, 6),  # swapped or doubled letter
    1: (5, 9),  # keyboard neighbour, lookalike digit
    2: (5, 10),  # missing letter, other vowel
    3: (6, None),  # another letter, or a missing one at an end
    4: (6, None),
}
TWO_EDITS_LEN: dict[int, tuple[int | None, int | None]] = {
    2: (8, 10),
    3: (8, 10),
    4: (8, 10),
    5: (8, None),
    6: (8, None),
    7: (10, None),
    8: (12, None),
}
MIN_LEN_ONE_EDIT = min(v for pair in ONE_EDIT_LEN.values() for v in pair if v is not None)
MIN_LEN_TWO_EDITS = min(v for pair in TWO_EDITS_LEN.values() for v in pair if v is not None)
MAX_FINDINGS = 5

TECHNIQUES = (
    "homoglyph",
    "normalization",
    "separator",
    "swap",
    "repeat",
    "keyboard",
    "edit-distance",
    "prefix-suffix",
    "reorder",
)

SHIPPED = "popular_pypi.txt"
# Popular conda package names (derived, see its header): typosquat checks of conda channels.
SHIPPED_CONDA = "popular_conda.txt"

# -- normalization ---------------------------------------------------------------------------

_SEP = re.compile(r"[-_.]+")
_SEP_OR_SPACE = re.compile(r"[-_.\s]+")

# Letters from other scripts (and Latin variants) that render like a Latin letter. Upper-case
# forms are listed too because the map applies before case folding as well as after it.
_LOOKALIKES = {
    # Cyrillic
    "а": "a", "в": "b", "г": "r", "д": "d", "е": "e", "ё": "e", "з": "3", "и": "u", "й": "u",
    "к": "k", "л": "n", "м": "m", "н": "h", "о": "o", "п": "n", "р": "p", "с": "c", "т": "t",
    "у": "y", "х": "x", "ц": "u", "ч": "4", "ш": "w", "щ": "w", "ъ": "b", "ь": "b", "ѕ": "s",
    "і": "i", "ї": "i", "ј": "j", "ԁ": "d", "ԛ": "q", "ԝ": "w", "һ": "h", "ӏ": "l", "ү": "y",
    "ҽ": "e", "ɡ": "g", "ѵ": "v", "ѡ": "w", "ꙅ": "s",
    "А": "A", "В": "B", "Е": "E", "Ё": "E", "З": "3", "К": "K", "М": "M", "Н": "H", "О": "O",
    "Р": "P", "С": "C", "Т": "T", "У": "Y", "Х": "X", "Ѕ": "S", "І": "I", "Ї": "I", "Ј": "J",
    "Ԁ": "D", "Ԛ": "Q", "Ԝ": "W", "Һ": "H", "Ӏ": "l", "Ү": "Y",
    # Greek
    "α": "a", "β": "b", "γ": "y", "δ": "d", "ε": "e", "ζ": "z", "η": "n", "ι": "i", "κ": "k",
    "μ": "u", "ν": "v", "ο": "o", "π": "n", "ρ": "p", "σ": "o", "ς": "s", "τ": "t", "υ": "u",
    "χ": "x", "ω": "w",
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N",
    "Ο": "O", "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
    # Armenian
    "օ": "o", "ս": "u", "հ": "h", "ո": "n", "ց": "g", "զ": "q", "ա": "w",
    # Latin letters without a decomposition, IPA and small capitals
    "ı": "i", "ȷ": "j", "ɑ": "a", "ɩ": "i", "ɪ": "i", "ʟ": "l", "ᴏ": "o", "ʀ": "r", "ꜱ": "s",
    "ᴜ": "u", "ᴠ": "v", "ᴡ": "w", "ᴢ": "z", "ᴄ": "c", "ᴅ": "d", "ᴇ": "e", "ᴋ": "k", "ᴍ": "m",
    "ᴘ": "p", "ᴛ": "t", "ƅ": "b", "ø": "o", "đ": "d", "ł": "l", "ħ": "h", "ŧ": "t", "ƚ": "l",
    "ɫ": "l", "ɭ": "l", "ǀ": "l", "ǃ": "l", "ɛ": "e", "ɔ": "c", "ʋ": "u", "ɣ": "y",
    # punctuation that renders like a separator
    "‐": "-", "‑": "-", "‒": "-", "–": "-", "—": "-", "―": "-", "−": "-", "·": ".", "•": ".",
}  # fmt: skip
_LOOKALIKE_TABLE = str.maketrans(_LOOKALIKES)
_ULTRA_TABLE = str.maketrans({"0": "o", "1": "l", "i": "l", "|": "l"})
_VISUAL_PAIRS = (("rn", "m"), ("vv", "w"), ("cl", "d"))


def canonical(name: str) -> str:
    """PEP 503 normalized name."""
    return _SEP.sub("-", name.strip()).lower()


@lru_cache(maxsize=4096)
def fold(name: str) -> str:
    """The name as it reads: NFKC, lookalike letters → Latin, case-folded, diacritics dropped,
    separator runs (and any whitespace) → ``-``."""
    s = unicodedata.normalize("NFKC", name.strip()).translate(_LOOKALIKE_TABLE).casefold()
    if not s.isascii():
        s = "".join(c for c in unicodedata.normalize("NFKD", s) if not unicodedata.combining(c))
        s = s.translate(_LOOKALIKE_TABLE)
    return _SEP_OR_SPACE.sub("-", s).strip("-")


def skeleton(name: str) -> str:
    """Folded, without separators: ``Requests_OAuthlib`` → ``requestsoauthlib``."""
    return fold(name).replace("-", "")


def _ultra_of(skel: str) -> str:
    return skel.translate(_ULTRA_TABLE)


def _visual_of(skel: str) -> str:
    for a, b in _VISUAL_PAIRS:
        skel = skel.replace(a, b)
    return _ultra_of(skel)


def ultra(name: str) -> str:
    """The skeleton with ``l``/``1``/``i`` and ``o``/``0`` merged (PyPI's "ultranormalized"
    name, letters instead of digits)."""
    return _ultra_of(skeleton(name))


def _words(folded: str) -> tuple[str, ...]:
    return tuple(w for w in folded.split("-") if w)


# -- edit analysis ---------------------------------------------------------------------------


def osa_distance(a: str, b: str, limit: int = 2) -> int:
    """Optimal-string-alignment (restricted Damerau-Levenshtein) distance, capped at
    ``limit + 1``."""
    return min(_osa_bits(a, b), limit + 1)


def _osa_bits(a: str, b: str) -> int:
    """OSA distance, bit-parallel (Hyyrö 2003): a few integer operations per letter of ``b``."""
    m = len(a)
    if m == 0:
        return len(b)
    peq: dict[str, int] = {}
    for i, c in enumerate(a):
        peq[c] = peq.get(c, 0) | (1 << i)
    full = (1 << m) - 1
    vp, vn, d0, pm_old = full, 0, 0, 0
    mask = 1 << (m - 1)
    dist = m
    for c in b:
        pm = peq.get(c, 0)
        tr = (((~d0) & pm) << 1) & pm_old
        d0 = ((((pm & vp) + vp) ^ vp) | pm | vn | tr) & full
        hp = (vn | ~(d0 | vp)) & full
        hn = d0 & vp
        if hp & mask:
            dist += 1
        elif hn & mask:
            dist -= 1
        hp = ((hp << 1) | 1) & full
        hn = (hn << 1) & full
        vp = (hn | ~(d0 | hp)) & full
        vn = hp & d0
        pm_old = pm
    return dist


def _osa_table(a: str, b: str, limit: int) -> list[list[int]] | None:
    """The OSA table (for walking back the alignments), computed in the diagonal band that can
    stay within ``limit``; None when the distance exceeds it."""
    la, lb = len(a), len(b)
    if abs(la - lb) > limit:
        return None
    big = limit + 1
    rows = [list(range(lb + 1))]
    for i in range(1, la + 1):
        prev = rows[-1]
        cur = [big] * (lb + 1)
        cur[0] = i
        lo, hi = max(1, i - limit), min(lb, i + limit)
        ca = a[i - 1]
        best = i if lo == 1 else big
        for j in range(lo, hi + 1):
            cb = b[j - 1]
            v = prev[j - 1] + (ca != cb)
            if prev[j] + 1 < v:
                v = prev[j] + 1
            if cur[j - 1] + 1 < v:
                v = cur[j - 1] + 1
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb and rows[-2][j - 2] + 1 < v:
                v = rows[-2][j - 2] + 1
            cur[j] = min(v, big)
            if v < best:
                best = v
        if best > limit:
            return None
        rows.append(cur)
    return None if rows[la][lb] > limit else rows


_KEYBOARD_ROWS = ("1234567890", "qwertyuiop", "asdfghjkl", "zxcvbnm")
_ROW_OFFSET = (0.0, 0.5, 0.75, 1.25)


def _keyboard() -> dict[str, frozenset[str]]:
    pos = {
        c: (r, i + _ROW_OFFSET[r])
        for r, row in enumerate(_KEYBOARD_ROWS)
        for i, c in enumerate(row)
    }
    return {
        c: frozenset(
            d
            for d, (r2, x2) in pos.items()
            if d != c and abs(r2 - r) <= 1 and abs(x2 - x) <= (1.0 if r2 == r else 0.75)
        )
        for c, (r, x) in pos.items()
    }


KEYBOARD_NEIGHBOURS = _keyboard()
"""QWERTY keys next to each key (same row ±1, the two touching keys above and below)."""
_LOOKALIKE_PAIRS = {
    frozenset(p) for p in ("3e", "4a", "5s", "7t", "8b", "9g", "6b", "0o", "1l", "1i", "il", "uv")
}
_VOWELS = frozenset("aeiouy")

# How typo-like one edit is: 0 = the commonest slips, 3 = an arbitrary change or a plural, 9 = not
# a typo at all (a version number: another release line or another project, rarely a squat).
_CLASS = {
    "swap": 0,
    "repeat": 0,
    "keyboard": 1,
    "lookalike": 1,
    "missing": 2,
    "vowel": 2,
    "extra": 3,
    "changed": 3,
    "plural": 3,
    "version": 9,
}
FIRST_LETTER = 8


@dataclass(frozen=True, slots=True)
class Edit:
    """One edit from the target to the candidate, classified."""

    kind: str  # a key of _CLASS
    text: str
    at: int  # where in the target (0: its first letter)


def _classify(a: str, b: str, op: str, i: int, j: int) -> tuple[str, str]:
    """Edit ``op`` ending at a[:i] / b[:j] (a: candidate, b: target)."""
    if op == "swap":
        return ("swap", f"swapped '{b[j - 2 : j]}' → '{a[i - 2 : i]}'")
    if op == "sub":
        x, y = a[i - 1], b[j - 1]
        if (x.isdigit() and y.isdigit()) or (
            frozenset((x, y)) not in _LOOKALIKE_PAIRS
            and ((x.isdigit() and a[i - 1 :].isdigit()) or (y.isdigit() and b[j - 1 :].isdigit()))
        ):
            return ("version", f"version '{y}' → '{x}'")
        if x in KEYBOARD_NEIGHBOURS.get(y, ()):
            return ("keyboard", f"'{y}' typed as its keyboard neighbour '{x}'")
        if frozenset((x, y)) in _LOOKALIKE_PAIRS:
            return ("lookalike", f"'{y}' written as lookalike '{x}'")
        if x in _VOWELS and y in _VOWELS:
            return ("vowel", f"vowel '{y}' → '{x}'")
        return ("changed", f"'{y}' changed to '{x}'")
    if op == "ins":  # a[i-1] is extra
        x = a[i - 1]
        left = a[i - 2] if i > 1 else ""
        right = a[i] if i < len(a) else ""
        if x in (left, right):
            return ("repeat", f"'{x}' doubled")
        if x == "s" and i == len(a):
            return ("plural", "'s' added")
        if x.isdigit():
            return ("version", f"'{x}' added")
        if x in KEYBOARD_NEIGHBOURS.get(left, ()) or x in KEYBOARD_NEIGHBOURS.get(right, ()):
            return ("keyboard", f"extra '{x}' next to its keyboard neighbour")
        return ("extra", f"extra '{x}'")
    # "del": b[j-1] is missing from a
    y = b[j - 1]
    if (j > 1 and b[j - 2] == y) or (j < len(b) and b[j] == y):
        return ("repeat", f"doubled '{y}' written once")
    if y == "s" and j == len(b):
        return ("plural", "final 's' dropped")
    if y.isdigit():
        return ("version", f"'{y}' dropped")
    return ("missing", f"missing '{y}'")


def edits(cand: str, target: str, limit: int = 2) -> tuple[Edit, ...] | None:
    """The edits that turn ``target`` into ``cand`` — of all optimal alignments, the most
    typo-like one — or None when more than ``limit`` edits are needed (or none)."""
    lc, lt = len(cand), len(target)
    if cand == target or abs(lc - lt) > limit:
        return None
    # each edit brings in at most one letter the other name lacks: a cheap first filter
    cs, ts = set(cand), set(target)
    if len(cs - ts) > limit or len(ts - cs) > limit:
        return None
    # Align only the part between the common prefix and suffix (the distance is the same).
    pre = 0
    while pre < lc and pre < lt and cand[pre] == target[pre]:
        pre += 1
    suf = 0
    while suf < lc - pre and suf < lt - pre and cand[lc - 1 - suf] == target[lt - 1 - suf]:
        suf += 1
    a, b = cand[pre : lc - suf], target[pre : lt - suf]
    if _osa_bits(a, b) > limit:
        return None
    table = _osa_table(a, b, limit)
    if table is None:
        return None
    best: tuple[Edit, ...] | None = None
    best_key: tuple[int, ...] = ()
    budget = [64]

    def edit(op: str, i: int, j: int, at: int) -> Edit:
        return Edit(*_classify(cand, target, op, i + pre, j + pre), at + pre)

    def walk(i: int, j: int, acc: tuple[Edit, ...]) -> None:
        nonlocal best, best_key
        if budget[0] <= 0:
            return
        if i == 0 and j == 0:
            budget[0] -= 1
            key = tuple(sorted((_cost(e, lt) for e in acc), reverse=True))
            if best is None or key < best_key:
                best, best_key = acc, key
            return
        here = table[i][j]
        if i > 0 and j > 0 and a[i - 1] == b[j - 1] and table[i - 1][j - 1] == here:
            walk(i - 1, j - 1, acc)
        if here == 0:
            return
        if (
            i > 1
            and j > 1
            and a[i - 1] == b[j - 2]
            and a[i - 2] == b[j - 1]
            and a[i - 1] != a[i - 2]
            and table[i - 2][j - 2] == here - 1
        ):
            walk(i - 2, j - 2, (edit("swap", i, j, j - 2), *acc))
        if i > 0 and j > 0 and a[i - 1] != b[j - 1] and table[i - 1][j - 1] == here - 1:
            walk(i - 1, j - 1, (edit("sub", i, j, j - 1), *acc))
        if i > 0 and table[i - 1][j] == here - 1:
            walk(i - 1, j, (edit("ins", i, j, j), *acc))
        if j > 0 and table[i][j - 1] == here - 1:
            walk(i, j - 1, (edit("del", i, j, j - 1), *acc))

    walk(len(a), len(b), ())
    return best


def _cost(e: Edit, length: int) -> int:
    """How far from a plain slip an edit of a target ``length`` letters long is: its class,
    plus one for anything but a swap or doubled letter at either end of the name (other
    projects often differ there: ``x-transformers``, ``pycryptodomex``). Another or an extra
    first letter is no typo at all (:data:`FIRST_LETTER`), unless a keyboard slip: people
    rarely get the first letter wrong, other projects often differ there (``grequests``)."""
    c = _CLASS[e.kind]
    if c == 0 or 0 < e.at < length - (e.kind != "extra"):
        return c
    if e.at == 0 and e.kind in ("lookalike", "vowel", "changed", "extra"):
        return FIRST_LETTER
    return c + 1


def typo_tier(found: Sequence[Edit], length: int) -> str | None:
    """Whether these edits of a target (or target word) ``length`` letters long read as a typo,
    and how surely: "malicious", "suspicious" or None (see ONE_EDIT_LEN and TWO_EDITS_LEN)."""
    costs = [_cost(e, length) for e in found]
    if not costs or max(costs) >= FIRST_LETTER:
        return None
    if len(costs) == 1:
        suspicious, malicious = ONE_EDIT_LEN[costs[0]]
    else:
        total = sum(c + 1 for c in costs)
        suspicious, malicious = TWO_EDITS_LEN.get(total, (None, None))
    if malicious is not None and length >= malicious:
        return "malicious"
    if suspicious is not None and length >= suspicious:
        return "suspicious"
    return None


# -- the popular list ------------------------------------------------------------------------


def parse_list(text: str) -> list[tuple[str, int]]:
    """Read the popular-names format: ``name downloads`` per line, most downloaded first;
    ``#`` starts a comment. Duplicate names (after PEP 503 normalization) keep the first."""
    rows: list[tuple[str, int]] = []
    seen: set[str] = set()
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
            raise ValueError(f"line {lineno}: expected 'name downloads', got {raw.strip()!r}")
        name = canonical(parts[0])
        if name in seen:
            continue
        seen.add(name)
        rows.append((name, int(parts[1]) if len(parts) == 2 else 0))
    return rows


def format_list(rows: Iterable[tuple[str, int]], header: Sequence[str] = ()) -> str:
    """The popular-names format (see :func:`parse_list`), with ``header`` as ``#`` comments."""
    lines = [f"# {h}".rstrip() for h in header]
    lines += [f"{canonical(name)} {downloads}" for name, downloads in rows]
    return "\n".join(lines) + "\n"


def rows_from_top_pypi(data: object, limit: int | None = None) -> list[tuple[str, int]]:
    """(name, downloads) from a hugovk/top-pypi-packages JSON document (``{"rows": [{"project",
    "download_count"}…]}``), most downloaded first."""
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise ValueError("not a top-pypi-packages document: no 'rows' list")
    rows: list[tuple[str, int]] = []
    for i, row in enumerate(data["rows"]):
        if (
            not isinstance(row, dict)
            or not isinstance(row.get("project"), str)
            or not isinstance(row.get("download_count"), int)
        ):
            raise ValueError(f"rows[{i}]: expected {{'project': str, 'download_count': int}}")
        rows.append((row["project"], row["download_count"]))
    rows.sort(key=lambda r: -r[1])
    seen: set[str] = set()
    unique = []
    for name, downloads in rows:
        key = canonical(name)
        if key not in seen:
            seen.add(key)
            unique.append((key, downloads))
    return unique[:limit] if limit is not None else unique


def _deletes(s: str) -> Iterator[str]:
    yield s
    for i in range(len(s)):
        yield s[:i] + s[i + 1 :]


def _parts(length: int) -> tuple[tuple[int, int], ...]:
    """Three parts of a name of this length: with at most two edits one is left untouched."""
    a = length // 3
    b = (2 * length) // 3
    return ((0, a), (a, b), (b, length))


_AFFIX_PREFIXES = ("python3", "python", "py3", "py")
_AFFIX_SUFFIXES = (
    "python3",
    "python",
    "py3",
    "py",
    "sdk",
    "api",
    "lib",
    "dev",
    "official",
    "latest",
    "new",
    "pkg",
    "package",
    "module",
)
_VERSION_SUFFIX = re.compile(r"^(.*?)-?v?(\d+(?:[.-]\d+)*)$")
_PYTHON_WORDS = frozenset(("py", "python", "python3", "py3"))


class PopularNames:
    """The popular projects, indexed for fast lookalike searches."""

    def __init__(self, rows: Sequence[tuple[str, int]], *, max_targets: int = MAX_TARGETS) -> None:
        self.names: list[str] = []
        self.downloads: list[int] = []
        self._rank: dict[str, int] = {}
        for name, downloads in rows:
            key = canonical(name)
            if key in self._rank:
                continue
            self._rank[key] = len(self.names) + 1
            self.names.append(key)
            self.downloads.append(downloads)
        self.floor = min(self.downloads) if self.downloads else 0
        """Fewest downloads on the list: an unlisted project has at most about this many."""
        self.targets = min(max_targets, len(self.names))
        self._skel: list[str] = []
        self._words: list[tuple[str, ...]] = []
        self._by_skel: dict[str, list[int]] = {}
        self._by_ultra: dict[str, list[int]] = {}
        self._by_visual: dict[str, list[int]] = {}
        self._by_delete: dict[str, list[int]] = {}
        self._by_part: dict[tuple[int, int, str], list[int]] = {}
        self._by_context: dict[tuple[int, tuple[str, ...]], list[int]] = {}
        self._by_bag: dict[tuple[str, ...], list[int]] = {}
        self._stem: list[str | None] = []
        for idx in range(self.targets):
            words = _words(fold(self.names[idx]))
            skel = "".join(words)
            self._skel.append(skel)
            self._words.append(words)
            u = _ultra_of(skel)
            self._by_skel.setdefault(skel, []).append(idx)
            self._by_ultra.setdefault(u, []).append(idx)
            self._by_visual.setdefault(_visual_of(skel), []).append(idx)
            stem = skel.rstrip("0123456789") if len(words) == 1 else skel
            self._stem.append(stem if stem != skel and len(stem) >= MIN_LEN_STEM else None)
            for form in (skel, self._stem[-1]):
                if form is None or len(form) < MIN_LEN_ONE_EDIT:
                    continue
                for d in set(_deletes(form)):
                    self._by_delete.setdefault(d, []).append(idx)
                if len(form) >= MIN_LEN_TWO_EDITS:
                    for part, (lo, hi) in enumerate(_parts(len(form))):
                        self._by_part.setdefault((len(form), part, form[lo:hi]), []).append(idx)
            if len(words) > 1:
                for i in range(len(words)):
                    ctx = (i, (*words[:i], "", *words[i + 1 :]))
                    self._by_context.setdefault(ctx, []).append(idx)
                self._by_bag.setdefault(tuple(sorted(words)), []).append(idx)

    @classmethod
    def load(cls, path: Path | None = None, *, max_targets: int = MAX_TARGETS) -> PopularNames:
        """The list at ``path`` (popular-names format), by default the one shipped with Stockade
        (loaded once per process)."""
        if path is None:
            return _shipped(max_targets)
        return cls(parse_list(path.read_text("utf-8")), max_targets=max_targets)

    def __len__(self) -> int:
        return len(self.names)

    def rank(self, name: str) -> int | None:
        """1-based download rank of a listed project (any spelling), else None."""
        return self._rank.get(canonical(name))

    def downloads_of(self, name: str) -> int | None:
        r = self.rank(name)
        return None if r is None else self.downloads[r - 1]

    # Candidate targets, by kind of resemblance; check_name verifies them.

    def _equal(self, skel: str) -> Iterator[tuple[int, str]]:
        """Targets equal once folded: the same skeleton, else ultra key, else visual key."""
        seen: set[int] = set()
        for how, found in (
            ("skeleton", self._by_skel.get(skel, ())),
            ("ultra", self._by_ultra.get(_ultra_of(skel), ())),
            ("visual", self._by_visual.get(_visual_of(skel), ())),
        ):
            for idx in found:
                if idx not in seen:
                    seen.add(idx)
                    yield idx, how

    def _near(self, skel: str) -> set[int]:
        """Targets whose skeleton (or unversioned stem) may be within two edits of ``skel``
        (all of those within one edit, and nearly all within two)."""
        found: set[int] = set()
        n = len(skel)
        if n >= MIN_LEN_ONE_EDIT - 1:
            for d in _deletes(skel):
                found.update(self._by_delete.get(d, ()))
        if n >= MIN_LEN_TWO_EDITS - 2:
            get = self._by_part.get
            for length in range(max(MIN_LEN_TWO_EDITS, n - 2), n + 3):
                (_, a), (_, b), _ = _parts(length)
                # an untouched first or last part stays at the start or end; the middle one may
                # have moved by up to two letters
                found.update(get((length, 0, skel[:a]), ()))
                found.update(get((length, 2, skel[n - (length - b) :]), ()))
                width = b - a
                for start in range(max(0, a - 2), min(n - width, a + 2) + 1):
                    found.update(get((length, 1, skel[start : start + width]), ()))
        return found

    def _one_word_off(self, words: tuple[str, ...]) -> Iterator[tuple[int, int]]:
        """(target, word position) for targets with the same words but one."""
        for i in range(len(words)):
            for idx in self._by_context.get((i, (*words[:i], "", *words[i + 1 :])), ()):
                yield idx, i

    def _affixed(self, folded: str, skel: str) -> Iterator[tuple[int, str]]:
        for p in _AFFIX_PREFIXES:
            if skel.startswith(p):
                for idx in self._by_skel.get(skel[len(p) :], ()):
                    yield idx, f"'{p}' prefix added"
        for s in _AFFIX_SUFFIXES:
            if skel.endswith(s):
                for idx in self._by_skel.get(skel[: -len(s)], ()):
                    yield idx, f"'{s}' suffix added"
        m = _VERSION_SUFFIX.match(folded)
        if m and m.group(1):
            for idx in self._by_skel.get(m.group(1).replace("-", ""), ()):
                yield idx, f"version suffix '{m.group(2)}' added"

    def _reordered(self, words: tuple[str, ...]) -> list[int]:
        if len(words) < 2:
            return []
        return self._by_bag.get(tuple(sorted(words)), [])


@lru_cache(maxsize=4)
def _shipped(max_targets: int, name: str = SHIPPED) -> PopularNames:
    text = resources.files("stockade.data").joinpath(name).read_text("utf-8")
    return PopularNames(parse_list(text), max_targets=max_targets)


def conda_popular(path: Path | None = None, *, max_targets: int = MAX_TARGETS) -> PopularNames:
    """The popular conda names: the list at ``path``, else the shipped one (loaded once)."""
    if path is not None:
        return PopularNames(parse_list(path.read_text("utf-8")), max_targets=max_targets)
    return _shipped(max_targets, SHIPPED_CONDA)


# -- checking --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SquatFinding:
    name: str
    target: str  # the popular project it imitates
    technique: str  # one of TECHNIQUES
    distance: float  # edits between the names, separators aside (0: a lookalike spelling)
    target_rank: int
    target_downloads: int
    severity: str  # critical | high | medium | low
    tier: str  # "malicious" | "suspicious"
    message: str  # one line: "reqeusts looks like requests (#7 on PyPI): swapped letters …"

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "target": self.target,
            "technique": self.technique,
            "distance": self.distance,
            "target_rank": self.target_rank,
            "target_downloads": self.target_downloads,
            "severity": self.severity,
            "tier": self.tier,
            "message": self.message,
        }


_TECHNIQUE_OF = {
    "swap": "swap",
    "repeat": "repeat",
    "keyboard": "keyboard",
    "lookalike": "homoglyph",
    "missing": "edit-distance",
    "vowel": "edit-distance",
    "extra": "edit-distance",
    "changed": "edit-distance",
    "plural": "edit-distance",
}


@dataclass(slots=True)
class _Match:
    technique: str
    distance: int
    detail: str
    malicious: bool


def check_name(
    name: str,
    popular: PopularNames,
    *,
    own_downloads: int | None = None,
    ignore_listing: bool = False,
) -> list[SquatFinding]:
    """Findings for ``name`` against the popular projects, most serious first (at most
    :data:`MAX_FINDINGS`, one per target).

    One of the :data:`MAX_TARGETS` most popular projects is never flagged. Another listed project
    is judged with its listed downloads; an unlisted one with ``own_downloads`` when given, else
    as a new project. Known downloads must be at most 1/:data:`GAP` of the target's.
    ``ignore_listing=True`` checks a listed name as if it were not listed (itself excluded as a
    target; downloads only from ``own_downloads``): that is how the benchmark measures false
    positives on popular projects."""
    name = name.strip()
    own_rank = popular.rank(name)
    if own_rank is not None and not ignore_listing:
        if own_rank <= popular.targets:
            return []
        if own_downloads is None:
            own_downloads = popular.downloads[own_rank - 1]
    self_idx = own_rank - 1 if own_rank is not None else -1
    min_target = 0 if own_downloads is None else GAP * own_downloads
    cname = canonical(name)
    folded = fold(name)
    words = _words(folded)
    skel = "".join(words)
    if not skel:
        return []
    # letters of another script (or lookalike Latin ones) that fold to plain Latin
    lookalike = not name.isascii() and folded != _SEP_OR_SPACE.sub(
        "-", unicodedata.normalize("NFKC", name).casefold()
    ).strip("-")
    best: dict[int, _Match] = {}

    def offer(idx: int, m: _Match) -> None:
        if idx == self_idx or popular.names[idx] == cname or popular.downloads[idx] < min_target:
            return
        if lookalike:
            m.technique, m.malicious = "homoglyph", True
            m.detail = f"letters of other scripts posing as Latin ones; {m.detail}"
        old = best.get(idx)
        if old is None or (not m.malicious, m.distance) < (not old.malicious, old.distance):
            best[idx] = m

    # 1. the same name once folded: lookalike letters, separators, l/1/i and o/0, rn/m …
    for idx, how in popular._equal(skel):
        target_skel = popular._skel[idx]
        if len(target_skel) < MIN_LEN_EQUAL:
            continue
        if how == "skeleton":
            if lookalike:
                offer(idx, _Match("homoglyph", 0, "otherwise the same name", True))
            else:
                offer(idx, _Match("separator", 0, "the same name with other separators", False))
        elif how == "ultra":
            offer(idx, _Match("normalization", 0, "l/1/i or o/0 swapped", True))
        else:
            pairs = ", ".join(
                f"'{a}' for '{b}'" for a, b in _VISUAL_PAIRS if a in skel or a in target_skel
            )
            offer(idx, _Match("homoglyph", 0, f"letter pairs that look alike ({pairs})", True))

    # 2. typos: within one word of a multi-word name, or anywhere in a one-word name (against
    # the target and against its unversioned stem: beautifulsoup4 → beautifulsoup)
    if len(words) > 1:
        for idx, i in popular._one_word_off(words):
            target_word = popular._words[idx][i]
            if len(target_word) >= MIN_LEN_ONE_EDIT and abs(len(target_word) - len(words[i])) <= 2:
                _offer_typo(offer, idx, words[i], target_word, None)
    else:
        for idx in popular._near(skel):
            target_words = popular._words[idx]
            if any(
                skel in ("".join(target_words[:k]), "".join(target_words[k:]))
                for k in range(1, len(target_words))
            ):
                continue  # words of the target left out: pydantic / pydantic-ai, tomli / tomli-w
            _offer_typo(offer, idx, skel, popular._skel[idx], popular._stem[idx])

    # 3. affixes and version suffixes
    if len(skel) > MIN_LEN_AFFIX:
        for idx, detail in popular._affixed(folded, skel):
            if len(popular._skel[idx]) >= MIN_LEN_AFFIX:
                offer(idx, _Match("prefix-suffix", 1, detail, False))

    # 4. the same words in another order
    if not _PYTHON_WORDS.intersection(words):
        for idx in popular._reordered(words):
            if idx < REORDER_MAX_RANK and popular._words[idx] != words:
                offer(idx, _Match("reorder", 1, "the same words in another order", False))

    findings = [_finding(name, idx, m, popular) for idx, m in best.items()]
    findings.sort(key=lambda f: (f.tier != "malicious", f.distance, f.target_rank))
    return findings[:MAX_FINDINGS]


def _offer_typo(
    offer: Callable[[int, _Match], None], idx: int, cand: str, target: str, stem: str | None
) -> None:
    """Offer the most certain typo reading of ``cand`` against ``target`` (or its stem)."""
    chosen: _Match | None = None
    for form in (target, stem):
        if form is None:
            continue
        found = edits(cand, form)
        tier = None if found is None else typo_tier(found, len(form))
        if found is None or tier is None:
            continue
        kinds = {_TECHNIQUE_OF[e.kind] for e in found}
        m = _Match(
            kinds.pop() if len(kinds) == 1 else "edit-distance",
            len(found),
            ", ".join(e.text for e in found) + ("" if form is target else f" (of '{form}')"),
            tier == "malicious",
        )
        if chosen is None or (not m.malicious, m.distance) < (
            not chosen.malicious,
            chosen.distance,
        ):
            chosen = m
    if chosen is not None:
        offer(idx, chosen)


_DESCRIBE = {
    "homoglyph": "lookalike letters",
    "normalization": "confusable letters",
    "separator": "separator confusion",
    "swap": "swapped letters",
    "repeat": "repeated letter",
    "keyboard": "keyboard slip",
    "edit-distance": "misspelling",
    "prefix-suffix": "prefix/suffix trick",
    "reorder": "reordered words",
}


def _finding(name: str, idx: int, m: _Match, popular: PopularNames) -> SquatFinding:
    rank = idx + 1
    tier = "malicious" if m.malicious else "suspicious"
    if m.malicious:
        severity = "critical" if rank <= SEVERE_RANK else "high"
    else:
        severity = "medium" if rank <= SEVERE_RANK else "low"
    target = popular.names[idx]
    return SquatFinding(
        name=name,
        target=target,
        technique=m.technique,
        distance=float(m.distance),
        target_rank=rank,
        target_downloads=popular.downloads[idx],
        severity=severity,
        tier=tier,
        message=f"{name} looks like {target} (#{rank} on PyPI): "
        f"{_DESCRIBE[m.technique]}, {m.detail}",
    )


def list_header(data: object, count: int, written: str, origin: str) -> list[str]:
    """Header comment lines for a list made from a top-pypi-packages document."""
    meta = data if isinstance(data, dict) else {}
    return [
        f"Stockade popular PyPI projects: the {count:,} most-downloaded projects over 30 days.",
        "Source: hugovk/top-pypi-packages (https://github.com/hugovk/top-pypi-packages), "
        "aggregate public PyPI download statistics;",
        f"  file {origin}, last_update {meta.get('last_update', '?')}, "
        f"source {meta.get('source', '?')}.",
        f"Written {written} by `stockade names refresh`.",
        "Format: 'name downloads' per line, PEP 503 names, most downloaded first "
        "(rank = line number among the data lines).",
    ]
