"""Static decoding: constant folding of Python expressions and bounded decoders.

Nothing here executes code. :class:`Folder` evaluates a small, side-effect-free subset of Python
(literals, string and bytes operations, integer arithmetic, comprehensions over literals, a few
builtins and the decoders of ``base64``/``binascii``/``codecs``/``zlib``/``bz2``/``lzma``) over
``ast`` nodes, so ``exec(zlib.decompress(base64.b64decode("...")))`` yields the payload's source
to scan again. Every operation is charged to a step budget and every value is size-capped;
anything outside the subset is "unknown" (``None``). ``marshal.loads`` is never called: its input
is returned as :class:`Marshalled` bytes, which callers mine for strings.
"""

from __future__ import annotations

import ast
import base64
import binascii
import bz2
import codecs
import lzma
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["Folder", "Marshalled", "Unknown", "b64_text", "bounded_decompress", "printable_strings"]

MAX_VALUE: Final = 8 * 1024 * 1024  # characters or bytes of one folded value
_MAX_INT_BITS: Final = 4096
_MAX_SEQ: Final = 1_000_000


class Unknown(Exception):
    """Raised inside the folder when a value cannot be known statically."""


@dataclass(frozen=True, slots=True)
class Marshalled:
    """Bytes handed to ``marshal.loads``: never unmarshalled, only mined for strings."""

    data: bytes


@dataclass(frozen=True, slots=True)
class _Builtin:
    name: str


@dataclass(frozen=True, slots=True)
class _Module:
    name: str


@dataclass(frozen=True, slots=True)
class _Func:
    """A resolved callable such as ``base64.b64decode`` or a bound method ``("join", "-")``."""

    name: str
    bound: Any = None


_COPYRIGHT: Final = "Copyright (c) 2001-2023 Python Software Foundation.\nAll Rights Reserved."
_SAFE_BUILTINS: Final = frozenset(
    {
        "chr",
        "ord",
        "str",
        "bytes",
        "bytearray",
        "int",
        "list",
        "tuple",
        "map",
        "reversed",
        "len",
        "hex",
        "oct",
        "bin",
        "abs",
        "sum",
        "min",
        "max",
        "range",
        "sorted",
        "zip",
        "enumerate",
        "copyright",
        "credits",
        "repr",
    }
)


def _cap(v: Any) -> Any:
    if isinstance(v, str | bytes | bytearray | list | tuple) and len(v) > MAX_VALUE:
        raise Unknown("too large")
    if isinstance(v, int) and not isinstance(v, bool) and v.bit_length() > _MAX_INT_BITS:
        raise Unknown("int too large")
    return v


def bounded_decompress(kind: str, data: bytes, limit: int = MAX_VALUE) -> bytes:
    """Decompress with an output cap; raises :class:`Unknown` on error or when over the cap."""
    try:
        if kind == "zlib":
            d = zlib.decompressobj(zlib.MAX_WBITS | 32)  # zlib or gzip header, auto-detected
            out = d.decompress(data, limit + 1)
        elif kind == "raw":
            d = zlib.decompressobj(-zlib.MAX_WBITS)
            out = d.decompress(data, limit + 1)
        elif kind == "bz2":
            out = bz2.BZ2Decompressor().decompress(data, limit + 1)
        elif kind == "lzma":
            out = lzma.LZMADecompressor().decompress(data, limit + 1)
        else:
            raise Unknown(kind)
    except (zlib.error, OSError, EOFError, lzma.LZMAError, ValueError) as exc:
        raise Unknown(str(exc)) from None
    if len(out) > limit:
        raise Unknown("decompressed too large")
    return out


def _to_bytes(v: Any) -> bytes:
    if isinstance(v, bytes | bytearray):
        return bytes(v)
    if isinstance(v, str):
        try:
            return v.encode("ascii")
        except UnicodeEncodeError:
            raise Unknown("non-ascii") from None
    raise Unknown("not bytes")


