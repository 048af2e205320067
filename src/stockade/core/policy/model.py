"""Policy documents (TOML) and their evaluation.

A policy is a list of rules; each rule has a ``kind``, options, and a ``mode``: ``enforce``
(blocks) or ``warn`` (reported, never blocks). Evaluation is pure: it takes the facts about one
file and returns a :class:`Decision` listing every rule that objected, with the data that made
it object ("PYSEC-2019-217 (high) ≥ high"). Example::

    [[rules]]
    kind = "vulnerabilities"   # block versions with an effective vulnerability
    severity = "high"          # at or above: any | low | medium | high | critical
    only_fixed = false         # true: only when a fixed version exists
    grace_days = 0             # do not block before N days after the advisory's publication
    unknown_severity = "allow" # or "block": an advisory without a rating counts as reaching it

    [[rules]]
    kind = "names"
    deny = ["evil-*", "requests<2.20"]   # globs on PEP 503 names, optional version specifiers
    allow = []                           # with allow_only = true, nothing else is served
    allow_only = false

    [[rules]]
    kind = "age"               # quarantine: files published upstream less than N days ago
    min_days = 7

    [[rules]]
    kind = "yanked"
    action = "hide"            # or "serve"

    [[rules]]
    kind = "license"           # SPDX ids, expressions or globs, read from the core metadata
    deny = ["GPL-*", "AGPL-*"]
    allow = []                 # non-empty: only these
    unknown = "allow"          # or "block": no licence in the metadata, or not read yet

    [[rules]]
    kind = "threats"           # findings of the threat checks and known-malicious feeds
    block = ["malicious"]      # tiers: malicious, suspicious

    [[rules]]
    kind = "require_provenance"  # PEP 740: files without verified provenance are blocked
    projects = ["*"]             # name patterns (globs, optional version specifiers)

    [[rules]]
    kind = "publisher"           # the Trusted Publisher a project must come from (PEP 740)
    project = "sampleproject"    # a name pattern
    repository = "pypa/sampleproject"  # or email = "…" (Google); optional: publisher = "GitHub",
                                       # workflow = "release.yml", environment = "pypi"

    [[rules]]
    kind = "custom"            # a CEL expression over the file's facts (see core.policy.cel)
    name = "big-sdists"
    block_if = 'kind == "sdist" && size > 50000000'
    message = "sdists over 50 MB need a review"

Blocked files are listed on simple pages as yanked (PEP 592), with the reason, so resolvers
skip them and a pinned install shows why; downloading one is refused (403). With the top-level
``blocked_files = "hidden"`` they are left off the pages instead.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion

from stockade.core.policy.cel import FACT_TYPES, CelError, compile_rule, facts_for, referenced
from stockade.core.policy.licenses import LicenseMatcher
from stockade.core.provenance import Publisher
from stockade.core.vulns.versions import PYPI
from stockade.errors import InvalidRequest

RATINGS = ("none", "low", "medium", "high", "critical")
SEVERITIES = ("any", *RATINGS[1:])
KINDS = (
    "vulnerabilities",
    "names",
    "age",
    "yanked",
    "license",
    "threats",
    "require_provenance",
    "publisher",
    "custom",
)
PUBLISHER_KINDS = ("GitHub", "GitLab", "Google", "CircleCI")
TIERS = ("malicious", "suspicious")
MODES = ("enforce", "warn")
NOT_ALLOWED = "is not on the allow-list (allow_only); an admin can approve it"


class PolicyError(InvalidRequest):
    """A policy document is malformed; the message names the line and the problem."""


@dataclass(frozen=True, slots=True)
class VulnFact:
    id: str
    severity: str | None  # effective rating (curation applied), None when unknown
    score: float | None
    status: str  # effective status: affected | not_affected | under_investigation | fixed
    fixed_versions: tuple[str, ...] = ()
    published: datetime | None = None


@dataclass(frozen=True, slots=True)
class FindingFact:
    """A threat check's finding about a file, or a known-malicious feed's entry."""

    rule: str
    severity: str
    tier: str  # malicious | suspicious
    message: str


@dataclass(slots=True)
class FileFacts:  # not frozen: built once per file of every page decision, construction matters
    project: str  # PEP 503 normalized
    version: str | None
    filename: str
    yanked: bool = False
    upload_time: datetime | None = None
    vulns: tuple[VulnFact, ...] = ()
    size: int | None = None
    license: str | None = None  # normalized SPDX expression from the core metadata
    license_known: bool = False  # whether the metadata was read (license None: none in it)
    findings: tuple[FindingFact, ...] = ()
    # PEP 740: True verified; False none offered, or refused; None offered, not verified yet
    provenance: bool | None = None
    publishers: tuple[Publisher, ...] = ()  # of the verified provenance
    index: str = ""
    approved: bool = False  # an admin approved it for this index's allow-lists
    ecosystem: str = "PyPI"  # "conda" for records of conda channels

    @property
    def kind(self) -> str:
        if self.ecosystem == "conda":
            return "conda"  # .conda and .tar.bz2 packages alike
        name = self.filename.lower()
        if name.endswith(".whl"):
            return "wheel"
        if name.endswith(".conda"):
            return "conda"
        if name.endswith((".tar.gz", ".zip", ".tar.bz2", ".tgz", ".tar.xz")):
            return "sdist"
        return "other"


@dataclass(frozen=True, slots=True)
class Reason:
    rule: int  # index in the policy, from 1
    kind: str
    mode: str
    message: str
    requestable: bool = False  # an allow-list refusal: users may request an approval

    def line(self) -> str:
        if self.rule == 0:  # not one of this policy's rules (a member index's block)
            return self.message
        return f"rule {self.rule} ({self.kind}{', warn' if self.mode == 'warn' else ''}): " + (
            self.message
        )


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    blocks: tuple[Reason, ...] = ()
    warnings: tuple[Reason, ...] = ()
    exception: str | None = None  # why an exception let a blocked file through

    def summary(self) -> str:
        if self.exception:
            return f"allowed by exception ({self.exception})"
        if self.allowed:
            return "allowed" + (f" (warn: {self.warnings[0].message})" if self.warnings else "")
        return "blocked by " + "; ".join(r.line() for r in self.blocks)

    def excepted(self, why: str) -> Decision:
        """This decision overridden by an exception: allowed, the blocks kept as warnings."""
        return Decision(True, (), self.warnings + self.blocks, why)


def member_block(origin: str | None, why: str) -> Decision:
    """A file a member index's policy blocked, as seen through a virtual index: it stays
    blocked (an exception belongs on the member index, whose policy made the decision)."""
    where = f"index {origin!r}" if origin else "a member index"
    return Decision(False, (Reason(0, "member", "enforce", f"{why} (policy of {where})"),))


@dataclass(frozen=True, slots=True)
class Rule:
    index: int
    kind: str
    mode: str
    options: dict[str, Any] = field(default_factory=dict)
    line: int | None = None


@dataclass(frozen=True, slots=True)
class Policy:
    rules: tuple[Rule, ...]
    text: str = ""
    show_blocked: bool = True  # blocked_files = "yanked" (default) | "hidden"
    # The rules by how evaluate() treats them: version-level, per file, custom (CEL).
    by_cost: tuple[tuple[Rule, ...], tuple[Rule, ...], tuple[Rule, ...]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        version = tuple(r for r in self.rules if r.kind in _VERSION_LEVEL)
        custom = tuple(r for r in self.rules if r.kind == "custom")
        per_file = tuple(r for r in self.rules if r not in version and r not in custom)
        object.__setattr__(self, "by_cost", (version, per_file, custom))

    @property
    def time_based(self) -> bool:
        """Whether decisions can change with time alone (quarantine, grace periods)."""
        return any(
            (r.kind == "age" and r.options["min_days"])
            or (r.kind == "vulnerabilities" and r.options["grace_days"])
            for r in self.rules
        )

    def next_change(self, upload_times: list[datetime], now: datetime) -> datetime | None:
        """The earliest moment a quarantine ends for one of these files (after ``now``)."""
        ends = [
            t + timedelta(days=r.options["min_days"])
            for r in self.rules
            if r.kind == "age" and r.options["min_days"]
            for t in upload_times
        ]
        later = [e for e in ends if e > now]
        return min(later) if later else None

    @property
    def has_custom(self) -> bool:
        return any(r.kind == "custom" for r in self.rules)

    @property
    def needs_scan(self) -> bool:
        """Whether decisions use the malware scanner's verdicts (an enforcing threats rule)."""
        return any(r.kind == "threats" for r in self.rules)

    @property
    def needs_advisories(self) -> bool:
        """Whether decisions read the advisories: a vulnerabilities rule, a threats rule (the
        known-malicious feeds are advisories), or a custom rule naming vulns, max_severity or
        findings."""
        return any(
            r.kind in ("vulnerabilities", "threats")
            or (
                r.kind == "custom"
                and {"vulns", "max_severity", "findings"} & set(r.options["uses"])
            )
            for r in self.rules
        )

    @property
    def needs_metadata(self) -> bool:
        """Whether decisions need facts from the files' core metadata (licences)."""
        return any(
            r.kind == "license"
            or (r.kind == "custom" and "license" in r.options["program"].expression)
            for r in self.rules
        )

    @property
    def needs_provenance(self) -> bool:
        """Whether decisions need the files' verified PEP 740 provenance."""
        return any(
            r.kind in ("require_provenance", "publisher")
            or (r.kind == "custom" and {"provenance", "publisher"} & set(r.options["uses"]))
            for r in self.rules
        )

    @property
    def hides_yanked(self) -> bool:
        return any(
            r.kind == "yanked" and r.options["action"] == "hide" and r.mode == "enforce"
            for r in self.rules
        )


