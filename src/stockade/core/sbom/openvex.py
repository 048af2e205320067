"""OpenVEX 0.2.0 documents (https://openvex.dev/ns/v0.2.0): one statement per advisory and
product, carrying the curated status and justification. OpenVEX has no official Python library;
the document is a small, fixed JSON shape, written with sorted keys so equal inputs give equal
bytes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

from stockade import __version__

__all__ = ["CONTEXT", "Statement", "to_openvex"]

CONTEXT: Final = "https://openvex.dev/ns/v0.2.0"
STATUSES: Final = ("not_affected", "affected", "fixed", "under_investigation")


@dataclass(frozen=True, slots=True)
class Statement:
    vulnerability: str  # advisory id
    aliases: tuple[str, ...]
    products: tuple[str, ...]  # purls
    status: str  # one of STATUSES
    justification: str | None = None
    impact: str | None = None  # why not_affected, in words (the curation's reason)
    action: str | None = None  # what to do when affected
    timestamp: str | None = None  # ISO time of the decision
    author: str | None = None


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _statement(s: Statement) -> dict[str, Any]:
    out: dict[str, Any] = {
        "vulnerability": {
            "@id": f"https://osv.dev/vulnerability/{s.vulnerability}",
            "name": s.vulnerability,
            **({"aliases": list(s.aliases)} if s.aliases else {}),
        },
        "products": [{"@id": p} for p in s.products],
        "status": s.status,
    }
    if s.status == "not_affected":
        if s.justification:
            out["justification"] = s.justification
        if s.impact or not s.justification:
            out["impact_statement"] = s.impact or "not affected, per the curated database"
    if s.status == "affected":
        out["action_statement"] = s.action or "no fixed version known; review the advisory"
    if s.timestamp:
        out["timestamp"] = s.timestamp
    if s.author:
        out["status_notes"] = f"decided by {s.author}"
    return out


def to_openvex(
    statements: Iterable[Statement],
    *,
    doc_id: str,
    author: str,
    created: dt.datetime,
    version: int = 1,
) -> str:
    ordered: Sequence[Statement] = sorted(
        (s for s in statements if s.status in STATUSES and s.products),
        key=lambda s: (s.vulnerability, s.products, s.status),
    )
    doc = {
        "@context": CONTEXT,
        "@id": doc_id,
        "author": author,
        "role": "Document Creator",
        "timestamp": _iso(created),
        "version": version,
        "tooling": f"stockade {__version__}",
        "statements": [_statement(s) for s in ordered],
    }
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode() + "\n"


def statements_from(bom: Any) -> list[Statement]:
    """One statement per finding of a :class:`~stockade.core.sbom.model.Bom`."""
    purls = {c.ref: c.purl for c in bom.components}
    out = []
    for v in bom.vulns:
        if v.ref not in purls:
            continue
        fix = ", ".join(v.fixed_versions)
        out.append(
            Statement(
                vulnerability=v.id,
                aliases=v.aliases,
                products=(purls[v.ref],),
                status=v.status,
                justification=v.justification if v.status == "not_affected" else None,
                impact=v.detail if v.status == "not_affected" else None,
                action=f"upgrade to {fix}" if fix else None,
                timestamp=v.decided_at,
                author=v.author,
            )
        )
    return out
