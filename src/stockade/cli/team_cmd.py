"""``stockade team create|list|show|grant|revoke|delete``."""

from __future__ import annotations

import typer

from stockade.cli.common import JsonOpt, print_json, print_table, run
from stockade.cli.vuln_cmd import _whoami
from stockade.errors import InvalidRequest
from stockade.services.repo import GrantRecord, TeamRecord
from stockade.services.runtime import Runtime
from stockade.types import Scope

app = typer.Typer(
    help="Teams: tokens belong to teams, teams are granted indexes.", no_args_is_help=True
)


def _grants(team: TeamRecord) -> str:
    return ", ".join(_grant(g) for g in team.grants) or "(none)"


def _grant(g: GrantRecord) -> str:
    missing = "" if g.index_exists else " (no such index)"
    return f"{g.index_name}:{g.scope.value}{missing}"


@app.command("create")
def create(
    name: str = typer.Argument(..., help="Team name: lower-case letters, digits, . _ -"),
    description: str = typer.Option(None, "--description"),
    json: bool = JsonOpt,
) -> None:
    """Create a team (with no grants: its tokens reach nothing until you grant indexes)."""
    team = run(lambda r: r.teams.create(name, description=description, actor=_whoami()))
    if json:
        print_json(team.as_dict())
    else:
        typer.echo(
            f"created team {team.name!r}; grant it indexes: "
            f"stockade team grant {team.name} INDEX --scope read"
        )


@app.command("list")
def list_(json: bool = JsonOpt) -> None:
    """List teams with their grants and how many active tokens belong to each."""
    teams = run(lambda r: r.teams.list())
    if json:
        print_json([t.as_dict() for t in teams])
        return
    print_table(
        "Teams",
        ["name", "grants", "active tokens", "description"],
        [[t.name, _grants(t), t.tokens_active, t.description] for t in teams],
    )


@app.command("show")
def show(name: str, json: bool = JsonOpt) -> None:
    """Show one team: its grants and token counts."""
    team = run(lambda r: r.teams.show(name))
    if json:
        print_json(team.as_dict())
        return
    typer.echo(f"{'name':13} {team.name}")
    typer.echo(f"{'description':13} {team.description or ''}")
    typer.echo(f"{'created_at':13} {team.created_at.isoformat()}")
    typer.echo(f"{'created_by':13} {team.created_by or ''}")
    typer.echo(f"{'tokens':13} {team.tokens_active} active, {team.tokens_total} in all")
    print_table(
        f"Grants of {team.name}",
        ["index", "scope", "granted", "by"],
        [
            [
                g.index_name + ("" if g.index_exists else " (no such index)"),
                g.scope.value,
                g.created_at.isoformat()[:19],
                g.created_by,
            ]
            for g in team.grants
        ],
    )


@app.command("grant")
def grant(
    team: str,
    index: str = typer.Argument(..., help="Index name, or '*' for every index."),
    scope: str = typer.Option(..., "--scope", help="read | write | admin"),
    json: bool = JsonOpt,
) -> None:
    """Grant TEAM SCOPE on INDEX (replaces the team's grant on that index, if any)."""
    try:
        sc = Scope(scope)
    except ValueError as exc:
        raise InvalidRequest(f"unknown scope {scope!r}", "use read, write or admin") from exc

    async def go(r: Runtime) -> tuple[GrantRecord, Scope | None]:
        return await r.teams.grant(team, index, sc, actor=_whoami())

    made, previous = run(go)
    if json:
        print_json({**made.as_dict(), "previous": previous.value if previous else None})
    elif previous is None:
        typer.echo(f"team {team!r}: {sc.value} on index {index!r}")
    else:
        typer.echo(f"team {team!r}: {sc.value} on index {index!r} (was {previous.value})")


@app.command("revoke")
def revoke(team: str, index: str, json: bool = JsonOpt) -> None:
    """Remove TEAM's grant on INDEX; running servers apply it on their next request."""
    gone = run(lambda r: r.teams.revoke_grant(team, index, actor=_whoami()))
    if json:
        print_json(gone.as_dict())
    else:
        typer.echo(f"team {team!r}: no longer granted index {index!r} (was {gone.scope.value})")


@app.command("delete")
def delete(name: str, json: bool = JsonOpt) -> None:
    """Delete a team and its grants (refused while active tokens belong to it)."""
    team = run(lambda r: r.teams.delete(name, actor=_whoami()))
    if json:
        print_json({"deleted": team.name})
    else:
        typer.echo(f"deleted team {team.name!r}")
