"""TUF metadata of signed PyPI indexes (issue 9)

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-26 18:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "tuf_repos",
        sa.Column("index_id", sa.Integer(), nullable=False),
        sa.Column("bit_length", sa.Integer(), nullable=False),
        sa.Column("root_version", sa.Integer(), nullable=False),
        sa.Column("targets_version", sa.Integer(), nullable=False),
        sa.Column("snapshot_version", sa.Integer(), nullable=False),
        sa.Column("timestamp_version", sa.Integer(), nullable=False),
        sa.Column("timestamp_expires", sa.DateTime(timezone=True), nullable=False),
        sa.Column("snapshot_expires", sa.DateTime(timezone=True), nullable=False),
        sa.Column("bins_expire", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["index_id"], ["indexes.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("index_id"),
    )
    op.create_table(
        "tuf_metadata",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("index_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("expires", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["index_id"], ["indexes.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("index_id", "role", "version"),
    )
    op.create_table(
        "tuf_targets",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("index_id", sa.Integer(), nullable=False),
        sa.Column("project", sa.String(length=255), nullable=False),
        sa.Column("path", sa.String(length=800), nullable=False),
        sa.Column("bin", sa.String(length=16), nullable=False),
        sa.Column("length", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("prev_sha256", sa.String(length=64), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["index_id"], ["indexes.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("index_id", "path"),
    )
    op.create_index("ix_tuf_targets_bin", "tuf_targets", ["index_id", "bin"])
    op.create_index("ix_tuf_targets_project", "tuf_targets", ["index_id", "project"])


def downgrade() -> None:
    op.drop_index("ix_tuf_targets_project", table_name="tuf_targets")
    op.drop_index("ix_tuf_targets_bin", table_name="tuf_targets")
    op.drop_table("tuf_targets")
    op.drop_table("tuf_metadata")
    op.drop_table("tuf_repos")
