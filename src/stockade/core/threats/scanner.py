"""The static malware scanner: bytes of a distribution in, a :class:`Report` out.

Pure and deterministic: it reads the bytes it is given (``scan_path`` reads one file), never
writes, never fetches, never imports or executes anything it reads, and every exception inside
becomes a finding. Work is bounded by :class:`ScanLimits` (members, bytes, nesting, AST size,
folding steps, payload depth) rather than by wall time, so the same input always gives the
same report.

How a verdict is reached: the archive is walked (:mod:`archive`), each member is classified by
content (Python, .pth, compiled Python, native binary, other text) and analysed
(:mod:`analysis` for Python), producing events; the rules (:mod:`rules`, data in
``stockade/data/threat_rules.toml``) combine events per scope, file or package into findings;
findings score by severity. Any critical finding makes the file ``malicious``; any high one
makes it at least ``suspicious``; otherwise the score decides.
"""

from __future__ import annotations

import ast
import contextlib
import gc
import hashlib
import re
import time
import tomllib
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from stockade.core.threats.analysis import (
    GATE,
    HIDDEN_CODE,
    Event,
    PyResult,
    Scope,
    analyze_python,
    collapse_padding,
    is_python_name,
    make_ctx,
    module_role,
    parse_quietly,
    snippet_of,
)
from stockade.core.threats.archive import ArchiveEvent, Member, ScanLimits, walk
from stockade.core.threats.decode import printable_strings
from stockade.core.threats.rules import CONTEXTS, EAGER, SEVERITIES, Rule, RuleSet, load_rules
from stockade.core.threats.strings import StringMatcher

__all__ = [
    "DEFAULT",
    "RULES",
    "Finding",
    "Report",
    "ScanLimits",
    "load_rules",
    "scan_bytes",
    "scan_path",
]

DEFAULT: Final = ScanLimits()
RULES: Final = load_rules()
_RANK: Final = {c: i for i, c in enumerate(CONTEXTS)}
_SEV: Final = {s: i for i, s in enumerate(SEVERITIES)}
_MAX_FINDINGS: Final = 200
_PY_SHEBANG: Final = re.compile(rb"^#![^\n]*python")
_PY_LOOK: Final = re.compile(
    r"(?m)^(?:import [\w.]+|from [\w.]+ import \w|def \w+\(|class \w+[(:])"
)


@dataclass(frozen=True, slots=True)
class Finding:
    rule: str
    severity: str  # low | medium | high | critical
    message: str
    path: str  # member path inside the archive ("a.tar.gz!/pkg/setup.py" for nested)
    line: int | None
    snippet: str  # at most 200 characters, one line, control characters escaped

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "severity": self.severity,
            "path": self.path,
            "line": self.line,
            "snippet": self.snippet,
            "message": self.message,
        }


@dataclass(frozen=True, slots=True)
class Report:
    sha256: str
    filename: str
    verdict: str  # malicious | suspicious | clean
    score: float
    findings: tuple[Finding, ...]
    members: int
    bytes_read: int
    elapsed: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.filename,
            "sha256": self.sha256,
            "verdict": self.verdict,
            "score": self.score,
            "findings": [f.as_dict() for f in self.findings],
            "members": self.members,
            "bytes_read": self.bytes_read,
            "elapsed": round(self.elapsed, 4),
        }


# ---------------------------------------------------------------------------------------------
# units of evaluation


@dataclass(slots=True)
class _FileUnit:
    path: str
    events: list[Event]
    scopes: list[Scope]


def _closure(scopes: list[Scope], sid: int, by_scope: dict[int, list[Event]]) -> list[Event]:
    seen = {sid}
    todo = [sid]
    out: list[Event] = []
    while todo:
        s = todo.pop()
        out.extend(by_scope.get(s, ()))
        for c in scopes[s].callees:
            if c not in seen and c < len(scopes) and len(seen) < 2000:
                seen.add(c)
                todo.append(c)
    return out


def _match(
    rule: Rule, events: Sequence[Event], ctx_of: dict[tuple[str, int], str]
) -> tuple[Event, str] | None:
    anchors: list[Event] = []
    strongest = len(_RANK)
    for i, group in enumerate(rule.when):
        hits = [e for e in events if any(c.matches(e.tag, e.labels) for c in group)]
        if not hits:
            return None
        if i == 0:
            anchors = hits
        strongest = min(strongest, *(_RANK[ctx_of.get((e.path, e.scope), "runtime")] for e in hits))
    best = min(
        anchors,
        key=lambda e: (_RANK[ctx_of.get((e.path, e.scope), "runtime")], e.line or 0),
    )
    if rule.unit != "scope":
        # a file-wide combination runs as early as any of its parts
        return best, CONTEXTS[strongest]
    return best, ctx_of.get((best.path, best.scope), "runtime")


