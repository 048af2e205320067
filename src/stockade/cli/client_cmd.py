"""``stockade client …``: runs where packages are installed (a laptop, a CI runner), with no
server home: ``download`` fetches pinned requirements from a signed index, TUF-verified."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TransferSpeedColumn,
)

from stockade.cli.common import JsonOpt, err, print_json, print_table
from stockade.client import download as dl
from stockade.errors import StockadeError

app = typer.Typer(
    help="Client side: download verified files from a signed (TUF) index.",
    no_args_is_help=True,
)


class _Bar(dl.Progress):
    """A rich progress bar on stderr for the current download, ``[i/n]`` the requirement."""

    def __init__(self, bar: Progress) -> None:
        self.bar = bar
        self.total = 0
        self.done = 0
        self.current: TaskID | None = None

    def start(self, total_files: int) -> None:
        self.total = total_files

    def file(self, name: str, length: int) -> None:
        if self.current is not None:
            self.bar.remove_task(self.current)
        label = f"[{min(self.done + 1, self.total)}/{self.total}] {name}"
        self.current = self.bar.add_task(label, total=length)

    def bytes(self, count: int) -> None:
        if self.current is not None:
            self.bar.advance(self.current, count)

    def done_file(self) -> None:
        self.done += 1


@app.command("download")
def download(
    requirements: Path = typer.Option(
        ..., "--requirement", "-r", help="A requirements file pinning name==version."
    ),
    dest: Path = typer.Option(..., "--dest", "-d", help="Directory to write verified files to."),
    index: str = typer.Option(
        ...,
        "--index",
        envvar="STOCKADE_CLIENT_INDEX",
        help="The index URL pip uses (…/pypi/<index>/simple/); userinfo is sent as basic auth.",
    ),
    root: Path = typer.Option(
        ...,
        "--root",
        envvar="STOCKADE_CLIENT_ROOT",
        help="The index's trusted root metadata, obtained out of band (`stockade tuf root`).",
    ),
    token: str = typer.Option(
        None, "--token", envvar="STOCKADE_CLIENT_TOKEN", help="A read token for the index."
    ),
    metadata_dir: Path = typer.Option(
        None,
        "--metadata-dir",
        help="Where trusted metadata is kept between runs (default: a directory per index and "
        "root under $XDG_CACHE_HOME/stockade/tuf).",
    ),
    json: bool = JsonOpt,
) -> None:
    """Download the files of pinned REQUIREMENTS, each page and file verified with TUF against
    ROOT; then `pip install --no-index --find-links DEST -r REQUIREMENTS`."""
    show_bar = err.is_terminal and not json
    try:
        if show_bar:
            with Progress(
                TextColumn("{task.description}", markup=False),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                console=err,
                transient=True,
            ) as bar:
                got = dl.download(
                    requirements,
                    dest,
                    index,
                    root,
                    token=token,
                    metadata_dir=metadata_dir,
                    progress=_Bar(bar),
                )
        else:
            got = dl.download(
                requirements, dest, index, root, token=token, metadata_dir=metadata_dir
            )
    except StockadeError as exc:
        err.print(exc.diagnostics(), markup=False, highlight=False)
        if isinstance(exc, dl.VerificationFailed):
            err.print(f"nothing was written to {dest}", markup=False, highlight=False)
        raise typer.Exit(1) from None
    if json:
        print_json({"dest": str(dest), "files": [d.as_dict() for d in got]})
        return
    for d in got:
        if d.yanked:
            err.print(f"warning: {d.filename} is yanked", markup=False, highlight=False)
    print_table(
        f"verified files in {dest}",
        ["file", "sha256", "TUF target", "state"],
        [[d.filename, d.sha256, d.target, "was there" if d.cached else "new"] for d in got],
    )
    typer.echo(f"install with: pip install --no-index --find-links {dest} -r {requirements}")
