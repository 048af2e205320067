"""String tags: which ``[tags]`` patterns a string (a constant, a folded value, a line of text)
matches, with the static decoding of the payloads hidden in strings (PowerShell
``-EncodedCommand``, long base64 text)."""

from __future__ import annotations

import ipaddress
import math
import re
from collections import Counter
from collections.abc import Iterable
from typing import Final

from stockade.core.threats.decode import b64_text
from stockade.core.threats.rules import RuleSet, StringPattern, Tag

__all__ = ["StringMatcher", "entropy", "is_public_ip", "shell_normalize"]

# Public resolvers and connectivity-check targets: connecting to them is how much benign code
# finds its own address, so they are not "raw IP" indicators.
_BENIGN_PUBLIC: Final = frozenset(
    {"8.8.8.8", "8.8.4.4", "1.1.1.1", "1.0.0.1", "9.9.9.9", "149.112.112.112", "208.67.222.222"}
)
_PS_ENC: Final = re.compile(
    r"(?i)\s-(?:e|ec|enc|enco|encodedcommand)\s+['\"]?([A-Za-z0-9+/=]{16,})"
)
_B64_RUN: Final = re.compile(r"[A-Za-z0-9+/]{60,}={0,2}")


_SHELL_NOISE: Final = re.compile(r"[\"'`^]")
_DASHES: Final = re.compile("[\u2010-\u2015\u2212\ufe58\ufe63\uff0d]")


def shell_normalize(cmd: str) -> str:
    """A command line without the quoting and escape tricks shells ignore (``In"vok"e``,
    ``p^o^w^e^r``, PowerShell backticks) and with look-alike dashes made ASCII."""
    return " ".join(_DASHES.sub("-", _SHELL_NOISE.sub("", cmd)).split())


def is_public_ip(text: str) -> bool:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return False
    return ip.is_global and not ip.is_multicast and text not in _BENIGN_PUBLIC


def entropy(sample: str | bytes) -> float:
    """Shannon entropy in bits per symbol."""
    if not sample:
        return 0.0
    n = len(sample)
    return -sum(c / n * math.log2(c / n) for c in Counter(sample).values())


class StringMatcher:
    """Matches string tags; results for short strings are cached."""

    def __init__(self, rules: RuleSet) -> None:
        # tags whose strings only mean something as a command line (`env`, `whoami`) are
        # matched on command lines only, never on ordinary constants
        self.all_tags = rules.string_tags
        self.tags = tuple(t for t in rules.string_tags if not t.command)
        self.text_tags = rules.text_tags
        self._cache = rules.label_cache  # shared by every scan with these rules
        # one search per tag instead of one per needle
        self._needles: dict[str, re.Pattern[str] | None] = {
            t.name: re.compile("|".join(re.escape(n) for n in t.needles))
            if t.needles and all(t.needles)
            else None
            for t in self.all_tags
        }

    def active(self, low_text: str, tags: Iterable[Tag] | None = None) -> tuple[Tag, ...]:
        """The tags one of whose needles occurs in ``low_text`` (lower-cased)."""
        out = []
        for t in self.tags if tags is None else tags:
            if not t.needles or any(n in low_text for n in t.needles):
                out.append(t)
        return tuple(out)

    def labels(self, s: str, tags: tuple[Tag, ...] | None = None, depth: int = 0) -> frozenset[str]:
        """Names of the tags ``s`` matches, including in what it statically decodes to."""
        if not s or len(s) > 4_000_000:
            return frozenset()
        cacheable = tags is None and len(s) <= 512
        if cacheable:
            hit = self._cache.get(s)
            if hit is not None:
                return hit
        low = s.lower()
        if len(s) > 8192:
            # big values (data, built text): regexes only around needles, like raw text
            hits = self.find(s, self.active(low), low)
            return frozenset(t for t, _ in hits)
        found: set[str] = set()
        needles = self._needles
        for t in tags if tags is not None else self.tags:
            if not (t.min_len <= len(s) <= t.max_len):
                continue
            rx = needles.get(t.name)
            if rx is not None and not rx.search(low):
                continue
            for p in t.strings:
                if p.public_ip:
                    if any(is_public_ip(m.group(1)) for m in p.regex.finditer(s)):
                        found.add(t.name)
                        break
                elif p.regex.search(s):
                    found.add(t.name)
                    break
        if depth < 2 and len(s) >= 16:
            for m in _PS_ENC.finditer(s):
                dec = b64_text(m.group(1), min_len=16)
                if dec:
                    found |= self.labels(dec, None, depth + 1)
            if len(s) >= 60 and len(s) <= 1_000_000:
                for m in _B64_RUN.finditer(s):
                    dec = b64_text(m.group(0), min_len=60)
                    if dec:
                        found |= self.labels(dec, None, depth + 1)
                    break  # the first long run only: bounded work on data blobs
        res = frozenset(found)
        if cacheable:
            if len(self._cache) >= 200_000:
                self._cache.clear()
            self._cache[s] = res
        return res

    def command_labels(self, cmd: str) -> frozenset[str]:
        """Labels of a command line: every string tag, command-only ones included."""
        if not cmd or len(cmd) > 65536:
            return frozenset()
        return self.labels(cmd) | self.labels(cmd, tuple(t for t in self.all_tags if t.command))

    def find(
        self, text: str, tags: tuple[Tag, ...], low: str | None = None
    ) -> list[tuple[str, int]]:
        """(tag, offset) of the first match of each tag in a larger text. Patterns anchored to
        a whole string (``^...$``) are for constants and are skipped; the others run only on
        windows around their needles, so the work is bounded on big minified files."""
        if low is None:
            low = text.lower()
        out = []
        for t in tags:
            pats = [p for p in t.strings if not p.regex.pattern.startswith(("^", "(?i)^"))]
            if not pats:
                continue
            found = self._find_tag(text, low, t, pats)
            if found is not None:
                out.append((t.name, found))
        return out

    def _find_tag(self, text: str, low: str, t: Tag, pats: list[StringPattern]) -> int | None:
        if not t.needles or len(text) <= 65536:
            spans = [(0, len(text))]
        else:
            spans = []
            for n in t.needles:
                if len(n) < 2:
                    continue
                pos = low.find(n)
                k = 0
                while pos >= 0 and k < 64:
                    spans.append((max(0, pos - 600), pos + 600))
                    pos = low.find(n, pos + len(n) + 600)
                    k += 1
            if not spans and all(len(n) < 2 for n in t.needles):
                spans = [(0, len(text))]
            spans.sort()
        for a, b in spans:
            chunk = text[a:b]
            for p in pats:
                if p.public_ip:
                    m = next((m for m in p.regex.finditer(chunk) if is_public_ip(m.group(1))), None)
                else:
                    m = p.regex.search(chunk)
                if m is not None:
                    return a + m.start()
        return None
