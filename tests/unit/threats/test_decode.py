"""Static decoding: constant folding and the bounded decoders (nothing is executed)."""

from __future__ import annotations

import ast
import base64
import bz2
import codecs
import lzma
import zlib
from typing import Any

import pytest

from stockade.core.threats.decode import (
    Folder,
    Marshalled,
    Unknown,
    b64_text,
    bounded_decompress,
    printable_strings,
)


def fold(src: str) -> Any:
    """Fold the last expression of ``src``; earlier lines bind names."""
    tree = ast.parse(src)
    names: dict[str, ast.expr] = {}
    for st in tree.body[:-1]:
        if isinstance(st, ast.Assign) and isinstance(st.targets[0], ast.Name):
            names[st.targets[0].id] = st.value
        if isinstance(st, ast.FunctionDef):
            names[st.name] = st  # type: ignore[assignment]
    imports = {"base64", "zlib", "codecs", "binascii", "bz2", "lzma", "marshal", "gzip"}
    last = tree.body[-1]
    assert isinstance(last, ast.Expr)

    def lookup(name: str, node: ast.AST) -> ast.expr | None:
        return names.get(name)

    def resolve(node: ast.expr) -> str | None:
        if isinstance(node, ast.Name):
            if node.id in names:
                return None
            return node.id if node.id in imports else f"builtins.{node.id}"
        if isinstance(node, ast.Attribute):
            base = resolve(node.value)
            return f"{base}.{node.attr}" if base else None
        return None

    return Folder(lookup, resolve).fold(last.value)


@pytest.mark.parametrize(
    ("src", "expected"),
    [
        ("'ex' + 'ec'", "exec"),
        ("'cexe'[::-1]", "exec"),
        ("''.join(['o', 's'])", "os"),
        ("''.join(chr(c) for c in [111, 115])", "os"),
        ("''.join(map(chr, [111, 115]))", "os"),
        ("bytes([111, 115]).decode()", "os"),
        ("f'{\"o\"}s'", "os"),
        ("'%s%s' % ('o', 's')", "os"),
        ("'{}{}'.format('o', 's')", "os"),
        (f"base64.b64decode('{base64.b64encode(b'print(1)').decode()}')", b"print(1)"),
        (f"base64.b64decode('{base64.b64encode(b'print(1)').decode().rstrip('=')}')", b"print(1)"),
        ("bytes.fromhex('7072696e74283129')", b"print(1)"),
        ("codecs.decode('cevag(1)', 'rot13')", "print(1)"),
        (
            f"zlib.decompress(base64.b64decode('{base64.b64encode(zlib.compress(b'x=1')).decode()}'))",
            b"x=1",
        ),
        ("(((1 << 4) - 1) << 3) - 1", 119),
        ("oct.__str__()[-3 << 0] + hex.__str__()[-1 << 2] + copyright.__str__()[4 << 0]", "chr"),
        ("s = 'abc'\ns.upper()", "ABC"),
        ("k = 7\n''.join(chr(c ^ k) for c in [104, 116])", "os"),
        (
            "def d(x):\n    y = base64.b64decode(x)\n    return y.decode()\n"
            f"d('{base64.b64encode(b'hi').decode()}')",
            "hi",
        ),
        ("f = lambda s: s[::-1]\nf('so')", "os"),
        ("eval('chr')(111)", "o"),
    ],
)
def test_folds(src: str, expected: Any) -> None:
    assert fold(src) == expected


def test_marshal_is_never_unmarshalled() -> None:
    got = fold("marshal.loads(b'\\xe3\\x00\\x00')")
    assert isinstance(got, Marshalled)
    assert got.data == b"\xe3\x00\x00"


@pytest.mark.parametrize(
    "src",
    [
        "open('x').read()",  # I/O is never folded
        "__import__('os').getcwd()",
        "'a' * (10 ** 12)",  # too large
        "1 << 100000",
        "''.join(chr(c) for c in range(10 ** 9))",
        "unknown_name + 'x'",
    ],
)
def test_unknowable_or_too_big_is_none(src: str) -> None:
    assert fold(src) is None


def test_bounded_decompress() -> None:
    bomb = zlib.compress(b"\x00" * (20 << 20))
    with pytest.raises(Unknown):
        bounded_decompress("zlib", bomb, limit=1 << 20)
    assert bounded_decompress("bz2", bz2.compress(b"ok")) == b"ok"
    assert bounded_decompress("lzma", lzma.compress(b"ok")) == b"ok"
    with pytest.raises(Unknown):
        bounded_decompress("zlib", b"not zlib")


def test_b64_text_and_powershell() -> None:
    assert b64_text(base64.b64encode(b"Write-Output hello world " * 3).decode()) is not None
    ps = base64.b64encode("Invoke-WebRequest -Uri x".encode("utf-16-le")).decode()
    assert b64_text(ps, min_len=16) == "Invoke-WebRequest -Uri x"
    assert b64_text(base64.b64encode(bytes(range(256))).decode()) is None  # binary
    assert b64_text("not base64 at all, with spaces and more than forty characters") is None


def test_printable_strings() -> None:
    data = b"\x00\x01hello\x00\xffworld!\x02ab\x00"
    assert list(printable_strings(data, 4)) == ["hello", "world!"]
    assert codecs.decode("uryyb", "rot13") == "hello"
