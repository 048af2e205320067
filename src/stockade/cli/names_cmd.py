"""``stockade names check|refresh``: typosquat checks of project names, and the popular list."""

from __future__ import annotations

import json as jsonlib
import os
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import typer

from stockade.cli.common import JsonOpt, err, print_json, print_table, settings
from stockade.core.threats.typosquat import (
    SHIPPED,
    SHIPPED_CONDA,
    PopularNames,
    SquatFinding,
    check_name,
    conda_popular,
    format_list,
    list_header,
    rows_from_top_pypi,
)
from stockade.errors import ConfigError, InvalidRequest, StockadeError

app = typer.Typer(help="Typosquats: names that imitate popular projects.", no_args_is_help=True)

EXIT_ERROR = 3  # 1 and 2 are verdicts (malicious / suspicious)
HOME_LIST = SHIPPED  # an admin's refreshed list: <STOCKADE_HOME>/popular_pypi.txt


def home_list() -> Path:
    return settings().home / HOME_LIST


def load_popular(path: Path | None) -> tuple[PopularNames, str]:
    """The list given, else the admin's refreshed one in the home, else the shipped one."""
    given = path is not None
    if path is None:
        candidate = home_list()
        path = candidate if candidate.is_file() else None
    if path is None:
        return PopularNames.load(), "shipped list"
    try:
        return PopularNames.load(path), str(path)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InvalidRequest(
            f"cannot read the popular-names list {path}: {exc}",
            "give a file written by `stockade names refresh`"
            + ("" if given else f", or delete {path} to use the shipped list"),
        ) from exc


def load_conda_popular(path: Path | None) -> tuple[PopularNames, str]:
    """The conda list given, else <STOCKADE_HOME>/popular_conda.txt, else the shipped one."""
    if path is None:
        candidate = settings().home / SHIPPED_CONDA
        path = candidate if candidate.is_file() else None
    if path is None:
        return conda_popular(), "shipped conda list"
    try:
        return conda_popular(path), str(path)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InvalidRequest(
            f"cannot read the popular conda names list {path}: {exc}",
            "give a file in the popular-names format ('name downloads' per line)",
        ) from exc


def _fail(exc: StockadeError) -> typer.Exit:
    err.print(exc.diagnostics(), markup=False, highlight=False)
    return typer.Exit(EXIT_ERROR)


@app.command("check")
def check(
    names: list[str] = typer.Argument(..., help="Project names to check."),
    popular_list: Path = typer.Option(
        None, "--list", help="Popular-names list to check against (default: home, else shipped)."
    ),
    ecosystem: str = typer.Option(
        "pypi", "--ecosystem", help="pypi (PyPI projects) or conda (conda package names)."
    ),
    json: bool = JsonOpt,
) -> None:
    """Check names for lookalikes of popular projects (typosquats).

    With --ecosystem conda, names are checked against popular conda package names (the shipped
    popular_conda.txt, or <STOCKADE_HOME>/popular_conda.txt when an admin put one there).

    Exit 0: nothing found; 1: a malicious-tier finding (block); 2: suspicious findings only;
    3: error."""
    eco = ecosystem.strip().lower()
    try:
        if eco == "conda":
            popular, source = load_conda_popular(popular_list)
        elif eco == "pypi":
            popular, source = load_popular(popular_list)
        else:
            raise InvalidRequest(f"unknown ecosystem {ecosystem!r}", "use --ecosystem pypi|conda")
    except StockadeError as exc:
        raise _fail(exc) from None
    results: list[tuple[str, int | None, list[SquatFinding]]] = [
        (n, popular.rank(n), check_name(n, popular)) for n in names
    ]
    found = [f for _, _, fs in results for f in fs]
    if json:
        print_json(
            [
                {
                    "name": n,
                    "popular_rank": rank,
                    "verdict": _verdict(fs),
                    "findings": [f.as_dict() for f in fs],
                }
                for n, rank, fs in results
            ]
        )
    else:
        if found:
            print_table(
                f"{len(names)} name(s) checked against {len(popular):,} popular projects "
                f"({source}): {len(found)} finding(s)",
                ["name", "tier", "technique", "target", "rank", "severity", "why"],
                [
                    [
                        f.name,
                        f.tier,
                        f.technique,
                        f.target,
                        f"#{f.target_rank}",
                        f.severity,
                        f.message.split(": ", 1)[-1],
                    ]
                    for f in found
                ],
            )
        for n, rank, fs in results:
            if rank is not None:
                where = "conda list" if eco == "conda" else "PyPI"
                typer.echo(f"{n}: popular project (#{rank} on {where}), not checked")
            elif not fs:
                typer.echo(f"{n}: no lookalike of a popular project")
    sys.stdout.flush()
    if any(f.tier == "malicious" for f in found):
        raise typer.Exit(1)
    raise typer.Exit(2 if found else 0)


def _verdict(findings: list[SquatFinding]) -> str:
    if any(f.tier == "malicious" for f in findings):
        return "malicious"
    return "suspicious" if findings else "ok"


@app.command("refresh")
def refresh(
    source: Path = typer.Option(
        ..., "--from", help="A top-pypi-packages JSON file (hugovk/top-pypi-packages)."
    ),
    top: int = typer.Option(15000, "--top", min=100, help="Keep this many projects."),
    output: Path = typer.Option(
        None, "--output", help=f"Where to write (default: <STOCKADE_HOME>/{HOME_LIST})."
    ),
    json: bool = JsonOpt,
) -> None:
    """Install a popular-names list made from a top-pypi-packages JSON file.

    Reads a file the admin downloaded (no network). `names check` then uses it instead of the
    list shipped with Stockade."""
    try:
        if output is None:
            home = settings().home
            if not home.is_dir():
                raise ConfigError(
                    f"{home} does not exist",
                    "run `stockade init` first, set STOCKADE_HOME, or give --output",
                )
            output = home / HOME_LIST
        try:
            data = jsonlib.loads(source.read_bytes())
            rows = rows_from_top_pypi(data, limit=top)
        except (OSError, ValueError) as exc:
            raise InvalidRequest(
                f"cannot use {source}: {exc}",
                "give top-pypi-packages-30-days.json from github.com/hugovk/top-pypi-packages",
            ) from exc
        if len(rows) < 100:
            raise InvalidRequest(
                f"{source} lists only {len(rows)} projects", "give the full top-pypi-packages file"
            )
        written = datetime.now(UTC).strftime("%Y-%m-%d")
        text = format_list(rows, list_header(data, len(rows), written, source.name))
        _write_atomic(output, text)
    except StockadeError as exc:
        raise _fail(exc) from None
    summary = {
        "path": str(output),
        "projects": len(rows),
        "first": rows[0][0],
        "last": rows[-1][0],
        "last_downloads": rows[-1][1],
    }
    if json:
        print_json(summary)
    else:
        typer.echo(
            f"wrote {len(rows):,} popular projects to {output} "
            f"(#1 {rows[0][0]}, last {rows[-1][0]} with {rows[-1][1]:,} downloads)"
        )


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
