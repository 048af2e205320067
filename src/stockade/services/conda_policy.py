"""Policies on conda channels (issue 7, phase 3): facts for conda repodata records, decided by
the same :func:`stockade.core.policy.model.evaluate` as PyPI files.

A channel's policy is the policy of its index (``stockade policy set CHANNEL --file …``). When
``CondaService`` derives a subdir's repodata it asks :meth:`CondaPolicy.keep` for a filter: the
records of the document are looked up in the vulnerability database at once (ecosystem
``conda``, which also checks the PyPI project a conda package ships, through the name mapping),
then every record is evaluated while the output is written; a blocked record is left out of
repodata.json, its ``.zst``/gzip forms and the shards, so solvers never choose it, and a download
of it is refused (403, with the rules) by the process that derived the document.

Facts: ``name`` (the conda name), ``version``, ``filename``, ``kind`` (as the policy model
decides it from the file name), ``size``, ``upload_time`` (the record's ``timestamp``),
``license`` (the record's ``license`` when it is an SPDX expression; ``license_known`` is true:
the record is all there is), ``vulns``, ``findings`` (known-malicious ``MAL-`` records),
``approved`` and exceptions (matched by name and version as for PyPI); under a ``threats`` rule
also the malware scanner's verdict on the record's sha256 and typosquat findings for its name
(against the popular conda names, ``popular_conda.txt``).

``policy explain`` and ``policy test`` decide raw records with :meth:`CondaPolicy.decider`
(the same facts; a draft policy instead of the one in force).

Not wired (yet): ``yanked`` as a fact (a yanked record is not in repodata at all; see
``CondaService.yank``), the ``blocked_files = "yanked"`` presentation (a blocked record is
always hidden: repodata has no place for a reason), and access requests for allow-list
refusals.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from stockade.core.conda.repodata import RECORD_KEYS, Keep
from stockade.core.policy.licenses import normalize_expression
from stockade.core.policy.model import (
    Decision,
    FileFacts,
    FindingFact,
    Policy,
    VulnFact,
    evaluate,
)
from stockade.core.threats.typosquat import PopularNames, check_name, conda_popular
from stockade.services.policies import MALICIOUS_PREFIX, PolicyService, _scan_findings
from stockade.services.repo import IndexInfo, utcnow
from stockade.services.threats import ThreatService
from stockade.services.vulndb import VulnDB

MAX_BLOCKED = 100_000  # decisions remembered per channel subdir (for 403 reasons)


def _time(value: object) -> datetime | None:
    if not isinstance(value, int | float) or value <= 0:
        return None
    seconds = value / 1000 if value > 1e11 else value  # conda records use ms (old ones s)
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _license(value: object) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return None
    return _spdx(value)


@lru_cache(maxsize=4096)
def _spdx(value: str) -> str | None:
    """The SPDX form of a record's licence (records repeat a few hundred licences: cached)."""
    try:
        return normalize_expression(value.strip())
    except Exception:  # not an SPDX expression: unknown to the licence rule
        return None