# -- parsing -----------------------------------------------------------------------------------


def _rule_lines(text: str) -> list[int]:
    return [i for i, line in enumerate(text.splitlines(), 1) if line.strip() == "[[rules]]"]


def parse_policy(text: str) -> Policy:
    """Parse and validate a policy document; PolicyError names the line of any problem."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"policy is not valid TOML: {exc}", "fix the line it names") from exc
    unknown = sorted(set(doc) - {"rules", "blocked_files"})
    if unknown:
        raise PolicyError(
            f"unknown top-level key(s) {unknown}",
            "a policy is a list of [[rules]] tables and, optionally, blocked_files",
        )
    shown = doc.get("blocked_files", "yanked")
    if shown not in ("yanked", "hidden"):
        raise PolicyError(
            f'blocked_files must be "yanked" or "hidden", not {shown!r}',
            "yanked: listed with the reason, so pinned installs show it; hidden: left off pages",
        )
    rules_raw = doc.get("rules", [])
    if not isinstance(rules_raw, list):
        raise PolicyError("'rules' must be an array of tables", "write each rule as [[rules]]")
    lines = _rule_lines(text)
    rules = []
    for i, raw in enumerate(rules_raw, 1):
        where = f"rule {i}" + (f" (line {lines[i - 1]})" if i <= len(lines) else "")
        if not isinstance(raw, dict):
            raise PolicyError(f"{where}: a rule must be a table")
        rules.append(_rule(i, dict(raw), where, lines[i - 1] if i <= len(lines) else None))
    return Policy(tuple(rules), text, show_blocked=shown == "yanked")


def _take(
    raw: dict[str, Any], key: str, kind: type | tuple[type, ...], default: Any, where: str
) -> Any:
    value = raw.pop(key, default)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float)):
        want = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise PolicyError(f"{where}: {key} must be a {want}, not {value!r}")
    return value


def _rule(index: int, raw: dict[str, Any], where: str, line: int | None) -> Rule:
    kind = _take(raw, "kind", str, "", where)
    if kind not in KINDS:
        raise PolicyError(f"{where}: unknown kind {kind!r}", f"use one of {', '.join(KINDS)}")
    mode = _take(raw, "mode", str, "enforce", where)
    if mode not in MODES:
        raise PolicyError(f"{where}: mode must be enforce or warn, not {mode!r}")
    opts: dict[str, Any] = {}
    if kind == "vulnerabilities":
        sev = _take(raw, "severity", str, "any", where)
        if sev not in SEVERITIES:
            raise PolicyError(f"{where}: severity {sev!r}", f"use one of {', '.join(SEVERITIES)}")
        opts["severity"] = sev
        opts["only_fixed"] = _take(raw, "only_fixed", bool, False, where)
        opts["grace_days"] = _take(raw, "grace_days", int, 0, where)
        unknown = _take(raw, "unknown_severity", str, "allow", where)
        if unknown not in ("allow", "block"):
            raise PolicyError(f"{where}: unknown_severity must be allow or block, not {unknown!r}")
        opts["unknown_severity"] = unknown
    elif kind == "names":
        opts["deny"] = [_pattern(p, where) for p in _take(raw, "deny", list, [], where)]
        opts["allow"] = [_pattern(p, where) for p in _take(raw, "allow", list, [], where)]
        opts["allow_only"] = _take(raw, "allow_only", bool, False, where)
    elif kind == "age":
        days = _take(raw, "min_days", (int, float), 0, where)
        if days < 0:
            raise PolicyError(f"{where}: min_days must not be negative")
        opts["min_days"] = float(days)
        opts["min_age"] = timedelta(days=float(days))
    elif kind == "yanked":
        action = _take(raw, "action", str, "hide", where)
        if action not in ("hide", "serve"):
            raise PolicyError(f"{where}: action must be hide or serve, not {action!r}")
        opts["action"] = action
    elif kind == "license":
        allow = [str(x) for x in _take(raw, "allow", list, [], where)]
        deny = [str(x) for x in _take(raw, "deny", list, [], where)]
        try:
            opts["matcher"] = LicenseMatcher(allow=allow, deny=deny)
        except ValueError as exc:
            raise PolicyError(
                f"{where}: {exc}", "use SPDX ids (MIT), expressions or globs (GPL-*)"
            ) from exc
        unknown = _take(raw, "unknown", str, "allow", where)
        if unknown not in ("allow", "block"):
            raise PolicyError(f"{where}: unknown must be allow or block, not {unknown!r}")
        opts["unknown"] = unknown
    elif kind == "threats":
        tiers = _take(raw, "block", list, ["malicious"], where)
        bad = [t for t in tiers if t not in TIERS]
        if bad or not tiers:
            raise PolicyError(f"{where}: block lists tiers {list(TIERS)}, not {bad or tiers}")
        opts["block"] = tuple(tiers)
    elif kind == "require_provenance":
        opts["projects"] = [_pattern(p, where) for p in _take(raw, "projects", list, ["*"], where)]
        if not opts["projects"]:
            raise PolicyError(f"{where}: projects must name at least one pattern", "e.g. ['*']")
    elif kind == "publisher":
        project = _take(raw, "project", str, "", where) or _take(raw, "name", str, "", where)
        if not project.strip():
            raise PolicyError(
                f"{where}: a publisher rule needs project = '<name pattern>'",
                'e.g. project = "sampleproject"',
            )
        opts["project"] = _pattern(project, where)
        for key in ("repository", "email", "workflow", "environment"):
            value = _take(raw, key, str, "", where).strip()
            opts[key] = value or None
        publisher = _take(raw, "publisher", str, "", where)
        if publisher and publisher not in PUBLISHER_KINDS:
            raise PolicyError(
                f"{where}: publisher {publisher!r}", f"use one of {', '.join(PUBLISHER_KINDS)}"
            )
        opts["publisher"] = publisher or None
        if not opts["repository"] and not opts["email"]:
            raise PolicyError(
                f"{where}: a publisher rule needs repository = 'owner/repo' (or email = …)",
                'e.g. repository = "pypa/sampleproject"',
            )
    elif kind == "custom":
        opts["name"] = _take(raw, "name", str, f"custom-{index}", where)
        expression = _take(raw, "block_if", str, "", where)
        if not expression.strip():
            raise PolicyError(f"{where}: a custom rule needs block_if = '<CEL expression>'")
        opts["uses"] = tuple(sorted(referenced(expression)))
        try:
            opts["program"] = compile_rule(expression)
        except CelError as exc:
            raise PolicyError(f"{where}: {exc}", "facts: " + ", ".join(FACT_TYPES)) from exc
        opts["message"] = _take(raw, "message", str, "", where)
    if raw:
        raise PolicyError(f"{where}: unknown option(s) {sorted(raw)} for kind {kind!r}")
    return Rule(index, kind, mode, opts, line)


_PATTERN = re.compile(r"^\s*([A-Za-z0-9*?._\[\]-]+)\s*(.*)$")


@dataclass(frozen=True, slots=True)
class _Pattern:
    text: str
    glob: str
    spec: SpecifierSet | None

    def matches(self, project: str, version: str | None) -> bool:
        if not _glob_matches(project, self.glob):
            return False
        if self.spec is None:
            return True
        if version is None:
            return False
        try:
            return self.spec.contains(PYPI.parse(version), prereleases=True)
        except InvalidVersion:
            return False


@lru_cache(maxsize=16384)
def _glob_matches(project: str, glob: str) -> bool:
    """``fnmatchcase``, remembered: a page's versions all ask about the same project."""
    return fnmatch.fnmatchcase(project, glob)