def _evaluate(rules: RuleSet, units: list[_FileUnit], package: list[Event]) -> list[Finding]:
    found: dict[tuple[str, str], tuple[Finding, int]] = {}
    ctx_of: dict[tuple[str, int], str] = {}
    for u in units:
        for s in u.scopes:
            ctx_of[(u.path, s.id)] = s.context
    for e in package:
        ctx_of.setdefault((e.path, e.scope), "install")

    def add(rule: Rule, ev: Event, ctx: str) -> None:
        sev = rule.severity if ctx in rule.contexts else rule.runtime
        if sev is None:
            return
        key = (rule.id, ev.path)
        old = found.get(key)
        rank = _SEV[sev] * 10 - _RANK[ctx]
        if old is not None and old[1] >= rank:
            return
        msg = rule.description
        if ev.origin:
            msg += f" [in code decoded statically: {ev.origin}]"
        if ev.labels:
            msg += f" (data from: {', '.join(sorted(ev.labels))})"
        if ctx not in EAGER:
            msg += " [runs only when called]"
        else:
            msg += f" [runs at {ctx}]"
        found[key] = (Finding(rule.id, sev, msg, ev.path, ev.line, ev.snippet), rank)

    scope_rules = [r for r in rules.rules if r.unit == "scope"]
    file_rules = [r for r in rules.rules if r.unit == "file"]
    pkg_rules = [r for r in rules.rules if r.unit == "package"]
    for u in units:
        if not u.events:
            continue
        by_scope: dict[int, list[Event]] = {}
        for e in u.events:
            by_scope.setdefault(e.scope, []).append(e)
        tags_here = {e.tag for e in u.events}
        for r in file_rules:
            if all(any(c.tag in tags_here for c in g) for g in r.when):
                m = _match(r, u.events, ctx_of)
                if m:
                    add(r, *m)
        active = [r for r in scope_rules if all(any(c.tag in tags_here for c in g) for g in r.when)]
        if not active:
            continue
        # scopes whose closure can hold events: those with events and their (transitive) callers
        callers: dict[int, list[int]] = {}
        for s in u.scopes:
            for c in s.callees:
                callers.setdefault(c, []).append(s.id)
        interesting = set(by_scope)
        todo = list(interesting)
        while todo:
            for p in callers.get(todo.pop(), ()):
                if p not in interesting:
                    interesting.add(p)
                    todo.append(p)
        for sid in sorted(interesting):
            evs = _closure(u.scopes, sid, by_scope)
            if not evs:
                continue
            here = {e.tag for e in evs}
            for r in active:
                if all(any(c.tag in here for c in g) for g in r.when):
                    m = _match(r, evs, ctx_of)
                    if m:
                        add(r, *m)
    if package:
        tags_here = {e.tag for e in package}
        for r in pkg_rules:
            if all(any(c.tag in tags_here for c in g) for g in r.when):
                m = _match(r, package, ctx_of)
                if m:
                    add(r, *m)
    out = [f for f, _ in found.values()]
    out.sort(key=lambda f: (-_SEV[f.severity], f.rule, f.path, f.line or 0))
    return out[:_MAX_FINDINGS]


def _score(rules: RuleSet, findings: Iterable[Finding]) -> tuple[str, float]:
    best: dict[str, str] = {}
    for f in findings:
        if f.rule not in best or _SEV[f.severity] > _SEV[best[f.rule]]:
            best[f.rule] = f.severity
    score = min(100.0, sum(rules.points[s] for s in best.values()))
    sevs = set(best.values())
    if "critical" in sevs or score >= rules.malicious:
        return "malicious", score
    if "high" in sevs or score >= rules.suspicious:
        return "suspicious", score
    return "clean", score


# ---------------------------------------------------------------------------------------------
# members


def _decode_text(data: bytes) -> str:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _line_at(text: str, pos: int) -> tuple[int, str]:
    start = text.rfind("\n", 0, pos) + 1
    end = text.find("\n", pos)
    if end < 0:
        end = len(text)
    return text.count("\n", 0, pos) + 1, snippet_of(text[start:end], pos - start)


