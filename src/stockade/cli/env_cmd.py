"""``stockade env …``: environments (lock files teams run), versioned, evaluated and watched."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import typer

from stockade.cli.common import JsonOpt, print_json, print_table, run
from stockade.errors import InvalidRequest
from stockade.services.environments import EnvVersion, split_ref
from stockade.services.runtime import Runtime

app = typer.Typer(
    help="Environments: lock files stored as numbered versions, checked against vulnerabilities "
    "and an index's policy, and re-checked when those change.",
    no_args_is_help=True,
)

IndexOpt = typer.Option(
    None, "--index", help="Check every pin against what this index's policy serves."
)


def _problems_lines(v: EnvVersion) -> list[str]:
    out = []
    for pin, problems in sorted(v.problems.items()):
        for p in problems:
            if p["kind"] == "policy":
                out.append(f"{pin}: blocked on {v.index}: {p['message']}")
            elif p["kind"] == "threat":
                out.append(f"{pin}: {p['message']} (sha256 {str(p.get('sha256'))[:12]}…)")
            else:
                fix = ", ".join(p.get("fixed_in") or []) or "no fix yet"
                sev = p.get("severity") or "severity unknown"
                out.append(f"{pin}: {p['kind']} {p['id']} ({sev}; {p['status']}); fixed in {fix}")
    return out


def _show(v: EnvVersion) -> None:
    mark = "RED" if v.status == "red" else "green"
    where = f", checked against index {v.index}" if v.index else ""
    typer.echo(
        f"{v.ref}: {mark} ({len(v.packages) or '?'} packages from {v.filename}, {v.kind}{where})"
    )
    for line in _problems_lines(v):
        typer.echo(f"  {line}")


@app.command("push")
def push(
    ref: str = typer.Argument(..., help="TEAM/NAME"),
    file: Path = typer.Argument(
        ...,
        help="pylock.toml, uv.lock, requirements.txt (pinned), "
        "poetry.lock, a conda explicit lock or a pinned environment.yml",
    ),
    index: str = IndexOpt,
    note: str = typer.Option(None, "--note"),
    json: bool = JsonOpt,
) -> None:
    """Store FILE as the next version of TEAM/NAME and show its status."""
    try:
        content = file.read_bytes()
    except OSError as exc:
        raise InvalidRequest(f"cannot read {file}: {exc}", "give a readable lock file") from exc

    async def go(r: Runtime) -> EnvVersion:
        made = await r.envs.push(ref, file.name, content, index=index, author=_whoami(), note=note)
        await r.audit.flush()
        return made

    made = run(go)
    if json:
        print_json(made.as_dict())
    else:
        _show(made)


@app.command("list")
def list_(team: str = typer.Argument(None, help="Only this team's."), json: bool = JsonOpt) -> None:
    """Every environment with its newest version's status."""
    rows = run(lambda r: r.envs.latest(team))
    if json:
        print_json([v.as_dict(packages=False) for v in rows])
        return
    print_table(
        "Environments",
        ["environment", "version", "status", "problems", "index", "file", "pushed"],
        [
            [
                f"{v.team}/{v.name}",
                v.version,
                v.status.upper() if v.status == "red" else v.status,
                sum(len(p) for p in v.problems.values()),
                v.index or "-",
                v.filename,
                v.created_at[:16],
            ]
            for v in rows
        ],
    )


@app.command("show")
def show(
    ref: str = typer.Argument(..., help="TEAM/NAME[@VERSION] (default: newest)"),
    json: bool = JsonOpt,
) -> None:
    """One version: its packages' problems (vulnerabilities with the fix, malicious, policy)
    and the status changes it went through."""

    async def go(r: Runtime) -> tuple[EnvVersion, list[EnvVersion], list[dict[str, Any]]]:
        got = await r.envs.get(ref)
        return got, await r.envs.versions(ref), await r.envs.history(got.ref)

    got, versions, history = run(go)
    if json:
        print_json({**got.as_dict(), "versions": [v.version for v in versions], "history": history})
        return
    _show(got)
    for h in history:
        typer.echo(f"  {h['at'][:16]} {h['from']} → {h['to']}: {h['cause']}")
    typer.echo(f"versions: {', '.join(str(v.version) for v in versions)}")


