"""``stockade env lock --channel``: resolve a conda environment.yml with rattler against a
Stockade conda channel as it is served right now (policy-filtered repodata), and write the
result as a ``conda list --explicit`` lock.

The solve goes through Stockade's own HTTP endpoints with a short-lived read token in a
``/t/<token>/`` URL, so it sees exactly what clients see; the lock's URLs carry no token (users
install with their own). Each line ends with the record's md5, the digest ``conda create --file``
checks; the record's sha256 is written on a comment line above it for tools that read it.
"""

from __future__ import annotations

import tempfile
from datetime import timedelta
from pathlib import Path

import rattler
import yaml

from stockade.errors import InvalidRequest

_HINT = "give an environment.yml with a `dependencies:` list of conda match specs"


def read_specs(path: Path) -> tuple[list[str], list[str]]:
    """The conda match specs of an environment.yml, and notes (channel prefixes dropped).
    Refuses a ``pip:`` section (lock it against a PyPI index) and anything not a spec."""
    try:
        doc = yaml.safe_load(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"cannot read {path}: {exc}", _HINT) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise InvalidRequest(f"{path}: not valid YAML{where}", _HINT) from None
    deps = doc.get("dependencies") if isinstance(doc, dict) else None
    if not isinstance(deps, list) or not deps:
        raise InvalidRequest(f"{path}: no `dependencies:` list", _HINT)
    specs: list[str] = []
    notes: list[str] = []
    for n, dep in enumerate(deps, 1):
        if isinstance(dep, dict) and "pip" in dep:
            raise InvalidRequest(
                f"{path}: dependency {n} is a `pip:` section, which a conda channel cannot resolve",
                "lock the pip requirements separately: `stockade env lock TEAM/NAME "
                "requirements.in --index INDEX`",
            )
        if not isinstance(dep, str) or not dep.strip():
            raise InvalidRequest(f"{path}: dependency {n} is not a match spec: {dep!r}", _HINT)
        spec = dep.strip()
        if "::" in spec:
            channel, spec = spec.split("::", 1)
            notes.append(f"{dep}: channel {channel!r} dropped, solved against the Stockade channel")
        try:
            rattler.MatchSpec(spec)
        except Exception as exc:
            raise InvalidRequest(
                f"{path}: dependency {n} {dep!r} is not a conda match spec ({exc})", _HINT
            ) from None
        specs.append(spec)
    return specs, notes


async def solve_explicit(
    channel_url: str,
    public_url: str,
    specs: list[str],
    platform: str,
    *,
    header: str,
) -> bytes:
    """Solve ``specs`` against ``channel_url`` (with its token) for ``platform`` and noarch;
    the explicit lock names files under ``public_url`` (the same channel without the token).
    Virtual packages are this machine's when ``platform`` is its own, else none (a package
    that needs ``__glibc`` or ``__cuda`` cannot be locked for another platform)."""
    try:
        target = rattler.Subdir(platform)
    except Exception:
        raise InvalidRequest(
            f"{platform!r} is not a conda platform", "use linux-64, osx-arm64, win-64, …"
        ) from None
    virtual = rattler.VirtualPackage.detect() if platform == str(rattler.Subdir.current()) else []
    with tempfile.TemporaryDirectory(prefix="stockade-conda-lock-") as tmp:
        gateway = rattler.Gateway(cache_dir=Path(tmp))
        try:
            records = await rattler.solve(
                [channel_url],
                specs,
                gateway=gateway,
                platforms=[target, rattler.Subdir("noarch")],
                virtual_packages=virtual,
                timeout=timedelta(minutes=5),
            )
        except Exception as exc:
            text = str(exc).replace(channel_url, public_url)
            raise InvalidRequest(
                f"rattler could not solve {', '.join(specs)} against {public_url}: {text}",
                "a package may be blocked by the channel's policy: see `stockade policy "
                "explain CHANNEL PACKAGE`",
            ) from None
    lines = [f"# {header}", f"# platform: {platform}", "@EXPLICIT"]
    prefix = channel_url.rstrip("/") + "/"
    public = public_url.rstrip("/") + "/"
    for r in sorted(records, key=lambda r: str(r.name.normalized)):
        url = str(r.url)
        if url.startswith(prefix):
            url = public + url[len(prefix) :]
        sha = r.sha256.hex() if isinstance(r.sha256, bytes) else r.sha256
        md5 = r.md5.hex() if isinstance(r.md5, bytes) else r.md5
        if sha:
            lines.append(f"# sha256: {sha}")
        lines.append(f"{url}#{md5}" if md5 else url)
    return ("\n".join(lines) + "\n").encode()