_SCRIPT_EXT: Final = (
    ".sh",
    ".bash",
    ".zsh",
    ".bat",
    ".cmd",
    ".ps1",
    ".psm1",
    ".vbs",
    ".vbe",
    ".jse",
    ".wsf",
    ".hta",
    ".command",
    ".applescript",
)
_BLANKS: Final = b" " * 120
_WEBHOOK_NEEDLES: Final = (b"webhooks/", b"api.telegram.org", b"hooks.slack.com", b"webhook.office")
_CFG_REF: Final = re.compile(r"=\s*([A-Za-z_][\w.]*\.[A-Za-z_]\w*)\s*$")
_ROLE_OF_CTX: Final = {"install": "setup", "startup": "pth", "import": "module"}


class _ContentCache:
    """Per-process memo of the expensive per-member work, keyed by the sha256 of the member's
    bytes: the raw-text gate and the Python analysis. Identical modules recur across versions
    of a project and across projects (vendored copies), so a process scanning many files (the
    server, ``stockade inspect -j``, the benches) analyses each distinct source once. The
    analysis of a source depends only on its text, its role, the entry functions asked for,
    the limits and the rule set (never on the member path: events are re-labelled with the
    path of the member at hand, and every list handed out is a fresh copy, since the scanner
    appends to them). Bounded (entries and source bytes), least recently used out first."""

    def __init__(self, max_entries: int = 20_000, max_bytes: int = 256 * 1024 * 1024) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._gate: OrderedDict[bytes, bool] = OrderedDict()
        self._res: OrderedDict[tuple[Any, ...], tuple[PyResult, int, RuleSet]] = OrderedDict()
        self._bytes = 0

    def clear(self) -> None:
        self._gate.clear()
        self._res.clear()
        self._bytes = 0

    def gate(self, digest: bytes, data: bytes) -> bool:
        hit = self._gate.get(digest)
        if hit is not None:
            self._gate.move_to_end(digest)
            return hit
        worth = bool(GATE.search(data)) or (
            _BLANKS in data and HIDDEN_CODE.search(_decode_text(data)) is not None
        )
        self._gate[digest] = worth
        if len(self._gate) > 4 * self.max_entries:
            self._gate.popitem(last=False)
        return worth

    def get(self, key: tuple[Any, ...], rules: RuleSet, path: str) -> PyResult | None:
        hit = self._res.get(key)
        if hit is None or hit[2] is not rules:
            return None
        self._res.move_to_end(key)
        return _rebased(hit[0], path)

    def put(self, key: tuple[Any, ...], rules: RuleSet, res: PyResult, size: int) -> None:
        if size > self.max_bytes // 8:
            return
        old = self._res.pop(key, None)
        if old is not None:
            self._bytes -= old[1]
        self._res[key] = (_rebased(res, ""), size, rules)
        self._bytes += size
        while self._res and (len(self._res) > self.max_entries or self._bytes > self.max_bytes):
            _k, (_r, n, _rs) = self._res.popitem(last=False)
            self._bytes -= n


def _rebased(res: PyResult, path: str) -> PyResult:
    """A copy of ``res`` whose events name ``path`` (fresh lists: callers append to them)."""
    return PyResult(
        [Event(e.tag, e.labels, e.line, e.snippet, e.scope, path, e.origin) for e in res.events],
        list(res.scopes),
        res.ok,
        list(res.programs),
        list(res.exec_files),
        set(res.imported),
        res.payloads,
        list(res.calls_out),
        res.salvaged,
    )


CACHE: Final = _ContentCache()
# conda link scripts: bin/.NAME-post-link.sh, Scripts/.NAME-pre-unlink.bat (run by conda at
# install / removal time, in the environment's prefix)
_CONDA_LINK: Final = re.compile(
    r"(?:^|/)(?:bin|Scripts)/\.[^/]+-(?:pre-link|post-link|pre-unlink)\.(?:sh|bat)$"
)


