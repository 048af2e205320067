"""``stockade index create|list|show|delete``."""

from __future__ import annotations

import typer

from stockade.cli.common import JsonOpt, print_json, print_table, run
from stockade.errors import InvalidRequest
from stockade.services.repo import IndexInfo
from stockade.services.runtime import Runtime
from stockade.types import IndexKind

app = typer.Typer(help="Create, list, show and delete indexes.", no_args_is_help=True)


def _row(i: IndexInfo) -> list[str | None]:
    src = i.upstream_url if i.kind is IndexKind.MIRROR else ", ".join(i.members) or None
    return [i.name, i.kind.value, src, "yes" if i.anonymous_read else "no"]


@app.command("create")
def create(
    name: str = typer.Argument(..., help="Index name: lower-case letters, digits, . _ -"),
    mirror: str = typer.Option(
        None,
        "--mirror",
        metavar="UPSTREAM_SIMPLE_URL",
        help="Mirror this upstream simple index (fetched on demand).",
    ),
    private: bool = typer.Option(False, "--private", help="Hosted index for uploads (twine)."),
    virtual: str = typer.Option(
        None,
        "--virtual",
        metavar="MEMBER[,MEMBER…]",
        help="Serve these indexes as one (private members win).",
    ),
    anonymous_read: bool = typer.Option(
        False, "--anonymous-read", help="Allow reading without a token."
    ),
    description: str = typer.Option(None, "--description"),
    json: bool = JsonOpt,
) -> None:
    """Create an index: exactly one of --mirror, --private or --virtual."""
    chosen = [bool(mirror), private, bool(virtual)]
    if sum(chosen) != 1:
        raise InvalidRequest(
            "say what kind of index to create",
            "give exactly one of --mirror URL, --private, --virtual A,B",
        )
    kind = IndexKind.MIRROR if mirror else IndexKind.PRIVATE if private else IndexKind.VIRTUAL
    members = [m.strip() for m in (virtual or "").split(",") if m.strip()]

    async def go(r: Runtime) -> IndexInfo:
        info = await r.indexes.create(
            name,
            kind,
            upstream_url=mirror,
            members=members,
            anonymous_read=anonymous_read,
            description=description,
        )
        r.audit.record("index.create", index=name, kind=kind.value, via="cli")
        r.changed()
        return info

    info = run(go)
    if json:
        print_json(info.as_dict())
    else:
        typer.echo(f"created {info.kind.value} index {info.name!r}: /pypi/{info.name}/simple/")


@app.command("list")
def list_(json: bool = JsonOpt) -> None:
    """List indexes."""
    items = run(lambda r: r.indexes.list())
    if json:
        print_json([i.as_dict() for i in items])
    else:
        print_table(
            "Indexes",
            ["name", "kind", "upstream / members", "anonymous read"],
            [_row(i) for i in items],
        )


@app.command("show")
def show(name: str, json: bool = JsonOpt) -> None:
    """Show one index."""
    info = run(lambda r: r.indexes.get(name))
    if json:
        print_json(info.as_dict())
    else:
        for k, v in info.as_dict().items():
            typer.echo(f"{k:15} {v}")
        typer.echo(f"{'simple_url':15} /pypi/{info.name}/simple/")


@app.command("update")
def update(
    name: str,
    anonymous_read: bool = typer.Option(
        None, "--anonymous-read/--no-anonymous-read", help="Allow reading without a token."
    ),
    json: bool = JsonOpt,
) -> None:
    """Change an index's settings."""

    async def go(r: Runtime) -> IndexInfo:
        if anonymous_read is not None:
            await r.indexes.set_anonymous_read(name, anonymous_read)
            r.audit.record("index.update", index=name, anonymous_read=anonymous_read, via="cli")
            await r.audit.flush()
            r.changed()
        return await r.indexes.get(name)

    info = run(go)
    if json:
        print_json(info.as_dict())
    else:
        typer.echo(f"index {name!r}: anonymous read {'on' if info.anonymous_read else 'off'}")


@app.command("delete")
def delete(
    name: str,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    json: bool = JsonOpt,
) -> None:
    """Delete an index and its files' records (blobs shared with other indexes stay)."""
    if not yes and not typer.confirm(f"delete index {name!r} and everything it holds?"):
        raise typer.Exit(1)

    async def go(r: Runtime) -> None:
        await r.indexes.delete(name)
        r.audit.record("index.delete", index=name, via="cli")
        r.changed()

    run(go)
    if json:
        print_json({"deleted": name})
    else:
        typer.echo(f"deleted index {name!r}")
