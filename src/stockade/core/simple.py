"""One model of a project page, two renderers (PEP 503 HTML, PEP 691 JSON), two parsers.

The model carries everything the Simple API can say about a file (PEP 503/592/629/658/691/700/
714) plus PEP 708 repository metadata. Links rendered to clients are *relative* to the page
(``../../files/<project>/<filename>``), so one rendering serves every host, every token and the
``/t/<token>/`` prefix alike, and can be cached as bytes.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field, replace
from functools import lru_cache
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urldefrag, urljoin

import orjson
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    NormalizedName,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from stockade.core.provenance import provenance_href

JSON_V1 = "application/vnd.pypi.simple.v1+json"
HTML_V1 = "application/vnd.pypi.simple.v1+html"
TEXT_HTML = "text/html"
API_VERSION = "1.1"
API_VERSION_708 = "1.2"


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One distribution file as a page lists it."""

    filename: str
    sha256: str | None
    url: str | None = None  # absolute upstream URL (mirrors); never rendered to clients
    requires_python: str | None = None
    yanked: bool = False
    yanked_reason: str | None = None
    metadata_sha256: str | None = None  # PEP 658/714 core metadata
    has_metadata: bool = False  # metadata advertised, possibly without a hash
    size: int | None = None
    upload_time: str | None = None  # ISO 8601, "Z"
    origin: str | None = None  # index the file comes from (virtual indexes); not rendered
    # Why a policy blocks this file, when the policy lists blocked files instead of hiding them:
    # rendered as yanked (PEP 592) with this reason, so resolvers skip it and a pinned install
    # shows the reason; the download itself is refused.
    blocked: str | None = None
    # The metadata advertised for a blocked file is Stockade's own (name, version, reason):
    # the upstream offers none, and without it pip would download the file (403) before it
    # could show the reason. Never set on a file that can be downloaded.
    synthetic_metadata: bool = False
    # Where the file's PEP 740 provenance comes from: the upstream's URL (mirrors) or "stored"
    # (uploaded with attestations). Never rendered as is: pages point at Stockade's own
    # ``integrity/<project>/<filename>/provenance``, which serves the document only once it
    # has been verified (services/provenance.py).
    provenance: str | None = None

    @property
    def shown_yanked(self) -> str | bool:
        """What the page says about yanking: False, True, or the reason."""
        if self.blocked is not None:
            reason = f"blocked by policy: {self.blocked}"
            return f"{reason}; yanked: {self.yanked_reason}" if self.yanked_reason else reason
        return (self.yanked_reason or True) if self.yanked else False

    @property
    def version(self) -> str | None:
        return version_from_filename(self.filename)


@dataclass(frozen=True, slots=True)
class ProjectPage:
    name: NormalizedName
    files: tuple[FileEntry, ...] = ()
    tracks: tuple[str, ...] = ()
    alternate_locations: tuple[str, ...] = ()
    extra_versions: tuple[str, ...] = field(default=())  # versions with no files (PEP 700)

    @property
    def versions(self) -> list[str]:
        seen: dict[str, None] = {}
        for f in self.files:
            v = f.version
            if v is not None:
                seen[v] = None
        for v in self.extra_versions:
            seen[v] = None
        return sorted(seen, key=version_key)

    def file(self, filename: str) -> FileEntry | None:
        for f in self.files:
            if f.filename == filename:
                return f
        return None

    def with_origin(self, origin: str) -> ProjectPage:
        return replace(self, files=tuple(replace(f, origin=origin) for f in self.files))

    # -- storage of a parsed upstream page (mirror cache) ------------------------------------
    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "name": self.name,
                "files": [_entry_dict(f) for f in self.files],
                "tracks": list(self.tracks),
                "alternate_locations": list(self.alternate_locations),
                "extra_versions": list(self.extra_versions),
            }
        )

    @classmethod
    def from_json(cls, data: bytes | str) -> ProjectPage:
        obj = orjson.loads(data)
        return cls(
            name=NormalizedName(obj["name"]),
            files=tuple(FileEntry(**f) for f in obj["files"]),
            tracks=tuple(obj.get("tracks", ())),
            alternate_locations=tuple(obj.get("alternate_locations", ())),
            extra_versions=tuple(obj.get("extra_versions", ())),
        )


