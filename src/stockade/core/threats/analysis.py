"""Python-aware static analysis of one source file (never executed, never imported).

The module is parsed with :mod:`ast`; imports and aliases are resolved (``import subprocess as
sp``, ``from os import system as s``, ``__import__("o"+"s")``, ``getattr(__builtins__, "ex"+"ec")``,
``x = os.system``), constants are folded (:mod:`decode`) and values carry *labels* (the tags of
the calls and strings they come from) through assignments, calls, returns, containers, string
building, parameters of local functions and files written then read or run. Each call to a
tagged name becomes an :class:`Event` with the labels of the arguments that matter to it (the
code for ``exec``, the program for a process, the data for a request). Payloads decoded
statically from what ``exec``/``eval`` receive are parsed and analysed again in the context
of the call (bounded depth).

Every scope (module body, function, method, decoded payload) has a context: ``install``
(setup.py, setuptools/hatch commands, build hooks), ``startup`` (.pth), ``import`` (module-level
code and what it calls), ``runtime`` (code that runs only when called) or ``test``.
"""

from __future__ import annotations

import ast
import builtins
import os
import re
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from stockade.core.threats.decode import Folder, Marshalled, b64_text, printable_strings
from stockade.core.threats.rules import CONTEXTS, EAGER, RuleSet
from stockade.core.threats.strings import StringMatcher, entropy, shell_normalize

__all__ = ["Event", "PyResult", "Scope", "analyze_python", "snippet_of"]

_BUILTIN_NAMES: Final = frozenset(dir(builtins)) | {"__builtins__", "execfile", "file", "unicode"}
_RANK: Final = {c: i for i, c in enumerate(CONTEXTS)}
_EAGER_CTX: Final = EAGER
_NARROW: Final = frozenset({"get", "__getitem__", "pop", "setdefault", "getenv"})
_COMMAND_BASES: Final = re.compile(
    r"^(?:setuptools\.command\.|distutils\.command\.|setuptools\.Command$|distutils\.core\.Command$"
    r"|distutils\.cmd\.Command$|setuptools\._distutils\.|wheel\.bdist_wheel\.|"
    r"hatchling\.builders\.hooks\.plugin\.interface\.BuildHookInterface$|"
    r"hatchling\.metadata\.plugin\.interface\.MetadataHookInterface$|"
    r"pdm\.backend\.hooks\.|Cython\.Distutils\.|numpy\.distutils\.command\.)"
)
# Programs that run what they are given: for these the following arguments are "the program".
_LAUNCHERS: Final = frozenset(
    {
        "python",
        "python2",
        "python3",
        "pythonw",
        "py",
        "sh",
        "bash",
        "zsh",
        "dash",
        "ksh",
        "cmd",
        "powershell",
        "pwsh",
        "wscript",
        "cscript",
        "mshta",
        "rundll32",
        "regsvr32",
        "msiexec",
        "start",
        "open",
        "xdg-open",
        "node",
        "java",
        "perl",
        "ruby",
        "osascript",
        "sudo",
        "nohup",
        "exec",
        "env",
        "nice",
        "setsid",
        "call",
        "/c",
        "/k",
        "-c",
        "-command",
        "-file",
        "-jar",
        "/b",
        "-nop",
        "-noprofile",
        "-windowstyle",
        "hidden",
        "-w",
        "-ep",
        "bypass",
        "-executionpolicy",
        "-e",
        "-enc",
        "-encodedcommand",
        "sys.executable",
    }
)
_WRITE_OPEN: Final = re.compile(r"[wax+]")
_CARRY: Final = frozenset({"decode", "decrypt"})
_EXEC_NAMES: Final = frozenset({"exec", "eval", "compile", "execfile"})
_DOWNLOADERS: Final = frozenset(
    {
        "curl",
        "wget",
        "certutil",
        "bitsadmin",
        "invoke-webrequest",
        "iwr",
        "irm",
        "invoke-restmethod",
        "start-bitstransfer",
        "aria2c",
        "axel",
    }
)
_INTERPRETERS: Final = frozenset(
    {
        "python",
        "python2",
        "python3",
        "pythonw",
        "py",
        "sh",
        "bash",
        "zsh",
        "dash",
        "cmd",
        "powershell",
        "pwsh",
        "node",
        "perl",
        "ruby",
        "osascript",
    }
)
_WRITE_METHODS: Final = frozenset(
    {"write", "writelines", "write_bytes", "write_text", "extractall", "extract"}
)
_SEND_METHODS: Final = frozenset(
    {
        "send",
        "post",
        "execute",
        "send_message",
        "sendMessage",
        "send_document",
        "sendDocument",
        "upload",
    }
)
_ENDPOINTS: Final = frozenset({"webhook", "exfil_host", "ip_url"})
_CALLBACK_TAKERS: Final = frozenset(
    {
        "Thread",
        "Timer",
        "Process",
        "register",
        "submit",
        "start_new_thread",
        "call_soon",
        "apply_async",
    }
)
_ENDPOINT_LABELS: Final = frozenset(
    {"url", "domain", "webhook", "exfil_host", "ip_url", "ip_lookup", "exe_name"}
)
_PATH_JOINS: Final = frozenset(
    {
        "os.path.join",
        "posixpath.join",
        "ntpath.join",
        "pathlib.Path",
        "pathlib.PurePath",
        "pathlib.Path.joinpath",
        "pathlib.PureWindowsPath",
        "pathlib.WindowsPath",
    }
)
_LOOKUPS: Final = frozenset(
    {"builtins.getattr", "builtins.__import__", "importlib.import_module", "builtins.eval"}
)
_PY_C: Final = re.compile(r"""(?is)\bpython[\d.]*(?:w)?(?:\.exe)?["']?\s+-c\s+(["'])(.+)\1""")
_DANGEROUS_MODULES: Final = frozenset(
    {
        "os",
        "subprocess",
        "socket",
        "base64",
        "zlib",
        "marshal",
        "codecs",
        "builtins",
        "sys",
        "urllib",
        "requests",
        "ctypes",
        "importlib",
        "pty",
        "shutil",
    }
)
_SETUP_CALLS: Final = frozenset(
    {"setuptools.setup", "distutils.core.setup", "setuptools.__init__.setup"}
)
_ASSUMED_MODULES: Final = frozenset(
    {"os", "subprocess", "socket", "requests", "urllib", "base64", "zlib", "marshal", "shutil"}
)
_SENSITIVE_BUILTINS: Final = frozenset(
    {"exec", "eval", "compile", "__import__", "getattr", "open", "execfile", "globals", "vars"}
)
_FIELDS: dict[type, tuple[str, ...]] = {}
_SPECIAL: Final = frozenset(
    {
        ast.FunctionDef,
        ast.AsyncFunctionDef,
        ast.Lambda,
        ast.ClassDef,
        ast.If,
        ast.Import,
        ast.ImportFrom,
        ast.Assign,
        ast.AnnAssign,
        ast.AugAssign,
        ast.NamedExpr,
        ast.For,
        ast.AsyncFor,
        ast.comprehension,
        ast.With,
        ast.AsyncWith,
        ast.Return,
        ast.Yield,
        ast.YieldFrom,
    }
)
# Raw-text gate: a Python file without any of these tokens cannot trigger a code rule, so it
# is not parsed (string indicators are still checked cheaply).
_GATE_WORDS: Final = [
    "__import__",
    "__builtins__",
    "builtins",
    "marshal",
    "dill",
    "runpy",
    "FunctionType",
    "popen",
    "Popen",
    "startfile",
    "subprocess",
    "ShellExecuteW",
    "ShellExecuteA",
    "ShellExecute",
    "CreateProcessW",
    "CreateProcess",
    "WinExec",
    "urlopen",
    "urlretrieve",
    "requests",
    "httpx",
    "urllib3",
    "aiohttp",
    "socket",
    "smtplib",
    "ftplib",
    "pycurl",
    "wget",
    "telebot",
    "websocket",
    "websockets",
    "paramiko",
    "tls_client",
    "cloudscraper",
    "b64decode",
    "b32decode",
    "b85decode",
    "a85decode",
    "decodebytes",
    "unhexlify",
    "fromhex",
    "decompress",
    "Fernet",
    "rot13",
    "rot_13",
    "chmod",
    "dup2",
    "pyperclip",
    "clipboard",
    "winreg",
    "_winreg",
    "gethostbyname",
    "getaddrinfo",
    "ImageGrab",
    "pynput",
    "CryptUnprotectData",
    "win32crypt",
    "browser_cookie3",
    "__pyarmor__",
    "powershell",
    "spawnl",
    "spawnv",
    "spawnve",
    "spawnlp",
    "spawnvp",
    "execv",
    "execl",
    "execve",
    "execvp",
    "execfile",
]
_GATE_LITERALS: Final = (
    "exec(",
    "eval(",
    "compile(",
    "chr(",
    "getattr(",
    "import_module(",
    "exec (",
    "eval (",
    "system(",
    "webhooks/",
    "webhook/",
    "api.telegram.org",
    "Login Data\x01",
    "Local State\x01",
    "leveldb\x01",
    ".exe\x01",
    "pty.spawn",
    "loads(b'",
    'loads(b"',
    "loads('",
    'loads("',
    "Startup\x01",
    "CurrentVersion\x01",
    "schtasks\x01",
    "crontab\x01",
    "LaunchAgents\x01",
    "autostart\x01",
    "systemd\x01",
    ".bashrc\x01",
    ".profile\x01",
    "clipboard\x01",
    ".tool(",
    ".tool\n",
)


def _trie_regex(words: list[str]) -> str:
    """One regex for many literals, factored as a trie (much faster in ``re`` than a flat
    alternation). A word ending in \x01 must end at a word boundary."""
    root: dict[str, Any] = {}
    for w in words:
        d = root
        for ch in w:
            d = d.setdefault(ch, {})
        d[""] = {}

    def emit(d: dict[str, Any]) -> str:
        alts = []
        end = False
        for k in sorted(d):
            if k == "":
                end = True
                continue
            alts.append((r"\b" if k == "\x01" else re.escape(k)) + emit(d[k]))
        if not alts:
            return ""
        body = alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"
        return f"(?:{body})?" if end else body

    return emit(root)


class _Gate:
    """Raw-text gate: a Python file without any of these tokens cannot trigger a code rule,
    so it is not parsed (most library modules). ~50 MB/s on bytes."""

    def __init__(self) -> None:
        words = [w + "\x01" for w in _GATE_WORDS] + list(_GATE_LITERALS)
        self._rx = re.compile(_trie_regex(words).encode("ascii"))

    def search(self, data: bytes) -> bool:
        """Worth parsing? Any strong token (process, network, decoder, indicator…) says yes;
        exec/eval/compile alone only with a sign of obfuscation next to them (a computed
        lookup, escapes, a reversed string, a very long line), as in most libraries they
        evaluate their own expressions."""
        pos = 0
        weak = False
        for _ in range(2000):
            m = self._rx.search(data, pos)
            if m is None:
                break
            s = m.start()
            tok = m.group(0)
            pos = m.end()
            if tok == b"system(" and s > 0:
                prev = data[s - 1 : s]
                if prev.isalnum() or prev == b"_":
                    continue  # solve_system(, filesystem(: not os.system
            if tok in _WEAK_ANYWHERE:  # importlib.import_module( counts as well
                weak = True
                continue
            if tok in _WEAK_TOKENS:
                # must be the builtin, not a method (re.compile(, model.eval()
                prev = data[s - 1 : s] if s > 0 else b" "
                if not (prev == b"." or prev.isalnum() or prev == b"_"):
                    weak = True
                continue
            return True
        else:
            return True
        if not weak:
            return False
        if _exec_hints(data):
            return True
        return max(map(len, data.split(b"\n", 2000)), default=0) >= 2000


