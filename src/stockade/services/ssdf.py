"""NIST SSDF (SP 800-218) evidence report for a period, from Stockade's own data.

For each SSDF task a package repository supports, the report lists what Stockade's tables say
about the period: each evidence item is a sentence built from counted rows, with the table, the
ids or audit ``seq`` numbers behind it and an API link to see them. A task without data in the
period is reported as not evidenced, with the reason. Nothing is a canned claim: when a count
is zero, the sentence says zero (or the task is a gap).

The attestation helper maps the four statements of CISA's Secure Software Development
Attestation Form (section III) to the tasks that back them and says which the evidence supports.
"""

from __future__ import annotations

import html
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from stockade import __version__
from stockade.db.models import (
    AdvisoryRow,
    AuditCheckpointRow,
    AuditRow,
    CurationRow,
    FileRow,
    PolicyExceptionRow,
    PolicyRow,
    ScanReportRow,
    TeamGrantRow,
    TokenRow,
    VersionIdentityRow,
)
from stockade.services.audit import AuditLog
from stockade.services.repo import aware, utcnow

REFS_MAX = 25  # ids listed per evidence item (the count is always complete)

PRACTICES: tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...] = (
    (
        "PO.3",
        "Implement supporting toolchains",
        (
            (
                "PO.3.3",
                "Configure tools to generate artifacts of their support of secure software "
                "development practices",
            ),
        ),
    ),
    (
        "PO.5",
        "Implement and maintain secure environments",
        (("PO.5.1", "Separate and protect each environment involved in software development"),),
    ),
    (
        "PS.1",
        "Protect all forms of code from unauthorized access and tampering",
        (("PS.1.1", "Store all forms of code based on the principle of least privilege"),),
    ),
    (
        "PS.2",
        "Provide a mechanism for verifying software release integrity",
        (("PS.2.1", "Make software integrity verification information available"),),
    ),
    (
        "PS.3",
        "Archive and protect each software release",
        (
            ("PS.3.1", "Securely archive the necessary files and supporting data"),
            ("PS.3.2", "Collect, safeguard, maintain, and share provenance data"),
        ),
    ),
    (
        "PW.4",
        "Reuse existing, well-secured software when feasible",
        (
            ("PW.4.1", "Acquire and maintain well-secured software components"),
            ("PW.4.4", "Verify that acquired components are securely maintained and checked"),
        ),
    ),
    (
        "RV.1",
        "Identify and confirm vulnerabilities on an ongoing basis",
        (
            ("RV.1.1", "Gather information on potential vulnerabilities in third-party components"),
            ("RV.1.2", "Review, analyze, and/or test code to identify vulnerabilities"),
        ),
    ),
    (
        "RV.2",
        "Assess, prioritize, and remediate vulnerabilities",
        (
            ("RV.2.1", "Analyze each vulnerability to gather sufficient information"),
            ("RV.2.2", "Plan and implement risk responses for vulnerabilities"),
        ),
    ),
    (
        "RV.3",
        "Analyze vulnerabilities to identify their root causes",
        (("RV.3.3", "Review the software for similar vulnerabilities to eradicate a class"),),
    ),
)

ATTESTATION: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        "1",
        "The software was developed and built in secure environments (access control, logging "
        "and auditing of trust relationships).",
        ("PO.5.1", "PS.1.1", "PO.3.3"),
    ),
    (
        "2",
        "A good-faith effort was made to maintain trusted source code supply chains by employing "
        "automated tools to address the security of third-party components and manage related "
        "vulnerabilities.",
        ("PW.4.1", "PW.4.4", "RV.1.1", "RV.1.2"),
    ),
    (
        "3",
        "Provenance is maintained for internal code and third-party components.",
        ("PS.3.2", "PS.2.1", "PS.3.1"),
    ),
    (
        "4",
        "Automated tools or comparable processes check for security vulnerabilities.",
        ("RV.1.1", "RV.1.2", "PW.4.4", "RV.2.1", "RV.2.2"),
    ),
)


