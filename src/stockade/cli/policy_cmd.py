"""``stockade policy …``: set, show, history, explain, test, exceptions, approvals, requests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from stockade.cli.common import JsonOpt, print_json, print_table, run
from stockade.services.policies import PolicyException, PolicyVersion
from stockade.services.runtime import Runtime
from stockade.types import canonicalize_name

app = typer.Typer(
    help="Per-index policies: what an index serves, and why not.", no_args_is_help=True
)


@app.command("set")
def set_(
    index: str,
    file: Path = typer.Option(..., "--file", help="Policy document (TOML); empty = no policy."),
    author: str = typer.Option(None, "--author", help="Who changes it (default: login name)."),
    json: bool = JsonOpt,
) -> None:
    """Store a new version of INDEX's policy (a malformed one is rejected; the old one stays)."""
    from stockade.cli.vuln_cmd import _whoami
    from stockade.errors import InvalidRequest

    def read() -> str:
        try:
            return file.read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidRequest(f"cannot read {file}: {exc}", "give a readable TOML file") from exc

    async def go(r: Runtime) -> PolicyVersion:
        await r.indexes.get(index)
        made = await r.policies.set(index, text, author or _whoami())
        r.audit.record("policy.set", actor=made.author, index=index, version=made.version)
        await r.audit.flush()
        r.changed()
        await r.policy_changed(index, made.version)
        return made

    text = read()
    made = run(go)
    if json:
        print_json(made.as_dict())
    else:
        typer.echo(f"policy of {index!r} is now version {made.version}")


@app.command("show")
def show(index: str, version: int = typer.Option(None, "--version"), json: bool = JsonOpt) -> None:
    """Print the policy in force (or an older version)."""
    v = run(lambda r: r.policies.show(index, version))
    if json:
        print_json(v.as_dict())
    else:
        typer.echo(
            f"# policy of {index!r}, version {v.version}, by {v.author} at "
            f"{v.created_at.isoformat()[:19]}"
        )
        typer.echo(v.text.rstrip())


@app.command("history")
def history(index: str, json: bool = JsonOpt) -> None:
    """Every version of INDEX's policy, with author and time."""
    versions = run(lambda r: r.policies.history(index))
    if json:
        print_json([v.as_dict() for v in versions])
        return
    print_table(
        f"Policy history of {index}",
        ["version", "at", "author", "rules"],
        [
            [v.version, v.created_at.isoformat()[:19], v.author, v.text.count("[[rules]]")]
            for v in versions
        ],
    )


@app.command("explain")
def explain(
    index: str, project: str, version: str = typer.Argument(None), json: bool = JsonOpt
) -> None:
    """Per file of PROJECT on INDEX: allowed or blocked, by which rule and which data.

    On a conda channel, PROJECT is a conda package name: every record of it in every subdir."""

    async def go(r: Runtime) -> list[dict[str, Any]]:
        info = await r.indexes.get(index)
        if info.kind.is_conda:
            return await r.conda.explain(await r.conda.as_channel(info), project, version)
        return await r.pages.explain(info, canonicalize_name(project), version)

    rows = run(go)
    if json:
        print_json(rows)
        return
    for row in rows:
        verdict = "allowed" if row["allowed"] else "BLOCKED"
        shown = f"{row['subdir']}/{row['filename']}" if "subdir" in row else row["filename"]
        typer.echo(f"{verdict:8} {shown}")
        data = row.get("data") or {}
        for label in ("vulns", "findings"):
            for item in data.get(label) or ():
                typer.echo(f"         {label[:-1]}: {item}")
        for line in row["blocked_by"]:
            typer.echo(f"         {line}")
        if row["exception"]:
            typer.echo(f"         exception {row['exception']}")
        for line in row["warnings"]:
            typer.echo(f"         {'overridden' if row['exception'] else 'warn'}: {line}")
    if not rows:
        typer.echo(f"no files of {project} {version or ''} on {index}".rstrip())


