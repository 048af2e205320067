"""Alembic environment: migrations run on a sync engine for SQLite and PostgreSQL alike."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from stockade.db.engine import make_sync_engine
from stockade.db.models import Base

config = context.config
url = config.get_main_option("sqlalchemy.url")
assert url, "sqlalchemy.url must be set by stockade.db.engine.upgrade()"


def ours(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    """Autogenerate leaves procrastinate's tables alone (revision 0016 creates them)."""
    return not (type_ == "table" and reflected and (name or "").startswith("procrastinate_"))


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        include_object=ours,
    )
    with context.begin_transaction():
        context.run_migrations()


given = config.attributes.get("connection")  # upgrade() on PostgreSQL: holds the upgrade lock
if isinstance(given, Connection):
    run(given)
else:
    engine = make_sync_engine(url)
    with engine.connect() as connection:
        run(connection)
    engine.dispose()
