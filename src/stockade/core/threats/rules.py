"""The data-driven rule set of the malware scanner (``stockade/data/threat_rules.toml``).

A rule file has ``[tags.NAME]`` (what code does or contains: call patterns, references,
imports, string regexes) and ``[[rule]]`` entries (conditions over tags, a severity, a
description). Adding a rule or a tag means editing the TOML only; the format is described at
the top of the shipped file. Loading validates everything and says where a mistake is.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Final

__all__ = [
    "CONTEXTS",
    "SEVERITIES",
    "Condition",
    "Rule",
    "RuleError",
    "RuleSet",
    "StringPattern",
    "Tag",
    "load_rules",
    "load_rules_text",
]

SEVERITIES: Final = ("low", "medium", "high", "critical")
# How code gets to run, strongest first; the first three are "eager" (no call needed).
CONTEXTS: Final = ("startup", "install", "import", "runtime", "test")
EAGER: Final = frozenset({"startup", "install", "import"})

# Tags the engine emits itself; rules may use them without a [tags] entry.
ENGINE_TAGS: Final = frozenset(
    {
        "archive_traversal",
        "url_requirement",
        "tool_description",
        "archive_absolute",
        "archive_link_escape",
        "archive_special",
        "archive_bomb",
        "archive_overlap",
        "archive_duplicate",
        "archive_too_many",
        "archive_corrupt",
        "archive_too_deep",
        "archive_encrypted",
        "member_truncated",
        "scan_budget",
        "pyc_file",
        "native_binary",
        "pth_code",
        "python_unparsable",
        "python_too_large",
        "long_blob",
        "exec_payload",
        "exec_bundled",
        "obf_builtins",
        "text_ioc",
        "hidden_code",
        "padding",
        "exec_ref",
    }
)
# Labels the engine attaches itself (besides tag names).
ENGINE_LABELS: Final = frozenset({"pe", "elf", "macho", "pe_unexpected", "literal", "net_program"})


class RuleError(ValueError):
    """A rule file is invalid; the message names the entry and what is wrong."""


@dataclass(frozen=True, slots=True)
class StringPattern:
    regex: re.Pattern[str]
    public_ip: bool = False


@dataclass(frozen=True, slots=True)
class Tag:
    name: str
    description: str
    calls: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    refs: tuple[str, ...] = ()
    imports: tuple[str, ...] = ()
    strings: tuple[StringPattern, ...] = ()
    needles: tuple[str, ...] = ()  # lower-case; a string is tested only if one occurs
    min_len: int = 0
    max_len: int = 1 << 30
    mode_exec: bool = False
    text: bool = False  # also matched on non-Python text members
    params: tuple[re.Pattern[str], ...] = ()  # function parameter names carrying this label
    command: bool = False  # strings count only as command lines (what a process runs)


@dataclass(frozen=True, slots=True)
class Condition:
    """``tag`` or ``tag[label,label&label]``; alternatives are separate Conditions."""

    tag: str
    labels: tuple[frozenset[str], ...] = ()  # any of these groups, each fully present

    def matches(self, tag: str, labels: frozenset[str]) -> bool:
        if tag != self.tag:
            return False
        if not self.labels:
            return True
        return any(g <= labels for g in self.labels)


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    severity: str
    description: str
    when: tuple[tuple[Condition, ...], ...]  # AND of ORs
    unit: str = "scope"
    runtime: str | None = None  # severity when the anchor is not eager; None = no finding
    # the eager contexts `severity` applies to (default all three); others get `runtime`
    contexts: frozenset[str] = frozenset({"startup", "install", "import"})


@dataclass(slots=True)
class RuleSet:
    tags: dict[str, Tag]
    rules: tuple[Rule, ...]
    points: dict[str, float]
    malicious: float
    suspicious: float
    version: int = 1
    ignore_keywords: frozenset[str] = frozenset()
    ignore_positions: tuple[tuple[re.Pattern[str], frozenset[int]], ...] = ()
    _call_cache: dict[str, frozenset[str]] = field(default_factory=dict)
    _call_exact: dict[str, set[str]] = field(default_factory=dict)
    _call_globs: list[tuple[re.Pattern[str], str]] = field(default_factory=list)
    _excl: list[tuple[re.Pattern[str], str]] = field(default_factory=list)
    _refs: dict[str, frozenset[str]] = field(default_factory=dict)
    _imports: list[tuple[re.Pattern[str], str]] = field(default_factory=list)
    _params: list[tuple[re.Pattern[str], str]] = field(default_factory=list)
    string_tags: tuple[Tag, ...] = ()
    text_tags: tuple[Tag, ...] = ()
    # tags that rules use as events (not only as labels): string matches of these tags are
    # events of their own; the others only label the values they are found in
    event_tags: frozenset[str] = frozenset()
    label_cache: dict[str, frozenset[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.event_tags = frozenset(c.tag for r in self.rules for g in r.when for c in g)
        for t in self.tags.values():
            for pat in t.calls:
                if any(c in pat for c in "*?["):
                    self._call_globs.append((re.compile(fnmatch.translate(pat)), t.name))
                else:
                    self._call_exact.setdefault(pat, set()).add(t.name)
            for pat in t.exclude:
                self._excl.append((re.compile(fnmatch.translate(pat)), t.name))
            for r in t.refs:
                self._refs[r] = self._refs.get(r, frozenset()) | {t.name}
            for pat in t.imports:
                self._imports.append((re.compile(fnmatch.translate(pat)), t.name))
            for rx in t.params:
                self._params.append((rx, t.name))
        self.string_tags = tuple(t for t in self.tags.values() if t.strings)
        self.text_tags = tuple(t for t in self.string_tags if t.text or t.command)

    def call_tags(self, dotted: str) -> frozenset[str]:
        """Tags of a call to the resolved name ``dotted`` (cached)."""
        hit = self._call_cache.get(dotted)
        if hit is not None:
            return hit
        found = set(self._call_exact.get(dotted, ()))
        for rx, name in self._call_globs:
            if name not in found and rx.match(dotted):
                found.add(name)
        for rx, name in self._excl:
            if name in found and rx.match(dotted):
                found.discard(name)
        res = frozenset(found)
        if len(self._call_cache) < 100_000:
            self._call_cache[dotted] = res
        return res

    def ignored_positions(self, dotted: str) -> frozenset[int]:
        out: frozenset[int] = frozenset()
        for rx, pos in self.ignore_positions:
            if rx.match(dotted):
                out |= pos
        return out

    def param_tags(self, name: str) -> frozenset[str]:
        if not self._params:
            return frozenset()
        return frozenset(t for rx, t in self._params if rx.fullmatch(name))

    def ref_tags(self, dotted: str) -> frozenset[str]:
        return self._refs.get(dotted, frozenset())

    def import_tags(self, module: str) -> frozenset[str]:
        return frozenset(name for rx, name in self._imports if rx.match(module))


def _str_list(entry: str, key: str, v: Any) -> tuple[str, ...]:
    if v is None:
        return ()
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise RuleError(f"{entry}: `{key}` must be a list of strings")
    return tuple(v)


def _parse_condition(entry: str, text: str, known: set[str]) -> tuple[Condition, ...]:
    alts = []
    for alt in text.split("|"):
        alt = alt.strip()
        m = re.fullmatch(r"([a-z_][a-z0-9_]*)(?:\[([a-z0-9_,&\s]+)\])?", alt)
        if not m:
            raise RuleError(f"{entry}: cannot read condition {text!r} (write tag or tag[label,…])")
        tag = m.group(1)
        if tag not in known:
            raise RuleError(f"{entry}: condition {text!r} names unknown tag {tag!r}")
        groups: list[frozenset[str]] = []
        if m.group(2):
            for g in m.group(2).split(","):
                labels = frozenset(x.strip() for x in g.split("&") if x.strip())
                bad = [x for x in labels if x not in known and x not in ENGINE_LABELS]
                if bad:
                    raise RuleError(f"{entry}: condition {text!r} names unknown label(s) {bad}")
                if labels:
                    groups.append(labels)
        alts.append(Condition(tag, tuple(groups)))
    return tuple(alts)


def _build(doc: Mapping[str, Any]) -> RuleSet:
    tags: dict[str, Tag] = {}
    raw_tags = doc.get("tags", {})
    if not isinstance(raw_tags, dict):
        raise RuleError("`tags` must be a table of [tags.NAME] entries")
    for name, t in raw_tags.items():
        entry = f"[tags.{name}]"
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            raise RuleError(f"{entry}: tag names are lower_snake_case")
        if name in ENGINE_TAGS:
            raise RuleError(f"{entry}: {name!r} is emitted by the engine; choose another name")
        if not isinstance(t, dict):
            raise RuleError(f"{entry}: must be a table")
        unknown = set(t) - {
            "description",
            "calls",
            "exclude",
            "refs",
            "imports",
            "strings",
            "needles",
            "min_len",
            "max_len",
            "mode_exec",
            "text",
            "public_ip",
            "params",
            "command",
        }
        if unknown:
            raise RuleError(f"{entry}: unknown key(s) {sorted(unknown)}")
        pats = []
        for s in _str_list(entry, "strings", t.get("strings")):
            try:
                pats.append(StringPattern(re.compile(s), bool(t.get("public_ip", False))))
            except re.error as exc:
                raise RuleError(f"{entry}: bad regex {s!r}: {exc}") from None
        params = []
        for s in _str_list(entry, "params", t.get("params")):
            try:
                params.append(re.compile(s))
            except re.error as exc:
                raise RuleError(f"{entry}: bad regex {s!r}: {exc}") from None
        tags[name] = Tag(
            name=name,
            description=str(t.get("description", "")),
            calls=_str_list(entry, "calls", t.get("calls")),
            exclude=_str_list(entry, "exclude", t.get("exclude")),
            refs=_str_list(entry, "refs", t.get("refs")),
            imports=_str_list(entry, "imports", t.get("imports")),
            strings=tuple(pats),
            needles=tuple(n.lower() for n in _str_list(entry, "needles", t.get("needles"))),
            min_len=int(t.get("min_len", 0)),
            max_len=int(t.get("max_len", 1 << 30)),
            mode_exec=bool(t.get("mode_exec", False)),
            text=bool(t.get("text", False)),
            params=tuple(params),
            command=bool(t.get("command", False)),
        )
        if not (tags[name].calls or tags[name].refs or tags[name].imports or pats or params):
            raise RuleError(f"{entry}: give calls, refs, imports or strings")
    known = set(tags) | set(ENGINE_TAGS)
    rules: list[Rule] = []
    seen: set[str] = set()
    raw_rules = doc.get("rule", [])
    if not isinstance(raw_rules, list):
        raise RuleError("rules are [[rule]] entries")
    for i, r in enumerate(raw_rules, 1):
        entry = f"[[rule]] #{i}"
        if not isinstance(r, dict):
            raise RuleError(f"{entry}: must be a table")
        rid = r.get("id")
        if not isinstance(rid, str) or not re.fullmatch(r"[a-z0-9][a-z0-9-]*", rid):
            raise RuleError(f"{entry}: `id` is required, lower-case-with-dashes")
        entry = f"[[rule]] {rid!r}"
        if rid in seen:
            raise RuleError(f"{entry}: duplicate id")
        seen.add(rid)
        unknown = set(r) - {"id", "severity", "description", "when", "unit", "runtime", "contexts"}
        if unknown:
            raise RuleError(f"{entry}: unknown key(s) {sorted(unknown)}")
        sev = r.get("severity")
        if sev not in SEVERITIES:
            raise RuleError(f"{entry}: severity must be one of {', '.join(SEVERITIES)}")
        runtime = r.get("runtime", sev)
        if runtime not in (*SEVERITIES, "none"):
            raise RuleError(f"{entry}: runtime must be a severity or 'none'")
        desc = r.get("description")
        if not isinstance(desc, str) or not desc.strip():
            raise RuleError(f"{entry}: `description` is required")
        unit = r.get("unit", "scope")
        if unit not in ("scope", "file", "package"):
            raise RuleError(f"{entry}: unit must be scope, file or package")
        when = _str_list(entry, "when", r.get("when"))
        if not when:
            raise RuleError(f"{entry}: `when` needs at least one condition")
        rules.append(
            Rule(
                id=rid,
                severity=sev,
                description=desc.strip(),
                when=tuple(_parse_condition(entry, c, known) for c in when),
                unit=unit,
                runtime=None if runtime == "none" else runtime,
                contexts=frozenset(_contexts(entry, r.get("contexts"))),
            )
        )
    args = doc.get("args", {})
    if not isinstance(args, dict):
        raise RuleError("`args` must be a table")
    ign_kw = frozenset(_str_list("[args]", "ignore_keywords", args.get("ignore_keywords")))
    ign_pos = []
    for pat, pos in dict(args.get("ignore_positions", {})).items():
        if not isinstance(pos, list) or not all(isinstance(x, int) for x in pos):
            raise RuleError(f"[args] ignore_positions {pat!r}: give a list of integers")
        ign_pos.append((re.compile(fnmatch.translate(pat)), frozenset(pos)))
    scoring = doc.get("scoring", {})
    pts = {"low": 0.5, "medium": 2.0, "high": 5.0, "critical": 10.0}
    pts.update({k: float(v) for k, v in scoring.get("points", {}).items() if k in pts})
    return RuleSet(
        tags=tags,
        rules=tuple(rules),
        points=pts,
        malicious=float(scoring.get("malicious", 15.0)),
        suspicious=float(scoring.get("suspicious", 6.0)),
        version=int(doc.get("version", 1)),
        ignore_keywords=ign_kw,
        ignore_positions=tuple(ign_pos),
    )


def _contexts(entry: str, v: Any) -> tuple[str, ...]:
    if v is None:
        return ("startup", "install", "import")
    got = _str_list(entry, "contexts", v)
    bad = [c for c in got if c not in EAGER]
    if bad or not got:
        raise RuleError(f"{entry}: contexts are some of startup, install, import (got {bad})")
    return got


def load_rules_text(text: str) -> RuleSet:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RuleError(f"rule file is not valid TOML: {exc}") from None
    return _build(doc)


def load_rules(path: Path | None = None) -> RuleSet:
    """Load a rule file; without a path, the one shipped in ``stockade.data``."""
    if path is None:
        text = resources.files("stockade.data").joinpath("threat_rules.toml").read_text("utf-8")
    else:
        text = Path(path).read_text("utf-8")
    return load_rules_text(text)
