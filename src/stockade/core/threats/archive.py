"""Bounded, in-memory walking of distribution archives (zip/wheel, tar with gzip/bz2/xz),
nested archives included, for the malware scanner.

Nothing is extracted or written: member bytes are read into memory, each with a cap, and every
decompressed byte is charged to one budget per scanned file. The container format is sniffed
from magic bytes, never trusted from a file name. Abuse of the format is reported as an event
(never an exception): path traversal, absolute paths, links leaving the archive, device files,
duplicate members, overlapping zip entries, decompression bombs, encrypted or corrupt members,
too many members, nesting deeper than the limit.

Binary members (native code, images, data with NUL bytes) are kept as their first bytes only:
enough to classify them. Text members are kept whole up to ``max_member_bytes``.
"""

from __future__ import annotations

import bz2
import contextlib
import io
import itertools
import lzma
import posixpath
import stat
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import zstandard

__all__ = ["ArchiveEvent", "Member", "ScanLimits", "sniff", "walk"]

_MIB: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ScanLimits:
    """Bounds on the work spent on one file (sizes in bytes)."""

    max_members: int = 50_000  # members read per archive (nested ones included)
    max_member_bytes: int = 32 * _MIB  # bytes kept of one text member
    max_total_bytes: int = 1024 * _MIB  # decompressed bytes read for one file, all levels
    max_ratio: float = 200.0  # a member or stream larger than bomb_floor at this ratio is a bomb
    bomb_floor: int = 64 * _MIB
    max_depth: int = 3  # nested archive levels opened below the file itself
    binary_head: int = 4096  # bytes kept of a binary member
    max_python_bytes: int = 4 * _MIB  # larger Python files get the cheap checks only
    max_payload_depth: int = 5  # decode-then-exec layers followed
    max_payload_bytes: int = 32 * _MIB  # decoded payload bytes analysed per file
    max_fold_steps: int = 300_000  # constant-folding steps per Python file
    # a nested archive member (a .conda's pkg-*.tar.zst) is read up to this size to be opened;
    # its bytes count against max_total_bytes like every decompressed byte
    max_nested_bytes: int = 256 * _MIB


@dataclass(slots=True)
class Member:
    path: str  # display path: "pkg/x.py", nested: "inner.tar.gz!/pkg/x.py"
    name: str  # path inside its own archive
    data: bytes
    size: int  # full size when known (data may be shorter)
    truncated: bool = False
    binary: bool = False
    depth: int = 0
    container: str = "file"  # file | zip | tar | stream


@dataclass(frozen=True, slots=True)
class ArchiveEvent:
    tag: str
    path: str
    detail: str


@dataclass(slots=True)
class _State:
    limits: ScanLimits
    total: int = 0  # decompressed bytes charged
    members: int = 0
    events: list[ArchiveEvent] = field(default_factory=list)
    stopped: bool = False
    seen_events: set[tuple[str, str]] = field(default_factory=set)

    def event(self, tag: str, path: str, detail: str) -> None:
        key = (tag, path)
        if key in self.seen_events or len(self.events) >= 500:
            return
        self.seen_events.add(key)
        self.events.append(ArchiveEvent(tag, path, detail))


class _Budget(Exception):
    pass


_BINARY_MAGIC: Final = (
    b"\x7fELF",
    b"MZ",
    b"\xfe\xed\xfa\xce",
    b"\xfe\xed\xfa\xcf",
    b"\xce\xfa\xed\xfe",
    b"\xcf\xfa\xed\xfe",
    b"\xca\xfe\xba\xbe",
    b"\x89PNG",
    b"\xff\xd8\xff",
    b"GIF8",
    b"SQLite format 3",
    b"\x00asm",
    b"%PDF",
)


def sniff(head: bytes) -> str:
    """zip | gzip | bz2 | xz | zstd | tar | binary | text (from the first bytes)."""
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08"):
        return "zip"
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:3] == b"BZh" and len(head) > 4 and head[3:4].isdigit():
        return "bz2"
    if head[:6] == b"\xfd7zXZ\x00":
        return "xz"
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return "zstd"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    if head.startswith(_BINARY_MAGIC) and not head.startswith(b"MZ\n"):
        return "binary"
    if b"\x00" in head[:8192]:
        return "binary"
    return "text"