_WEAK_TOKENS: Final = frozenset(
    {b"exec(", b"eval(", b"compile(", b"exec (", b"eval (", b"chr(", b"getattr("}
)
_WEAK_ANYWHERE: Final = frozenset({b"import_module("})
# With a weak token, a sign that a name is being hidden: a computed lookup, escapes, a
# reversed string, short literals glued together ("sys" + "tem"), or the name of a process
# or code runner as a string (getattr(os, "system")).
# (One alternation would do, but ``re`` scans it position by position; literals are found with
# ``in`` and each pattern left starts with a character ``re`` can skip ahead to: about 3x faster.)
_HINT_LITERALS: Final = (b"__import__", b"globals()", b"vars(", b"[::-1]", b"bytes([")
_HINT_ESCAPES: Final = re.compile(rb"\\x[0-9a-fA-F]{2}|\\[0-7]{3}")
_HINT_CHR: Final = re.compile(rb"\bchr\(")
_HINT_QUOTED: Final = re.compile(
    rb"[\"'](?:[A-Za-z_]{1,12}[\"']\s*\+\s*[\"'][A-Za-z_]{1,12}[\"']"
    rb"|(?:system|popen|Popen|spawn[lv]p?e?|exec[lv]p?e?|startfile|check_output"
    rb"|getoutput|getstatusoutput|subprocess|posix|nt|builtins|__builtins__)[\"'])"
)


def _exec_hints(data: bytes) -> bool:
    return (
        any(w in data for w in _HINT_LITERALS)
        or _HINT_ESCAPES.search(data) is not None
        or (b"chr(" in data and _HINT_CHR.search(data) is not None)
        or _HINT_QUOTED.search(data) is not None
    )


GATE: Final = _Gate()
_B64CHARS: Final = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_\n"
)
_HEXCHARS: Final = frozenset(b"0123456789abcdefABCDEF")


@dataclass(slots=True)
class Event:
    tag: str
    labels: frozenset[str]
    line: int | None
    snippet: str
    scope: int
    path: str
    origin: str = ""  # "decoded@L12" for events found in a decoded payload


@dataclass(slots=True)
class Scope:
    id: int
    name: str
    context: str
    parent: int | None
    callees: set[int] = field(default_factory=set)


@dataclass(slots=True)
class PyResult:
    events: list[Event]
    scopes: list[Scope]
    ok: bool = True  # parsed
    # literal file names run as programs / executed as code, with the scope that does it
    programs: list[tuple[str, int, int | None]] = field(default_factory=list)
    exec_files: list[tuple[str, int, int | None]] = field(default_factory=list)
    imported: set[str] = field(default_factory=set)  # first components of imported modules
    payloads: int = 0
    # calls to imported names from code that runs eagerly: (dotted name, context); the
    # scanner maps them to modules of the same distribution (cross-module entry points)
    calls_out: list[tuple[str, str]] = field(default_factory=list)
    salvaged: bool = False  # parsed only after statements that do not parse were dropped


@dataclass(slots=True)
class _Binding:
    kind: str  # value | elem | aug | with | param | def | class | lambda | import
    expr: ast.AST | None
    dotted: str | None = None  # for imports


@dataclass(slots=True)
class _Ctx:
    rules: RuleSet
    matcher: StringMatcher
    max_payload_depth: int
    max_ast_bytes: int
    fold_budget: int
    payload_budget: list[int]  # remaining decoded-payload bytes for this file (shared)


def snippet_of(line_text: str, col: int = 0, limit: int = 200) -> str:
    """One line, control characters escaped, at most ``limit`` characters around ``col``."""
    s = line_text.strip("\r\n")
    if len(s) > limit:
        start = max(0, min(col - 40, len(s) - limit))
        s = s[start : start + limit]
    out = []
    for ch in s:
        o = ord(ch)
        if ch == "\t":
            out.append(" ")
        elif o < 0x20 or o == 0x7F or 0x80 <= o < 0xA0 or ch in "\u2028\u2029\u200b\u202e":
            out.append(f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}")
        else:
            out.append(ch)
    return "".join(out).strip()[:limit]


def _dump_key(node: ast.AST) -> str:
    try:
        return ast.dump(node)
    except (RecursionError, ValueError):
        return f"node:{id(node)}"


