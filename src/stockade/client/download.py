"""``stockade client download``: pinned requirements fetched from a signed index, verified.

Trust comes from a root file handed over out of band (``stockade tuf init --root-out`` or
``stockade tuf root``), never from the network: python-tuf's client (``tuf.ngclient.Updater``)
starts from that root, follows the root chain (key rotations), refreshes timestamp → snapshot
→ targets → the hashed bin of each target, and checks every download against the signed length
and sha256. For each ``name==version`` it reads the project page through its TUF target
(``simple/<project>/index.json``, the page exactly as the index serves it), picks the file for
this interpreter and platform (the best compatible wheel by ``packaging.tags``, else the
sdist), downloads its target (``files/<project>/<filename>``) and checks the requirement's
``--hash`` values too. Everything goes to a temporary directory inside DIR and is renamed into
DIR only when every requirement verified: a failure leaves DIR as it was.

Trusted metadata persists in a cache directory per (index, root) so a later run refuses
metadata older than what it already saw (rollback) as well as expired metadata (freeze).
"""

from __future__ import annotations

import base64
import hashlib
import os
import platform
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import orjson
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.tags import sys_tags
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version
from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import TargetFile
from tuf.ngclient import Updater, Urllib3Fetcher
from tuf.ngclient._internal.proxy import ProxyEnvironment

from stockade import __version__
from stockade.core.lockfiles import Pin, read_inventory
from stockade.errors import InvalidRequest, StockadeError

SDIST_SUFFIXES = (".tar.gz", ".zip")


class VerificationFailed(StockadeError):
    """A page, a file or the TUF metadata itself failed verification (or could not be
    fetched): nothing unverified was written."""


@dataclass(frozen=True, slots=True)
class Downloaded:
    """One verified file in DIR."""

    project: str
    version: str
    filename: str
    path: str  # in DIR
    target: str  # TUF target path, files/<project>/<filename>
    sha256: str
    length: int
    page_target: str  # the signed page the file was chosen from
    page_sha256: str
    cached: bool  # already in DIR with the signed length and sha256: not downloaded again
    yanked: bool  # the page marks it yanked (an exact pin still installs it, as pip does)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Index:
    """Where an index publishes TUF metadata, and the credentials to read it."""

    metadata_url: str  # …/pypi/<index>/tuf/
    authorization: str | None  # an Authorization header value

    @property
    def targets_url(self) -> str:
        return self.metadata_url + "targets/"

    @classmethod
    def parse(cls, url: str, token: str | None = None) -> Index:
        """The index URL as pip takes it (``…/pypi/<index>/simple/``; ``…/pypi/<index>/`` or
        ``…/tuf/`` work too), userinfo (``__token__:<token>@``) and ``/t/<token>/`` included;
        ``token`` wins over the userinfo."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidRequest(
                f"{url!r} is not an http(s) index URL",
                "give the index URL pip uses, e.g. https://stockade.example/pypi/main/simple/",
            )
        path = parts.path.rstrip("/")
        for suffix in ("/simple", "/tuf"):
            path = path.removesuffix(suffix)
        if "/pypi/" not in path + "/":
            raise InvalidRequest(
                f"{url!r} is not a Stockade PyPI index URL",
                "it looks like https://stockade.example/pypi/<index>/simple/",
            )
        user, password = parts.username, parts.password
        netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
        if ":" in parts.hostname:  # IPv6
            netloc = f"[{parts.hostname}]" + (f":{parts.port}" if parts.port else "")
        auth: str | None = None
        if token:
            auth = _basic("__token__", token)
        elif user is not None or password is not None:
            auth = _basic(unquote(user or ""), unquote(password or ""))
        base = urlunsplit((parts.scheme, netloc, path + "/tuf/", "", ""))
        return cls(base, auth)


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class _Fetcher(Urllib3Fetcher):
    """python-tuf's urllib3 fetcher (proxies from the environment) with the index's
    credentials on every request, and a byte counter for a progress bar."""

    def __init__(self, authorization: str | None, on_bytes: Callable[[int], None]) -> None:
        super().__init__(app_user_agent=f"stockade/{__version__}")
        headers = {"User-Agent": f"stockade/{__version__} python-tuf"}
        if authorization is not None:
            headers["Authorization"] = authorization
        self._proxy_env = ProxyEnvironment(headers=headers)
        self.on_bytes = on_bytes

    def _fetch(self, url: str) -> Iterator[bytes]:
        chunks = super()._fetch(url)  # raises on an HTTP error before the first chunk
        return self._counted(chunks)

    def _counted(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            self.on_bytes(len(chunk))
            yield chunk


def default_metadata_dir(index: Index, root: bytes) -> Path:
    """One trusted-metadata cache per (index, initial root): another root never inherits it."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    key = hashlib.sha256(index.metadata_url.encode() + b"\0" + root).hexdigest()[:24]
    return Path(base) / "stockade" / "tuf" / key


