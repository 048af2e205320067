"""``stockade inspect PATH…``: the static malware scanner on local files and folders.

No server, no database, no network: each file is read into memory and judged on its content
alone (:mod:`stockade.core.threats`). Exit status mirrors ``stockade scan``: 0 when no file is
at or above ``--fail-on``, 1 when one is, 2 on error (a path that cannot be read).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import orjson
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from stockade.cli.common import err, out
from stockade.core.threats import Report, scan_path

LEVELS = ("malicious", "suspicious", "never")
_RANK = {"clean": 0, "suspicious": 1, "malicious": 2}


def _files(paths: list[Path]) -> tuple[list[Path], list[str]]:
    """Every regular file named or found under a folder (symlinks are not followed)."""
    found: list[Path] = []
    problems: list[str] = []
    for p in paths:
        if p.is_file():
            found.append(p)
        elif p.is_dir():
            for root, dirs, names in os.walk(p, followlinks=False):
                dirs.sort()
                for n in sorted(names):
                    f = Path(root) / n
                    if f.is_file() and not f.is_symlink():
                        found.append(f)
        else:
            problems.append(f"{p}: no such file or folder")
    return found, problems


def _scan_one(path: Path) -> Report | str:
    try:
        return scan_path(path)
    except OSError as exc:  # the file vanished or cannot be read; the scanner itself never raises
        return f"{path}: {exc.strerror or exc}"


def _results(files: list[Path], jobs: int) -> Iterator[tuple[Path, Report | str]]:
    if jobs <= 1 or len(files) < 2:
        for f in files:
            yield f, _scan_one(f)
        return
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        yield from zip(files, pool.map(_scan_one, files, chunksize=1), strict=True)


def _show(path: Path, rep: Report, limit: int) -> None:
    out.print(
        f"[bold]{rep.verdict:<10}[/bold] {rep.score:6.2f}  {path}  "
        f"({rep.members} members, {rep.elapsed * 1000:.0f} ms)",
        highlight=False,
    )
    for f in rep.findings[:limit]:
        where = f.path + (f":{f.line}" if f.line else "")
        out.print(f"    [{f.severity}] {f.rule}  {where}", markup=False, highlight=False)
        if f.snippet:
            out.print(f"        {f.snippet}", markup=False, highlight=False)
    if len(rep.findings) > limit:
        out.print(
            f"    … {len(rep.findings) - limit} more (--all or --json shows every finding)",
            markup=False,
            highlight=False,
        )


def inspect(
    paths: list[Path] = typer.Argument(
        ..., help="Files (sdists, wheels, zips, tarballs, single sources) and folders."
    ),
    json: bool = typer.Option(False, "--json", help="One JSON object per file, one per line."),
    fail_on: str = typer.Option(
        "suspicious", "--fail-on", help="Exit 1 when a file is at or above: " + " | ".join(LEVELS)
    ),
    jobs: int = typer.Option(1, "--jobs", "-j", help="Files scanned in parallel (processes)."),
    all_findings: bool = typer.Option(False, "--all", help="Show every finding, not the top 5."),
) -> None:
    """Scan files for malware statically: nothing is installed, imported, run or fetched.

    Verdicts: malicious (block), suspicious (review), clean. Exit 0: nothing at or above
    --fail-on; 1: something is; 2: a path could not be read.
    """
    if fail_on not in LEVELS:
        err.print(f"--fail-on {fail_on!r}: use one of {', '.join(LEVELS)}", markup=False)
        raise typer.Exit(2)
    files, problems = _files(paths)
    threshold = _RANK.get(fail_on, 99)
    worst = 0
    show_progress = err.is_terminal and len(files) > 1 and not json
    counts = {"malicious": 0, "suspicious": 0, "clean": 0}
    progress = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not (err.is_terminal and len(files) > 1),
    )
    with progress:
        task = progress.add_task("scanning", total=len(files))
        for path, rep in _results(files, max(1, jobs)):
            progress.advance(task)
            if isinstance(rep, str):
                problems.append(rep)
                continue
            counts[rep.verdict] += 1
            worst = max(worst, _RANK[rep.verdict])
            if json:
                line = rep.as_dict()
                line["file"] = str(path)
                sys.stdout.write(orjson.dumps(line).decode() + "\n")
                sys.stdout.flush()
            elif rep.verdict != "clean" or len(files) == 1:
                if show_progress:
                    progress.console.print()  # keep the table below the bar
                _show(path, rep, 10_000 if all_findings else 5)
    if not json and len(files) > 1:
        out.print(
            f"{len(files) - len(problems)} files: {counts['malicious']} malicious, "
            f"{counts['suspicious']} suspicious, {counts['clean']} clean",
            highlight=False,
        )
    for p in problems:
        err.print(f"error: {p}", markup=False, highlight=False)
    sys.stdout.flush()
    if problems:
        raise typer.Exit(2)
    raise typer.Exit(1 if worst >= threshold else 0)