class _Analyzer:
    def __init__(
        self,
        src: str,
        path: str,
        role: str,
        ctx: _Ctx,
        depth: int = 0,
        line_override: int | None = None,
        origin: str = "",
        inherited: dict[str, list[_Binding]] | None = None,
    ) -> None:
        self.src = src
        self.path = path
        self.role = role
        self.c = ctx
        # imports of the code that exec'd this payload (exec shares its globals)
        self.inherited = inherited or {}
        self.rules = ctx.rules
        self.depth = depth
        self.line_override = line_override
        self.origin = origin
        self.lines: list[str] | None = None
        self.scopes: list[Scope] = []
        self.bindings: list[dict[str, list[_Binding]]] = []
        self.class_methods: dict[int, dict[str, int]] = {}  # class node id -> method scope ids
        self.func_scope: dict[int, int] = {}  # def/lambda node id -> scope id
        self.scope_class: dict[int, int] = {}  # method scope -> class node id
        self.class_nodes: dict[int, ast.ClassDef] = {}
        self.calls: list[tuple[ast.Call, int]] = []
        self.consts: list[tuple[ast.Constant, int]] = []
        self.imports: list[tuple[str, ast.AST, int]] = []
        self.returns: dict[int, list[ast.expr]] = {}
        self.param_names: dict[int, list[str]] = {}
        self.events: list[Event] = []
        self.programs: list[tuple[str, int, int | None]] = []
        self.exec_files: list[tuple[str, int, int | None]] = []
        self._cur_line: int | None = None
        self.payloads = 0
        self._cur = 0
        self._resolve_memo: dict[int, str | None] = {}
        self._labels_memo: dict[int, frozenset[str]] = {}
        self._active: set[int] = set()
        self._resolving: set[int] = set()
        self._written: dict[int, tuple[str, ast.Call, int]] = {}
        self._acc_cache: dict[int, ast.expr | None] = {}
        self._aliases: list[tuple[ast.Name, int]] = []
        self._attr_alias: dict[str, ast.Name] = {}
        self.exec_refs: list[tuple[ast.Name, int]] = []  # exec/eval used as a value
        self._command_tags = frozenset(t.name for t in ctx.rules.string_tags if t.command)
        self._seen_payloads: set[int] = set()
        self._pending: list[tuple[str, ast.Call, int]] = []
        self._param_labels: dict[tuple[int, str], frozenset[str]] = {}
        self._param_seed: dict[tuple[int, str], frozenset[str]] = {}
        self._param_built: set[tuple[int, str]] = set()  # params some caller passes built text
        self._path_labels: dict[str, frozenset[str]] = {}
        self._obf_nodes: dict[int, tuple[ast.AST, int]] = {}
        self._obf_emitted: set[int] = set()
        self._tag_counts: dict[tuple[str, frozenset[str]], int] = {}
        self.folder = Folder(self._lookup_value_for, self._resolve_for_folder, ctx.fold_budget)
        self.children: list[tuple[PyResult, int]] = []  # payload results, calling scope
        self._ext_calls: dict[str, int] = {}  # imported dotted name called -> calling scope
        self.salvaged = False

    # ------------------------------------------------------------------ helpers
    def _line(self, node: ast.AST) -> tuple[int | None, str]:
        lineno = getattr(node, "lineno", None)
        col = getattr(node, "col_offset", 0) or 0
        if self.lines is None:
            self.lines = self.src.splitlines()
        text = self.lines[lineno - 1] if lineno and 0 < lineno <= len(self.lines) else ""
        snip = snippet_of(text, col)
        if self.line_override is not None:
            return self.line_override, snippet_of(f"[{self.origin}] {snip}")
        return lineno, snip

    def _emit(self, tag: str, labels: frozenset[str], node: ast.AST | None, scope: int) -> None:
        key = (tag, labels)
        n = self._tag_counts.get(key, 0)
        if n >= 10:
            return
        self._tag_counts[key] = n + 1
        line, snip = self._line(node) if node is not None else (self.line_override, "")
        self.events.append(Event(tag, labels, line, snip, scope, self.path, self.origin))

    def _new_scope(self, name: str, context: str, parent: int | None) -> int:
        sid = len(self.scopes)
        self.scopes.append(Scope(sid, name, context, parent))
        self.bindings.append({})
        return sid

    def _bind(self, scope: int, name: str, b: _Binding) -> None:
        lst = self.bindings[scope].setdefault(name, [])
        if len(lst) < 64 or (
            b.kind == "aug" and isinstance(b.expr, ast.Constant) and len(lst) < 50_000
        ):
            lst.append(b)

    def _bind_target(self, scope: int, target: ast.AST, value: ast.AST | None, kind: str) -> None:
        if isinstance(target, ast.Name):
            self._bind(scope, target.id, _Binding(kind, value))
            if (
                kind == "value"
                and isinstance(value, ast.Name)
                and value.id in ("exec", "eval", "compile", "__import__", "execfile")
                and len(self._aliases) < 32
            ):
                self._aliases.append((value, scope))  # x = exec: a builtin under another name
        elif isinstance(target, ast.Tuple | ast.List):
            if (
                kind == "value"
                and isinstance(value, ast.Tuple | ast.List)
                and len(value.elts) == len(target.elts)
            ):
                for t, v in zip(target.elts, value.elts, strict=True):
                    self._bind_target(scope, t, v, kind)
            else:
                for t in target.elts:
                    self._bind_target(scope, t, value, "elem")
        elif isinstance(target, ast.Starred):
            self._bind_target(scope, target.value, value, "elem")
        elif isinstance(target, ast.Subscript) and value is not None:
            # d[k] = v, d[a][b] = v: the container now holds v's data
            base: ast.AST = target
            while isinstance(base, ast.Subscript):
                base = base.value
            if isinstance(base, ast.Name):
                self._bind(scope, base.id, _Binding("aug", value))
        elif (
            isinstance(target, ast.Attribute)
            and kind == "value"
            and isinstance(value, ast.Name)
            and value.id in ("exec", "eval", "compile", "__import__", "execfile")
            and len(self._attr_alias) < 64
        ):
            # self._run = exec: remembered by attribute name (obfuscators hide builtins so)
            self._attr_alias[target.attr] = value
            self._aliases.append((value, scope))

    # ------------------------------------------------------------------ pass 1: structure
    def collect(self, tree: ast.Module, module_ctx: str, max_nodes: int = 2_000_000) -> bool:
        """Scopes, bindings, calls and string constants; False when the node budget ran out."""
        root = self._new_scope("<module>", module_ctx, None)
        stack: list[tuple[ast.AST, int, int | None]] = [(tree, root, None)]
        push = stack.append
        setup_like = self.role == "setup"
        calls = self.calls
        consts = self.consts
        fields = _FIELDS
        special = _SPECIAL
        callees: set[int] = set()
        seen = 0
        while stack:
            node, scope, cls = stack.pop()
            seen += 1
            if seen > max_nodes:
                return False
            t = type(node)
            if t is ast.Name:
                if node.id in _EXEC_NAMES and id(node) not in callees:  # type: ignore[attr-defined]
                    self.exec_refs.append((node, scope))  # type: ignore[arg-type]
                continue
            if t is ast.Constant:
                v = node.value  # type: ignore[attr-defined]
                if (type(v) is str or type(v) is bytes) and len(v) >= 4:
                    consts.append((node, scope))  # type: ignore[arg-type]
                continue
            if t is ast.Expr and type(node.value) is ast.Constant:  # type: ignore[attr-defined]
                continue  # a docstring or a bare literal: not a value anything uses
            if t is ast.Call:
                calls.append((node, scope))  # type: ignore[arg-type]
                callees.add(id(node.func))  # type: ignore[attr-defined]
            elif t in special and self._special(node, scope, cls, push, setup_like):
                continue
            fl = fields.get(t)
            if fl is None:
                fl = tuple(f for f in t._fields if f not in ("ctx", "type_comment", "kind"))
                fields[t] = fl
            for f in fl:
                v = getattr(node, f, None)
                if type(v) is list:
                    for x in v:
                        if isinstance(x, ast.AST):
                            push((x, scope, cls))
                elif isinstance(v, ast.AST):
                    push((v, scope, cls))
        return True

    def _special(
        self,
        node: ast.AST,
        scope: int,
        cls: int | None,
        push: Callable[[tuple[ast.AST, int, int | None]], None],
        setup_like: bool,
    ) -> bool:
        """Structure-bearing nodes; True when the children were pushed here."""
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            name = getattr(node, "name", "<lambda>")
            if isinstance(node, ast.Lambda):
                fctx = self.scopes[scope].context if setup_like else "runtime"
            else:
                self._bind(scope, name, _Binding("def", node))
                fctx = "install" if setup_like else "runtime"
                for d in node.decorator_list:
                    push((d, scope, None))
                if node.decorator_list and self.depth == 0:
                    self._tool_description(node, scope)
            if cls is not None and self._is_command_class(self.class_nodes[cls], scope):
                fctx = "install"
            if self.scopes[scope].context == "test":
                fctx = "test"
            fid = self._new_scope(name, fctx, scope)
            self.func_scope[id(node)] = fid
            a = node.args
            params = [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs]
            if a.vararg:
                params.append(a.vararg.arg)
            if a.kwarg:
                params.append(a.kwarg.arg)
            self.param_names[fid] = params
            for p in params:
                self._bind(fid, p, _Binding("param", None))
                plab = self.rules.param_tags(p)
                if plab:
                    self._param_seed[(fid, p)] = plab
            for dflt in [*a.defaults, *(x for x in a.kw_defaults if x is not None)]:
                push((dflt, scope, None))
            if cls is not None:
                self.class_methods.setdefault(cls, {})[name] = fid
                self.scope_class[fid] = cls
            if isinstance(node, ast.Lambda):
                self.returns.setdefault(fid, []).append(node.body)
                push((node.body, fid, None))
            else:
                for st in node.body:
                    push((st, fid, None))
            return True
        if isinstance(node, ast.ClassDef):
            self._bind(scope, node.name, _Binding("class", node))
            self.class_nodes[id(node)] = node
            for child in [*node.bases, *node.keywords, *node.decorator_list]:
                push((child, scope, None))
            for st in node.body:
                push((st, scope, id(node)))
            return True
        if isinstance(node, ast.If):
            if (
                _is_main_guard(node.test)
                and not setup_like
                and self.role == "module"
                and self.scopes[scope].parent is None
            ):
                mid = self._new_scope("__main__", "runtime", scope)
                for st in node.body:
                    push((st, mid, None))
                for st in node.orelse:
                    push((st, scope, cls))
                return True
            return False
        if isinstance(node, ast.Import):
            for al in node.names:
                if al.asname:
                    self._bind(scope, al.asname, _Binding("import", None, al.name))
                else:
                    top = al.name.split(".")[0]
                    self._bind(scope, top, _Binding("import", None, top))
                self.imports.append((al.name, node, scope))
            return True
        if isinstance(node, ast.ImportFrom):
            mod = ("." * node.level) + (node.module or "")
            for al in node.names:
                if al.name == "*":
                    self._bind(scope, "*", _Binding("import", None, mod))
                    continue
                self._bind(
                    scope, al.asname or al.name, _Binding("import", None, f"{mod}.{al.name}")
                )
            self.imports.append((mod, node, scope))
            return True
        if isinstance(node, ast.Assign):
            for t in node.targets:
                self._bind_target(scope, t, node.value, "value")
        elif isinstance(node, ast.AnnAssign):
            if node.value is not None:
                self._bind_target(scope, node.target, node.value, "value")
        elif isinstance(node, ast.AugAssign):
            self._bind_target(scope, node.target, node.value, "aug")
        elif isinstance(node, ast.NamedExpr):
            self._bind_target(scope, node.target, node.value, "value")
        elif isinstance(node, ast.For | ast.AsyncFor | ast.comprehension):
            self._bind_target(scope, node.target, node.iter, "elem")
        elif isinstance(node, ast.With | ast.AsyncWith):
            for item in node.items:
                if item.optional_vars is not None:
                    self._bind_target(scope, item.optional_vars, item.context_expr, "with")
        elif isinstance(node, ast.Return | ast.Yield | ast.YieldFrom) and node.value is not None:
            self.returns.setdefault(scope, []).append(node.value)
        return False

    def _tool_description(self, node: ast.FunctionDef | ast.AsyncFunctionDef, scope: int) -> None:
        """An AI-agent tool (``@mcp.tool()``, ``@server.tool``): its docstring or description
        is read by the model as instructions, a channel for hidden orders (tool poisoning)."""
        texts: list[str] = []
        for d in node.decorator_list:
            f = d.func if isinstance(d, ast.Call) else d
            name = (
                f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            )
            if name not in ("tool", "prompt", "resource"):
                continue
            if isinstance(d, ast.Call):
                for k in d.keywords:
                    if k.arg == "description" and isinstance(k.value, ast.Constant):
                        texts.append(str(k.value.value))
            doc = ast.get_docstring(node, clean=False)
            if doc:
                texts.append(doc)
        for t in texts:
            labels = self.c.matcher.labels(t[:8192])
            if labels:
                self._emit("tool_description", labels, node, scope)

    def _is_command_class(self, cls: ast.ClassDef, scope: int) -> bool:
        saved = self._cur
        self._cur = scope
        try:
            for b in cls.bases:
                d = self.resolve(b)
                if d and _COMMAND_BASES.match(d):
                    return True
        finally:
            self._cur = saved
        return False

    # ------------------------------------------------------------------ name resolution
    def _find(self, scope: int | None, name: str) -> tuple[int, list[_Binding]] | None:
        while scope is not None:
            b = self.bindings[scope].get(name)
            if b:
                return scope, b
            scope = self.scopes[scope].parent
        inherited = self.inherited.get(name)
        return (0, inherited) if inherited else None

    def _imports_seen_from(self, scope: int) -> dict[str, list[_Binding]]:
        out = dict(self.inherited)
        chain: list[int] = []
        s: int | None = scope
        while s is not None:
            chain.append(s)
            s = self.scopes[s].parent
        for sid in reversed(chain):
            for name, bs in self.bindings[sid].items():
                imps = [b for b in bs if b.kind == "import"]
                if imps:
                    out[name] = imps
        return out

    def _lookup_value_for(self, name: str, node: ast.AST) -> ast.expr | None:
        hit = self._find(self._cur, name)
        if hit is None:
            return None
        _, bs = hit
        if len(bs) != 1:
            return self._accumulated(bs)
        b = bs[0]
        if b.kind in ("value",) and isinstance(b.expr, ast.expr):
            return b.expr
        if b.kind == "def" and isinstance(b.expr, ast.FunctionDef):
            return b.expr  # type: ignore[return-value]
        return None

    def _accumulated(self, bs: list[_Binding]) -> ast.expr | None:
        """``s = ""; s += "..."; s += "..."``: one value then only ``+=`` of literals, in
        source order, folds as ``"".join([...])`` (a common way to build a payload)."""
        key = id(bs)
        if key in self._acc_cache:
            return self._acc_cache[key]
        out: ast.expr | None = None
        if all(b.kind in ("value", "aug") for b in bs):
            first = [b for b in bs if b.kind == "value"]
            augs = [b for b in bs if b.kind == "aug"]
            if (
                len(first) == 1
                and augs
                and len(first) + len(augs) == len(bs)
                and all(isinstance(b.expr, ast.Constant) for b in augs)
                and isinstance(first[0].expr, ast.Constant)
            ):
                parts = sorted(
                    (b for b in bs if b.expr is not None),
                    key=lambda b: (getattr(b.expr, "lineno", 0), getattr(b.expr, "col_offset", 0)),
                )
                if parts[0] is first[0]:
                    head = first[0].expr
                    joiner = (
                        b""
                        if isinstance(head, ast.Constant) and isinstance(head.value, bytes)
                        else ""
                    )
                    out = ast.Call(
                        func=ast.Attribute(value=ast.Constant(joiner), attr="join", ctx=ast.Load()),
                        args=[ast.List(elts=[b.expr for b in parts], ctx=ast.Load())],  # type: ignore[misc]
                        keywords=[],
                    )
        self._acc_cache[key] = out
        return out

    def _obf(self, node: ast.AST) -> None:
        if len(self._obf_nodes) < 64:
            self._obf_nodes.setdefault(id(node), (node, self._cur))

    def _resolve_for_folder(self, node: ast.expr) -> str | None:
        return self.resolve(node)

    def resolve(self, node: ast.AST) -> str | None:
        """The dotted name an expression refers to, or None."""
        key = id(node)
        if key in self._resolve_memo:
            return self._resolve_memo[key]
        if key in self._resolving:
            return None
        self._resolving.add(key)
        try:
            r = self._resolve(node)
        except RecursionError:
            r = None
        finally:
            self._resolving.discard(key)
        self._resolve_memo[key] = r
        return r

    def _resolve(self, node: ast.AST) -> str | None:
        if isinstance(node, ast.Name):
            n = node.id
            hit = self._find(self._cur, n)
            if hit is None:
                star = self._find(self._cur, "*")
                if star is not None and n not in _BUILTIN_NAMES:
                    mod = star[1][0].dotted
                    return f"{mod}.{n}" if mod else None
                if n in ("__builtins__", "builtins"):
                    return "builtins"
                if n in _BUILTIN_NAMES:
                    return f"builtins.{n}"
                # a well-known module used without its import (``from requests import get``
                # then ``requests.get(...)``): what the author meant is plain
                return n if n in _ASSUMED_MODULES and self.depth == 0 else None
            _sid, bs = hit
            kinds = {b.kind for b in bs}
            if kinds == {"import"}:
                return bs[-1].dotted
            if kinds <= {"def", "class", "lambda"}:
                return f"local.{n}"
            b = _nearest(bs, getattr(node, "lineno", 0))
            if b is not None and b.kind in ("value", "with") and isinstance(b.expr, ast.AST):
                e = b.expr
                if isinstance(e, ast.Lambda):
                    return f"local.{n}"
                if isinstance(e, ast.Name | ast.Attribute | ast.Call | ast.Subscript):
                    return self.resolve(e)
            return None
        if isinstance(node, ast.Attribute):
            base = self.resolve(node.value)
            if base is None:
                alias = self._attr_alias.get(node.attr)
                return self.resolve(alias) if alias is not None else None
            if base == "builtins" and node.attr == "__dict__":
                return "builtins"
            if base.startswith("local."):
                return None
            return f"{base}.{node.attr}"
        if isinstance(node, ast.Call):
            f = self.resolve(node.func)
            if f in ("builtins.__import__", "importlib.import_module", "importlib.__import__"):
                if node.args:
                    name = self.folder.fold(node.args[0])
                    if isinstance(name, str) and re.fullmatch(r"[\w.]+", name):
                        if not isinstance(node.args[0], ast.Constant):
                            self._obf(node)
                        return name
                    if f == "builtins.__import__" and _assembled(node.args[0]):
                        self._obf(node)  # a module name assembled piece by piece
                return None
            if f == "builtins.getattr" and len(node.args) >= 2:
                base = self.resolve(node.args[0])
                name = self.folder.fold(node.args[1])
                if base == "builtins" and not isinstance(name, str):
                    # a builtin chosen at run time: exec/eval as far as we can tell
                    return "builtins.<dynamic>"
                if base is None or not isinstance(name, str) or not name.isidentifier():
                    return None
                if not isinstance(node.args[1], ast.Constant):
                    # getattr(builtins, "exec") is a compatibility idiom; a built name is not
                    self._obf(node)
                if base.startswith("local."):
                    return None
                return f"{base}.{name}"
            if f == "builtins.eval" and node.args:
                src = self.folder.fold(node.args[0])
                if isinstance(src, str) and re.fullmatch(r"\s*[A-Za-z_][\w.]{0,200}\s*", src):
                    head = src.strip().split(".")[0]
                    if head in _SENSITIVE_BUILTINS or head in _DANGEROUS_MODULES:
                        self._obf(node)  # eval("eval"), eval("os.system"): not a variable
                    try:
                        expr = parse_quietly(src.strip(), mode="eval").body
                    except (SyntaxError, ValueError):
                        return None
                    return self.resolve(expr)
                return None
            if f in ("builtins.globals", "builtins.locals", "builtins.vars"):
                if f == "builtins.vars" and node.args:
                    return self.resolve(node.args[0])
                return "globals"
            if f is None or f.startswith("local."):
                return None
            return f
        if isinstance(node, ast.Subscript):
            base = self.resolve(node.value)
            key = self.folder.fold(node.slice)
            if not isinstance(key, str):
                return None
            if base in ("builtins", "globals") and key == "__builtins__":
                return "builtins"
            if base == "builtins" and key.isidentifier():
                if key in _SENSITIVE_BUILTINS or not isinstance(node.slice, ast.Constant):
                    self._obf(node)
                return f"builtins.{key}"
            if base == "globals" and key.isidentifier():
                if not isinstance(node.slice, ast.Constant):
                    self._obf(node)
                return self.resolve(ast.Name(id=key, ctx=ast.Load()))
            if base == "sys.modules" and re.fullmatch(r"[\w.]+", key):
                return key
            return None
        return None

    # ------------------------------------------------------------------ labels
    def labels(self, node: ast.AST | None) -> frozenset[str]:
        if node is None:
            return frozenset()
        key = id(node)
        hit = self._labels_memo.get(key)
        if hit is not None:
            return hit
        if key in self._active:
            return frozenset()
        self._active.add(key)
        try:
            r = self._labels(node)
        except RecursionError:
            r = frozenset()
        finally:
            self._active.discard(key)
        self._labels_memo[key] = r
        return r

    def _str_labels(self, s: str | bytes) -> frozenset[str]:
        """Labels of a value built in the code (folded). Big built values are data (tables,
        test inputs); payloads reach the analysis through exec and decoding instead."""
        if len(s) > 65536:
            return frozenset()
        if isinstance(s, bytes):
            s = s.decode("latin-1")
        return self.c.matcher.labels(s)

    def _labels(self, node: ast.AST) -> frozenset[str]:
        m = self.c.matcher
        if isinstance(node, ast.Constant):
            v = node.value
            if isinstance(v, str):
                return m.labels(v)
            if isinstance(v, bytes) and len(v) < 200_000:
                return m.labels(v.decode("latin-1"))
            return frozenset()
        if isinstance(node, ast.Name):
            out: set[str] = set()
            d = self.resolve(node)
            if d is not None:
                out |= self.rules.ref_tags(d)
            pl = self._path_labels.get("name:" + node.id)
            if pl:
                out |= pl
            hit = self._find(self._cur, node.id)
            if hit is not None:
                sid, bs = hit
                for b in bs:
                    if b.kind == "param":
                        out |= self._param_labels.get((sid, node.id), frozenset())
                        out |= self._param_seed.get((sid, node.id), frozenset())
                    elif b.kind in ("value", "elem", "aug", "with") and b.expr is not None:
                        saved = self._cur
                        self._cur = sid
                        try:
                            out |= self.labels(b.expr)
                        finally:
                            self._cur = saved
                    elif b.kind == "lambda" and isinstance(b.expr, ast.Lambda):
                        pass
            return frozenset(out)
        if isinstance(node, ast.Attribute):
            d = self.resolve(node)
            out = set(self.rules.ref_tags(d)) if d else set()
            base = self.labels(node.value)
            if node.attr in _NARROW and "env_dump" in base:
                base = (base - {"env_dump"}) | {"env"}
            return frozenset(out | base)
        if isinstance(node, ast.Subscript):
            base = self.labels(node.value)
            if "env_dump" in base:
                base = (base - {"env_dump"}) | {"env"}
            return base
        if isinstance(node, ast.Call):
            return self._call_labels(node)
        if isinstance(node, ast.BinOp | ast.JoinedStr):
            out = set()
            for child in ast.iter_child_nodes(node):
                out |= self.labels(child)
            v = self.folder.fold(node)
            if isinstance(v, str | bytes) and not isinstance(node, ast.Constant):
                out |= self._str_labels(v)
            return frozenset(out)
        if isinstance(node, ast.Compare | ast.Lambda | ast.FunctionDef):
            return frozenset()
        out = set()
        if isinstance(node, ast.ListComp | ast.GeneratorExp) and _char_mapping(node):
            # [table[alphabet.index(c)] for c in "...."]: a substitution cipher decoding a blob
            out |= {"decode", "literal"}
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.expr | ast.keyword | ast.comprehension | ast.FormattedValue):
                out |= self.labels(child)
        return frozenset(out)

    def _call_labels(self, node: ast.Call) -> frozenset[str]:
        d = self.resolve(node.func)
        out: set[str] = set()
        if d is not None:
            out |= self.rules.call_tags(d)
            out |= self.rules.ref_tags(d)
            if "shell" in out:
                out |= self._command_output_labels(node)
            if d in _PATH_JOINS and node.args:
                # a path built from known and unknown parts: label what is known
                parts = [self.folder.fold(a) for a in node.args]
                if any(isinstance(p, str) for p in parts):
                    joined = "/".join(p if isinstance(p, str) else "*" for p in parts)
                    out |= self._str_labels(joined)
        for a in node.args:
            out |= self.labels(a)
        for k in node.keywords:
            if k.arg == "auth":
                continue  # credentials handed to a client to log in with: their intended use
            out |= self.labels(k.value)
        if isinstance(node.func, ast.Attribute):
            base = self.labels(node.func.value)
            if node.func.attr in _NARROW and "env_dump" in base:
                base = (base - {"env_dump"}) | {"env"}
            out |= base
        fid = self._local_function(node.func)
        if fid is not None:
            saved = self._cur
            self._cur = fid
            try:
                for r in self.returns.get(fid, ()):
                    out |= self.labels(r)
            finally:
                self._cur = saved
        if d in ("builtins.open", "io.open", "codecs.open") and node.args:
            v = self.folder.fold(node.args[0])
            if isinstance(v, str):
                out |= self._path_labels.get("str:" + _basename(v), frozenset())
            out |= self._path_labels.get(_dump_key(node.args[0]), frozenset())
        v = None
        if (d is not None and (d.endswith((".join", ".format")) or d.startswith("builtins."))) or (
            d is None
            and isinstance(node.func, ast.Attribute)
            and node.func.attr
            in (
                "join",
                "format",
                "decode",
                "replace",
            )
        ):
            v = self.folder.fold(node)
        if isinstance(v, str | bytes):
            out |= self._str_labels(v)
        return frozenset(out)

    def _command_output_labels(self, call: ast.Call) -> frozenset[str]:
        """What a process's output tells: ``check_output("whoami")`` carries host facts."""
        first = call.args[0] if call.args else _arg(call, 0, "args")
        if first is None:
            return frozenset()
        v = self.folder.fold(first)
        if isinstance(v, list | tuple) and all(isinstance(x, str) for x in v):
            v = " ".join(v)
        if isinstance(v, str):
            return self.c.matcher.command_labels(v) & self._command_tags
        # a command picked at run time from literals (a table of commands, a loop over them)
        out: frozenset[str] = frozenset()
        for s in self._command_literals(first, 0, [])[:64]:
            out |= self.c.matcher.command_labels(s) & self._command_tags
        return out

    def _command_literals(self, e: ast.AST, depth: int, acc: list[str]) -> list[str]:
        if len(acc) >= 64 or depth > 6:
            return acc
        if isinstance(e, ast.Constant) and isinstance(e.value, str):
            acc.append(e.value)
        elif isinstance(e, ast.List | ast.Tuple | ast.Set):
            cmd = [
                x.value for x in e.elts if isinstance(x, ast.Constant) and isinstance(x.value, str)
            ]
            if cmd:
                acc.append(" ".join(cmd))
        elif isinstance(e, ast.Dict):
            for val in e.values:
                self._command_literals(val, depth + 1, acc)
        elif isinstance(e, ast.Subscript):
            self._command_literals(e.value, depth + 1, acc)
        elif isinstance(e, ast.Call) and isinstance(e.func, ast.Attribute):
            if e.func.attr in ("items", "values", "get", "copy"):
                self._command_literals(e.func.value, depth + 1, acc)
        elif isinstance(e, ast.Name):
            hit = self._find(self._cur, e.id)
            for b in hit[1][:8] if hit is not None else ():
                if b.kind in ("value", "elem") and b.expr is not None:
                    self._command_literals(b.expr, depth + 1, acc)
        return acc

    def _local_function(self, func: ast.expr) -> int | None:
        if isinstance(func, ast.Name):
            hit = self._find(self._cur, func.id)
            if hit is None:
                return None
            _, bs = hit
            for b in reversed(bs):
                if b.kind == "def" and b.expr is not None:
                    return self.func_scope.get(id(b.expr))
                if b.kind == "value" and isinstance(b.expr, ast.Lambda):
                    return self.func_scope.get(id(b.expr))
                if b.kind == "class" and isinstance(b.expr, ast.ClassDef):
                    meths = self.class_methods.get(id(b.expr), {})
                    return meths.get("__init__")
            return None
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            if func.value.id in ("self", "cls"):
                cls = self.scope_class.get(self._cur)
                if cls is None:
                    # a nested function inside a method
                    p = self.scopes[self._cur].parent
                    cls = self.scope_class.get(p) if p is not None else None
                if cls is not None:
                    return self.class_methods.get(cls, {}).get(func.attr)
            else:
                # ClassName.method(...) on a class of this module
                hit = self._find(self._cur, func.value.id)
                if hit is not None:
                    for b in hit[1]:
                        if b.kind == "class" and b.expr is not None:
                            return self.class_methods.get(id(b.expr), {}).get(func.attr)
        if isinstance(func, ast.Lambda):
            return self.func_scope.get(id(func))
        return None

    # ------------------------------------------------------------------ file flows
    def _flows(self) -> None:
        """Labels of data written to a path, keyed by the path expression."""
        for call, scope in self.calls:
            self._cur = scope
            d = self.resolve(call.func)
            if d is None and not (
                isinstance(call.func, ast.Attribute) and call.func.attr in _WRITE_METHODS
            ):
                continue
            dest: ast.expr | None = None
            data: frozenset[str] = frozenset()
            if d in ("urllib.request.urlretrieve", "urllib.urlretrieve", "wget.download"):
                dest = _arg(call, 1, "filename" if d != "wget.download" else "out")
                data = self.labels(_arg(call, 0, "url")) | {"net"}
            elif d in ("shutil.copy", "shutil.copy2", "shutil.copyfile", "shutil.move") or d in (
                "os.rename",
                "os.replace",
            ):
                dest = _arg(call, 1, "dst")
                src = _arg(call, 0, "src")
                data = self.labels(src) | self._path_lookup(src)
            elif isinstance(call.func, ast.Attribute) and call.func.attr in (
                "write",
                "writelines",
                "write_bytes",
                "write_text",
                "extractall",
                "extract",
            ):
                obj = call.func.value
                opener = self._opener(obj)
                if opener is None:
                    continue
                od, ocall = opener
                if call.func.attr in ("extractall", "extract"):
                    dest = _arg(call, 0 if call.func.attr == "extractall" else 1, "path")
                    data = self.labels(ocall.args[0]) if ocall.args else frozenset()
                    data |= self._path_lookup(ocall.args[0]) if ocall.args else frozenset()
                else:
                    if od.startswith("tempfile."):
                        dest = obj
                    else:
                        dest = ocall.args[0] if ocall.args else _arg(ocall, 0, "file")
                    data = self.labels(call.args[0]) if call.args else frozenset()
                    if call.args and id(call) not in self._written:
                        v = self.folder.fold(call.args[0])
                        if isinstance(v, bytes):
                            v = v.decode("utf-8", "replace")
                        if isinstance(v, str) and len(v) > 65536:
                            v = collapse_padding(v)
                        if isinstance(v, str) and len(v) >= 40 and _looks_like_python(v):
                            self._written[id(call)] = (v, call, scope)
            elif d == "shutil.copyfileobj" and len(call.args) >= 2:
                opener = self._opener(call.args[1])
                if opener is not None and opener[1].args:
                    dest = opener[1].args[0]
                    data = self.labels(call.args[0])
            if dest is None or not data:
                continue
            for key in self._path_keys(dest):
                self._path_labels[key] = self._path_labels.get(key, frozenset()) | data

    def _opener(self, obj: ast.expr) -> tuple[str, ast.Call] | None:
        node: ast.AST | None = obj
        if isinstance(obj, ast.Name):
            hit = self._find(self._cur, obj.id)
            b = _nearest(hit[1], getattr(obj, "lineno", 0)) if hit is not None else None
            if b is None:
                return None
            node = b.expr
        if not isinstance(node, ast.Call):
            return None
        d = self.resolve(node.func)
        if d in ("builtins.open", "io.open", "codecs.open", "os.fdopen"):
            mode = _arg(node, 1, "mode")
            mv = self.folder.fold(mode) if mode is not None else "r"
            if isinstance(mv, str) and _WRITE_OPEN.search(mv):
                return d, node
            return None
        if d in (
            "pathlib.Path",
            "pathlib.PurePath",
            "zipfile.ZipFile",
            "tarfile.open",
            "tarfile.TarFile",
        ):
            return d, node
        if d in (
            "tempfile.NamedTemporaryFile",
            "tempfile.TemporaryFile",
            "tempfile.SpooledTemporaryFile",
        ):
            return d, node
        return None

    def _path_keys(self, dest: ast.expr) -> list[str]:
        keys = [_dump_key(dest)]
        if isinstance(dest, ast.Name):
            keys.append("name:" + dest.id)
        v = self.folder.fold(dest)
        if isinstance(v, str) and v:
            keys.append("str:" + _basename(v))
        elif isinstance(dest, ast.Call) and dest.args:
            # os.path.join(dir, "payload.exe"): the last literal part names the file
            last = self.folder.fold(dest.args[-1])
            if isinstance(last, str) and last:
                keys.append("str:" + _basename(last))
        return keys

    def _path_lookup(self, node: ast.expr | None) -> frozenset[str]:
        if node is None or not self._path_labels:
            return frozenset()
        out: frozenset[str] = frozenset()
        for key in self._path_keys(node):
            out |= self._path_labels.get(key, frozenset())
        # a file inside a folder something was extracted or written to: dir + "x.exe",
        # os.path.join(dir, "x.exe"), f"{dir}/x.exe"
        head: ast.expr | None = None
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            head = node.left
        elif isinstance(node, ast.Call) and node.args and self.resolve(node.func) in _PATH_JOINS:
            head = node.args[0]
        elif isinstance(node, ast.JoinedStr) and node.values:
            first = node.values[0]
            head = first.value if isinstance(first, ast.FormattedValue) else None
        if head is not None and head is not node:
            for key in self._path_keys(head):
                out |= self._path_labels.get(key, frozenset())
        return out

    # ------------------------------------------------------------------ sinks
    def _sink_args(self, call: ast.Call, d: str) -> Iterator[ast.expr]:
        ign = self.rules.ignored_positions(d)
        for i, a in enumerate(call.args):
            if i not in ign:
                yield a
        for k in call.keywords:
            if k.arg is None or k.arg not in self.rules.ignore_keywords:
                yield k.value

    def _program_labels(self, call: ast.Call, d: str) -> frozenset[str]:
        """Labels of what a process call runs: the program and, for launchers, its arguments;
        plus the string tags of the whole command line."""
        args = list(call.args)
        if d.startswith("os.spawn") and len(args) >= 2:
            args = args[1:]
        if not args:
            a = _arg(call, 0, "args") or _arg(call, 0, "cmd")
            if a is None:
                return frozenset()
            args = [a]
        first = args[0]
        out: set[str] = set()
        parts: list[ast.expr]
        if d.startswith(("os.exec", "os.spawn", "os.posix_spawn")) and len(args) >= 2:
            parts = [args[0], *(args[1].elts if isinstance(args[1], ast.List | ast.Tuple) else [])]
        elif isinstance(first, ast.List | ast.Tuple):
            parts = list(first.elts)
        else:
            parts = [first]
        texts: list[str] = []
        prog_done = False
        for p in parts:
            v = self.folder.fold(p)
            toks: list[str] | None = None
            if isinstance(v, list | tuple) and all(isinstance(x, str) for x in v):
                toks = [str(x) for x in v]
                texts.extend(toks)
            elif isinstance(v, str):
                toks = v.split()
                texts.append(v)
            if toks is not None:
                # a command that is decoded or decrypted before it runs is hidden on purpose
                out |= self.labels(p) & _CARRY
            if toks is not None:
                if not prog_done:
                    for tok in toks:
                        self._program_token(tok, out)
                        if not _is_launcher(tok):
                            prog_done = True
                            break
                continue
            if prog_done:
                out |= self._constant_labels(p)
                continue
            lead = _leading_text(self._deref(p), self.folder)
            lead_toks = lead.split() if lead else []
            first_prog = next((t for t in lead_toks if not _is_launcher(t)), None)
            glued = bool(lead and not lead[-1].isspace() and first_prog == lead_toks[-1])
            if (
                first_prog is not None
                and _basename(first_prog).lower().removesuffix(".exe") in _DOWNLOADERS
            ):
                # curl/wget + a URL from a variable: where it fetches from is an argument
                ends = self.labels(p) & _ENDPOINT_LABELS
                out |= ends
                if "url" in ends:
                    out.add("shell_download")
            if first_prog is not None and glued:
                # "./{name}", "C:\\{dir}\\x.exe": the variable is part of the program path
                self._program_token(first_prog, out)
                out |= self.labels(p) | self._path_lookup(p)
                prog_done = True
            elif first_prog is not None:
                self._program_token(first_prog, out)
                out |= self._constant_labels(p)
                prog_done = True
            else:
                lab = self.labels(p) | self._path_lookup(p)
                out |= lab
                if self.resolve(p) != "sys.executable":
                    prog_done = True
                    if "net" in lab and self._path_lookup(p):
                        out.add("net_program")  # the program is a file written from the network
        if texts:
            line = " ".join(texts)
            out |= self.c.matcher.command_labels(line)
            norm = shell_normalize(line)
            if norm != line:
                out |= self.c.matcher.command_labels(norm)
            self._python_c(texts, call)
        return frozenset(out)

    def _deref(self, p: ast.expr) -> ast.expr:
        """A name bound once to a value: that value (``cmd = f"curl {u} -o x"; system(cmd)``)."""
        for _ in range(3):
            if not isinstance(p, ast.Name):
                return p
            v = self._lookup_value_for(p.id, p)
            if not isinstance(v, ast.expr) or isinstance(v, ast.Lambda):
                return p
            p = v
        return p

    def _python_c(self, texts: list[str], call: ast.Call) -> None:
        """``python -c CODE`` (argv list or one command line): CODE is a payload."""
        code = None
        for i, t in enumerate(texts[:-1]):
            if t == "-c" and i > 0 and _basename(texts[i - 1]).lower().startswith("python"):
                code = texts[i + 1]
                break
        if code is None:
            m = _PY_C.search(" ".join(texts))
            if m:
                code = m.group(2)
        if code and len(code) >= 12 and self.depth < self.c.max_payload_depth:
            self._pending.append((code, call, self._cur))

    def _program_token(self, tok: str, out: set[str]) -> None:
        tok = tok.strip("\"'")
        if not tok:
            return
        base = _basename(tok)
        if (
            base
            and base.lower().removesuffix(".exe") not in _LAUNCHERS
            and len(self.programs) < 200
        ):
            self.programs.append((base, self._cur, self._cur_line))
        pl = self._path_labels.get("str:" + base)
        if pl:
            out |= pl
            if "net" in pl and not _is_launcher(tok):
                out.add("net_program")  # the program itself was downloaded

    def _constant_labels(self, node: ast.AST) -> frozenset[str]:
        out: set[str] = set()
        for n in ast.walk(node):
            if isinstance(n, ast.Constant) and isinstance(n.value, str | bytes):
                out |= self._str_labels(n.value)
        return frozenset(out)

    def _mode_exec(self, call: ast.Call) -> bool:
        mode = _arg(call, 1, "mode")
        if mode is None:
            return False
        v = self.folder.fold(mode)
        if isinstance(v, int):
            return bool(v & 0o111)
        for n in ast.walk(mode):
            if isinstance(n, ast.Attribute | ast.Name):
                nm = n.attr if isinstance(n, ast.Attribute) else n.id
                if nm in (
                    "S_IEXEC",
                    "S_IXUSR",
                    "S_IXGRP",
                    "S_IXOTH",
                    "S_IRWXU",
                    "S_IRWXG",
                    "S_IRWXO",
                ):
                    return True
        return False

    # ------------------------------------------------------------------ pass 2: events
    def prepass(self) -> None:
        """Call edges between local functions and the labels their parameters receive
        (two rounds, so a value passes through two levels of helpers)."""
        local_calls = []
        for call, scope in self.calls:
            self._cur = scope
            fid = self._local_function(call.func)
            if fid is not None:
                self.scopes[scope].callees.add(fid)
                local_calls.append((call, scope, fid))
            elif isinstance(call.func, ast.Name | ast.Attribute):
                # callbacks: a local function passed to a call (Thread(target=f), atexit, map)
                fname = call.func.id if isinstance(call.func, ast.Name) else call.func.attr
                for a in [*call.args, *(k.value for k in call.keywords)]:
                    if isinstance(a, ast.Name | ast.Attribute):
                        cb = self._local_function(a)
                        if cb is not None:
                            self.scopes[scope].callees.add(cb)
                            synth = _callback_call(call, a, fname)
                            if synth is not None:
                                # submit(f, x, y) / Thread(target=f, args=(x, y)): f(x, y)
                                local_calls.append((synth, scope, cb))
                        elif self.depth == 0 and (
                            fname in _CALLBACK_TAKERS
                            or any(k.arg == "target" and k.value is a for k in call.keywords)
                        ):
                            # Thread(target=mod.func): a function of another module runs here
                            d = self.resolve(a)
                            if (
                                d
                                and not d.startswith(("builtins.", "local."))
                                and len(self._ext_calls) < 400
                            ):
                                self._ext_calls.setdefault(d, scope)
        self._flows()
        if not local_calls:
            return
        for _round in range(2):
            before = dict(self._param_labels)
            for call, scope, fid in local_calls:
                self._cur = scope
                self._collect_params(fid, call)
            if self._param_labels == before:
                break
            self._labels_memo.clear()
            self._path_labels.clear()
            self._flows()

    def events_pass(self) -> None:
        for call, scope in self.calls:
            self._cur = scope
            self._cur_line = self.line_override or getattr(call, "lineno", None)
            d = self.resolve(call.func)
            if d is None:
                if isinstance(call.func, ast.Attribute):
                    d = "?." + call.func.attr
                    if call.func.attr in _SEND_METHODS:
                        # an object of an unknown library built from a webhook or drop URL
                        obj = self.labels(call.func.value)
                        if obj & _ENDPOINTS:
                            labels = obj
                            for a in self._sink_args(call, d):
                                labels |= self.labels(a)
                            self._emit("net", labels, call, scope)
                else:
                    continue
            if d.startswith("local."):
                continue
            if (
                self.depth == 0
                and not d.startswith(("builtins.", "?."))
                and len(self._ext_calls) < 400
            ):
                self._ext_calls.setdefault(d, scope)
            if d in _SETUP_CALLS and self.depth == 0:
                self._url_requirements(call)
            if d == "builtins.<dynamic>":
                self._obf(call.func)  # getattr(builtins, name)(data): called, not just looked up
            if isinstance(call.func, ast.Attribute) and call.func.attr in ("write", "communicate"):
                fed = self._interpreter_stdin(call)
                if fed is not None:
                    # code piped into "python -" / "sh" / "powershell -": that is exec
                    self._emit("exec", self.labels(fed) | self._path_lookup(fed), call, scope)
            if d in _LOOKUPS:
                self.resolve(call)  # notes getattr/__import__/eval with computed names
            tags = self.rules.call_tags(d)
            if not tags:
                continue
            for tag in sorted(tags):
                t = self.rules.tags[tag]
                if t.mode_exec and not self._mode_exec(call):
                    continue
                if tag in ("exec", "unpickle"):
                    src = _arg(call, 0, "source") or _arg(call, 0, "data")
                    labels = self.labels(src) | self._path_lookup(src)
                    if src is not None and (
                        _blob_len(self.folder.fold(src)) >= 40
                        if tag == "unpickle"
                        else self._has_blob(src, 0)
                    ):
                        labels |= {"literal"}
                    self._emit(tag, labels, call, scope)
                    if tag == "unpickle":
                        continue
                    if src is not None:
                        self._payload(src, call, scope)
                elif tag == "shell":
                    self._emit(tag, self._program_labels(call, d), call, scope)
                elif tag == "chmod_x":
                    p = _arg(call, 0, "path")
                    self._emit(tag, self.labels(p) | self._path_lookup(p), call, scope)
                else:
                    if tag in ("net", "dns"):
                        labels = self._sent_labels(call, d, 0)
                    else:
                        labels = frozenset()
                        for a in self._sink_args(call, d):
                            labels |= self.labels(a)
                    if isinstance(call.func, ast.Attribute) and tag == "file_write":
                        # where it writes matters as much as what (Startup folder, .bashrc)
                        op = self._opener(call.func.value)
                        if op is not None and op[1].args:
                            labels |= self.labels(op[1].args[0])
                    self._emit(tag, labels, call, scope)
        for ref, rscope in self.exec_refs[:10]:
            self._cur = rscope
            if (self.resolve(ref) or "").startswith("builtins."):
                self._emit("exec_ref", frozenset(), ref, rscope)
        for alias, ascope in self._aliases:
            self._cur = ascope
            if (self.resolve(alias) or "").startswith("builtins."):
                self._obf(alias)
        for text, pcall, pscope in self._pending[:20]:
            self._cur = pscope
            self._analyze_payload(text, pcall, pscope, "python -c")
        for text, wcall, wscope in list(self._written.values()):
            if self.depth < self.c.max_payload_depth:
                self._cur = wscope
                self._analyze_payload(text, wcall, wscope, "written file")
        for key, (node, scope) in sorted(
            self._obf_nodes.items(), key=lambda kv: getattr(kv[1][0], "lineno", 0)
        ):
            if key not in self._obf_emitted:
                self._obf_emitted.add(key)
                self._emit("obf_builtins", frozenset(), node, scope)
        for name, node, scope in self.imports:
            for tag in self.rules.import_tags(name):
                self._emit(tag, frozenset(), node, scope)
        self._constants()

    def _url_requirements(self, call: ast.Call) -> None:
        """Requirements of ``setup()`` fetched from a URL instead of the index: code pulled
        from anywhere at install time, outside what the package index reviews."""
        for k in call.keywords:
            if k.arg not in ("install_requires", "setup_requires", "dependency_links"):
                continue
            v = self.folder.fold(k.value)
            items = [v] if isinstance(v, str) else v if isinstance(v, list | tuple) else []
            for item in items[:200]:
                if isinstance(item, str) and "://" in item:
                    labels = self.c.matcher.labels(item.split("@", 1)[-1].strip())
                    self._emit("url_requirement", labels, k.value, self._cur)
                    break

    def _interpreter_stdin(self, call: ast.Call) -> ast.expr | None:
        """The data of ``p.stdin.write(X)`` / ``p.communicate(X)`` when ``p`` is a process
        running an interpreter that reads its program from stdin."""
        func = call.func
        assert isinstance(func, ast.Attribute)
        obj = func.value
        if func.attr == "write":
            if not (isinstance(obj, ast.Attribute) and obj.attr == "stdin"):
                return None
            obj = obj.value
        data = call.args[0] if call.args else _arg(call, 0, "input")
        if data is None or not isinstance(obj, ast.Name):
            return None
        hit = self._find(self._cur, obj.id)
        b = _nearest(hit[1], getattr(obj, "lineno", 0)) if hit is not None else None
        if b is None or not isinstance(b.expr, ast.Call):
            return None
        popen = b.expr
        if self.resolve(popen.func) not in ("subprocess.Popen", "asyncio.create_subprocess_exec"):
            return None
        argv = popen.args[0] if popen.args else _arg(popen, 0, "args")
        first: ast.expr | None = argv
        if isinstance(argv, ast.List | ast.Tuple) and argv.elts:
            first = argv.elts[0]
        if first is None:
            return None
        if self.resolve(first) == "sys.executable":
            return data
        v = self.folder.fold(first)
        prog = v.split()[0] if isinstance(v, str) and v.split() else None
        if prog and _basename(prog).lower().removesuffix(".exe") in _INTERPRETERS:
            return data
        return None

    def _has_blob(self, expr: ast.AST, depth: int) -> bool:
        """Does a literal of 40+ characters feed this expression (directly or through names)?"""
        for n in ast.walk(expr):
            if isinstance(n, ast.Constant) and isinstance(n.value, str | bytes):
                if len(n.value) >= 40:
                    return True
            elif isinstance(n, ast.Name) and depth < 3:
                hit = self._find(self._cur, n.id)
                if hit is not None and len(hit[1]) == 1 and hit[1][0].kind == "value":
                    e = hit[1][0].expr
                    if e is not None and self._has_blob(e, depth + 1):
                        return True
        return False

    def _sent_labels(self, call: ast.Call, d: str, depth: int) -> frozenset[str]:
        """What a network call sends. A URL taken whole from elsewhere (configuration, an
        argument) says where it goes, not what it carries: only its endpoint labels count. A
        URL built here from parts carries those parts."""
        out: set[str] = set()
        ign = self.rules.ignored_positions(d)
        # socket.send/sendall/sendto(data, ...): the first argument is what is sent
        data_first = d.endswith((".send", ".sendall", ".sendto"))
        for i, a in enumerate(call.args):
            if i in ign:
                continue
            out |= self._sent_arg(a, i == 0 and not data_first, depth)
        for k in call.keywords:
            if k.arg is not None and k.arg in self.rules.ignore_keywords:
                continue
            out |= self._sent_arg(k.value, k.arg in ("url", "host", "address", "uri"), depth)
        if isinstance(call.func, ast.Attribute):
            out |= self._object_labels(call.func.value)
        return frozenset(out)

    def _sent_arg(self, a: ast.expr, is_url: bool, depth: int) -> frozenset[str]:
        if isinstance(a, ast.Call) and depth < 3:
            dd = self.resolve(a.func)
            if dd is not None and "net" in self.rules.call_tags(dd):
                return self._sent_labels(a, dd, depth + 1)  # urlopen(Request(url, data))
        if not is_url:
            return self.labels(a) | self._path_lookup(a)
        e: ast.AST = a
        for _ in range(3):
            if not isinstance(e, ast.Name):
                break
            hit = self._find(self._cur, e.id)
            b = _nearest(hit[1], getattr(e, "lineno", 0)) if hit is not None else None
            if b is None or b.kind != "value" or b.expr is None:
                break
            e = b.expr
        if _built_string(e):
            return self.labels(a)
        if isinstance(e, ast.Name):
            hit = self._find(self._cur, e.id)
            if hit is not None and (hit[0], e.id) in self._param_built:
                return self.labels(a)  # a caller built this URL from its data
        return self.labels(a) & (_ENDPOINT_LABELS | _CARRY)

    def _object_labels(self, obj: ast.expr) -> frozenset[str]:
        """Labels of the object a network method is called on (a Request built with data,
        a webhook object built with its URL), without the generic network label itself."""
        return self.labels(obj) - {"net"}

    def _collect_params(self, fid: int, call: ast.Call) -> None:
        params = self.param_names.get(fid, [])
        offset = (
            1 if params[:1] in (["self"], ["cls"]) and isinstance(call.func, ast.Attribute) else 0
        )
        for i, a in enumerate(call.args):
            j = i + offset
            if j < len(params):
                lab = self.labels(a)
                if lab:
                    key = (fid, params[j])
                    self._param_labels[key] = self._param_labels.get(key, frozenset()) | lab
                    if _built_string(a):
                        self._param_built.add(key)
        for k in call.keywords:
            if k.arg and k.arg in params:
                lab = self.labels(k.value)
                if lab:
                    key = (fid, k.arg)
                    self._param_labels[key] = self._param_labels.get(key, frozenset()) | lab
                    if _built_string(k.value):
                        self._param_built.add(key)

    def _constants(self) -> None:
        long_blob_done = False
        for node, scope in self.consts:
            v = node.value
            s = v.decode("latin-1") if isinstance(v, bytes) else v
            if not isinstance(s, str):
                continue
            if len(s) >= 1000 and not long_blob_done and _is_blob(s):
                self._emit("long_blob", frozenset(), node, scope)
                long_blob_done = True
            if len(s) >= 60 and isinstance(v, str) and self.depth < self.c.max_payload_depth:
                dec = b64_text(s, 60) if len(s) <= 2_000_000 else None
                if dec is not None and _looks_like_python(dec):
                    self._analyze_payload(dec, node, scope, "base64 text")
            labs = self.c.matcher.labels(s) if len(s) < 200_000 else frozenset()
            for tag in sorted(labs & self.rules.event_tags):
                self._emit(tag, frozenset(), node, scope)

    # ------------------------------------------------------------------ payloads
    def _payload(self, src: ast.expr, call: ast.Call, scope: int) -> None:
        if self.depth >= self.c.max_payload_depth:
            return
        self._exec_file(src, scope)
        v = self.folder.fold(src)
        if v is None and isinstance(src, ast.Call):
            d = self.resolve(src.func)
            if d == "builtins.compile" and src.args:
                v = self.folder.fold(src.args[0])
        if isinstance(v, Marshalled):
            labs: set[str] = set()
            for s in printable_strings(v.data, 5):
                labs |= self.c.matcher.labels(s)
            self._emit("exec_payload", frozenset(labs | {"decode"}), call, scope)
            for tag in sorted(labs & self.rules.event_tags):
                self._emit(tag, frozenset(), call, scope)
            self.payloads += 1
            return
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        if not isinstance(v, str) or not v.strip():
            return
        if isinstance(src, ast.Constant) and len(v) < 40:
            return
        self._analyze_payload(v, call, scope, "decoded")

    def _exec_file(self, src: ast.expr, scope: int) -> None:
        """exec(open("x").read()) / exec(compile(open(p).read(), ...)): remember the file."""
        for n in ast.walk(src):
            if isinstance(n, ast.Call) and self.resolve(n.func) in (
                "builtins.open",
                "io.open",
                "codecs.open",
            ):
                p = _arg(n, 0, "file")
                v = self.folder.fold(p) if p is not None else None
                if isinstance(v, str) and v and len(self.exec_files) < 50:
                    self.exec_files.append((_basename(v), scope, self._cur_line))
                elif isinstance(p, ast.Call) and p.args:
                    last = self.folder.fold(p.args[-1])
                    if isinstance(last, str) and last and len(self.exec_files) < 50:
                        self.exec_files.append((_basename(last), scope, self._cur_line))

    def _analyze_payload(self, text: str, node: ast.AST, scope: int, what: str) -> None:
        if len(text) > 65536:
            text = collapse_padding(text)
        key = hash(text)
        if key in self._seen_payloads:
            return  # the same payload reached twice (exec'd and also a literal): once is enough
        self._seen_payloads.add(key)
        budget = self.c.payload_budget
        if budget[0] < len(text):
            self._emit("scan_budget", frozenset(), node, scope)
            return
        budget[0] -= len(text)
        self.payloads += 1
        line, _ = self._line(node)
        origin = f"{what}@L{line}" if not self.origin else f"{self.origin}>{what}"
        res = analyze_python(
            text,
            self.path,
            "payload",
            self.c,
            depth=self.depth + 1,
            line_override=line,
            origin=origin,
            inherited=self._imports_seen_from(scope),
        )
        labs: frozenset[str] = frozenset()
        if not res.ok:
            labs = self.c.matcher.labels(text[:200_000])
        self._emit("exec_payload", labs, node, scope)
        if not res.ok:
            for tag in sorted(labs & self.rules.event_tags):
                self._emit(tag, frozenset(), node, scope)
        self.children.append((res, scope))

    # ------------------------------------------------------------------ result
    def result(self) -> PyResult:
        events = list(self.events)
        scopes = list(self.scopes)
        programs = list(self.programs)
        exec_files = list(self.exec_files)
        payloads = self.payloads
        for res, parent in self.children:
            off = len(scopes)
            for s in res.scopes:
                scopes.append(
                    Scope(
                        s.id + off,
                        s.name,
                        s.context,
                        (s.parent + off) if s.parent is not None else parent,
                        {c + off for c in s.callees},
                    )
                )
            scopes[parent].callees.add(off)
            for e in res.events:
                events.append(
                    Event(e.tag, e.labels, e.line, e.snippet, e.scope + off, e.path, e.origin)
                )
            programs += [(n, sc + off, ln) for n, sc, ln in res.programs]
            exec_files += [(n, sc + off, ln) for n, sc, ln in res.exec_files]
            payloads += res.payloads
        _propagate(scopes)
        calls_out = [
            (d, scopes[sid].context)
            for d, sid in self._ext_calls.items()
            if scopes[sid].context in _EAGER_CTX
        ]
        imported = {
            name.lstrip(".").split(".")[0] for name, _n, _s in self.imports if name.strip(".")
        }
        return PyResult(
            events,
            scopes,
            ok=True,
            programs=programs,
            exec_files=exec_files,
            imported=imported,
            payloads=payloads,
            calls_out=calls_out,
            salvaged=self.salvaged,
        )


