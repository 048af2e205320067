"""Author impersonation: who publishes a project, and when that changes.

Pure functions over what a mirror observed upstream (no I/O here):

* the **publisher** of each version, from its PEP 740 provenance (``attestation_bundles[].
  publisher``: the Trusted Publisher's kind and repository, e.g. ``GitHub:psf/requests``), or
  the fact that a version came without provenance although the index offers it;
* the project's **owners** (PyPI's JSON API ``ownership``: organization and roles), its author
  and maintainer e-mails and its project URLs, observed over time.

:func:`assess` turns those observations into findings (tier ``suspicious``: a person should
look) when

* the publisher's repository changes between versions (``impersonation:publisher-changed``),
* a version comes without provenance after versions with it (``impersonation:provenance-dropped``),
* none of the owners seen before remain (``impersonation:owners-replaced``),
* a young, unpopular project points its homepage or repository at a popular project's repository
  (``impersonation:homepage``), or shares a popular project's author e-mail without sharing an
  owner with it (``impersonation:author``).

A finding about a change marks the version where it happened and the versions uploaded within
:data:`REVIEW_WINDOW` after it (an attacker who took over an account rarely stops at one). The
provenance is recorded as the index reports it; its signatures are verified elsewhere.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import orjson
from packaging.utils import canonicalize_name

__all__ = [
    "REVIEW_WINDOW",
    "IdentityFinding",
    "Owners",
    "ProjectInfo",
    "VersionIdentity",
    "assess",
    "parse_project_json",
    "parse_provenance",
    "repository_of",
]

REVIEW_WINDOW = timedelta(days=7)
NEW_PROJECT = timedelta(days=180)  # "a new project": its first upload is this recent
_HOSTS = ("github.com", "gitlab.com", "bitbucket.org", "codeberg.org")
_PREFIXES = ("python-", "py-", "py")


@dataclass(frozen=True, slots=True)
class VersionIdentity:
    version: str
    publisher: str | None  # "GitHub:owner/repo" (kind:repository), None: no publisher known
    provenance: bool | None  # True: attested; False: offered none; None: index offers none
    uploaded: datetime | None = None


@dataclass(frozen=True, slots=True)
class Owners:
    users: tuple[str, ...]  # PyPI usernames with a role (sorted)
    organization: str | None
    observed: datetime


@dataclass(frozen=True, slots=True)
class ProjectInfo:
    """What the project's JSON API says about its people and links (latest release)."""

    owners: tuple[str, ...] | None  # None: the API did not say (no ``ownership``)
    organization: str | None
    emails: tuple[str, ...]  # author and maintainer e-mail addresses, lower-case
    urls: tuple[str, ...]  # home page and project URLs
    first_upload: datetime | None


@dataclass(frozen=True, slots=True)
class IdentityFinding:
    rule: str
    version: str | None  # None: every version of the project
    message: str
    severity: str = "high"
    tier: str = "suspicious"
    detail: Mapping[str, Any] = field(default_factory=dict)


# -- parsing -----------------------------------------------------------------------------------


def parse_provenance(data: bytes) -> list[str]:
    """The publishers named by a PEP 740 provenance object, as ``kind:repository``.

    ValueError when the document is not a provenance object."""
    obj = orjson.loads(data)
    bundles = obj.get("attestation_bundles") if isinstance(obj, dict) else None
    if not isinstance(bundles, list):
        raise ValueError("not a PEP 740 provenance object (no attestation_bundles list)")
    out: list[str] = []
    for bundle in bundles:
        pub = bundle.get("publisher") if isinstance(bundle, dict) else None
        if not isinstance(pub, dict):
            continue
        kind = str(pub.get("kind") or "unknown")
        repo = pub.get("repository") or pub.get("project") or pub.get("environment") or ""
        name = f"{kind}:{str(repo).strip().lower()}"
        if name not in out:
            out.append(name)
    return out


def _time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")


def parse_project_json(data: bytes) -> ProjectInfo:
    """PyPI's ``/pypi/<project>/json``: owners, e-mails, URLs and the first upload time.

    ValueError when the document is not such a response."""
    obj = orjson.loads(data)
    info = obj.get("info") if isinstance(obj, dict) else None
    if not isinstance(info, dict):
        raise ValueError("not a PyPI JSON API response (no 'info' object)")
    ownership = obj.get("ownership")
    owners: tuple[str, ...] | None = None
    organization = None
    if isinstance(ownership, dict):
        roles = ownership.get("roles") or []
        owners = tuple(
            sorted({str(r.get("user")) for r in roles if isinstance(r, dict) and r.get("user")})
        )
        org = ownership.get("organization")
        organization = str(org) if org else None
    emails: list[str] = []
    for key in ("author_email", "maintainer_email"):
        for found in _EMAIL.findall(str(info.get(key) or "")):
            if found.lower() not in emails:
                emails.append(found.lower())
    urls: list[str] = []
    for value in [info.get("home_page"), *((info.get("project_urls") or {}).values())]:
        if (
            isinstance(value, str)
            and value.startswith(("http://", "https://"))
            and value not in urls
        ):
            urls.append(value)
    first: datetime | None = None
    releases = obj.get("releases")
    if isinstance(releases, dict):
        for files in releases.values():
            for f in files if isinstance(files, list) else ():
                t = _time(f.get("upload_time_iso_8601") if isinstance(f, dict) else None)
                if t is not None and (first is None or t < first):
                    first = t
    return ProjectInfo(owners, organization, tuple(emails), tuple(urls), first)