@dataclass(slots=True)
class Evidence:
    claim: str
    source: str  # table
    refs: list[str] = field(default_factory=list)  # ids or "seq N"
    link: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"claim": self.claim, "source": self.source, "refs": self.refs, "link": self.link}


def _refs(values: list[Any], prefix: str = "") -> list[str]:
    return [f"{prefix}{v}" for v in values[:REFS_MAX]]


_RULE = re.compile(r"rule \d+ \(([a-z]+)")


class SsdfReport:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], audit: AuditLog) -> None:
        self._sessions = sessions
        self._audit = audit

    async def build(self, start: datetime, end: datetime) -> dict[str, Any]:
        if end <= start:
            from stockade.errors import InvalidRequest

            raise InvalidRequest("the period is empty (--to is not after --from)", "swap them")
        await self._audit.flush()
        ev: dict[str, list[Evidence]] = {}
        gaps: dict[str, str] = {}
        async with self._sessions() as s:
            await self._audit_evidence(s, start, end, ev)
            await self._access(s, start, end, ev)
            await self._integrity(s, start, end, ev, gaps)
            await self._policies(s, start, end, ev)
            await self._vulns(s, start, end, ev, gaps)
            await self._threats(s, start, end, ev)
            await self._response(s, start, end, ev)
        verify = await self._audit.verify()
        chain = Evidence(
            f"the audit hash chain verified {'intact' if verify.ok else 'BROKEN'} when this "
            f"report was made: {verify.events} events, {verify.checkpoints_ok} of "
            f"{verify.checkpoints} signed checkpoints valid"
            + ("" if verify.ok else f"; first break: {verify.breaks[0].problem}"),
            "audit_events, audit_checkpoints",
            link="/api/v1/audit/verify",
        )
        ev.setdefault("PO.3.3", []).insert(0, chain)
        gaps.setdefault(
            "RV.3.3",
            "Stockade records which components were affected and downloaded, but root-cause "
            "analysis of the consuming software is outside what a package repository sees",
        )
        practices = []
        status: dict[str, str] = {}
        for pid, title, tasks in PRACTICES:
            out_tasks = []
            for tid, ttitle in tasks:
                items = ev.get(tid, [])
                st = "evidenced" if items else "not evidenced"
                if tid in gaps and items:
                    st = "partially evidenced"
                status[tid] = st
                out_tasks.append(
                    {
                        "id": tid,
                        "title": ttitle,
                        "status": st,
                        "evidence": [e.as_dict() for e in items],
                        "gap": gaps.get(tid)
                        if st != "evidenced"
                        else None or ("no data in the period" if not items else None),
                    }
                )
            practices.append({"id": pid, "title": title, "tasks": out_tasks})
        attestation = []
        for item, text, backing in ATTESTATION:
            backed = [t for t in backing if status.get(t) == "evidenced"]
            partial = [t for t in backing if status.get(t) == "partially evidenced"]
            missing = [t for t in backing if status.get(t) == "not evidenced"]
            attestation.append(
                {
                    "item": item,
                    "statement": text,
                    "tasks": list(backing),
                    "evidenced": backed,
                    "partial": partial,
                    "not_evidenced": missing,
                    "supported": "yes"
                    if not missing and not partial
                    else ("partly" if backed or partial else "no"),
                }
            )
        return {
            "report": "NIST SP 800-218 (SSDF) evidence",
            "period": {"from": start.isoformat(), "to": end.isoformat()},
            "generated_at": utcnow().isoformat(),
            "stockade_version": __version__,
            "practices": practices,
            "attestation": attestation,
        }

    # -- evidence gatherers --------------------------------------------------------------------

    async def _events(
        self, s: AsyncSession, start: datetime, end: datetime, *where: Any
    ) -> list[AuditRow]:
        q = (
            select(AuditRow)
            .where(AuditRow.at >= start, AuditRow.at < end, *where)
            .order_by(AuditRow.seq)
        )
        return list((await s.execute(q)).scalars())

    async def _audit_evidence(
        self, s: AsyncSession, start: datetime, end: datetime, ev: dict[str, list[Evidence]]
    ) -> None:
        n = await s.scalar(select(func.count()).where(AuditRow.at >= start, AuditRow.at < end))
        cps = list(
            (
                await s.execute(
                    select(AuditCheckpointRow).where(
                        AuditCheckpointRow.at >= start, AuditCheckpointRow.at < end
                    )
                )
            ).scalars()
        )
        ev.setdefault("PO.3.3", []).append(
            Evidence(
                f"{n or 0} audit events were recorded on the hash chain in the period, and "
                f"{len(cps)} checkpoints were signed (keys: "
                f"{', '.join(sorted({c.key_id for c in cps})) or 'none'})",
                "audit_events, audit_checkpoints",
                _refs([c.seq for c in cps], "checkpoint at seq "),
                "/api/v1/audit",
            )
        )

    async def _access(
        self, s: AsyncSession, start: datetime, end: datetime, ev: dict[str, list[Evidence]]
    ) -> None:
        tokens = list((await s.execute(select(TokenRow))).scalars())
        active = [
            t
            for t in tokens
            if (t.revoked_at is None or (aware(t.revoked_at) or end) >= end)
            and (t.expires_at is None or (aware(t.expires_at) or end) > end)
            and (aware(t.created_at) or end) < end
        ]
        scoped = [t for t in active if t.index_name != "*"]
        teams = [t for t in active if t.team]
        grants = await s.scalar(select(func.count()).select_from(TeamGrantRow))
        if active:
            ev.setdefault("PO.5.1", []).append(
                Evidence(
                    f"{len(active)} tokens were active at the end of the period: {len(scoped)} "
                    f"limited to one index, {len(teams)} belonging to a team (teams hold "
                    f"{grants or 0} index grants); scopes: "
                    + ", ".join(
                        f"{k} {v}" for k, v in sorted(Counter(t.scope for t in active).items())
                    ),
                    "tokens, team_grants",
                    _refs([t.id for t in active]),
                    "/api/v1/tokens",
                )
            )
        denied = await self._events(s, start, end, AuditRow.outcome == "refused")
        if denied:
            ev.setdefault("PO.5.1", []).append(
                Evidence(
                    f"{len(denied)} requests were refused for lack of authorization in the period",
                    "audit_events",
                    _refs([e.seq for e in denied], "seq "),
                    "/api/v1/audit?outcome=refused",
                )
            )
        created = [t for t in tokens if start <= (aware(t.created_at) or start) < end]
        revoked = [
            t for t in tokens if t.revoked_at and start <= (aware(t.revoked_at) or end) < end
        ]
        if created or revoked or active:
            no_expiry = [t for t in active if t.expires_at is None]
            ev.setdefault("PS.1.1", []).append(
                Evidence(
                    f"token hygiene: {len(created)} tokens created in the period "
                    f"({sum(1 for t in created if t.expires_at)} with an expiry), {len(revoked)} "
                    f"revoked; {len(no_expiry)} active tokens have no expiry",
                    "tokens",
                    _refs([t.id for t in created + revoked]),
                    "/api/v1/tokens",
                )
            )

    async def _integrity(
        self,
        s: AsyncSession,
        start: datetime,
        end: datetime,
        ev: dict[str, list[Evidence]],
        gaps: dict[str, str],
    ) -> None:
        stored = list(
            (
                await s.execute(
                    select(FileRow.id, FileRow.size).where(  # upload_time: when it was stored
                        FileRow.upload_time >= start, FileRow.upload_time < end
                    )
                )
            ).tuples()
        )
        total = await s.scalar(select(func.count()).select_from(FileRow))
        tampered = await self._events(
            s, start, end, AuditRow.action.in_(("upstream.digest_changed", "integrity.mismatch"))
        )
        mismatch = [
            e
            for e in await self._events(s, start, end, AuditRow.action == "download")
            if e.outcome == "error" and "sha256" in str((e.detail or {}).get("reason", ""))
        ]
        if stored or total:
            ev.setdefault("PS.3.1", []).append(
                Evidence(
                    f"{len(stored)} files ({sum(x[1] or 0 for x in stored):,} bytes) were stored "
                    f"in the period, {total or 0} in all, each content-addressed by its sha256 and "
                    "kept only after its digest matched the upstream's or the upload's",
                    "files",
                    _refs([x[0] for x in stored], "file "),
                )
            )
            ev.setdefault("PS.2.1", []).append(
                Evidence(
                    f"every one of the {total or 0} stored files is listed with its sha256 on "
                    "the index pages clients install from (PEP 503/691 hashes)",
                    "files",
                )
            )
        if tampered or mismatch:
            ev.setdefault("PS.1.1", []).append(
                Evidence(
                    f"{len(tampered) + len(mismatch)} integrity failures were detected and not "
                    "served (changed upstream digests, content not matching its hash)",
                    "audit_events",
                    _refs([e.seq for e in tampered + mismatch], "seq "),
                    "/api/v1/audit?action=upstream.digest_changed",
                )
            )
        gaps["PS.2.1"] = (
            "index metadata is not yet signed (TUF); clients verify files by the sha256 on the "
            "pages"
        )
        identities = await s.scalar(
            select(func.count()).where(
                VersionIdentityRow.observed_at >= start, VersionIdentityRow.observed_at < end
            )
        )
        sboms = await self._events(s, start, end, AuditRow.action.like("sbom%"))
        if identities:
            ev.setdefault("PS.3.2", []).append(
                Evidence(
                    f"the publisher (PEP 740 provenance) of {identities} mirrored versions was "
                    "recorded in the period",
                    "version_identities",
                )
            )
        if sboms:
            ev.setdefault("PS.3.2", []).append(
                Evidence(
                    f"{len(sboms)} SBOMs were produced through Stockade in the period",
                    "audit_events",
                    _refs([e.seq for e in sboms], "seq "),
                )
            )
        else:
            gaps["PS.3.2"] = "no SBOM was produced through Stockade in the period"

    async def _policies(
        self, s: AsyncSession, start: datetime, end: datetime, ev: dict[str, list[Evidence]]
    ) -> None:
        rows = list(
            (
                await s.execute(
                    select(PolicyRow).where(PolicyRow.created_at < end).order_by(PolicyRow.id)
                )
            ).scalars()
        )
        in_force: dict[str, PolicyRow] = {}
        for r in rows:
            in_force[r.index_name] = r
        enforced = {k: v for k, v in in_force.items() if v.text.strip()}
        for index, r in sorted(enforced.items()):
            kinds = sorted(set(re.findall(r'kind\s*=\s*"([a-z]+)"', r.text)))
            ev.setdefault("PW.4.1", []).append(
                Evidence(
                    f"index {index!r}: policy version {r.version} (by {r.author or 'unknown'}, "
                    f"{(aware(r.created_at) or end):%Y-%m-%d}) in force at the end of the period, "
                    f"rules: {', '.join(kinds) or 'none'}",
                    "policies",
                    [f"policy {r.id}"],
                    f"/api/v1/indexes/{index}/policy/history",
                )
            )
        changed = [r for r in rows if (aware(r.created_at) or end) >= start]
        if changed:
            ev.setdefault("PW.4.1", []).append(
                Evidence(
                    f"{len(changed)} policy versions were set in the period by "
                    + ", ".join(sorted({r.author or "unknown" for r in changed})),
                    "policies",
                    _refs([r.id for r in changed], "policy "),
                )
            )
        blocked = await self._events(
            s, start, end, AuditRow.action == "download", AuditRow.outcome == "blocked"
        )
        if blocked:
            by_kind: Counter[str] = Counter()
            for e in blocked:
                rules = (e.detail or {}).get("rules") or []
                for line in rules if isinstance(rules, list) else []:
                    m = _RULE.search(str(line))
                    by_kind[m.group(1) if m else "other"] += 1
            ev.setdefault("PW.4.4", []).append(
                Evidence(
                    f"{len(blocked)} downloads were refused by policy in the period; by rule: "
                    + ", ".join(f"{k} {v}" for k, v in by_kind.most_common()),
                    "audit_events",
                    _refs([e.seq for e in blocked], "seq "),
                    "/api/v1/audit?action=download&outcome=blocked",
                )
            )

    async def _vulns(
        self,
        s: AsyncSession,
        start: datetime,
        end: datetime,
        ev: dict[str, list[Evidence]],
        gaps: dict[str, str],
    ) -> None:
        syncs = await self._events(
            s, start, end, AuditRow.action.in_(("vulndb.sync", "vulndb.import"))
        )
        count = await s.scalar(
            select(func.count()).select_from(AdvisoryRow).where(AdvisoryRow.withdrawn.is_(None))
        )
        newest = await s.scalar(select(func.max(AdvisoryRow.modified)))
        if syncs:
            last = syncs[-1]
            when = aware(last.at) or end
            fresh = aware(newest)
            ev.setdefault("RV.1.1", []).append(
                Evidence(
                    f"the vulnerability database was synced or imported {len(syncs)} times in the "
                    f"period (last {when:%Y-%m-%d %H:%M} UTC); it holds {count or 0} live "
                    "advisories" + (f", the newest modified {fresh:%Y-%m-%d}" if fresh else ""),
                    "audit_events, advisories",
                    _refs([e.seq for e in syncs], "seq "),
                    "/api/v1/vulns",
                )
            )
        elif count:
            gaps["RV.1.1"] = "the vulnerability database was not synced during the period"
            ev.setdefault("RV.1.1", []).append(
                Evidence(
                    f"{count} advisories were loaded before the period (newest modified "
                    f"{aware(newest):%Y-%m-%d})"
                    if newest
                    else f"{count} advisories",
                    "advisories",
                    link="/api/v1/vulns",
                )
            )
        curations = list(
            (
                await s.execute(
                    select(CurationRow)
                    .where(CurationRow.created_at >= start, CurationRow.created_at < end)
                    .order_by(CurationRow.id)
                )
            ).scalars()
        )
        if curations:
            statuses = Counter(c.status for c in curations)
            ev.setdefault("RV.2.1", []).append(
                Evidence(
                    f"{len(curations)} curation decisions were recorded in the period by "
                    + ", ".join(sorted({c.author or "unknown" for c in curations}))
                    + "; statuses: "
                    + ", ".join(f"{k} {v}" for k, v in statuses.most_common())
                    + f"; {sum(1 for c in curations if c.justification)} with a VEX justification",
                    "curations",
                    _refs([f"{c.id} ({c.advisory_id})" for c in curations], "curation "),
                    f"/api/v1/vulns/{curations[-1].advisory_id}",
                )
            )

    async def _threats(
        self, s: AsyncSession, start: datetime, end: datetime, ev: dict[str, list[Evidence]]
    ) -> None:
        rows = list(
            (
                await s.execute(
                    select(ScanReportRow.sha256, ScanReportRow.verdict).where(
                        ScanReportRow.scanned_at >= start, ScanReportRow.scanned_at < end
                    )
                )
            ).tuples()
        )
        if rows:
            verdicts = Counter(v for _, v in rows)
            flagged = [sha for sha, v in rows if v in ("malicious", "suspicious")]
            ev.setdefault("RV.1.2", []).append(
                Evidence(
                    f"{len(rows)} stored files were scanned for malware in the period: "
                    + ", ".join(f"{k} {v}" for k, v in verdicts.most_common()),
                    "scan_reports",
                    _refs([f"{sha[:16]}" for sha in flagged], "scan "),
                    "/api/v1/scans/<sha256>",
                )
            )
        findings = await self._events(s, start, end, AuditRow.action == "threat.finding")
        if findings:
            ev.setdefault("PW.4.4", []).append(
                Evidence(
                    f"{len(findings)} threat findings (malware, typosquats, impersonation) were "
                    "raised in the period",
                    "audit_events",
                    _refs([e.seq for e in findings], "seq "),
                    "/api/v1/audit?action=threat.finding",
                )
            )

    async def _response(
        self, s: AsyncSession, start: datetime, end: datetime, ev: dict[str, list[Evidence]]
    ) -> None:
        exceptions = list(
            (
                await s.execute(
                    select(PolicyExceptionRow).where(
                        PolicyExceptionRow.created_at >= start, PolicyExceptionRow.created_at < end
                    )
                )
            ).scalars()
        )
        if exceptions:
            ev.setdefault("RV.2.2", []).append(
                Evidence(
                    f"{len(exceptions)} policy exceptions were granted in the period, "
                    f"{sum(1 for e in exceptions if e.expires_at)} with an expiry, each with a "
                    "reason and an author",
                    "policy_exceptions",
                    _refs([e.id for e in exceptions], "exception "),
                )
            )
        alerts = await self._events(s, start, end, AuditRow.action == "alert.raised")
        if alerts:
            ev.setdefault("RV.2.2", []).append(
                Evidence(
                    f"{len(alerts)} alerts told teams that an advisory affects versions they had "
                    "downloaded",
                    "audit_events",
                    _refs([e.seq for e in alerts], "seq "),
                    "/api/v1/audit?action=alert.raised",
                )
            )