def _callback_call(call: ast.Call, cb: ast.expr, fname: str) -> ast.Call | None:
    """The call a callback receives: ``submit(f, x)`` -> ``f(x)``, ``Thread(target=f,
    args=(x,), kwargs={...})`` -> ``f(x, ...)``; None when the arguments are not given so."""
    if call.args and call.args[0] is cb and fname in _CALLBACK_TAKERS:
        return ast.Call(func=cb, args=list(call.args[1:]), keywords=list(call.keywords))
    if any(k.arg == "target" and k.value is cb for k in call.keywords):
        args: list[ast.expr] = []
        kws: list[ast.keyword] = []
        for k in call.keywords:
            if k.arg == "args" and isinstance(k.value, ast.Tuple | ast.List):
                args = list(k.value.elts)
            elif k.arg == "kwargs" and isinstance(k.value, ast.Dict):
                for key, val in zip(k.value.keys, k.value.values, strict=True):
                    if isinstance(key, ast.Constant) and isinstance(key.value, str):
                        kws.append(ast.keyword(arg=key.value, value=val))
        return ast.Call(func=cb, args=args, keywords=kws)
    return None


def _char_mapping(node: ast.ListComp | ast.GeneratorExp) -> bool:
    """A comprehension that maps each character of a long literal through a lookup (a
    subscript or a call): how substitution ciphers (rot-N, reversed alphabets, tables)
    decode their payload."""
    if len(node.generators) != 1:
        return False
    it = node.generators[0].iter
    if not isinstance(it, ast.Constant):
        return False
    v = it.value
    if not isinstance(v, str | bytes) or len(v) < 40:
        return False
    target = node.generators[0].target
    if not isinstance(target, ast.Name):
        return False
    for n in ast.walk(node.elt):
        if isinstance(n, ast.Subscript | ast.Call) and any(
            isinstance(x, ast.Name) and x.id == target.id for x in ast.walk(n)
        ):
            return True
    return False


