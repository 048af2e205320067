"""``stockade threats …``: scanner verdicts, known-malicious names, dependency confusion."""

from __future__ import annotations

from pathlib import Path

import typer

from stockade.cli.common import JsonOpt, print_json, print_table, run
from stockade.errors import NotFound
from stockade.services.runtime import Runtime
from stockade.services.threats import ScanReport

app = typer.Typer(
    help="Threat findings on stored files (verdicts of the malware scanner).",
    no_args_is_help=True,
)


@app.command("report")
def report(
    sha256: str = typer.Argument(..., help="The file's sha256 (see `stockade package list`)."),
    json: bool = JsonOpt,
) -> None:
    """The scanner's verdict on one stored file, with every finding's evidence."""

    async def go(r: Runtime) -> ScanReport:
        got = await r.threats.report(sha256)
        if got is None:
            raise NotFound(
                f"no scan report for {sha256}",
                "files are scanned when stored (upload or first mirror download); "
                "`stockade inspect FILE` scans a local file",
            )
        return got

    rep = run(go)
    if json:
        print_json(rep.as_dict())
        return
    typer.echo(f"{rep.filename}  {rep.verdict}  score {rep.score:.2f}  ({rep.engine})")
    for f in rep.findings:
        where = f"{f.get('path') or ''}{':' + str(f['line']) if f.get('line') else ''}"
        typer.echo(f"  [{f.get('severity')}] {f.get('rule')}  {where}")
        if f.get("snippet"):
            typer.echo(f"      {f['snippet']}")


@app.command("list")
def list_(
    all_: bool = typer.Option(False, "--all", help="Clean files too."),
    limit: int = typer.Option(100, "--limit"),
    json: bool = JsonOpt,
) -> None:
    """Stored files the scanner flagged (malicious first), newest first."""
    items = run(lambda r: r.threats.recent(limit=limit, flagged_only=not all_))
    if json:
        print_json([i.as_dict() for i in items])
        return
    print_table(
        "Scan verdicts",
        ["verdict", "score", "file", "sha256", "scanned", "top rules"],
        [
            [
                i.verdict,
                f"{i.score:.2f}",
                i.filename,
                i.sha256[:16],
                i.scanned_at.isoformat()[:19],
                ", ".join(sorted({str(f.get("rule")) for f in i.findings})[:3]),
            ]
            for i in items
        ],
    )


