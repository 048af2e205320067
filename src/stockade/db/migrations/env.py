"""Alembic environment: migrations run on a sync engine for SQLite and PostgreSQL alike."""

from __future__ import annotations

from alembic import context

from stockade.db.engine import make_sync_engine
from stockade.db.models import Base

config = context.config
url = config.get_main_option("sqlalchemy.url")
assert url, "sqlalchemy.url must be set by stockade.db.engine.upgrade()"

engine = make_sync_engine(url)
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