class _Scan:
    def __init__(self, filename: str, limits: ScanLimits, rules: RuleSet) -> None:
        self.filename = filename
        self.limits = limits
        self.rules = rules
        self.matcher = StringMatcher(rules)
        self.units: list[_FileUnit] = []
        self.package: list[Event] = []
        # file names code runs as programs / executes as Python: name -> (ctx, unit, scope, line)
        self.runs: dict[str, tuple[str, _FileUnit, int, int | None]] = {}
        self.execs: dict[str, tuple[str, _FileUnit, int, int | None]] = {}
        self.binaries: dict[str, Member] = {}  # basename -> executable member
        self.texts: list[Member] = []  # other text, decided once we know what code runs
        self.py_members: dict[str, tuple[Member, str]] = {}
        self.setup_imports: set[str] = set()  # local helper modules setup.py imports
        self.py_by_name: dict[str, tuple[Member, str]] = {}  # member name -> (member, role)
        # calls eager code makes to imported names: (caller member name, dotted, context)
        self.calls_out: list[tuple[str, str, str]] = []
        self.quiet: dict[str, bool] = {}  # member name -> its analysis found no event at all
        self.digests: dict[int, bytes] = {}  # id(member) -> sha256 of its bytes

    def run(self, data: bytes) -> tuple[list[Finding], int, int]:
        members, aevents, total = walk(data, self.filename, self.limits)
        for a in aevents:
            self._pkg_event(a)
        kind = self._dist_kind(members)
        backends = self._in_tree_backends(members)
        # install-time files first: what they run decides how other members are treated
        order = sorted(
            range(len(members)),
            key=lambda i: 0 if module_role(members[i].name) == "setup" else 1,
        )
        for i in order:
            m = members[i]
            try:
                self._member(m, kind, backends)
            except RecursionError:
                self._pkg_event(ArchiveEvent("python_unparsable", m.path, "too deeply nested"))
        self._declared_hooks(members)
        self._second_pass()
        findings = _evaluate(self.rules, self.units, self.package)
        return findings, len(members), max(total, len(data))

    def _pkg_event(self, a: ArchiveEvent) -> None:
        self.package.append(Event(a.tag, frozenset(), None, snippet_of(a.detail), 0, a.path))

    def _dist_kind(self, members: list[Member]) -> str:
        names = [m.name for m in members if m.depth == 0]
        if self.filename.endswith(".whl") or any(
            n.count("/") == 1 and n.endswith(".dist-info/WHEEL") for n in names
        ):
            wheel = next((m for m in members if m.name.endswith(".dist-info/WHEEL")), None)
            pure = wheel is not None and b"Root-Is-Purelib: true" in wheel.data
            return "pure-wheel" if pure else "wheel"
        if any(n.endswith(("setup.py", "PKG-INFO", "pyproject.toml")) for n in names):
            return "sdist"
        return "other"

    def _declared_hooks(self, members: list[Member]) -> None:
        """Build hooks declared in configuration rather than in setup.py: setuptools
        ``cmdclass`` tables of pyproject.toml / setup.cfg (classes whose methods run at
        install) and Hatch custom build hooks (a file that runs at build)."""
        for m in members:
            if m.depth != 0 or m.name.count("/") > 1:
                continue
            base = m.name.rsplit("/", 1)[-1]
            top = m.name.rsplit("/", 1)[0] + "/" if "/" in m.name else ""
            if base == "pyproject.toml":
                try:
                    doc = tomllib.loads(_decode_text(m.data))
                except (tomllib.TOMLDecodeError, ValueError, RecursionError):
                    continue
                tool = _table(doc, "tool")
                cmd = _table(_table(tool, "setuptools"), "cmdclass")
                for v in list(cmd.values())[:20]:
                    if isinstance(v, str):
                        self.calls_out.append((m.name, v.strip(), "install"))
                for path in _hatch_hook_paths(tool.get("hatch"))[:10]:
                    hook = self.py_by_name.get(top + path.removeprefix("./"))
                    if hook is not None and hook[1] != "setup":
                        self._python(hook[0], "setup", forced=True)
            elif base == "setup.cfg":
                inside = False
                for ln in _decode_text(m.data).splitlines()[:5000]:
                    if re.match(r"\s*cmdclass\s*=", ln):
                        inside = True
                        ln = ln.split("=", 1)[1]
                    elif inside and ln[:1] not in (" ", "\t"):
                        inside = False
                    mm = _CFG_REF.search(ln) if inside else None
                    if mm is not None:
                        self.calls_out.append((m.name, mm.group(1), "install"))

    def _in_tree_backends(self, members: list[Member]) -> set[str]:
        """Module file names of a PEP 517 in-tree backend (``backend-path``): build code."""
        out: set[str] = set()
        for m in members:
            if m.depth == 0 and m.name.count("/") <= 1 and m.name.endswith("pyproject.toml"):
                text = _decode_text(m.data)
                if "backend-path" not in text:
                    continue
                mm = re.search(r"build-backend\s*=\s*[\"']([\w.]+)", text)
                if mm:
                    out.add(mm.group(1).split(":")[0].split(".")[-1] + ".py")
        return out

    # ----------------------------------------------------------------- per member
    def _member(self, m: Member, kind: str, backends: set[str]) -> None:
        low = m.name.lower()
        if low.endswith((".pyc", ".pyo")):
            self._pyc(m)
            return
        if m.binary:
            self._binary(m, kind)
            return
        if low.endswith(".pth"):
            self._pth(m)
            return
        base = low.rsplit("/", 1)[-1]
        pythonish = is_python_name(low) or bool(_PY_SHEBANG.match(m.data[:200]))
        if pythonish:
            role = module_role(m.name)
            if base in backends:
                role = "setup"
            self.py_members[base] = (m, role)
            if m.depth == 0:
                self.py_by_name[m.name] = (m, role)
            self._python(m, role)
            return
        self.texts.append(m)

    def _digest(self, m: Member) -> bytes:
        d = self.digests.get(id(m))
        if d is None:
            d = self.digests[id(m)] = hashlib.sha256(m.data).digest()
        return d

    def _python(
        self, m: Member, role: str, forced: bool = False, entries: dict[str, str] | None = None
    ) -> None:
        text: str | None = None
        if len(m.data) > self.limits.max_python_bytes and not m.truncated:
            # padding is an evasion of size limits: analyse the file without it
            text = collapse_padding(_decode_text(m.data))
            if len(text) * 2 < len(m.data):
                self._pkg_event(
                    ArchiveEvent("padding", m.path, f"{m.size} bytes, {len(text)} without filler")
                )
            if len(text) > self.limits.max_python_bytes:
                text = None
            else:
                forced = True
        if text is None and (len(m.data) > self.limits.max_python_bytes or m.truncated):
            self._pkg_event(
                ArchiveEvent("python_too_large", m.path, f"{m.size} bytes: checked without parsing")
            )
            self._text(m, python=True, role=role)
            return
        digest = self._digest(m)
        if not forced and role not in ("setup", "pth") and not CACHE.gate(digest, m.data):
            return  # no sink, decoder or indicator token: nothing a code rule could match
        key = (
            digest,
            role,
            text is not None,
            tuple(sorted(entries.items())) if entries else None,
            self.limits,
        )
        cached = CACHE.get(key, self.rules, m.path)
        if cached is not None:
            res = cached
        else:
            ctx = make_ctx(
                self.rules,
                self.matcher,
                max_payload_depth=self.limits.max_payload_depth,
                max_ast_bytes=self.limits.max_python_bytes,
                fold_budget=self.limits.max_fold_steps,
                payload_bytes=self.limits.max_payload_bytes,
            )
            res = analyze_python(text or _decode_text(m.data), m.path, role, ctx, entries=entries)
            CACHE.put(key, self.rules, res, len(m.data))
        if m.depth == 0:
            self.calls_out.extend((m.name, d, c) for d, c in res.calls_out)
            if entries is None:
                self.quiet[m.name] = not res.events
        if not res.ok:
            if not forced:
                self._pkg_event(
                    ArchiveEvent("python_unparsable", m.path, "does not parse as Python 3")
                )
            self._text(m, python=True, role=role)
            return
        if res.salvaged and not forced:
            self._pkg_event(
                ArchiveEvent(
                    "python_unparsable",
                    m.path,
                    "does not parse as Python 3: analysed without the statements that do not",
                )
            )
        self._add(m.path, res)
        if role == "setup" and not forced:
            self.setup_imports |= res.imported

    def _add(self, path: str, res: PyResult) -> None:
        unit = _FileUnit(path, res.events, res.scopes)
        self.units.append(unit)
        for table, entries in ((self.runs, res.programs), (self.execs, res.exec_files)):
            for name, sid, line in entries:
                ctx = res.scopes[sid].context if sid < len(res.scopes) else "runtime"
                key = name.lower()
                old = table.get(key)
                if old is None or _RANK[ctx] < _RANK[old[0]]:
                    table[key] = (ctx, unit, sid, line)

    def _second_pass(self) -> None:
        # files executed as Python by other code (exec(open(...).read()), "python x.py")
        # run in its context
        ran = dict(self.runs)
        ran.update(self.execs)
        for mod in sorted(self.setup_imports):
            helper = self.py_members.get(mod.lower() + ".py")
            if helper is not None and helper[1] != "setup" and helper[0].depth == 0:
                # a local helper imported by setup.py: its functions run at install time
                self._python(helper[0], "setup", forced=True)
        self._entry_points()
        for name, (ctx, _unit, _sid, _line) in ran.items():
            if ctx in EAGER and name in self.py_members:
                m, role = self.py_members[name]
                if _RANK[ctx] < _RANK[{"setup": "install", "test": "test"}.get(role, "import")]:
                    self._python(m, _ROLE_OF_CTX[ctx], forced=True)
        for m in self.texts:
            base = m.name.lower().rsplit("/", 1)[-1]
            hit = self.execs.get(base)
            if hit is not None:
                self._python(m, _ROLE_OF_CTX.get(hit[0], "module"), forced=True)
                continue
            run = self.runs.get(base)
            script = base.endswith(_SCRIPT_EXT) or m.data[:2] == b"#!"
            if _CONDA_LINK.search(m.name):  # conda runs it when the package is installed
                self._text(m, ctx="install", as_shell=True)
            elif run is not None or script:
                self._text(m, ctx=run[0] if run is not None else "runtime")
            elif any(n in m.data for n in _WEBHOOK_NEEDLES):
                self._text(m, tags=tuple(t for t in self.rules.text_tags if t.name == "webhook"))
        # bundled executables started by code
        for name, (_ctx, unit, sid, line) in self.runs.items():
            # native executables only: build scripts (configure, build.sh) run at install
            # are normal, and their content is checked as text in the context they run in
            if name in self.binaries:
                snip = next(
                    (e.snippet for e in unit.events if e.tag == "shell" and e.line == line), ""
                )
                unit.events.append(Event("exec_bundled", frozenset(), line, snip, sid, unit.path))

    def _module_index(self) -> dict[str, list[Member]]:
        """Dotted module names (every suffix of the member path) -> members."""
        index: dict[str, list[Member]] = {}
        for name, (m, _role) in self.py_by_name.items():
            parts = name.replace("\\", "/").split("/")
            last = parts[-1].rsplit(".", 1)[0]
            parts = parts[:-1] if last == "__init__" else [*parts[:-1], last]
            for k in range(1, min(len(parts), 8) + 1):
                lst = index.setdefault(".".join(parts[-k:]), [])
                if len(lst) < 4:
                    lst.append(m)
        return index

    def _entry_points(self) -> None:
        """Functions of other modules that eager code calls (setup.py's cmdclass calling
        ``pkg.helpers.run()``, ``__init__`` calling ``.cookies.check()`` at import) run in
        that caller's context: the modules are analysed again with those entries."""
        if not self.calls_out:
            return
        index = self._module_index()
        done: dict[str, dict[str, str]] = {}
        for _round in range(3):
            pending, self.calls_out = self.calls_out, []
            want: dict[str, dict[str, str]] = {}
            for caller, dotted, ctx in pending:
                for m, func in self._resolve_call(index, caller, dotted):
                    cur = want.setdefault(m.name, {})
                    if func not in cur or _RANK[ctx] < _RANK[cur[func]]:
                        cur[func] = ctx
            ran_any = False
            for name, entries in sorted(want.items()):
                old = done.get(name, {})
                if all(f in old and _RANK[old[f]] <= _RANK[c] for f, c in entries.items()):
                    continue
                merged = dict(old)
                for f, c in entries.items():
                    if f not in merged or _RANK[c] < _RANK[merged[f]]:
                        merged[f] = c
                done[name] = merged
                if len(done) > 24:
                    return
                m, role = self.py_by_name[name]
                if self.quiet.get(name, not GATE.search(m.data)):
                    continue  # no event anywhere in it: nothing a rule could match
                # what the entry functions call in turn lands in calls_out for the next round
                self._python(m, role, forced=True, entries=merged)
                ran_any = True
            if not ran_any or not self.calls_out:
                return

    @staticmethod
    def _resolve_call(
        index: dict[str, list[Member]], caller: str, dotted: str
    ) -> list[tuple[Member, str]]:
        out: list[tuple[Member, str]] = []
        rel = dotted.startswith(".")
        parts = [p for p in dotted.split(".") if p]
        if len(parts) < 2 and not (rel and len(parts) == 1):
            return out
        caller_dir = caller.replace("\\", "/").rsplit("/", 1)[0] if "/" in caller else ""
        for i in range(len(parts) - 1, 0 if not rel else -1, -1):
            mod, func = ".".join(parts[:i]), parts[i]
            if not func.isidentifier():
                continue
            if rel:
                # relative: a module next to the caller (or in its parent package)
                for base in (caller_dir, caller_dir.rsplit("/", 1)[0] if "/" in caller_dir else ""):
                    key = ".".join([*(base.split("/") if base else []), *parts[:i]])
                    for m in index.get(key, []):
                        if m.name != caller:
                            out.append((m, func))
                    if out:
                        return out
                continue
            for m in index.get(mod, []):
                if m.name != caller:
                    out.append((m, func))
            if out:
                return out
        return out

    def _text(
        self,
        m: Member,
        *,
        python: bool = False,
        role: str = "module",
        ctx: str = "runtime",
        tags: tuple[Any, ...] | None = None,
        as_shell: bool = False,
    ) -> None:
        """Cheap checks: string tags over raw text (Python too large or unparsable, scripts
        and files that code runs, webhooks anywhere)."""
        text = _decode_text(m.data)
        low = text.lower()
        pool = (
            tags
            if tags is not None
            else (self.rules.string_tags if python else self.rules.text_tags)
        )
        active = self.matcher.active(low, pool)
        if not active:
            return
        hits = self.matcher.find(text, active, low)
        if not hits:
            return
        if python:
            ctx = {"setup": "install", "test": "test", "pth": "startup"}.get(role, "import")
        events: list[Event] = []
        if python:
            for tag, pos in hits:
                if tag not in self.rules.event_tags:
                    continue
                line, snip = _line_at(text, pos)
                events.append(Event(tag, frozenset(), line, snip, 0, m.path))
        else:
            labels = frozenset(t for t, _ in hits if t not in ("url", "domain"))
            if not labels:
                return
            pos = min(p for t, p in hits if t in labels)
            line, snip = _line_at(text, pos)
            events.append(Event("text_ioc", labels, line, snip, 0, m.path))
            if as_shell:  # the whole file is a shell script something runs: its commands run
                events.append(Event("shell", labels, line, snip, 0, m.path))
            for tag in sorted(labels & self.rules.event_tags):
                events.append(Event(tag, frozenset(), line, snip, 0, m.path))
        self.units.append(_FileUnit(m.path, events, [Scope(0, "<text>", ctx, None)]))

    def _pth(self, m: Member) -> None:
        """A .pth line starting with ``import`` is executed at every interpreter start."""
        text = _decode_text(m.data)
        code_lines = []
        plain = True
        for ln in text.splitlines():
            s = ln.strip()
            if s.startswith(("import ", "import\t")):
                code_lines.append(s)
                try:
                    tree = parse_quietly(s)
                    if not all(isinstance(n, ast.Import) for n in tree.body):
                        plain = False
                except (SyntaxError, ValueError, RecursionError, MemoryError):
                    plain = False
        if not code_lines:
            return
        ctx = make_ctx(self.rules, self.matcher, max_payload_depth=self.limits.max_payload_depth)
        events: list[Event] = []
        scopes: list[Scope] = []
        for src in code_lines:
            res = analyze_python(src, m.path, "pth", ctx)
            off = len(scopes)
            for sc in res.scopes:
                scopes.append(
                    Scope(
                        sc.id + off,
                        sc.name,
                        sc.context,
                        None if sc.parent is None else sc.parent + off,
                        {c + off for c in sc.callees},
                    )
                )
            for e in res.events:
                events.append(
                    Event(e.tag, e.labels, e.line, e.snippet, e.scope + off, e.path, e.origin)
                )
        if not plain and scopes:
            line_no = next(
                (i for i, ln in enumerate(text.splitlines(), 1) if ln.strip().startswith("import")),
                None,
            )
            events.append(
                Event("pth_code", frozenset(), line_no, snippet_of(code_lines[0]), 0, m.path)
            )
        if scopes:
            self.units.append(_FileUnit(m.path, events, scopes))

    def _pyc(self, m: Member) -> None:
        """Compiled Python is never unmarshalled: its strings (names, constants) are mined."""
        strings = list(printable_strings(m.data, 5))
        joined = "\n".join(strings)
        labels = {
            tag for tag, _pos in self.matcher.find(joined, self.matcher.active(joined.lower()))
        }
        labels -= {"url", "domain"}
        ev = Event("pyc_file", frozenset(labels), None, snippet_of(m.path), 0, m.path)
        events = [ev] + [
            Event(t, frozenset(), None, "", 0, m.path)
            for t in sorted(labels & self.rules.event_tags)
        ]
        self.units.append(_FileUnit(m.path, events, [Scope(0, "<pyc>", "import", None)]))
        self.package.append(ev)

    def _binary(self, m: Member, kind: str) -> None:
        head = m.data
        fmt = None
        if head[:4] == b"\x7fELF":
            fmt = "elf"
        elif head[:2] == b"MZ":
            fmt = "pe"
        elif head[:4] in (
            b"\xfe\xed\xfa\xce",
            b"\xfe\xed\xfa\xcf",
            b"\xce\xfa\xed\xfe",
            b"\xcf\xfa\xed\xfe",
        ):
            fmt = "macho"
        if fmt is None:
            return
        labels = {fmt}
        if fmt == "pe" and kind in ("sdist", "pure-wheel", "other"):
            labels.add("pe_unexpected")
        self.package.append(
            Event("native_binary", frozenset(labels), None, snippet_of(m.path), 0, m.path)
        )
        self.binaries[m.name.replace("\\", "/").rsplit("/", 1)[-1].lower()] = m


