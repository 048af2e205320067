"""``stockade conda channel create|list|show`` and ``stockade conda
upload|packages|remove|yank|unyank``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


# -- conda content trust -----------------------------------------------------------------------

trust_app = typer.Typer(
    help="Signed channels (conda content trust): repodata records conda verifies.",
    no_args_is_help=True,
)
app.add_typer(trust_app, name="trust")


@trust_app.command("init")
def trust_init(
    channel: str,
    root_out: Path = typer.Option(
        None,
        "--root-out",
        help="Also write the trusted root here (conda reads it from <prefix>/etc/conda/).",
    ),
    json: bool = JsonOpt,
) -> None:
    """Sign CHANNEL's repodata: keys created when missing, every record signed from now on."""

    async def go(r: Runtime) -> dict[str, Any]:
        ch = await r.conda.channel(channel)
        created = await r.conda_trust.init_channel(ch)
        r.changed()  # every server process derives the channel's documents again, signed
        await r.audit.flush()
        status = await r.conda_trust.status(await r.conda.channel(channel))
        root = await r.conda_trust.document(f"{status.root_version}.root.json")
        return {"created_keys": created, **status.as_dict(), "root": root}

    got = run(go)
    root: bytes = got.pop("root")
    if root_out is not None:
        root_out.write_bytes(root)
    if json:
        print_json(got)
        return
    for role in got["created_keys"]:
        typer.echo(f"created the {role} key in {got['key_dir']}")
    typer.echo(
        f"conda channel {channel!r} is signed: repodata records carry pkg_mgr signatures; "
        f"{got['root_url']} and {got['key_mgr_url']} serve the trust metadata"
    )
    if root_out is not None:
        typer.echo(f"wrote root version {got['root_version']} to {root_out}")
    typer.echo("move the root and key_mgr keys offline: only the pkg_mgr key signs online")


@trust_app.command("status")
def trust_status(channel: str, json: bool = JsonOpt) -> None:
    """Whether CHANNEL is signed, with the trust metadata's versions, expiry and keys."""

    async def go(r: Runtime) -> dict[str, Any]:
        return (await r.conda_trust.status(await r.conda.channel(channel))).as_dict()

    got = run(go)
    if json:
        print_json(got)
        return
    since = f"signed since {got['signed_since']}" if got["signed"] else "not signed"
    typer.echo(f"channel {channel}: {since}")
    print_table(
        "conda content trust",
        ["role", "version", "expires", "keys"],
        [
            ["root", got["root_version"], got["root_expires"], ", ".join(got["keys"]["root"])],
            [
                "key_mgr",
                got["key_mgr_version"],
                got["key_mgr_expires"],
                ", ".join(got["keys"]["key_mgr"]),
            ],
            ["pkg_mgr", None, None, ", ".join(got["keys"]["pkg_mgr"])],
        ],
    )
    if got["signed"] and not got["pkg_mgr_key_present"]:
        typer.echo(f"warning: the pkg_mgr key is missing from {got['key_dir']}", err=True)


@trust_app.command("verify")
def trust_verify(
    url: str = typer.Argument(
        ..., help="The channel's URL, e.g. http://HOST:8080/t/<token>/conda/internal"
    ),
    root: Path = typer.Option(
        ..., "--root", help="The trusted root file (from `conda trust init --root-out`)."
    ),
    subdirs: str = typer.Option(
        "noarch,linux-64", "--subdirs", help="Comma-separated subdirs to check."
    ),
    json: bool = JsonOpt,
) -> None:
    """Check a signed channel as conda's signature verification does, strictly, from the
    trusted root file (never the network): root updates chained, key_mgr against the root,
    every record of each subdir's repodata.json against key_mgr's pkg_mgr keys. Exit 1 when
    a record is unsigned or its signature is bad. Needs no server home (a client command)."""
    import httpx
    import orjson

    from stockade.core.conda import trust

    base = url.rstrip("/")
    try:
        trusted = orjson.loads(root.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise InvalidRequest(
            f"cannot read the root file {root}: {exc}",
            "write it with `stockade conda trust init CHANNEL --root-out FILE`",
        ) from None
    report: dict[str, Any] = {"channel": base.split("/t/", 1)[0], "subdirs": {}, "problems": []}
    with httpx.Client(timeout=60, follow_redirects=True) as http:

        def get(path: str) -> httpx.Response:
            try:
                return http.get(f"{base}/{path}")
            except httpx.HTTPError as exc:
                raise InvalidRequest(
                    f"cannot fetch {path} from the channel: {exc}", "check the URL"
                ) from None

        try:
            while True:  # conda's root chaining: N+1.root.json until the server has none
                nxt = get(f"{trusted['signed']['version'] + 1}.root.json")
                if nxt.status_code == 404:
                    break
                nxt.raise_for_status()
                candidate = orjson.loads(nxt.content)
                trust.verify_root(trusted, candidate)
                trusted = candidate
            km = get("key_mgr.json")
            if km.status_code == 404:
                raise trust.TrustError("the channel serves no key_mgr.json: it is not signed")
            km.raise_for_status()
            key_mgr = orjson.loads(km.content)
            trust.verify_delegation("key_mgr", key_mgr, trusted)
        except (trust.TrustError, KeyError, TypeError, orjson.JSONDecodeError) as exc:
            raise InvalidRequest(
                f"the channel's trust metadata does not verify from {root}: {exc}",
                "is this the channel's root? `stockade conda trust status CHANNEL` on the server",
            ) from None
        except httpx.HTTPStatusError as exc:
            raise InvalidRequest(f"the channel answered {exc.response.status_code}", "") from None
        report["root_version"] = trusted["signed"]["version"]
        for subdir in [s.strip() for s in subdirs.split(",") if s.strip()]:
            r = get(f"{subdir}/repodata.json")
            if r.status_code != 200:
                report["problems"].append(f"{subdir}/repodata.json: HTTP {r.status_code}")
                continue
            data = orjson.loads(r.content)
            good = bad = 0
            for kind in ("packages", "packages.conda"):
                for fn in data.get(kind) or {}:
                    try:
                        trust.verify_record(data, fn, key_mgr)
                        good += 1
                    except trust.TrustError as exc:
                        bad += 1
                        report["problems"].append(f"{subdir}/{fn}: {exc}")
            report["subdirs"][subdir] = {"verified": good, "failed": bad}
    ok = not report["problems"]
    report["ok"] = ok
    if json:
        print_json(report)
    else:
        typer.echo(f"trusted root version {report['root_version']}; key_mgr verified")
        for subdir, counts in report["subdirs"].items():
            typer.echo(
                f"  {subdir}: {counts['verified']} records verified, {counts['failed']} failed"
            )
        for p in report["problems"][:50]:
            typer.echo(f"FAILED: {p}", err=True)
    if not ok:
        raise typer.Exit(1)


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
