"""SBOM values: what every input (lock file, environment, wheel, index, downloads) becomes
before it is written as SPDX, CycloneDX or OpenVEX (see the sibling modules)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

import orjson
from packageurl import PackageURL

from stockade.core.lockfiles import Details, Inventory, Pin, metadata_details
from stockade.types import DistMeta

__all__ = [
    "CONDA",
    "PYPI",
    "Bom",
    "Component",
    "Vuln",
    "component",
    "from_distribution",
    "from_inventory",
    "purl_for",
]

PYPI: Final = "PyPI"
CONDA: Final = "conda"
_HEX_RE: Final = re.compile(r"^[0-9a-fA-F]+$")
_ALGOS: Final = {"sha256": 64, "sha512": 128, "sha384": 96, "sha1": 40, "md5": 32}


@dataclass(frozen=True, slots=True)
class Component:
    """One package (or one file of a package) in an SBOM."""

    ref: str  # unique in the SBOM: the purl (with file_name when the component is one file)
    ecosystem: str  # "PyPI" | "conda"
    name: str
    version: str | None
    purl: str
    hashes: tuple[tuple[str, str], ...] = ()  # (algorithm: sha256|md5|…, lower-case hex)
    license: str | None = None  # normalized SPDX expression
    license_raw: str | None = None  # the declared text when no SPDX expression was found
    supplier: str | None = None  # "Name <email>" or a name
    summary: str | None = None
    homepage: str | None = None
    download_url: str | None = None
    filename: str | None = None
    source: str | None = None  # where in the input it was read
    depends_on: tuple[str, ...] = ()  # refs of other components


@dataclass(frozen=True, slots=True)
class Vuln:
    """One advisory concerning one component, as the curated database decides it."""

    id: str
    ref: str  # the component it affects
    aliases: tuple[str, ...] = ()
    summary: str | None = None
    severity: str | None = None  # none|low|medium|high|critical
    score: float | None = None
    fixed_versions: tuple[str, ...] = ()
    status: str = "affected"  # affected | not_affected | under_investigation | fixed
    decided_by: str = "feed"  # feed | curation
    justification: str | None = None  # VEX justification (not_affected)
    detail: str | None = None  # the curation's reason and note
    author: str | None = None
    decided_at: str | None = None  # ISO time of the curation
    published: str | None = None


@dataclass(frozen=True, slots=True)
class Bom:
    name: str  # what the SBOM describes: "uv.lock", "index main", "downloads of token …"
    kind: str  # the input kind (lockfiles.KINDS, "wheel", "sdist", "index", "downloads")
    components: tuple[Component, ...]  # sorted by ref, refs unique
    vulns: tuple[Vuln, ...] = ()
    warnings: tuple[str, ...] = field(default=(), compare=False)

    def digest(self) -> str:
        """sha256 of everything the SBOM says: equal inputs give equal digests (and so equal
        serial numbers and namespaces with ``--reproducible``)."""
        data = orjson.dumps([self.name, self.kind, self.components, self.vulns])
        return hashlib.sha256(data).hexdigest()

    def with_vulns(self, vulns: Iterable[Vuln]) -> Bom:
        ordered = sorted(set(vulns), key=lambda v: (v.ref, v.id))
        return Bom(self.name, self.kind, self.components, tuple(ordered), self.warnings)

    def with_components(self, components: Iterable[Component]) -> Bom:
        return Bom(self.name, self.kind, _unique(components), self.vulns, self.warnings)


def purl_for(
    ecosystem: str,
    name: str,
    version: str | None,
    qualifiers: Sequence[tuple[str, str]] = (),
) -> str:
    """``pkg:pypi/<name>@<version>`` or ``pkg:conda/<name>@<version>?channel=…&subdir=…``."""
    kind = "conda" if ecosystem == CONDA else "pypi"
    return str(PackageURL(type=kind, name=name, version=version, qualifiers=dict(qualifiers)))


def _hashes(raw: Iterable[str]) -> tuple[tuple[str, str], ...]:
    found: dict[tuple[str, str], None] = {}
    for text in raw:
        algo, sep, digest = text.partition(":")
        if not sep:
            algo, sep, digest = text.partition("=")
        algo = algo.strip().lower().replace("-", "")
        if _ALGOS.get(algo) == len(digest) and _HEX_RE.match(digest):
            found[(algo, digest.lower())] = None
    return tuple(sorted(found))


def component(
    ecosystem: str,
    name: str,
    version: str | None,
    *,
    hashes: Iterable[str] = (),
    details: Details | None = None,
    filename: str | None = None,
    source: str | None = None,
    qualifiers: Sequence[tuple[str, str]] = (),
) -> Component:
    """A component from a name, a version and what else is known; ``filename`` makes it one
    file (its purl carries ``file_name``)."""
    d = details or Details()
    quals = list(d.qualifiers or qualifiers)
    purl = purl_for(ecosystem, name, version, quals)
    ref = (
        purl_for(ecosystem, name, version, [*quals, ("file_name", filename)]) if filename else purl
    )
    return Component(
        ref=ref,
        ecosystem=ecosystem,
        name=name,
        version=version,
        purl=purl,
        hashes=_hashes(hashes),
        license=d.license,
        license_raw=None if d.license else d.license_raw,
        supplier=d.supplier,
        summary=d.summary,
        homepage=d.homepage,
        download_url=d.download_url,
        filename=filename,
        source=source,
        depends_on=d.requires,  # names for now; from_inventory resolves them to refs
    )


def _unique(components: Iterable[Component]) -> tuple[Component, ...]:
    seen: dict[str, Component] = {}
    for c in components:
        seen.setdefault(c.ref, c)
    return tuple(sorted(seen.values(), key=lambda c: c.ref))


def _resolve(components: Sequence[Component]) -> tuple[Component, ...]:
    """Turn ``depends_on`` names into refs of components of the same ecosystem (unknown names,
    e.g. requirements of extras that are not installed, are dropped)."""
    by_name: dict[tuple[str, str], str] = {}
    for c in components:
        by_name.setdefault((c.ecosystem, c.name), c.ref)
    out = []
    for c in components:
        refs = {by_name[(c.ecosystem, n)] for n in c.depends_on if (c.ecosystem, n) in by_name}
        refs.discard(c.ref)
        out.append(_replace_deps(c, tuple(sorted(refs))))
    return tuple(out)


def _replace_deps(c: Component, refs: tuple[str, ...]) -> Component:
    from dataclasses import replace

    return replace(c, depends_on=refs)


def _pin_component(pin: Pin) -> Component | None:
    version = pin.version or (pin.details.version if pin.details else None)
    if not pin.name:
        return None
    return component(
        pin.ecosystem,
        pin.name,
        version,
        hashes=pin.hashes,
        details=pin.details,
        source=pin.source,
    )


def from_inventory(inv: Inventory, name: str) -> Bom:
    """Every pin of an inventory, and every unpinned entry that names a package (without a
    version unless the input states one, e.g. a wheel installed from a URL)."""
    found = [c for p in (*inv.pins, *inv.unpinned) if (c := _pin_component(p)) is not None]
    components = _unique(found)
    return Bom(name, inv.kind, _resolve(components), (), inv.warnings)


def from_distribution(meta: DistMeta, filename: str, sha256: str) -> Bom:
    """One wheel or sdist: its core metadata, its digest (what it requires is not resolved:
    a distribution names ranges, not versions)."""
    from email.parser import HeaderParser
    from email.policy import compat32

    text = meta.metadata.decode("utf-8", "replace").replace("\r\n", "\n").partition("\n\n")[0]
    details = metadata_details(HeaderParser(policy=compat32).parsestr(text))
    comp = component(
        PYPI,
        meta.name,
        meta.version,
        hashes=[f"sha256:{sha256}"],
        details=Details(
            license=details.license,
            license_raw=details.license_raw,
            supplier=details.supplier,
            summary=details.summary,
            homepage=details.homepage,
        ),
        filename=filename,
        source=filename,
    )
    kind = "wheel" if meta.packagetype == "bdist_wheel" else "sdist"
    return Bom(filename, kind, (comp,))
