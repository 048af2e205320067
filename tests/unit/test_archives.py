"""Unit tests for static wheel / sdist validation (stockade.core.archives)."""

from __future__ import annotations

import contextlib
import gzip
import io
import random
import re
import struct
import tarfile
import warnings
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from packaging.utils import canonicalize_name

from stockade.core.archives import ArchiveLimits, read_wheel_metadata, validate_distribution
from stockade.errors import PayloadTooLarge, StockadeError, UploadRejected
from stockade.types import DistMeta

# ------------------------------------------------------------------------------------------------
# Archive builders
# ------------------------------------------------------------------------------------------------

WHEEL_FILE = b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"

Entry = tuple[str | zipfile.ZipInfo, bytes]


def metadata(
    name: str = "demo",
    version: str = "1.0",
    *,
    extra: str = "Requires-Python: >=3.9\n",
    body: str = "A long description.\n",
) -> bytes:
    return (
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: A demo package\n"
        f"{extra}\n{body}"
    ).encode()


def wheel_entries(dist_info: str = "demo-1.0.dist-info", meta: bytes | None = None) -> list[Entry]:
    return [
        ("demo/__init__.py", b"VALUE = 1\n"),
        (f"{dist_info}/METADATA", metadata() if meta is None else meta),
        (f"{dist_info}/WHEEL", WHEEL_FILE),
        (f"{dist_info}/RECORD", b""),
    ]


def make_zip(path: Path, entries: Iterable[Entry]) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name, data in entries:
                zf.writestr(name, data)
    return path


def make_wheel(
    tmp_path: Path,
    filename: str = "demo-1.0-py3-none-any.whl",
    entries: Iterable[Entry] | None = None,
) -> Path:
    return make_zip(tmp_path / filename, wheel_entries() if entries is None else entries)


def tar_file(name: str, data: bytes = b"", **attrs: object) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    for key, value in attrs.items():
        setattr(info, key, value)
    return info, data


def tar_dir(name: str) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    return info, b""


def sdist_members(
    top: str = "demo-1.0", meta: bytes | None = None
) -> list[tuple[tarfile.TarInfo, bytes]]:
    return [
        tar_dir(top),
        tar_file(f"{top}/PKG-INFO", metadata() if meta is None else meta),
        tar_file(f"{top}/pyproject.toml", b"[project]\nname = 'demo'\n"),
        tar_dir(f"{top}/demo"),
        tar_file(f"{top}/demo/__init__.py", b"VALUE = 1\n"),
    ]


def make_tar_gz(
    path: Path, members: Iterable[tuple[tarfile.TarInfo, bytes]], *, trailer: bytes = b""
) -> Path:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if info.isreg() else None)
    path.write_bytes(gzip.compress(buffer.getvalue() + trailer, mtime=0))
    return path


def make_sdist(
    tmp_path: Path,
    filename: str = "demo-1.0.tar.gz",
    members: Iterable[tuple[tarfile.TarInfo, bytes]] | None = None,
) -> Path:
    return make_tar_gz(tmp_path / filename, sdist_members() if members is None else members)


def central_directory_offsets(data: bytes, member: str) -> int:
    """Offset of the central directory header for ``member``."""
    pos = data.find(b"PK\x01\x02")
    while pos >= 0:
        (name_len,) = struct.unpack_from("<H", data, pos + 28)
        if data[pos + 46 : pos + 46 + name_len] == member.encode():
            return pos
        pos = data.find(b"PK\x01\x02", pos + 4)
    raise AssertionError(f"{member} not in central directory")


def check(path: Path, filename: str | None = None, **kwargs: Any) -> DistMeta:
    return validate_distribution(path, path.name if filename is None else filename, **kwargs)


# ------------------------------------------------------------------------------------------------
# Valid distributions
# ------------------------------------------------------------------------------------------------


def test_valid_wheel(tmp_path: Path) -> None:
    meta = check(make_wheel(tmp_path))
    assert meta == DistMeta(
        name=canonicalize_name("demo"),
        display_name="demo",
        version="1.0",
        packagetype="bdist_wheel",
        requires_python=">=3.9",
        metadata=metadata(),
        summary="A demo package",
    )


def test_valid_wheel_with_dots_underscores_case_and_prerelease(tmp_path: Path) -> None:
    raw = metadata("Foo.Bar_baz", "1.0.0-rc1", extra="")
    path = make_wheel(
        tmp_path,
        "Foo.Bar_baz-1.0.0rc1-py3-none-any.whl",
        wheel_entries("foo_bar_baz-1.0.0rc1.dist-info", raw),
    )
    meta = check(path, expected_name="FOO_bar.baz", expected_version="1.0.0.rc1")
    assert meta.name == "foo-bar-baz"
    assert meta.display_name == "Foo.Bar_baz"
    assert meta.version == "1.0.0rc1"
    assert meta.packagetype == "bdist_wheel"
    assert meta.requires_python is None
    assert meta.metadata == raw