@app.command("allow")
def allow(
    index: str,
    requirement: str = typer.Argument(..., help="NAME or NAME with a specifier, e.g. alpha==1.1"),
    reason: str = typer.Option(..., "--reason", help="Why this is acceptable (required)."),
    expires: str = typer.Option(
        None, "--expires", help="Lifetime such as 7d, 30d (default: none)."
    ),
    json: bool = JsonOpt,
) -> None:
    """Grant an exception: serve matching files despite the policy, until it expires."""
    from stockade.cli.vuln_cmd import _whoami

    async def go(r: Runtime) -> PolicyException:
        await r.indexes.get(index)
        made = await r.policies.allow(
            index, requirement, reason=reason, expires=expires, author=_whoami()
        )
        r.audit.record(
            "policy.exception",
            actor=made.author,
            index=index,
            project=made.project,
            specifier=made.specifier,
            reason=reason,
            expires_at=made.expires_at.isoformat() if made.expires_at else None,
        )
        await r.audit.flush()
        r.changed()
        return made

    made = run(go)
    if json:
        print_json(made.as_dict())
    else:
        until = made.expires_at.isoformat()[:19] if made.expires_at else "revoked"
        typer.echo(
            f"exception #{made.id}: {made.project}{made.specifier or ''} is served on "
            f"{index!r} until {until}"
        )


@app.command("exceptions")
def exceptions(index: str, json: bool = JsonOpt) -> None:
    """Exceptions of INDEX, active and past."""
    items = run(lambda r: r.policies.exceptions(index))
    if json:
        print_json([e.as_dict() for e in items])
        return
    print_table(
        f"Policy exceptions of {index}",
        ["id", "project", "versions", "reason", "author", "expires", "revoked"],
        [
            [
                e.id,
                e.project,
                e.specifier or "all",
                e.reason,
                e.author,
                e.expires_at.isoformat()[:19] if e.expires_at else "never",
                e.revoked_at.isoformat()[:19] if e.revoked_at else "",
            ]
            for e in items
        ],
    )


@app.command("revoke-exception")
def revoke_exception(exception_id: int, json: bool = JsonOpt) -> None:
    """End an exception now."""

    async def go(r: Runtime) -> PolicyException:
        made = await r.policies.revoke_exception(exception_id)
        r.audit.record(
            "policy.exception_revoke",
            index=made.index,
            project=made.project,
            exception=exception_id,
        )
        await r.audit.flush()
        r.changed()
        return made

    made = run(go)
    if json:
        print_json(made.as_dict())
    else:
        typer.echo(f"exception #{exception_id} revoked")


@app.command("test")
def draft_test(
    index: str,
    file: Path = typer.Option(..., "--file", help="Draft policy document (TOML)."),
    limit: int = typer.Option(20, "--limit", help="Files listed per project (0: all)."),
    json: bool = JsonOpt,
) -> None:
    """What a draft policy would change on INDEX, before it is applied (nothing is stored).

    Every project Stockade already knows on INDEX is decided by the policy in force and by the
    draft; the report counts files that the draft would newly block or newly allow, per project.
    On a conda channel: every record of every subdir (a mirror's upstream repodata, a private
    channel's packages), per package name.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from stockade.cli.common import err
    from stockade.core.policy import parse_policy
    from stockade.errors import InvalidRequest
    from stockade.services.policy_check import DraftReport, compare

    try:
        text = file.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"cannot read {file}: {exc}", "give a readable TOML file") from exc

    async def go(r: Runtime) -> DraftReport:
        draft = parse_policy(text)  # a malformed draft is reported like `policy set` would
        info = await r.indexes.get(index)
        if info.kind.is_conda:
            return await r.conda.draft_report(await r.conda.as_channel(info), draft)
        if json or not err.is_terminal:
            return await compare(r.pages, r.policies, info, draft)
        with Progress(
            TextColumn("deciding"), BarColumn(), MofNCompleteColumn(), console=err, transient=True
        ) as bar:
            task = bar.add_task("test", total=None)
            return await compare(
                r.pages,
                r.policies,
                info,
                draft,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )

    report = run(go)
    if json:
        print_json(report.as_dict())
        return
    d = report.as_dict()
    typer.echo(
        f"{d['projects_checked']} projects, {d['files_checked']} files checked on {index!r}: "
        f"blocked now {d['blocked_before']}, with the draft {d['blocked_after']} "
        f"({d['newly_blocked']} newly blocked, {d['newly_allowed']} newly allowed)"
    )
    for c in report.changes:
        typer.echo(
            f"\n{c.project}: {len(c.newly_blocked)} newly blocked, "
            f"{len(c.newly_allowed)} newly allowed (of {c.files} files)"
        )
        for label, items in (("+ blocked", c.newly_blocked), ("- blocked", c.newly_allowed)):
            shown = items if limit <= 0 else items[:limit]
            for filename, reason in shown:
                typer.echo(f"  {label} {filename}: {reason}")
            if len(items) > len(shown):
                typer.echo(f"  … {len(items) - len(shown)} more (--limit 0 lists all)")
    for project, why in report.errors:
        typer.echo(f"\n{project}: not checked: {why}", err=True)


@app.command("requests")
def requests_(
    index: str,
    all_: bool = typer.Option(False, "--all", help="Approved requests too."),
    json: bool = JsonOpt,
) -> None:
    """Projects users asked for that INDEX's allow-list refused (most asked first)."""
    items = run(lambda r: r.policies.requests(index, pending_only=not all_))
    if json:
        print_json([i.as_dict() for i in items])
        return
    print_table(
        f"Access requests on {index}",
        ["id", "project", "version", "asked", "last asked", "last by", "status"],
        [
            [
                i.id,
                i.project,
                i.version or "any",
                i.count,
                i.last_at.isoformat()[:19],
                i.last_actor,
                f"approved (#{i.approval_id})" if i.approval_id else "pending",
            ]
            for i in items
        ],
    )
    if not items:
        typer.echo(f"no {'' if all_ else 'pending '}requests on {index}")


