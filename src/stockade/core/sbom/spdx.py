"""SPDX 2.3 (JSON and tag-value) with the SPDX project's own library, ``spdx-tools``."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import re
import uuid
from dataclasses import dataclass
from typing import Any, Final

from spdx_tools.common.spdx_licensing import spdx_licensing  # type: ignore[import-untyped]
from spdx_tools.spdx.model import (  # type: ignore[attr-defined]
    Actor,
    ActorType,
    Checksum,
    ChecksumAlgorithm,
    CreationInfo,
    Document,
    ExternalPackageRef,
    ExternalPackageRefCategory,
    ExtractedLicensingInfo,
    Package,
    PackagePurpose,
    Relationship,
    RelationshipType,
    SpdxNoAssertion,
    SpdxNone,
)
from spdx_tools.spdx.validation.uri_validators import (
    validate_download_location,
    validate_url,
)
from spdx_tools.spdx.writer.json.json_writer import (
    write_document_to_stream as write_json,
)
from spdx_tools.spdx.writer.tagvalue.tagvalue_writer import (
    write_document as write_tagvalue,
)

from stockade import __version__
from stockade.core.sbom.model import Bom, Component

__all__ = ["Stamp", "spdx_document", "to_spdx_json", "to_spdx_tagvalue"]

NAMESPACE_BASE: Final = "https://stockade.invalid/spdx/"
_ID_UNSAFE: Final = re.compile(r"[^A-Za-z0-9.-]+")
_ALGORITHMS: Final = {
    "sha256": ChecksumAlgorithm.SHA256,
    "sha512": ChecksumAlgorithm.SHA512,
    "sha384": ChecksumAlgorithm.SHA384,
    "sha1": ChecksumAlgorithm.SHA1,
    "md5": ChecksumAlgorithm.MD5,
}
_PERSON_RE: Final = re.compile(r"^\s*(?P<name>[^<>]*?)\s*<(?P<email>[^<>]+)>\s*$")


@dataclass(frozen=True, slots=True)
class Stamp:
    """What differs between two runs on the same input: pinned by ``--reproducible``."""

    created: dt.datetime
    serial: uuid.UUID

    @classmethod
    def make(cls, bom: Bom, *, reproducible: bool, epoch: int | None = None) -> Stamp:
        if reproducible:
            when = dt.datetime.fromtimestamp(epoch or 0, dt.UTC)
            return cls(when, uuid.uuid5(uuid.NAMESPACE_URL, f"stockade:sbom:{bom.digest()}"))
        return cls(dt.datetime.now(dt.UTC).replace(microsecond=0), uuid.uuid4())


def _spdx_id(c: Component, taken: set[str]) -> str:
    base = _ID_UNSAFE.sub("-", f"SPDXRef-{c.ecosystem}-{c.name}-{c.version or 'any'}").strip("-")
    if c.filename:
        base += "-" + hashlib.sha256(c.ref.encode()).hexdigest()[:12]
    spdx_id, n = base, 1
    while spdx_id in taken:
        n += 1
        spdx_id = f"{base}-{n}"
    taken.add(spdx_id)
    return spdx_id


def _actor(text: str | None) -> Actor | SpdxNoAssertion:
    if not text or not text.strip():
        return SpdxNoAssertion()
    m = _PERSON_RE.match(text)
    if m and m.group("name"):
        return Actor(ActorType.PERSON, m.group("name"), m.group("email").strip())
    if m:  # "<email>" alone
        return Actor(ActorType.PERSON, m.group("email").strip(), m.group("email").strip())
    return Actor(ActorType.PERSON, " ".join(text.split())[:200])


def _location(url: str | None) -> str | SpdxNoAssertion:
    if url and not validate_download_location(url):
        return url
    return SpdxNoAssertion()


def spdx_document(bom: Bom, stamp: Stamp, *, with_vulns: bool = False) -> Any:
    """The spdx-tools ``Document`` of a BOM."""
    name = f"stockade-sbom-{bom.name}"
    namespace = f"{NAMESPACE_BASE}{_ID_UNSAFE.sub('-', bom.name)}-{stamp.serial}"
    info = CreationInfo(
        spdx_version="SPDX-2.3",
        spdx_id="SPDXRef-DOCUMENT",
        name=name,
        document_namespace=namespace,
        creators=[Actor(ActorType.TOOL, f"stockade-{__version__}")],
        created=stamp.created.replace(tzinfo=None),
        creator_comment=f"input: {bom.kind} {bom.name}",
    )
    taken: set[str] = set()
    ids = {c.ref: _spdx_id(c, taken) for c in bom.components}
    advisories: dict[str, list[str]] = {}
    if with_vulns:
        for v in bom.vulns:
            advisories.setdefault(v.ref, []).append(v.id)
    extracted: dict[str, ExtractedLicensingInfo] = {}
    packages = []
    for c in bom.components:
        declared: Any = SpdxNoAssertion()
        comment = None
        if c.license:
            declared = spdx_licensing.parse(c.license)
        elif c.license_raw:
            ref = "LicenseRef-" + hashlib.sha256(c.license_raw.encode()).hexdigest()[:16]
            extracted.setdefault(
                ref,
                ExtractedLicensingInfo(
                    license_id=ref,
                    extracted_text=c.license_raw,
                    license_name=" ".join(c.license_raw.split())[:80] or ref,
                ),
            )
            declared = spdx_licensing.parse(ref)
            comment = "declared licence is not an SPDX expression; text kept as " + ref
        refs = [ExternalPackageRef(ExternalPackageRefCategory.PACKAGE_MANAGER, "purl", c.purl)]
        refs += [
            ExternalPackageRef(
                ExternalPackageRefCategory.SECURITY,
                "advisory",
                f"https://osv.dev/vulnerability/{ident}",
            )
            for ident in sorted(set(advisories.get(c.ref, ())))
        ]
        packages.append(
            Package(
                spdx_id=ids[c.ref],
                name=c.name,
                download_location=_location(c.download_url),
                version=c.version,
                file_name=c.filename,
                supplier=_actor(c.supplier),
                files_analyzed=False,
                checksums=[
                    Checksum(_ALGORITHMS[algo], digest)
                    for algo, digest in c.hashes
                    if algo in _ALGORITHMS
                ],
                homepage=c.homepage if c.homepage and not validate_url(c.homepage) else None,
                license_concluded=SpdxNoAssertion(),
                license_declared=declared,
                license_comment=comment,
                copyright_text=SpdxNoAssertion(),
                summary=c.summary,
                comment=f"read from {c.source}" if c.source else None,
                external_references=refs,
                primary_package_purpose=PackagePurpose.LIBRARY,
            )
        )
    relationships = [
        Relationship("SPDXRef-DOCUMENT", RelationshipType.DESCRIBES, ids[c.ref])
        for c in bom.components
    ]
    relationships += [
        Relationship(ids[c.ref], RelationshipType.DEPENDS_ON, ids[dep])
        for c in bom.components
        for dep in c.depends_on
        if dep in ids
    ]
    if not relationships:  # an empty input: the document describes nothing, and says so
        relationships = [Relationship("SPDXRef-DOCUMENT", RelationshipType.DESCRIBES, SpdxNone())]
    return Document(
        info,
        packages=packages,
        relationships=relationships,
        extracted_licensing_info=[extracted[k] for k in sorted(extracted)],
    )


def to_spdx_json(bom: Bom, stamp: Stamp, *, with_vulns: bool = False) -> str:
    buf = io.StringIO()
    # Validation is the test suite's job (tests validate every shape we write); here it would
    # only cost time.
    write_json(spdx_document(bom, stamp, with_vulns=with_vulns), buf, validate=False)
    return buf.getvalue() + "\n"


def to_spdx_tagvalue(bom: Bom, stamp: Stamp, *, with_vulns: bool = False) -> str:
    buf = io.StringIO()
    write_tagvalue(spdx_document(bom, stamp, with_vulns=with_vulns), buf)
    return buf.getvalue()
