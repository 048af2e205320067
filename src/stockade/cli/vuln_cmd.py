"""``stockade vulndb import|sync`` and ``stockade vuln show|list|query|curate|history|add``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from stockade.cli.common import JsonOpt, err, out, print_json, print_table, run
from stockade.errors import InvalidRequest
from stockade.services.runtime import Runtime
from stockade.services.vulndb import JUSTIFICATIONS, RATINGS, STATUSES, Curation, ImportReport

db_app = typer.Typer(help="Load the vulnerability database (OSV).", no_args_is_help=True)
app = typer.Typer(help="Query and curate vulnerabilities.", no_args_is_help=True)


def _import(path: Path, json: bool) -> tuple[ImportReport, list[dict[str, Any]]]:
    async def go(r: Runtime) -> tuple[ImportReport, list[dict[str, Any]]]:
        if json or not err.is_terminal:
            report = await r.vulns.import_path(path)
        else:
            with Progress(
                TextColumn("importing"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=err,
                transient=True,
            ) as bar:
                task = bar.add_task("import", total=None)
                report = await r.vulns.import_path(
                    path, progress=lambda done, total: bar.update(task, completed=done, total=total)
                )
        r.audit.record(
            "vulndb.import",
            source=str(path),
            **{k: v for k, v in report.as_dict().items() if k != "skipped"},
        )
        await r.audit.flush()
        r.changed()
        alerts = await r.advisories_changed(report.changed)
        return report, alerts

    return run(go)


def _print_report(report: ImportReport, alerts: list[dict[str, Any]], json: bool) -> None:
    if json:
        print_json({**report.as_dict(), "alerts": alerts})
        return
    for source, reason in report.skipped:
        err.print(f"skipped {source}: {reason}", markup=False, highlight=False)
    typer.echo(
        f"{report.total} records: {report.added} added, {report.updated} updated, "
        f"{report.unchanged} unchanged, {len(report.skipped)} skipped "
        f"({report.withdrawn} withdrawn) in {report.seconds:.1f}s"
    )
    for a in alerts:
        versions = ", ".join(sorted({d["version"] for d in a["downloads"]}))
        typer.echo(
            f"ALERT {a['advisory']}: team {a['team'] or '(no team)'} downloaded "
            f"{a['downloads'][0]['project']} {versions} ({a['outcome']}: {a['delivery']})"
        )


@db_app.command("import")
def import_(
    path: Path = typer.Argument(..., help="Directory of OSV records (JSON/YAML) or an OSV zip."),
    json: bool = JsonOpt,
) -> None:
    """Import OSV advisories. Re-running with the same data changes nothing."""
    report, alerts = _import(path, json)
    _print_report(report, alerts, json)


@db_app.command("sync")
def sync(
    url: str = typer.Option(None, "--url", help="OSV export zip (default: vulndb_url setting)."),
    background: bool = typer.Option(
        False,
        "--background",
        help="Queue a vulndb.sync job for the workers (retried on failure, shown by "
        "`stockade jobs list`) and print its id instead of syncing here.",
    ),
    json: bool = JsonOpt,
) -> None:
    """Download the OSV export and import it (incremental)."""
    from stockade.settings import Settings

    src = url or Settings.load().vulndb_url
    if background:
        job = run(lambda r: r.jobs.defer("vulndb.sync", background=True, url=src))
        if json:
            print_json({"job": job})
        else:
            typer.echo(f"queued vulndb.sync job {job}" if job else "a vulndb.sync job is queued")
        return

    async def go(r: Runtime) -> tuple[ImportReport, list[dict[str, Any]]]:
        report = await r.vulns.sync(src, r.http)
        r.audit.record("vulndb.sync", url=src, added=report.added, updated=report.updated)
        await r.audit.flush()
        r.changed()
        alerts = await r.advisories_changed(report.changed)
        return report, alerts

    report, alerts = run(go)
    _print_report(report, alerts, json)


@app.command("show")
def show(
    ident: str = typer.Argument(..., help="Advisory id or alias (CVE-…, GHSA-…)."),
    json: bool = JsonOpt,
) -> None:
    """Show one advisory with its affected packages and curation history."""
    data = run(lambda r: r.vulns.show(ident))
    if json:
        print_json(data)
        return
    sev = data["severity"]
    out.print(f"[bold]{data['id']}[/bold]  {', '.join(data['aliases'])}", highlight=False)
    if data["withdrawn"]:
        out.print(f"[yellow]withdrawn {data['withdrawn']}[/yellow]")
    out.print(
        f"severity: {sev['rating'] or 'unknown'} {sev['score'] or ''} {sev['vector'] or ''}",
        markup=False,
        highlight=False,
    )
    out.print(data["summary"] or (data["details"] or "")[:300], markup=False, highlight=False)
    for a in data["affected"]:
        fixed = ", ".join(a["fixed"]) or "no fix"
        out.print(
            f"  {a['ecosystem']}/{a['name']}: fixed in {fixed}", markup=False, highlight=False
        )
    for c in data["curation_history"]:
        out.print(
            f"  curated {c['created_at']} by {c['author'] or '?'}: {c['package']} "
            f"{c['versions'] or '(all versions)'} → {c['status']} "
            f"{c['justification'] or ''} {c['reason'] or ''} {c['note'] or ''}",
            markup=False,
            highlight=False,
        )


@app.command("list")
def list_(
    package: str = typer.Option(None, "--package", help="Only advisories naming this package."),
    ecosystem: str = typer.Option("PyPI", "--ecosystem"),
    limit: int = typer.Option(100, "--limit"),
    json: bool = JsonOpt,
) -> None:
    """List advisories, newest first."""
    rows = run(lambda r: r.vulns.list_advisories(package=package, ecosystem=ecosystem, limit=limit))
    if json:
        print_json(rows)
        return
    print_table(
        "Advisories",
        ["id", "aliases", "severity", "modified", "summary"],
        [
            [
                r["id"],
                ", ".join(r["aliases"][:3]),
                r["severity"] or "?",
                r["modified"][:10],
                (r["summary"] or "")[:70],
            ]
            for r in rows
        ],
    )


@app.command("query")
def query(
    name: str,
    version: str,
    ecosystem: str = typer.Option("PyPI", "--ecosystem", help="PyPI or conda."),
    json: bool = JsonOpt,
) -> None:
    """Which advisories affect NAME VERSION (with curation applied)."""
    findings = run(lambda r: r.vulns.query(ecosystem, name, version))
    if json:
        print_json([f.as_dict() for f in findings])
        return
    if not findings:
        typer.echo(f"no known vulnerabilities for {name} {version}")
        return
    print_table(
        f"{name} {version}",
        ["id", "aliases", "severity", "fixed in", "status", "decided by"],
        [
            [
                f.id,
                ", ".join(f.aliases[:2]),
                f.severity or "?",
                ", ".join(f.fixed_versions) or "-",
                f.status,
                f.decided_by,
            ]
            for f in findings
        ],
    )


@app.command("curate")
def curate(
    ident: str = typer.Argument(..., help="Advisory id or alias."),
    package: str = typer.Option(..., "--package", help="Package the decision is about."),
    ecosystem: str = typer.Option("PyPI", "--ecosystem"),
    versions: str = typer.Option(
        None, "--versions", help="Only these versions (PEP 440 specifier, e.g. '>=2,<3')."
    ),
    status: str = typer.Option(
        None, "--status", help=" | ".join(STATUSES[:-1]) + " | feed (back to the feed's verdict)"
    ),
    justification: str = typer.Option(
        None, "--justification", help="VEX justification: " + ", ".join(JUSTIFICATIONS)
    ),
    severity: str = typer.Option(None, "--severity", help="Override: " + ", ".join(RATINGS)),
    score: float = typer.Option(None, "--score", help="Override the CVSS base score."),
    reason: str = typer.Option(None, "--reason", help="Why (required for overrides)."),
    note: str = typer.Option(None, "--note"),
    author: str = typer.Option(None, "--author", help="Who decides (default: $USER)."),
    json: bool = JsonOpt,
) -> None:
    """Record an expert decision; history is kept, nothing is overwritten."""

    async def go(r: Runtime) -> Curation:
        c = await r.vulns.curate(
            ident,
            package=package,
            ecosystem=ecosystem,
            versions=versions,
            status=status,
            justification=justification,
            severity=severity,
            score=score,
            reason=reason,
            note=note,
            author=author or _whoami(),
        )
        await r.curated(c, c.author)
        return c

    c = run(go)
    if json:
        print_json(c.as_dict())
    else:
        typer.echo(
            f"{c.advisory_id} for {c.package} {c.versions or '(all versions)'}: "
            f"{c.status}" + (f" ({c.justification})" if c.justification else "")
        )


@app.command("history")
def history(
    ident: str, package: str = typer.Option(None, "--package"), json: bool = JsonOpt
) -> None:
    """Every curation of an advisory, oldest first."""
    items = run(lambda r: r.vulns.history(ident, package))
    if json:
        print_json([c.as_dict() for c in items])
        return
    print_table(
        f"Curation history of {ident}",
        ["at", "author", "package", "versions", "status", "justification", "reason", "note"],
        [
            [
                c.created_at.isoformat()[:19],
                c.author,
                c.package,
                c.versions or "all",
                c.status,
                c.justification,
                c.reason,
                c.note,
            ]
            for c in items
        ],
    )


@app.command("add")
def add(
    path: Path = typer.Argument(..., help="OSV record(s) you wrote (JSON/YAML, file or dir)."),
    json: bool = JsonOpt,
) -> None:
    """Add your own advisories (internal packages, gaps in the feed)."""

    async def go(r: Runtime) -> list[str]:
        ids = await r.vulns.add_local(path)
        r.audit.record("vuln.add", advisories=ids)
        await r.audit.flush()
        r.changed()
        return ids

    ids = run(go)
    if json:
        print_json({"added": ids})
    else:
        typer.echo(f"added {len(ids)} advisory(ies): {', '.join(ids)}")


@app.command("map-conda")
def map_conda(
    conda_name: str = typer.Argument(..., help="conda package name."),
    pypi_name: str = typer.Argument(None, help="PyPI project it ships."),
    not_python: bool = typer.Option(
        False, "--not-python", help="It is not a Python project: no PyPI advisories apply."
    ),
    json: bool = JsonOpt,
) -> None:
    """Map a conda package to the PyPI project it ships (or show the current mapping)."""

    async def go(r: Runtime) -> tuple[str | None, str]:
        if pypi_name or not_python:
            if pypi_name and not_python:
                raise InvalidRequest("give a PyPI name or --not-python, not both")
            await r.vulns.map_conda(conda_name, None if not_python else pypi_name, _whoami())
            r.audit.record("vuln.map_conda", project=conda_name, pypi=pypi_name)
            await r.audit.flush()
            r.changed()
        return await r.vulns.conda_mapping(conda_name)

    pypi, decided = run(go)
    if json:
        print_json({"conda": conda_name.lower(), "pypi": pypi, "decided_by": decided})
    else:
        target = pypi or "(not a Python project)"
        typer.echo(f"conda {conda_name.lower()} → PyPI {target}  [{decided}]")


def _whoami() -> str | None:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None