def test_valid_sdist(tmp_path: Path) -> None:
    meta = check(make_sdist(tmp_path), expected_name="demo", expected_version="1.0")
    assert meta.name == "demo"
    assert meta.version == "1.0"
    assert meta.packagetype == "sdist"
    assert meta.requires_python == ">=3.9"
    assert meta.summary == "A demo package"
    assert meta.metadata == metadata()


def test_valid_sdist_with_dots_underscores_case_and_prerelease(tmp_path: Path) -> None:
    top = "Foo.Bar_baz-1.0.0rc1"
    raw = metadata("foo-bar-baz", "1.0.0-rc1")
    path = make_sdist(tmp_path, "foo_bar_baz-1.0.0rc1.tar.gz", sdist_members(top, raw))
    meta = check(path, expected_name="foo.bar.baz", expected_version="1.0.0-rc1")
    assert (meta.name, meta.display_name, meta.version) == (
        "foo-bar-baz",
        "foo-bar-baz",
        "1.0.0rc1",
    )


def test_sdist_without_directory_entries(tmp_path: Path) -> None:
    members = [m for m in sdist_members() if not m[0].isdir()]
    assert check(make_sdist(tmp_path, members=members)).name == "demo"


def test_read_wheel_metadata(tmp_path: Path) -> None:
    path = make_wheel(tmp_path)
    assert read_wheel_metadata(path, path.name) == metadata()
    with pytest.raises(PayloadTooLarge):
        read_wheel_metadata(path, path.name, max_size=10)
    with pytest.raises(UploadRejected, match="not a wheel"):
        read_wheel_metadata(make_sdist(tmp_path), "demo-1.0.tar.gz")


# ------------------------------------------------------------------------------------------------
# Filenames
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "filename",
    [
        "demo-1.0.zip",
        "demo-1.0.egg",
        "demo-1.0.tgz",
        "demo-1.0.tar.bz2",
        "demo-1.0-py3-none-any.WHL",
    ],
)
def test_wrong_extension(tmp_path: Path, filename: str) -> None:
    path = make_wheel(tmp_path)
    with pytest.raises(UploadRejected, match=r"only wheels \(\.whl\) and .*\(\.tar\.gz\)") as info:
        check(path, filename)
    assert info.value.hint


@pytest.mark.parametrize(
    ("filename", "pattern"),
    [
        ("demo.whl", "invalid wheel filename"),
        ("demo-1.0.whl", "invalid wheel filename"),
        ("demo-notaversion-py3-none-any.whl", "invalid wheel filename"),
        ("de mo-1.0-py3-none-any.whl", "invalid wheel filename"),
        ("demo.tar.gz", "invalid sdist filename"),
        ("demo-notaversion.tar.gz", "invalid sdist filename"),
        ("-1.0.tar.gz", "invalid sdist filename"),
        ("de mo-1.0.tar.gz", "not a valid project name"),
        ("../demo-1.0.tar.gz", "invalid filename"),
        ("dir/demo-1.0.tar.gz", "invalid filename"),
        ("dir\\demo-1.0.tar.gz", "invalid filename"),
        ("demo\x00-1.0.tar.gz", "invalid filename"),
        (".demo-1.0.tar.gz", "invalid filename"),
        ("", "invalid filename"),
        ("a" * 300 + "-1.0.tar.gz", "longer than"),
    ],
)
def test_bad_filename(tmp_path: Path, filename: str, pattern: str) -> None:
    path = make_sdist(tmp_path)
    with pytest.raises(UploadRejected, match=pattern) as info:
        check(path, filename)
    assert info.value.hint


def test_filename_that_does_not_match_contents(tmp_path: Path) -> None:
    path = make_wheel(tmp_path)
    with pytest.raises(UploadRejected, match=re.escape("metadata directory 'demo-1.0.dist-info'")):
        check(path, "other-1.0-py3-none-any.whl")
    with pytest.raises(UploadRejected, match="metadata directory"):
        check(path, "demo-2.0-py3-none-any.whl")
    sdist = make_sdist(tmp_path)
    with pytest.raises(UploadRejected, match="not inside a top-level directory named"):
        check(sdist, "demo-2.0.tar.gz")