@app.command("pull")
def pull(
    ref: str = typer.Argument(..., help="TEAM/NAME[@VERSION]"),
    output: Path = typer.Option(None, "--output", "-o", help="Write here (default: stdout)."),
) -> None:
    """The stored lock file, byte for byte."""
    got, body = run(lambda r: r.envs.pull(ref))
    if output is None:
        sys.stdout.buffer.write(body)
    else:
        output.write_bytes(body)
        typer.echo(f"{got.ref} ({got.filename}) written to {output}", err=True)


@app.command("sbom")
def sbom(
    ref: str = typer.Argument(..., help="TEAM/NAME[@VERSION]"),
    fmt: str = typer.Option("cyclonedx", "--format", help="spdx | spdx-tv | cyclonedx | openvex"),
    output: Path = typer.Option(None, "--output", "-o", help="Write here (default: stdout)."),
    with_vulns: bool = typer.Option(False, "--with-vulns", help="Add the curated vulnerabilities."),
) -> None:
    """An SBOM of a stored version (as `stockade sbom create` makes of its lock file)."""
    from stockade.cli.sbom_cmd import create

    got, body = run(lambda r: r.envs.pull(ref))
    with tempfile.TemporaryDirectory(prefix="stockade-env-sbom-") as tmp:
        path = Path(tmp) / got.filename
        path.write_bytes(body)
        options: dict[str, Any] = {  # the typer defaults of `sbom create`, spelled out
            "env": None,
            "index": None,
            "wheel": None,
            "downloads": False,
            "token": None,
            "team": None,
            "since": "7d",
            "until": None,
            "reproducible": False,
        }
        create(file=path, fmt=fmt, output=output, with_vulns=with_vulns, **options)


@app.command("diff")
def diff(a: str = typer.Argument(...), b: str = typer.Argument(...), json: bool = JsonOpt) -> None:
    """Packages added, removed, upgraded or downgraded from A to B, and the problems fixed or
    introduced."""
    d = run(lambda r: r.envs.diff(a, b))
    if json:
        print_json(d)
        return
    typer.echo(f"{d['from']} → {d['to']} ({d['status']['from']} → {d['status']['to']})")
    for p in d["added"]:
        typer.echo(f"  + {p['name']} {p['version']}")
    for p in d["removed"]:
        typer.echo(f"  - {p['name']} {p['version']}")
    for p in d["changed"]:
        typer.echo(f"  ~ {p['name']} {p['from']} → {p['to']} ({p['direction']})")
    for pin in d["problems_fixed"]:
        typer.echo(f"  fixed: {pin}")
    for pin in d["problems_new"]:
        typer.echo(f"  NEW PROBLEM: {pin}")