def _table(d: dict[str, Any], key: str) -> dict[str, Any]:
    v = d.get(key)
    return v if isinstance(v, dict) else {}


def _hatch_hook_paths(hatch: object) -> list[str]:
    """``path`` of every Hatch custom build hook ([tool.hatch.build.hooks.custom] and the
    per-target ones)."""
    out: list[str] = []
    if not isinstance(hatch, dict):
        return out
    build = hatch.get("build")
    if not isinstance(build, dict):
        return out
    targets = build.get("targets")
    tables = (
        [build, *(t for t in targets.values() if isinstance(t, dict))]
        if isinstance(targets, dict)
        else [build]
    )
    for t in tables:
        hooks = t.get("hooks")
        custom = hooks.get("custom") if isinstance(hooks, dict) else None
        if isinstance(custom, dict):
            path = custom.get("path", "hatch_build.py")
            if isinstance(path, str):
                out.append(path)
    return out


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off for the length of one scan. Parsing builds millions
    of short-lived AST objects, and every few hundred allocations the collector would walk the
    young ones again and, as they pile up, the whole heap: about 40% of the CPU time of a scan
    of a Python-heavy wheel. The scanner frees what it builds by reference counting (the one
    cycle, analyzer <-> folder, is cut when a module is done), so memory stays bounded; what
    little cyclic garbage is left is collected once the collector is back on. Restores the
    previous state (a scan started while the collector was off leaves it off)."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


