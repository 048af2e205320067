"""A cache cleared while it is being loaded (another request announced a change) must neither
crash the loader nor keep what it read before the change."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from stockade.services import repo
from stockade.services.indexes import IndexService


class _ClearingSession:
    """Closing the session awaits; meanwhile another task clears the cache."""

    def __init__(self, on_close: Any) -> None:
        self.on_close = on_close

    async def __aenter__(self) -> _ClearingSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.on_close()
        await asyncio.sleep(0)


def test_index_cache_cleared_during_load(monkeypatch: pytest.MonkeyPatch) -> None:
    reads = []

    async def list_indexes(_s: object) -> list[Any]:
        reads.append(1)
        return []

    monkeypatch.setattr(repo, "list_indexes", list_indexes)
    svc: IndexService

    def sessions() -> _ClearingSession:
        return _ClearingSession(svc.clear)

    svc = IndexService(sessions)  # type: ignore[arg-type]

    async def go() -> None:
        assert await svc.find("main") is None  # crashed with AttributeError on None before
        assert svc.cached("main") is None
        await svc.list()
        assert len(reads) == 2  # what straddled a clear was not kept

    asyncio.run(go())