def _assembled(e: ast.AST) -> bool:
    """A name built from pieces (subscripts, calls, characters), not ``__package__ + ".x"``."""
    for n in ast.walk(e):
        if isinstance(n, ast.Subscript | ast.Call):
            return True
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and len(n.value) <= 2:
            return True
    return False


def _built_string(e: ast.AST) -> bool:
    return isinstance(e, ast.Constant | ast.JoinedStr | ast.BinOp) or (
        isinstance(e, ast.Call)
        and isinstance(e.func, ast.Attribute)
        and e.func.attr in ("format", "join", "replace")
    )


def _blob_len(v: object) -> int:
    if isinstance(v, Marshalled):
        return len(v.data)
    return len(v) if isinstance(v, str | bytes) else 0


def _nearest(bs: list[_Binding], lineno: int) -> _Binding | None:
    """The binding a use most likely sees: the only one, else the last one written on an
    earlier line (flow-insensitive analysis, made a little less so for re-used names)."""
    if len(bs) == 1:
        return bs[0]
    best: _Binding | None = None
    best_line = -1
    for b in bs:
        ln = getattr(b.expr, "lineno", None)
        if ln is not None and best_line < ln <= lineno:
            best, best_line = b, ln
    return best


def _propagate(scopes: list[Scope]) -> None:
    """A callee runs in the strongest context of its callers."""
    changed = True
    rounds = 0
    while changed and rounds < 50:
        changed = False
        rounds += 1
        for s in scopes:
            r = _RANK[s.context]
            for c in s.callees:
                if c < len(scopes) and _RANK[scopes[c].context] > r:
                    scopes[c].context = s.context
                    changed = True