def test_missing_file_is_a_server_error(tmp_path: Path) -> None:
    with pytest.raises(StockadeError, match="could not open") as info:
        check(tmp_path / "nope.whl", "demo-1.0-py3-none-any.whl")
    assert not isinstance(info.value, UploadRejected)


# ------------------------------------------------------------------------------------------------
# Corrupt archives
# ------------------------------------------------------------------------------------------------


def test_corrupt_zip(tmp_path: Path) -> None:
    path = tmp_path / "demo-1.0-py3-none-any.whl"
    path.write_bytes(b"PK\x03\x04 this is not really a zip file" * 10)
    with pytest.raises(UploadRejected, match="not a valid zip archive"):
        check(path)


def test_truncated_zip(tmp_path: Path) -> None:
    path = make_wheel(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UploadRejected, match="not a valid zip archive"):
        check(path)


def test_zip_with_corrupted_metadata_bytes(tmp_path: Path) -> None:
    path = make_wheel(tmp_path, entries=wheel_entries(meta=metadata(body="x" * 5000)))
    data = bytearray(path.read_bytes())
    offset = data.find(b"demo-1.0.dist-info/METADATA") + len("demo-1.0.dist-info/METADATA")
    for i in range(offset + 10, offset + 40):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(UploadRejected, match="METADATA' could not be decompressed"):
        check(path)


def test_truncated_tar_gz(tmp_path: Path) -> None:
    path = make_sdist(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UploadRejected, match="not a valid gzip-compressed tar archive"):
        check(path)


def test_tar_gz_missing_only_its_gzip_trailer(tmp_path: Path) -> None:
    path = make_sdist(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[:-8])  # CRC32 + ISIZE
    with pytest.raises(UploadRejected, match="not a valid gzip-compressed tar archive"):
        check(path)


def test_not_gzip(tmp_path: Path) -> None:
    path = tmp_path / "demo-1.0.tar.gz"
    path.write_bytes(make_wheel(tmp_path).read_bytes())
    with pytest.raises(UploadRejected, match="not a valid gzip-compressed tar archive"):
        check(path)


def test_gzip_but_not_tar(tmp_path: Path) -> None:
    path = tmp_path / "demo-1.0.tar.gz"
    path.write_bytes(gzip.compress(b"just some text, not a tar archive\n" * 100))
    with pytest.raises(UploadRejected, match="not a valid gzip-compressed tar archive"):
        check(path)


def test_data_hidden_after_tar_end(tmp_path: Path) -> None:
    path = make_tar_gz(
        tmp_path / "demo-1.0.tar.gz", sdist_members(), trailer=b"\x00" * 512 + b"hidden" * 100
    )
    with pytest.raises(UploadRejected, match="unexpected data after the end of the tar archive"):
        check(path)


def test_corrupt_tar_header_mid_archive(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info, data in sdist_members():
            tf.addfile(info, io.BytesIO(data) if info.isreg() else None)
    raw = bytearray(buffer.getvalue())
    last = raw.rfind(b"demo-1.0/demo/__init__.py")
    raw[last + 148 : last + 156] = b"0000000\x00"  # break the header checksum
    path = tmp_path / "demo-1.0.tar.gz"
    path.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(UploadRejected, match="corrupt tar header"):
        check(path)


# ------------------------------------------------------------------------------------------------
# Hostile wheel members
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("member", "pattern"),
    [
        ("../evil.py", r"'\.\.' path component"),
        ("demo/../../evil.py", r"'\.\.' path component"),
        ("/etc/evil.py", "absolute path"),
        ("C:/evil.py", "drive letter"),
        ("demo\\..\\evil.py", "backslash"),
        ("\\\\server\\share\\evil.py", "backslash"),
        ("demo//evil.py", "not a normalized path"),
        ("./evil.py", "not a normalized path"),
        ("demo/\x01evil.py", "control character"),
    ],
)
def test_wheel_hostile_member_names(tmp_path: Path, member: str, pattern: str) -> None:
    path = make_wheel(tmp_path, entries=[*wheel_entries(), (member, b"x")])
    with pytest.raises(UploadRejected, match=pattern) as info:
        check(path)
    assert repr(member) in info.value.message
    assert "python -m build" in (info.value.hint or "")


def test_wheel_member_with_nul_byte(tmp_path: Path) -> None:
    path = make_wheel(tmp_path, entries=[*wheel_entries(), ("demo/aXb.py", b"x")])
    path.write_bytes(path.read_bytes().replace(b"demo/aXb.py", b"demo/a\x00b.py"))
    with pytest.raises(UploadRejected, match="NUL byte"):
        check(path)


