"""CycloneDX 1.6 JSON with the CycloneDX project's own library, ``cyclonedx-python-lib``:
components, their dependencies, and (``with_vulns``) vulnerabilities whose ``analysis`` carries
the experts' curation, i.e. CycloneDX VEX."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from typing import Any, Final

from cyclonedx.model import ExternalReference, ExternalReferenceType, HashAlgorithm, HashType, XsUri
from cyclonedx.model.bom import Bom as CdxBom
from cyclonedx.model.bom import BomMetaData
from cyclonedx.model.component import Component as CdxComponent
from cyclonedx.model.component import ComponentType
from cyclonedx.model.contact import OrganizationalContact
from cyclonedx.model.dependency import Dependency
from cyclonedx.model.impact_analysis import (
    ImpactAnalysisAffectedStatus,
    ImpactAnalysisJustification,
    ImpactAnalysisState,
)
from cyclonedx.model.license import DisjunctiveLicense, LicenseAcknowledgement, LicenseExpression
from cyclonedx.model.tool import ToolRepository
from cyclonedx.model.vulnerability import (
    BomTarget,
    BomTargetVersionRange,
    Vulnerability,
    VulnerabilityAnalysis,
    VulnerabilityRating,
    VulnerabilityReference,
    VulnerabilitySeverity,
    VulnerabilitySource,
)
from cyclonedx.output.json import JsonV1Dot6
from cyclonedx.spdx import is_supported_id
from packageurl import PackageURL

from stockade import __version__
from stockade.core.sbom.model import Bom, Component, Vuln
from stockade.core.sbom.spdx import Stamp

__all__ = ["JUSTIFICATIONS", "STATES", "cyclonedx_bom", "to_cyclonedx"]

_ALGORITHMS: Final = {
    "sha256": HashAlgorithm.SHA_256,
    "sha512": HashAlgorithm.SHA_512,
    "sha384": HashAlgorithm.SHA_384,
    "sha1": HashAlgorithm.SHA_1,
    "md5": HashAlgorithm.MD5,
}
# Curation status -> CycloneDX analysis state.
STATES: Final = {
    "affected": ImpactAnalysisState.EXPLOITABLE,
    "not_affected": ImpactAnalysisState.NOT_AFFECTED,
    "fixed": ImpactAnalysisState.RESOLVED,
    "under_investigation": ImpactAnalysisState.IN_TRIAGE,
}
# VEX (OpenVEX / CISA) justification -> CycloneDX justification (CycloneDX's own mapping table);
# the original is kept in the analysis detail.
JUSTIFICATIONS: Final = {
    "component_not_present": ImpactAnalysisJustification.CODE_NOT_PRESENT,
    "vulnerable_code_not_present": ImpactAnalysisJustification.CODE_NOT_PRESENT,
    "vulnerable_code_not_in_execute_path": ImpactAnalysisJustification.CODE_NOT_REACHABLE,
    "vulnerable_code_cannot_be_controlled_by_adversary": (
        ImpactAnalysisJustification.REQUIRES_ENVIRONMENT
    ),
    "inline_mitigations_already_exist": (
        ImpactAnalysisJustification.PROTECTED_BY_MITIGATING_CONTROL
    ),
}
_EMAIL_RE: Final = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")
_PERSON_RE: Final = re.compile(r"^\s*(?P<name>[^<>]*?)\s*<(?P<email>[^<>]+)>\s*$")


def _url(text: str | None) -> XsUri | None:
    if not text or not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", text):
        return None
    try:
        return XsUri(text)
    except Exception:  # the library rejects a few odd URIs; they are just left out
        return None


def _licenses(c: Component) -> list[Any]:
    ack = LicenseAcknowledgement.DECLARED
    if c.license:
        if is_supported_id(c.license):
            return [DisjunctiveLicense(id=c.license, acknowledgement=ack)]
        return [LicenseExpression(c.license, acknowledgement=ack)]
    if c.license_raw:
        return [DisjunctiveLicense(name=c.license_raw, acknowledgement=ack)]
    return []


def _authors(text: str | None) -> list[OrganizationalContact]:
    if not text or not text.strip():
        return []
    m = _PERSON_RE.match(text)
    if m:
        email = m.group("email").strip()
        name = m.group("name") or email
        return [OrganizationalContact(name=name, email=email if _EMAIL_RE.match(email) else None)]
    return [OrganizationalContact(name=" ".join(text.split()))]


def _component(c: Component) -> CdxComponent:
    refs = []
    if (url := _url(c.download_url)) is not None:
        refs.append(ExternalReference(type=ExternalReferenceType.DISTRIBUTION, url=url))
    if (home := _url(c.homepage)) is not None:
        refs.append(ExternalReference(type=ExternalReferenceType.WEBSITE, url=home))
    return CdxComponent(
        name=c.name,
        version=c.version,
        type=ComponentType.LIBRARY,
        bom_ref=c.ref,
        purl=PackageURL.from_string(c.purl),
        hashes=[HashType(alg=_ALGORITHMS[a], content=h) for a, h in c.hashes if a in _ALGORITHMS],
        licenses=_licenses(c),
        authors=_authors(c.supplier),
        description=c.summary,
        external_references=refs,
    )


def _vulnerability(v: Vuln, version: str | None) -> Vulnerability:
    analysis = None
    if v.decided_by == "curation" and v.status in STATES:
        detail = " ".join(
            x
            for x in (
                v.detail,
                f"VEX justification: {v.justification}." if v.justification else None,
            )
            if x
        )
        when = _time(v.decided_at)
        analysis = VulnerabilityAnalysis(
            state=STATES[v.status],
            justification=JUSTIFICATIONS.get(v.justification or ""),
            detail=detail or None,
            first_issued=when,
            last_updated=when,
        )
    status = (
        ImpactAnalysisAffectedStatus.UNAFFECTED
        if v.status in ("not_affected", "fixed")
        else ImpactAnalysisAffectedStatus.AFFECTED
    )
    ratings = []
    if v.severity or v.score is not None:
        ratings.append(
            VulnerabilityRating(
                score=Decimal(str(v.score)) if v.score is not None else None,
                severity=VulnerabilitySeverity(v.severity) if v.severity else None,
            )
        )
    fix = ", ".join(v.fixed_versions)
    return Vulnerability(
        bom_ref=f"{v.id}|{v.ref}",
        id=v.id,
        source=VulnerabilitySource(name="OSV", url=XsUri(f"https://osv.dev/vulnerability/{v.id}")),
        references=[
            VulnerabilityReference(
                id=alias,
                source=VulnerabilitySource(
                    name="OSV", url=XsUri(f"https://osv.dev/vulnerability/{alias}")
                ),
            )
            for alias in v.aliases
        ],
        ratings=ratings,
        description=v.summary,
        recommendation=f"upgrade to {fix}" if fix else None,
        published=_time(v.published),
        analysis=analysis,
        affects=[
            BomTarget(
                ref=v.ref,
                versions=[BomTargetVersionRange(version=version, status=status)]
                if version
                else None,
            )
        ],
    )


def _time(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        return None


def cyclonedx_bom(bom: Bom, stamp: Stamp, *, with_vulns: bool = False) -> CdxBom:
    """The cyclonedx-python-lib ``Bom`` of a BOM."""
    components = {c.ref: _component(c) for c in bom.components}
    tool = CdxComponent(name="stockade", version=__version__, type=ComponentType.APPLICATION)
    out = CdxBom(
        components=components.values(),
        serial_number=stamp.serial,
        metadata=BomMetaData(timestamp=stamp.created, tools=ToolRepository(components=[tool])),
    )
    out.dependencies = [
        Dependency(
            ref=components[c.ref].bom_ref,
            dependencies=[
                Dependency(ref=components[d].bom_ref) for d in c.depends_on if d in components
            ],
        )
        for c in bom.components
    ]
    if with_vulns:
        versions = {c.ref: c.version for c in bom.components}
        out.vulnerabilities = [
            _vulnerability(v, versions.get(v.ref)) for v in bom.vulns if v.ref in components
        ]
    return out


def to_cyclonedx(bom: Bom, stamp: Stamp, *, with_vulns: bool = False) -> str:
    text: str = JsonV1Dot6(cyclonedx_bom(bom, stamp, with_vulns=with_vulns)).output_as_string(
        indent=2
    )
    return text + "\n"