def render_html(report: dict[str, Any]) -> str:
    """A self-contained HTML page (every value escaped)."""
    e = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{e(report['report'])}</title>",
        "<style>body{font:14px/1.45 system-ui,sans-serif;max-width:60rem;margin:2rem auto;"
        "padding:0 1rem;color:#222}h1{font-size:1.5rem}h2{font-size:1.2rem;margin-top:2rem;"
        "border-bottom:1px solid #ccc}h3{font-size:1rem;margin:1rem 0 .3rem}.st{font-size:.8rem;"
        "padding:.1rem .4rem;border-radius:.3rem}.evidenced{background:#d9f2d9}"
        ".partially{background:#fff2cc}.not{background:#f8d7da}li{margin:.2rem 0}"
        ".refs{color:#666;font-size:.8rem}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:.3rem .5rem;vertical-align:top}</style>",
        "</head><body>",
        f"<h1>{e(report['report'])}</h1>",
        f"<p>Period {e(report['period']['from'])} to {e(report['period']['to'])}; generated "
        f"{e(report['generated_at'])} by Stockade {e(report['stockade_version'])}.</p>",
    ]
    for p in report["practices"]:
        parts.append(f"<h2>{e(p['id'])} {e(p['title'])}</h2>")
        for t in p["tasks"]:
            cls = t["status"].split()[0]
            parts.append(
                f"<h3>{e(t['id'])} {e(t['title'])} <span class='st {e(cls)}'>"
                f"{e(t['status'])}</span></h3><ul>"
            )
            for item in t["evidence"]:
                link = f" <a href='{e(item['link'])}'>{e(item['link'])}</a>" if item["link"] else ""
                refs = (
                    f"<div class='refs'>{e(item['source'])}: {e(', '.join(item['refs']))}</div>"
                    if item["refs"]
                    else f"<div class='refs'>{e(item['source'])}</div>"
                )
                parts.append(f"<li>{e(item['claim'])}{link}{refs}</li>")
            if t["gap"]:
                parts.append(f"<li><em>Gap: {e(t['gap'])}</em></li>")
            parts.append("</ul>")
    parts.append("<h2>CISA Secure Software Development Attestation Form, section III</h2>")
    parts.append(
        "<table><tr><th>#</th><th>statement</th><th>SSDF tasks</th><th>supported</th></tr>"
    )
    for a in report["attestation"]:
        detail = f"evidenced: {', '.join(a['evidenced']) or '-'}"
        if a["partial"]:
            detail += f"; partly: {', '.join(a['partial'])}"
        if a["not_evidenced"]:
            detail += f"; not evidenced: {', '.join(a['not_evidenced'])}"
        parts.append(
            f"<tr><td>{e(a['item'])}</td><td>{e(a['statement'])}</td><td>{e(detail)}</td>"
            f"<td>{e(a['supported'])}</td></tr>"
        )
    parts.append("</table></body></html>\n")
    return "".join(parts)