def test_wheel_symlink_member(tmp_path: Path) -> None:
    link = zipfile.ZipInfo("demo/link.py")
    link.external_attr = (0o120777 << 16) | 0
    path = make_wheel(tmp_path, entries=[*wheel_entries(), (link, b"/etc/passwd")])
    with pytest.raises(UploadRejected, match=re.escape("'demo/link.py' is a symbolic link")):
        check(path)


def test_wheel_special_file_member(tmp_path: Path) -> None:
    fifo = zipfile.ZipInfo("demo/fifo")
    fifo.external_attr = 0o010644 << 16
    path = make_wheel(tmp_path, entries=[*wheel_entries(), (fifo, b"")])
    with pytest.raises(UploadRejected, match="special file"):
        check(path)


def test_wheel_duplicate_member_names(tmp_path: Path) -> None:
    entries = [*wheel_entries(), ("demo/__init__.py", b"import os; os.system('evil')\n")]
    with pytest.raises(
        UploadRejected, match=re.escape("'demo/__init__.py' appears more than once")
    ):
        check(make_wheel(tmp_path, entries=entries))


def test_wheel_duplicate_metadata(tmp_path: Path) -> None:
    entries = [*wheel_entries(), ("demo-1.0.dist-info/METADATA", metadata("evil"))]
    with pytest.raises(UploadRejected, match="METADATA' appears more than once"):
        check(make_wheel(tmp_path, entries=entries))


def test_wheel_local_header_disagrees_with_central_directory(tmp_path: Path) -> None:
    path = make_wheel(tmp_path)
    data = bytearray(path.read_bytes())
    local = data.find(b"PK\x03\x04")
    data[local + 30 : local + 34] = b"evil"  # "demo/__init__.py" -> "evil/__init__.py"
    path.write_bytes(bytes(data))
    with pytest.raises(UploadRejected, match="local file header"):
        check(path)


def test_wheel_overlapping_members(tmp_path: Path) -> None:
    entries = [("a.py", b"A" * 100), *wheel_entries()]
    path = make_wheel(tmp_path, entries=entries)
    data = bytearray(path.read_bytes())
    cd = central_directory_offsets(bytes(data), "a.py")
    (compressed,) = struct.unpack_from("<L", data, cd + 20)
    struct.pack_into("<L", data, cd + 20, compressed + 200)  # data now runs into the next member
    path.write_bytes(bytes(data))
    with pytest.raises(UploadRejected, match=re.escape("'a.py' overlaps member")):
        check(path)


def test_wheel_encrypted_member(tmp_path: Path) -> None:
    path = make_wheel(tmp_path)
    data = bytearray(path.read_bytes())
    cd = central_directory_offsets(bytes(data), "demo/__init__.py")
    (flags,) = struct.unpack_from("<H", data, cd + 8)
    struct.pack_into("<H", data, cd + 8, flags | 1)
    path.write_bytes(bytes(data))
    with pytest.raises(UploadRejected, match="encrypted"):
        check(path)


# ------------------------------------------------------------------------------------------------
# Wheel metadata
# ------------------------------------------------------------------------------------------------


def test_wheel_missing_metadata(tmp_path: Path) -> None:
    entries = [e for e in wheel_entries() if not str(e[0]).endswith("METADATA")]
    with pytest.raises(UploadRejected, match=r"no demo-1\.0\.dist-info/METADATA"):
        check(make_wheel(tmp_path, entries=entries))


def test_wheel_missing_dist_info(tmp_path: Path) -> None:
    with pytest.raises(UploadRejected, match=r"no top-level \.dist-info directory"):
        check(make_wheel(tmp_path, entries=[("demo/__init__.py", b"")]))


def test_wheel_missing_wheel_file(tmp_path: Path) -> None:
    entries = [e for e in wheel_entries() if not str(e[0]).endswith("/WHEEL")]
    with pytest.raises(UploadRejected, match=re.escape("no demo-1.0.dist-info/WHEEL")):
        check(make_wheel(tmp_path, entries=entries))


def test_wheel_unsupported_wheel_version(tmp_path: Path) -> None:
    entries = [
        (n, b"Wheel-Version: 2.0\n" if str(n).endswith("/WHEEL") else d) for n, d in wheel_entries()
    ]
    with pytest.raises(UploadRejected, match=re.escape("Wheel-Version '2.0'")):
        check(make_wheel(tmp_path, entries=entries))


