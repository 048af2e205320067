"""Smoke tests on the machine's real data when it is present (skipped otherwise).

Malware samples are read statically and in memory only: the encrypted zip is opened with its
published password and the inner upload's bytes go straight to ``scan_bytes``.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from stockade.core.threats import scan_bytes

SAMPLES = Path("/work/shared/data/malware-samples/pypi")
WHEELS = Path("/opt/pypi/files")


@pytest.mark.skipif(not WHEELS.is_dir(), reason="no local benign wheels")
def test_small_real_wheels_are_clean() -> None:
    wheels = sorted(WHEELS.glob("*.whl"), key=lambda p: p.stat().st_size)[:25]
    flagged = []
    for p in wheels:
        rep = scan_bytes(p.read_bytes(), p.name)
        if rep.verdict != "clean":
            flagged.append((p.name, [(f.rule, f.path) for f in rep.findings]))
    assert not flagged


@pytest.mark.skipif(not (SAMPLES / "manifest.json").is_file(), reason="no malware samples")
def test_some_real_samples_are_malicious() -> None:
    manifest = json.loads((SAMPLES / "manifest.json").read_text())["samples"]
    picked = sorted(manifest, key=lambda e: e["sha256"])[:20]
    verdicts = []
    for e in picked:
        with zipfile.ZipFile(SAMPLES / e["sample"]) as z:
            raw = z.read(e["member"], pwd=b"infected")
        verdicts.append(scan_bytes(raw, e["member"]).verdict)
    assert verdicts.count("malicious") >= 15, verdicts