@app.command("lock")
def lock(
    ref: str = typer.Argument(..., help="TEAM/NAME"),
    requirements: Path = typer.Argument(
        ..., help="requirements.in (with --index) or environment.yml (with --channel)"
    ),
    index: str = typer.Option(None, "--index", help="Resolve against what this index serves."),
    channel: str = typer.Option(
        None, "--channel", help="Resolve an environment.yml against this conda channel."
    ),
    python: str = typer.Option(
        f"{sys.version_info.major}.{sys.version_info.minor}", "--python-version"
    ),
    platform: str = typer.Option(
        None, "--platform", help="conda platform to lock for (default: this machine's)."
    ),
    url: str = typer.Option(
        None, "--url", help="Stockade's base URL (default: the configured host and port)."
    ),
    json: bool = JsonOpt,
) -> None:
    """Resolve REQUIREMENTS against what Stockade serves right now (only what the policy
    allows) and store the result as the next version of TEAM/NAME: a lock that passes the
    policy by construction. With --index: uv, a requirements.txt with hashes. With --channel:
    rattler, a conda explicit lock with md5 (and sha256 comments). Needs the server running."""
    from stockade.settings import Settings
    from stockade.types import Scope

    split_ref(ref)
    if (index is None) == (channel is None):
        raise InvalidRequest(
            "give exactly one of --index (PyPI) and --channel (conda)",
            f"stockade env lock {ref} requirements.in --index INDEX",
        )
    target = index or channel
    settings = Settings.load()
    base = (url or f"http://{settings.host}:{settings.port}").rstrip("/")
    scheme, host = base.split("://", 1)

    async def mint(r: Runtime) -> tuple[str, str]:
        info = await r.indexes.get(target)
        if channel is not None and not info.kind.is_conda:
            raise InvalidRequest(
                f"{target!r} is a PyPI index, not a conda channel", "use --index for it"
            )
        if index is not None and info.kind.is_conda:
            raise InvalidRequest(
                f"{target!r} is a conda channel", "lock an environment.yml with --channel"
            )
        secret, rec = await r.tokens.create(
            index=target, scope=Scope.READ, expires="15m", note=f"env lock {ref}"
        )
        return secret, rec.info.id

    if channel is not None:
        from stockade.services.conda_lock import read_specs, solve_explicit

        specs, notes = read_specs(requirements)
        for note in notes:
            typer.echo(f"note: {note}", err=True)
        import rattler

        plat = platform or str(rattler.Subdir.current())
        secret, token_id = run(mint)
        try:
            content = asyncio.run(
                solve_explicit(
                    f"{scheme}://{host}/t/{secret}/conda/{channel}",
                    f"{scheme}://{host}/conda/{channel}",
                    specs,
                    plat,
                    header=f"stockade env lock {ref} from {requirements.name} against "
                    f"conda channel {channel}",
                )
            )
        finally:
            run(lambda r: r.tokens.revoke(token_id))
        filename, note = "explicit.txt", f"locked from {requirements.name} against {channel}"
    else:
        content = _uv_lock(requirements, target, python, mint, scheme, host)
        filename, note = "requirements.txt", f"locked from {requirements.name} against {index}"

    async def go(r: Runtime) -> EnvVersion:
        made = await r.envs.push(ref, filename, content, index=target, author=_whoami(), note=note)
        await r.audit.flush()
        return made

    made = run(go)
    if json:
        print_json(made.as_dict())
    else:
        _show(made)


def _uv_lock(
    requirements: Path,
    index: str,
    python: str,
    mint: Callable[[Runtime], Awaitable[tuple[str, str]]],
    scheme: str,
    host: str,
) -> bytes:
    uv = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))
    if not Path(uv).exists() and not shutil.which("uv"):
        raise InvalidRequest("`uv` is needed to resolve", "install uv (pip install uv)")
    secret, token_id = run(mint)
    try:
        with tempfile.TemporaryDirectory(prefix="stockade-lock-") as tmp:
            out = Path(tmp) / "requirements.txt"
            index_url = f"{scheme}://__token__:{secret}@{host}/pypi/{index}/simple/"
            env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "PIP_"))}
            env.update(UV_NO_CONFIG="1", UV_PYTHON_DOWNLOADS="never")
            res = subprocess.run(
                [
                    uv, "pip", "compile", str(requirements), "--generate-hashes",
                    "--index-url", index_url, "--python-version", python,
                    "--no-header", "--quiet", "--no-cache", "-o", str(out),
                ],
                capture_output=True, text=True, env=env, timeout=600, check=False,
            )  # fmt: skip
            if res.returncode != 0:
                raise InvalidRequest(
                    f"uv could not resolve {requirements} against {index}: "
                    + res.stderr.replace(secret, "***")[-1500:].strip(),
                    "a requirement may be blocked by the index's policy: see "
                    f"`stockade policy explain {index} PROJECT`",
                )
            return out.read_bytes()
    finally:
        run(lambda r: r.tokens.revoke(token_id))


def _whoami() -> str:
    return os.environ.get("USER") or os.environ.get("USERNAME") or "cli"
