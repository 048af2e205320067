"""Audit retention on SQLite and PostgreSQL: old events move to storage as signed segments,
``audit verify`` reads them back and still finds an edited, missing or deleted segment, a
broken chain is never archived, and ``audit export --archived`` reads archived events."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from sqlalchemy import delete, func, select, update

from stockade.db.engine import upgrade
from stockade.db.models import AuditRow, AuditSegmentRow
from stockade.errors import Conflict
from stockade.services import audit_archive, repo
from stockade.services.runtime import Runtime
from stockade.settings import Settings
from tests.conftest import Server


def runtime(tmp_path: Path, db_url: str, **settings: object) -> Runtime:
    return Runtime(Settings.load(home=tmp_path / "home", database_url=db_url, **settings))


def scenario(
    tmp_path: Path, db_url: str, body: Callable[[Runtime], Awaitable[None]], **settings: object
) -> None:
    upgrade(db_url)

    async def go() -> None:
        rt = runtime(tmp_path, db_url, **settings)
        try:
            await body(rt)
        finally:
            await rt.close()

    asyncio.run(go())


async def write(rt: Runtime, n: int, project: str = "alpha", start: int = 0) -> None:
    for i in range(start, start + n):
        rt.audit.record(
            "download",
            actor=f"tok{i % 2}",
            index="main",
            project=project,
            filename=f"{project}-1.{i}-py3-none-any.whl",
            number=i,
        )
        if i % 3 == 2:
            await rt.audit.flush()
    await rt.audit.flush()


async def old_then_new(rt: Runtime, old: int = 6, new: int = 4) -> repo.datetime:
    """``old`` events, a cut-off time, then ``new`` events."""
    await write(rt, old, "old")
    await asyncio.sleep(0.01)
    cut = repo.utcnow()
    await asyncio.sleep(0.01)
    await write(rt, new, "new", start=old)
    return cut


async def db_seqs(rt: Runtime) -> list[int]:
    async with rt.sessions() as s:
        rows = (await s.execute(select(AuditRow.seq).order_by(AuditRow.seq))).scalars()
        return [r for r in rows if r is not None]


def test_archive_moves_old_events_and_verify_reads_them_back(tmp_path: Path, db_url: str) -> None:
    async def body(rt: Runtime) -> None:
        assert rt.audit.archive is not None
        cut = await old_then_new(rt)
        pending = await rt.audit.archive.pending(cut)
        assert (pending["events"], pending["first_seq"], pending["last_seq"]) == (6, 1, 6)
        made = await rt.audit.archive.archive(cut, actor="tester")
        assert [(m.first_seq, m.last_seq, m.events) for m in made] == [(1, 6, 6)]
        seg = made[0]
        # The old rows left the database; the archive event itself went on the chain.
        assert await db_seqs(rt) == [7, 8, 9, 10, 11]
        async with rt.sessions() as s:
            last = (await s.execute(select(AuditRow).where(AuditRow.seq == 11))).scalar_one()
        assert last.action == "audit.archive" and last.actor == "tester"
        assert last.detail["blob_sha256"] == seg.blob_sha256
        # The blob is self-describing: header, six events, a signed trailer.
        lines = [
            orjson.loads(x)
            for x in gzip.decompress(rt.store.read_bytes(seg.blob_sha256)).splitlines()
        ]
        assert lines[0]["format"] == audit_archive.FORMAT and lines[0]["first_seq"] == 1
        assert [x["seq"] for x in lines[1:-1]] == [1, 2, 3, 4, 5, 6]
        assert {x["project"] for x in lines[1:-1]} == {"old"}
        assert lines[-1]["end"] is True and lines[-1]["signature"] == seg.signature
        report = await rt.audit.verify()
        assert report.ok, report.breaks
        assert (report.segments, report.segments_ok, report.archived_events) == (1, 1, 6)
        assert (report.events, report.last_seq) == (5, 11)
        # The checkpoint signed with the first batch (seq 3) is checked against the archive.
        assert report.checkpoints >= 1 and report.checkpoints_ok == report.checkpoints
        # Nothing left to archive before the same cut; a later run continues the chain.
        assert await rt.audit.archive.archive(cut) == []
        more = await rt.audit.archive.archive(repo.utcnow())
        assert [(m.first_seq, m.last_seq) for m in more] == [(7, 11)]
        report = await rt.audit.verify()
        assert report.ok and report.segments_ok == 2, report.breaks
        assert report.archived_events == 11 and report.last_seq == 12
        # Exported archived events keep their fields; filters apply.
        got = [e async for e in rt.audit.archive.events(project="old", actors={"tok1"})]
        assert [e["seq"] for e in got] == [2, 4, 6]
        assert all(e["archived"] and e["action"] == "download" for e in got)
        assert got[0]["filename"] == "old-1.1-py3-none-any.whl"
        assert got[0]["detail"] == {"number": 1}
        assert [e["seq"] async for e in rt.audit.archive.events(since=cut)] == [7, 8, 9, 10, 11]

    scenario(tmp_path, db_url, body)


def test_archive_in_segments_of_a_bounded_size(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit_archive, "SEGMENT_EVENTS", 4)

    async def body(rt: Runtime) -> None:
        assert rt.audit.archive is not None
        await write(rt, 10)
        made = await rt.audit.archive.archive(repo.utcnow())
        assert [(m.first_seq, m.last_seq) for m in made] == [(1, 4), (5, 8), (9, 10)]
        report = await rt.audit.verify()
        assert report.ok and (report.segments_ok, report.archived_events) == (3, 10)

    scenario(tmp_path, db_url, body)


def test_a_broken_chain_is_never_archived(tmp_path: Path, db_url: str) -> None:
    async def body(rt: Runtime) -> None:
        assert rt.audit.archive is not None
        await write(rt, 8)
        async with rt.sessions() as s, s.begin():
            await s.execute(update(AuditRow).where(AuditRow.seq == 3).values(actor="forged"))
        with pytest.raises(Conflict, match="seq 3 was changed"):
            await rt.audit.archive.archive(repo.utcnow())
        assert await db_seqs(rt) == list(range(1, 9))
        assert await rt.audit.archive.segments() == []

    scenario(tmp_path, db_url, body)


async def _archived(rt: Runtime) -> audit_archive.Segment:
    assert rt.audit.archive is not None
    cut = await old_then_new(rt)
    (seg,) = await rt.audit.archive.archive(cut)
    assert (await rt.audit.verify()).ok
    return seg


def _blob_path(rt: Runtime, sha: str) -> Path:
    path = rt.store.local_path(sha)
    assert path is not None
    return path


def test_an_edited_archived_blob_is_found(tmp_path: Path, db_url: str) -> None:
    async def body(rt: Runtime) -> None:
        seg = await _archived(rt)
        path = _blob_path(rt, seg.blob_sha256)
        lines = gzip.decompress(path.read_bytes()).replace(b'"tok1"', b'"evil"')
        path.chmod(0o644)
        path.write_bytes(gzip.compress(lines))
        report = await rt.audit.verify()
        assert not report.ok
        assert "archived segment 1-6" in report.breaks[0].problem
        assert "changed in storage" in report.breaks[0].problem
        # --quick does not read the blob: it still checks the rows and signatures.
        assert (await rt.audit.verify(read_archives=False)).ok

    scenario(tmp_path, db_url, body)


def test_a_rewritten_segment_fails_its_signature(tmp_path: Path, db_url: str) -> None:
    """Edit an archived event, recompute every hash in the blob and point the row at it: the
    signature over the segment's end, made with the audit key, gives it away."""

    async def body(rt: Runtime) -> None:
        seg = await _archived(rt)
        lines = [
            orjson.loads(x)
            for x in gzip.decompress(rt.store.read_bytes(seg.blob_sha256)).splitlines()
        ]
        prev = lines[0]["prev_hash"]
        for line in lines[1:-1]:
            if line["seq"] == 2:
                line["actor"] = "forged"
            line["prev_hash"] = prev
            line["hash"] = prev = repo_hash(prev, line)
        lines[-1]["last_hash"] = prev
        blob = gzip.compress(b"".join(orjson.dumps(x) + b"\n" for x in lines))
        sha = rt.store.put_bytes(blob)
        async with rt.sessions() as s, s.begin():
            await s.execute(
                update(AuditSegmentRow).values(blob_sha256=sha, last_hash=prev, size=len(blob))
            )
        report = await rt.audit.verify()
        problems = " | ".join(b.problem for b in report.breaks)
        assert "checkpoint signature does not verify" in problems
        assert "does not follow" in problems  # the database's seq 7 follows the real hash

    scenario(tmp_path, db_url, body)