def _pattern(value: object, where: str) -> _Pattern:
    if not isinstance(value, str):
        raise PolicyError(f"{where}: name patterns are strings, not {value!r}")
    m = _PATTERN.match(value)
    if not m:
        raise PolicyError(f"{where}: cannot read name pattern {value!r}", "e.g. 'evil-*' or 'x<2'")
    glob = m.group(1).lower().replace("_", "-").replace(".", "-")
    spec = None
    if m.group(2).strip():
        try:
            spec = SpecifierSet(m.group(2).strip())
        except InvalidSpecifier as exc:
            raise PolicyError(
                f"{where}: {value!r} has an invalid version specifier", "e.g. 'requests<2.20'"
            ) from exc
    return _Pattern(value, glob, spec)


# -- evaluation --------------------------------------------------------------------------------


# Rules whose verdict depends only on what all files of a version share (the caller builds
# one vulns tuple per version, so its identity stands for its content within one decide()).
_VERSION_LEVEL = frozenset({"vulnerabilities", "names", "license"})


def evaluate(
    policy: Policy,
    facts: FileFacts,
    now: datetime,
    memo: dict[Any, Any] | None = None,
    *,
    complete: bool = True,
    custom: bool = True,
) -> Decision:
    """Every rule's verdict on one file; blocked when an enforcing rule objects.

    ``memo`` (one dict per page decision) reuses the verdicts of version-level rules across the
    files of a version, and custom rules' verdicts across files with the same facts they read;
    the facts given for files of one version must then share one ``vulns`` tuple object.
    ``complete=False`` (serving a page) skips the custom (CEL) rules of a file that another
    enforcing rule already blocks: the outcome is the same, the reasons list fewer rules;
    ``policy explain`` asks for every rule. ``custom=False`` leaves the custom rules out
    altogether (see :func:`add_custom`).
    """
    project = _canonical(facts.project)
    version_rules, file_rules, custom_rules = policy.by_cost
    if not custom:
        custom_rules = ()
    reasons: list[Reason] = []
    if memo is None:
        file_rules = version_rules + file_rules
    elif version_rules:
        vkey = (
            _VERSION_KEY,
            project,
            facts.version,
            id(facts.vulns),
            facts.license,
            facts.license_known,
            facts.approved,
        )
        shared = memo.get(vkey)
        if shared is None:
            shared = memo[vkey] = tuple(
                r
                for rule in version_rules
                if (r := _version_reason(rule, facts, project, now, memo)) is not None
            )
        reasons.extend(shared)
    for rule in file_rules:
        message = _check(rule, facts, project, now)
        if message is not None:
            reasons.append(_reason_for(rule, message))
    if custom_rules and (complete or not any(r.mode == "enforce" for r in reasons)):
        for rule in custom_rules:
            activation = cel_facts(facts, now, rule.options["uses"])
            if memo is None:
                message = _custom(rule, activation)
            else:  # the verdict is a function of the facts the expression reads
                key = (rule.index, _CUSTOM_KEY, *_cel_key(activation, facts))
                if key in memo:
                    message = memo[key]
                else:
                    message = memo[key] = _custom(rule, activation)
            if message is not None:
                reasons.append(_reason_for(rule, message))
    if not reasons:
        return _ALLOWED
    if memo is not None:  # files that end with the same reasons share one Decision
        dkey = (_DECISION_KEY, *reasons)
        known = memo.get(dkey)
        if known is not None:
            return known  # type: ignore[no-any-return]
    if len(reasons) > 1:
        reasons.sort(key=lambda r: r.rule)
    blocks = tuple(r for r in reasons if r.mode == "enforce")
    warnings = tuple(r for r in reasons if r.mode != "enforce")
    decision = Decision(not blocks, blocks, warnings)
    if memo is not None:
        memo[dkey] = decision
    return decision


