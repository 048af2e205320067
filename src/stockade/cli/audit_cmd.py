"""``stockade audit …``: the tamper-evident audit log (list, export, verify, checkpoint,
archive, segments)."""

from __future__ import annotations

import csv
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any, TextIO

import orjson
import typer

from stockade.cli.common import JsonOpt, print_json, print_table, run
from stockade.core.auditchain import VerifyReport
from stockade.core.auth import parse_duration, parse_when
from stockade.errors import InvalidRequest
from stockade.services.audit import query_events
from stockade.services.audit_archive import SegmentError
from stockade.services.repo import utcnow
from stockade.services.runtime import Runtime

app = typer.Typer(
    help="The audit log: every download, upload, refusal and change, on a hash chain.",
    no_args_is_help=True,
)

SinceOpt = typer.Option(None, "--since", help="From: a duration back (7d, 12h) or a date.")
UntilOpt = typer.Option(None, "--until", help="Until (exclusive): a duration back or a date.")
ActorOpt = typer.Option(None, "--actor", "--token", help="A token id.")
TeamOpt = typer.Option(None, "--team", help="Events by any token of this team.")
IndexOpt = typer.Option(None, "--index")
ProjectOpt = typer.Option(None, "--project")
ActionOpt = typer.Option(None, "--action", help="e.g. download, upload, policy.set")
OutcomeOpt = typer.Option(None, "--outcome", help="ok, blocked, denied, …")


async def _filters(
    r: Runtime,
    since: str | None,
    until: str | None,
    actor: str | None,
    team: str | None,
    index: str | None,
    project: str | None,
    action: str | None,
    outcome: str | None,
) -> dict[str, Any]:
    return {
        "since": parse_when(since, "--since"),
        "until": parse_when(until, "--until"),
        "actors": await r.tokens.actor_ids(r.teams, team, actor),
        "index": index,
        "project": project,
        "action": action,
        "outcome": outcome,
    }


@app.command("list")
def list_(
    limit: int = typer.Option(50, "--limit"),
    since: str = SinceOpt,
    until: str = UntilOpt,
    actor: str = ActorOpt,
    team: str = TeamOpt,
    index: str = IndexOpt,
    project: str = ProjectOpt,
    action: str = ActionOpt,
    outcome: str = OutcomeOpt,
    json: bool = JsonOpt,
) -> None:
    """Recent audit events, newest first, filtered."""

    async def go(r: Runtime) -> list[dict[str, Any]]:
        f = await _filters(r, since, until, actor, team, index, project, action, outcome)
        return [e async for e in query_events(r.sessions, limit=limit, newest_first=True, **f)]

    events = run(go)
    if json:
        print_json(events)
        return
    print_table(
        "Audit events",
        ["seq", "at", "actor", "action", "outcome", "index", "target", "detail"],
        [
            [
                e["seq"],
                e["at"][:19],
                e["actor"],
                e["action"],
                e["outcome"],
                e["index"],
                e["filename"] or e["project"],
                e["detail"],
            ]
            for e in events
        ],
    )


EXPORT_COLUMNS = (
    "seq",
    "at",
    "actor",
    "action",
    "outcome",
    "index",
    "project",
    "filename",
    "client",
    "detail",
    "hash",
)


