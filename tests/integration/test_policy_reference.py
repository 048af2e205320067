"""PolicyService.decide() (memoized: verdicts shared per version and per distinct facts, one
exceptions-and-approvals query, vulnerabilities matched for the whole page) against a
straightforward per-file evaluation, on a generated page that every rule kind reads: an
optimisation must never change a verdict. Both databases."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from packaging.utils import NormalizedName

from stockade.core.policy import FileFacts, Policy, VulnFact, evaluate
from stockade.core.policy.model import Decision, FindingFact, member_block
from stockade.core.simple import FileEntry, ProjectPage
from stockade.db.engine import upgrade
from stockade.services.metadata import MetaFacts
from stockade.services.policies import MALICIOUS_PREFIX, parse_time
from stockade.services.runtime import Runtime
from stockade.settings import Settings

PROJECT = "refproj"
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
CRITICAL = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"
HIGH = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H"
MEDIUM = "CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:U/C:L/I:L/A:N"

EVERY_RULE = """
blocked_files = "yanked"

[[rules]]
kind = "vulnerabilities"
severity = "high"
only_fixed = true

[[rules]]
kind = "vulnerabilities"
mode = "warn"
severity = "any"
unknown_severity = "block"

[[rules]]
kind = "names"
deny = ["refproj<0.3", "other-*", "*-typosquat"]

[[rules]]
kind = "age"
min_days = 3

[[rules]]
kind = "yanked"
action = "hide"

[[rules]]
kind = "license"
deny = ["GPL-*", "AGPL-*"]
unknown = "block"

[[rules]]
kind = "threats"
block = ["malicious"]

[[rules]]
kind = "require_provenance"
mode = "warn"
projects = ["refproj>=3.5"]

[[rules]]
kind = "custom"
name = "big-sdists"
block_if = 'kind == "sdist" && size > 50000000'

[[rules]]
kind = "custom"
name = "old-and-vulnerable"
mode = "warn"
block_if = 'age_days > 300.0 && size(vulns) > 0 && license != "MIT"'
message = "old and vulnerable"
"""

ALLOW_ONLY = """
[[rules]]
kind = "names"
allow_only = true
allow = ["refproj>=3"]

[[rules]]
kind = "vulnerabilities"
severity = "medium"

[[rules]]
kind = "license"
allow = ["MIT", "BSD-*"]
unknown = "allow"

[[rules]]
kind = "custom"
name = "wheels-only-late"
block_if = 'kind == "sdist" && version.startsWith("3.")'
"""

NO_ADVISORIES = """
[[rules]]
kind = "names"
deny = ["refproj>=3.6"]

[[rules]]
kind = "age"
min_days = 3