def repo_hash(prev: str, line: dict[str, object]) -> str:
    from stockade.core.auditchain import event_hash

    return event_hash(prev, int(line["seq"]), line)  # type: ignore[call-overload]


@pytest.mark.parametrize("how", ["row deleted", "blob deleted"])
def test_a_deleted_segment_is_found(tmp_path: Path, db_url: str, how: str) -> None:
    async def body(rt: Runtime) -> None:
        seg = await _archived(rt)
        if how == "row deleted":
            async with rt.sessions() as s, s.begin():
                await s.execute(delete(AuditSegmentRow))
        else:
            _blob_path(rt, seg.blob_sha256).unlink()
        report = await rt.audit.verify()
        assert not report.ok
        problems = [b.problem for b in report.breaks]
        if how == "row deleted":
            assert any("event(s) 1-6 missing before seq 7" in p for p in problems), problems
            assert any("signed by checkpoint #1, is missing" in p for p in problems), problems
        else:
            assert "missing from storage" in problems[0]

    scenario(tmp_path, db_url, body)


def test_retention_setting_archives_old_events(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``audit_retention_days``: the daily job archives what is older, nothing else."""

    async def body(rt: Runtime) -> None:
        real = repo.utcnow
        monkeypatch.setattr(repo, "utcnow", lambda: real() - timedelta(days=40))
        await write(rt, 5, "ancient")
        monkeypatch.setattr(repo, "utcnow", real)
        await write(rt, 3, "recent", start=5)
        await rt.archive_audit()
        assert rt.audit.archive is not None
        segs = await rt.audit.archive.segments()
        assert [(x.first_seq, x.last_seq) for x in segs] == [(1, 5)]
        async with rt.sessions() as s:
            left = await s.scalar(select(func.count()).select_from(AuditRow))
        assert left == 4  # three recent events and the archive's own event
        assert (await rt.audit.verify()).ok

    scenario(tmp_path, db_url, body, audit_retention_days=30)


def test_audit_archive_cli(server: Server) -> None:
    srv = server
    srv.cli("index", "create", "internal", "--private")
    srv.token("internal", "write")
    none = srv.cli("audit", "archive", check=False)
    assert none.returncode != 0 and "audit_retention_days" in none.stderr
    dry = json.loads(
        srv.cli("audit", "archive", "--older-than", "0d", "--dry-run", "--json").stdout
    )
    assert dry["dry_run"] is True and dry["events"] >= 2 and dry["first_seq"] == 1
    assert "no archived segments" in srv.cli("audit", "segments").stdout
    out = srv.cli("audit", "archive", "--older-than", "0d").stdout
    assert out.startswith("archived seq 1-")
    segs = json.loads(srv.cli("audit", "segments", "--json").stdout)
    assert len(segs) == 1 and segs[0]["first_seq"] == 1 and len(segs[0]["blob_sha256"]) == 64
    verify = srv.cli("audit", "verify").stdout
    assert "audit chain intact" in verify and "archived in 1 segment" in verify
    exported = srv.cli("audit", "export", "--archived", "--action", "token.create").stdout
    events = [json.loads(x) for x in exported.splitlines()]
    assert events and all(e["archived"] and e["action"] == "token.create" for e in events)
    assert srv.cli("audit", "export", "--action", "token.create").stdout == ""
    with srv.http(srv.admin_token) as http:
        api = http.get("/api/v1/audit/segments")
    assert api.status_code == 200 and api.json()[0]["blob_sha256"] == segs[0]["blob_sha256"]
