"""``stockade console user add|list|disable``: accounts of the web console (``/ui/``)."""

from __future__ import annotations

import sys

import typer

from stockade.cli.common import JsonOpt, print_json, print_table, run
from stockade.errors import InvalidRequest
from stockade.services.console import ConsoleUser
from stockade.services.runtime import Runtime

app = typer.Typer(help="Web console (/ui/) accounts.", no_args_is_help=True)
user_app = typer.Typer(help="Add, list and disable console accounts.", no_args_is_help=True)
app.add_typer(user_app, name="user")


def _read_password(from_stdin: bool) -> str:
    if from_stdin or not sys.stdin.isatty():
        line = sys.stdin.readline()
        password = line.rstrip("\r\n")
        if not password:
            raise InvalidRequest("no password on stdin", "echo the password into the command")
        return password
    first: str = typer.prompt("password", hide_input=True)
    again: str = typer.prompt("password (again)", hide_input=True)
    if first != again:
        raise InvalidRequest("the passwords differ", "type the same password twice")
    return first


@user_app.command("add")
def add(
    name: str = typer.Argument(..., help="User name (1-24 of a-z 0-9 . _ -)."),
    role: str = typer.Option(..., "--role", help="admin (may change things) | viewer"),
    password_stdin: bool = typer.Option(
        False,
        "--password-stdin",
        help="Read the password from the first line of stdin (implied when stdin is not a tty).",
    ),
    json: bool = JsonOpt,
) -> None:
    """Create a console account; the password is prompted for (or read from stdin)."""
    password = _read_password(password_stdin)

    async def go(r: Runtime) -> ConsoleUser:
        made = await r.console.add_user(name, password, role)
        await r.audit.flush()
        return made

    user = run(go)
    if json:
        print_json(user.as_dict())
    else:
        typer.echo(f"console user {user.username!r} created ({user.role}); log in at /ui/")


@user_app.command("list")
def list_(json: bool = JsonOpt) -> None:
    """List console accounts (never passwords)."""
    users = run(lambda r: r.console.list_users())
    if json:
        print_json([u.as_dict() for u in users])
        return
    rows = [
        [u.username, u.role, "disabled" if u.disabled else "active", u.created_at.isoformat()]
        for u in users
    ]
    print_table("Console users", ["user", "role", "state", "created"], rows)


@user_app.command("disable")
def disable(name: str, json: bool = JsonOpt) -> None:
    """Disable an account; its sessions end at once."""

    async def go(r: Runtime) -> ConsoleUser:
        made = await r.console.disable_user(name)
        await r.audit.flush()
        return made

    user = run(go)
    if json:
        print_json(user.as_dict())
    else:
        typer.echo(f"console user {user.username!r} disabled; its sessions are ended")
