"""conda package names ↔ PyPI project names, so PyPI advisories apply to conda packages.

Most conda packages of Python libraries carry the PyPI name; the shipped table
(``stockade/data/conda_pypi_names.json``) lists those that do not (``pytorch`` → ``torch``) and
conda packages that are not Python projects at all (``openssl``, ``zlib``…), whose same-named
PyPI projects, if any, are unrelated. Admins extend or override the table (stored in the
database, see ``stockade vuln map-conda``). The conda work reuses this module for channels.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache
from importlib import resources

from packaging.utils import canonicalize_name

NOT_PYTHON = None  # mapping value of a conda package that has no PyPI counterpart


@lru_cache(maxsize=1)
def shipped() -> Mapping[str, str | None]:
    """The table shipped with Stockade: conda name → PyPI name, or None (not a Python project)."""
    raw = json.loads(
        resources.files("stockade.data").joinpath("conda_pypi_names.json").read_text("utf-8")
    )
    table: dict[str, str | None] = {
        k.lower(): canonicalize_name(v) for k, v in raw["renamed"].items()
    }
    for name in raw["not_python"]:
        table[name.lower()] = NOT_PYTHON
    return table


class CondaNames:
    """Lookups in the shipped table overlaid with admin overrides."""

    def __init__(self, overrides: Mapping[str, str | None] | None = None) -> None:
        self._table = dict(shipped())
        for conda, pypi in (overrides or {}).items():
            self._table[conda.lower()] = canonicalize_name(pypi) if pypi else NOT_PYTHON

    def pypi_name(self, conda_name: str) -> str | None:
        """The PyPI project a conda package ships, or None when it is not a Python project."""
        key = conda_name.lower()
        if key in self._table:
            return self._table[key]
        return canonicalize_name(key)

    def conda_names(self, pypi_name: str) -> list[str]:
        """conda names known to ship ``pypi_name`` (the identity first)."""
        target: str = canonicalize_name(pypi_name)
        names: list[str] = [target] if self._table.get(target, target) == target else []
        names += sorted(c for c, p in self._table.items() if p == target and c != target)
        return names