def scan_bytes(
    data: bytes, filename: str, limits: ScanLimits = DEFAULT, rules: RuleSet | None = None
) -> Report:
    """Scan one distribution (or any file) given as bytes. Never raises on hostile input."""
    t0 = time.perf_counter()
    sha = hashlib.sha256(data).hexdigest()
    rs = rules or RULES
    members = 0
    total = 0
    try:
        with _gc_paused():
            findings, members, total = _Scan(filename, limits, rs).run(data)
    except (RecursionError, MemoryError) as exc:
        findings = [
            Finding(
                "scan-error",
                "medium",
                f"the scan stopped: {type(exc).__name__}",
                filename,
                None,
                "",
            )
        ]
    except Exception as exc:
        findings = [
            Finding(
                "scan-error",
                "medium",
                f"the scan failed on this input: {type(exc).__name__}: {snippet_of(str(exc))}",
                filename,
                None,
                "",
            )
        ]
    verdict, score = _score(rs, findings)
    return Report(
        sha256=sha,
        filename=filename,
        verdict=verdict,
        score=round(score, 2),
        findings=tuple(findings),
        members=members,
        bytes_read=total,
        elapsed=time.perf_counter() - t0,
    )


def scan_path(path: Path, limits: ScanLimits = DEFAULT, rules: RuleSet | None = None) -> Report:
    """Scan one file on disk (read in memory; nothing is extracted)."""
    p = Path(path)
    return scan_bytes(p.read_bytes(), p.name, limits, rules)