def add_custom(
    policy: Policy,
    base: Decision,
    facts: FileFacts,
    now: datetime,
    memo: dict[Any, Any] | None = None,
) -> Decision:
    """``base`` (from ``evaluate(..., custom=False)``) with the custom rules' verdicts added:
    the same result as ``evaluate()`` with every rule."""
    added: list[Reason] = []
    for rule in policy.by_cost[2]:
        activation = cel_facts(facts, now, rule.options["uses"])
        if memo is None:
            message = _custom(rule, activation)
        else:
            key = (rule.index, _CUSTOM_KEY, *_cel_key(activation, facts))
            message = memo.get(key, _MISSING)
            if message is _MISSING:
                message = memo[key] = _custom(rule, activation)
        if message is not None:
            added.append(_reason_for(rule, message))
    if not added:
        return base
    reasons = [*base.blocks, *base.warnings, *added]
    reasons.sort(key=lambda r: r.rule)
    blocks = tuple(r for r in reasons if r.mode == "enforce")
    warnings = tuple(r for r in reasons if r.mode != "enforce")
    return Decision(not blocks, blocks, warnings)


_ALLOWED = Decision(True)
_DECISION_KEY = object()  # memo keys of whole decisions
_VERSION_KEY = object()  # memo keys of the version-level verdicts
_CUSTOM_KEY = object()  # memo keys of custom rules' verdicts


