"""conda content trust: signed channels (conda_channels.signed_at) and the trust metadata
(root versions and key_mgr) every signed channel serves

Revision ID: 0025
Revises: 0024
Create Date: 2026-11-26 23:50:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column(
        "conda_channels", sa.Column("signed_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.create_table(
        "conda_trust_metadata",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("expires", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("role", "version"),
    )


def downgrade() -> None:
    op.drop_table("conda_trust_metadata")
    with op.batch_alter_table("conda_channels") as batch:
        batch.drop_column("signed_at")
