"""Static malware scanner for Python distributions (sdists, wheels, single files).

Pure: bytes in, :class:`Report` out; nothing is extracted, installed, imported, executed or
fetched. See :mod:`stockade.core.threats.scanner` for how a verdict is reached and
``stockade/data/threat_rules.toml`` for the rules.
"""

from stockade.core.threats.archive import ScanLimits
from stockade.core.threats.rules import RuleError, RuleSet, load_rules
from stockade.core.threats.scanner import DEFAULT, RULES, Finding, Report, scan_bytes, scan_path

__all__ = [
    "DEFAULT",
    "RULES",
    "Finding",
    "Report",
    "RuleError",
    "RuleSet",
    "ScanLimits",
    "load_rules",
    "scan_bytes",
    "scan_path",
]