def _entry_dict(f: FileEntry) -> dict[str, Any]:
    return {
        "filename": f.filename,
        "sha256": f.sha256,
        "url": f.url,
        "requires_python": f.requires_python,
        "yanked": f.yanked,
        "yanked_reason": f.yanked_reason,
        "metadata_sha256": f.metadata_sha256,
        "has_metadata": f.has_metadata,
        "size": f.size,
        "upload_time": f.upload_time,
        "origin": f.origin,
        "blocked": f.blocked,
        "synthetic_metadata": f.synthetic_metadata,
        "provenance": f.provenance,
    }


def version_key(v: str) -> tuple[int, Any]:
    try:
        return (1, Version(v))
    except InvalidVersion:
        return (0, v)


def blocked_metadata(project: str, version: str, reason: str) -> bytes:
    """Core metadata Stockade serves for a blocked file the upstream has none for: enough for a
    resolver to get as far as showing the block's reason; the file itself is never served."""
    clean = " ".join(reason.split())[:900]
    return (
        "Metadata-Version: 2.1\n"
        f"Name: {project}\n"
        f"Version: {version}\n"
        f"Summary: blocked by Stockade policy: {clean}\n"
    ).encode()


@lru_cache(maxsize=65536)
def version_from_filename(filename: str) -> str | None:
    """The version a distribution filename encodes, or None when it is not parseable."""
    try:
        if filename.endswith(".whl"):
            return str(parse_wheel_filename(filename)[1])
        if filename.endswith((".tar.gz", ".zip")):
            return str(parse_sdist_filename(filename)[1])
    except (InvalidWheelFilename, InvalidSdistFilename, InvalidVersion):
        pass
    # legacy sdists with non-normalized names: take the part after the last '-'
    m = re.match(r"^.+-([^-]+?)(\.tar\.gz|\.zip|\.tar\.bz2|\.tgz)$", filename)
    return m.group(1) if m else None


def project_from_filename(filename: str) -> NormalizedName | None:
    try:
        if filename.endswith(".whl"):
            return parse_wheel_filename(filename)[0]
        if filename.endswith(".tar.gz"):
            return parse_sdist_filename(filename)[0]
    except (InvalidWheelFilename, InvalidSdistFilename, InvalidVersion):
        return None
    return None


# -- rendering to clients ----------------------------------------------------------------------


def file_href(project: str, filename: str) -> str:
    return f"../../files/{project}/{filename}"


def render_json(page: ProjectPage) -> bytes:
    """PEP 691 (v1.1, PEP 700; v1.2 keys of PEP 708 when present)."""
    files = []
    for f in page.files:
        entry: dict[str, Any] = {
            "filename": f.filename,
            "url": file_href(page.name, f.filename),
            "hashes": {"sha256": f.sha256} if f.sha256 else {},
        }
        if f.requires_python:
            entry["requires-python"] = f.requires_python
        if f.has_metadata or f.metadata_sha256:
            meta: dict[str, str] | bool = (
                {"sha256": f.metadata_sha256} if f.metadata_sha256 else True
            )
            entry["core-metadata"] = meta
            entry["dist-info-metadata"] = meta
        entry["yanked"] = f.shown_yanked
        if f.size is not None:
            entry["size"] = f.size
        if f.upload_time:
            entry["upload-time"] = f.upload_time
        if f.provenance is not None:  # PEP 740
            entry["provenance"] = provenance_href(page.name, f.filename)
        files.append(entry)
    doc: dict[str, Any] = {
        "meta": {"api-version": API_VERSION},
        "name": page.name,
        "versions": page.versions,
        "files": files,
    }
    if page.tracks or page.alternate_locations:
        doc["meta"]["api-version"] = API_VERSION_708
        doc["tracks"] = list(page.tracks)
        doc["alternate-locations"] = list(page.alternate_locations)
    return orjson.dumps(doc)


