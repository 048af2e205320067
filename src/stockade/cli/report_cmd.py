"""``stockade report ssdf``: NIST SSDF evidence for a period, from Stockade's own data."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import typer

from stockade.cli.common import run
from stockade.core.auth import parse_when
from stockade.errors import InvalidRequest
from stockade.services.runtime import Runtime
from stockade.services.ssdf import SsdfReport, render_html

app = typer.Typer(help="Compliance reports from Stockade's own data.", no_args_is_help=True)

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def html_to_pdf(page: str, output: Path) -> None:
    """Print an HTML page to PDF with a headless Chromium (Debian's ``chromium`` package)."""
    browser = next((b for b in map(shutil.which, BROWSERS) if b), None)
    if browser is None:
        raise InvalidRequest(
            "PDF needs a Chromium to print the report, and none was found",
            "install it (apt-get install chromium) or use --format html and print that",
        )
    with tempfile.TemporaryDirectory(prefix="stockade-report-") as tmp:
        source = Path(tmp) / "report.html"
        source.write_text(page, encoding="utf-8")
        res = subprocess.run(
            [
                browser,
                "--headless",
                "--disable-gpu",
                "--no-sandbox",
                f"--user-data-dir={tmp}/profile",
                "--no-pdf-header-footer",
                f"--print-to-pdf={output}",
                source.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    if res.returncode != 0 or not output.exists() or output.stat().st_size == 0:
        raise InvalidRequest(
            f"{browser} could not print the report ({res.returncode}): {res.stderr[-300:]}",
            "use --format html",
        )


@app.command("ssdf")
def ssdf(
    start: str = typer.Option(None, "--from", help="Start (a date, or a duration back: 30d)."),
    end: str = typer.Option(None, "--to", help="End, exclusive (a date or duration; now)."),
    fmt: str = typer.Option("html", "--format", help="html, pdf or json"),
    output: Path = typer.Option(None, "--output", "-o", help="File (required for pdf)."),
) -> None:
    """Evidence for NIST SP 800-218 (SSDF) practices over a period: per task, what the data
    shows (with the rows behind it) or that it is not evidenced, and which statements of CISA's
    secure software development attestation form the evidence supports. Default: last 30 days."""
    if fmt not in ("html", "pdf", "json"):
        raise typer.BadParameter(f"--format {fmt!r}: use html, pdf or json")
    if fmt == "pdf" and output is None:
        raise typer.BadParameter("--format pdf needs --output FILE")
    until = parse_when(end, "--to") or datetime.now(UTC)
    since = parse_when(start, "--from") or until - timedelta(days=30)

    async def go(r: Runtime) -> dict[str, Any]:
        return await SsdfReport(r.sessions, r.audit).build(since, until)

    report = run(go)
    if fmt == "json":
        body = orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n"
    else:
        body = render_html(report)
    if fmt == "pdf":
        assert output is not None
        html_to_pdf(body, output)
    elif output is not None:
        output.write_text(body, encoding="utf-8")
    else:
        sys.stdout.write(body)
    if output is not None:
        counts: dict[str, int] = {}
        for p in report["practices"]:
            for t in p["tasks"]:
                counts[t["status"]] = counts.get(t["status"], 0) + 1
        summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
        typer.echo(f"SSDF report written to {output}: {summary} tasks", err=True)
