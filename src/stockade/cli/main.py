"""``stockade`` command line: thin wrappers over the services (see ``docs/cli.md``)."""

from __future__ import annotations

import sys

import typer

from stockade import __version__
from stockade.cli import (
    audit_cmd,
    client_cmd,
    conda_cmd,
    console_cmd,
    deploy_cmd,
    env_cmd,
    index_cmd,
    jobs_cmd,
    names_cmd,
    package_cmd,
    policy_cmd,
    report_cmd,
    sbom_cmd,
    scan_cmd,
    server_cmd,
    team_cmd,
    threats_cmd,
    token_cmd,
    tuf_cmd,
    vuln_cmd,
)
from stockade.cli.common import fail
from stockade.errors import StockadeError

app = typer.Typer(
    name="stockade",
    help="Stockade: a self-hosted, secure package repository for Python.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(index_cmd.app, name="index")
app.add_typer(token_cmd.app, name="token")
app.add_typer(team_cmd.app, name="team")
app.add_typer(package_cmd.app, name="package")
app.add_typer(server_cmd.db_app, name="db")
app.add_typer(audit_cmd.app, name="audit")
app.command("init")(server_cmd.init)
app.command("serve")(server_cmd.serve)
app.add_typer(vuln_cmd.db_app, name="vulndb")
app.add_typer(vuln_cmd.app, name="vuln")
app.command("scan")(scan_cmd.scan)
app.add_typer(sbom_cmd.app, name="sbom")
app.add_typer(policy_cmd.app, name="policy")
app.add_typer(names_cmd.app, name="names")
app.add_typer(threats_cmd.app, name="threats")
app.add_typer(conda_cmd.app, name="conda")
app.add_typer(console_cmd.app, name="console")
app.add_typer(report_cmd.app, name="report")
app.add_typer(env_cmd.app, name="env")
app.add_typer(tuf_cmd.app, name="tuf")
app.add_typer(client_cmd.app, name="client")
app.add_typer(deploy_cmd.app, name="deploy")
app.add_typer(jobs_cmd.app, name="jobs")
app.command("worker")(jobs_cmd.worker)
app.command("inspect")(__import__("stockade.cli.inspect_cmd", fromlist=["inspect"]).inspect)


@app.command("version")
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def main() -> None:
    try:
        app()
    except StockadeError as exc:
        try:
            fail(exc)
        except typer.Exit as e:
            sys.exit(e.exit_code)