def render_html(page: ProjectPage) -> bytes:
    """PEP 503 HTML with the data-* attributes of PEP 592/629/658/714."""
    esc = html.escape
    version = API_VERSION_708 if (page.tracks or page.alternate_locations) else API_VERSION
    out = [
        "<!DOCTYPE html>\n<html>\n<head>\n",
        f'<meta name="pypi:repository-version" content="{version}">\n',
    ]
    for t in page.tracks:
        out.append(f'<meta name="pypi:tracks" content="{esc(t)}">\n')
    for a in page.alternate_locations:
        out.append(f'<meta name="pypi:alternate-locations" content="{esc(a)}">\n')
    out.append(f"<title>Links for {esc(page.name)}</title>\n</head>\n<body>\n")
    out.append(f"<h1>Links for {esc(page.name)}</h1>\n")
    for f in page.files:
        href = file_href(page.name, f.filename)
        if f.sha256:
            href += f"#sha256={f.sha256}"
        attrs = [f'href="{esc(href)}"']
        if f.requires_python:
            attrs.append(f'data-requires-python="{esc(f.requires_python)}"')
        if f.metadata_sha256:
            attrs.append(f'data-dist-info-metadata="sha256={f.metadata_sha256}"')
            attrs.append(f'data-core-metadata="sha256={f.metadata_sha256}"')
        elif f.has_metadata:
            attrs.append('data-dist-info-metadata="true" data-core-metadata="true"')
        yanked = f.shown_yanked
        if yanked is not False:
            attrs.append(f'data-yanked="{esc(yanked if isinstance(yanked, str) else "")}"')
        if f.provenance is not None:  # PEP 740
            attrs.append(f'data-provenance="{esc(provenance_href(page.name, f.filename))}"')
        out.append(f"<a {' '.join(attrs)}>{esc(f.filename)}</a><br>\n")
    out.append("</body>\n</html>\n")
    return "".join(out).encode()


def render_index_json(projects: list[str]) -> bytes:
    return orjson.dumps(
        {"meta": {"api-version": API_VERSION}, "projects": [{"name": p} for p in projects]}
    )


def render_index_html(projects: list[str]) -> bytes:
    esc = html.escape
    out = [
        "<!DOCTYPE html>\n<html>\n<head>\n",
        f'<meta name="pypi:repository-version" content="{API_VERSION}">\n',
        "<title>Simple index</title>\n</head>\n<body>\n",
    ]
    out.extend(f'<a href="{esc(p)}/">{esc(p)}</a><br>\n' for p in projects)
    out.append("</body>\n</html>\n")
    return "".join(out).encode()


# -- content negotiation (PEP 691) -------------------------------------------------------------


def negotiate(accept: str | None, fmt: str | None = None) -> str | None:
    """Pick the response content type for an Accept header; None means 406."""
    if fmt:
        return {"json": JSON_V1, "html": HTML_V1}.get(fmt)
    if not accept:
        return TEXT_HTML
    best: tuple[float, int, str] | None = None
    prefs = {JSON_V1: 3, HTML_V1: 2, TEXT_HTML: 1}
    for part in accept.split(","):
        bits = [b.strip() for b in part.split(";")]
        media = bits[0].lower()
        q = 1.0
        for b in bits[1:]:
            if b.startswith("q="):
                try:
                    q = float(b[2:])
                except ValueError:
                    q = 0.0
        if q <= 0:
            continue
        if media in ("*/*", "application/*", "text/*"):
            chosen = TEXT_HTML if media != "application/*" else JSON_V1
        elif media == "application/vnd.pypi.simple.latest+json":
            chosen = JSON_V1
        elif media == "application/vnd.pypi.simple.latest+html":
            chosen = HTML_V1
        elif media in prefs:
            chosen = media
        else:
            continue
        cand = (q, prefs[chosen], chosen)
        if best is None or cand[:2] > best[:2]:
            best = cand
    return best[2] if best else None