@lru_cache(maxsize=4096)
def _canonical(name: str) -> str:
    return canonicalize_name(name)


def _reason(rule: Rule, message: str | None) -> Reason | None:
    return None if message is None else _reason_for(rule, message)


def _version_reason(
    rule: Rule, facts: FileFacts, project: str, now: datetime, memo: dict[Any, Any]
) -> Reason | None:
    """A version-level rule's reason, memoized by exactly what that rule reads, so versions
    that agree on it share one verdict: the vulnerabilities rule by the (shared) ``vulns``
    tuple, the names rule by project, version and approval, the licence rule by the licence."""
    if rule.kind == "vulnerabilities":
        key: tuple[Any, ...] = (rule.index, _RULE_KEY, id(facts.vulns))
    elif rule.kind == "names":
        key = (rule.index, _RULE_KEY, project, facts.version, facts.approved)
    else:  # license
        key = (rule.index, _RULE_KEY, facts.license, facts.license_known)
    reason = memo.get(key, _MISSING)
    if reason is _MISSING:
        message = (
            _check_vulnerabilities(rule, facts, project, now, memo)
            if rule.kind == "vulnerabilities"
            else _check(rule, facts, project, now)
        )
        reason = memo[key] = _reason(rule, message)
    return reason  # type: ignore[no-any-return]


