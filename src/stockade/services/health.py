"""Readiness: the database answers, its schema is at the newest migration, storage is usable
(a local folder is writable; an S3 bucket answers to Stockade's credentials).

Used by ``GET /-/readyz``; each check says what failed so an operator knows what to fix.
"""

from __future__ import annotations

import functools
from typing import Any

import anyio
from sqlalchemy import text

from stockade.db.engine import MIGRATIONS
from stockade.errors import StockadeError
from stockade.services.runtime import Runtime


@functools.cache
def migration_heads() -> tuple[str, ...]:
    from alembic.script import ScriptDirectory

    return tuple(sorted(ScriptDirectory(str(MIGRATIONS)).get_heads()))


async def readiness(runtime: Runtime) -> tuple[bool, dict[str, Any]]:
    checks: dict[str, Any] = {}
    try:
        async with runtime.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
            checks["database"] = {"ok": True}
            rows = (await conn.execute(text("SELECT version_num FROM alembic_version"))).all()
        current = tuple(sorted(str(r[0]) for r in rows))
        heads = migration_heads()
        checks["migrations"] = {"ok": current == heads, "current": current, "head": heads}
        if current != heads:
            checks["migrations"]["hint"] = "run `stockade db upgrade`"
    except Exception as exc:  # report, never raise: this endpoint exists to say what is wrong
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        checks.setdefault("database", {"ok": False, "error": first})
        checks.setdefault("migrations", {"ok": False, "error": "database not reachable"})
        if checks["database"].get("ok"):
            checks["migrations"] = {
                "ok": False,
                "error": first,
                "hint": "run `stockade db upgrade`",
            }
    try:
        await anyio.to_thread.run_sync(runtime.store.probe)
        checks["storage"] = {"ok": True}
    except StockadeError as exc:
        checks["storage"] = {"ok": False, "error": exc.message, "hint": exc.hint}
    except Exception as exc:
        checks["storage"] = {"ok": False, "error": str(exc).splitlines()[0] or type(exc).__name__}
    return all(c["ok"] for c in checks.values()), checks