def _arg(call: ast.Call, pos: int, kw: str) -> ast.expr | None:
    if len(call.args) > pos and not any(isinstance(a, ast.Starred) for a in call.args[: pos + 1]):
        return call.args[pos]
    for k in call.keywords:
        if k.arg == kw:
            return k.value
    return None


def _basename(p: str) -> str:
    return p.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1].strip("\"' ")


def _is_launcher(lead: str) -> bool:
    toks = lead.split()
    return bool(toks) and all(
        t.lower() in _LAUNCHERS or _basename(t).lower().removesuffix(".exe") in _LAUNCHERS
        for t in toks
    )


def _leading_text(node: ast.expr, folder: Folder) -> str | None:
    """The constant text a partly-constant string expression starts with."""
    if isinstance(node, ast.JoinedStr):
        if node.values and isinstance(node.values[0], ast.Constant):
            return str(node.values[0].value)
        return ""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left = folder.fold(node.left)
        if isinstance(left, str):
            return left
        return _leading_text(node.left, folder)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
        left = folder.fold(node.left)
        if isinstance(left, str):
            return left.split("%", 1)[0]
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "format"
    ):
        base = folder.fold(node.func.value)
        if isinstance(base, str):
            return base.split("{", 1)[0]
    return None


def _is_main_guard(test: ast.expr) -> bool:
    return (
        isinstance(test, ast.Compare)
        and isinstance(test.left, ast.Name)
        and test.left.id == "__name__"
        and len(test.comparators) == 1
        and isinstance(test.comparators[0], ast.Constant)
        and test.comparators[0].value == "__main__"
    )


