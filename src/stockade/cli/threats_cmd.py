"""``stockade threats report|list``: the malware scanner's verdicts on stored files."""

from __future__ import annotations

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
