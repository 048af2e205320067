"""``stockade package list|yank|unyank|delete`` for private indexes."""

from __future__ import annotations

import typer

from stockade.cli.common import JsonOpt, print_json, print_table, run
from stockade.services import repo
from stockade.services.repo import FileInfo
from stockade.services.runtime import Runtime
from stockade.types import canonicalize_name

app = typer.Typer(help="List, yank and delete files on an index.", no_args_is_help=True)


@app.command("list")
def list_(index: str, project: str = typer.Argument(None), json: bool = JsonOpt) -> None:
    """List the files an index stores (uploaded, or mirrored and cached)."""

    async def go(r: Runtime) -> list[FileInfo]:
        info = await r.indexes.get(index)
        async with r.sessions() as s:
            return await repo.list_files(
                s, info.id, canonicalize_name(project) if project else None
            )

    files = run(go)
    if json:
        print_json([f.as_dict() for f in files])
        return
    print_table(
        f"Files on {index}",
        ["project", "version", "filename", "size", "yanked", "sha256"],
        [
            [
                f.project,
                f.version,
                f.filename,
                f.size,
                "yes" if f.yanked else "",
                f.sha256[:16] + "…",
            ]
            for f in files
        ],
    )


@app.command("yank")
def yank(
    index: str,
    project: str,
    version: str,
    reason: str = typer.Option(None, "--reason", help="Shown to installers (PEP 592)."),
    json: bool = JsonOpt,
) -> None:
    """Yank a release (PEP 592): installers skip it unless pinned exactly."""
    _yank(index, project, version, reason, True, json)


@app.command("unyank")
def unyank(index: str, project: str, version: str, json: bool = JsonOpt) -> None:
    """Undo a yank."""
    _yank(index, project, version, None, False, json)


def _yank(
    index: str, project: str, version: str, reason: str | None, yanked: bool, json: bool
) -> None:
    async def go(r: Runtime) -> int:
        n = await r.uploads.yank(
            await r.indexes.get(index), project, version, reason=reason, yanked=yanked
        )
        await r.audit.flush()
        r.changed()
        return n

    n = run(go)
    if json:
        print_json({"files": n, "yanked": yanked})
    else:
        typer.echo(f"{'yanked' if yanked else 'unyanked'} {n} file(s) of {project} {version}")


@app.command("delete")
def delete(
    index: str,
    project: str,
    version: str = typer.Argument(None),
    file: str = typer.Option(None, "--file", help="Only this filename."),
    yes: bool = typer.Option(False, "--yes", "-y"),
    json: bool = JsonOpt,
) -> None:
    """Delete files of a project (all, one version, or one file). Irreversible."""
    what = file or (f"{project} {version}" if version else f"every file of {project}")
    if not yes and not typer.confirm(f"delete {what} from {index}?"):
        raise typer.Exit(1)

    async def go(r: Runtime) -> list[FileInfo]:
        doomed = await r.uploads.delete(await r.indexes.get(index), project, version, file)
        await r.audit.flush()
        r.changed()
        return doomed

    doomed = run(go)
    if json:
        print_json([f.as_dict() for f in doomed])
    else:
        for f in doomed:
            typer.echo(f"deleted {f.filename}")
