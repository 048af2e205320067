"""One entry point for every output format (CLI and API share it)."""

from __future__ import annotations

from typing import Final

from stockade.core.sbom.cyclonedx import to_cyclonedx
from stockade.core.sbom.model import Bom
from stockade.core.sbom.openvex import statements_from, to_openvex
from stockade.core.sbom.spdx import Stamp, to_spdx_json, to_spdx_tagvalue
from stockade.errors import InvalidRequest

__all__ = ["FORMATS", "MEDIA_TYPES", "check_format", "render"]

FORMATS: Final = ("spdx", "spdx-tv", "cyclonedx", "openvex")  # also in cli/sbom_cmd.py
MEDIA_TYPES: Final = {
    "spdx": "application/spdx+json",
    "spdx-tv": "text/spdx; charset=utf-8",
    "cyclonedx": "application/vnd.cyclonedx+json; version=1.6",
    "openvex": "application/openvex+json",
}


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise InvalidRequest(f"unknown SBOM format {fmt!r}", f"use one of {', '.join(FORMATS)}")
    return fmt


def render(bom: Bom, fmt: str, stamp: Stamp, *, with_vulns: bool = False) -> str:
    """The document as text. ``openvex`` is the findings alone (it implies ``with_vulns``)."""
    check_format(fmt)
    if fmt == "spdx":
        return to_spdx_json(bom, stamp, with_vulns=with_vulns)
    if fmt == "spdx-tv":
        return to_spdx_tagvalue(bom, stamp, with_vulns=with_vulns)
    if fmt == "cyclonedx":
        return to_cyclonedx(bom, stamp, with_vulns=with_vulns)
    return to_openvex(
        statements_from(bom),
        doc_id=f"urn:uuid:{stamp.serial}",
        author="Stockade",
        created=stamp.created,
    )