async def _events(r: Runtime, archived: bool, f: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    if archived and r.audit.archive is not None:
        try:
            async for e in r.audit.archive.events(**f):
                yield e
        except SegmentError as exc:
            raise InvalidRequest(
                f"cannot read an archived audit segment: {exc}",
                "run `stockade audit verify` to see which one",
            ) from None
    async for e in query_events(r.sessions, **f):
        yield e


@app.command("export")
def export(
    fmt: str = typer.Option("jsonl", "--format", help="jsonl, json or csv"),
    output: Path = typer.Option(None, "--output", "-o", help="Write here (default: stdout)."),
    since: str = SinceOpt,
    until: str = UntilOpt,
    actor: str = ActorOpt,
    team: str = TeamOpt,
    index: str = IndexOpt,
    project: str = ProjectOpt,
    action: str = ActionOpt,
    outcome: str = OutcomeOpt,
    archived: bool = typer.Option(
        False,
        "--archived",
        help="Also read the segments retention archived to storage (oldest first, before "
        'the events still in the database; each marked "archived": true).',
    ),
) -> None:
    """Every matching event, oldest first, as JSON lines, one JSON array or CSV (streamed)."""
    if fmt not in ("jsonl", "json", "csv"):
        raise typer.BadParameter(f"--format {fmt!r}: use jsonl, json or csv")

    async def go(r: Runtime) -> int:
        f = await _filters(r, since, until, actor, team, index, project, action, outcome)
        out: TextIO = (
            output.open("w", encoding="utf-8", newline="") if output is not None else sys.stdout
        )
        n = 0
        try:
            writer = csv.writer(out) if fmt == "csv" else None
            if writer is not None:
                writer.writerow(EXPORT_COLUMNS)
            if fmt == "json":
                out.write("[")
            async for e in _events(r, archived, f):
                if writer is not None:
                    row = [e[c] for c in EXPORT_COLUMNS]
                    row[EXPORT_COLUMNS.index("detail")] = orjson.dumps(e["detail"]).decode()
                    writer.writerow(row)
                elif fmt == "json":
                    out.write(("," if n else "") + orjson.dumps(e).decode())
                else:
                    out.write(orjson.dumps(e).decode() + "\n")
                n += 1
            if fmt == "json":
                out.write("]\n")
        finally:
            if output is not None:
                out.close()
        return n

    n = run(go)
    if output is not None:
        typer.echo(f"{n} events written to {output}", err=True)


@app.command("verify")
def verify(
    quick: bool = typer.Option(
        False,
        "--quick",
        help="Do not read archived segments back from storage (their signatures are still "
        "checked, and the database's chain against their ends).",
    ),
    json: bool = JsonOpt,
) -> None:
    """Check the hash chain and the signed checkpoints, archived segments included: names the
    first edited, deleted or moved event. Exit status 1 when the chain is broken."""

    async def go(r: Runtime) -> VerifyReport:
        return await r.audit.verify(read_archives=not quick)

    report = run(go)
    if json:
        print_json(report.as_dict())
    elif report.ok:
        archived = (
            f" + {report.archived_events} archived in {report.segments_ok} segment(s)"
            if report.segments
            else ""
        )
        typer.echo(
            f"audit chain intact: {report.events} events{archived} (seq 1-{report.last_seq}), "
            f"{report.checkpoints_ok}/{report.checkpoints} signed checkpoints verified"
        )
    else:
        first = report.breaks[0]
        typer.echo(f"AUDIT CHAIN BROKEN at seq {first.seq}: {first.problem}", err=True)
        for b in report.breaks[1:20]:
            typer.echo(f"  also: {b.problem}", err=True)
        if len(report.breaks) > 20:
            typer.echo(f"  … {len(report.breaks) - 20} more", err=True)
    if not report.ok:
        raise typer.Exit(1)


@app.command("checkpoint")
def checkpoint(json: bool = JsonOpt) -> None:
    """Sign the chain's head now with the server's audit key (servers also do this every
    1,000 events or hour)."""

    async def go(r: Runtime) -> dict[str, Any] | None:
        await r.audit.flush()
        cp = await r.audit.checkpoint()
        if cp is None:
            return None
        return {"seq": cp.seq, "hash": cp.hash, "key_id": cp.key_id, "at": cp.at.isoformat()}

    made = run(go)
    if json:
        print_json(made)
    elif made is None:
        typer.echo("nothing to sign: the chain is empty or already signed at its head")
    else:
        typer.echo(f"checkpoint at seq {made['seq']} signed by key {made['key_id']}")


@app.command("affected")
def affected(
    advisory: str = typer.Argument(..., help="An advisory id or alias (PYSEC-…, GHSA-…, CVE-…)."),
    json: bool = JsonOpt,
) -> None:
    """Who downloaded a version the advisory affects: per token (and its team), index and
    version, first and last download, and the fixed versions to move to. Curations count: a
    version curated not_affected is not listed."""
    from stockade.services.response import affected_downloads

    async def go(r: Runtime) -> dict[str, Any]:
        return await affected_downloads(r.sessions, r.vulns, r.tokens, advisory)

    found = run(go)
    if json:
        print_json(found)
        return
    rows = found["downloads"]
    if not rows:
        typer.echo(f"no recorded download of a version {found['advisory']} affects")
        return
    print_table(
        f"{found['advisory']} ({', '.join(found['aliases'])}): downloads of affected versions",
        ["token", "team", "index", "version", "downloads", "first", "last", "fixed in"],
        [
            [
                d["token"] or "anonymous",
                d["team"] or "-",
                d["index"],
                f"{d['project']} {d['version']}",
                d["downloads"],
                d["first_download"][:16],
                d["last_download"][:16],
                ", ".join(d["fixed_in"]) or "no fix yet",
            ]
            for d in rows
        ],
    )


@app.command("archive")
def archive(
    older_than: str = typer.Option(
        None,
        "--older-than",
        help="Archive events older than this (365d, 12w…); default: the audit_retention_days "
        "setting.",
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would move; move nothing."),
    json: bool = JsonOpt,
) -> None:
    """Move old audit events from the database to storage as signed segments (retention; the
    server also does it daily when audit_retention_days is set). The chain over them is
    checked first: a broken chain is never archived. `audit verify` reads segments back."""

    async def go(r: Runtime) -> dict[str, Any]:
        if older_than is not None:
            age = parse_duration(older_than)
        elif r.settings.audit_retention_days > 0:
            age = timedelta(days=r.settings.audit_retention_days)
        else:
            raise InvalidRequest(
                "no retention period: audit_retention_days is 0 (keep everything)",
                "give --older-than 365d, or set audit_retention_days in stockade.toml",
            )
        before = utcnow() - age
        assert r.audit.archive is not None
        if dry_run:
            await r.audit.flush()
            return {"before": before.isoformat(), "dry_run": True} | await r.audit.archive.pending(
                before
            )
        made = await r.audit.archive.archive(before, actor="cli")
        return {"before": before.isoformat(), "segments": [seg.as_dict() for seg in made]}

    got = run(go)
    if json:
        print_json(got)
    elif got.get("dry_run"):
        if got["events"]:
            typer.echo(
                f"would archive {got['events']} events (seq {got['first_seq']}-"
                f"{got['last_seq']}) written before {got['before'][:19]}"
            )
        else:
            typer.echo(f"nothing to archive: no event before {got['before'][:19]} is left")
    elif not got["segments"]:
        typer.echo(f"nothing to archive: no event before {got['before'][:19]} is left")
    else:
        for seg in got["segments"]:
            typer.echo(
                f"archived seq {seg['first_seq']}-{seg['last_seq']} ({seg['events']} events, "
                f"{seg['size']} bytes) to blob {seg['blob_sha256']}"
            )


@app.command("segments")
def segments(json: bool = JsonOpt) -> None:
    """Audit segments archived to storage, oldest first (read them with
    `audit export --archived`; `audit verify` checks them)."""

    async def go(r: Runtime) -> list[dict[str, Any]]:
        assert r.audit.archive is not None
        return [seg.as_dict() for seg in await r.audit.archive.segments()]

    rows = run(go)
    if json:
        print_json(rows)
        return
    if not rows:
        typer.echo("no archived segments: every audit event is in the database")
        return
    print_table(
        "Archived audit segments",
        ["seq", "events", "from", "to", "bytes", "blob", "archived"],
        [
            [
                f"{x['first_seq']}-{x['last_seq']}",
                x["events"],
                x["first_at"][:19],
                x["last_at"][:19],
                x["size"],
                x["blob_sha256"][:16],
                x["archived_at"][:19],
            ]
            for x in rows
        ],
    )