def test_wheel_two_dist_info_directories(tmp_path: Path) -> None:
    entries = [*wheel_entries(), *wheel_entries("evil-1.0.dist-info")[1:]]
    with pytest.raises(UploadRejected, match=r"2 top-level \.dist-info directories"):
        check(make_wheel(tmp_path, entries=entries))


def test_wheel_nested_dist_info_is_ignored(tmp_path: Path) -> None:
    entries = [*wheel_entries(), ("demo/_vendor/other-2.0.dist-info/METADATA", metadata("other"))]
    assert check(make_wheel(tmp_path, entries=entries)).name == "demo"


def test_metadata_name_mismatch(tmp_path: Path) -> None:
    path = make_wheel(tmp_path, entries=wheel_entries(meta=metadata("other")))
    with pytest.raises(UploadRejected, match="declares Name 'other'") as info:
        check(path)
    assert "METADATA" in info.value.message


def test_metadata_version_mismatch(tmp_path: Path) -> None:
    path = make_wheel(tmp_path, entries=wheel_entries(meta=metadata(version="1.0.1")))
    with pytest.raises(UploadRejected, match=re.escape("declares Version '1.0.1'")):
        check(path)


def test_metadata_trailing_zero_versions_are_distinct(tmp_path: Path) -> None:
    path = make_wheel(tmp_path, entries=wheel_entries(meta=metadata(version="1.0.0")))
    with pytest.raises(UploadRejected, match=re.escape("declares Version '1.0.0'")):
        check(path)


@pytest.mark.parametrize(
    ("meta", "pattern"),
    [
        (b"Metadata-Version: 2.1\nVersion: 1.0\n", "no Name field"),
        (b"Metadata-Version: 2.1\nName: demo\n", "no Version field"),
        (b"Name: demo\nName: evil\nVersion: 1.0\n", "2 Name fields"),
        (b"Name: demo\nVersion: 1.0\nVersion: 2.0\n", "2 Version fields"),
        (b"Name: demo\nVersion: one\n", "not a valid PEP 440 version"),
        (b"Name: demo!\nVersion: 1.0\n", "not a valid project name"),
        (b"Name: demo\nVersion: 1.0\nRequires-Python: >=>3\n", "not a valid version specifier"),
        (b"Name: d\xe9mo\nVersion: 1.0\n", "not valid UTF-8"),
        (b"\x00\x01\x02garbage", "no Name field"),
    ],
)
def test_bad_metadata(tmp_path: Path, meta: bytes, pattern: str) -> None:
    with pytest.raises(UploadRejected, match=pattern):
        check(make_wheel(tmp_path, entries=wheel_entries(meta=meta)))


def test_form_field_mismatch(tmp_path: Path) -> None:
    path = make_wheel(tmp_path)
    with pytest.raises(
        UploadRejected, match="form field name 'other' does not match the file's metadata name"
    ):
        check(path, expected_name="other")
    with pytest.raises(UploadRejected, match=re.escape("form field version '2.0' does not match")):
        check(path, expected_version="2.0")
    with pytest.raises(UploadRejected, match="form field version 'latest' is not a valid"):
        check(path, expected_version="latest")
    assert check(path, expected_name="DEMO", expected_version="v1.0").name == "demo"


def test_oversize_metadata(tmp_path: Path) -> None:
    path = make_wheel(tmp_path, entries=wheel_entries(meta=metadata(body="x" * 5000)))
    with pytest.raises(PayloadTooLarge, match="METADATA") as info:
        check(path, limits=ArchiveLimits(max_metadata_size=1000))
    assert info.value.hint


def test_oversize_metadata_with_lying_declared_size(tmp_path: Path) -> None:
    path = make_wheel(tmp_path, entries=wheel_entries(meta=metadata(body="x" * 5000)))
    data = bytearray(path.read_bytes())
    cd = central_directory_offsets(bytes(data), "demo-1.0.dist-info/METADATA")
    struct.pack_into("<L", data, cd + 24, 100)  # claim 100 bytes uncompressed
    path.write_bytes(bytes(data))
    # Either the read stops at the declared size (CRC failure) or the cap triggers: never more.
    with pytest.raises((UploadRejected, PayloadTooLarge)):
        check(path, limits=ArchiveLimits(max_metadata_size=1000))


# ------------------------------------------------------------------------------------------------
# Wheel limits and bombs
# ------------------------------------------------------------------------------------------------


def test_too_many_members_wheel(tmp_path: Path) -> None:
    entries = [*wheel_entries(), *((f"demo/m{i}.py", b"") for i in range(20))]
    path = make_wheel(tmp_path, entries=entries)
    with pytest.raises(PayloadTooLarge, match="more than 10 members"):
        check(path, limits=ArchiveLimits(max_members=10))


