"""The rule file: validation with clear errors, and rules added without touching the engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from stockade.core.threats import RULES, RuleError, load_rules, scan_bytes
from stockade.core.threats.rules import SEVERITIES, load_rules_text
from tests.unit.threats.builders import sdist

SHIPPED = Path(__file__).resolve().parents[3] / "src" / "stockade" / "data" / "threat_rules.toml"


def test_shipped_rules_load() -> None:
    rs = load_rules(SHIPPED)
    assert len(rs.rules) == len(RULES.rules) >= 40
    ids = [r.id for r in rs.rules]
    assert len(ids) == len(set(ids))
    for r in rs.rules:
        assert r.severity in SEVERITIES
        assert r.description
    assert rs.call_tags("subprocess.Popen") == frozenset({"shell"})
    assert rs.call_tags("subprocess.Popen.communicate") == frozenset()
    assert "net" in rs.call_tags("requests.Session.post")
    assert rs.call_tags("os.path.join") == frozenset()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[rule]]\nid = 'x'\nseverity = 'huge'\ndescription = 'd'\nwhen = ['exec']", "severity"),
        ("[[rule]]\nid = 'x'\nseverity = 'low'\ndescription = 'd'\nwhen = ['nope']", "unknown tag"),
        ("[[rule]]\nid = 'x'\nseverity = 'low'\ndescription = ''\nwhen = ['exec']", "description"),
        ("[[rule]]\nid = 'Bad Id'\nseverity = 'low'\ndescription = 'd'\nwhen = []", "id"),
        ("[tags.t]\ndescription = 'x'\nstrings = ['(']", "bad regex"),
        ("[tags.t]\ndescription = 'x'", "give calls"),
        ("[tags.t]\ncalls = ['a']\nwat = 1", "unknown key"),
        ("not toml [", "not valid TOML"),
        (
            "[[rule]]\nid = 'x'\nseverity = 'low'\ndescription = 'd'\nwhen = ['pyc_file[zzz]']",
            "unknown label",
        ),
    ],
)
def test_invalid_rule_files(text: str, message: str) -> None:
    with pytest.raises(RuleError, match=message):
        load_rules_text(text)


def test_duplicate_rule_ids() -> None:
    one = "[[rule]]\nid = 'x'\nseverity = 'low'\ndescription = 'd'\nwhen = ['pyc_file']\n"
    with pytest.raises(RuleError, match="duplicate"):
        load_rules_text(one + one)


def test_a_new_rule_needs_only_data(tmp_path: Path) -> None:
    """A tag and a rule added in TOML find something the shipped rules do not look for."""
    extra = """
[tags.miner]
description = "a cryptocurrency miner's pool address"
strings = ['(?i)stratum\\+tcp://']
needles = ["stratum"]

[tags.spawn_miner]
description = "starts xmrig"
calls = ["subprocess.Popen"]

[[rule]]
id = "crypto-miner"
severity = "critical"
description = "Starts a cryptocurrency miner."
when = ["shell[miner]"]
"""
    path = tmp_path / "rules.toml"
    path.write_text(SHIPPED.read_text() + extra)
    custom = load_rules(path)
    data = sdist(
        {
            "demo/__init__.py": (
                "import subprocess\n"
                "subprocess.Popen(['xmrig', '-o', 'stratum+tcp://pool.example.invalid:3333'])\n"
            )
        }
    )
    assert "crypto-miner" not in {f.rule for f in scan_bytes(data, "d.tar.gz").findings}
    rep = scan_bytes(data, "d.tar.gz", rules=custom)
    assert "crypto-miner" in {f.rule for f in rep.findings}
    assert rep.verdict == "malicious"


def test_scoring_thresholds_are_data() -> None:
    text = SHIPPED.read_text().replace("malicious = 15.0", "malicious = 1.0")
    lenient = load_rules_text(text)
    data = sdist({"setup.py": "import os\nos.system('pip install helper-lib')\n"})
    assert scan_bytes(data, "d.tar.gz").verdict == "clean"  # one medium finding
    assert scan_bytes(data, "d.tar.gz", rules=lenient).verdict == "malicious"