def repository_of(url: str) -> tuple[str, str] | None:
    """(owner, repository) of a GitHub/GitLab/Bitbucket/Codeberg URL, lower-case."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    host = (parts.hostname or "").lower().removeprefix("www.")
    if host not in _HOSTS:
        return None
    segments = [s for s in parts.path.split("/") if s]
    if len(segments) < 2:
        return None
    return segments[0].lower(), segments[1].lower().removesuffix(".git")


# -- assessing ---------------------------------------------------------------------------------


def _window(
    versions: Sequence[VersionIdentity], start: int, rule: str, message: str
) -> list[IdentityFinding]:
    """A finding for versions[start] and the versions uploaded within the review window."""
    first = versions[start]
    out = [IdentityFinding(rule, first.version, message)]
    if first.uploaded is None:
        return out
    for later in versions[start + 1 :]:
        if later.uploaded is not None and later.uploaded - first.uploaded <= REVIEW_WINDOW:
            out.append(IdentityFinding(rule, later.version, message + f" (in {first.version})"))
    return out


def assess(
    project: str,
    versions: Sequence[VersionIdentity],
    owners: Sequence[Owners] = (),
    info: ProjectInfo | None = None,
    *,
    popular: Container[str] = frozenset(),
    popular_emails: Mapping[str, Iterable[tuple[str, tuple[str, ...]]]] | None = None,
    now: datetime | None = None,
) -> list[IdentityFinding]:
    """Findings about one project. ``versions`` in release order (oldest first); ``owners``
    snapshots oldest first; ``popular`` canonical names of popular projects;
    ``popular_emails`` maps an e-mail to the popular projects (name, owners) that list it."""
    name = canonicalize_name(project)
    found: list[IdentityFinding] = []
    # Publisher changes and dropped provenance, between consecutive attested versions.
    last: VersionIdentity | None = None
    for i, v in enumerate(versions):
        if last is not None and last.provenance and v.provenance is False:
            found += _window(
                versions,
                i,
                "impersonation:provenance-dropped",
                f"{v.version} has no provenance; {last.version} was published by "
                f"{last.publisher} with provenance (a token used outside its trusted workflow?)",
            )
        elif last is not None and last.publisher and v.publisher and v.publisher != last.publisher:
            found += _window(
                versions,
                i,
                "impersonation:publisher-changed",
                f"publisher changed from {last.publisher} ({last.version}) to {v.publisher}",
            )
        if v.provenance is not None:
            last = v if v.provenance else last
    # Owners replaced: none of the earlier owners remains.
    for before, after in itertools.pairwise(owners):
        if before.users and after.users and not set(before.users) & set(after.users):
            message = (
                f"owners replaced between {before.observed:%Y-%m-%d} and {after.observed:%Y-%m-%d}:"
                f" {', '.join(before.users)} → {', '.join(after.users)}"
            )
            changed = [
                i
                for i, v in enumerate(versions)
                if v.uploaded is None or v.uploaded >= before.observed
            ]
            if changed:
                found += _window(versions, changed[0], "impersonation:owners-replaced", message)
            else:
                found.append(IdentityFinding("impersonation:owners-replaced", None, message))
    if info is None or name in popular:
        return _dedupe(found)
    now = now or datetime.now(tz=info.first_upload.tzinfo if info.first_upload else None)
    young = info.first_upload is not None and now - info.first_upload <= NEW_PROJECT
    if young:
        for url in info.urls:
            repo = repository_of(url)
            if repo is None:
                continue
            claimed = canonicalize_name(repo[1])
            candidates: set[str] = {claimed}
            for prefix in _PREFIXES:
                if claimed.startswith(prefix) and len(claimed) > len(prefix) + 2:
                    candidates.add(claimed[len(prefix) :].lstrip("-"))
            hit = next((c for c in sorted(candidates) if c in popular and c != name), None)
            if hit is not None:
                found.append(
                    IdentityFinding(
                        "impersonation:homepage",
                        None,
                        f"new project {name} (first upload {info.first_upload:%Y-%m-%d}) links "
                        f"{url}, the repository of popular project {hit}",
                        detail={"claims": hit, "url": url},
                    )
                )
                break
    if young and popular_emails:
        mine = set(info.owners or ())
        for email in info.emails:
            for other, other_owners in popular_emails.get(email, ()):
                if other == name or (mine and mine & set(other_owners)):
                    continue  # the same people: a new project of a known author
                found.append(
                    IdentityFinding(
                        "impersonation:author",
                        None,
                        f"new project {name} names {email}, the author of popular project "
                        f"{other}, but shares no owner with it",
                        detail={"claims": other, "email": email},
                    )
                )
                break
    return _dedupe(found)


def _dedupe(found: list[IdentityFinding]) -> list[IdentityFinding]:
    seen: set[tuple[str, str | None]] = set()
    out = []
    for f in found:
        key = (f.rule, f.version)
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out