def test_too_many_members_wheel_with_lying_end_record(tmp_path: Path) -> None:
    entries = [*wheel_entries(), *((f"demo/m{i}.py", b"") for i in range(20))]
    path = make_wheel(tmp_path, entries=entries)
    data = bytearray(path.read_bytes())
    eocd = data.rfind(b"PK\x05\x06")
    struct.pack_into("<HH", data, eocd + 8, 1, 1)  # claim one entry
    path.write_bytes(bytes(data))
    with pytest.raises(PayloadTooLarge, match="more than 10 members"):
        check(path, limits=ArchiveLimits(max_members=10))


def test_zip_bomb_by_declared_size(tmp_path: Path) -> None:
    path = make_wheel(tmp_path, entries=[*wheel_entries(), ("demo/data.bin", b"\x00" * 1000)])
    data = bytearray(path.read_bytes())
    cd = central_directory_offsets(bytes(data), "demo/data.bin")
    struct.pack_into("<L", data, cd + 24, 0xFFFF_FFF0)  # declare ~4 GiB uncompressed
    path.write_bytes(bytes(data))
    with pytest.raises(PayloadTooLarge, match=re.escape("'demo/data.bin' is 4.0 GiB uncompressed")):
        check(path)


def test_zip_total_size_limit(tmp_path: Path) -> None:
    entries = [*wheel_entries(), *((f"demo/d{i}.bin", bytes(4000)) for i in range(5))]
    path = make_wheel(tmp_path, entries=entries)
    limits = ArchiveLimits(max_total_uncompressed=10_000, max_member_size=5000)
    with pytest.raises(PayloadTooLarge, match="add up to more than"):
        check(path, limits=limits)
    with pytest.raises(PayloadTooLarge, match="limit per member"):
        check(path, limits=ArchiveLimits(max_member_size=3000))


@pytest.fixture(scope="module")
def zero_bomb_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bomb") / "demo-1.0-py3-none-any.whl"
    make_zip(path, wheel_entries())
    chunk = bytes(1024 * 1024)
    with (
        zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as zf,
        zf.open("demo/zeros.bin", "w", force_zip64=True) as member,
    ):
        for _ in range(50):
            member.write(chunk)
    return path


def test_zip_bomb_by_ratio(zero_bomb_wheel: Path) -> None:
    with pytest.raises(PayloadTooLarge, match=r"'demo/zeros\.bin' expands .*possible zip bomb"):
        check(zero_bomb_wheel)
    with pytest.raises(PayloadTooLarge, match="limit per member"):
        check(zero_bomb_wheel, limits=ArchiveLimits(max_member_size=10 * 1024**2))
    # With the ratio check relaxed the file is accepted without decompressing the bomb.
    assert check(zero_bomb_wheel, limits=ArchiveLimits(max_ratio=1e9)).name == "demo"


def test_unsupported_compression_method(tmp_path: Path) -> None:
    path = make_wheel(tmp_path)
    data = bytearray(path.read_bytes())
    cd = central_directory_offsets(bytes(data), "demo/__init__.py")
    struct.pack_into("<H", data, cd + 10, 99)  # AES / unknown
    path.write_bytes(bytes(data))
    with pytest.raises(UploadRejected, match="compression method 99"):
        check(path)


# ------------------------------------------------------------------------------------------------
# Hostile sdist members
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("member", "pattern"),
    [
        ("demo-1.0/../evil.py", r"'\.\.' path component"),
        ("../evil.py", r"'\.\.' path component"),
        ("/etc/evil.py", "absolute path"),
        ("demo-1.0\\evil.py", "backslash"),
        ("demo-1.0/\x1bevil.py", "control character"),
    ],
)
def test_sdist_hostile_member_names(tmp_path: Path, member: str, pattern: str) -> None:
    path = make_sdist(tmp_path, members=[*sdist_members(), tar_file(member, b"x")])
    with pytest.raises(UploadRejected, match=pattern) as info:
        check(path)
    assert "python -m build" in (info.value.hint or "")


def test_sdist_member_outside_top_dir(tmp_path: Path) -> None:
    path = make_sdist(tmp_path, members=[*sdist_members(), tar_file("other/evil.py", b"x")])
    with pytest.raises(
        UploadRejected, match=re.escape("'other/evil.py' is outside the top-level directory")
    ):
        check(path)