_RULE_KEY = object()  # memo keys of one version-level rule's verdicts


def _reason_for(rule: Rule, message: str) -> Reason:
    requestable = rule.kind == "names" and message.endswith(NOT_ALLOWED)
    return Reason(rule.index, rule.kind, rule.mode, message, requestable)


def _check_vulnerabilities(
    rule: Rule, facts: FileFacts, project: str, now: datetime, memo: dict[Any, Any] | None = None
) -> str | None:
    hits = []
    for v in facts.vulns:
        if memo is None:
            message = _vuln_message(rule, v, now)
        else:  # one VulnFact object is shared by every version an advisory affects alike
            key = (rule.index, _VULN_KEY, id(v))
            message = memo.get(key, _MISSING)
            if message is _MISSING:
                message = memo[key] = _vuln_message(rule, v, now)
        if message is not None:
            hits.append(message)
    return "; ".join(hits) if hits else None


_VULN_KEY = object()
_MISSING: Any = object()


def _vuln_message(rule: Rule, v: VulnFact, now: datetime) -> str | None:
    o = rule.options
    if v.status not in ("affected", "under_investigation"):
        return None
    if o["severity"] != "any":
        if v.severity is None:
            if o["unknown_severity"] != "block":
                return None
        elif RATINGS.index(v.severity) < RATINGS.index(o["severity"]):
            return None
    if o["only_fixed"] and not v.fixed_versions:
        return None
    fresh = v.published is not None and now - v.published < timedelta(days=o["grace_days"])
    if o["grace_days"] and fresh:
        return None
    sev = (v.severity or "severity unknown") + (f", CVSS {v.score}" if v.score is not None else "")
    fix = f"; fixed in {', '.join(v.fixed_versions)}" if v.fixed_versions else ""
    return f"{v.id} ({sev}) ≥ {o['severity']}{fix}"