@app.command("approve")
def approve(
    index: str,
    requirement: str = typer.Argument(..., help="NAME or NAME with a specifier, e.g. alpha>=1"),
    reason: str = typer.Option(None, "--reason", help="Why it is approved (kept with it)."),
    json: bool = JsonOpt,
) -> None:
    """Add a project (or versions) to INDEX's allow-list (allow_only names rules).

    Unlike `policy allow`, this overrides nothing else: vulnerability, licence and deny rules
    still apply to approved projects.
    """
    from stockade.cli.vuln_cmd import _whoami
    from stockade.services.policies import PolicyApproval

    async def go(r: Runtime) -> PolicyApproval:
        await r.indexes.get(index)
        made = await r.policies.approve(index, requirement, reason=reason, author=_whoami())
        r.audit.record(
            "policy.approve",
            actor=made.author,
            index=index,
            project=made.project,
            specifier=made.specifier,
            reason=reason,
        )
        await r.audit.flush()
        r.changed()
        return made

    made = run(go)
    if json:
        print_json(made.as_dict())
    else:
        typer.echo(
            f"approval #{made.id}: {made.project}{made.specifier or ''} is on the allow-list "
            f"of {index!r}"
        )


@app.command("approvals")
def approvals(index: str, json: bool = JsonOpt) -> None:
    """Approvals of INDEX (projects added to its allow-list), current and revoked."""
    items = run(lambda r: r.policies.approvals(index))
    if json:
        print_json([a.as_dict() for a in items])
        return
    print_table(
        f"Approvals on {index}",
        ["id", "project", "versions", "reason", "author", "at", "revoked"],
        [
            [
                a.id,
                a.project,
                a.specifier or "all",
                a.reason,
                a.author,
                a.created_at.isoformat()[:19],
                a.revoked_at.isoformat()[:19] if a.revoked_at else "",
            ]
            for a in items
        ],
    )


@app.command("revoke-approval")
def revoke_approval(approval_id: int, json: bool = JsonOpt) -> None:
    """Take a project off the allow-list again."""
    from stockade.services.policies import PolicyApproval

    async def go(r: Runtime) -> PolicyApproval:
        made = await r.policies.revoke_approval(approval_id)
        r.audit.record(
            "policy.approval_revoke", index=made.index, project=made.project, approval=approval_id
        )
        await r.audit.flush()
        r.changed()
        return made

    made = run(go)
    if json:
        print_json(made.as_dict())
    else:
        typer.echo(f"approval #{approval_id} revoked")
