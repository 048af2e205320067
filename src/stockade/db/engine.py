"""Engine construction and schema migration for SQLite (embedded) and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from stockade.errors import ConfigError

MIGRATIONS = Path(__file__).parent / "migrations"
UPGRADE_LOCK = 0x5374_6F63_6B61  # pg_advisory_lock key of schema upgrades ("Stocka")


def sync_url(url: str) -> str:
    """The URL Alembic and sync tools use."""
    u = make_url(url)
    if u.drivername in ("sqlite", "sqlite+aiosqlite", "sqlite+pysqlite"):
        return u.set(drivername="sqlite").render_as_string(hide_password=False)
    if u.drivername in ("postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg_async"):
        return u.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    raise ConfigError(
        f"unsupported database URL scheme {u.drivername!r}",
        "use sqlite:///PATH or postgresql+psycopg://USER@HOST:PORT/DB",
    )


def async_url(url: str) -> str:
    u = make_url(sync_url(url))
    if u.drivername == "sqlite":
        return u.set(drivername="sqlite+aiosqlite").render_as_string(hide_password=False)
    return u.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def make_sync_engine(url: str) -> Engine:
    eng = create_engine(sync_url(url), future=True)
    if eng.dialect.name == "sqlite":
        event.listen(eng, "connect", _sqlite_pragmas)
    return eng


def make_async_engine(url: str) -> AsyncEngine:
    aurl = async_url(url)
    if aurl.startswith("sqlite"):
        eng = create_async_engine(aurl, future=True)
        event.listen(eng.sync_engine, "connect", _sqlite_pragmas)
        return eng
    return create_async_engine(aurl, pool_size=10, max_overflow=20, pool_pre_ping=True)


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[Any]:
    return async_sessionmaker(engine, expire_on_commit=False)


def upgrade(url: str, revision: str = "head") -> None:
    """Run Alembic migrations to ``revision`` (default: the newest; idempotent)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", sync_url(url).replace("%", "%%"))
    if url.startswith("sqlite"):
        path = make_url(sync_url(url)).database
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        command.upgrade(cfg, revision)
        return
    # PostgreSQL: several processes may upgrade at once (servers starting together, `db
    # upgrade` from each deployment): a session advisory lock makes them take turns, so the
    # later ones find the schema current instead of failing on half-created tables.
    eng = make_sync_engine(url)
    try:
        with eng.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": UPGRADE_LOCK})
            conn.commit()
            try:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
                conn.commit()
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": UPGRADE_LOCK})
                conn.commit()
    finally:
        eng.dispose()