def _check_names(rule: Rule, facts: FileFacts, project: str, now: datetime) -> str | None:
    o = rule.options
    for p in o["deny"]:
        if p.matches(project, facts.version):
            return f"{project} {facts.version or ''} matches deny pattern {p.text!r}".strip()
    if (
        o["allow_only"]
        and not facts.approved
        and not any(p.matches(project, facts.version) for p in o["allow"])
    ):
        return f"{project} {facts.version or ''} {NOT_ALLOWED}"
    return None


def _check_age(rule: Rule, facts: FileFacts, project: str, now: datetime) -> str | None:
    o = rule.options
    if facts.upload_time is None or not o["min_days"]:
        return None
    age = now - facts.upload_time
    if age < o["min_age"]:
        return (
            f"published {age.total_seconds() / 86400:.1f} days ago, quarantine is "
            f"{o['min_days']:g} days"
        )
    return None


def _check_yanked(rule: Rule, facts: FileFacts, project: str, now: datetime) -> str | None:
    o = rule.options
    if facts.yanked and o["action"] == "hide":
        return "the release is yanked"
    return None


def _check_license(rule: Rule, facts: FileFacts, project: str, now: datetime) -> str | None:
    o = rule.options
    if facts.license is None:
        if o["unknown"] == "allow":
            return None
        if facts.license_known:
            return "no licence in the metadata (unknown = block)"
        return "licence not known yet: the metadata has not been read (unknown = block)"
    verdict = o["matcher"].check(facts.license)
    return None if verdict.status == "ok" else verdict.message


def _check_threats(rule: Rule, facts: FileFacts, project: str, now: datetime) -> str | None:
    o = rule.options
    found = [f for f in facts.findings if f.tier in o["block"]]
    if not found:
        return None
    return "; ".join(f"{f.tier}: {f.rule} ({f.message})" for f in found[:5])


def _check_require_provenance(
    rule: Rule, facts: FileFacts, project: str, now: datetime
) -> str | None:
    if facts.provenance or not any(
        p.matches(project, facts.version) for p in rule.options["projects"]
    ):
        return None
    if facts.provenance is None:
        return f"{facts.filename} has PEP 740 provenance that is not verified yet"
    return f"{facts.filename} has no verified PEP 740 provenance (attestations)"


def _publisher_matches(o: dict[str, Any], p: Publisher) -> bool:
    if o["publisher"] and p.kind != o["publisher"]:
        return False
    if o["repository"] and (p.repository or "").lower() != o["repository"].lower():
        return False
    if o["email"] and (p.email or "").lower() != o["email"].lower():
        return False
    if o["workflow"] and p.workflow != o["workflow"]:
        return False
    return not (o["environment"] and p.environment != o["environment"])