def _check_name(st: _State, name: str, shown: str) -> None:
    n = name.replace("\\", "/")
    if n.startswith("/") or (len(n) > 1 and n[1] == ":" and n[0].isalpha()):
        st.event("archive_absolute", shown, f"absolute member path {name!r}")
    parts = n.split("/")
    if ".." in parts:
        st.event("archive_traversal", shown, f"member path {name!r} climbs out with '..'")


def _escapes(name: str, target: str) -> bool:
    t = target.replace("\\", "/")
    if t.startswith("/") or (len(t) > 1 and t[1] == ":"):
        return True
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(name.replace("\\", "/")), t))
    return joined == ".." or joined.startswith("../")


def _charge(st: _State, n: int) -> None:
    st.total += n
    if st.total > st.limits.max_total_bytes:
        raise _Budget


class _Inflater(io.RawIOBase):
    """A readable stream of decompressed bytes (gzip/zlib, bz2, xz, zstd), charged to the
    budget, that stops with _Budget on a bomb."""

    def __init__(self, raw: bytes, kind: str, st: _State, shown: str) -> None:
        self._raw = raw
        self._pos = 0
        self._kind = kind
        self._st = st
        self._shown = shown
        self._out = 0
        self._buf = b""
        self._d = self._new()
        self._eof = False

    def _new(self) -> Any:
        if self._kind == "gzip":
            return zlib.decompressobj(zlib.MAX_WBITS | 16)
        if self._kind == "bz2":
            return bz2.BZ2Decompressor()
        if self._kind == "zstd":  # a bounded reader: read(n) never returns more than n bytes
            self._src = io.BytesIO(self._raw)
            return zstandard.ZstdDecompressor().stream_reader(
                self._src, read_size=65536, read_across_frames=True
            )
        return lzma.LZMADecompressor()

    def readable(self) -> bool:
        return True

    def _more(self, want: int) -> bytes:
        d = self._d
        if self._kind == "zstd":
            chunk = d.read(want)
            self._pos = self._src.tell()
            return bytes(chunk)
        while True:
            if self._kind == "gzip":
                if d.unconsumed_tail:
                    chunk = d.decompress(d.unconsumed_tail, want)
                elif d.eof:
                    rest = d.unused_data
                    if rest.strip(b"\x00") and rest[:2] == b"\x1f\x8b":
                        self._d = d = self._new()  # gzip members concatenated
                        chunk = d.decompress(rest, want)
                        self._pos = len(self._raw) - len(d.unused_data) if d.eof else self._pos
                    else:
                        return b""
                else:
                    if self._pos >= len(self._raw):
                        return b""
                    block = self._raw[self._pos : self._pos + 65536]
                    self._pos += len(block)
                    chunk = d.decompress(block, want)
            else:
                if d.eof:
                    return b""
                if d.needs_input:
                    if self._pos >= len(self._raw):
                        return b""
                    block = self._raw[self._pos : self._pos + 65536]
                    self._pos += len(block)
                else:
                    block = b""
                chunk = d.decompress(block, want)
            if chunk:
                return bytes(chunk)

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = 1 << 20
        out = bytearray()
        while len(out) < size:
            if self._buf:
                take = self._buf[: size - len(out)]
                self._buf = self._buf[len(take) :]
                out += take
                continue
            chunk = self._more(min(size - len(out), 1 << 20))
            if not chunk:
                break
            self._out += len(chunk)
            _charge(self._st, len(chunk))
            lim = self._st.limits
            if self._out > lim.bomb_floor and self._out > lim.max_ratio * max(self._pos, 1):
                self._st.event(
                    "archive_bomb",
                    self._shown,
                    f"{self._kind} stream expands over {lim.max_ratio:.0f}x "
                    f"({self._out} bytes from {self._pos})",
                )
                raise _Budget
            out += chunk
        return bytes(out)

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


def _read_capped(
    f: io.BufferedIOBase | io.RawIOBase | tarfile.ExFileObject, st: _State, cap: int
) -> tuple[bytes, bool]:
    """Read at most ``cap`` bytes; (data, truncated)."""
    data = f.read(cap + 1)
    assert isinstance(data, bytes)
    if len(data) > cap:
        return data[:cap], True
    return data, False


