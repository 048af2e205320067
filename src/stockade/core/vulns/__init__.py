"""Vulnerability advisories: OSV parsing, per-ecosystem version orderings, and matching.

Pure code: no database, no network. See :mod:`.osv` (records), :mod:`.versions` (orderings) and
:mod:`.match` (is a version affected?).
"""

from __future__ import annotations

from stockade.core.vulns.match import CompiledAffected, is_affected
from stockade.core.vulns.osv import (
    Advisory,
    Affected,
    Event,
    OsvError,
    Range,
    Severity,
    iter_records,
    normalize_name,
    parse_osv,
)
from stockade.core.vulns.versions import CONDA, PYPI, VersionScheme, scheme_for

__all__ = [
    "CONDA",
    "PYPI",
    "Advisory",
    "Affected",
    "CompiledAffected",
    "Event",
    "OsvError",
    "Range",
    "Severity",
    "VersionScheme",
    "is_affected",
    "iter_records",
    "normalize_name",
    "parse_osv",
    "scheme_for",
]