def test_sdist_top_dir_must_match_filename(tmp_path: Path) -> None:
    path = make_sdist(tmp_path, members=sdist_members("evil-1.0"))
    with pytest.raises(UploadRejected, match="not inside a top-level directory named after"):
        check(path)


def test_sdist_file_at_top_level(tmp_path: Path) -> None:
    path = make_sdist(tmp_path, members=[tar_file("demo-1.0", b"x"), *sdist_members()])
    with pytest.raises(UploadRejected, match="must be the top-level directory"):
        check(path)


@pytest.mark.parametrize(
    ("kind", "word"), [(tarfile.SYMTYPE, "symbolic"), (tarfile.LNKTYPE, "hard")]
)
def test_sdist_links(tmp_path: Path, kind: bytes, word: str) -> None:
    link = tar_file("demo-1.0/link", type=kind, linkname="/etc/passwd")
    path = make_sdist(tmp_path, members=[*sdist_members(), link])
    with pytest.raises(UploadRejected, match=f"is a {word} link.*links are not allowed in sdists"):
        check(path)


@pytest.mark.parametrize("kind", [tarfile.FIFOTYPE, tarfile.CHRTYPE, tarfile.BLKTYPE])
def test_sdist_device_and_fifo(tmp_path: Path, kind: bytes) -> None:
    path = make_sdist(tmp_path, members=[*sdist_members(), tar_file("demo-1.0/dev", type=kind)])
    with pytest.raises(UploadRejected, match="device or FIFO"):
        check(path)


def test_sdist_duplicate_member_names(tmp_path: Path) -> None:
    path = make_sdist(tmp_path, members=[*sdist_members(), tar_file("demo-1.0/PKG-INFO", b"x")])
    with pytest.raises(
        UploadRejected, match=re.escape("'demo-1.0/PKG-INFO' appears more than once")
    ):
        check(path)


def test_sdist_missing_pkg_info(tmp_path: Path) -> None:
    members = [m for m in sdist_members() if not m[0].name.endswith("PKG-INFO")]
    with pytest.raises(UploadRejected, match=r"no demo-1\.0/PKG-INFO"):
        check(make_sdist(tmp_path, members=members))


def test_sdist_pkg_info_mismatch(tmp_path: Path) -> None:
    path = make_sdist(tmp_path, members=sdist_members(meta=metadata("other")))
    with pytest.raises(UploadRejected, match="PKG-INFO declares Name 'other'"):
        check(path)
    path = make_sdist(tmp_path, members=sdist_members(meta=metadata(version="2.0")))
    with pytest.raises(UploadRejected, match=re.escape("PKG-INFO declares Version '2.0'")):
        check(path)


def test_sdist_form_field_mismatch(tmp_path: Path) -> None:
    with pytest.raises(UploadRejected, match="form field name 'other'"):
        check(make_sdist(tmp_path), expected_name="other")


def test_sdist_oversize_pkg_info(tmp_path: Path) -> None:
    path = make_sdist(tmp_path, members=sdist_members(meta=metadata(body="x" * 5000)))
    with pytest.raises(PayloadTooLarge, match="PKG-INFO"):
        check(path, limits=ArchiveLimits(max_metadata_size=1000))


def test_sdist_too_many_members(tmp_path: Path) -> None:
    members = [*sdist_members(), *(tar_file(f"demo-1.0/m{i}.py") for i in range(20))]
    with pytest.raises(PayloadTooLarge, match="more than 10 members"):
        check(make_sdist(tmp_path, members=members), limits=ArchiveLimits(max_members=10))


def test_sdist_declared_size_limits(tmp_path: Path) -> None:
    members = [*sdist_members(), *(tar_file(f"demo-1.0/d{i}", bytes(4000)) for i in range(5))]
    path = make_sdist(tmp_path, members=members)
    with pytest.raises(PayloadTooLarge, match="limit per member"):
        check(path, limits=ArchiveLimits(max_member_size=3000))
    with pytest.raises(PayloadTooLarge, match="add up to more than"):
        check(path, limits=ArchiveLimits(max_total_uncompressed=10_000))


def test_sdist_gzip_bomb_by_ratio(tmp_path: Path) -> None:
    members = [*sdist_members(), tar_file("demo-1.0/zeros.bin", bytes(5 * 1024 * 1024))]
    path = make_sdist(tmp_path, members=members)
    with pytest.raises(PayloadTooLarge, match="possible gzip bomb"):
        check(path, limits=ArchiveLimits(max_ratio=200.0))
    assert check(path, limits=ArchiveLimits(max_ratio=1e9)).name == "demo"