[[rules]]
kind = "custom"
name = "big-or-yanked"
block_if = 'size > 50000000 || yanked || version == "0.4"'
"""


def _record(ident: str, events: list[dict[str, str]], **extra: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "id": ident,
        "modified": "2025-01-01T00:00:00Z",
        "published": "2025-01-01T00:00:00Z",
        "summary": f"{ident} summary",
        "affected": [
            {
                "package": {"ecosystem": "PyPI", "name": PROJECT},
                "ranges": [{"type": "ECOSYSTEM", "events": events}],
                **extra.pop("affected_extra", {}),
            }
        ],
    }
    rec.update(extra)
    return rec


FEED = [
    _record(
        "REF-1",
        [{"introduced": "0"}, {"fixed": "0.6"}],
        severity=[{"type": "CVSS_V3", "score": CRITICAL}],
    ),
    _record(  # no fix: only_fixed lets it through, the warn rule reports it
        "REF-2",
        [{"introduced": "1.0"}, {"last_affected": "1.3"}],
        severity=[{"type": "CVSS_V3", "score": HIGH}],
    ),
    _record(
        "REF-3",
        [{"introduced": "2.0"}, {"fixed": "2.2"}],
        severity=[{"type": "CVSS_V3", "score": MEDIUM}],
        affected_extra={"versions": ["2.0", "2.1", "2.1.post1"]},
    ),
    _record(  # curated not_affected for part of its range
        "REF-4",
        [{"introduced": "1.5"}, {"fixed": "1.8"}],
        severity=[{"type": "CVSS_V3", "score": HIGH}],
    ),
    _record("REF-5", [{"introduced": "3.0"}, {"fixed": "3.1"}]),  # severity unknown
    _record(
        "MAL-2025-1",
        [{"introduced": "2.5"}, {"fixed": "2.6"}],
        affected_extra={"versions": ["2.5"]},
    ),
]

VERSIONS = [
    "0.1", "0.2", "0.2.1", "0.4", "0.5", "0.6", "1.0", "1.1", "1.2", "1.3", "1.4", "1.5",
    "1.6", "1.6.1", "1.7", "1.8", "2.0", "2.0rc1", "2.1", "2.1.post1", "2.2", "2.5", "2.5.1",
    "3.0", "3.0.1", "3.1", "3.5", "3.6a1", "3.6", "3.7",
]  # fmt: skip


def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def make_page() -> tuple[ProjectPage, list[MetaFacts]]:
    """Every version as an sdist and two wheels: yanked versions, the newest inside the
    quarantine, big sdists, licences varying per version (GPL, MIT, BSD, none), files without
    facts of their own (they borrow their version's), a file without an upload time, one a
    member index blocked and one legacy file whose version PEP 440 cannot read."""
    files: list[FileEntry] = []
    facts: list[MetaFacts] = []
    start = NOW - timedelta(days=2000)
    for i, v in enumerate(VERSIONS):
        when = NOW - timedelta(days=1) if i >= len(VERSIONS) - 2 else start + timedelta(days=60 * i)
        names = [
            f"{PROJECT}-{v}.tar.gz",
            f"{PROJECT}-{v}-py3-none-any.whl",
            f"{PROJECT}-{v}-cp312-cp312-win_amd64.whl",
        ]
        licence = (
            "GPL-3.0-only" if i % 7 == 3 else "MIT" if i % 3 == 0 else None if i % 11 == 5 else
            "BSD-3-Clause"
        )  # fmt: skip
        for j, fn in enumerate(names):
            sha = hashlib.sha256(fn.encode()).hexdigest()
            sdist = fn.endswith(".tar.gz")
            files.append(
                FileEntry(
                    filename=fn,
                    sha256=sha,
                    yanked=i % 9 == 4,
                    size=(60_000_000 if i % 5 == 2 else 1_000_000) if sdist else 500_000 + j,
                    upload_time=None if (i, j) == (6, 2) else _iso(when + timedelta(minutes=j)),
                    blocked="denied upstream" if (i, j) == (8, 1) else None,
                    origin="member" if (i, j) == (8, 1) else None,
                )
            )
            if j != 2 or i % 4 == 0:  # some second wheels borrow their version's facts
                facts.append(
                    MetaFacts(sha, PROJECT, v, licence, licence, "License-Expression", None, "x")
                )
    legacy = f"{PROJECT}-weird_build.zip"
    files.append(FileEntry(filename=legacy, sha256=hashlib.sha256(b"legacy").hexdigest(), size=10))
    return ProjectPage(name=NormalizedName(PROJECT), files=tuple(files)), facts


async def reference(rt: Runtime, policy: Policy, page: ProjectPage, index: str) -> dict[str, Any]:
    """Per file, with nothing shared: its version's advisories looked up on their own, its
    licence facts (or its version's), every rule through ``evaluate()`` without a memo, then
    the first active exception that covers it."""
    known = await rt.metadata.get_many([f.sha256 for f in page.files if f.sha256])
    active = await rt.policies.exceptions(index, active_only=True)
    approved = [a for a in await rt.policies.approvals(index) if a.revoked_at is None]
    squats = rt.policies._squats(page.name) if policy.needs_scan else ()
    out: dict[str, Decision] = {}
    for f in page.files:
        if f.blocked is not None:
            out[f.filename] = member_block(f.origin, f.blocked)
            continue
        v = f.version
        findings = (
            (await rt.vulns.query_many([("PyPI", page.name, v)]))[("PyPI", page.name, v)]
            if v
            else []
        )
        vulns = tuple(
            VulnFact(x.id, x.severity, x.score, x.status, x.fixed_versions, x.published)
            for x in findings
            if not x.id.startswith(MALICIOUS_PREFIX)
        )
        malicious = tuple(
            FindingFact(
                "known-malicious-feed", "critical", "malicious", f"{x.id}: {x.summary or ''}"
            )
            for x in findings
            if x.id.startswith(MALICIOUS_PREFIX) and x.status == "affected"
        )
        meta = known.get(f.sha256 or "")
        if meta is None:  # borrowed: the first wheel of the version with facts, else any file
            siblings = sorted(
                (g for g in page.files if g.version == v and g.sha256 in known),
                key=lambda g: not g.filename.endswith(".whl"),
            )
            meta = known[siblings[0].sha256 or ""] if siblings and v else None
        facts = FileFacts(
            project=page.name,
            version=v,
            filename=f.filename,
            yanked=f.yanked,
            upload_time=parse_time(f.upload_time),
            vulns=vulns,
            size=f.size,
            license=meta.license if meta else None,
            license_known=meta is not None,
            findings=malicious + squats,
            provenance=None if f.provenance is not None else False,  # none offered here
            index=index,
            approved=any(a.covers(page.name, v) for a in approved),
        )
        decision = evaluate(policy, facts, NOW)
        exc = next((e for e in active if e.covers(page.name, v)), None)
        if exc is not None and not decision.allowed:
            until = exc.expires_at.isoformat()[:16] if exc.expires_at else "revoked"
            decision = decision.excepted(
                f"#{exc.id} by {exc.author or 'unknown'} until {until}: {exc.reason}"
            )
        out[f.filename] = decision
    return out


@pytest.mark.parametrize(
    "policy_text",
    [EVERY_RULE, ALLOW_ONLY, NO_ADVISORIES],
    ids=["every-rule", "allow-only", "no-advisories"],
)
def test_decide_agrees_with_a_per_file_reference(
    tmp_path: Path, db_url: str, policy_text: str
) -> None:
    import asyncio

    feed = tmp_path / "feed"
    feed.mkdir()
    for rec in FEED:
        (feed / f"{rec['id']}.json").write_text(json.dumps(rec))

    async def go() -> None:
        upgrade(db_url)
        rt = Runtime(Settings.load(home=tmp_path / "home", database_url=db_url))
        try:
            await rt.vulns.import_path(feed)
            await rt.vulns.curate(
                "REF-4", package=PROJECT, versions=">=1.6,<1.7", status="not_affected",
                justification="vulnerable_code_not_present", reason="t", author="t",
            )  # fmt: skip
            await rt.vulns.curate(
                "REF-5", package=PROJECT, severity="critical", reason="t", author="t"
            )
            page, facts = make_page()
            for m in facts:
                await rt.metadata.save(m, announce=False)
            await rt.policies.set("ref", policy_text, "t")
            await rt.policies.allow(
                "ref", f"{PROJECT}==0.4", reason="ok", expires="30d", author="t"
            )
            await rt.policies.allow(
                "ref", f"{PROJECT}>=2.5,<2.6", reason="ok", expires=None, author="t"
            )
            revoked = await rt.policies.allow(
                "ref", f"{PROJECT}==1.7", reason="no", expires=None, author="t"
            )
            await rt.policies.revoke_exception(revoked.id)
            await rt.policies.approve("ref", f"{PROJECT}>=2.0,<2.2", reason="ok", author="t")
            policy = await rt.policies.current("ref")
            assert policy is not None
            rt.policies.clear()
            want = await reference(rt, policy, page, "ref")
            for complete in (True, False):  # both from scratch: nothing memoized across them
                rt.policies.clear()
                rt.vulns._snap.matches.clear()
                got = await rt.policies.decide(policy, page, NOW, "ref", complete=complete)
                assert list(got) == [f.filename for f in page.files]
                for filename, expected in want.items():
                    decision = got[filename]
                    if complete:
                        assert decision == expected, filename
                    else:  # serving may skip custom rules of files blocked anyway
                        assert decision.allowed == expected.allowed, filename
                        assert decision.exception == expected.exception, filename
                        assert set(decision.blocks) <= set(expected.blocks), filename
                        assert set(decision.warnings) <= set(expected.warnings), filename
            outcomes = {(d.allowed, d.exception is not None) for d in want.values()}
            assert {(True, False), (False, False), (True, True)} <= outcomes
            if policy_text is EVERY_RULE:
                kinds = {r.kind for d in want.values() for r in d.blocks + d.warnings}
                assert kinds >= {
                    "vulnerabilities", "names", "age", "yanked", "license", "threats",
                    "require_provenance", "custom", "member",
                }  # fmt: skip
        finally:
            await rt.close()

    asyncio.run(go())
