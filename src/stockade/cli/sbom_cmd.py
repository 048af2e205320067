"""``stockade sbom create`` (SPDX / CycloneDX / OpenVEX of a lock file, an environment, a
distribution, an index or what was downloaded) and ``stockade sbom scan`` (vulnerabilities of
anyone's SPDX or CycloneDX SBOM)."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import typer

from stockade.cli.common import err, print_json, print_table, run
from stockade.cli.scan_cmd import LEVELS, counts_at, sarif
from stockade.core.archives import validate_distribution
from stockade.core.lockfiles import MAX_FILE_SIZE, read_inventory
from stockade.core.sbom.model import Bom, from_distribution, from_inventory
from stockade.core.sbom.read import read_sbom
from stockade.errors import InvalidRequest, PayloadTooLarge, StockadeError
from stockade.services.repo import utcnow
from stockade.services.runtime import Runtime
from stockade.services.sbom import SbomService, parse_since
from stockade.services.vulndb import Finding

# The SPDX and CycloneDX libraries take about a second to import: only `sbom create` loads them.
FORMATS = ("spdx", "spdx-tv", "cyclonedx", "openvex")

app = typer.Typer(
    help="Software bills of materials: create SPDX / CycloneDX / OpenVEX, scan anyone's SBOM.",
    no_args_is_help=True,
)


def _fail(exc: StockadeError) -> typer.Exit:
    err.print(exc.diagnostics(), markup=False, highlight=False)
    return typer.Exit(2)


def _progress(n: int, total: int) -> None:
    if n == total or n % 50 == 0:
        err.print(f"{n}/{total} projects", markup=False, highlight=False)


def _epoch() -> int | None:
    raw = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    return int(raw) if raw.isdigit() else None


@app.command("create")
def create(
    file: Path = typer.Argument(
        None,
        help="A lock or requirements file: requirements.txt, pylock.toml, uv.lock, poetry.lock, "
        "environment.yml or a conda explicit lock.",
    ),
    env: Path = typer.Option(None, "--env", help="An installed environment or a conda prefix."),
    index: str = typer.Option(
        None, "--index", help="An index: what its policy allows now (with --downloads: a filter)."
    ),
    wheel: Path = typer.Option(None, "--wheel", help="One wheel or sdist."),
    downloads: bool = typer.Option(
        False, "--downloads", help="What was downloaded (audit log); see --token/--team/--since."
    ),
    token: str = typer.Option(None, "--token", help="--downloads: of this token id."),
    team: str = typer.Option(None, "--team", help="--downloads: of this team's tokens."),
    since: str = typer.Option("7d", "--since", help="--downloads: 7d, 12h, 2w or a date."),
    until: str = typer.Option(None, "--until", help="--downloads: end (a date); default now."),
    fmt: str = typer.Option("cyclonedx", "--format", help=" | ".join(FORMATS)),
    output: Path = typer.Option(None, "--output", "-o", help="Write here instead of stdout."),
    with_vulns: bool = typer.Option(
        False, "--with-vulns", help="Add the curated vulnerabilities (CycloneDX VEX, SPDX refs)."
    ),
    reproducible: bool = typer.Option(
        False,
        "--reproducible",
        help="Serial number / namespace from a hash of the content, time from SOURCE_DATE_EPOCH "
        "(else 1970): the same input gives byte-identical output.",
    ),
) -> None:
    """Write an SBOM (stdout, or --output). Exit 0: written; 2: error."""
    from stockade.core.sbom.render import check_format, render
    from stockade.core.sbom.spdx import Stamp

    try:
        check_format(fmt)
        if fmt == "openvex":
            with_vulns = True
        sources = [x for x in (file, env, wheel) if x is not None]
        if index is not None and not downloads:
            sources.append(Path(index))
        if downloads:
            sources.append(Path("downloads"))
        if len(sources) != 1:
            raise InvalidRequest(
                "give exactly one input",
                "a lock FILE, --env PATH, --wheel FILE, --index NAME or --downloads",
            )
        if not downloads and (token or team):
            raise InvalidRequest("--token and --team go with --downloads")
        bom = _local_bom(file, env, wheel)
        needs_db = with_vulns or bom is None
    except StockadeError as exc:
        raise _fail(exc) from None
    if needs_db:

        async def go(r: Runtime) -> Bom:
            svc = SbomService(r)
            got = bom
            if got is None and downloads:
                now = utcnow()
                got = await svc.downloads_bom(
                    since=parse_since(since, now),
                    until=parse_since(until, now) if until else None,
                    token=token,
                    team=team,
                    index=index,
                )
            elif got is None:
                assert index is not None
                got = await svc.index_bom(index, progress=_progress)
            got = await svc.with_licenses(got)
            got = await svc.with_vulns(got) if with_vulns else got
            r.audit.record(  # SSDF PS.3.2 evidence: provenance data produced
                "sbom.create",
                project=got.name,
                format=fmt,
                kind=got.kind,
                components=len(got.components),
                vulnerabilities=len(got.vulns),
            )
            await r.audit.flush()
            return got

        bom = run(go, exit_code=2)
    assert bom is not None
    for w in bom.warnings:
        err.print(f"note: {w}", markup=False, highlight=False)
    text = render(
        bom,
        fmt,
        Stamp.make(bom, reproducible=reproducible, epoch=_epoch()),
        with_vulns=with_vulns,
    )
    if output is not None:
        output.write_text(text, encoding="utf-8")
        err.print(
            f"{len(bom.components)} components ({bom.kind}) written to {output} as {fmt}",
            markup=False,
            highlight=False,
        )
    else:
        sys.stdout.write(text)
        sys.stdout.flush()


def _local_bom(file: Path | None, env: Path | None, wheel: Path | None) -> Bom | None:
    """The BOM of a local input, or None for inputs read from the database."""
    if wheel is not None:
        if not wheel.is_file():
            raise InvalidRequest(f"{wheel} is not a file", "give a .whl, .tar.gz or .zip")
        meta = validate_distribution(wheel, wheel.name)
        digest = hashlib.sha256()
        with wheel.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        return from_distribution(meta, wheel.name, digest.hexdigest())
    if env is not None:
        kind = "conda-prefix" if (env / "conda-meta").is_dir() else "python-env"
        return from_inventory(read_inventory(env, kind, details=True), env.name or str(env))
    if file is not None:
        return from_inventory(read_inventory(file, details=True), file.name)
    return None


@app.command("scan")
def scan(
    sbom: Path = typer.Argument(..., help="An SPDX (JSON or tag-value) or CycloneDX JSON SBOM."),
    json: bool = typer.Option(False, "--json", help="Same as --format json."),
    fmt: str = typer.Option("table", "--format", help="table | json | sarif"),
    fail_on: str = typer.Option("any", "--fail-on", help=" | ".join(LEVELS)),
) -> None:
    """Report known vulnerabilities of the packages an SBOM lists (ours or anyone's), like
    `stockade scan`. Exit 0: nothing at or above --fail-on; 1: found; 2: error."""
    fmt = "json" if json else fmt
    try:
        if fail_on not in LEVELS:
            raise InvalidRequest(f"--fail-on {fail_on!r}", f"use one of {', '.join(LEVELS)}")
        if fmt not in ("table", "json", "sarif"):
            raise InvalidRequest(f"--format {fmt!r}", "use table, json or sarif")
        if not sbom.is_file():
            raise InvalidRequest(f"{sbom} does not exist or is not a file", "check the path")
        if sbom.stat().st_size > MAX_FILE_SIZE:
            raise PayloadTooLarge(f"{sbom} is larger than 50 MB", "check that this is an SBOM")
        got = read_sbom(sbom.read_bytes(), str(sbom))
    except StockadeError as exc:
        raise _fail(exc) from None

    async def go(r: Runtime) -> list[Finding]:
        found = await r.vulns.query_many(got.pins)
        return [f for fs in found.values() for f in fs]

    findings = run(go, exit_code=2)
    failing = [f for f in findings if counts_at(f, fail_on)]
    if fmt == "json":
        print_json(
            {
                "format": got.format,
                "scanned": len(got.pins),
                "findings": [f.as_dict() for f in findings],
                "skipped": list(got.skipped),
            }
        )
    elif fmt == "sarif":
        print_json(sarif(findings, str(sbom)))
    else:
        for s in got.skipped:
            err.print(f"not scanned: {s}", markup=False, highlight=False)
        title = f"{len(got.pins)} packages scanned ({got.format} SBOM)"
        if findings:
            print_table(
                f"{title}: {len(failing)} finding(s) at or above {fail_on}",
                ["package", "version", "id", "severity", "fixed in", "status", "decided by"],
                [
                    [
                        f.package,
                        f.version,
                        f.id,
                        f.severity or "?",
                        ", ".join(f.fixed_versions) or "-",
                        f.status,
                        f.decided_by,
                    ]
                    for f in findings
                ],
            )
        else:
            typer.echo(f"{title}: no known vulnerabilities")
    sys.stdout.flush()
    raise typer.Exit(1 if failing else 0)