def test_sdist_huge_pax_header(tmp_path: Path) -> None:
    info, data = tar_file("demo-1.0/big", b"x")
    info.pax_headers = {"comment": "1" * 40_000}
    path = make_sdist(tmp_path, members=[*sdist_members(), (info, data)])
    with pytest.raises(PayloadTooLarge, match="extended header"):
        check(path)


def test_sdist_pax_header_with_long_digit_run(tmp_path: Path) -> None:
    info, data = tar_file("demo-1.0/slow", b"x")
    info.pax_headers = {"comment": "1" * 5000}
    path = make_sdist(tmp_path, members=[*sdist_members(), (info, data)])
    with pytest.raises(
        UploadRejected, match="pax extended header at offset 4096 of the tar stream is malformed"
    ):
        check(path)


def test_sdist_pax_long_name_is_fine(tmp_path: Path) -> None:
    long_name = "demo-1.0/" + "/".join(["d" * 100] * 5) + "/é.py"
    path = make_sdist(tmp_path, members=[*sdist_members(), tar_file(long_name, b"x")])
    assert check(path).name == "demo"


@pytest.mark.parametrize(
    ("extra", "where"),
    [({}, "the member at offset 4096"), ({"path": "demo-1.0/sparse"}, "member 'demo-1.0/sparse'")],
)
def test_sdist_sparse_member(tmp_path: Path, extra: dict[str, str], where: str) -> None:
    info, data = tar_file("demo-1.0/sparse", b"x")
    info.pax_headers = {"GNU.sparse.size": "1000", "GNU.sparse.numblocks": "0", **extra}
    path = make_sdist(tmp_path, members=[*sdist_members(), (info, data)])
    with pytest.raises(UploadRejected, match=re.escape(where) + ".* is a sparse file"):
        check(path)


# ------------------------------------------------------------------------------------------------
# Fuzzing: only StockadeError subclasses, whatever the bytes
# ------------------------------------------------------------------------------------------------


def _only_stockade_errors(path: Path, filename: str) -> None:
    with contextlib.suppress(StockadeError):
        validate_distribution(path, filename, limits=ArchiveLimits(max_metadata_size=64 * 1024))


def test_random_garbage(tmp_path: Path) -> None:
    rng = random.Random(20240611)
    path = tmp_path / "upload"
    prefixes = [b"", b"PK\x03\x04", b"PK\x05\x06", b"\x1f\x8b\x08\x00", b"\x1f\x8b"]
    for i in range(200):
        body = rng.randbytes(rng.randrange(0, 4096))
        path.write_bytes(rng.choice(prefixes) + body)
        _only_stockade_errors(path, "demo-1.0-py3-none-any.whl" if i % 2 else "demo-1.0.tar.gz")


@pytest.mark.parametrize("kind", ["wheel", "sdist"])
def test_random_truncations_and_bit_flips(tmp_path: Path, kind: str) -> None:
    rng = random.Random(kind)
    if kind == "wheel":
        source = make_wheel(tmp_path)
        filename = source.name
    else:
        source = make_sdist(tmp_path)
        filename = source.name
    original = source.read_bytes()
    path = tmp_path / "mutated"
    for _ in range(150):
        data = bytearray(original[: rng.randrange(0, len(original) + 1)])
        path.write_bytes(bytes(data))
        _only_stockade_errors(path, filename)
    for _ in range(150):
        data = bytearray(original)
        for _ in range(rng.randrange(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        path.write_bytes(bytes(data))
        _only_stockade_errors(path, filename)


def test_random_hostile_tar_streams(tmp_path: Path) -> None:
    """Random (well-checksummed) tar headers inside valid gzip: exercises tarfile's parsers."""
    rng = random.Random(7)
    path = tmp_path / "demo-1.0.tar.gz"
    types = [b"0", b"1", b"2", b"3", b"4", b"5", b"6", b"7", b"L", b"K", b"S", b"x", b"g", b"X"]
    for _ in range(150):
        blocks = []
        for _ in range(rng.randrange(1, 6)):
            header = bytearray(rng.randbytes(512))
            header[156:157] = rng.choice(types)
            size = rng.choice([0, 1, 100, 511, 512, 4096, 10**9])
            header[124:136] = b"%011o\x00" % min(size, 8**11 - 1)
            header[257:263] = b"ustar\x00"
            header[148:156] = b"        "
            header[148:156] = b"%06o\x00 " % sum(header)
            blocks.append(bytes(header) + rng.randbytes(rng.choice([0, 512, 1024])))
        path.write_bytes(gzip.compress(b"".join(blocks) + bytes(1024)))
        _only_stockade_errors(path, path.name)
