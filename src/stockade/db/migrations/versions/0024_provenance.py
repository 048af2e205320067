"""PEP 740 provenance: verified provenance (or the reason it was refused) per file

Revision ID: 0024
Revises: 0023
Create Date: 2027-01-14 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "file_provenance",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("index_name", sa.String(length=64), nullable=False),
        sa.Column("project", sa.String(length=255), nullable=False),
        sa.Column("version", sa.String(length=128), nullable=True),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("publisher_kind", sa.String(length=32), nullable=True),
        sa.Column("publisher_repository", sa.String(length=512), nullable=True),
        sa.Column("publisher_workflow", sa.String(length=512), nullable=True),
        sa.Column("publisher_environment", sa.String(length=255), nullable=True),
        sa.Column("publishers", sa.JSON(), nullable=False),
        sa.Column("document", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("index_name", "filename"),
    )
    with op.batch_alter_table("file_provenance", schema=None) as batch_op:
        batch_op.create_index("ix_file_provenance_project", ["index_name", "project"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("file_provenance", schema=None) as batch_op:
        batch_op.drop_index("ix_file_provenance_project")
    op.drop_table("file_provenance")