class CondaPolicy:
    def __init__(self, policies: PolicyService, vulns: VulnDB) -> None:
        self._policies = policies
        self._vulns = vulns
        self._blocked: dict[tuple[str, str], dict[str, Decision]] = {}
        self.threats: ThreatService | None = None  # set by the runtime: scanner verdicts
        self.popular_path: Path | None = None  # set by the runtime: an admin's conda list
        self._popular: PopularNames | None = None

    async def key(self, index: IndexInfo) -> str | None:
        """Identifies the policy state a document was filtered with (None: no policy). Time-based
        rules add the hour, so quarantines end within an hour of their time."""
        policy = await self._policies.current(index.name)
        if policy is None:
            return None
        versions = await self._policies.history(index.name)
        parts = [index.name, str(versions[-1].version if versions else 0)]
        parts += [f"e{e.id}" for e in await self._policies.exceptions(index.name, True)]
        parts += [
            f"a{a.id}" for a in await self._policies.approvals(index.name) if a.revoked_at is None
        ]
        if policy.time_based:
            parts.append(utcnow().strftime("%Y%m%d%H"))
        if policy.needs_scan and self.threats is not None:  # new verdicts filter again
            parts.append(await self.threats.flagged_marker())
        return hashlib.sha256("|".join(parts).encode()).hexdigest()

    async def current(self, index: IndexInfo) -> Policy | None:
        return await self._policies.current(index.name)

    def blocked(self, index: str, subdir: str, filename: str) -> Decision | None:
        return self._blocked.get((index, subdir), {}).get(filename)

    def blocked_in(self, index: str, subdir: str) -> dict[str, Decision]:
        """The records the last filtering of ``index``/``subdir`` left out, by file name."""
        return dict(self._blocked.get((index, subdir), {}))

    async def keep(self, index: IndexInfo, subdir: str, data: dict[str, Any]) -> Keep | None:
        """A filter for the records of ``data`` (None: no policy, keep everything)."""
        policy = await self._policies.current(index.name)
        if policy is None:
            self._blocked.pop((index.name, subdir), None)
            return None
        decide = await self.decider(index, policy, data)
        blocked: dict[str, Decision] = {}
        self._blocked[(index.name, subdir)] = blocked

        def keep(filename: str, rec: dict[str, Any]) -> bool:
            decision = decide(filename, rec)
            if decision.allowed:
                return True
            if len(blocked) < MAX_BLOCKED:
                blocked[filename] = decision
            return False

        return keep

    async def decider(
        self, index: IndexInfo, policy: Policy, data: dict[str, Any]
    ) -> Callable[[str, dict[str, Any]], Decision]:
        """Decide records of ``data`` under ``policy`` (the channel's, or a draft): the
        decision with exceptions in force applied (an excepted block is allowed, with the rule
        kept as a warning and the exception named)."""
        facts_of = await self.facts(index, data, needs_scan=policy.needs_scan)
        exceptions = await self._policies.exceptions(index.name, True)
        now = utcnow()
        memo: dict[tuple[Any, ...], str | None] = {}

        def decide(filename: str, rec: dict[str, Any]) -> Decision:
            facts = facts_of(filename, rec)
            decision = evaluate(policy, facts, now, memo)
            if decision.allowed:
                return decision
            name, version = facts.project, facts.version or ""
            exc = next((e for e in exceptions if _covers(e, name, version)), None)
            if exc is not None:
                until = exc.expires_at.isoformat()[:16] if exc.expires_at else "revoked"
                return decision.excepted(
                    f"#{exc.id} by {exc.author or 'unknown'} until {until}: {exc.reason}"
                )
            return decision

        return decide

    async def facts(
        self, index: IndexInfo, data: dict[str, Any], *, needs_scan: bool = True
    ) -> Callable[[str, dict[str, Any]], FileFacts]:
        """The policy facts of every record of ``data`` (looked up at once)."""
        pins: set[tuple[str, str]] = set()
        shas: set[str] = set()
        for key in RECORD_KEYS:
            for rec in (data.get(key) or {}).values():
                if isinstance(rec, dict):
                    pins.add((str(rec.get("name", "")), str(rec.get("version", ""))))
                    sha = rec.get("sha256")
                    if isinstance(sha, str):
                        shas.add(sha.lower())
        found = await self._vulns.query_many(("conda", n, v) for n, v in sorted(pins))
        vulns: dict[tuple[str, str], tuple[VulnFact, ...]] = {}
        malicious: dict[tuple[str, str], tuple[FindingFact, ...]] = {}
        for n, v in pins:
            hits = found.get(("conda", n.lower(), v)) or found.get(("conda", n, v)) or []
            vulns[(n, v)] = tuple(
                VulnFact(f.id, f.severity, f.score, f.status, f.fixed_versions, f.published)
                for f in hits
                if not f.id.startswith(MALICIOUS_PREFIX)
            )
            malicious[(n, v)] = tuple(
                FindingFact("known-malicious-feed", "critical", "malicious", f"{f.id}")
                for f in hits
                if f.id.startswith(MALICIOUS_PREFIX) and f.status == "affected"
            )
        scans: dict[str, tuple[FindingFact, ...]] = {}
        squats: dict[str, tuple[FindingFact, ...]] = {}
        if needs_scan:
            if self.threats is not None and shas:
                reports = await self.threats.reports_many(shas)
                scans = {sha: _scan_findings(r) for sha, r in reports.items()}
            for n in {n for n, _ in pins}:
                squats[n] = self.squats(n)
        approvals = [a for a in await self._policies.approvals(index.name) if a.revoked_at is None]

        def facts_of(filename: str, rec: dict[str, Any]) -> FileFacts:
            name, version = str(rec.get("name", "")), str(rec.get("version", ""))
            size = rec.get("size")
            sha = rec.get("sha256")
            findings = malicious.get((name, version), ())
            if needs_scan:
                findings += squats.get(name, ())
                if isinstance(sha, str):
                    findings += scans.get(sha.lower(), ())
            return FileFacts(
                project=name,
                version=version,
                filename=filename,
                upload_time=_time(rec.get("timestamp")),
                vulns=vulns.get((name, version), ()),
                size=size if isinstance(size, int) else None,
                license=_license(rec.get("license")),
                license_known=True,
                findings=findings,
                index=index.name,
                approved=any(_covers(a, name, version) for a in approvals),
                ecosystem="conda",
            )

        return facts_of

    def squats(self, name: str) -> tuple[FindingFact, ...]:
        """Typosquat findings for a conda package name (against the popular conda names:
        <STOCKADE_HOME>/popular_conda.txt when an admin put one there, else the shipped one)."""
        if self._popular is None:
            home = self.popular_path
            self._popular = conda_popular(home if home is not None and home.is_file() else None)
        return tuple(
            FindingFact(f"typosquat:{s.technique}", s.severity, s.tier, s.message)
            for s in check_name(name, self._popular)
        )


def _covers(item: Any, name: str, version: str) -> bool:
    try:
        return bool(item.covers(name, version))
    except ValueError:  # a conda version PEP 440 cannot read: match by name only
        return bool(item.covers(name, None))