def explain(exc: Exception) -> tuple[str, str | None]:
    """A TUF or download failure → (what failed, a hint)."""
    if isinstance(exc, tuf_errors.LengthOrHashMismatchError):
        return (
            f"its length or sha256 differs from the signed metadata ({exc}): it was tampered "
            "with or corrupted",
            "report it to the index's administrators; do not install it from elsewhere",
        )
    if isinstance(exc, tuf_errors.DownloadLengthMismatchError):
        return (
            f"the server sent more bytes than the signed length ({exc}): tampered with",
            "report it to the index's administrators",
        )
    if isinstance(exc, tuf_errors.ExpiredMetadataError):
        return (
            f"signed metadata has expired ({exc}): a freeze attack, or a server that no "
            "longer re-signs its timestamp",
            "check that the server runs (it re-signs every tuf_refresh_interval) and that "
            "this machine's clock is right",
        )
    if isinstance(exc, tuf_errors.BadVersionNumberError):
        return (
            f"the server sent older metadata than this client already trusts ({exc}): a "
            "rollback attack, or a restored server",
            "report it to the index's administrators; do not delete the metadata cache to "
            "get past it unless they confirm a restore",
        )
    if isinstance(exc, tuf_errors.UnsignedMetadataError):
        return (
            f"a signature does not verify against the trusted keys ({exc})",
            "the metadata was forged or signed with a key the root does not name; check "
            "that --root is this index's root",
        )
    if isinstance(exc, tuf_errors.DownloadHTTPError):
        hint = None
        if exc.status_code in (401, 403):
            hint = "pass --token (a read token for the index) or put it in the index URL"
        elif exc.status_code == 404:
            hint = "is the index signed? (`stockade tuf init INDEX` on the server)"
        return f"the server answered HTTP {exc.status_code}", hint
    if isinstance(exc, tuf_errors.DownloadError):
        cause = exc.__cause__ or exc
        return f"download failed: {cause}", "check the index URL and that the server runs"
    if isinstance(exc, tuf_errors.RepositoryError):
        return f"{type(exc).__name__}: {exc}", None
    return f"{type(exc).__name__}: {exc}", None


