"""Read the packages of anyone's SBOM: SPDX 2.x JSON or tag-value, CycloneDX JSON.

A package is identified by its purl (``pkg:pypi/…``, ``pkg:conda/…``); SPDX packages without
one are taken as PyPI packages only when the document says nothing else, and are reported."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

import orjson
from packageurl import PackageURL

from stockade.errors import InvalidRequest

__all__ = ["SbomPackages", "read_sbom"]

_ECOSYSTEMS: Final = {"pypi": "PyPI", "conda": "conda"}
_HINT: Final = "give an SPDX 2.x (JSON or tag-value) or CycloneDX JSON document"


@dataclass(frozen=True, slots=True)
class SbomPackages:
    format: str  # "spdx" | "cyclonedx"
    pins: tuple[tuple[str, str, str], ...]  # (ecosystem, name, version), sorted, unique
    skipped: tuple[str, ...]  # packages not scanned, and why


def _from_purl(text: str) -> tuple[str, str, str] | str:
    try:
        purl = PackageURL.from_string(text)
    except ValueError as exc:
        return f"{text}: not a purl ({exc})"
    eco = _ECOSYSTEMS.get(purl.type)
    if eco is None:
        return f"{text}: {purl.type} packages are not in the vulnerability database"
    if not purl.version:
        return f"{text}: no version"
    return eco, purl.name, purl.version


def _cdx_components(items: Any) -> Iterator[dict[str, Any]]:
    for item in items if isinstance(items, list) else ():
        if isinstance(item, dict):
            yield item
            yield from _cdx_components(item.get("components"))


def _tagvalue_packages(text: str) -> list[dict[str, Any]]:
    packages: list[dict[str, Any]] = []
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "PackageName":
            packages.append({"name": value, "externalRefs": []})
        elif packages and key == "PackageVersion":
            packages[-1]["versionInfo"] = value
        elif packages and key == "ExternalRef":
            parts = value.split()
            if len(parts) >= 3:
                packages[-1]["externalRefs"].append(
                    {"referenceType": parts[1], "referenceLocator": parts[2]}
                )
    return packages


def read_sbom(data: bytes, label: str) -> SbomPackages:
    """The (ecosystem, name, version) of every package an SBOM lists."""
    text = data.decode("utf-8", "replace").lstrip("\ufeff")
    doc: Any
    if text.lstrip().startswith(("SPDXVersion:", "#")) and "SPDXVersion:" in text:
        fmt, items = "spdx", _tagvalue_packages(text)
    else:
        try:
            doc = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise InvalidRequest(f"{label}: not JSON ({exc})", _HINT) from None
        if not isinstance(doc, dict):
            raise InvalidRequest(f"{label}: not an SBOM (a JSON {type(doc).__name__})", _HINT)
        if isinstance(doc.get("spdxVersion"), str):
            fmt, items = "spdx", [p for p in doc.get("packages") or [] if isinstance(p, dict)]
        elif doc.get("bomFormat") == "CycloneDX":
            fmt, items = "cyclonedx", list(_cdx_components(doc.get("components")))
            meta = doc.get("metadata")
            if isinstance(meta, dict) and isinstance(meta.get("component"), dict):
                items.append(meta["component"])
        else:
            raise InvalidRequest(f"{label}: neither SPDX (spdxVersion) nor CycloneDX", _HINT)
    pins: set[tuple[str, str, str]] = set()
    skipped: list[str] = []
    for item in items:
        name = str(item.get("name") or "?")
        purls: list[str] = []
        if fmt == "cyclonedx":
            if isinstance(item.get("purl"), str):
                purls.append(item["purl"])
        else:
            purls += [
                str(r.get("referenceLocator"))
                for r in item.get("externalRefs") or []
                if isinstance(r, dict) and r.get("referenceType") == "purl"
            ]
        if not purls:
            skipped.append(f"{name}: no purl, ecosystem unknown")
            continue
        for purl in purls:
            got = _from_purl(purl)
            if isinstance(got, str):
                skipped.append(got)
            else:
                pins.add(got)
    return SbomPackages(fmt, tuple(sorted(pins)), tuple(dict.fromkeys(skipped)))