def _is_blob(s: str) -> bool:
    sample = s[:4096].encode("latin-1", "replace")
    n = len(sample)
    if n < 1000:
        return False
    dense = bytes(b for b in sample if b not in b" \t\r\n")
    if len(dense) < 0.9 * n:
        return False
    ent = entropy(dense)
    if sum(b in _B64CHARS for b in dense) >= 0.98 * len(dense):
        if ent >= 5.2:
            return True  # base64-like, not prose or repeated digits
        hexish = sum(b in _HEXCHARS for b in dense) >= 0.99 * len(dense)
        if hexish and ent >= 3.7 and len(s) >= 2000:
            return True
        # a very long literal in a small encoding alphabet (hex with separators, …)
        return len(s) >= 50_000 and ent >= 3.0
    return ent >= 7.0  # raw binary in a string literal


def _looks_like_python(text: str) -> bool:
    head = text[:4000]
    if re.search(r"(?m)^\s*(?:import \w|from [\w.]+ import|def \w+\(|exec\(|eval\()", head):
        return True
    if len(text) > 4_000_000 or "\n" not in text.strip():
        return False
    try:
        tree = parse_quietly(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError):
        return False
    # real statements, not a lone word or literal that happens to parse
    return sum(not isinstance(s, ast.Expr) for s in tree.body) >= 2