# -- parsing upstream pages --------------------------------------------------------------------


def _hash_attr(value: str | None) -> tuple[bool, str | None]:
    if value is None:
        return False, None
    if value.lower() == "true":
        return True, None
    if value.startswith("sha256="):
        return True, value[len("sha256=") :].lower()
    return True, None


def _provenance_url(page_url: str, value: object) -> str | None:
    return urljoin(page_url, value) if isinstance(value, str) and value else None


def parse_json_page(data: bytes, page_url: str, project: NormalizedName) -> ProjectPage:
    """Parse a PEP 691 project page; URLs are resolved against ``page_url``."""
    obj = orjson.loads(data)
    if not isinstance(obj, dict) or not isinstance(obj.get("files"), list):
        raise ValueError("not a PEP 691 project page (no 'files' list)")
    major = str(obj.get("meta", {}).get("api-version", "1.0")).split(".")[0]
    if major != "1":
        raise ValueError(f"unsupported simple API version {major}")
    files = []
    for f in obj["files"]:
        hashes = f.get("hashes") or {}
        meta = f.get("core-metadata", f.get("dist-info-metadata", False))
        has_meta = bool(meta)
        meta_sha = meta.get("sha256") if isinstance(meta, dict) else None
        yanked = f.get("yanked", False)
        size = f.get("size")
        files.append(
            FileEntry(
                filename=str(f["filename"]),
                sha256=(hashes.get("sha256") or None),
                url=urljoin(page_url, str(f["url"])),
                requires_python=f.get("requires-python") or None,
                yanked=bool(yanked),
                yanked_reason=yanked if isinstance(yanked, str) and yanked else None,
                metadata_sha256=meta_sha,
                has_metadata=has_meta,
                size=int(size) if isinstance(size, int) else None,
                upload_time=f.get("upload-time") or None,
                provenance=_provenance_url(page_url, f.get("provenance")),
            )
        )
    extra = tuple(str(v) for v in obj.get("versions", ()) or ())
    return ProjectPage(name=project, files=tuple(files), extra_versions=extra)


class _LinkParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[tuple[dict[str, str | None], str]] = []
        self.base: str | None = None
        self._current: dict[str, str | None] | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "base" and self.base is None:
            self.base = dict(attrs).get("href")
        elif tag == "a":
            self._current = dict(attrs)
            self._text = []

    def handle_data(self, data: str) -> None:
        if self._current is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._current is not None:
            self.links.append((self._current, "".join(self._text).strip()))
            self._current = None


def parse_html_page(data: bytes, page_url: str, project: NormalizedName) -> ProjectPage:
    """Parse a PEP 503 project page; URLs are resolved against the page (or its <base>)."""
    parser = _LinkParser()
    parser.feed(data.decode("utf-8", errors="replace"))
    base = urljoin(page_url, parser.base) if parser.base else page_url
    files = []
    for attrs, text in parser.links:
        href = attrs.get("href")
        if not href:
            continue
        url, frag = urldefrag(urljoin(base, href))
        filename = url.rsplit("/", 1)[-1] or text
        sha = None
        if frag.startswith("sha256="):
            sha = frag[len("sha256=") :].lower()
        has_meta, meta_sha = _hash_attr(
            attrs.get("data-core-metadata", attrs.get("data-dist-info-metadata"))
        )
        yanked = "data-yanked" in attrs
        files.append(
            FileEntry(
                filename=_unquote(filename),
                sha256=sha,
                url=url,
                requires_python=attrs.get("data-requires-python") or None,
                yanked=yanked,
                yanked_reason=(attrs.get("data-yanked") or None) if yanked else None,
                metadata_sha256=meta_sha,
                has_metadata=has_meta,
                provenance=_provenance_url(base, attrs.get("data-provenance")),
            )
        )
    return ProjectPage(name=project, files=tuple(files))


def _unquote(s: str) -> str:
    from urllib.parse import unquote

    return unquote(s)


def normalize(name: str) -> NormalizedName:
    return canonicalize_name(name)
