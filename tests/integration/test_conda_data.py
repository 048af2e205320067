"""CondaService in-process on SQLite and PostgreSQL: channels, uploads, incremental repodata,
concurrent uploads, and recovery when regeneration fails after a package was stored."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from stockade.db.engine import upgrade
from stockade.errors import Conflict, InvalidRequest, StockadeError
from stockade.services.conda import CondaService
from stockade.services.runtime import Runtime
from stockade.settings import Settings
from tests.conda_builders import build_conda


def _repodata(rt: Runtime, sha: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(rt.store.read_bytes(sha))
    return data


def test_channels_uploads_and_repodata(tmp_path: Path, db_url: str) -> None:
    upgrade(db_url)
    pkgs = [build_conda(tmp_path / "d", f"p{i}", "1.0") for i in range(6)]
    app = build_conda(tmp_path / "d", "app", "1.0", subdir="linux-64", depends=["p0"])

    async def scenario() -> None:
        rt = Runtime(Settings.load(home=tmp_path / "home", database_url=db_url))
        try:
            ch = await rt.conda.create_channel("internal", private=True)
            with pytest.raises(Conflict):
                await rt.conda.create_channel("internal", private=True)
            with pytest.raises(InvalidRequest, match="subdirs"):
                await rt.conda.create_channel("m", mirror="https://example.invalid/")
            assert [c.name for c in await rt.conda.channels()] == ["internal"]
            # Concurrent uploads to one subdir: every record ends up in the repodata.
            await asyncio.gather(*(rt.conda.upload_path(ch, p, actor=None) for p in pkgs))
            doc = await rt.conda.repodata(ch, "noarch")
            assert set(_repodata(rt, doc.json)["packages.conda"]) == {p.name for p in pkgs}
            with pytest.raises(Conflict):
                await rt.conda.upload_path(ch, pkgs[0], actor=None)

            # Regeneration fails after the package is stored: the next read rebuilds it.
            async def broken(*args: Any, **kwargs: Any) -> Any:
                raise OSError("disk full")

            real = CondaService._regenerate
            rt.conda._regenerate = broken  # type: ignore[method-assign]
            with pytest.raises(StockadeError, match="rebuilt on the next read"):
                await rt.conda.upload_path(ch, app, actor="tok")
            rt.conda._regenerate = real.__get__(rt.conda)  # type: ignore[method-assign]
            rt.conda.clear()
            doc = await rt.conda.repodata(ch, "linux-64")
            assert set(_repodata(rt, doc.json)["packages.conda"]) == {app.name}
            listed = await rt.conda.packages(ch)
            assert len(listed) == 7 and {p.subdir for p in listed} == {"noarch", "linux-64"}
            rec = await rt.conda.record(ch, "linux-64", app.name)
            assert rec["depends"] == ["p0"] and rec["size"] == app.stat().st_size
        finally:
            await rt.close()

    asyncio.run(scenario())