def walk(
    data: bytes, filename: str, limits: ScanLimits
) -> tuple[list[Member], list[ArchiveEvent], int]:
    """All members (nested archives opened), the abuse events, decompressed bytes read."""
    st = _State(limits)
    out: list[Member] = []
    try:
        for m in _walk_blob(data, filename, "", 0, st, top=True):
            out.append(m)
    except _Budget:
        st.event("scan_budget", filename, f"stopped after {st.total} decompressed bytes")
    except RecursionError:
        st.event("archive_too_deep", filename, "nesting too deep")
    return out, st.events, st.total


def _walk_blob(
    data: bytes, name: str, prefix: str, depth: int, st: _State, top: bool = False
) -> Iterator[Member]:
    kind = sniff(data[:8192])
    shown = prefix + name
    if kind == "zip":
        if depth > st.limits.max_depth:
            st.event("archive_too_deep", shown, f"archive nested deeper than {st.limits.max_depth}")
            yield Member(shown, name, data[: st.limits.binary_head], len(data), True, True, depth)
            return
        yield from _walk_zip(data, shown, depth, st, top)
    elif kind in ("gzip", "bz2", "xz", "zstd"):
        if depth > st.limits.max_depth:
            st.event("archive_too_deep", shown, f"archive nested deeper than {st.limits.max_depth}")
            yield Member(shown, name, data[: st.limits.binary_head], len(data), True, True, depth)
            return
        yield from _walk_compressed(data, kind, shown, depth, st, top)
    elif kind == "tar":
        if depth > st.limits.max_depth:
            st.event("archive_too_deep", shown, f"archive nested deeper than {st.limits.max_depth}")
            return
        yield from _walk_tar(io.BytesIO(data), shown, depth, st)
    else:
        # a plain file given directly
        binary = kind == "binary"
        keep = data[: st.limits.binary_head] if binary else data[: st.limits.max_member_bytes]
        yield Member(shown, name, keep, len(data), len(keep) < len(data), binary, depth, "file")


def _walk_compressed(
    data: bytes, kind: str, shown: str, depth: int, st: _State, top: bool
) -> Iterator[Member]:
    stream = _Inflater(data, kind, st, shown)
    head = b""
    try:
        head = stream.read(8192)
    except (OSError, EOFError, zlib.error, lzma.LZMAError, ValueError, zstandard.ZstdError) as exc:
        st.event("archive_corrupt", shown, f"cannot decompress: {exc}")
        return
    inner_kind = sniff(head)
    if inner_kind == "tar" or (len(head) >= 512 and _looks_tar(head)):
        buf = _Prefixed(head, stream)
        yield from _walk_tar(buf, shown, depth, st)
        return
    # a compressed single file (data.json.gz, payload.py.gz, a tar that is not one, ...)
    try:
        rest, _truncated = _read_capped(stream, st, st.limits.max_member_bytes)
    except (OSError, EOFError, zlib.error, lzma.LZMAError, ValueError, zstandard.ZstdError) as exc:
        st.event("archive_corrupt", shown, f"cannot decompress: {exc}")
        return
    body = head + rest
    inner = shown.rsplit("/", 1)[-1]
    for ext in (".gz", ".tgz", ".bz2", ".xz", ".tbz2", ".txz", ".zst"):
        if inner.lower().endswith(ext):
            inner = inner[: -len(ext)] or "data"
            break
    st.members += 1
    yield from _walk_blob(body, inner, shown + "!/", depth + 1, st)


def _looks_tar(head: bytes) -> bool:
    # old (v7) tar headers: no magic, but a valid checksum
    try:
        chk = int(head[148:156].split(b"\x00", 1)[0].strip() or b"-1", 8)
    except ValueError:
        return False
    calc = sum(head[:148]) + 8 * 32 + sum(head[156:512])
    return chk == calc


class _Prefixed(io.RawIOBase):
    def __init__(self, head: bytes, rest: _Inflater) -> None:
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._head:
            if size is None or size < 0 or size >= len(self._head):
                h, self._head = self._head, b""
                more = self._rest.read(size - len(h)) if size and size > 0 else b""
                return h + more
            h, self._head = self._head[:size], self._head[size:]
            return h
        return self._rest.read(size)

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