@app.command("import-names")
def import_names(
    file: Path = typer.Argument(..., help="A names-only list: one package name per line."),
    source: str = typer.Option(
        None, "--source", help="Name of the list, kept with every record (default: file name)."
    ),
    include_popular: bool = typer.Option(
        False,
        "--include-popular",
        help="Also import names of popular projects (skipped by default: such lists often "
        "hold a popular name whose one bad upload was removed long ago).",
    ),
    json: bool = JsonOpt,
) -> None:
    """Import a known-malicious names list: every version of each name counts as malicious.

    Each name becomes an OSV ``MAL-`` record in the vulnerability database (re-importing the
    same list changes nothing), which a policy's ``threats`` rule blocks.
    """
    import hashlib
    import json as jsonlib
    import tempfile

    from stockade.core.threats.typosquat import PopularNames
    from stockade.errors import InvalidRequest
    from stockade.services.vulndb import ImportReport
    from stockade.types import canonicalize_name

    label = source or file.name
    try:
        lines = file.read_text("utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"cannot read {file}: {exc}", "one package name per line") from exc
    popular = PopularNames.load()
    names: dict[str, str] = {}
    skipped: list[str] = []
    for raw in lines:
        name = raw.strip()
        if not name or name.startswith("#"):
            continue
        canonical = canonicalize_name(name)
        if not include_popular and popular.rank(canonical) is not None:
            skipped.append(canonical)
            continue
        names.setdefault(canonical, name)

    async def go(r: Runtime) -> ImportReport:
        with tempfile.TemporaryDirectory(prefix="stockade-mal-") as tmp:
            for canonical, name in names.items():
                ident = "MAL-LIST-" + hashlib.sha256(canonical.encode()).hexdigest()[:16]
                record = {
                    "id": ident,
                    "modified": "1970-01-01T00:00:00Z",
                    "summary": f"{name} is on the known-malicious list {label}",
                    "database_specific": {"source": label},
                    "affected": [
                        {
                            "package": {"ecosystem": "PyPI", "name": name},
                            "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}]}],
                        }
                    ],
                }
                (Path(tmp) / f"{ident}.json").write_text(jsonlib.dumps(record))
            report = await r.vulns.import_path(Path(tmp), source="malicious-names")
        r.audit.record(
            "threats.import_names",
            source=label,
            names=len(names),
            skipped_popular=len(skipped),
            added=report.added,
        )
        await r.audit.flush()
        r.changed()
        return report

    report = run(go)
    summary = {
        "source": label,
        "names": len(names),
        "added": report.added,
        "updated": report.updated,
        "unchanged": report.unchanged,
        "skipped_popular": skipped,
        "problems": [{"record": n, "why": w} for n, w in report.skipped],
    }
    if json:
        print_json(summary)
        return
    typer.echo(
        f"{len(names)} names from {label}: {report.added} added, {report.updated} updated, "
        f"{report.unchanged} unchanged"
    )
    if skipped:
        typer.echo(
            f"skipped {len(skipped)} popular names (--include-popular imports them): "
            + ", ".join(skipped[:10])
            + (" …" if len(skipped) > 10 else "")
        )
    for n, why in report.skipped[:10]:
        typer.echo(f"  not imported: {n}: {why}", err=True)


@app.command("confusion")
def confusion(json: bool = JsonOpt) -> None:
    """Dependency-confusion traps: private project names that a mirror's upstream publishes.

    Looks each private project name up on the upstream of every mirror it shares a virtual
    index with (one request per name and mirror; this tells the upstream those names). Virtual
    indexes already serve only the private files; this shows where someone tried.
    """
    from stockade.cli.common import err
    from stockade.services.confusion import Collision, find_collisions

    async def go(r: Runtime) -> tuple[list[Collision], list[tuple[str, str, str]]]:
        found, failed = await find_collisions(r.indexes, r.pages)
        for c in found:
            r.audit.record(
                "threat.confusion",
                index=c.mirror_index,
                project=c.project,
                outcome="found",
                private_index=c.private_index,
                upstream_versions=list(c.upstream_versions),
            )
        await r.audit.flush()
        return found, failed

    found, failed = run(go)
    if json:
        print_json(
            {
                "collisions": [c.as_dict() for c in found],
                "failed": [{"project": p, "mirror": m, "error": e} for p, m, e in failed],
            }
        )
    else:
        print_table(
            "Private names published upstream",
            ["project", "private index", "mirror", "through", "upstream versions"],
            [
                [
                    c.project,
                    c.private_index,
                    c.mirror_index,
                    ", ".join(c.virtual_indexes),
                    ", ".join(c.upstream_versions),
                ]
                for c in found
            ],
        )
        if not found:
            typer.echo("no private project name is published by a mirror's upstream")
        for p, m, e in failed:
            err.print(f"could not check {p} on {m}: {e}")


@app.command("identity")
def identity(
    index: str = typer.Argument(..., help="A mirror index."),
    project: str = typer.Argument(..., help="The project."),
    refresh: bool = typer.Option(
        False, "--refresh", help="Look upstream now (JSON API and provenance) before reporting."
    ),
    json: bool = JsonOpt,
) -> None:
    """Who publishes PROJECT on a mirror: per-version Trusted Publisher (PEP 740 provenance),
    owners and links over time, and author-impersonation findings (publisher changed,
    provenance dropped, owners replaced, a new project claiming a popular one's homepage or
    author). Recorded in the background whenever the mirror fetches the project's page."""
    from packaging.utils import canonicalize_name

    from stockade.types import IndexKind

    async def go(r: Runtime) -> dict[str, object]:
        info = await r.indexes.get(index)
        if info.kind is not IndexKind.MIRROR:
            raise NotFound(
                f"index {index!r} is a {info.kind.value} index",
                "identities are recorded for mirror indexes; name the mirror",
            )
        name = canonicalize_name(project)
        if refresh:
            served = await r.pages.project_page(info, name)
            await r.identity.observe(info, served.page)
        return await r.identity.report(info.name, name)

    rep = run(go)
    if json:
        print_json(rep)
        return
    versions = rep["versions"]
    assert isinstance(versions, list)
    if not versions and not rep["owners"]:
        typer.echo(
            f"nothing recorded yet for {rep['project']} on {index}: run with --refresh, or "
            "fetch its page through the mirror (recording runs in the background)"
        )
        return
    print_table(
        f"{rep['project']} on {index}: publishers per version",
        ["version", "publisher (PEP 740)", "provenance", "uploaded"],
        [
            [
                v["version"],
                v["publisher"] or "-",
                {True: "yes", False: "NO", None: "not offered"}[v["provenance"]],
                (v["uploaded"] or "-")[:16],
            ]
            for v in reversed(versions)
        ],
    )
    owners = rep["owners"]
    assert isinstance(owners, list)
    for o in owners:
        org = f" (organization {o['organization']})" if o["organization"] else ""
        typer.echo(f"owners seen {o['observed'][:16]}: {', '.join(o['users']) or '-'}{org}")
    findings = rep["findings"]
    assert isinstance(findings, list)
    if not findings:
        typer.echo("no impersonation findings")
    for f in findings:
        where = f"version {f['version']}" if f["version"] else "every version"
        typer.echo(f"{f['tier'].upper()} {f['rule']} ({where}): {f['message']}")


@app.command("provenance")
def provenance(
    index: str = typer.Argument(..., help="A PyPI index (mirror, private or virtual)."),
    project: str = typer.Argument(..., help="The project."),
    verify: bool = typer.Option(
        False, "--verify", help="Fetch and verify the provenance not verified yet (mirrors)."
    ),
    json: bool = JsonOpt,
) -> None:
    """PEP 740 provenance of PROJECT's files: verified (with the Trusted Publisher), failed
    (with the reason: the file is not served), pending (offered upstream, not verified yet) or
    none (also `GET /api/v1/indexes/INDEX/provenance/PROJECT`)."""
    from packaging.utils import canonicalize_name

    async def go(r: Runtime) -> list[dict[str, object]]:
        info = await r.indexes.get(index)
        served = await r.pages.project_page(info, canonicalize_name(project))
        page = served.unfiltered or served.page
        return await r.provenance.report(info.name, page, verify=verify)

    rows = run(go)
    if json:
        print_json(rows)
        return

    def publishers(row: dict[str, object]) -> str:
        pubs = row["publishers"]
        assert isinstance(pubs, list)
        return ", ".join(
            f"{p['kind']}:{p['repository'] or p['email']}"
            + (f" ({p['workflow']})" if p["workflow"] else "")
            for p in pubs
        )

    print_table(
        f"{canonicalize_name(project)} on {index}: PEP 740 provenance",
        ["file", "status", "publisher / reason"],
        [
            [
                str(row["filename"]),
                str(row["status"]).upper() if row["status"] == "failed" else str(row["status"]),
                str(row["reason"]) if row["status"] == "failed" else publishers(row) or "-",
            ]
            for row in rows
        ],
    )