def _wanted_publisher(o: dict[str, Any]) -> str:
    who = f"{o['publisher'] or 'a Trusted Publisher'} {o['repository'] or o['email']}"
    if o["workflow"]:
        who += f" (workflow {o['workflow']})"
    if o["environment"]:
        who += f" (environment {o['environment']})"
    return who


def _check_publisher(rule: Rule, facts: FileFacts, project: str, now: datetime) -> str | None:
    o = rule.options
    if not o["project"].matches(project, facts.version):
        return None
    if any(_publisher_matches(o, p) for p in facts.publishers):
        return None
    want = f"{project} must be published by {_wanted_publisher(o)}"
    if not facts.publishers:
        return f"{want}; {facts.filename} has no verified PEP 740 provenance"
    got = ", ".join(p.label + (f" ({p.workflow})" if p.workflow else "") for p in facts.publishers)
    return f"{want}; {facts.filename} was published by {got}"


def _check_custom(rule: Rule, facts: FileFacts, project: str, now: datetime) -> str | None:
    return _custom(rule, cel_facts(facts, now, rule.options["uses"]))


_CHECKS = {
    "vulnerabilities": _check_vulnerabilities,
    "names": _check_names,
    "age": _check_age,
    "yanked": _check_yanked,
    "license": _check_license,
    "threats": _check_threats,
    "require_provenance": _check_require_provenance,
    "publisher": _check_publisher,
    "custom": _check_custom,
}


def _check(rule: Rule, facts: FileFacts, project: str, now: datetime) -> str | None:
    check = _CHECKS.get(rule.kind)
    return None if check is None else check(rule, facts, project, now)


def _custom(rule: Rule, activation: dict[str, Any]) -> str | None:
    o = rule.options
    try:
        matched = o["program"].evaluate(activation)
    except CelError as exc:  # fail closed: a rule that cannot decide does not allow
        return f"{o['name']} could not be evaluated: {exc}"
    if not matched:
        return None
    return o["message"] or f"{o['name']} matched: {o['program'].expression}"


def _cel_key(activation: dict[str, Any], facts: FileFacts) -> tuple[Any, ...]:
    """What a CEL verdict depends on, hashable: scalar facts by value, the vulnerability list
    by the identity of the tuple shared by a version's files (as the version-level memo),
    findings by value."""
    out: list[Any] = []
    for name, value in activation.items():
        if name in ("vulns", "max_severity"):
            out.append(id(facts.vulns))
        elif name == "findings":
            out.append(facts.findings)
        else:
            out.append(value)
    return tuple(out)


def cel_facts(
    facts: FileFacts, now: datetime, uses: Collection[str] | None = None
) -> dict[str, Any]:
    """The CEL activation for one file (see core.policy.cel for the schema): every fact, or
    only those in ``uses`` (the facts the expression names; building the rest is waste)."""
    age = (now - facts.upload_time).total_seconds() / 86400 if facts.upload_time else None
    lists = _LISTS_ALL if uses is None else _lists_used(tuple(uses))
    return facts_for(
        name=facts.project,
        version=facts.version,
        filename=facts.filename,
        kind=facts.kind,
        size=facts.size,
        upload_time=facts.upload_time,
        age_days=age,
        yanked=facts.yanked,
        license=facts.license,
        vulns=[
            {
                "id": v.id,
                "severity": v.severity or "",
                "score": v.score,
                "status": v.status,
                "fixed": list(v.fixed_versions),
            }
            for v in (facts.vulns if lists[0] else ())
        ],
        findings=[
            {"rule": f.rule, "severity": f.severity, "tier": f.tier, "message": f.message}
            for f in (facts.findings if lists[1] else ())
        ],
        provenance=facts.provenance,
        publisher=facts.publishers[0].label if facts.publishers else None,
        index=facts.index,
        only=uses,
    )


_LISTS_ALL = (True, True)


@lru_cache(maxsize=1024)
def _lists_used(uses: tuple[str, ...]) -> tuple[bool, bool]:
    """Whether an expression naming ``uses`` reads the vulnerabilities and the findings (the
    lists worth converting for CEL)."""
    return bool({"vulns", "max_severity"} & set(uses)), "findings" in uses
