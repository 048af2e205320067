"""Audit log writer: events are queued and written in batches, off the request path."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from stockade.services import repo

log = logging.getLogger("stockade.audit")


class AuditLog:
    """Append-only audit events (download, upload, refusal, token changes…)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], flush_every: float = 0.25):
        self._sessions = sessions
        self._queue: list[dict[str, Any]] = []
        self._touch: dict[str, datetime] = {}
        self._flush_every = flush_every
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def record(
        self,
        action: str,
        *,
        actor: str | None = None,
        index: str | None = None,
        project: str | None = None,
        filename: str | None = None,
        outcome: str = "ok",
        client: str | None = None,
        **detail: Any,
    ) -> None:
        self._queue.append(
            {
                "at": repo.utcnow(),
                "actor": actor,
                "action": action,
                "index_name": index,
                "project": project,
                "filename": filename,
                "outcome": outcome,
                "client": client,
                "detail": {k: v for k, v in detail.items() if v is not None},
            }
        )
        self._wake.set()

    def token_used(self, token_id: str, at: datetime) -> None:
        self._touch[token_id] = at
        self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="audit-writer")

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(self._flush_every)
            try:
                await self.flush()
            except Exception:  # keep the writer alive; events stay queued for the next try
                log.exception("audit flush failed; will retry")

    async def flush(self) -> None:
        if not self._queue and not self._touch:
            return
        events, self._queue = self._queue, []
        touch, self._touch = self._touch, {}
        try:
            async with self._sessions() as s, s.begin():
                if events:
                    await repo.insert_audit(s, events)
                if touch:
                    await repo.touch_tokens(s, touch)
        except Exception:
            self._queue[:0] = events
            for k, v in touch.items():
                self._touch.setdefault(k, v)
            raise

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()