def _walk_tar(
    fobj: io.RawIOBase | io.BytesIO, shown: str, depth: int, st: _State
) -> Iterator[Member]:
    prefix = shown + "!/" if depth > 0 else ""
    names: set[str] = set()
    try:
        tf = tarfile.open(fileobj=fobj, mode="r|")  # noqa: SIM115 - closed in the finally below
    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
        st.event("archive_corrupt", shown, f"not a readable tar: {exc}")
        return
    try:
        while True:
            try:
                ti = tf.next()
            except (
                tarfile.TarError,
                OSError,
                EOFError,
                ValueError,
                UnicodeError,
                zstandard.ZstdError,
            ) as exc:
                st.event("archive_corrupt", shown, f"tar stream broken: {exc}")
                return
            if ti is None:
                return
            st.members += 1
            if st.members > st.limits.max_members:
                st.event("archive_too_many", shown, f"more than {st.limits.max_members} members")
                return
            name = ti.name
            disp = prefix + name
            _check_name(st, name, disp)
            norm = posixpath.normpath(name.replace("\\", "/")).lstrip("/")
            if ti.isdir():
                continue
            if norm in names:
                st.event("archive_duplicate", disp, f"member {name!r} appears more than once")
            names.add(norm)
            if ti.issym() or ti.islnk():
                if _escapes(name if ti.issym() else "", ti.linkname):
                    st.event(
                        "archive_link_escape",
                        disp,
                        f"link {name!r} -> {ti.linkname!r} leaves the archive",
                    )
                continue
            if ti.ischr() or ti.isblk() or ti.isfifo():
                st.event("archive_special", disp, f"device or FIFO member {name!r}")
                continue
            if not ti.isfile():
                continue
            f = tf.extractfile(ti)
            if f is None:
                continue
            try:
                yield from _member(f, name, disp, ti.size, depth, st, "tar")
            except (
                tarfile.TarError,
                OSError,
                EOFError,
                zlib.error,
                lzma.LZMAError,
                zstandard.ZstdError,
            ) as exc:
                st.event("archive_corrupt", disp, f"cannot read member: {exc}")
                return
    finally:
        with contextlib.suppress(Exception):  # closing a broken stream must not raise
            tf.close()


class _Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


def _member(
    f: _Readable,
    name: str,
    disp: str,
    size: int,
    depth: int,
    st: _State,
    container: str,
) -> Iterator[Member]:
    lim = st.limits
    head = f.read(8192)
    assert isinstance(head, bytes)
    if container == "zip":
        _charge(st, len(head))
    kind = sniff(head)
    low = name.lower()
    if kind == "binary" and not low.endswith((".pyc", ".pyo")):
        yield Member(
            disp,
            name,
            head[: lim.binary_head],
            size,
            size > lim.binary_head,
            True,
            depth,
            container,
        )
        return
    cap = lim.max_member_bytes
    if kind in ("zip", "gzip", "bz2", "xz", "zstd", "tar"):
        cap = max(cap, lim.max_nested_bytes)  # an inner archive is opened whole when it fits
    rest = f.read(max(0, cap + 1 - len(head)))
    assert isinstance(rest, bytes)
    if container == "zip":
        _charge(st, len(rest))
    data = head + rest
    truncated = len(data) > cap
    data = data[:cap]
    if kind in ("zip", "gzip", "bz2", "xz", "zstd", "tar") and not truncated:
        if depth + 1 > lim.max_depth:
            st.event("archive_too_deep", disp, f"archive nested deeper than {lim.max_depth}")
            yield Member(disp, name, data[: lim.binary_head], size, True, True, depth, container)
            return
        yield Member(disp, name, data[: lim.binary_head], size, True, True, depth, container)
        yield from _walk_blob(data, disp, "", depth + 1, st)
        return
    if truncated:
        st.event(
            "member_truncated", disp, f"member larger than {cap} bytes; only its start was read"
        )
    yield Member(disp, name, data, size, truncated, kind in ("binary",), depth, container)


