"""Background jobs: the in-process queue's job records, attempt errors of either queue, and on
PostgreSQL procrastinate's schema (the job queue of the scaled-out shape)

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-26 20:29:50.828943
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# procrastinate's schema as of the version Stockade was built against, applied once; later
# procrastinate migrations (procrastinate/sql/migrations) get Alembic revisions of their own.
PROCRASTINATE_SCHEMA = Path(__file__).parent.parent / "procrastinate" / "schema-3.10.0.sql"


def upgrade() -> None:
    op.create_table(
        "job_errors",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("engine", sa.String(length=16), nullable=False),
        sa.Column("job_id", sa.BigInteger(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("worker", sa.String(length=128), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_job_errors_job", "job_errors", ["engine", "job_id"])
    op.create_table(
        "jobs",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("task", sa.String(length=64), nullable=False),
        sa.Column("queue", sa.String(length=64), nullable=False),
        sa.Column("args", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(length=128), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("scheduled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_jobs_status", "jobs", ["status", "id"])
    bind = op.get_bind()
    # A database where procrastinate was set up by hand (`procrastinate schema --apply`) keeps
    # its schema.
    if (
        bind.dialect.name == "postgresql"
        and bind.execute(sa.text("SELECT to_regclass('procrastinate_jobs')")).scalar() is None
    ):
        # The raw connection (same transaction): the SQL holds '%' and many statements.
        bind.connection.driver_connection.execute(PROCRASTINATE_SCHEMA.read_text("utf-8"))  # type: ignore[union-attr]


def downgrade() -> None:
    op.drop_index("ix_jobs_status", table_name="jobs")
    op.drop_table("jobs")
    op.drop_index("ix_job_errors_job", table_name="job_errors")
    op.drop_table("job_errors")
    # procrastinate's tables stay: they may hold jobs, and dropping them loses them silently.