def _b64(data: Any, alt: bytes | None = None) -> bytes:
    raw = _to_bytes(data)
    raw = b"".join(raw.split())
    if alt:
        raw = raw.translate(bytes.maketrans(alt, b"+/"))
    raw += b"=" * (-len(raw) % 4)
    try:
        return base64.b64decode(raw, validate=False)
    except (binascii.Error, ValueError):
        raise Unknown("bad base64") from None


def b64_text(s: str, min_len: int = 40) -> str | None:
    """If ``s`` is long base64 (or UTF-16 PowerShell base64) of printable text, that text."""
    t = s.strip()
    if len(t) < min_len or len(t) > MAX_VALUE:
        return None
    try:
        raw = base64.b64decode(t + "=" * (-len(t) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    for enc in ("utf-8", "utf-16-le"):
        try:
            text = raw.decode(enc)
        except UnicodeDecodeError:
            continue
        sample = text[:2000]
        if sample and sum(c.isprintable() or c in "\r\n\t" for c in sample) / len(sample) > 0.95:
            return text
    return None


def printable_strings(data: bytes, min_len: int = 4, limit: int = 20_000) -> Iterator[str]:
    """ASCII runs of at least ``min_len`` characters (like ``strings(1)``), at most ``limit``."""
    run: list[int] = []
    n = 0
    start = 0
    for i, b in enumerate(data):
        if 0x20 <= b < 0x7F:
            if not run:
                start = i
            run.append(b)
            continue
        if len(run) >= min_len:
            yield data[start:i].decode("ascii")
            n += 1
            if n >= limit:
                return
        run = []
    if len(run) >= min_len:
        yield data[start:].decode("ascii")


def _codecs_decode(v: Any, enc: str) -> Any:
    e = enc.lower().replace("-", "_")
    if e in ("rot13", "rot_13"):
        if not isinstance(v, str):
            raise Unknown("rot13 of bytes")
        return codecs.decode(v, "rot13")
    if e in ("base64", "base_64", "base64_codec"):
        return _b64(v)
    if e in ("hex", "hex_codec"):
        try:
            return binascii.unhexlify(_to_bytes(v))
        except (binascii.Error, ValueError):
            raise Unknown("bad hex") from None
    if e in ("zlib", "zip", "zlib_codec"):
        return bounded_decompress("zlib", _to_bytes(v))
    if e in ("bz2", "bz2_codec"):
        return bounded_decompress("bz2", _to_bytes(v))
    if e in ("unicode_escape", "string_escape", "raw_unicode_escape"):
        try:
            return codecs.decode(_to_bytes(v) if isinstance(v, str) else v, "unicode_escape")
        except (UnicodeDecodeError, ValueError):
            raise Unknown("bad escape") from None
    if isinstance(v, bytes | bytearray):
        try:
            return bytes(v).decode(enc)
        except (LookupError, UnicodeDecodeError):
            raise Unknown("bad codec") from None
    raise Unknown("codec")


# Decoders by resolved name. Each takes the folded positional args.
def _fn_b64(args: list[Any]) -> Any:
    return _b64(args[0], _to_bytes(args[1]) if len(args) > 1 and args[1] is not None else None)


def _fn_urlsafe(args: list[Any]) -> Any:
    return _b64(args[0], b"-_")


def _fn_b32(args: list[Any]) -> Any:
    try:
        raw = _to_bytes(args[0])
        return base64.b32decode(raw + b"=" * (-len(raw) % 8), casefold=True)
    except (binascii.Error, ValueError):
        raise Unknown("bad b32") from None


def _fn_b16(args: list[Any]) -> Any:
    try:
        return base64.b16decode(_to_bytes(args[0]), casefold=True)
    except (binascii.Error, ValueError):
        raise Unknown("bad b16") from None


def _fn_b85(args: list[Any]) -> Any:
    try:
        return base64.b85decode(_to_bytes(args[0]))
    except (binascii.Error, ValueError):
        raise Unknown("bad b85") from None


def _fn_a85(args: list[Any]) -> Any:
    try:
        return base64.a85decode(_to_bytes(args[0]))
    except (binascii.Error, ValueError):
        raise Unknown("bad a85") from None


def _fn_unhex(args: list[Any]) -> Any:
    v = args[0]
    try:
        if isinstance(v, str):
            return bytes.fromhex(v)
        return binascii.unhexlify(_to_bytes(v))
    except (binascii.Error, ValueError):
        raise Unknown("bad hex") from None


def _fn_codecs(args: list[Any]) -> Any:
    enc = args[1] if len(args) > 1 else "utf-8"
    if not isinstance(enc, str):
        raise Unknown("codec")
    return _codecs_decode(args[0], enc)


def _fn_zlib(args: list[Any]) -> Any:
    return bounded_decompress("zlib", _to_bytes(args[0]))


def _fn_bz2(args: list[Any]) -> Any:
    return bounded_decompress("bz2", _to_bytes(args[0]))


def _fn_lzma(args: list[Any]) -> Any:
    return bounded_decompress("lzma", _to_bytes(args[0]))


def _fn_marshal(args: list[Any]) -> Any:
    return Marshalled(_to_bytes(args[0]))


_DECODERS: Final[dict[str, Callable[[list[Any]], Any]]] = {
    "base64.b64decode": _fn_b64,
    "base64.decodebytes": _fn_b64,
    "base64.decodestring": _fn_b64,
    "base64.standard_b64decode": _fn_b64,
    "base64.urlsafe_b64decode": _fn_urlsafe,
    "base64.b32decode": _fn_b32,
    "base64.b16decode": _fn_b16,
    "base64.b85decode": _fn_b85,
    "base64.a85decode": _fn_a85,
    "binascii.a2b_base64": _fn_b64,
    "binascii.unhexlify": _fn_unhex,
    "binascii.a2b_hex": _fn_unhex,
    "bytes.fromhex": _fn_unhex,
    "builtins.bytes.fromhex": _fn_unhex,
    "bytearray.fromhex": _fn_unhex,
    "builtins.bytearray.fromhex": _fn_unhex,
    "codecs.decode": _fn_codecs,
    "zlib.decompress": _fn_zlib,
    "gzip.decompress": _fn_zlib,
    "bz2.decompress": _fn_bz2,
    "lzma.decompress": _fn_lzma,
    "marshal.loads": _fn_marshal,
}

_STR_METHODS: Final = frozenset(
    {
        "join",
        "replace",
        "lower",
        "upper",
        "strip",
        "lstrip",
        "rstrip",
        "split",
        "encode",
        "decode",
        "format",
        "translate",
        "swapcase",
        "title",
        "capitalize",
        "zfill",
        "center",
        "ljust",
        "rjust",
        "splitlines",
        "casefold",
        "__str__",
        "__repr__",
    }
)


def _no_lookup(name: str, node: ast.AST) -> ast.expr | None:
    return None


def _no_resolve(node: ast.expr) -> str | None:
    return None


class Folder:
    """Folds expressions of one module. ``lookup(name, node)`` returns the expression a name is
    bound to (a single binding) or ``None``; ``resolve(node)`` returns the dotted name a callee
    resolves to (``"base64.b64decode"``, ``"builtins.exec"``) or ``None``."""

    def __init__(
        self,
        lookup: Callable[[str, ast.AST], ast.expr | None],
        resolve: Callable[[ast.expr], str | None],
        budget: int = 200_000,
    ) -> None:
        self._lookup = lookup
        self._resolve = resolve
        self.steps = budget
        self._active: set[int] = set()
        self._cache: dict[int, Any] = {}
        self.used_chr = False  # a value was built from character codes

    def close(self) -> None:
        """Drop the callbacks (bound methods of the analyzer that owns this folder)."""
        self._lookup = _no_lookup
        self._resolve = _no_resolve
        self._cache.clear()

    def fold(self, node: ast.expr | None, env: dict[str, Any] | None = None) -> Any:
        """The value of ``node``, or ``None`` when it cannot be known."""
        if node is None or self.steps <= 0:
            return None
        if env is None:
            key = id(node)
            if key in self._cache:
                return self._cache[key]
            try:
                v = self._ev(node, {})
            except (Unknown, RecursionError, MemoryError, OverflowError, ValueError, TypeError):
                v = None
            except (IndexError, KeyError, ZeroDivisionError, AttributeError, UnicodeError):
                v = None
            self._cache[key] = v
            return v
        try:
            return self._ev(node, env)
        except (Unknown, RecursionError, MemoryError, OverflowError, ValueError, TypeError):
            return None
        except (IndexError, KeyError, ZeroDivisionError, AttributeError, UnicodeError):
            return None

    # ------------------------------------------------------------------ evaluation
    def _ev(self, node: ast.AST, env: dict[str, Any]) -> Any:
        self.steps -= 1
        if self.steps <= 0:
            raise Unknown("budget")
        match node:
            case ast.Constant(value=v):
                if isinstance(v, str | bytes | int | float | bool) or v is None:
                    return v
                raise Unknown("constant")
            case ast.Name(id=name):
                return self._name(name, node, env)
            case ast.JoinedStr(values=values):
                parts = []
                for p in values:
                    if isinstance(p, ast.Constant):
                        parts.append(str(p.value))
                    elif isinstance(p, ast.FormattedValue):
                        val = self._ev(p.value, env)
                        if p.conversion == ord("r"):
                            val = repr(val)
                        spec = self._ev(p.format_spec, env) if p.format_spec else ""
                        parts.append(format(val, spec))
                    else:
                        raise Unknown("fstring")
                return _cap("".join(parts))
            case ast.BinOp(left=left, op=op, right=right):
                return self._binop(op, self._ev(left, env), self._ev(right, env))
            case ast.UnaryOp(op=op, operand=operand):
                v = self._ev(operand, env)
                if isinstance(op, ast.USub) and isinstance(v, int | float):
                    return -v
                if isinstance(op, ast.UAdd) and isinstance(v, int | float):
                    return v
                if isinstance(op, ast.Invert) and isinstance(v, int):
                    return ~v
                if isinstance(op, ast.Not):
                    return not v
                raise Unknown("unary")
            case ast.List(elts=elts) | ast.Tuple(elts=elts):
                if len(elts) > _MAX_SEQ:
                    raise Unknown("too long")
                self.steps -= len(elts)
                out = [self._ev(e, env) for e in elts]
                return out if isinstance(node, ast.List) else tuple(out)
            case ast.Subscript(value=value, slice=sl):
                base = self._ev(value, env)
                if isinstance(sl, ast.Slice):
                    lo = self._ev(sl.lower, env) if sl.lower else None
                    hi = self._ev(sl.upper, env) if sl.upper else None
                    st = self._ev(sl.step, env) if sl.step else None
                    if not isinstance(base, str | bytes | list | tuple):
                        raise Unknown("slice")
                    return base[lo:hi:st]
                idx = self._ev(sl, env)
                if isinstance(base, str | bytes | list | tuple) and isinstance(idx, int):
                    return base[idx]
                if isinstance(base, dict):
                    return base[idx]
                raise Unknown("subscript")
            case ast.Dict(keys=keys, values=values):
                d: dict[Any, Any] = {}
                for key_node, val_node in zip(keys, values, strict=True):
                    if key_node is None:
                        raise Unknown("dict unpack")
                    d[self._ev(key_node, env)] = self._ev(val_node, env)
                return d
            case ast.IfExp(test=test, body=body, orelse=orelse):
                return self._ev(body if self._ev(test, env) else orelse, env)
            case ast.Call():
                return self._call(node, env)
            case ast.Attribute(value=value, attr=attr):
                return self._attr(node, value, attr, env)
            case (
                ast.ListComp(elt=elt, generators=gens) | ast.GeneratorExp(elt=elt, generators=gens)
            ):
                return self._comp(elt, gens, env)
            case ast.Compare(left=left, ops=[op], comparators=[right]):
                a, b = self._ev(left, env), self._ev(right, env)
                if isinstance(op, ast.Eq):
                    return a == b
                if isinstance(op, ast.NotEq):
                    return a != b
                if isinstance(op, ast.In | ast.NotIn) and isinstance(b, str | bytes | list | tuple):
                    return (a in b) == isinstance(op, ast.In)
                raise Unknown("compare")
        raise Unknown(type(node).__name__)

    def _name(self, name: str, node: ast.AST, env: dict[str, Any]) -> Any:
        if name in env:
            return env[name]
        bound = self._lookup(name, node)
        if bound is not None:
            key = id(bound)
            if key in self._active:
                raise Unknown("cycle")
            self._active.add(key)
            try:
                return self._ev(bound, env)
            finally:
                self._active.discard(key)
        dotted = self._resolve(node)  # type: ignore[arg-type]
        if dotted is not None:
            if dotted.startswith("builtins.") and dotted[9:] in _SAFE_BUILTINS:
                return _Builtin(dotted[9:])
            if dotted in _DECODERS:
                return _Func(dotted)
            return _Module(dotted)
        raise Unknown("name")

    def _attr(self, node: ast.Attribute, value: ast.expr, attr: str, env: dict[str, Any]) -> Any:
        dotted = self._resolve(node)
        if dotted in _DECODERS:
            return _Func(dotted)
        base = self._ev(value, env)
        if isinstance(base, str | bytes | bytearray) and attr in _STR_METHODS:
            return _Func(attr, base)
        if isinstance(base, _Builtin) and attr in ("__str__", "__repr__", "__name__"):
            return _Func(attr, base)
        if isinstance(base, _Module):
            name = f"{base.name}.{attr}"
            if name in _DECODERS:
                return _Func(name)
            return _Module(name)
        if isinstance(base, _Builtin) and base.name in ("bytes", "bytearray") and attr == "fromhex":
            return _Func("bytes.fromhex")
        if isinstance(base, _Builtin) and base.name in ("str", "bytes") and attr == "maketrans":
            return _Func("maketrans", base)
        raise Unknown("attr")

    def _comp(self, elt: ast.expr, gens: list[ast.comprehension], env: dict[str, Any]) -> list[Any]:
        if len(gens) != 1 or gens[0].is_async:
            raise Unknown("comprehension")
        g = gens[0]
        seq = self._ev(g.iter, env)
        if isinstance(seq, str | bytes | list | tuple | range):
            items = list(seq)
        else:
            raise Unknown("iter")
        if len(items) > _MAX_SEQ:
            raise Unknown("too long")
        out = []
        for item in items:
            self.steps -= 1
            if self.steps <= 0:
                raise Unknown("budget")
            local = dict(env)
            self._bind(g.target, item, local)
            if all(self._ev(c, local) for c in g.ifs):
                out.append(self._ev(elt, local))
        return out

    def _bind(self, target: ast.expr, value: Any, env: dict[str, Any]) -> None:
        if isinstance(target, ast.Name):
            env[target.id] = value
        elif isinstance(target, ast.Tuple | ast.List) and isinstance(value, list | tuple):
            if len(target.elts) != len(value):
                raise Unknown("unpack")
            for t, v in zip(target.elts, value, strict=True):
                self._bind(t, v, env)
        else:
            raise Unknown("target")

    def _binop(self, op: ast.operator, a: Any, b: Any) -> Any:
        if isinstance(op, ast.Add):
            if type(a) is type(b) or (isinstance(a, int | float) and isinstance(b, int | float)):
                return _cap(a + b)
            if isinstance(a, bytes | bytearray) and isinstance(b, bytes | bytearray):
                return _cap(bytes(a) + bytes(b))
            raise Unknown("add")
        if isinstance(op, ast.Mult):
            if isinstance(a, str | bytes | list) and isinstance(b, int):
                a, b = b, a
            if isinstance(a, int) and isinstance(b, str | bytes | list):
                if a * len(b) > MAX_VALUE:
                    raise Unknown("too large")
                return a * b
            if isinstance(a, int | float) and isinstance(b, int | float):
                return _cap(a * b)
            raise Unknown("mul")
        if isinstance(op, ast.Mod) and isinstance(a, str | bytes):
            return _cap(a % (tuple(b) if isinstance(b, list) else b))
        if not (isinstance(a, int) and isinstance(b, int)):
            if isinstance(a, int | float) and isinstance(b, int | float):
                if isinstance(op, ast.Sub):
                    return a - b
                if isinstance(op, ast.Div):
                    return a / b
            raise Unknown("binop")
        if isinstance(op, ast.LShift):
            if b > _MAX_INT_BITS or b < 0:
                raise Unknown("shift")
            return _cap(a << b)
        if isinstance(op, ast.Pow):
            if (abs(a) > 1 and b > 512) or b < 0:
                raise Unknown("pow")
            return _cap(a**b)
        ops: dict[type[ast.operator], Callable[[int, int], int]] = {
            ast.Sub: lambda x, y: x - y,
            ast.RShift: lambda x, y: x >> y,
            ast.BitAnd: lambda x, y: x & y,
            ast.BitOr: lambda x, y: x | y,
            ast.BitXor: lambda x, y: x ^ y,
            ast.FloorDiv: lambda x, y: x // y,
            ast.Mod: lambda x, y: x % y,
        }
        fn = ops.get(type(op))
        if fn is None:
            raise Unknown("op")
        return _cap(fn(a, b))

    def _call(self, node: ast.Call, env: dict[str, Any]) -> Any:
        if any(isinstance(a, ast.Starred) for a in node.args) or any(
            k.arg is None for k in node.keywords
        ):
            raise Unknown("star args")
        dotted = self._resolve(node.func)
        # an inlined lambda or one-expression function: f = lambda s: decode(s[::-1])
        inl = self._inline_target(node.func, env)
        if inl is not None:
            params, prelude, body = inl
            if len(params) < len(node.args):
                raise Unknown("arity")
            local = dict(env)
            for p, a in zip(params, node.args, strict=False):
                local[p] = self._ev(a, env)
            for k in node.keywords:
                if k.arg is not None:
                    local[k.arg] = self._ev(k.value, env)
            key = id(body)
            if key in self._active:
                raise Unknown("recursion")
            self._active.add(key)
            try:
                for st in prelude:
                    self._bind(st.targets[0], self._ev(st.value, local), local)
                return self._ev(body, local)
            finally:
                self._active.discard(key)
        fn: Any
        if dotted is not None and dotted in _DECODERS:
            fn = _Func(dotted)
        elif dotted is not None and dotted.startswith("builtins.") and dotted[9:] in _SAFE_BUILTINS:
            fn = _Builtin(dotted[9:])
        elif dotted in ("builtins.eval",) and node.args:
            # eval("chr") / eval("\x65\x78\x65\x63"): the builtin named by a literal identifier
            src = self._ev(node.args[0], env)
            if isinstance(src, str) and src.isidentifier() and src in _SAFE_BUILTINS:
                return _Builtin(src)
            raise Unknown("eval")
        elif dotted in ("builtins.getattr",) and len(node.args) >= 2:
            obj = self._ev(node.args[0], env)
            name = self._ev(node.args[1], env)
            if not isinstance(name, str):
                raise Unknown("getattr")
            if isinstance(obj, _Module) and obj.name in ("builtins", "__builtins__"):
                if name in _SAFE_BUILTINS:
                    return _Builtin(name)
                raise Unknown("builtin")
            if isinstance(obj, str | bytes) and name in _STR_METHODS:
                return _Func(name, obj)
            if isinstance(obj, _Module):
                full = f"{obj.name}.{name}"
                return _Func(full) if full in _DECODERS else _Module(full)
            raise Unknown("getattr")
        else:
            fn = self._ev(node.func, env)
        args = [self._ev(a, env) for a in node.args]
        kwargs = {k.arg: self._ev(k.value, env) for k in node.keywords if k.arg}
        return self._apply(fn, args, kwargs)

    def _inline_target(
        self, func: ast.expr, env: dict[str, Any]
    ) -> tuple[list[str], list[ast.Assign], ast.expr] | None:
        """A lambda, or a function made of simple assignments and a final return."""
        target: ast.AST | None = None
        if isinstance(func, ast.Lambda):
            target = func
        elif isinstance(func, ast.Name) and func.id not in env:
            target = self._lookup(func.id, func)
        if isinstance(target, ast.Lambda):
            a = target.args
            return [p.arg for p in a.posonlyargs + a.args], [], target.body
        if isinstance(target, ast.FunctionDef):
            body = [s for s in target.body if not _is_docstring(s)]
            if (
                body
                and len(body) <= 12
                and isinstance(body[-1], ast.Return)
                and body[-1].value is not None
                and all(
                    isinstance(s, ast.Assign)
                    and len(s.targets) == 1
                    and isinstance(s.targets[0], ast.Name | ast.Tuple)
                    for s in body[:-1]
                )
            ):
                a = target.args
                prelude = [s for s in body[:-1] if isinstance(s, ast.Assign)]
                return [p.arg for p in a.posonlyargs + a.args], prelude, body[-1].value
        return None

    def _apply(self, fn: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
        self.steps -= 1
        if isinstance(fn, _Func):
            if fn.bound is not None:
                return self._method(fn.name, fn.bound, args, kwargs)
            dec = _DECODERS.get(fn.name)
            if dec is not None and args:
                return _cap(dec(args))
            raise Unknown("func")
        if isinstance(fn, _Builtin):
            return self._builtin(fn.name, args, kwargs)
        raise Unknown("callee")

    def _builtin(self, name: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        if name == "chr" and len(args) == 1 and isinstance(args[0], int):
            self.used_chr = True
            return chr(args[0])
        if name == "ord" and len(args) == 1 and isinstance(args[0], str | bytes):
            return ord(args[0])
        if name in ("str", "repr") and len(args) == 1:
            v = args[0]
            if isinstance(v, _Builtin):
                return _builtin_str(v.name)
            if isinstance(v, str | int | float | bytes) and name == "str":
                return str(v)
            if isinstance(v, str | int | float | bytes):
                return repr(v)
            raise Unknown("str")
        if name == "str" and len(args) >= 2 and isinstance(args[0], bytes | bytearray):
            return bytes(args[0]).decode(args[1])
        if name in ("bytes", "bytearray"):
            if len(args) == 1 and isinstance(args[0], list | tuple):
                self.used_chr = True
                return _cap(bytes(args[0]))
            if len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
                return args[0].encode(args[1])
            if len(args) == 1 and isinstance(args[0], bytes | bytearray):
                return bytes(args[0])
            raise Unknown("bytes")
        if name == "int" and args and isinstance(args[0], str | int):
            if len(args) == 2 and isinstance(args[1], int) and isinstance(args[0], str):
                return int(args[0], args[1])
            return int(args[0])
        if name in ("list", "tuple") and len(args) == 1:
            v = args[0]
            if isinstance(v, str | bytes | list | tuple | range):
                if len(v) > _MAX_SEQ:
                    raise Unknown("too long")
                return list(v) if name == "list" else tuple(v)
            raise Unknown("list")
        if (
            name == "reversed"
            and len(args) == 1
            and isinstance(args[0], str | bytes | list | tuple)
        ):
            return list(reversed(args[0]))
        if name == "map" and len(args) == 2:
            f, seq = args
            if not isinstance(seq, str | bytes | list | tuple | range):
                raise Unknown("map")
            if len(seq) > _MAX_SEQ:
                raise Unknown("too long")
            self.steps -= len(seq)
            if self.steps <= 0:
                raise Unknown("budget")
            return [self._apply(f, [x], {}) for x in seq]
        if name == "range" and all(isinstance(a, int) for a in args) and 1 <= len(args) <= 3:
            r = range(*args)
            if len(r) > _MAX_SEQ:
                raise Unknown("too long")
            return r
        if name == "len" and len(args) == 1 and isinstance(args[0], str | bytes | list | tuple):
            return len(args[0])
        if name in ("hex", "oct", "bin", "abs") and len(args) == 1 and isinstance(args[0], int):
            n: int = args[0]
            if name == "abs":
                return abs(n)
            return hex(n) if name == "hex" else oct(n) if name == "oct" else bin(n)
        if (
            name in ("sum", "min", "max")
            and len(args) == 1
            and isinstance(args[0], list | tuple)
            and all(isinstance(x, int) for x in args[0])
        ):
            ints: list[int] = list(args[0])
            return sum(ints) if name == "sum" else min(ints) if name == "min" else max(ints)
        if name == "zip" and all(isinstance(a, list | tuple | str | bytes) for a in args):
            return list(zip(*args, strict=False))
        if name == "enumerate" and len(args) == 1 and isinstance(args[0], list | tuple | str):
            return list(enumerate(args[0]))
        raise Unknown(name)

    def _method(self, name: str, obj: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
        if name == "maketrans" and isinstance(obj, _Builtin):
            if obj.name == "str" and all(isinstance(a, str) for a in args) and len(args) in (2, 3):
                return str.maketrans(*args)
            if obj.name == "bytes" and all(isinstance(a, bytes) for a in args) and len(args) == 2:
                return bytes.maketrans(args[0], args[1])
            raise Unknown("maketrans")
        if isinstance(obj, _Builtin):
            if name in ("__str__", "__repr__"):
                return _builtin_str(obj.name)
            if name == "__name__":
                return obj.name
            raise Unknown("builtin method")
        if name == "join":
            (seq,) = args
            if not isinstance(seq, list | tuple | str | bytes):
                raise Unknown("join")
            if isinstance(obj, str):
                if not all(isinstance(x, str) for x in seq):
                    raise Unknown("join types")
                return _cap(obj.join(seq))  # type: ignore[arg-type]
            if isinstance(seq, bytes):
                return _cap(bytes(obj).join(bytes([b]) for b in seq))
            return _cap(bytes(obj).join(_to_bytes(x) for x in seq))
        if name == "decode":
            enc = args[0] if args else kwargs.get("encoding", "utf-8")
            if not isinstance(obj, bytes | bytearray) or not isinstance(enc, str):
                raise Unknown("decode")
            errors = args[1] if len(args) > 1 else kwargs.get("errors", "strict")
            if enc.lower().replace("-", "_") in ("rot13", "rot_13", "base64", "hex", "zlib", "bz2"):
                return _codecs_decode(bytes(obj), enc)
            return bytes(obj).decode(enc, errors if isinstance(errors, str) else "strict")
        if name == "encode":
            enc = args[0] if args else kwargs.get("encoding", "utf-8")
            if not isinstance(obj, str) or not isinstance(enc, str):
                raise Unknown("encode")
            if enc.lower().replace("-", "_") in ("rot13", "rot_13"):
                return codecs.encode(obj, "rot13")
            return obj.encode(enc)
        if name == "format":
            if not isinstance(obj, str):
                raise Unknown("format")
            return _cap(obj.format(*args, **kwargs))
        if name == "translate" and len(args) == 1 and isinstance(args[0], dict | bytes | str):
            return obj.translate(args[0])
        if name in ("__str__", "__repr__"):
            return str(obj) if name == "__str__" else repr(obj)
        m = getattr(obj, name, None)
        if m is None or name not in _STR_METHODS:
            raise Unknown("method")
        if not all(isinstance(a, str | bytes | int) or a is None for a in args):
            raise Unknown("args")
        return _cap(m(*args))


def _builtin_str(name: str) -> str:
    if name == "copyright":
        return _COPYRIGHT
    if name == "credits":
        return "    Thanks to CWI, CNRI, BeOpen.com, Zope Corporation and a cast of thousands"
    if name in ("str", "bytes", "bytearray", "int", "list", "tuple", "map", "reversed", "range"):
        return f"<class '{name}'>"
    return f"<built-in function {name}>"


def _is_docstring(stmt: ast.stmt) -> bool:
    return (
        isinstance(stmt, ast.Expr)
        and isinstance(stmt.value, ast.Constant)
        and isinstance(stmt.value.value, str)
    )
