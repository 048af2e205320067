"""``stockade tuf …``: signed PyPI indexes (TUF, PEP 458): init, status, rotate, root, refresh."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from stockade.cli.common import JsonOpt, print_json, print_table, run
from stockade.services.runtime import Runtime

app = typer.Typer(
    help="Signed indexes: TUF metadata a client verifies every page and file against.",
    no_args_is_help=True,
)

RootKeyOpt = typer.Option(
    None,
    "--root-key",
    help="A root key file, when they are kept elsewhere (default: STOCKADE_HOME/keys/tuf); "
    "repeat it once per root key.",
)


def _root_key(r: Runtime, root_key: list[Path] | None) -> None:
    if root_key:
        r.tuf.keys.root_keys = [p.expanduser().resolve() for p in root_key]


@app.command("init")
def init(
    index: str,
    bins: int = typer.Option(1024, "--bins", help="Hashed bins (a power of two)."),
    root_keys: int = typer.Option(
        None,
        "--root-keys",
        help="How many root keys (default 1, or as many --root-key files as given).",
    ),
    root_threshold: int = typer.Option(
        1, "--root-threshold", help="How many root keys must sign each new root."
    ),
    root_key: list[Path] = RootKeyOpt,
    root_out: Path = typer.Option(
        None, "--root-out", help="Also write 1.root.json here (give it to clients out of band)."
    ),
    json: bool = JsonOpt,
) -> None:
    """Turn signing on for INDEX: keys created when missing, every page and file signed."""

    async def go(r: Runtime) -> dict[str, Any]:
        _root_key(r, root_key)
        count = root_keys if root_keys is not None else max(1, len(root_key or ()))
        created = await r.tuf.init_index(
            await r.indexes.get(index), bins, root_keys=count, root_threshold=root_threshold
        )
        r.changed()  # every server process starts following the index
        status = await r.tuf.status(await r.indexes.get(index))
        root = await r.tuf.metadata(await r.indexes.get(index), "1.root.json")
        return {"created_keys": created, **status.as_dict(), "root": root}

    got = run(go)
    root = got.pop("root")
    if root_out is not None:
        root_out.write_bytes(root)
    if json:
        print_json(got)
        return
    for role in got["created_keys"]:
        typer.echo(f"created the {role} key")
    typer.echo(
        f"index {index!r} now publishes TUF metadata ({got['bins']} bins, "
        f"{got['targets']} targets) at /pypi/{index}/tuf/"
    )
    if root_out is not None:
        typer.echo(f"wrote the trusted root to {root_out}")
    _root_line(got["keys"]["root"])
    typer.echo("move the root and targets keys offline: they are only needed to rotate keys")


def _root_line(root: dict[str, Any]) -> None:
    if len(root["keys"]) > 1:
        typer.echo(
            f"root: {root['threshold']} of {len(root['keys'])} keys sign each new root: "
            + ", ".join(f"{k['keyid'][:16]} ({k['key_file']})" for k in root["keys"])
        )


@app.command("status")
def status(index: str, json: bool = JsonOpt) -> None:
    """Versions, expiry and keys of INDEX's TUF metadata."""

    async def go(r: Runtime) -> dict[str, Any]:
        return (await r.tuf.status(await r.indexes.get(index))).as_dict()

    got = run(go)
    if json:
        print_json(got)
        return
    typer.echo(f"index {index}: {got['bins']} bins, {got['targets']} targets")
    print_table(
        "TUF roles",
        ["role", "version", "expires", "keyid", "private key"],
        [
            [
                role,
                got["versions"].get(role, "per bin"),
                got["expires"][role],
                got["keys"][role]["keyid"][:16],
                got["keys"][role]["key_file"],
            ]
            for role in ("root", "targets", "bins", "snapshot", "timestamp")
        ],
    )
    _root_line(got["keys"]["root"])


@app.command("rotate")
def rotate(
    role: str = typer.Argument(..., help="root, targets, snapshot, timestamp or bins."),
    root_key: list[Path] = RootKeyOpt,
    json: bool = JsonOpt,
) -> None:
    """Replace ROLE's key in every signed index (clients follow the new root)."""

    async def go(r: Runtime) -> dict[str, Any]:
        _root_key(r, root_key)
        got = await r.tuf.rotate(role)
        r.changed()  # server processes load the new key
        return got

    got = run(go)
    if json:
        print_json(got)
        return
    old = ", ".join(k[:16] for k in got["old_keyids"])
    new = ", ".join(k[:16] for k in got["new_keyids"])
    keys = "keys" if len(got["new_keyids"]) > 1 else "key"
    typer.echo(f"rotated the {role} {keys} {old} → {new} on {', '.join(got['indexes'])}")
    for retired in got["retired_keys"]:
        typer.echo(f"the old key is at {retired}: archive or destroy it")


@app.command("root")
def root(
    index: str,
    version: int = typer.Option(None, "--version", help="Default: the newest."),
    out: Path = typer.Option(None, "--out", "-o", help="Write to a file instead of stdout."),
) -> None:
    """Print INDEX's root metadata: what a client trusts first (hand it over out of band)."""

    async def go(r: Runtime) -> bytes:
        name = f"{version}.root.json" if version else "root.json"
        return await r.tuf.metadata(await r.indexes.get(index), name)

    data = run(go)
    if out is not None:
        out.write_bytes(data)
    else:
        typer.echo(data.decode())


@app.command("refresh")
def refresh(
    index: str = typer.Argument(None, help="Also re-check every page of this index."),
) -> None:
    """Re-sign metadata close to expiry (the server does it every tuf_refresh_interval)."""

    async def go(r: Runtime) -> list[str]:
        if index is not None:
            await r.indexes.get(index)
            r.tuf.index_changed(index)
            await r.tuf.flush()
        return await r.tuf.refresh_expiring()

    for line in run(go) or ["nothing was close to expiry"]:
        typer.echo(line)
