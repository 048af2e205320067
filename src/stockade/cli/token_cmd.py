"""``stockade token create|list|revoke``."""

from __future__ import annotations

import typer

from stockade.cli.common import JsonOpt, print_json, print_table, run
from stockade.errors import InvalidRequest
from stockade.services.repo import TokenRecord
from stockade.services.runtime import Runtime
from stockade.types import Scope

app = typer.Typer(help="Create, list and revoke access tokens.", no_args_is_help=True)


@app.command("create")
def create(
    index: str = typer.Option(..., "--index", help="Index the token is for ('*' = every index)."),
    scope: str = typer.Option("read", "--scope", help="read | write | admin"),
    expires: str = typer.Option(None, "--expires", help="Lifetime such as 12h, 30d, 1y."),
    team: str = typer.Option(
        None, "--team", help="Team the token belongs to (must exist; see `stockade team`)."
    ),
    note: str = typer.Option(None, "--note", help="Free text: who or what uses it."),
    json: bool = JsonOpt,
) -> None:
    """Create a token; it is printed once, on the last line of stdout."""
    try:
        sc = Scope(scope)
    except ValueError as exc:
        raise InvalidRequest(f"unknown scope {scope!r}", "use read, write or admin") from exc

    async def go(r: Runtime) -> tuple[str, TokenRecord]:
        result = await r.tokens.create(index=index, scope=sc, expires=expires, team=team, note=note)
        await r.audit.flush()
        return result

    secret, rec = run(go)
    if json:
        print_json({**rec.as_dict(), "token": secret})
        return
    exp = rec.info.expires_at.isoformat() if rec.info.expires_at else "never"
    of_team = f", team {rec.info.team!r}" if rec.info.team else ""
    typer.echo(f"token {rec.info.id}: scope {sc.value} on index {index!r}{of_team}, expires {exp}")
    typer.echo("store it now; it is not shown again:")
    typer.echo(secret)


@app.command("list")
def list_(
    index: str = typer.Option(None, "--index", help="Only tokens for this index."),
    team: str = typer.Option(None, "--team", help="Only tokens of this team."),
    json: bool = JsonOpt,
) -> None:
    """List tokens (ids and properties; secrets are never stored)."""
    records = run(lambda r: r.tokens.list(index=index, team=team))
    if json:
        print_json([r.as_dict() for r in records])
        return
    rows = []
    for rec in records:
        d = rec.as_dict()
        state = "revoked" if d["revoked_at"] else "active"
        rows.append(
            [
                d["id"],
                d["index"],
                d["scope"],
                d["team"],
                state,
                d["expires_at"] or "never",
                d["last_used_at"] or "never",
                d["note"],
            ]
        )
    print_table(
        "Tokens", ["id", "index", "scope", "team", "state", "expires", "last used", "note"], rows
    )


@app.command("revoke")
def revoke(token_id: str, json: bool = JsonOpt) -> None:
    """Revoke a token by id; running servers refuse it at once."""

    async def go(r: Runtime) -> TokenRecord:
        rec = await r.tokens.revoke(token_id)
        await r.audit.flush()
        r.changed("tokens")
        return rec

    rec = run(go)
    if json:
        print_json(rec.as_dict())
    else:
        typer.echo(f"revoked token {token_id}")