_PY2_PRINT: Final = re.compile(r"(?m)^(\s*)print\b(?!\s*\()\s*(.*?)\s*$")
_PY2_EXEC: Final = re.compile(r"(?m)^(\s*)exec\b(?!\s*\()\s+(.+?)(?:\s+in\s+(.+?))?\s*$")
_PY2_EXCEPT: Final = re.compile(r"(?m)^(\s*except\s+[^,:]+?)\s*,\s*(\w+)\s*:")
_PY2_OCTAL: Final = re.compile(r"(?<![\w.])0([0-7]+)\b")
_PY2_UR: Final = re.compile(r"(?<![\w])ur(['\"])")
_PY2_RAISE: Final = re.compile(r"(?m)^(\s*raise\s+[\w.]+)\s*,\s*[^\n]+$")
_REPEATS: Final = re.compile(r"(.{4,64}?)\1{32,}", re.S)
# code pushed off-screen by a run of blanks (";exec(...)" at column 300)
HIDDEN_CODE: Final = re.compile(r"\S[ \t]{120,}(?:;|import\b|exec\b|eval\b|__import__|from\s)")


def parse_quietly(src: str, mode: str = "exec") -> Any:
    """``ast.parse`` without the SyntaxWarnings hostile sources provoke (never shown to users)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ast.parse(src, mode=mode)


def py2_fixups(src: str) -> str:
    """Rewrite the Python 2 statements that stop ``ast.parse`` (line numbers kept)."""
    s = _PY2_PRINT.sub(lambda m: f"{m.group(1)}print({m.group(2)})", src)
    s = _PY2_EXEC.sub(
        lambda m: f"{m.group(1)}exec({m.group(2)}" + (f", {m.group(3)})" if m.group(3) else ")"),
        s,
    )
    s = _PY2_EXCEPT.sub(r"\1 as \2:", s)
    s = _PY2_OCTAL.sub(r"0o\1", s)
    s = _PY2_RAISE.sub(r"\1", s)
    return _PY2_UR.sub(r"u\1", s)


_CONTINUATION: Final = ("else", "elif", "except", "finally", ")", "]", "}")


def _top_start(line: str) -> bool:
    return bool(line[:1]) and line[:1] not in " \t\r\n#" and not line.startswith(_CONTINUATION)


def salvage(src: str, max_bytes: int = 400_000, rounds: int = 24) -> tuple[str, ast.Module] | None:
    """The source with the top-level statements that do not parse blanked out (so line
    numbers stay), and its tree; None when nothing parseable is left or the budget runs out."""
    if len(src) > max_bytes:
        return None
    lines = src.splitlines(keepends=True)
    if not lines:
        return None
    for _ in range(rounds):
        text = "".join(lines)
        try:
            tree = parse_quietly(text)
        except SyntaxError as exc:
            i = min(max((exc.lineno or 1) - 1, 0), len(lines) - 1)
        except (ValueError, RecursionError, MemoryError, OverflowError):
            return None
        else:
            return (text, tree) if text.strip() else None
        start = i
        while start > 0 and not _top_start(lines[start]):
            start -= 1
        end = i + 1
        while end < len(lines) and not _top_start(lines[end]):
            end += 1
        if all(not ln.strip() for ln in lines[start:end]):
            return None
        for k in range(start, end):
            lines[k] = "\n"
    return None


def collapse_padding(text: str) -> str:
    """Text with long runs of one repeated chunk cut to one copy: padding that inflates a file
    past scanner limits (or hides code after it) is removed before analysis. Only text that
    compresses extremely well is rewritten (the regex is costly on ordinary text)."""
    raw = text.encode("utf-8", "surrogatepass")
    probe = raw[: 1 << 20]
    if len(zlib.compress(probe, 1)) * 25 > len(probe):
        return text
    return _REPEATS.sub(r"\1", text)


def analyze_python(
    src: str,
    path: str,
    role: str,
    ctx: _Ctx,
    *,
    depth: int = 0,
    line_override: int | None = None,
    origin: str = "",
    inherited: dict[str, list[_Binding]] | None = None,
    entries: dict[str, str] | None = None,
) -> PyResult:
    """Analyse one Python source. ``role``: setup | pth | module | test | payload.
    ``entries``: module-level functions other code of the distribution calls eagerly (a
    cmdclass calling ``pkg.mod.func()``, ``__init__`` calling a sibling's function at import),
    with the context they run in."""
    module_ctx = {
        "setup": "install",
        "pth": "startup",
        "module": "import",
        "test": "test",
        "payload": "runtime",
    }[role]
    salvaged = False
    try:
        tree = parse_quietly(src)
    except SyntaxError:
        # Python 2 is still found in old (and malicious) uploads: retry with its common
        # statements rewritten (print/exec statements, "except E, e", old octals)
        fixed = py2_fixups(src)
        try:
            tree = parse_quietly(fixed)
            src = fixed
        except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError):
            # a file broken on purpose (or by accident) still shows what its intact statements
            # do: the top-level statements that do not parse are blanked out (lines kept)
            kept = salvage(fixed) if depth == 0 else None
            if kept is None:
                return PyResult([], [Scope(0, "<module>", module_ctx, None)], ok=False)
            src, tree = kept
            salvaged = True
    except (ValueError, RecursionError, MemoryError, OverflowError):
        return PyResult([], [Scope(0, "<module>", module_ctx, None)], ok=False)
    a = _Analyzer(src, path, role, ctx, depth, line_override, origin, inherited)
    a.salvaged = salvaged
    try:
        if not a.collect(tree, module_ctx):
            a._emit("scan_budget", frozenset(), None, 0)
        if entries:
            for cls_id, methods in a.class_methods.items():
                cls_node = a.class_nodes.get(cls_id)
                want_cls = entries.get(cls_node.name) if cls_node is not None else None
                if want_cls is not None:
                    # a class named as a hook (a cmdclass in configuration): its methods run
                    for fid in methods.values():
                        if _RANK[want_cls] < _RANK[a.scopes[fid].context]:
                            a.scopes[fid].context = want_cls
            for sc in a.scopes:
                want = entries.get(sc.name) if sc.parent == 0 else None
                if (
                    want is not None
                    and sc.id not in a.scope_class
                    and _RANK[want] < _RANK[sc.context]
                ):
                    sc.context = want
        hidden = HIDDEN_CODE.search(src) if depth == 0 else None
        if hidden is not None:
            ln = src.count("\n", 0, hidden.start()) + 1
            a._emit("hidden_code", frozenset(), ast.Pass(lineno=ln, col_offset=0), 0)
        a.prepass()
        a.events_pass()
    except RecursionError:
        pass
    try:
        return a.result()
    finally:
        # the folder calls back into the analyzer (a reference cycle): cut it, so the tree
        # and the bindings are freed at once instead of waiting for the cyclic collector
        a.folder.close()


def make_ctx(
    rules: RuleSet,
    matcher: StringMatcher,
    *,
    max_payload_depth: int = 5,
    max_ast_bytes: int = 4 << 20,
    fold_budget: int = 300_000,
    payload_bytes: int = 32 << 20,
) -> _Ctx:
    return _Ctx(rules, matcher, max_payload_depth, max_ast_bytes, fold_budget, [payload_bytes])


def module_role(path: str) -> str:
    """setup | test | module, from a member path (inside an sdist or wheel)."""
    parts = path.replace("\\", "/").split("/")
    base = parts[-1]
    if base in ("setup.py", "hatch_build.py", "build_backend.py", "_build_backend.py"):
        return "setup"
    low = [p.lower() for p in parts[:-1]]
    if any(p in ("tests", "test", "testing", "unittests") for p in low):
        return "test"
    if base.startswith("test_") or base.endswith("_test.py") or base == "conftest.py":
        return "test"
    return "module"


def is_python_name(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in (".py", ".pyw", ".py3")