def _walk_zip(data: bytes, shown: str, depth: int, st: _State, top: bool) -> Iterator[Member]:
    prefix = shown + "!/" if depth > 0 else ""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = zf.infolist()
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        OSError,
        EOFError,
        ValueError,
        KeyError,
        NotImplementedError,
    ) as exc:
        st.event("archive_corrupt", shown, f"not a readable zip: {exc}")
        # a zip with a broken or missing central directory (truncated, tampered): its members
        # are still found by their local headers, in order, as a streaming unzip finds them
        yield from _walk_local_headers(data, prefix, depth, st)
        return
    lim = st.limits
    if len(infos) > lim.max_members:
        st.event("archive_too_many", shown, f"{len(infos)} members (more than {lim.max_members})")
        infos = infos[: lim.max_members]
    # overlapping entries (several members sharing compressed bytes)
    by_off = sorted(infos, key=lambda i: i.header_offset)
    for a, b in itertools.pairwise(by_off):
        if (
            a.header_offset + 30 + len(a.orig_filename.encode("utf-8", "replace")) + a.compress_size
            > b.header_offset
        ):
            st.event(
                "archive_overlap",
                prefix + b.filename,
                f"zip entries {a.filename!r} and {b.filename!r} overlap",
            )
            break
    declared = sum(i.file_size for i in infos)
    packed = sum(i.compress_size for i in infos) or 1
    if declared > lim.max_total_bytes and declared > lim.max_ratio * packed:
        st.event("archive_bomb", shown, f"declares {declared} bytes from {len(data)}")
    names: set[str] = set()
    for info in infos:
        st.members += 1
        if st.members > lim.max_members:
            st.event("archive_too_many", shown, f"more than {lim.max_members} members")
            return
        name = info.filename
        disp = prefix + name
        _check_name(st, info.orig_filename, disp)
        if info.is_dir():
            continue
        norm = posixpath.normpath(name.replace("\\", "/")).lstrip("/")
        if norm in names:
            st.event("archive_duplicate", disp, f"member {name!r} appears more than once")
        names.add(norm)
        mode = info.external_attr >> 16
        if info.flag_bits & 0x1:
            st.event("archive_encrypted", disp, f"member {name!r} is encrypted")
            continue
        if info.file_size > lim.bomb_floor and info.file_size > lim.max_ratio * max(
            info.compress_size, 1
        ):
            st.event(
                "archive_bomb",
                disp,
                f"member declares {info.file_size} bytes from {info.compress_size}",
            )
            continue
        try:
            with zf.open(info) as f:
                if stat.S_ISLNK(mode):
                    target = f.read(4096).decode("utf-8", "replace")
                    if _escapes(name, target):
                        st.event(
                            "archive_link_escape",
                            disp,
                            f"link {name!r} -> {target!r} leaves the archive",
                        )
                    continue
                if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):
                    st.event("archive_special", disp, f"device or FIFO member {name!r}")
                    continue
                yield from _member(f, name, disp, info.file_size, depth, st, "zip")
        except _Budget:
            raise
        except (
            zipfile.BadZipFile,
            OSError,
            EOFError,
            zlib.error,
            lzma.LZMAError,
            NotImplementedError,
            ValueError,
            KeyError,
            RuntimeError,
        ) as exc:
            st.event("archive_corrupt", disp, f"cannot read member: {exc}")


_LOCAL: Final = struct.Struct("<4s5H3L2H")


def _walk_local_headers(data: bytes, prefix: str, depth: int, st: _State) -> Iterator[Member]:
    pos = data.find(b"PK\x03\x04")
    lim = st.limits
    seen = 0
    while pos >= 0 and pos + _LOCAL.size <= len(data) and seen < lim.max_members:
        _sig, _ver, flags, method, _t, _d, _crc, csize, _usize, nlen, xlen = _LOCAL.unpack_from(
            data, pos
        )
        start = pos + _LOCAL.size + nlen + xlen
        name = data[pos + _LOCAL.size : pos + _LOCAL.size + nlen].decode("utf-8", "replace")
        seen += 1
        st.members += 1
        nxt = data.find(b"PK\x03\x04", start) if flags & 0x08 or not csize else start + csize
        end = nxt if nxt > 0 else len(data)
        body = data[start:end]
        if flags & 0x1 or method not in (0, 8) or name.endswith("/"):
            pos = data.find(b"PK\x03\x04", max(start, end)) if nxt > 0 else -1
            continue
        if method == 8:
            dec = zlib.decompressobj(-15)
            try:
                body = dec.decompress(body, lim.max_member_bytes + 1)
            except zlib.error:
                body = b""
        _charge(st, len(body))
        disp = prefix + name
        _check_name(st, name, disp)
        yield from _member(io.BytesIO(body), name, disp, len(body), depth, st, "zip")
        pos = data.find(b"PK\x03\x04", max(start, end)) if nxt > 0 else -1
