"""``stockade conda channel create|list|show`` and ``stockade conda
upload|packages|remove|yank|unyank``."""

from __future__ import annotations

from pathlib import Path

import typer

from stockade.cli.common import JsonOpt, print_json, print_table, run
from stockade.core.conda.names import parse_subdirs
from stockade.errors import InvalidRequest, NotFound
from stockade.services.conda import CondaChannel
from stockade.services.conda_repo import CondaPackageInfo
from stockade.services.runtime import Runtime

app = typer.Typer(help="conda channels: mirror or host conda packages.", no_args_is_help=True)
channel_app = typer.Typer(help="Create, list and show conda channels.", no_args_is_help=True)
app.add_typer(channel_app, name="channel")


def _row(c: CondaChannel) -> list[str | None]:
    return [
        c.name,
        "mirror" if c.mirror else "private",
        c.index.upstream_url,
        ",".join(c.subdirs) or None,
        "yes" if c.index.anonymous_read else "no",
    ]


@channel_app.command("create")
def create(
    name: str = typer.Argument(..., help="Channel name: lower-case letters, digits, . _ -"),
    mirror: str = typer.Option(
        None, "--mirror", metavar="CHANNEL_URL", help="Mirror this upstream channel."
    ),
    subdirs: str = typer.Option(
        None, "--subdirs", metavar="SUBDIR[,SUBDIR…]", help="Subdirs to mirror: noarch,linux-64"
    ),
    private: bool = typer.Option(False, "--private", help="A hosted channel for uploads."),
    anonymous_read: bool = typer.Option(
        False, "--anonymous-read", help="Allow reading without a token."
    ),
    description: str = typer.Option(None, "--description"),
    json: bool = JsonOpt,
) -> None:
    """Create a conda channel: --mirror URL --subdirs noarch,linux-64, or --private."""
    if bool(mirror) == private:
        raise InvalidRequest(
            "say what kind of conda channel to create",
            "give exactly one of --mirror CHANNEL_URL --subdirs noarch,linux-64, or --private",
        )
    wanted = parse_subdirs(subdirs) if subdirs else []

    async def go(r: Runtime) -> CondaChannel:
        ch = await r.conda.create_channel(
            name,
            mirror=mirror,
            subdirs=wanted,
            private=private,
            anonymous_read=anonymous_read,
            description=description,
        )
        r.audit.record("index.create", index=name, kind=ch.index.kind.value, via="cli")
        r.changed()
        return ch

    ch = run(go)
    if json:
        print_json(ch.as_dict())
    else:
        what = f"mirror of {ch.index.upstream_url} ({', '.join(ch.subdirs)})" if ch.mirror else ""
        typer.echo(
            f"created conda channel {ch.name!r} {what}".rstrip()
            + f": /conda/{ch.name}/ (conda/pixi/rattler: -c http://HOST/t/TOKEN/conda/{ch.name})"
        )


@channel_app.command("list")
def list_(json: bool = JsonOpt) -> None:
    """List conda channels."""
    items = run(lambda r: r.conda.channels())
    if json:
        print_json([c.as_dict() for c in items])
    else:
        print_table(
            "conda channels",
            ["name", "kind", "upstream", "subdirs", "anonymous read"],
            [_row(c) for c in items],
        )


@channel_app.command("show")
def show(name: str, json: bool = JsonOpt) -> None:
    """Show one conda channel."""
    ch = run(lambda r: r.conda.channel(name))
    if json:
        print_json(ch.as_dict())
    else:
        for k, v in ch.as_dict().items():
            typer.echo(f"{k:15} {v}")