class _Guard:
    """``with _Guard("the file files/a/b.whl"):`` turns TUF and download errors into a
    VerificationFailed naming what was being verified."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        if exc is None or not isinstance(
            exc, tuf_errors.RepositoryError | tuf_errors.DownloadError
        ):
            return
        message, hint = explain(exc)
        raise VerificationFailed(f"{self.what}: {message}", hint) from exc


@dataclass(frozen=True, slots=True)
class _Candidate:
    filename: str
    rank: int  # lower is better: the position of the best tag in sys_tags(); sdists last
    sha256: str | None
    yanked: bool


def _candidates(page: dict[str, Any], pin: Pin, tag_rank: dict[str, int]) -> list[_Candidate]:
    wanted = Version(pin.version or "")
    python = Version(platform.python_version())
    out: list[_Candidate] = []
    for entry in page.get("files", []):
        filename = str(entry.get("filename", ""))
        try:
            if filename.endswith(".whl"):
                _, version, _, tags = parse_wheel_filename(filename)
                ranks = [tag_rank[str(t)] for t in tags if str(t) in tag_rank]
                if not ranks:
                    continue
                rank = min(ranks)
            elif filename.endswith(SDIST_SUFFIXES):
                _, version = parse_sdist_filename(filename)
                rank = len(tag_rank) + 1
            else:
                continue
        except (InvalidWheelFilename, InvalidSdistFilename, InvalidVersion):
            continue
        if version != wanted:
            continue
        requires = entry.get("requires-python")
        if requires:
            try:
                if python not in SpecifierSet(str(requires)):
                    continue
            except InvalidSpecifier:
                pass
        hashes = entry.get("hashes") or {}
        sha = hashes.get("sha256")
        out.append(
            _Candidate(filename, rank, sha.lower() if sha else None, bool(entry.get("yanked")))
        )
    return sorted(out, key=lambda c: (c.rank, c.filename))


def _hash_ok(path: Path, hashes: tuple[str, ...]) -> bool:
    """Whether the file matches one of the requirement's ``--hash`` values (pip's rule)."""
    by_algo: dict[str, set[str]] = {}
    for h in hashes:
        algo, _, hexdigest = h.partition(":")
        by_algo.setdefault(algo.lower(), set()).add(hexdigest.lower())
    for algo, digests in by_algo.items():
        try:
            hasher = hashlib.new(algo)
        except ValueError:
            continue
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                hasher.update(block)
        if hasher.hexdigest() in digests:
            return True
    return False


def read_pins(requirements: Path) -> tuple[list[Pin], list[str]]:
    """The exact pins of a requirements file, and warnings; unpinned entries are refused."""
    inventory = read_inventory(requirements, "requirements")
    if inventory.unpinned:
        listed = ", ".join(f"{p.spec or p.name} ({p.source})" for p in inventory.unpinned)
        raise InvalidRequest(
            f"{requirements}: not pinned to one version: {listed}",
            "pin every requirement as name==version (resolve first, e.g. `uv pip compile "
            "requirements.in -o requirements.txt --generate-hashes`); this command does not "
            "resolve dependencies",
        )
    pins = [p for p in inventory.pins if p.ecosystem == "PyPI"]
    if not pins:
        raise InvalidRequest(f"{requirements} pins nothing", "list name==version lines")
    return pins, list(inventory.warnings)


class Progress:
    """Callbacks a front end implements (the CLI draws a rich progress bar)."""

    def start(self, total_files: int) -> None:
        pass

    def file(self, name: str, length: int) -> None:
        pass

    def bytes(self, count: int) -> None:
        pass

    def done_file(self) -> None:
        pass


def download(
    requirements: Path,
    dest: Path,
    index_url: str,
    root: Path,
    *,
    token: str | None = None,
    metadata_dir: Path | None = None,
    progress: Progress | None = None,
) -> list[Downloaded]:
    """Download and verify the file of every pin in ``requirements`` into ``dest``."""
    progress = progress or Progress()
    pins, _ = read_pins(requirements)
    try:
        root_bytes = root.read_bytes()
    except OSError as exc:
        raise InvalidRequest(
            f"cannot read the trusted root {root}: {exc.strerror}",
            "get it out of band from the index's administrator (`stockade tuf root INDEX -o "
            "root.json` on the server, or the file `stockade tuf init --root-out` wrote)",
        ) from None
    index = Index.parse(index_url, token)
    meta = metadata_dir or default_metadata_dir(index, root_bytes)
    meta.mkdir(parents=True, exist_ok=True)
    fetcher = _Fetcher(index.authorization, progress.bytes)
    try:
        with _Guard(f"the trusted root {root}"):
            updater = Updater(
                str(meta), index.metadata_url, None, index.targets_url, fetcher,
                bootstrap=root_bytes,
            )  # fmt: skip
    except ValueError as exc:
        raise InvalidRequest(f"{root} is not TUF root metadata: {exc}") from None
    with _Guard(f"refreshing the TUF metadata of {index.metadata_url}"):
        updater.refresh()

    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".stockade-download-", dir=dest))
    tag_rank: dict[str, int] = {}
    for i, tag in enumerate(sys_tags()):
        tag_rank.setdefault(str(tag), i)
    progress.start(len(pins))
    done: list[Downloaded] = []
    staged: list[tuple[Path, Path]] = []
    try:
        for pin in pins:
            got, staged_file = _one(updater, pin, dest, tmp, tag_rank, progress)
            done.append(got)
            if staged_file is not None:
                staged.append((staged_file, dest / got.filename))
            progress.done_file()
        for src, target in staged:  # every requirement verified: only now into DIR
            os.replace(src, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return done


def _one(
    updater: Updater,
    pin: Pin,
    dest: Path,
    tmp: Path,
    tag_rank: dict[str, int],
    progress: Progress,
) -> tuple[Downloaded, Path | None]:
    name = canonicalize_name(pin.name)
    spec = f"{name}=={pin.version}"
    page_target = f"simple/{name}/index.json"
    with _Guard(f"{spec}: the page {page_target}"):
        page_info = updater.get_targetinfo(page_target)
        if page_info is None:
            raise VerificationFailed(
                f"{spec}: the index has no signed page {page_target}",
                "is the project on this index (and allowed by its policy)? a mirror signs a "
                "page once a client has asked for it",
            )
        progress.file(page_target, page_info.length)
        page_file = tmp / f"page-{name}.json"
        updater.download_target(page_info, str(page_file))
    try:
        page = orjson.loads(page_file.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise VerificationFailed(
            f"{spec}: the signed page {page_target} is not JSON: {exc}"
        ) from None
    candidates = _candidates(page, pin, tag_rank)
    sha_pins = {h.split(":", 1)[1].lower() for h in pin.hashes if h.lower().startswith("sha256:")}
    other_pins = any(not h.lower().startswith("sha256:") for h in pin.hashes)
    if sha_pins and not other_pins:
        candidates = [c for c in candidates if c.sha256 is None or c.sha256 in sha_pins]
    if not candidates:
        raise VerificationFailed(
            f"{spec}: no file for this interpreter and platform on the signed page"
            + (" matching the requirement's --hash values" if pin.hashes else ""),
            f"python {platform.python_version()} on {platform.machine()}: neither a "
            "compatible wheel nor an sdist of that version is listed",
        )
    chosen = candidates[0]
    target = f"files/{name}/{chosen.filename}"
    with _Guard(f"{spec}: the file {target}"):
        info = updater.get_targetinfo(target)
        if info is None:
            raise VerificationFailed(
                f"{spec}: {chosen.filename} is on the page but not a signed target",
                "it may be blocked by the index's policy, or signed in a moment: try again",
            )
        sha = _sha256(info)
        if chosen.sha256 is not None and chosen.sha256 != sha:
            raise VerificationFailed(
                f"{spec}: the signed page lists sha256 {chosen.sha256} for {chosen.filename} "
                f"but the signed target has {sha}"
            )
        final = dest / chosen.filename
        cached = updater.find_cached_target(info, str(final)) is not None
        staged: Path | None = None
        if not cached:
            progress.file(chosen.filename, info.length)
            staged = tmp / chosen.filename
            updater.download_target(info, str(staged))
    if pin.hashes and not _hash_ok(staged or final, pin.hashes):
        raise VerificationFailed(
            f"{spec}: {chosen.filename} matches the signed metadata but none of the "
            f"requirement's --hash values ({', '.join(pin.hashes)})",
            "the requirements file pins other bytes than the index signs: regenerate the "
            "hashes from a trusted source, or ask why the file changed",
        )
    got = Downloaded(
        project=name,
        version=pin.version or "",
        filename=chosen.filename,
        path=str(final),
        target=target,
        sha256=sha,
        length=info.length,
        page_target=page_target,
        page_sha256=_sha256(page_info),
        cached=cached,
        yanked=chosen.yanked,
    )
    return got, staged


def _sha256(info: TargetFile) -> str:
    return str(info.hashes.get("sha256", "")).lower()
