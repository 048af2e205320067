"""Migrations only expand (docs/scaling.md): a new release's `stockade db upgrade` must not
break processes of the previous release still running against the same database."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

VERSIONS = Path(__file__).resolve().parents[2] / "src/stockade/db/migrations/versions"
CONTRACTING = {"drop_table", "drop_column", "alter_column", "rename_table", "drop_constraint"}


@pytest.mark.parametrize("path", sorted(VERSIONS.glob("*.py")), ids=lambda p: p.stem)
def test_upgrade_only_adds(path: Path) -> None:
    tree = ast.parse(path.read_text())
    upgrade = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "upgrade")
    called = {
        node.func.attr
        for node in ast.walk(upgrade)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
    }
    assert not called & CONTRACTING, (
        f"{path.name} contracts the schema ({sorted(called & CONTRACTING)}): ship the expand "
        "step now and the contract step in a later release"
    )
