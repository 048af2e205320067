"""Services and repositories on SQLite and PostgreSQL (schema built by the Alembic migration)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from stockade.core.archives import ArchiveLimits
from stockade.core.auth import Grant
from stockade.db.engine import upgrade
from stockade.errors import Conflict, InvalidRequest, NotFound
from stockade.services import repo
from stockade.services.runtime import Runtime
from stockade.services.uploads import UploadForm
from stockade.settings import Settings
from stockade.types import IndexKind, Scope, canonicalize_name
from tests.builders import build_wheel


def settings(tmp_path: Path, db_url: str) -> Settings:
    return Settings.load(home=tmp_path / "home", database_url=db_url)


def test_migration_is_idempotent_and_services_round_trip(tmp_path: Path, db_url: str) -> None:
    upgrade(db_url)
    upgrade(db_url)  # running it again changes nothing

    async def scenario() -> None:
        rt = Runtime(settings(tmp_path, db_url))
        rt.start()
        try:
            priv = await rt.indexes.create("internal", IndexKind.PRIVATE)
            await rt.indexes.create("up", IndexKind.MIRROR, upstream_url="http://127.0.0.1:1/s")
            virt = await rt.indexes.create("main", IndexKind.VIRTUAL, members=["internal", "up"])
            assert virt.members == ("internal", "up")
            assert (await rt.indexes.get("up")).upstream_url == "http://127.0.0.1:1/s/"
            with pytest.raises(Conflict):
                await rt.indexes.create("internal", IndexKind.PRIVATE)
            with pytest.raises(NotFound):
                await rt.indexes.create("v2", IndexKind.VIRTUAL, members=["nope"])
            with pytest.raises(InvalidRequest):
                await rt.indexes.create("Bad Name", IndexKind.PRIVATE)
            with pytest.raises(Conflict, match="member"):
                await rt.indexes.delete("internal")

            with pytest.raises(NotFound, match="no team named 'ml'"):
                await rt.tokens.create(index="internal", scope=Scope.WRITE, team="ml")
            await rt.teams.create("ml")
            await rt.teams.grant("ml", "internal", Scope.WRITE)
            secret, rec = await rt.tokens.create(
                index="internal", scope=Scope.WRITE, expires="1d", team="ml", note="ci"
            )
            info = await rt.tokens.verify(secret)
            assert info.id == rec.info.id
            assert info.team == "ml"
            assert info.grants == (Grant("internal", Scope.WRITE),)
            assert info.expires_at is not None
            listed = await rt.tokens.list(team="ml")
            assert [r.info.id for r in listed] == [rec.info.id]

            # an upload, its page, a yank, and a delete
            wheel = build_wheel(tmp_path, "Foo.Bar", "1.0")
            writer = rt.store.open_writer()
            writer.write(wheel.read_bytes())
            stored = await rt.uploads.accept(
                priv, UploadForm(filename=wheel.name), writer, actor=rec.info.id, md5="", blake2=""
            )
            assert stored.project == "foo-bar"
            assert rt.store.exists(stored.sha256)
            served = await rt.pages.project_page(priv, canonicalize_name("foo-bar"))
            assert served.page.files[0].metadata_sha256 is not None
            via_virtual = await rt.pages.project_page(virt, canonicalize_name("foo-bar"))
            assert via_virtual.page.files[0].origin == "internal"
            assert await rt.uploads.yank(priv, "foo.bar", "1.0", reason="oops") == 1
            served = await rt.pages.project_page(priv, canonicalize_name("foo-bar"))
            assert served.page.files[0].yanked_reason == "oops"
            doomed = await rt.uploads.delete(priv, "foo-bar", "1.0")
            assert [f.filename for f in doomed] == [wheel.name]
            assert not rt.store.exists(stored.sha256)
            with pytest.raises(NotFound):
                await rt.pages.project_page(priv, canonicalize_name("foo-bar"))

            await rt.tokens.revoke(rec.info.id)
            assert (await rt.tokens.verify(secret)).revoked_at is not None

            await rt.audit.flush()
            async with rt.sessions() as s:
                actions = {e["action"] for e in await repo.list_audit(s, limit=100)}
            assert {"token.create", "upload", "yank", "delete", "token.revoke"} <= actions
        finally:
            await rt.close()

    asyncio.run(scenario())


def test_upload_limits_come_from_archive_limits(tmp_path: Path, db_url: str) -> None:
    upgrade(db_url)

    async def scenario() -> None:
        rt = Runtime(settings(tmp_path, db_url))
        rt.uploads._limits = ArchiveLimits(max_members=2)
        try:
            priv = await rt.indexes.create("p", IndexKind.PRIVATE)
            wheel = build_wheel(tmp_path, "many", "1.0")
            writer = rt.store.open_writer()
            writer.write(wheel.read_bytes())
            with pytest.raises(Exception, match="members"):
                await rt.uploads.accept(
                    priv, UploadForm(filename=wheel.name), writer, actor=None, md5="", blake2=""
                )
            async with rt.sessions() as s:
                assert await repo.list_files(s, priv.id) == []
            assert not list((rt.store.root / "tmp").iterdir())  # type: ignore[attr-defined]
        finally:
            await rt.close()

    asyncio.run(scenario())


def test_page_cache_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests for many distinct (even non-existent) names must not grow memory without end."""
    from stockade.services import pages

    db_url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    upgrade(db_url)
    monkeypatch.setattr(pages, "MAX_ENTRIES", 50)

    async def scenario() -> None:
        rt = Runtime(settings(tmp_path, db_url))
        try:
            priv = await rt.indexes.create("p", IndexKind.PRIVATE)
            for i in range(200):
                with pytest.raises(NotFound):
                    await rt.pages.project_page(priv, canonicalize_name(f"missing-{i}"))
            assert len(rt.pages._cache) <= 50
        finally:
            await rt.close()

    asyncio.run(scenario())
