"""The tamper-evident audit log on SQLite and PostgreSQL: rows edited, deleted, moved or forged
directly in the database are found by ``audit verify``, which names the first broken event;
signed checkpoints catch a rewritten chain and a cut tail."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select, text, update

from stockade.core.auditchain import GENESIS, event_hash
from stockade.db.engine import upgrade
from stockade.db.models import AuditCheckpointRow, AuditRow
from stockade.services.runtime import Runtime
from stockade.settings import Settings
from tests.conftest import Server, UpstreamSet
from tests.webhook import webhook_receiver


def runtime(tmp_path: Path, db_url: str) -> Runtime:
    return Runtime(Settings.load(home=tmp_path / "home", database_url=db_url))


def scenario(tmp_path: Path, db_url: str, body: Callable[[Runtime], Awaitable[None]]) -> None:
    upgrade(db_url)

    async def go() -> None:
        rt = runtime(tmp_path, db_url)
        try:
            await body(rt)
        finally:
            await rt.close()

    asyncio.run(go())


async def write_events(rt: Runtime, n: int) -> None:
    for i in range(n):
        rt.audit.record(
            "download",
            actor=f"tok{i % 3}",
            index="main",
            project="alpha",
            filename=f"alpha-1.{i}-py3-none-any.whl",
            detail_number=i,
            nested={"k": [1, 2.5, "x"], "t": (1, 2)},
        )
        if i % 4 == 3:
            await rt.audit.flush()  # several batches
    await rt.audit.flush()


async def seqs(rt: Runtime) -> list[int]:
    async with rt.sessions() as s:
        rows = (await s.execute(select(AuditRow.seq).order_by(AuditRow.seq))).scalars()
        return [r for r in rows if r is not None]


def test_chain_is_linear_and_verifies(tmp_path: Path, db_url: str) -> None:
    async def body(rt: Runtime) -> None:
        await write_events(rt, 10)
        assert await seqs(rt) == list(range(1, 11))
        report = await rt.audit.verify()
        assert report.ok, report.breaks
        assert (report.events, report.last_seq) == (10, 10)
        assert report.checkpoints == 1  # the first batch signs a checkpoint at once
        assert report.checkpoints_ok == 1
        cp = await rt.audit.checkpoint()
        assert cp is not None and cp.seq == 10
        assert await rt.audit.checkpoint() is None  # already signed at the head
        assert (await rt.audit.verify()).checkpoints_ok == 2

    scenario(tmp_path, db_url, body)


def test_concurrent_writers_keep_one_chain(tmp_path: Path, db_url: str) -> None:
    """Two runtimes (as two server processes) flushing at once append to one linear chain."""

    async def body(rt: Runtime) -> None:
        other = runtime(tmp_path, db_url)
        try:

            async def burst(r: Runtime, tag: str) -> None:
                for i in range(30):
                    r.audit.record("upload", actor=tag, project=f"p{i}")
                    if i % 5 == 4:
                        for _ in range(20):  # SQLite: a writer that lost the race retries
                            try:
                                await r.audit.flush()
                                break
                            except Exception:
                                await asyncio.sleep(0.05)
                await r.audit.flush()

            await asyncio.gather(burst(rt, "a"), burst(other, "b"))
        finally:
            await other.close()
        assert await seqs(rt) == list(range(1, 61))
        assert (await rt.audit.verify()).ok

    scenario(tmp_path, db_url, body)


TAMPERS: dict[str, Callable[[Any], Any]] = {
    "edited": lambda s: s.execute(
        update(AuditRow).where(AuditRow.seq == 5).values(actor="someone-else")
    ),
    "detail edited": lambda s: s.execute(
        update(AuditRow).where(AuditRow.seq == 5).values(detail={"detail_number": 99})
    ),
    "deleted": lambda s: s.execute(delete(AuditRow).where(AuditRow.seq == 5)),
    "moved": lambda s: s.execute(update(AuditRow).where(AuditRow.seq == 5).values(seq=1000)),
}


@pytest.mark.parametrize("how", sorted(TAMPERS))
def test_verify_names_the_first_broken_event(tmp_path: Path, db_url: str, how: str) -> None:
    async def body(rt: Runtime) -> None:
        await write_events(rt, 9)
        async with rt.sessions() as s, s.begin():
            await TAMPERS[how](s)
        report = await rt.audit.verify()
        assert not report.ok
        first = report.breaks[0]
        expected = {"edited": 5, "detail edited": 5, "deleted": 6, "moved": 6}[how]
        assert first.seq == expected, report.breaks
        words = {
            "edited": "changed",
            "detail edited": "changed",
            "deleted": "missing",
            "moved": "missing",
        }
        assert words[how] in first.problem

    scenario(tmp_path, db_url, body)


def test_reordered_events_are_found(tmp_path: Path, db_url: str) -> None:
    """Swapping the contents of two events (their seq kept) breaks both."""

    async def body(rt: Runtime) -> None:
        await write_events(rt, 6)
        async with rt.sessions() as s, s.begin():
            a = (await s.execute(select(AuditRow).where(AuditRow.seq == 2))).scalar_one()
            b = (await s.execute(select(AuditRow).where(AuditRow.seq == 4))).scalar_one()
            a.filename, b.filename = b.filename, a.filename
        report = await rt.audit.verify()
        assert [x.seq for x in report.breaks if "changed" in x.problem] == [2, 4]

    scenario(tmp_path, db_url, body)


def test_a_rewritten_chain_fails_its_signed_checkpoint(tmp_path: Path, db_url: str) -> None:
    """An attacker who recomputes every hash after editing cannot re-sign the checkpoint."""

    async def body(rt: Runtime) -> None:
        await write_events(rt, 5)
        await rt.audit.checkpoint()
        async with rt.sessions() as s, s.begin():
            rows = list((await s.execute(select(AuditRow).order_by(AuditRow.seq))).scalars())
            prev = GENESIS
            for r in rows:
                if r.seq == 3:
                    r.actor = "forged"
                fields = {
                    n: getattr(r, n)
                    for n in (
                        "at",
                        "actor",
                        "action",
                        "index_name",
                        "project",
                        "filename",
                        "outcome",
                        "client",
                    )
                }
                fields["detail"] = r.detail
                r.prev_hash = prev
                r.hash = prev = event_hash(prev, r.seq or 0, fields)
            await s.execute(text("UPDATE audit_chain SET last_hash = :h"), {"h": prev})
        report = await rt.audit.verify()
        assert not report.ok
        assert any("chain rewritten" in b.problem for b in report.breaks)

    scenario(tmp_path, db_url, body)


def test_a_cut_tail_and_a_forged_checkpoint_are_found(tmp_path: Path, db_url: str) -> None:
    async def body(rt: Runtime) -> None:
        await write_events(rt, 6)
        await rt.audit.checkpoint()  # at seq 6
        async with rt.sessions() as s, s.begin():
            await s.execute(delete(AuditRow).where(AuditRow.seq >= 5))
        report = await rt.audit.verify()
        assert any("cut from the end" in b.problem for b in report.breaks)
        async with rt.sessions() as s, s.begin():
            await s.execute(update(AuditCheckpointRow).values(signature="00" * 64))
        report = await rt.audit.verify()
        assert any("invalid signature" in b.problem for b in report.breaks)

    scenario(tmp_path, db_url, body)


def test_audit_cli_verify_export_and_affected(server: Server, tmp_path: Path) -> None:
    srv = server
    srv.cli("index", "create", "internal", "--private")
    tok = srv.token("internal", "write")
    srv.cli("token", "revoke", json.loads(srv.cli("token", "list", "--json").stdout)[0]["id"])
    out = srv.cli("audit", "verify")
    assert "audit chain intact" in out.stdout
    verified = json.loads(srv.cli("audit", "verify", "--json").stdout)
    assert verified["ok"] is True and verified["events"] >= 2
    lines = srv.cli("audit", "export", "--format", "jsonl", "--action", "token.create").stdout
    events = [json.loads(x) for x in lines.splitlines()]
    assert events and all(e["action"] == "token.create" for e in events)
    assert all(len(e["hash"]) == 64 for e in events)
    csv_out = srv.cli("audit", "export", "--format", "csv", "--since", "1d").stdout
    assert csv_out.splitlines()[0].startswith("seq,at,actor,action")
    bad = srv.cli("audit", "list", "--since", "yesterday", check=False)
    assert bad.returncode != 0 and "neither a duration nor a date" in bad.stderr
    assert tok


def test_audit_affected_answers_who_downloaded_the_vulnerable_version(
    server: Server, upstream: UpstreamSet, tmp_path: Path
) -> None:
    srv = server
    srv.cli("index", "create", "up", "--mirror", upstream.upstream.simple_url)
    srv.cli("team", "create", "ci")
    srv.cli("team", "grant", "ci", "up", "--scope", "read")
    ci = srv.token("up", "read", "--team", "ci")
    dev = srv.token("up")
    with srv.http(ci) as c:
        for _ in range(2):
            assert c.get("/pypi/up/files/alpha/alpha-1.1-py3-none-any.whl").status_code == 200
        assert c.get("/pypi/up/files/alpha/alpha-1.0-py3-none-any.whl").status_code == 200
    with srv.http(dev) as c:
        assert c.get("/pypi/up/files/alpha/alpha-1.0-py3-none-any.whl").status_code == 200
    feed = tmp_path / "feed"
    feed.mkdir()
    (feed / "TEST-B.json").write_text(
        json.dumps(
            {
                "id": "TEST-B",
                "modified": "2024-01-01T00:00:00Z",
                "aliases": ["CVE-2024-8888"],
                "affected": [
                    {
                        "package": {"ecosystem": "PyPI", "name": "alpha"},
                        "ranges": [
                            {
                                "type": "ECOSYSTEM",
                                "events": [{"introduced": "1.1"}, {"fixed": "1.2"}],
                            }
                        ],
                    }
                ],
            }
        )
    )
    with webhook_receiver() as (url, received):
        with (srv.home / "stockade.toml").open("a") as f:
            f.write(f'\n[alert_team_webhooks]\nci = "{url}"\n')
        imported = json.loads(srv.cli("vulndb", "import", str(feed), "--json").stdout)
    # the new advisory affects a version team ci downloaded: one alert, to ci's webhook
    assert [(a["advisory"], a["team"], a["outcome"]) for a in imported["alerts"]] == [
        ("TEST-B", "ci", "ok")
    ]
    assert [(r["advisory"], r["team"]) for r in received] == [("TEST-B", "ci")]
    assert received[0]["downloads"][0]["version"] == "1.1"
    again = json.loads(srv.cli("vulndb", "import", str(feed), "--json").stdout)
    assert again["alerts"] == []  # unchanged advisory, nothing new to say
    raised = json.loads(srv.cli("audit", "list", "--action", "alert.raised", "--json").stdout)
    assert [e["detail"]["team"] for e in raised] == ["ci"]
    found = json.loads(srv.cli("audit", "affected", "CVE-2024-8888", "--json").stdout)
    assert found["advisory"] == "TEST-B"
    rows = found["downloads"]
    assert [(r["team"], r["version"], r["downloads"], r["fixed_in"]) for r in rows] == [
        ("ci", "1.1", 2, ["1.2"])
    ]  # 1.0 is not affected; the dev token never fetched 1.1
    assert found["teams"] == ["ci"]
    shown = srv.cli("audit", "affected", "TEST-B").stdout
    assert "alpha 1.1" in shown and "1.2" in shown
    # a curation that rules the version out removes it from the answer
    srv.cli(
        "vuln", "curate", "TEST-B", "--package", "alpha", "--status", "not_affected",
        "--justification", "vulnerable_code_not_present", "--reason", "not used",
    )  # fmt: skip
    assert json.loads(srv.cli("audit", "affected", "TEST-B", "--json").stdout)["downloads"] == []
    missing = srv.cli("audit", "affected", "NOPE-1", check=False)
    assert missing.returncode != 0 and "NOPE-1" in missing.stderr
