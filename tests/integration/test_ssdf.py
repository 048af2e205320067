"""The NIST SSDF report on a seeded history: every evidence item traces to rows in the data,
tasks without data are listed as gaps, and the HTML/PDF renderings are safe and real."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from stockade.services.ssdf import render_html
from tests.conftest import Server, UpstreamSet

FEED = {
    "id": "TEST-S",
    "modified": "2024-01-01T00:00:00Z",
    "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}],
    "affected": [
        {
            "package": {"ecosystem": "PyPI", "name": "alpha"},
            "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "1.1"}, {"fixed": "1.2"}]}],
        }
    ],
}


def tasks(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["id"]: t for p in report["practices"] for t in p["tasks"]}


def sync_url(db_url: str) -> str:
    return db_url.replace("+aiosqlite", "")


def test_ssdf_report_traces_every_claim_to_data(
    server: Server, upstream: UpstreamSet, tmp_path: Path
) -> None:
    srv = server
    srv.cli("index", "create", "up", "--mirror", upstream.upstream.simple_url)
    feed = tmp_path / "feed"
    feed.mkdir()
    (feed / "TEST-S.json").write_text(json.dumps(FEED))
    srv.cli("vulndb", "import", str(feed))
    policy = tmp_path / "p.toml"
    policy.write_text('[[rules]]\nkind = "vulnerabilities"\nseverity = "high"\n')
    srv.cli("policy", "set", "up", "--file", str(policy))
    token = srv.token("up")
    with srv.http(token) as c:
        assert c.get("/pypi/up/files/alpha/alpha-1.1-py3-none-any.whl").status_code == 403
        assert c.get("/pypi/up/files/alpha/alpha-1.0-py3-none-any.whl").status_code == 200
    with srv.http("wrong-token") as c:
        assert c.get("/pypi/up/simple/alpha/").status_code == 401
    srv.cli(
        "vuln", "curate", "TEST-S", "--package", "alpha", "--severity", "critical",
        "--reason", "triaged <script>alert(1)</script>",
    )  # fmt: skip
    srv.cli("policy", "allow", "up", "alpha==1.1", "--reason", "vendor fix", "--expires", "7d")
    srv.cli("audit", "checkpoint")

    report = json.loads(srv.cli("report", "ssdf", "--from", "1d", "--format", "json").stdout)
    t = tasks(report)
    assert set(t) >= {"PO.3.3", "PO.5.1", "PS.1.1", "PS.2.1", "PS.3.2", "PW.4.1", "PW.4.4"}
    assert t["PO.3.3"]["status"] == "evidenced"
    assert "intact" in t["PO.3.3"]["evidence"][0]["claim"]
    assert t["RV.3.3"]["status"] == "not evidenced" and t["RV.3.3"]["gap"]
    assert t["PS.3.2"]["gap"] == "no SBOM was produced through Stockade in the period"
    assert t["PS.2.1"]["status"] == "partially evidenced"  # TUF not yet
    for tid in ("PW.4.1", "PW.4.4", "RV.1.1", "RV.2.1", "RV.2.2", "PO.5.1", "PS.1.1"):
        assert t[tid]["status"] == "evidenced", (tid, t[tid])

    # every reference names rows that exist and say what the claim says
    engine = create_engine(sync_url(srv.db_url))
    with engine.connect() as db:
        for task in t.values():
            for item in task["evidence"]:
                for ref in item["refs"]:
                    if ref.startswith("seq "):
                        row = db.execute(
                            text("SELECT action, outcome FROM audit_events WHERE seq = :s"),
                            {"s": int(ref[4:])},
                        ).one()
                        if "refused by policy" in item["claim"]:
                            assert tuple(row) == ("download", "blocked")
                        if "refused for lack of authorization" in item["claim"]:
                            assert row[1] == "refused"
                    elif ref.startswith("policy "):
                        row = db.execute(
                            text("SELECT index_name FROM policies WHERE id = :i"),
                            {"i": int(ref.split()[1])},
                        ).one()
                        assert row[0] == "up"
                    elif ref.startswith("curation "):
                        cid = int(ref.split()[1])
                        row = db.execute(
                            text("SELECT advisory_id FROM curations WHERE id = :i"), {"i": cid}
                        ).one()
                        assert row[0] == "TEST-S"
                    elif ref.startswith("exception "):
                        row = db.execute(
                            text("SELECT reason FROM policy_exceptions WHERE id = :i"),
                            {"i": int(ref.split()[1])},
                        ).one()
                        assert row[0] == "vendor fix"
        blocked = db.execute(
            text(
                "SELECT count(*) FROM audit_events"
                " WHERE action = 'download' AND outcome = 'blocked'"
            )
        ).scalar_one()
    engine.dispose()
    pw44 = next(e for e in t["PW.4.4"]["evidence"] if "refused by policy" in e["claim"])
    assert pw44["claim"].startswith(f"{blocked} downloads")
    assert "vulnerabilities" in pw44["claim"]
    attestation = {a["item"]: a for a in report["attestation"]}
    assert set(attestation) == {"1", "2", "3", "4"}
    assert attestation["2"]["supported"] == "yes"
    assert attestation["3"]["supported"] in ("partly", "no")  # no SBOM, no signed index yet

    out = tmp_path / "ssdf.html"
    srv.cli("report", "ssdf", "--from", "1d", "--output", str(out))
    page = out.read_text()
    assert "<script>alert" not in page
    assert "PW.4.4" in page and "Gap:" in page
    pdf = tmp_path / "ssdf.pdf"
    srv.cli("report", "ssdf", "--from", "1d", "--format", "pdf", "--output", str(pdf))
    assert pdf.read_bytes()[:5] == b"%PDF-"
    with srv.http(srv.admin_token) as c:
        r = c.get("/api/v1/reports/ssdf", params={"from": "1d"})
        assert r.status_code == 200 and r.json()["practices"]
    bad = srv.cli("report", "ssdf", "--from", "tomorrowish", check=False)
    assert bad.returncode != 0 and "neither a duration nor a date" in bad.stderr


def test_html_rendering_escapes_everything() -> None:
    hostile = "<img src=x onerror=alert(1)>"
    report = {
        "report": hostile,
        "period": {"from": hostile, "to": "t"},
        "generated_at": "g",
        "stockade_version": "v",
        "practices": [
            {
                "id": "PO.3",
                "title": hostile,
                "tasks": [
                    {
                        "id": "PO.3.3",
                        "title": "t",
                        "status": "evidenced",
                        "evidence": [
                            {"claim": hostile, "source": "s", "refs": [hostile], "link": hostile}
                        ],
                        "gap": hostile,
                    }
                ],
            }
        ],
        "attestation": [
            {
                "item": "1",
                "statement": hostile,
                "evidenced": [],
                "partial": [],
                "not_evidenced": [hostile],
                "supported": "no",
            }
        ],
    }
    page = render_html(report)
    assert "<img" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