@app.command("upload")
def upload(
    files: list[Path] = typer.Argument(..., help=".conda or .tar.bz2 packages"),
    channel: str = typer.Option(..., "--channel", "-c", help="A private conda channel."),
    subdir: str = typer.Option(
        None, "--subdir", help="Refuse a package whose info/index.json says another subdir."
    ),
    json: bool = JsonOpt,
) -> None:
    """Upload conda packages to a private channel (each is validated; duplicates are refused).

    Stops at the first refused file; the files before it stay uploaded."""
    for f in files:
        if not f.is_file():
            raise NotFound(f"no such file: {f}", "give paths to .conda or .tar.bz2 files")

    async def go(r: Runtime) -> list[CondaPackageInfo]:
        ch = await r.conda.channel(channel)
        done: list[CondaPackageInfo] = []
        try:
            for f in files:
                done.append(await r.conda.upload_path(ch, f, actor=None, subdir=subdir))
        finally:
            await r.audit.flush()
        return done

    done = run(go)
    if json:
        print_json([p.as_dict() for p in done])
    else:
        for p in done:
            typer.echo(f"uploaded {p.subdir}/{p.filename} ({p.sha256})")


@app.command("packages")
def packages(
    channel: str,
    subdir: str = typer.Option(None, "--subdir"),
    name: str = typer.Option(None, "--name"),
    json: bool = JsonOpt,
) -> None:
    """Package files a channel stores (uploaded, or mirrored and cached)."""

    async def go(r: Runtime) -> list[CondaPackageInfo]:
        return await r.conda.packages(await r.conda.channel(channel), subdir, name)

    items = run(go)
    if json:
        print_json([p.as_dict() for p in items])
    else:
        print_table(
            f"packages of {channel}",
            ["subdir", "filename", "size", "source", "sha256", "yanked"],
            [
                [
                    p.subdir,
                    p.filename,
                    p.size,
                    p.source,
                    p.sha256[:16],
                    "yes" if p.yanked_at else "",
                ]
                for p in items
            ],
        )


def _change(
    action: str,
    channel: str,
    filename: str,
    subdir: str | None,
    reason: str | None,
    json: bool,
) -> None:
    async def go(r: Runtime) -> CondaPackageInfo:
        ch = await r.conda.channel(channel)
        try:
            if action == "remove":
                return await r.conda.remove(ch, filename, subdir=subdir, actor=None)
            return await r.conda.yank(
                ch, filename, subdir=subdir, reason=reason, actor=None, undo=action == "unyank"
            )
        finally:
            await r.audit.flush()

    p = run(go)
    if json:
        print_json(p.as_dict())
    else:
        done = {"remove": "removed", "yank": "yanked", "unyank": "unyanked"}[action]
        typer.echo(f"{done} {p.subdir}/{p.filename} from {channel}")


@app.command("remove")
def remove(
    filename: str = typer.Argument(..., help="The package file name (NAME-VERSION-BUILD.conda)."),
    channel: str = typer.Option(..., "--channel", "-c", help="A private conda channel."),
    subdir: str = typer.Option(None, "--subdir", help="Needed when several subdirs have it."),
    json: bool = JsonOpt,
) -> None:
    """Delete a package from a private channel: its record leaves repodata (rebuilt and switched
    atomically), its bytes are deleted, its URL answers 404. Admin only (local CLI)."""
    _change("remove", channel, filename, subdir, None, json)


@app.command("yank")
def yank(
    filename: str = typer.Argument(..., help="The package file name (NAME-VERSION-BUILD.conda)."),
    channel: str = typer.Option(..., "--channel", "-c", help="A private conda channel."),
    subdir: str = typer.Option(None, "--subdir", help="Needed when several subdirs have it."),
    reason: str = typer.Option(None, "--reason", help="Why (kept with the package, audited)."),
    json: bool = JsonOpt,
) -> None:
    """Yank a package: left out of repodata.json and the shards (so solvers no longer pick it),
    listed in repodata's ``removed`` list, still downloadable by its exact URL (existing locks
    keep working)."""
    _change("yank", channel, filename, subdir, reason, json)


@app.command("unyank")
def unyank(
    filename: str = typer.Argument(..., help="The package file name (NAME-VERSION-BUILD.conda)."),
    channel: str = typer.Option(..., "--channel", "-c", help="A private conda channel."),
    subdir: str = typer.Option(None, "--subdir", help="Needed when several subdirs have it."),
    json: bool = JsonOpt,
) -> None:
    """Undo a yank: the record is served in repodata again."""
    _change("unyank", channel, filename, subdir, None, json)
