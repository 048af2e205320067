"""``stockade scan``: vulnerabilities in a lock file or an installed environment."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from stockade.cli.common import err, print_json, print_table, run
from stockade.core.lockfiles import Inventory, read_inventory
from stockade.errors import InvalidRequest, StockadeError
from stockade.services.runtime import Runtime
from stockade.services.vulndb import RATINGS, Finding

LEVELS = ("any", *RATINGS[1:])


def counts_at(f: Finding, fail_on: str) -> bool:
    """Whether a finding fails the scan at this threshold (unknown severity counts for 'any')."""
    if not f.counts:
        return False
    if fail_on == "any":
        return True
    if f.severity is None:
        return False
    return RATINGS.index(f.severity) >= RATINGS.index(fail_on)


def scan_inventory(inv: Inventory) -> list[Finding]:
    async def go(r: Runtime) -> list[Finding]:
        found = await r.vulns.query_many((p.ecosystem, p.name, p.version or "") for p in inv.pins)
        return [f for fs in found.values() for f in fs]

    return run(go, exit_code=2)


def sarif(findings: list[Finding], artifact: str) -> dict[str, Any]:
    rules: dict[str, dict[str, Any]] = {}
    results = []
    for f in findings:
        if not f.counts:
            continue
        rules.setdefault(
            f.id,
            {
                "id": f.id,
                "shortDescription": {"text": f.summary or f.id},
                "helpUri": f"https://osv.dev/vulnerability/{f.id}",
                "properties": {"aliases": list(f.aliases), "security-severity": str(f.score or "")},
            },
        )
        level = "error" if f.severity in ("high", "critical") else "warning"
        fix = ", ".join(f.fixed_versions) or "no fixed version known"
        results.append(
            {
                "ruleId": f.id,
                "level": level,
                "message": {
                    "text": f"{f.package} {f.version} is affected by {f.id} "
                    f"({', '.join(f.aliases) or 'no aliases'}); fixed in: {fix}"
                },
                "locations": [{"physicalLocation": {"artifactLocation": {"uri": artifact}}}],
            }
        )
    return {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {
                "tool": {"driver": {"name": "stockade", "rules": list(rules.values())}},
                "results": results,
            }
        ],
    }


def scan(
    file: Path = typer.Argument(
        None,
        help="requirements.txt, pylock.toml, uv.lock, poetry.lock, "
        "environment.yml or a conda explicit lock.",
    ),
    env: Path = typer.Option(None, "--env", help="An installed environment or conda prefix."),
    json: bool = typer.Option(False, "--json", help="Same as --format json."),
    fmt: str = typer.Option("table", "--format", help="table | json | sarif"),
    fail_on: str = typer.Option("any", "--fail-on", help=" | ".join(LEVELS)),
) -> None:
    """Report known vulnerabilities. Exit 0: nothing at or above --fail-on; 1: found; 2: error."""
    fmt = "json" if json else fmt
    try:
        if (file is None) == (env is None):
            raise InvalidRequest("give a lock file or --env PATH (one of them)")
        if fail_on not in LEVELS:
            raise InvalidRequest(f"--fail-on {fail_on!r}", f"use one of {', '.join(LEVELS)}")
        if fmt not in ("table", "json", "sarif"):
            raise InvalidRequest(f"--format {fmt!r}", "use table, json or sarif")
        target = env if env is not None else file
        assert target is not None
        inv = read_inventory(
            target,
            "python-env" if env is not None and not (target / "conda-meta").is_dir() else None,
        )
        findings = scan_inventory(inv)
    except StockadeError as exc:
        err.print(exc.diagnostics(), markup=False, highlight=False)
        raise typer.Exit(2) from None
    failing = [f for f in findings if counts_at(f, fail_on)]
    if fmt == "json":
        print_json(
            {
                "findings": [f.as_dict() for f in findings],
                "unpinned": [
                    {
                        "package": p.name,
                        "ecosystem": p.ecosystem,
                        "spec": p.spec,
                        "source": p.source,
                    }
                    for p in inv.unpinned
                ],
            }
        )
    elif fmt == "sarif":
        print_json(sarif(findings, str(target)))
    else:
        for w in inv.warnings:
            err.print(f"note: {w}", markup=False, highlight=False)
        if findings:
            print_table(
                f"{len(inv.pins)} packages scanned ({inv.kind}): {len(failing)} finding(s) "
                f"at or above {fail_on}",
                [
                    "package",
                    "version",
                    "id",
                    "aliases",
                    "severity",
                    "fixed in",
                    "status",
                    "decided by",
                ],
                [
                    [
                        f.package,
                        f.version,
                        f.id,
                        ", ".join(f.aliases[:2]),
                        f.severity or "?",
                        ", ".join(f.fixed_versions) or "-",
                        f.status,
                        f.decided_by,
                    ]
                    for f in findings
                ],
            )
            for f in findings:
                c = f.curation
                if c is not None:
                    why = ": ".join(x for x in (c.justification, c.reason, c.note) if x)
                    typer.echo(
                        f"{f.id} on {f.package} {f.version}: {f.status} "
                        f"(curated by {c.author or 'unknown'}) {why}"
                    )
        else:
            typer.echo(f"{len(inv.pins)} packages scanned ({inv.kind}): no known vulnerabilities")
        for p in inv.unpinned:
            err.print(
                f"unpinned (not scanned): {p.spec or p.name}  [{p.source}]",
                markup=False,
                highlight=False,
            )
    sys.stdout.flush()
    raise typer.Exit(1 if failing else 0)
