"""The shipped conda ↔ PyPI name table and admin overrides."""

from __future__ import annotations

from stockade.core.vulns.conda_names import CondaNames, shipped


def test_shipped_table_and_identity() -> None:
    names = CondaNames()
    assert names.pypi_name("pytorch") == "torch"
    assert names.pypi_name("PyQt") == "pyqt5"
    assert names.pypi_name("openssl") is None
    assert names.pypi_name("Jinja2") == "jinja2"  # same name: PEP 503 normalized
    assert names.conda_names("torch")[:2] == ["torch", "pytorch"]
    assert all(v is None or v == v.lower() for v in shipped().values())


def test_overrides_win() -> None:
    names = CondaNames({"pytorch": None, "acme": "Acme_Core", "openssl": "pyopenssl"})
    assert names.pypi_name("pytorch") is None
    assert names.pypi_name("acme") == "acme-core"
    assert names.pypi_name("openssl") == "pyopenssl"
